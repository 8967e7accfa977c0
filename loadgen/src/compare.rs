//! `loadgen compare BASE.json NEW.json`: the differences between two runs and a verdict.

use std::fmt::Write as _;

use crate::report::Report;

/// The metrics compared, shown in `loadgen compare --help`.
pub const METRICS_HELP: &str = "\
Metrics compared (a regression is a change in the bad direction, in percent of BASE):
  messages_per_sec            higher is better (churn: sessions per second)
  latency p50 / p99 / p99.9   lower is better (the scenario's primary latency)
  loadgen_cpu_ns_per_msg      lower is better (when both reports have it)
  server_cpu_ns_per_msg       lower is better (when both reports have --server-pid)
Also failing regardless of --max-regression: NEW has more errors than BASE, NEW
established fewer sessions than it asked for, or the runs are of different scenarios.
The ratio column is NEW / BASE.";

/// Direction of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Throughput-like.
    Higher,
    /// Latency- or cost-like.
    Lower,
}

/// One compared metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// Name.
    pub metric: &'static str,
    /// Direction.
    pub better: Better,
    /// BASE value.
    pub base: f64,
    /// NEW value.
    pub new: f64,
    /// Regression in percent (negative: improvement).
    pub regression_pct: f64,
}

/// The outcome of a comparison.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Every metric present in both runs.
    pub deltas: Vec<Delta>,
    /// Reasons to fail.
    pub failures: Vec<String>,
}

fn delta(metric: &'static str, better: Better, base: f64, new: f64) -> Option<Delta> {
    if !(base.is_finite() && new.is_finite()) || base <= 0.0 {
        return None;
    }
    let change = (new - base) / base * 100.0;
    let regression_pct = match better {
        Better::Higher => -change,
        Better::Lower => change,
    };
    Some(Delta {
        metric,
        better,
        base,
        new,
        regression_pct,
    })
}

/// Compares `new` against `base`; a metric regressing by more than `max_regression_pct`
/// is a failure.
pub fn compare(base: &Report, new: &Report, max_regression_pct: f64) -> Comparison {
    let (b, n) = (&base.results, &new.results);
    let mut deltas = Vec::new();
    let mut push = |d: Option<Delta>| deltas.extend(d);
    push(delta(
        "messages_per_sec",
        Better::Higher,
        b.messages_per_sec,
        n.messages_per_sec,
    ));
    push(delta(
        "latency_p50_us",
        Better::Lower,
        b.latency_us.p50,
        n.latency_us.p50,
    ));
    push(delta(
        "latency_p99_us",
        Better::Lower,
        b.latency_us.p99,
        n.latency_us.p99,
    ));
    push(delta(
        "latency_p999_us",
        Better::Lower,
        b.latency_us.p999,
        n.latency_us.p999,
    ));
    if let (Some(x), Some(y)) = (
        base.cpu.loadgen_cpu_ns_per_msg,
        new.cpu.loadgen_cpu_ns_per_msg,
    ) {
        push(delta("loadgen_cpu_ns_per_msg", Better::Lower, x, y));
    }
    if let (Some(x), Some(y)) = (
        base.cpu.server_cpu_ns_per_msg,
        new.cpu.server_cpu_ns_per_msg,
    ) {
        push(delta("server_cpu_ns_per_msg", Better::Lower, x, y));
    }
    conclude(deltas, max_regression_pct, b, n)
}

/// What every comparison checks besides its metrics: a run's results, or a case's ratios.
trait Checked {
    fn scenario(&self) -> &str;
    fn errors_total(&self) -> u64;
    /// Sessions established and requested.
    fn sessions(&self) -> (u64, u64);
}

/// Both kinds of outcome name these fields alike.
macro_rules! checked {
    ($($t:ty),*) => {$(
        impl Checked for $t {
            fn scenario(&self) -> &str {
                &self.scenario
            }
            fn errors_total(&self) -> u64 {
                self.errors_total
            }
            fn sessions(&self) -> (u64, u64) {
                (self.sessions_established, self.sessions_requested)
            }
        }
    )*};
}
checked!(crate::report::Results, crate::bench::doc::CaseRatios);

/// The verdict: another scenario, more errors, missing sessions, or a metric regressing
/// past `max_regression_pct` fails.
fn conclude<C: Checked>(
    deltas: Vec<Delta>,
    max_regression_pct: f64,
    base: &C,
    new: &C,
) -> Comparison {
    let mut failures = Vec::new();
    if base.scenario() != new.scenario() {
        failures.push(format!(
            "different scenarios: {} vs {}",
            base.scenario(),
            new.scenario()
        ));
    }
    if new.errors_total() > base.errors_total() {
        failures.push(format!(
            "errors rose from {} to {}",
            base.errors_total(),
            new.errors_total()
        ));
    }
    let (established, requested) = new.sessions();
    if established < requested {
        failures.push(format!(
            "NEW established {established} of {requested} sessions"
        ));
    }
    for d in &deltas {
        if d.regression_pct > max_regression_pct {
            failures.push(format!(
                "{} regressed {:.1}% (limit {:.1}%)",
                d.metric, d.regression_pct, max_regression_pct
            ));
        }
    }
    Comparison { deltas, failures }
}

impl Comparison {
    /// True when nothing failed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The table printed on stdout.
    pub fn render(&self, base: &Report, new: &Report) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "BASE {} ({})", base.label, base.tool.git_commit);
        let _ = writeln!(s, "NEW  {} ({})", new.label, new.tool.git_commit);
        if !base.machine.same_hardware(&new.machine) {
            let _ = writeln!(s, "note: the runs are from different machines");
        }
        self.rows(
            &mut s,
            2,
            (base.results.errors_total, new.results.errors_total),
        );
        s
    }
}

/// Compares one benchmark case's ratios (sockchat / baseline, measured interleaved in one
/// run) with the same case's in a baseline ratio file. When `quiet` (the bench gates
/// ratios only on a quiet machine), each ratio the new file marks as gated fails past
/// `max_regression_pct`; errors, missing sessions or another scenario always fail.
pub fn compare_ratios(
    base: &crate::bench::doc::CaseRatios,
    new: &crate::bench::doc::CaseRatios,
    max_regression_pct: f64,
    quiet: bool,
) -> Comparison {
    use crate::bench::suite::Gated;
    let mut deltas = Vec::new();
    for g in new.gated.iter().filter(|_| quiet) {
        deltas.extend(match g {
            Gated::ThroughputRatio => {
                delta("throughput_ratio", Better::Higher, base.ratio, new.ratio)
            }
            Gated::CpuCostRatio => {
                base.cpu_cost_ratio
                    .zip(new.cpu_cost_ratio)
                    .and_then(|(b, n)| {
                        delta(
                            "cpu_cost_ratio",
                            Better::Lower,
                            b.median_over_median,
                            n.median_over_median,
                        )
                    })
            }
        });
    }
    conclude(deltas, max_regression_pct, base, new)
}

impl Comparison {
    /// The table of a ratio comparison ([`compare_ratios`]).
    pub fn render_ratios(
        &self,
        base: &crate::bench::doc::CaseRatios,
        new: &crate::bench::doc::CaseRatios,
    ) -> String {
        let mut s = String::new();
        self.rows(&mut s, 3, (base.errors_total, new.errors_total));
        s
    }
}

impl Comparison {
    /// The metric rows (values with `decimals` digits), BASE's and NEW's `errors` and the
    /// verdict lines: the body of both tables.
    fn rows(&self, s: &mut String, decimals: usize, errors: (u64, u64)) {
        let _ = writeln!(
            s,
            "{:<24} {:>14} {:>14} {:>9} {:>8}  better",
            "metric", "base", "new", "change", "ratio"
        );
        for d in &self.deltas {
            let change = (d.new - d.base) / d.base * 100.0;
            let _ = writeln!(
                s,
                "{:<24} {:>14.decimals$} {:>14.decimals$} {:>+8.1}% {:>8.3}  {}{}",
                d.metric,
                d.base,
                d.new,
                change,
                d.new / d.base,
                match d.better {
                    Better::Higher => "higher",
                    Better::Lower => "lower",
                },
                if d.regression_pct > 0.0 {
                    "  (worse)"
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(
            s,
            "{:<24} {:>14} {:>14}",
            "errors_total", errors.0, errors.1
        );
        if self.passed() {
            let _ = writeln!(s, "PASS");
        } else {
            for f in &self.failures {
                let _ = writeln!(s, "FAIL: {f}");
            }
        }
    }
}
