//! `--shard I/N`: which problems a shard scores. A problem belongs to shard `mix(problem_id) mod N`, where
//! `mix` is the SplitMix64 finaliser of the id's two's-complement bits: deterministic, independent of pool
//! order and of the machine, and balanced even when ids are all even or come in blocks. A problem is never
//! split, so every per-problem quantity (ĝ, rule quality) can be computed inside one shard.

use crate::error::{LarkError, Result};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// SplitMix64's output function: a bijection on u64 that spreads nearby ids over all residues.
pub fn mix(problem_id: i64) -> u64 {
    let mut z = (problem_id as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Shard {
    /// Whether `problem_id` is this shard's.
    pub fn owns(&self, problem_id: i64) -> bool {
        (mix(problem_id) % self.count as u64) as usize == self.index
    }
}

impl FromStr for Shard {
    type Err = LarkError;
    fn from_str(s: &str) -> Result<Shard> {
        let bad = || LarkError::input("--shard", format!("`{s}`: expected I/N with 0 ≤ I < N"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) =
            (i.trim().parse::<usize>().map_err(|_| bad())?, n.trim().parse::<usize>().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_partitions() {
        assert_eq!("2/5".parse::<Shard>().unwrap(), Shard { index: 2, count: 5 });
        for bad in ["5/5", "1", "a/2", "0/0", "-1/3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        // Every id lands in exactly one shard, and the shards are roughly balanced.
        let n = 4;
        let mut sizes = [0usize; 4];
        for pid in -500i64..1500 {
            let owners: Vec<usize> = (0..n).filter(|&i| Shard { index: i, count: n }.owns(pid)).collect();
            assert_eq!(owners.len(), 1);
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&s| s > 400 && s < 600), "{sizes:?}");
        // Even ids only: still balanced (plain `pid mod 2` would put them all in shard 0).
        let even = (0..1000i64).filter(|p| Shard { index: 0, count: 2 }.owns(2 * p)).count();
        assert!(even > 400 && even < 600, "{even}");
    }
}
