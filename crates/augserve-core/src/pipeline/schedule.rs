//! The batch loop every front shares (`augserve run`, the server's streams, `bench`): which
//! batches a reader makes and in what order ([`BatchOrder`]), the key of each batch's mixing
//! draws ([`ShardSpec::mix_key`]: the reproducibility invariant), and the overlap of batch
//! k+1's per-image stage with batch k's batch ops ([`run_overlapped`]).

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

/// Runs `jobs` through `pipeline` in two stages: a second thread prepares batch k+1 (read,
/// decode, per-image ops) while the calling thread's `finish` runs batch k's batch ops and
/// delivers it. At most one prepared batch waits, which bounds memory. `finish` gets each
/// prepared batch (or the error that stopped its preparation) in order and returns `Break` to
/// stop; the preparing thread then stops after the batch in hand. Returns whether every job
/// reached `finish` and none was refused.
pub fn run_overlapped<I, F>(pipeline: &Pipeline, seed: u64, jobs: I, mut finish: F) -> bool
where
    I: Iterator<Item = Result<BatchJob>> + Send,
    F: FnMut(Result<PreparedBatch>) -> ControlFlow<()>,
{
    let prepare = move |job: Result<BatchJob>| {
        job.and_then(|j| pipeline.prepare_batch(seed, j.epoch, j.index, j.mix_key, &j.ids))
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::scope(|scope| {
        // Owned by this closure, so it is dropped before the scope waits for the thread.
        let rx = rx;
        let spawned = std::thread::Builder::new()
            .name("augserve-prepare".into())
            .spawn_scoped(scope, {
                let prepare = &prepare;
                move || {
                    for job in jobs {
                        let prepared = prepare(job);
                        let failed = prepared.is_err();
                        // A failed send means `finish` stopped: stop too.
                        if tx.send(prepared).is_err() || failed {
                            return;
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            // No second thread (a thread limit): `finish` reports it like any other failure.
            let _ = finish(Err(Error::Io(e)));
            return false;
        }
        for prepared in rx.iter() {
            if finish(prepared).is_break() {
                // Dropping `rx` (on return) fails the preparing thread's next send.
                return false;
            }
        }
        true
    })
}
