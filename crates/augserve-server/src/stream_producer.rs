//! The producer of one StreamBatches call: a thread that runs the pipeline batch after batch
//! and `blocking_send`s each into the stream's bounded channel (a failed send means the
//! client left). How the tensors travel (`Delivery`), the shutdown contract's last word
//! (`shutdown_status`), and the tensor buffers' way back to the batch ops live here too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use augserve_core::sampler::batches;
use augserve_core::{Batch, BatchOps, Pipeline, ShardSpec};
use augserve_proto::convert::{align_tensor_data, batch_to_proto};
use augserve_proto::v1;
use tokio::sync::mpsc;
use tonic::Status;

use crate::memory::{InFlight, InFlightToken, Reservation};
use crate::shm::{ShmRing, SlotBook};
use crate::telemetry::Telemetry;
use crate::ServerError;

/// How a stream the shutdown cut ends (the proto's shutdown contract): UNAVAILABLE, which
/// clients retry, saying the last batch sent, after which a resumed request starts.
pub(crate) fn shutdown_status(last_sent: Option<(u64, usize)>) -> Status {
    let after = match last_sent {
        Some((epoch, index)) => format!(
            "the last batch sent was epoch {epoch}, index {index}: resume with start_epoch = \
             {epoch}, start_batch = {}",
            index + 1
        ),
        None => "no batch was sent: ask again".into(),
    };
    Status::unavailable(format!(
        "the server is shutting down and its grace period is over; {after}, on this server \
         restarted or another"
    ))
}

/// Returns freed heap pages to the OS, so a finished or cancelled stream's buffers do not stay
/// in the server's RSS (glibc keeps them in its arenas otherwise).
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory held by the allocator; no pointers change.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How a stream's tensors travel (see `Transport` in the proto).
pub(crate) enum Delivery {
    Inline,
    Shm(Arc<ShmRing>),
    /// CUDA IPC: the batch ops write into slots of a device ring.
    Device {
        book: Arc<SlotBook>,
        ring: Arc<dyn augserve_core::DeviceRing>,
    },
}

impl Delivery {
    pub(crate) fn transport(&self) -> v1::Transport {
        match self {
            Delivery::Inline => v1::Transport::Inline,
            Delivery::Shm(_) => v1::Transport::Shm,
            Delivery::Device { .. } => v1::Transport::CudaIpc,
        }
    }

    pub(crate) fn info(&self, fallback_reason: String) -> v1::TransportInfo {
        let mut t = v1::TransportInfo {
            transport: self.transport() as i32,
            fallback_reason,
            cuda_device: -1,
            ..Default::default()
        };
        match self {
            Delivery::Inline => {}
            Delivery::Shm(r) => {
                t.stream_id = r.id().to_string();
                t.shm_path = r.path().display().to_string();
                t.slot_bytes = r.slot_bytes() as u64;
                t.slots = r.slots();
            }
            Delivery::Device { book, ring } => {
                t.stream_id = book.id().to_string();
                t.slot_bytes = ring.slot_bytes() as u64;
                t.slots = ring.slots();
                t.cuda_ipc_handle = ring.ipc_handle();
                t.cuda_device = ring.device_ordinal();
            }
        }
        t
    }
}

/// What the producer sends: a message, and the in-flight token of the batch it carries.
pub(crate) type Outgoing = (Result<v1::Batch, Status>, Option<InFlightToken>);

/// A batch's tensor bytes inside a wire message: handed back to the batch ops for reuse
/// when the message is dropped, which tonic does once it has encoded (copied) it.
struct RecycledTensor {
    buf: Vec<u8>,
    ops: Arc<dyn BatchOps>,
}

impl AsRef<[u8]> for RecycledTensor {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for RecycledTensor {
    fn drop(&mut self) {
        self.ops.recycle(std::mem::take(&mut self.buf));
    }
}

/// `batch_to_proto`, with the tensor buffer going back to `ops` after the send.
pub(crate) fn batch_to_proto_recycled(
    mut b: Batch,
    num_classes: u32,
    ops: &Arc<dyn BatchOps>,
) -> v1::Batch {
    let buf = std::mem::take(&mut b.tensor.data);
    let mut m = batch_to_proto(b, num_classes);
    if let Some(t) = m.images.as_mut() {
        t.data = bytes::Bytes::from_owner(RecycledTensor {
            buf,
            ops: ops.clone(),
        });
    }
    // The data field was empty above, so the alignment is worked out only now.
    align_tensor_data(&mut m);
    m
}

/// What a stream has sent so far, for its end-of-stream log line.
#[derive(Default)]
pub(crate) struct StreamCounts {
    sent: u64,
    images: u64,
    bytes: u64,
    errors: u64,
    /// Batches waiting in the channel at the last send (the telemetry gauge's share).
    queued: i64,
    /// (epoch, index) of the last batch sent: where a resumed request starts after.
    last_sent: Option<(u64, usize)>,
}

/// Everything one stream's producer thread owns.
pub(crate) struct StreamProducer {
    pub pipeline: Pipeline,
    pub ops: Arc<dyn BatchOps>,
    pub shard: ShardSpec,
    pub delivery: Delivery,
    /// The first batch carries the transport chosen for the stream.
    pub transport_info: Option<v1::TransportInfo>,
    pub in_flight: Arc<InFlight>,
    pub tx: mpsc::Sender<Outgoing>,
    pub stop: Arc<AtomicBool>,
    pub telemetry: Arc<Telemetry>,
    pub dataset_name: String,
    pub num_classes: u32,
    pub image_bytes: usize,
    pub batch_size: usize,
    pub drop_last: bool,
    pub batch_stride: usize,
    pub batch_offset: usize,
    pub start_epoch: u64,
    pub end_epoch: u64,
    pub start_position: u64,
    pub start_batch: usize,
    /// The start epoch's ids, drawn already for the request's start_batch check.
    pub start_ids: Option<Vec<u64>>,
    pub counts: StreamCounts,
    /// The stream's share of the batch memory budget, held until the producer ends.
    pub _reservation: Arc<Reservation>,
}

/// A batch made for a stream: the message, and the tensor bytes it accounts for.
type Made = Result<(v1::Batch, usize), Status>;

impl StreamProducer {
    /// Starts the producer thread.
    pub fn spawn(self) -> Result<(), ServerError> {
        let telemetry = self.telemetry.clone();
        telemetry.stream_started();
        std::thread::Builder::new()
            .name("augserve-stream".into())
            .spawn(move || self.run())
            .map(|_| ())
            .map_err(|e| {
                telemetry.stream_ended();
                ServerError::from(e)
            })
    }

    fn run(mut self) {
        let started = Instant::now();
        let completed = self.stream_epochs();
        self.finish(completed, started);
    }

    /// The client left, or the server stops.
    fn give_up(&self) -> bool {
        self.tx.is_closed() || self.stop.load(Ordering::Relaxed)
    }

    /// Sends every batch asked for; false when the stream ended early.
    fn stream_epochs(&mut self) -> bool {
        let len = self.pipeline.dataset().len();
        for epoch in self.start_epoch..self.end_epoch {
            let first = epoch == self.start_epoch;
            let position = if first { self.start_position } else { 0 };
            let drawn = self.start_ids.take().map(Ok);
            let ids = match drawn.unwrap_or_else(|| self.shard.epoch_ids(len, epoch)) {
                Ok(ids) => ids,
                Err(e) => {
                    let _ = self
                        .tx
                        .blocking_send((Err(ServerError::from(e).into()), None));
                    return false;
                }
            };
            let skip = if first { self.start_batch } else { 0 };
            let (stride, offset) = (self.batch_stride, self.batch_offset);
            for (i, chunk) in batches(&ids, self.batch_size, self.drop_last)
                .into_iter()
                .enumerate()
                .skip(skip)
                .filter(|(i, _)| i % stride == offset)
            {
                if self.give_up() || !self.send_batch(epoch, i, chunk, position) {
                    return false;
                }
            }
        }
        true
    }

    /// Makes batch `i` of `epoch` and sends it; false when the stream must end.
    fn send_batch(&mut self, epoch: u64, i: usize, chunk: &[u64], position: u64) -> bool {
        // At most prefetch + 1 batches of this stream exist at once.
        let Some(token) = self.in_flight.acquire(|| self.give_up()) else {
            return false;
        };
        let Some(made) = self.make_batch(epoch, i, chunk, position) else {
            return false;
        };
        let (msg, len) = match made {
            Ok((mut m, len)) => {
                m.transport = self.transport_info.take();
                (Ok(m), len)
            }
            Err(s) if s.code() == tonic::Code::Cancelled => return false,
            Err(s) => (Err(s), 0),
        };
        let failed = msg.is_err();
        let wait = Instant::now();
        // A failed send means the client left: stop at once.
        if self.tx.blocking_send((msg, Some(token))).is_err() || failed {
            return false;
        }
        self.telemetry
            .record_send(&self.dataset_name, len, wait.elapsed());
        let now = (self.tx.max_capacity() - self.tx.capacity()) as i64;
        self.telemetry.queue_changed(now - self.counts.queued);
        let c = &mut self.counts;
        (c.queued, c.sent, c.bytes) = (now, c.sent + 1, c.bytes + len as u64);
        c.last_sent = Some((epoch, i));
        true
    }

    /// Runs the pipeline for one batch into the stream's delivery; `None` when it gave up
    /// waiting for a free slot (the client left, or the server stops).
    fn make_batch(&mut self, epoch: u64, i: usize, chunk: &[u64], position: u64) -> Option<Made> {
        let (seed, index) = (self.shard.seed, i as u64);
        let mix_key = self.shard.mix_key(position, self.batch_size, index);
        let give_up = || self.give_up();
        let pipeline = &self.pipeline;
        let made = match &self.delivery {
            // SHM: the batch ops write straight into a free slot (waiting for the client's
            // releases); the message carries where it is.
            Delivery::Shm(ring) => {
                let filled = ring.fill(give_up, |buf| {
                    pipeline
                        .batch_into_host(seed, epoch, index, mix_key, chunk, buf)
                        .map(|b| {
                            let written = self.image_bytes * b.len();
                            (b, written)
                        })
                })?;
                filled.map(|(b, w)| {
                    let slot = v1::SlotRef {
                        slot: w.slot,
                        generation: w.generation,
                        offset: w.offset,
                        length: w.length,
                    };
                    (b, Some(slot), w.length as usize)
                })
            }
            // CUDA IPC: the batch ops write straight into a free device slot.
            Delivery::Device { book, ring } => {
                let (slot, generation) = book.acquire(give_up)?;
                pipeline
                    .batch_into_ring(seed, epoch, index, mix_key, chunk, ring.as_ref(), slot)
                    .map(|b| {
                        let length = self.image_bytes * b.len();
                        let at = v1::SlotRef {
                            slot,
                            generation,
                            offset: (slot as usize * ring.slot_bytes()) as u64,
                            length: length as u64,
                        };
                        (b, Some(at), length)
                    })
            }
            Delivery::Inline => pipeline.batch(seed, epoch, index, mix_key, chunk).map(|b| {
                let length = b.tensor.data.len();
                (b, None, length)
            }),
        };
        Some(
            made.map_err(|e| Status::from(ServerError::from(e)))
                .map(|(b, slot, len)| {
                    self.counts.images += b.len() as u64;
                    self.counts.errors += b.errors.len() as u64;
                    self.telemetry.record_batch(&self.dataset_name, &b);
                    let mut m = batch_to_proto_recycled(b, self.num_classes, &self.ops);
                    m.slot = slot;
                    (m, len)
                }),
        )
    }

    /// The stream's last word and log line, then its memory goes back.
    fn finish(self, completed: bool, started: Instant) {
        let c = &self.counts;
        if !completed && self.stop.load(Ordering::Relaxed) && !self.tx.is_closed() {
            // Cut by the shutdown: never an OK end, so no trainer takes a partial epoch for a
            // whole one; the client resumes after the last batch it got.
            let _ = self
                .tx
                .blocking_send((Err(shutdown_status(c.last_sent)), None));
            tracing::warn!(
                dataset = %self.dataset_name,
                batches = c.sent,
                last = ?c.last_sent,
                "stream cut by the shutdown: ended with UNAVAILABLE"
            );
        }
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            dataset = %self.dataset_name,
            batches = c.sent,
            images = c.images,
            image_errors = c.errors,
            bytes = c.bytes,
            seconds,
            images_per_s = c.images as f64 / seconds.max(1e-9),
            "stream end"
        );
        self.telemetry.queue_changed(-c.queued);
        self.telemetry.stream_ended();
        // Unlinks the SHM ring's file / frees the device ring (slots the client still held are
        // reclaimed here), frees the pipeline, closes the channel, returns the reservation.
        drop(self);
        release_freed_memory();
    }
}
