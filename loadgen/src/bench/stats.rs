//! The suite's statistics: medians of the runs, ranges, the ratio of the medians and of
//! each interleaved pair, the server CPU cost ratio, other processes' CPU share, and a
//! target's standing.

use super::doc::{CpuCost, Detail, OtherCpu, RatioStats, Standing, Stats};
use super::suite::{Op, Target};

/// Median (mean of the two middle values for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Rounds to `digits` decimals.
pub fn round_to(v: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (v * p).round() / p
}

impl Stats {
    /// Statistics of a side's runs (at least one).
    pub fn of(values: &[f64]) -> Self {
        Self {
            runs: values.iter().map(|v| round_to(*v, 3)).collect(),
            median: median(values).unwrap_or(f64::NAN),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// The ratio of the medians and of each interleaved pair (subject run i / baseline run
/// i; a pair whose baseline is 0 is left out).
pub fn ratio(subject: &Stats, baseline: &Stats, pairs: &[(f64, f64)]) -> RatioStats {
    let per: Vec<f64> = pairs
        .iter()
        .filter(|(_, b)| *b != 0.0)
        .map(|(s, b)| s / b)
        .collect();
    RatioStats {
        median_over_median: (baseline.median != 0.0).then(|| subject.median / baseline.median),
        per_run: per.iter().map(|p| round_to(*p, 4)).collect(),
        min: per.iter().copied().reduce(f64::min),
        max: per.iter().copied().reduce(f64::max),
    }
}

/// Server CPU per message, subject median / baseline median: only when every run of
/// both sides measured it (it is far less sensitive to other tenants' load than
/// throughput: contention stretches the wall clock, not the work).
pub fn cpu_cost(subject: &[Detail], baseline: &[Detail]) -> Option<CpuCost> {
    let all = |d: &[Detail]| -> Option<Vec<f64>> {
        d.iter()
            .map(|x| x.server_cpu_ns_per_msg().filter(|v| *v != 0.0))
            .collect()
    };
    let (s, b) = (median(&all(subject)?)?, median(&all(baseline)?)?);
    Some(CpuCost {
        median_over_median: s / b,
        server_cpu_ns_per_msg: s.round(),
        baseline_server_cpu_ns_per_msg: b.round(),
    })
}

/// Other processes' CPU share over every run of both sides that measured it.
pub fn other_cpu<'a>(details: impl IntoIterator<Item = &'a Detail>) -> Option<OtherCpu> {
    let v: Vec<f64> = details
        .into_iter()
        .filter_map(Detail::other_cpu_pct)
        .collect();
    Some(OtherCpu {
        median: median(&v)?,
        max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    })
}

/// Whether `value` meets `target`, and by how much (margin > 0: headroom).
pub fn standing(target: &Target, value: f64) -> Standing {
    let t = target.value;
    let (met, margin, text) = match target.op {
        Op::AtLeast => {
            let margin = (value / t - 1.0) * 100.0;
            let met = value >= t;
            let text = if met {
                format!("met, {margin:.0}% above")
            } else {
                format!("missed, {:.0}% below", -margin)
            };
            (met, margin, text)
        }
        Op::AtMost => {
            let margin = (1.0 - value / t) * 100.0;
            let met = value <= t;
            let text = if met {
                format!("met, {margin:.0}% under the limit")
            } else {
                format!("missed, {:.2}× the limit", value / t)
            };
            (met, margin, text)
        }
    };
    Standing {
        met,
        margin_pct: round_to(margin, 1),
        text,
    }
}

/// The run whose value is the median (the upper middle one for an even count): its
/// report feeds the charts and the ratio check.
pub fn median_index(values: &[f64]) -> Option<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|a, b| values[*a].total_cmp(&values[*b]));
    idx.get(values.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::doc::LoadDetail;
    use crate::bench::suite::TargetKind;

    fn load(cpu: Option<f64>, other: Option<f64>) -> Detail {
        Detail::Load(LoadDetail {
            messages_per_sec: 1.0,
            bytes_per_sec: 0.0,
            latency_p50_us: 0.0,
            latency_p99_us: 0.0,
            latency_p999_us: 0.0,
            errors: 0,
            sessions: "1/1".into(),
            server_cpu_ns_per_msg: cpu,
            loadgen_cpu_ns_per_msg: None,
            other_cpu_pct: other,
        })
    }

    #[test]
    fn medians_and_ranges() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        let s = Stats::of(&[5.12345, 1.0, 3.0]);
        assert_eq!(s.runs, vec![5.123, 1.0, 3.0]);
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.12345));
        assert_eq!(median_index(&[5.0, 1.0, 3.0]), Some(2));
        assert_eq!(median_index(&[]), None);
    }

    #[test]
    fn ratio_of_medians_not_median_of_ratios() {
        let s = Stats::of(&[10.0, 30.0, 20.0]);
        let b = Stats::of(&[40.0, 10.0, 100.0]);
        let r = ratio(&s, &b, &[(10.0, 40.0), (30.0, 10.0), (20.0, 100.0)]);
        assert_eq!(r.median_over_median, Some(0.5));
        assert_eq!(r.per_run, vec![0.25, 3.0, 0.2]);
        assert_eq!((r.min, r.max), (Some(0.2), Some(3.0)));
        let zero = Stats::of(&[0.0]);
        let r = ratio(&s, &zero, &[(10.0, 0.0)]);
        assert_eq!(r.median_over_median, None);
        assert!(r.per_run.is_empty());
    }

    #[test]
    fn cpu_cost_needs_every_run() {
        let s = [
            load(Some(300.0), None),
            load(Some(100.0), None),
            load(Some(200.0), None),
        ];
        let b = [
            load(Some(100.0), None),
            load(Some(100.0), None),
            load(Some(50.0), None),
        ];
        let c = cpu_cost(&s, &b).unwrap();
        assert_eq!(c.median_over_median, 2.0);
        assert_eq!(
            (c.server_cpu_ns_per_msg, c.baseline_server_cpu_ns_per_msg),
            (200.0, 100.0)
        );
        let partial = [load(Some(100.0), None), load(None, None)];
        assert!(cpu_cost(&s, &partial).is_none());
        assert!(cpu_cost(&s, &[load(Some(0.0), None)]).is_none());
    }

    #[test]
    fn other_cpu_over_both_sides() {
        let d = [
            load(None, Some(1.0)),
            load(None, Some(9.0)),
            load(None, None),
            load(None, Some(3.0)),
        ];
        assert_eq!(
            other_cpu(&d),
            Some(OtherCpu {
                median: 3.0,
                max: 9.0
            })
        );
        assert_eq!(other_cpu(&[load(None, None)]), None);
    }

    #[test]
    fn standings() {
        let at_least = Target {
            kind: TargetKind::Ratio,
            op: Op::AtLeast,
            value: 0.6,
        };
        let s = standing(&at_least, 0.589);
        assert!(!s.met);
        assert_eq!(s.text, "missed, 2% below");
        assert_eq!(s.margin_pct, -1.8);
        let s = standing(&at_least, 0.9);
        assert!(s.met);
        assert_eq!(s.text, "met, 50% above");
        let at_most = Target {
            kind: TargetKind::Absolute,
            op: Op::AtMost,
            value: 2000.0,
        };
        // The committed 647f94a report's heartbeat standing.
        let s = standing(&at_most, 3184.639);
        assert_eq!(s.text, "missed, 1.59× the limit");
        assert_eq!(s.margin_pct, -59.2);
        let s = standing(&at_most, 1000.0);
        assert_eq!((s.met, s.text.as_str()), (true, "met, 50% under the limit"));
    }
}
