//! The batch loop every front shares (`augserve run`, the server's streams, `bench`): which
//! batches a reader makes and in what order ([`BatchOrder`]), the key of each batch's mixing
//! draws ([`ShardSpec::mix_key`]: the reproducibility invariant), and [`run_in_flight`]: batch
//! k+1's per-image stage overlaps the batch ops, which a GPU runs for several batches at once,
//! delivered in order.

use std::ops::{ControlFlow, Range};

use super::{Pipeline, PreparedBatch};
use crate::error::{Error, Result};
use crate::sampler::{batches, ShardSpec};

/// One batch to make: its place in the epoch, its mixing key and its sample ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchJob {
    pub epoch: u64,
    pub index: u64,
    pub mix_key: u64,
    pub ids: Vec<u64>,
}

/// Which batches one reader makes, in order: its shard of each epoch, cut into batches.
#[derive(Debug, Clone)]
pub struct BatchOrder {
    pub shard: ShardSpec,
    pub batch_size: usize,
    pub drop_last: bool,
    pub epochs: Range<u64>,
    /// Samples of the first epoch the whole job has consumed already, by any world size
    /// (elastic resume): the first epoch's shard is drawn from what is left.
    pub start_position: u64,
    /// Batches of the first epoch's shard to skip (a rank's own resume point).
    pub start_batch: usize,
    /// This reader makes batches `batch_offset`, `batch_offset + batch_stride`, ... of its
    /// shard (DataLoader workers of one rank split its batches).
    pub batch_stride: usize,
    pub batch_offset: usize,
    /// Stop after this many batches; 0 = no limit.
    pub max_batches: u64,
}

impl BatchOrder {
    /// Every batch of `epochs`, from the start, on one reader of `shard`.
    pub fn new(shard: ShardSpec, batch_size: usize, drop_last: bool, epochs: Range<u64>) -> Self {
        BatchOrder {
            shard,
            batch_size,
            drop_last,
            epochs,
            start_position: 0,
            start_batch: 0,
            batch_stride: 1,
            batch_offset: 0,
            max_batches: 0,
        }
    }

    /// The batches of one epoch over a dataset of `len` samples, in order.
    pub fn epoch_jobs(&self, len: usize, epoch: u64) -> Result<Vec<BatchJob>> {
        let first = epoch == self.epochs.start;
        let position = if first { self.start_position } else { 0 };
        let ids = self.shard.ids_from(len, epoch, position)?;
        let skip = if first { self.start_batch } else { 0 };
        let stride = self.batch_stride.max(1);
        Ok(batches(&ids, self.batch_size, self.drop_last)
            .into_iter()
            .enumerate()
            .skip(skip)
            .filter(|(i, _)| i % stride == self.batch_offset)
            .map(|(i, chunk)| BatchJob {
                epoch,
                index: i as u64,
                mix_key: self.shard.mix_key(position, self.batch_size, i as u64),
                ids: chunk.to_vec(),
            })
            .collect())
    }

    /// Every batch, epoch after epoch (drawn one epoch at a time, so an endless run costs no
    /// more than one epoch's ids). An epoch whose shard cannot be drawn ends the list with its
    /// error.
    pub fn jobs(&self, len: usize) -> impl Iterator<Item = Result<BatchJob>> + Send + '_ {
        let limit = match self.max_batches {
            0 => usize::MAX,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let mut failed = false;
        self.epochs
            .clone()
            .map_while(move |epoch| {
                if failed {
                    return None;
                }
                let jobs = self.epoch_jobs(len, epoch);
                failed = jobs.is_err();
                Some(jobs)
            })
            .flat_map(
                |jobs| -> Box<dyn Iterator<Item = Result<BatchJob>> + Send> {
                    match jobs {
                        Ok(jobs) => Box::new(jobs.into_iter().map(Ok)),
                        Err(e) => Box::new(std::iter::once(Err(e))),
                    }
                },
            )
            .take(limit)
    }
}

/// The batch loop every front shares: `jobs` through `pipeline`, with up to `max_in_flight`
/// batches in their batch ops at once (capped by
/// [`crate::pipeline::BatchOps::batches_in_flight`]: a GPU's streams, so one batch uploads
/// while another computes and a third downloads). Three stages per batch:
/// - `admit`, in order on the calling thread: what must be taken in batch order (a stream's
///   in-flight token, its transport slot), so a later batch never holds what an earlier one
///   waits for; `Break` stops.
/// - `make`, on its own thread, up to `max_in_flight` at once: the batch ops (the host steps of
///   a GPU batch run there, off the scheduler's thread).
/// - `deliver`, in order on the calling thread; `Break` stops.
///
/// A second thread prepares batch k+1 (read, decode, per-image ops) meanwhile; at most one
/// prepared batch waits, which bounds memory. With one batch in flight (the CPU ops, which use
/// every core themselves) the loop is prepare k+1 while making and delivering k. Before the
/// first batch the batch ops size their buffers for the first
/// job's batch size ([`crate::pipeline::BatchOps::reserve_for_batches`]). Returns whether
/// every job was delivered and none was refused; `admit` waits with fewer than
/// `max_in_flight` batches outstanding, so it may wait for resources that many hold.
pub fn run_in_flight<I, A, T, M, R, D>(
    pipeline: &Pipeline,
    seed: u64,
    jobs: I,
    max_in_flight: usize,
    mut admit: A,
    make: M,
    mut deliver: D,
) -> bool
where
    I: Iterator<Item = Result<BatchJob>> + Send,
    A: FnMut(Result<PreparedBatch>) -> ControlFlow<(), T>,
    T: Send,
    M: Fn(T) -> R + Sync,
    R: Send,
    D: FnMut(R) -> ControlFlow<()>,
{
    let ops = pipeline.batch_ops();
    let mut jobs = jobs.peekable();
    if let Some(Ok(first)) = jobs.peek() {
        ops.reserve_for_batches(pipeline.spec(), first.ids.len());
    }
    let depth = max_in_flight.min(ops.batches_in_flight()).max(1);
    with_prepared(pipeline, seed, jobs, |prepared| {
        std::thread::scope(|scope| {
            let Some(mut makers) = Makers::spawn(scope, depth, &make) else {
                // No threads for the makers (a thread limit): one batch at a time, here.
                return prepared.into_iter().all(|p| match admit(p) {
                    ControlFlow::Continue(t) => deliver(make(t)).is_continue(),
                    ControlFlow::Break(()) => false,
                });
            };
            for p in prepared {
                let ControlFlow::Continue(t) = admit(p) else {
                    return false;
                };
                if !makers.submit(t) {
                    return false;
                }
                if makers.outstanding() == depth && !makers.deliver_oldest(&mut deliver) {
                    return false;
                }
            }
            while makers.outstanding() > 0 {
                if !makers.deliver_oldest(&mut deliver) {
                    return false;
                }
            }
            true
        })
    })
}

/// The `make` threads of [`run_in_flight`]: batch `k` goes to thread `k % n`, so each
/// thread's results come back in batch order and each holds at most one batch.
struct Makers<T, R> {
    work: Vec<std::sync::mpsc::SyncSender<T>>,
    done: Vec<std::sync::mpsc::Receiver<R>>,
    submitted: usize,
    delivered: usize,
}

impl<T: Send, R: Send> Makers<T, R> {
    /// `n` threads in `scope` running `make`; `None` when a thread could not be started.
    fn spawn<'scope, M>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        n: usize,
        make: &'scope M,
    ) -> Option<Self>
    where
        M: Fn(T) -> R + Sync,
        T: 'scope,
        R: 'scope,
    {
        let mut makers = Makers {
            work: Vec::with_capacity(n),
            done: Vec::with_capacity(n),
            submitted: 0,
            delivered: 0,
        };
        for i in 0..n {
            let (work_tx, work_rx) = std::sync::mpsc::sync_channel::<T>(1);
            let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<R>(1);
            std::thread::Builder::new()
                .name(format!("augserve-batch-{i}"))
                .spawn_scoped(scope, move || {
                    // Ends when the scheduler drops its sender (done, or stopped); a failed
                    // send means it stopped waiting for results.
                    for t in work_rx {
                        if done_tx.send(make(t)).is_err() {
                            return;
                        }
                    }
                })
                .ok()?;
            makers.work.push(work_tx);
            makers.done.push(done_rx);
        }
        Some(makers)
    }

    fn outstanding(&self) -> usize {
        self.submitted - self.delivered
    }

    /// Hands the next batch to its thread; false when that thread is gone (it panicked).
    fn submit(&mut self, t: T) -> bool {
        let sent = self.work[self.submitted % self.work.len()].send(t).is_ok();
        self.submitted += 1;
        sent
    }

    /// Waits for the oldest outstanding batch and delivers it; false to stop.
    fn deliver_oldest(&mut self, deliver: &mut impl FnMut(R) -> ControlFlow<()>) -> bool {
        let got = self.done[self.delivered % self.done.len()].recv();
        self.delivered += 1;
        match got {
            Ok(r) => deliver(r).is_continue(),
            // Its thread panicked; the scope re-raises the panic when it ends.
            Err(_) => false,
        }
    }
}

/// Starts the thread that prepares `jobs` one after another and hands `consume` the prepared
/// batches in order (at most one waiting); returns what `consume` returns. Dropping the
/// iterator stops the preparing thread after the batch in hand.
fn with_prepared<I, C>(pipeline: &Pipeline, seed: u64, jobs: I, consume: C) -> bool
where
    I: Iterator<Item = Result<BatchJob>> + Send,
    C: FnOnce(std::sync::mpsc::IntoIter<Result<PreparedBatch>>) -> bool,
{
    let prepare = move |job: Result<BatchJob>| {
        job.and_then(|j| pipeline.prepare_batch(seed, j.epoch, j.index, j.mix_key, &j.ids))
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("augserve-prepare".into())
            .spawn_scoped(scope, {
                let prepare = &prepare;
                move || {
                    for job in jobs {
                        let prepared = prepare(job);
                        let failed = prepared.is_err();
                        // A failed send means the consumer stopped: stop too.
                        if tx.send(prepared).is_err() || failed {
                            return;
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            // No second thread (a thread limit): the consumer reports it like any other
            // failure.
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let _ = tx.send(Err(Error::Io(e)));
            drop(tx);
            consume(rx.into_iter());
            return false;
        }
        // `consume` owns the receiver, so it is dropped (failing the preparing thread's next
        // send) before the scope waits for that thread.
        consume(rx.into_iter())
    })
}
