//! Static shards: the K-th of N disjoint parts of a scan's seeded
//! permutation, so N processes given the same targets, ports and seed cover
//! the whole scan exactly once with no coordination between them (ZMap's
//! `--shards`/`--shard`).
//!
//! Shard K of N takes the positions K, K + N, K + 2N, ... of the permutation
//! (not a contiguous block), so each shard is itself spread over every host
//! and port the way the whole scan is. K is 0-based, as in ZMap: `0/3`,
//! `1/3` and `2/3` are the three shards of a scan in three parts. The
//! positions are disjoint and cover `0..len` by construction; the property
//! test below checks that the indices they lead to are the permutation's
//! whole image, each once.

use std::fmt;
use std::str::FromStr;

use crate::permutation::Permutation;

/// One part of a scan split in `count` parts: the `index`-th, from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// A shard that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("expected K/N, the 0-based index K of N shards (e.g. 0/4, 1/4, 2/4, 3/4), not `{0}`")]
    Malformed(String),
    #[error("the shard count N must be at least 1")]
    NoShards,
    #[error("at most {max} shards, not {count}", max = Shard::MAX_COUNT)]
    TooMany { count: u64 },
    #[error(
        "shard index {index} is out of range for {count} shards: K is 0-based, from 0 to {last}",
        last = count.saturating_sub(1)
    )]
    OutOfRange { index: u64, count: u64 },
}

impl Shard {
    /// The most shards a scan is split into: more parts than this buy
    /// nothing a batch engine could run, and a typo (`0/100000`) is caught.
    pub const MAX_COUNT: u32 = 65_535;

    /// The whole scan, as one shard.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if count == 0 {
            return Err(ShardError::NoShards);
        }
        if count > Shard::MAX_COUNT {
            return Err(ShardError::TooMany {
                count: u64::from(count),
            });
        }
        if index >= count {
            return Err(ShardError::OutOfRange {
                index: u64::from(index),
                count: u64::from(count),
            });
        }
        Ok(Shard { index, count })
    }

    /// K, from 0.
    pub fn index(self) -> u32 {
        self.index
    }

    /// N.
    pub fn count(self) -> u32 {
        self.count
    }

    pub fn is_whole(self) -> bool {
        self.count == 1
    }

    /// How many of the positions `0..total` belong to this shard: `total`
    /// split as evenly as it goes, the first `total % N` shards one more.
    pub fn len_of(self, total: u64) -> u64 {
        let index = u64::from(self.index);
        if index >= total {
            0
        } else {
            (total - 1 - index) / u64::from(self.count) + 1
        }
    }

    /// The position in the whole permutation of this shard's `nth` one.
    /// Only meaningful for `nth < len_of(total)`, where it is below `total`
    /// and cannot overflow.
    pub fn position(self, nth: u64) -> u64 {
        u64::from(self.index) + nth.saturating_mul(u64::from(self.count))
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard::WHOLE
    }
}

/// `K/N`, as it is given and recorded.
impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || ShardError::Malformed(text.to_owned());
        let (index, count) = text.trim().split_once('/').ok_or_else(malformed)?;
        // Digits only: `+1/3` and ` 1 / 3` are not what a script meant.
        let number = |part: &str| {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed());
            }
            // Too many digits for u64 is as out of range as 10^20.
            Ok(part.parse::<u64>().unwrap_or(u64::MAX))
        };
        let (index, count) = (number(index)?, number(count)?);
        if count == 0 {
            return Err(ShardError::NoShards);
        }
        if count > u64::from(Shard::MAX_COUNT) {
            return Err(ShardError::TooMany { count });
        }
        if index >= count {
            return Err(ShardError::OutOfRange { index, count });
        }
        // Both below MAX_COUNT, so both fit.
        let narrow = |n: u64| u32::try_from(n).map_err(|_| malformed());
        Shard::new(narrow(index)?, narrow(count)?)
    }
}

/// One shard's walk over a seeded permutation of `0..total`: its `nth`
/// index for `nth` in `0..len()`.
#[derive(Debug, Clone)]
pub struct ShardWalk {
    permutation: Permutation,
    shard: Shard,
    len: u64,
}

impl ShardWalk {
    pub fn new(total: u64, seed: u64, shard: Shard) -> ShardWalk {
        ShardWalk {
            permutation: Permutation::new(total, seed),
            shard,
            len: shard.len_of(total),
        }
    }

    /// The positions this shard walks.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// The index at the shard's `nth` position.
    pub fn get(&self, nth: u64) -> u64 {
        self.permutation.get(self.shard.position(nth))
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.len).map(move |nth| self.get(nth))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The correctness property: for any N in 1..=64 and any
        /// seed, the N shards together walk every index of the unsharded
        /// scan exactly once, over spaces smaller than N as well as larger.
        #[test]
        fn shards_partition_the_permutation(
            total in prop_oneof![0u64..70, 70u64..5000],
            count in 1u32..=64,
            seed in any::<u64>(),
        ) {
            let whole: Vec<u64> = Permutation::new(total, seed).iter().collect();
            let mut seen = vec![0u32; usize::try_from(total).unwrap_or(0)];
            let mut n_walked = 0u64;
            for index in 0..count {
                let shard = Shard::new(index, count).expect("a valid shard");
                let walk = ShardWalk::new(total, seed, shard);
                // Each shard is within one position of its even share.
                prop_assert!(walk.len() <= total.div_ceil(u64::from(count)));
                prop_assert!(walk.len() >= total / u64::from(count));
                for (nth, value) in walk.iter().enumerate() {
                    // The shard's nth index is the whole walk's at its position.
                    let position = shard.position(nth as u64);
                    prop_assert_eq!(whole.get(usize::try_from(position).unwrap_or(usize::MAX)), Some(&value));
                    let slot = seen.get_mut(usize::try_from(value).unwrap_or(usize::MAX));
                    prop_assert!(slot.is_some(), "{} out of range for {}", value, total);
                    if let Some(slot) = slot {
                        *slot += 1;
                    }
                    n_walked += 1;
                }
            }
            prop_assert_eq!(n_walked, total);
            prop_assert!(seen.iter().all(|&n| n == 1), "an index walked twice or never");
        }

        #[test]
        fn shards_print_as_they_parse(count in 1u32..=Shard::MAX_COUNT, index in any::<u32>()) {
            let index = index % count;
            let shard = Shard::new(index, count).expect("a valid shard");
            prop_assert_eq!(shard.to_string().parse::<Shard>(), Ok(shard));
        }
    }

    #[test]
    fn whole_is_the_unsharded_walk() {
        let walk = ShardWalk::new(1000, 9, Shard::WHOLE);
        let whole: Vec<u64> = Permutation::new(1000, 9).iter().collect();
        assert_eq!(walk.iter().collect::<Vec<_>>(), whole);
        assert!(Shard::default().is_whole());
    }

    #[test]
    fn shards_parse_zero_based_and_refuse_the_rest() {
        let parse = |text: &str| text.parse::<Shard>().map_err(|err| err.to_string());
        assert_eq!(parse("0/3"), Ok(Shard { index: 0, count: 3 }));
        assert_eq!(parse("2/3"), Ok(Shard { index: 2, count: 3 }));
        assert_eq!(parse("0/1"), Ok(Shard::WHOLE));
        assert_eq!(
            parse("65534/65535"),
            Ok(Shard {
                index: 65_534,
                count: 65_535
            })
        );
        assert_eq!(
            parse("3/3"),
            Err("shard index 3 is out of range for 3 shards: K is 0-based, from 0 to 2".into())
        );
        assert_eq!(
            parse("0/0"),
            Err("the shard count N must be at least 1".into())
        );
        assert_eq!(
            parse("0/65536"),
            Err("at most 65535 shards, not 65536".into())
        );
        assert_eq!(
            parse("1/99999999999999999999999"),
            Err(format!("at most 65535 shards, not {}", u64::MAX))
        );
        for malformed in ["", "3", "1/", "/3", "a/3", "1/3/5", "-1/3", "+1/3", "1 / 3"] {
            assert_eq!(
                parse(malformed),
                Err(format!(
                    "expected K/N, the 0-based index K of N shards (e.g. 0/4, 1/4, 2/4, 3/4), not `{malformed}`"
                )),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn shares_are_even_and_empty_beyond_the_space() {
        let lens: Vec<u64> = (0..4)
            .map(|k| Shard::new(k, 4).expect("shard").len_of(10))
            .collect();
        assert_eq!(lens, [3, 3, 2, 2]);
        assert_eq!(Shard::new(5, 8).expect("shard").len_of(3), 0);
        assert_eq!(Shard::new(2, 8).expect("shard").len_of(3), 1);
        assert_eq!(Shard::new(0, 8).expect("shard").len_of(0), 0);
        // The last position of the largest space stays in range.
        let last = Shard::new(65_534, 65_535).expect("shard");
        let len = last.len_of(u64::MAX);
        assert!(last.position(len - 1) < u64::MAX);
    }
}
