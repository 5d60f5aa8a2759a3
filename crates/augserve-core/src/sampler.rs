//! The epoch order: a permutation keyed by (seed, epoch), split into `world_size` disjoint
//! shards as torch's `DistributedSampler` does (rank r takes positions r, r+W, r+2W, ...).
//!
//! Elastic resume: the order does not depend on the world size, and ranks stride through it,
//! so after every rank of a job took k batches of `b` the job has consumed exactly the first
//! `k * b * W` positions. A job of any other world size continues from that global position:
//! [`ShardSpec::ids_from`] shards the rest of the order among the new ranks.

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::{keyed_rng, Purpose};

/// What happens when the dataset size is not a multiple of `world_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TailPolicy {
    /// Repeat samples from the start of the order so every rank gets the same count
    /// (torch's default; a few samples appear twice per epoch).
    #[default]
    Pad,
    /// Drop the last `len % world_size` samples of the order (each kept sample once).
    Drop,
    /// Ranks differ by at most one sample; every sample exactly once.
    Uneven,
}

/// Which part of which epoch a reader wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    pub seed: u64,
    pub shuffle: bool,
    pub rank: u32,
    pub world_size: u32,
    pub tail: TailPolicy,
}

impl Default for ShardSpec {
    fn default() -> Self {
        ShardSpec {
            seed: 0,
            shuffle: true,
            rank: 0,
            world_size: 1,
            tail: TailPolicy::Pad,
        }
    }
}

impl ShardSpec {
    pub fn validate(&self) -> Result<()> {
        if self.world_size == 0 {
            return Err(Error::arg("world_size", "must be >= 1"));
        }
        if self.rank >= self.world_size {
            return Err(Error::arg(
                "rank",
                format!(
                    "must be < world_size ({}), got {}",
                    self.world_size, self.rank
                ),
            ));
        }
        Ok(())
    }

    /// The sample ids this rank reads in `epoch`, in order.
    pub fn epoch_ids(&self, len: usize, epoch: u64) -> Result<Vec<u64>> {
        self.ids_from(len, epoch, 0)
    }

    /// The sample ids this rank reads of `epoch` once the whole job has consumed the first
    /// `position` samples of the epoch's order (by any world size): the rest of the order,
    /// strided among this spec's ranks, its tail padded or dropped as `tail` says. With
    /// `position` 0 this is the whole epoch's shard.
    pub fn ids_from(&self, len: usize, epoch: u64, position: u64) -> Result<Vec<u64>> {
        self.validate()?;
        if position > len as u64 {
            return Err(Error::arg(
                "start_position",
                format!("{position} is past the end of the epoch: the dataset has {len} samples"),
            ));
        }
        let mut order: Vec<u64> = (0..len as u64).collect();
        if self.shuffle {
            order.shuffle(&mut keyed_rng(self.seed, epoch, Purpose::Shuffle, 0));
        }
        let (ws, n) = (self.world_size as usize, len - position as usize);
        // Repeats come from the start of the epoch's order, as torch's sampler pads.
        let pad: Vec<u64> = match self.tail {
            TailPolicy::Pad if n % ws != 0 => {
                let count = n.div_ceil(ws) * ws - n;
                order.iter().cycle().take(count).copied().collect()
            }
            _ => Vec::new(),
        };
        let mut rest = order.split_off(position as usize);
        rest.extend(pad);
        if self.tail == TailPolicy::Drop {
            rest.truncate(n / ws * ws);
        }
        Ok(rest
            .into_iter()
            .skip(self.rank as usize)
            .step_by(ws)
            .collect())
    }

    /// The key of a batch's mixing draws: unique among the batches of one epoch, whatever
    /// world sizes it was read with, and the same for the same batch. `index` counts this
    /// rank's batches from `position`; with `position` 0 the key is `index * W + rank`.
    pub fn mix_key(&self, position: u64, batch_size: usize, index: u64) -> u64 {
        // The job's batches before `position` have keys below position / batch_size.
        position / batch_size.max(1) as u64
            + index * u64::from(self.world_size)
            + u64::from(self.rank)
    }
}

/// Splits `ids` into batches of `batch_size`; the short last batch is kept unless `drop_last`.
pub fn batches(ids: &[u64], batch_size: usize, drop_last: bool) -> Vec<&[u64]> {
    let bs = batch_size.max(1);
    ids.chunks(bs)
        .filter(|c| !drop_last || c.len() == bs)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn shards_cover_each_epoch_exactly_once() {
        for len in [0usize, 1, 7, 100, 101, 1000] {
            for ws in [1u32, 2, 3, 8] {
                for epoch in 0..3 {
                    let mut all = Vec::new();
                    let mut sizes = Vec::new();
                    for rank in 0..ws {
                        let s = ShardSpec {
                            seed: 42,
                            rank,
                            world_size: ws,
                            tail: TailPolicy::Uneven,
                            ..ShardSpec::default()
                        };
                        let ids = s.epoch_ids(len, epoch).unwrap();
                        sizes.push(ids.len());
                        all.extend(ids);
                    }
                    all.sort_unstable();
                    assert_eq!(
                        all,
                        (0..len as u64).collect::<Vec<_>>(),
                        "len {len} ws {ws}"
                    );
                    let (mn, mx) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                    assert!(mx - mn <= 1);
                }
            }
        }
    }

    #[test]
    fn pad_and_drop_give_equal_shards() {
        let len: usize = 101;
        for ws in [2u32, 3, 8] {
            for (tail, expect_each) in [
                (TailPolicy::Pad, len.div_ceil(ws as usize)),
                (TailPolicy::Drop, len / ws as usize),
            ] {
                let mut union = BTreeSet::new();
                let mut total = 0;
                for rank in 0..ws {
                    let s = ShardSpec {
                        seed: 1,
                        rank,
                        world_size: ws,
                        tail,
                        ..ShardSpec::default()
                    };
                    let ids = s.epoch_ids(len, 5).unwrap();
                    assert_eq!(ids.len(), expect_each);
                    total += ids.len();
                    union.extend(ids);
                }
                match tail {
                    TailPolicy::Pad => assert_eq!(union.len(), len),
                    _ => assert_eq!(union.len(), total),
                }
            }
        }
    }

    #[test]
    fn order_depends_on_seed_and_epoch_only() {
        let s = ShardSpec::default();
        assert_eq!(s.epoch_ids(50, 1).unwrap(), s.epoch_ids(50, 1).unwrap());
        assert_ne!(s.epoch_ids(50, 1).unwrap(), s.epoch_ids(50, 2).unwrap());
        let plain = ShardSpec {
            shuffle: false,
            ..s
        };
        assert_eq!(plain.epoch_ids(5, 9).unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn bad_rank_is_refused() {
        let s = ShardSpec {
            rank: 3,
            world_size: 3,
            ..ShardSpec::default()
        };
        assert!(s.epoch_ids(10, 0).unwrap_err().to_string().contains("rank"));
        let s = ShardSpec {
            world_size: 0,
            ..ShardSpec::default()
        };
        assert!(s
            .epoch_ids(10, 0)
            .unwrap_err()
            .to_string()
            .contains("world_size"));
    }

    /// Every rank of `from` takes `k` batches of `b`; the rest of the epoch goes to `to` ranks.
    fn elastic_epoch(
        len: usize,
        b: usize,
        k: usize,
        from: u32,
        to: u32,
        tail: TailPolicy,
    ) -> Vec<u64> {
        let spec = |rank, world_size| ShardSpec {
            seed: 7,
            rank,
            world_size,
            tail,
            ..ShardSpec::default()
        };
        let mut seen = Vec::new();
        for r in 0..from {
            let ids = spec(r, from).epoch_ids(len, 3).unwrap();
            seen.extend(ids.iter().take(k * b));
        }
        let position = (k * b * from as usize).min(len) as u64;
        for r in 0..to {
            seen.extend(spec(r, to).ids_from(len, 3, position).unwrap());
        }
        seen
    }

    #[test]
    fn a_new_world_size_continues_the_epoch_exactly() {
        for (len, b, k, from, to) in [
            (1000, 8, 5, 4, 3),
            (1000, 8, 5, 3, 5),
            (101, 4, 2, 4, 3),
            (97, 5, 3, 3, 5),
        ] {
            let mut seen = elastic_epoch(len, b, k, from, to, TailPolicy::Uneven);
            seen.sort_unstable();
            assert_eq!(seen, (0..len as u64).collect::<Vec<_>>(), "{from} -> {to}");
            // Pad: every sample at least once, and each new rank the same count.
            let padded: BTreeSet<u64> = elastic_epoch(len, b, k, from, to, TailPolicy::Pad)
                .into_iter()
                .collect();
            assert_eq!(padded.len(), len);
            let dropped = elastic_epoch(len, b, k, from, to, TailPolicy::Drop);
            let unique: BTreeSet<u64> = dropped.iter().copied().collect();
            assert_eq!(unique.len(), dropped.len(), "drop repeats nothing");
        }
    }

    #[test]
    fn the_same_world_size_resumes_the_same_shard() {
        for tail in [TailPolicy::Pad, TailPolicy::Drop, TailPolicy::Uneven] {
            for rank in 0..4 {
                let s = ShardSpec {
                    seed: 3,
                    rank,
                    world_size: 4,
                    tail,
                    ..ShardSpec::default()
                };
                let whole = s.epoch_ids(101, 2).unwrap();
                let (k, b) = (3usize, 5usize);
                let rest = s.ids_from(101, 2, (k * b * 4) as u64).unwrap();
                assert_eq!(rest, whole[k * b..], "{tail:?} rank {rank}");
                // The resumed batches keep their mixing keys.
                assert_eq!(
                    s.mix_key((k * b * 4) as u64, b, 0),
                    s.mix_key(0, b, k as u64)
                );
            }
        }
    }

    #[test]
    fn a_position_past_the_epoch_is_refused() {
        let s = ShardSpec::default();
        assert!(s.ids_from(10, 0, 10).unwrap().is_empty());
        let e = s.ids_from(10, 0, 11).unwrap_err().to_string();
        assert!(e.contains("start_position"), "{e}");
    }

    #[test]
    fn batching_keeps_or_drops_the_tail() {
        let ids: Vec<u64> = (0..10).collect();
        assert_eq!(batches(&ids, 4, false).len(), 3);
        assert_eq!(batches(&ids, 4, true).len(), 2);
    }
}
