//! The epoch order: a permutation keyed by (seed, epoch), split into `world_size` disjoint
//! shards as torch's `DistributedSampler` does (rank r takes positions r, r+W, r+2W, ...).

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
        self.validate()?;
        let mut order: Vec<u64> = (0..len as u64).collect();
        if self.shuffle {
            order.shuffle(&mut keyed_rng(self.seed, epoch, Purpose::Shuffle, 0));
        }
        let ws = self.world_size as usize;
        match self.tail {
            TailPolicy::Pad if len % ws != 0 && len > 0 => {
                let total = len.div_ceil(ws) * ws;
                let pad: Vec<u64> = order.iter().cycle().take(total - len).copied().collect();
                order.extend(pad);
            }
            TailPolicy::Drop => order.truncate(len / ws * ws),
            _ => {}
        }
        Ok(order
            .into_iter()
            .skip(self.rank as usize)
            .step_by(ws)
            .collect())
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

    #[test]
    fn batching_keeps_or_drops_the_tail() {
        let ids: Vec<u64> = (0..10).collect();
        assert_eq!(batches(&ids, 4, false).len(), 3);
        assert_eq!(batches(&ids, 4, true).len(), 2);
    }
}
