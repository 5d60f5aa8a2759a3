//! The producer of one StreamBatches call: a thread that runs the shared batch loop
//! (`augserve_core::pipeline::run_in_flight`: batch k+1's per-image stage overlaps the batch
//! ops, of several batches at once on a GPU) and `blocking_send`s each batch into the stream's
//! bounded channel in order (a failed send means the client left). The stream's transport gives each batch its destination. The
//! shutdown contract's last word (`shutdown_status`) and the tensor buffers' way back to the
//! batch ops live here too.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use augserve_core::buffers::OutputSlot;
use augserve_core::pipeline::{run_in_flight, BatchOrder, PreparedBatch};
use augserve_core::{Batch, BatchOps, Pipeline};
use augserve_proto::convert::{align_tensor_data, batch_to_proto};
use augserve_proto::v1;
use tokio::sync::mpsc;
use tonic::Status;

use crate::memory::{InFlight, InFlightToken, Reservation};
use crate::telemetry::Telemetry;
use crate::transport::{Delivered, Finish, Reserved, Transport};
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

/// `batch_to_proto`, the tensor bytes owned by the message: `inline_data` (the buffer the
/// batch was written into, lent back after the send) or else the batch's own buffer, which
/// goes back to `ops` after the send.
pub(crate) fn batch_to_proto_recycled(
    mut b: Batch,
    num_classes: u32,
    ops: &Arc<dyn BatchOps>,
    inline_data: Option<OutputSlot>,
) -> v1::Batch {
    let buf = std::mem::take(&mut b.tensor.data);
    let mut m = batch_to_proto(b, num_classes);
    if let Some(t) = m.images.as_mut() {
        t.data = match inline_data {
            Some(lent) => bytes::Bytes::from_owner(lent),
            None => bytes::Bytes::from_owner(RecycledTensor {
                buf,
                ops: ops.clone(),
            }),
        };
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

/// A batch made for a stream: the message, and the tensor bytes it accounts for.
type Made = Result<(v1::Batch, usize), Status>;

/// Everything one stream's producer thread owns.
pub(crate) struct StreamProducer {
    pub pipeline: Pipeline,
    /// Which batches, in which order, with which mixing keys.
    pub order: BatchOrder,
    /// Batches made at once (the batch ops' own limit, and the stream's slots').
    pub in_flight: usize,
    pub sender: BatchSender,
}

/// The sending half of a producer: the transport, the channel, and what was sent.
pub(crate) struct BatchSender {
    pub ops: Arc<dyn BatchOps>,
    pub transport: Arc<dyn Transport>,
    /// The first batch carries the transport chosen for the stream.
    pub transport_info: Option<v1::TransportInfo>,
    pub in_flight: Arc<InFlight>,
    pub tx: mpsc::Sender<Outgoing>,
    pub stop: Arc<AtomicBool>,
    pub telemetry: Arc<Telemetry>,
    pub dataset_name: String,
    pub num_classes: u32,
    pub counts: StreamCounts,
    /// The stream's share of the batch memory budget, held until the producer ends.
    pub _reservation: Arc<Reservation>,
}

/// When a stream stops making batches: the client left, or the server stops.
struct StopCheck {
    tx: mpsc::Sender<Outgoing>,
    stop: Arc<AtomicBool>,
}

impl StopCheck {
    fn give_up(&self) -> bool {
        self.tx.is_closed() || self.stop.load(Ordering::Relaxed)
    }
}

/// A batch let into the stream, in batch order: its in-flight token and, for a prepared
/// batch, the transport destination taken for it.
struct Admitted<'t> {
    token: InFlightToken,
    work: augserve_core::Result<(Box<dyn Reserved + 't>, PreparedBatch)>,
}

/// A batch made for the stream, ready to send in order.
struct MadeBatch {
    made: Made,
    token: InFlightToken,
    images: u64,
    errors: u64,
}

/// What making a batch needs of the stream (shared by the threads that make its batches).
struct BatchMaker {
    ops: Arc<dyn BatchOps>,
    telemetry: Arc<Telemetry>,
    dataset_name: String,
    num_classes: u32,
}

impl StreamProducer {
    /// Starts the producer thread.
    pub fn spawn(self) -> Result<(), ServerError> {
        let telemetry = self.sender.telemetry.clone();
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

    /// The shared batch loop: tokens and slots taken in batch order here, batches made on up
    /// to `in_flight` threads, sent in order here.
    fn run(mut self) {
        let started = Instant::now();
        let len = self.pipeline.dataset().len();
        let seed = self.order.shard.seed;
        let s = &self.sender;
        let stop = StopCheck {
            tx: s.tx.clone(),
            stop: s.stop.clone(),
        };
        let (transport, tokens) = (s.transport.clone(), s.in_flight.clone());
        let maker = BatchMaker {
            ops: s.ops.clone(),
            telemetry: s.telemetry.clone(),
            dataset_name: s.dataset_name.clone(),
            num_classes: s.num_classes,
        };
        let (pipeline, order, sender) = (&self.pipeline, &self.order, &mut self.sender);
        let completed = run_in_flight(
            pipeline,
            seed,
            order.jobs(len),
            self.in_flight,
            |prepared| admit(&stop, &tokens, transport.as_ref(), prepared),
            |admitted| maker.make(pipeline, admitted),
            |made| sender.send(made),
        );
        drop(stop);
        self.sender.finish(completed, started);
        // Unlinks the SHM ring's file / frees the device ring (slots the client still held are
        // reclaimed here), frees the pipeline, closes the channel, returns the reservation.
        drop(self);
        release_freed_memory();
    }
}

/// Lets a batch into the stream: an in-flight token (at most prefetch + in_flight batches
/// exist at once) and its transport destination; `Break` when the stream must end.
fn admit<'t>(
    stop: &StopCheck,
    tokens: &Arc<InFlight>,
    transport: &'t dyn Transport,
    prepared: augserve_core::Result<PreparedBatch>,
) -> ControlFlow<(), Admitted<'t>> {
    let give_up = || stop.give_up();
    if give_up() {
        return ControlFlow::Break(());
    }
    let Some(token) = tokens.acquire(give_up) else {
        return ControlFlow::Break(());
    };
    let work = match prepared {
        Ok(p) => match transport.reserve(&give_up) {
            Some(to) => Ok((to, p)),
            None => return ControlFlow::Break(()),
        },
        Err(e) => Err(e),
    };
    ControlFlow::Continue(Admitted { token, work })
}

impl BatchMaker {
    /// Runs the batch stage into the destination taken for it, and makes the message.
    fn make(&self, pipeline: &Pipeline, admitted: Admitted<'_>) -> MadeBatch {
        let Admitted { token, work } = admitted;
        let delivered = work.and_then(|(to, prepared)| {
            let finish: Finish<'_> = Box::new(|to| pipeline.finish_batch(prepared, to));
            to.deliver(finish)
        });
        let (mut images, mut errors) = (0, 0);
        let made = delivered
            .map_err(|e| Status::from(ServerError::from(e)))
            .map(
                |Delivered {
                     batch,
                     slot,
                     length,
                     inline_data,
                 }| {
                    images = batch.len() as u64;
                    errors = batch.errors.len() as u64;
                    self.telemetry.record_batch(&self.dataset_name, &batch);
                    let mut m =
                        batch_to_proto_recycled(batch, self.num_classes, &self.ops, inline_data);
                    m.slot = slot;
                    (m, length)
                },
            );
        MadeBatch {
            made,
            token,
            images,
            errors,
        }
    }
}

impl BatchSender {
    /// Sends a made batch (in batch order); `Break` when the stream must end.
    fn send(&mut self, made: MadeBatch) -> ControlFlow<()> {
        let (msg, len, at) = match made.made {
            Ok((mut m, len)) => {
                m.transport = self.transport_info.take();
                let at = (m.epoch, m.index as usize);
                (Ok(m), len, Some(at))
            }
            Err(s) if s.code() == tonic::Code::Cancelled => return ControlFlow::Break(()),
            Err(s) => (Err(s), 0, None),
        };
        self.counts.images += made.images;
        self.counts.errors += made.errors;
        let wait = Instant::now();
        // A failed send means the client left: stop at once.
        if self.tx.blocking_send((msg, Some(made.token))).is_err() {
            return ControlFlow::Break(());
        }
        let Some(at) = at else {
            return ControlFlow::Break(());
        };
        self.telemetry
            .record_send(&self.dataset_name, len, wait.elapsed());
        let now = (self.tx.max_capacity() - self.tx.capacity()) as i64;
        self.telemetry.queue_changed(now - self.counts.queued);
        let c = &mut self.counts;
        (c.queued, c.sent, c.bytes) = (now, c.sent + 1, c.bytes + len as u64);
        c.last_sent = Some(at);
        ControlFlow::Continue(())
    }

    /// The stream's last word and log line, then its memory goes back.
    fn finish(&self, completed: bool, started: Instant) {
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
    }
}
