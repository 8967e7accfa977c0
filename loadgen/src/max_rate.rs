//! `rate --find-max-rate --p99 D [--max-errors N]`: the highest open-loop rate the
//! server sustains with the coordinated-omission-corrected p99 (`latency_scheduled`)
//! within `D` and at most `N` errors.
//!
//! Each step is a whole `rate` run (sessions established, `--warmup`, `--duration`) at
//! one rate. The search doubles the rate from `--rate` while steps pass (or halves it
//! while they fail), then bisects between the highest pass and the lowest failure until
//! they are within [`PRECISION`] of each other. A step passes when every session was
//! established, errors are within the limit, the p99 is within the target, and the rate
//! achieved in the window is at least [`MIN_ACHIEVED`] of the rate asked (an open loop
//! that falls behind shows it there too).

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cli::RateArgs;
use crate::report::Report;
use crate::LoadError;

/// The search stops when the highest pass and lowest failure are this close (relative).
pub const PRECISION: f64 = 0.05;
/// Steps at most (doubling from 1 msg/s to 10^6 msg/s takes 20).
pub const MAX_STEPS: usize = 24;
/// A step must achieve this share of its rate.
pub const MIN_ACHIEVED: f64 = 0.9;
/// First rate tried without --rate.
pub const DEFAULT_START: f64 = 1000.0;

/// One step of the search.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    /// Rate asked, messages per second (all shards of this worker's share).
    pub rate: f64,
    /// Rate achieved in the measured window.
    pub achieved: f64,
    /// Coordinated-omission-corrected p99, µs.
    pub p99_us: f64,
    /// Errors.
    pub errors: u64,
    /// Whether the step met the target.
    pub pass: bool,
    /// Why not, if it did not.
    pub why: String,
}

/// The search's outcome, stored as `results.max_rate`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MaxRate {
    /// The highest passing rate, if any step passed.
    pub rate: Option<f64>,
    /// The target p99, µs.
    pub p99_target_us: f64,
    /// Errors a step could have.
    pub max_errors: u64,
    /// Every step, in order.
    pub steps: Vec<Step>,
}

impl MaxRate {
    /// The lines printed in the summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (i, st) in self.steps.iter().enumerate() {
            let _ = writeln!(s, "{}", step_line(i, st));
        }
        let _ = match self.rate {
            Some(r) => writeln!(
                s,
                "max rate    {r:.0} msg/s with p99 <= {:.0} µs and <= {} errors",
                self.p99_target_us, self.max_errors
            ),
            None => writeln!(s, "max rate    none: no step met the target"),
        };
        s
    }
}

fn step_line(i: usize, st: &Step) -> String {
    format!(
        "step {:>2}    {:>10.0} msg/s asked, {:>10.0} achieved, p99 {:>10.1} µs, {} errors: {}",
        i + 1,
        st.rate,
        st.achieved,
        st.p99_us,
        st.errors,
        if st.pass { "pass" } else { &st.why }
    )
}

/// Judges one step's report.
pub fn judge(r: &Report, rate: f64, p99: Duration, max_errors: u64) -> Step {
    let x = &r.results;
    let achieved = x
        .extra
        .get("achieved_rate")
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    let p99_us = x.latency_us.p99;
    let target_us = p99.as_secs_f64() * 1e6;
    let mut why = Vec::new();
    if x.sessions_established < x.sessions_requested {
        why.push(format!(
            "{} of {} sessions",
            x.sessions_established, x.sessions_requested
        ));
    }
    if x.errors_total > max_errors {
        why.push(format!("{} errors", x.errors_total));
    }
    if x.latency_us.count == 0 {
        why.push("no replies".into());
    } else if p99_us > target_us {
        why.push(format!("p99 over {target_us:.0} µs"));
    }
    if achieved < MIN_ACHIEVED * rate {
        why.push(format!("achieved < {:.0}%", MIN_ACHIEVED * 100.0));
    }
    Step {
        rate,
        achieved,
        p99_us,
        errors: x.errors_total,
        pass: why.is_empty(),
        why: why.join(", "),
    }
}

/// The next rate to try, or `None` when the search is done. `lo` is the highest passing
/// rate, `hi` the lowest failing one.
pub fn next_rate(lo: Option<f64>, hi: Option<f64>) -> Option<f64> {
    match (lo, hi) {
        (Some(l), None) => Some(l * 2.0),
        (None, Some(h)) => (h / 2.0 >= 1.0).then_some(h / 2.0),
        (Some(l), Some(h)) => ((h - l) / l > PRECISION).then_some((l + h) / 2.0),
        (None, None) => None,
    }
}

/// Runs the search; the report returned is the highest passing step's run (or the last
/// step's, when none passed) with `results.max_rate` set.
pub fn run(a: &RateArgs) -> Result<Report, LoadError> {
    let target = a.p99.ok_or_else(|| {
        crate::scenarios::ScenarioError::Config("--find-max-rate needs --p99".into())
    })?;
    let mut rate = if a.rate > 0.0 { a.rate } else { DEFAULT_START };
    let (mut lo, mut hi): (Option<f64>, Option<f64>) = (None, None);
    let mut steps = Vec::new();
    let mut best: Option<Report> = None;
    let mut last: Option<Report> = None;
    for _ in 0..MAX_STEPS {
        let mut step_args = a.clone();
        step_args.rate = rate;
        step_args.find_max_rate = false;
        step_args.common.json = None;
        step_args.common.interval_log = None;
        let report = crate::run_load(&crate::cli::Command::Rate(step_args))?
            .expect("rate is a load scenario");
        let step = judge(&report, rate, target, a.max_errors);
        eprintln!("{}", step_line(steps.len(), &step));
        if step.pass {
            lo = Some(lo.map_or(rate, |l: f64| l.max(rate)));
            best = Some(report);
        } else {
            hi = Some(hi.map_or(rate, |h: f64| h.min(rate)));
            last = Some(report);
        }
        steps.push(step);
        match next_rate(lo, hi) {
            Some(r) => rate = r,
            None => break,
        }
    }
    let found = lo;
    let mut report = best.or(last).expect("at least one step ran");
    report.results.max_rate = Some(MaxRate {
        rate: found,
        p99_target_us: target.as_secs_f64() * 1e6,
        max_errors: a.max_errors,
        steps,
    });
    report
        .results
        .extra
        .insert("max_rate".into(), serde_json::json!(found));
    if found.is_none() {
        report.results.ok = false;
        report
            .results
            .problems
            .push("no rate met the --p99 target".into());
    }
    if let Some(path) = &a.common.json {
        report.write(path)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The search against a pure function: pass iff rate <= k.
    fn search(k: f64, start: f64) -> (Option<f64>, usize) {
        let (mut lo, mut hi, mut rate, mut n) = (None, None, start, 0);
        for _ in 0..MAX_STEPS {
            n += 1;
            if rate <= k {
                lo = Some(lo.map_or(rate, |l: f64| l.max(rate)));
            } else {
                hi = Some(hi.map_or(rate, |h: f64| h.min(rate)));
            }
            match next_rate(lo, hi) {
                Some(r) => rate = r,
                None => break,
            }
        }
        (lo, n)
    }

    #[test]
    fn doubles_then_bisects_to_within_precision() {
        for (k, start) in [(3000.0, 100.0), (3000.0, 100_000.0), (3.0, 1000.0)] {
            let (found, steps) = search(k, start);
            let f = found.unwrap();
            assert!(
                f <= k && f >= k * (1.0 - PRECISION) * 0.99,
                "{k} from {start}: {f}"
            );
            assert!(steps < MAX_STEPS, "{steps}");
        }
        assert_eq!(search(0.5, 10.0).0, None);
    }
}
