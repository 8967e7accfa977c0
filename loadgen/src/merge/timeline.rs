//! Merged timelines: every worker's seconds grouped by the wall-clock second they end in,
//! per-second histograms added.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hdrhistogram::Histogram;

use super::{add_hist, MergeError};
use crate::histogram::{self, new_hist};
use crate::report::Report;
use crate::runner::TimelinePoint;

/// Per-second points of every input, grouped by the wall-clock second they end in.
pub(super) fn merged_timeline(
    inputs: &[(PathBuf, Report)],
    warnings: &mut Vec<String>,
) -> Result<Vec<TimelinePoint>, MergeError> {
    #[derive(Default)]
    struct Acc {
        msgs: f64,
        bytes: f64,
        errors: u64,
        hist: Option<Histogram<u64>>,
        missing_hist: bool,
        phases: Vec<String>,
        open: Option<u64>,
        target: Option<f64>,
        part: Option<String>,
        cpu: Option<f64>,
    }
    let mut secs: BTreeMap<u64, Acc> = BTreeMap::new();
    let mut unaligned = false;
    for (_, r) in inputs {
        for p in &r.timeline {
            let Some(end) = p.end_unix_ms else {
                unaligned = true;
                continue;
            };
            // Workers started at the same instant end their seconds together; others
            // are put in the nearest wall-clock second.
            let a = secs.entry((end + 500) / 1000).or_default();
            a.msgs += p.messages_per_sec;
            a.bytes += p.bytes_per_sec;
            a.errors += p.errors;
            match &p.hist {
                Some(h) => add_hist(&mut a.hist, h)?,
                None => a.missing_hist = true,
            }
            a.phases.push(p.phase.clone());
            if let Some(o) = p.open_sessions {
                *a.open.get_or_insert(0) += o;
            }
            a.target = a.target.or(p.target);
            a.part = a.part.take().or_else(|| p.part.clone());
            if let Some(c) = p.loadgen_cpu_s {
                *a.cpu.get_or_insert(0.0) += c;
            }
        }
    }
    if unaligned {
        warnings.push(
            "some timeline seconds have no wall-clock time (older loadgen): left out of the merged timeline"
                .into(),
        );
    }
    let Some(&first) = secs.keys().next() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(secs.len());
    for (sec, a) in secs {
        let h = a.hist.unwrap_or_else(new_hist);
        let q = |q: f64| {
            if h.is_empty() || a.missing_hist {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1000.0
            }
        };
        let phase = if a.phases.iter().all(|p| p == "measure") {
            "measure"
        } else if a.phases.iter().any(|p| p == "warmup") {
            "warmup"
        } else {
            "drain"
        };
        out.push(TimelinePoint {
            t_s: sec - first + 1,
            phase: phase.into(),
            messages_per_sec: a.msgs,
            bytes_per_sec: a.bytes,
            errors: a.errors,
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            end_unix_ms: Some(sec * 1000),
            open_sessions: a.open,
            target: a.target,
            part: a.part,
            loadgen_cpu_s: a.cpu,
            hist: (!a.missing_hist)
                .then(|| histogram::encode(&h))
                .transpose()?,
        });
    }
    Ok(out)
}
