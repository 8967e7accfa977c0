//! `--shard I/N`: one worker's share of a run split over N loadgen processes (on one host
//! or many, started by whatever starts processes there: a shell, ssh, a Kubernetes
//! Indexed Job). Each worker takes its share of the sessions, of the rate and of the
//! connect ramp; shares of a count differ by at most one. The workers' reports combine
//! with `loadgen merge`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Worker `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    /// This worker, `0..count`.
    pub index: usize,
    /// Workers in the run.
    pub count: usize,
}

impl Default for Shard {
    /// The whole run in one process.
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl Shard {
    /// True when the run is split over several workers.
    pub fn is_split(&self) -> bool {
        self.count > 1
    }

    /// This worker's share of `total` items: `total / count`, plus one for the first
    /// `total % count` workers.
    pub fn share(&self, total: usize) -> usize {
        total / self.count + usize::from(self.index < total % self.count)
    }

    /// Global index of this worker's first item, when `total` items are dealt out in
    /// contiguous ranges in shard order.
    pub fn first(&self, total: usize) -> usize {
        self.index * (total / self.count) + self.index.min(total % self.count)
    }

    /// This worker's share of a rate (messages or connects per second).
    pub fn rate(&self, total: f64) -> f64 {
        total / self.count as f64
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?}: expected I/N with 0 <= I < N, e.g. 0/2");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl Serialize for Shard {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Shard {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_differ_by_at_most_one_and_cover_everything() {
        for total in [0usize, 1, 2, 5, 19_900, 19_901] {
            for count in 1..=7 {
                let shards: Vec<Shard> = (0..count).map(|index| Shard { index, count }).collect();
                let shares: Vec<usize> = shards.iter().map(|s| s.share(total)).collect();
                assert_eq!(shares.iter().sum::<usize>(), total);
                let (min, max) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
                assert!(max - min <= 1, "{total} over {count}: {shares:?}");
                // Contiguous ranges, in order, without gaps.
                let mut next = 0;
                for s in &shards {
                    assert_eq!(s.first(total), next);
                    next += s.share(total);
                }
            }
        }
    }

    #[test]
    fn parses_and_prints() {
        let s: Shard = "1/2".parse().unwrap();
        assert_eq!(s, Shard { index: 1, count: 2 });
        assert_eq!(s.to_string(), "1/2");
        assert_eq!(serde_json::to_value(s).unwrap(), "1/2");
        for bad in ["2/2", "0/0", "1", "a/b", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert!((s.rate(1000.0) - 500.0).abs() < 1e-9);
    }
}
