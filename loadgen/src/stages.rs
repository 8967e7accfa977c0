//! `--stages 10s:1000,30s:20000,10s:0`: a load level (a rate for `rate`, a session count
//! for `heartbeat` and `echo`) that ramps linearly from 0 to each stage's target over the
//! stage's duration, as k6's stages do. A `0s:N` stage is a step.
//!
//! For a rate, message `m` (0-based, over the whole run) is due when the integral of the
//! level reaches `m`: [`Stages::time_of`] inverts that integral, which is quadratic on
//! each stage. For sessions, session `j` is open while the level is above `j`
//! ([`Stages::open_intervals`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Serialize, Serializer};

/// A piecewise-linear level over time, starting at 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Stages {
    /// (end of the stage in seconds from the start, target level), in order.
    ends: Vec<(f64, f64)>,
    text: String,
}

impl FromStr for Stages {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut ends = Vec::new();
        let mut t = 0.0;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = |m: &str| format!("--stages {s:?}: {part:?}: {m} (e.g. 10s:1000)");
            let (d, level) = part.split_once(':').ok_or_else(|| bad("no ':'"))?;
            let d = humantime::parse_duration(d.trim()).map_err(|e| bad(&e.to_string()))?;
            let level: f64 = level.trim().parse().map_err(|_| bad("bad target"))?;
            if !(level >= 0.0 && level.is_finite()) {
                return Err(bad("the target must be >= 0"));
            }
            t += d.as_secs_f64();
            ends.push((t, level));
        }
        if ends.is_empty() || t <= 0.0 {
            return Err(format!("--stages {s:?}: no stage with a duration"));
        }
        Ok(Self {
            ends,
            text: s.to_string(),
        })
    }
}

impl fmt::Display for Stages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Stages {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Stages {
    /// The whole plan's length.
    pub fn total(&self) -> Duration {
        Duration::from_secs_f64(self.total_s())
    }

    fn total_s(&self) -> f64 {
        self.ends.last().map_or(0.0, |e| e.0)
    }

    /// The highest target.
    pub fn max(&self) -> f64 {
        self.ends.iter().map(|e| e.1).fold(0.0, f64::max)
    }

    /// The same plan with every level multiplied by `f` (a shard's share of a rate).
    pub fn scaled(&self, f: f64) -> Self {
        Self {
            ends: self.ends.iter().map(|&(t, l)| (t, l * f)).collect(),
            text: self.text.clone(),
        }
    }

    /// Segments (t0, l0, t1, l1), starting at (0, 0).
    fn segments(&self) -> impl Iterator<Item = (f64, f64, f64, f64)> + '_ {
        let starts = std::iter::once((0.0, 0.0)).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|((t0, l0), (t1, l1))| (t0, l0, t1, l1))
    }

    /// The level at `t` seconds (the last target after the end).
    pub fn level(&self, t: f64) -> f64 {
        for (t0, l0, t1, l1) in self.segments() {
            if t < t1 {
                if t1 <= t0 {
                    return l1;
                }
                return l0 + (l1 - l0) * ((t - t0).max(0.0) / (t1 - t0));
            }
        }
        self.ends.last().map_or(0.0, |e| e.1)
    }

    /// The integral of the level from 0 to `t` (for a rate: messages due by `t`).
    pub fn cumulative(&self, t: f64) -> f64 {
        let mut sum = 0.0;
        for (t0, l0, t1, l1) in self.segments() {
            if t <= t0 {
                break;
            }
            let dt = t.min(t1) - t0;
            if t1 > t0 {
                let slope = (l1 - l0) / (t1 - t0);
                sum += l0 * dt + 0.5 * slope * dt * dt;
            }
        }
        sum
    }

    /// When the integral of the level reaches `count` (message `count` is due), or `None`
    /// if it never does within the plan.
    pub fn time_of(&self, count: f64) -> Option<f64> {
        let mut before = 0.0;
        for (t0, l0, t1, l1) in self.segments() {
            if t1 <= t0 {
                continue;
            }
            let dt = t1 - t0;
            let slope = (l1 - l0) / dt;
            let area = l0 * dt + 0.5 * slope * dt * dt;
            if count < before + area {
                // Solve l0 x + slope x²/2 = r in the form that is stable for any slope
                // (including 0): x = 2r / (l0 + sqrt(l0² + 2 slope r)).
                let r = count - before;
                let disc = (l0 * l0 + 2.0 * slope * r).max(0.0);
                let denom = l0 + disc.sqrt();
                let x = if denom > 0.0 { 2.0 * r / denom } else { 0.0 };
                return Some(t0 + x.clamp(0.0, dt));
            }
            before += area;
        }
        None
    }

    /// The intervals (seconds from the start) during which the level is above `j`: when
    /// session `j` is open.
    pub fn open_intervals(&self, j: f64) -> Vec<(f64, f64)> {
        let mut out: Vec<(f64, f64)> = Vec::new();
        for (t0, l0, t1, l1) in self.segments() {
            if t1 <= t0 {
                continue;
            }
            let cross = |l: f64| t0 + (t1 - t0) * ((l - l0) / (l1 - l0));
            let span = match (l0 > j, l1 > j) {
                (true, true) => Some((t0, t1)),
                (true, false) => Some((t0, cross(j))),
                (false, true) => Some((cross(j), t1)),
                (false, false) => None,
            };
            if let Some((a, b)) = span.filter(|(a, b)| b > a) {
                match out.last_mut() {
                    Some(last) if (last.1 - a).abs() < 1e-9 => last.1 = b,
                    _ => out.push((a, b)),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6 * b.abs().max(1.0)
    }

    #[test]
    fn ramps_linearly_between_stage_ends() {
        let s: Stages = "10s:1000,30s:20000,10s:0".parse().unwrap();
        assert_eq!(s.total(), Duration::from_secs(50));
        assert_eq!(s.max(), 20000.0);
        assert!(close(s.level(5.0), 500.0));
        assert!(close(s.level(25.0), 1000.0 + 19000.0 * 0.5));
        assert!(close(s.level(45.0), 10000.0));
        // Areas: 5,000 + 315,000 + 100,000.
        assert!(close(s.cumulative(50.0), 420_000.0));
        assert!(close(s.cumulative(10.0), 5_000.0));
        for m in [0.0, 1.0, 4_999.0, 5_000.0, 100_000.0, 419_999.0] {
            let t = s.time_of(m).unwrap();
            assert!(close(s.cumulative(t), m), "{m}: t={t}");
        }
        assert!(s.time_of(420_001.0).is_none());
        // A step, then a constant level.
        let c: Stages = "0s:100,2s:100".parse().unwrap();
        assert!(close(c.time_of(50.0).unwrap(), 0.5));
        assert!(close(c.cumulative(2.0), 200.0));
        assert!(close(c.scaled(0.5).cumulative(2.0), 100.0));
        assert!("".parse::<Stages>().is_err());
        assert!("10s".parse::<Stages>().is_err());
        assert!("10s:-1".parse::<Stages>().is_err());
        assert!("0s:5".parse::<Stages>().is_err());
    }

    #[test]
    fn sessions_open_while_the_level_is_above_them() {
        let s: Stages = "10s:10,10s:10,10s:0".parse().unwrap();
        // Session 0 opens at once (level > 0 right after 0) and closes at the very end.
        let i0 = s.open_intervals(0.0);
        assert_eq!(i0.len(), 1);
        assert!(close(i0[0].0, 0.0) && close(i0[0].1, 30.0), "{i0:?}");
        // Session 4 opens when the level passes 4 (4 s) and closes when it falls to 4.
        let i4 = s.open_intervals(4.0);
        assert!(close(i4[0].0, 4.0) && close(i4[0].1, 26.0), "{i4:?}");
        assert!(s.open_intervals(10.0).is_empty());
        // Up, down, up: two intervals.
        let w: Stages = "1s:4,1s:0,1s:4".parse().unwrap();
        assert_eq!(w.open_intervals(1.0).len(), 2);
    }
}
