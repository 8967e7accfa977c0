//! The quick check: this run's ratios against `bench-results/baseline.json`, compared by
//! [`compare_ratios`](crate::compare::compare_ratios), and re-baselining.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::cases::CaseRun;
use super::doc::{CaseRatios, RatioFile, RATIOS_SCHEMA};
use super::suite::Gated;
use crate::compare::compare_ratios;

/// What the baseline file says it is.
pub const ABOUT: &str = "ratios of the quick load suite (ci/bench.sh --quick --update-baseline); \
CI fails when one gets worse by more than 30% (loadgen compare on ratio files)";

/// The ratios of a run's cases that have a baseline and a loadgen median run.
pub fn case_ratios(
    runs: &[CaseRun],
    gates: &dyn Fn(&str) -> Vec<Gated>,
) -> Vec<(String, CaseRatios)> {
    runs.iter()
        .filter_map(|c| {
            let r = &c.result;
            let ratio = r.ratio.as_ref()?.median_over_median?;
            let rep = &c.median.as_ref()?.report;
            Some((
                r.name.clone(),
                CaseRatios {
                    title: r.title.clone(),
                    scenario: rep.results.scenario.clone(),
                    ratio,
                    cpu_cost_ratio: r.cpu_cost_ratio,
                    other_cpu_pct: r.other_cpu_pct,
                    errors_total: rep.results.errors_total,
                    sessions_requested: rep.results.sessions_requested,
                    sessions_established: rep.results.sessions_established,
                    gated: gates(&r.name),
                },
            ))
        })
        .collect()
}

/// Compares every case of `new` that `base` has; returns the printed text and the
/// names of the cases that failed. A throughput ratio is gated only when other processes used less than
/// `busy_threshold_pct` of the CPUs during the case (on a busy shared machine,
/// scheduling delays cut sockchat's multi-round-trip cycles far more than the raw
/// server's, so the ratio then measures the neighbours, not the code).
pub fn compare_files(
    base: &RatioFile,
    new: &RatioFile,
    max_regression_pct: f64,
    busy_threshold_pct: f64,
    order: &[String],
) -> (String, Vec<String>) {
    let mut s = String::new();
    let mut failed = Vec::new();
    let names = order.iter().filter(|n| new.cases.contains_key(*n));
    let rest = new.cases.keys().filter(|n| !order.contains(n));
    for name in names.chain(rest) {
        let n = &new.cases[name];
        let Some(b) = base.cases.get(name) else {
            let _ = writeln!(s, "-- {name}: not in the baseline, not compared");
            continue;
        };
        let other = n.other_cpu_pct.map_or(0.0, |o| o.median);
        let quiet = other < busy_threshold_pct;
        let gated = |g| quiet && n.gated.contains(&g);
        let _ = write!(
            s,
            "-- {name}: throughput ratio {:.3} -> {:.3}",
            b.ratio, n.ratio
        );
        if !quiet {
            let _ = write!(
                s,
                " (not gated: other processes used {other:.0}% of the CPUs, threshold \
                 {busy_threshold_pct:.0}%)"
            );
        }
        if let (Some(bc), Some(nc)) = (b.cpu_cost_ratio, n.cpu_cost_ratio) {
            let _ = write!(
                s,
                "; CPU cost ratio {:.3} -> {:.3} ({})",
                bc.median_over_median,
                nc.median_over_median,
                if gated(Gated::CpuCostRatio) {
                    "gated"
                } else {
                    "not gated"
                }
            );
        }
        let _ = writeln!(s);
        let cmp = compare_ratios(b, n, max_regression_pct, quiet);
        s.push_str(&cmp.render_ratios(b, n));
        if !cmp.passed() {
            failed.push(name.clone());
        }
    }
    (s, failed)
}

/// The quick check's baseline for a machine whose CPU is `cpu_model`:
/// `RESULTS/baselines/<model>.json` when one was measured on that kind of machine, else
/// `RESULTS/baseline.json`. Ratios to the raw servers move with the CPU (raw churn over
/// Unix is ~1.8x faster on this project's Intel Xeon VMs than on its AMD EPYC ones, while
/// sockchat's is not), so a check against another machine's ratios measures the machine,
/// not the change. `--update-baseline` writes the machine's own file.
pub fn baseline_path(results: &Path, cpu_model: &str, for_update: bool) -> PathBuf {
    let own = results
        .join("baselines")
        .join(format!("{}.json", model_slug(cpu_model)));
    if for_update || own.exists() {
        own
    } else {
        results.join("baseline.json")
    }
}

/// `cpu_model` as a file name: lower-case letters and digits, runs of anything else as
/// one `-` ("Intel(R) Xeon(R) Processor" -> "intel-r-xeon-r-processor").
pub fn model_slug(cpu_model: &str) -> String {
    let mut out = String::new();
    for c in cpu_model.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "unknown".into()
    } else {
        out
    }
}

/// Header of the check's output.
pub fn header(baseline: &Path, base: &RatioFile, max_regression_pct: f64) -> String {
    format!(
        "== ratio regression check against {} (commit {}), loadgen compare --max-regression {max_regression_pct}\n   \
         throughput_ratio = sockchat / raw (higher is better); the CPU cost ratio\n   \
         (server CPU per message, sockchat / raw) is gated where the suite says so\n",
        baseline.display(),
        base.commit
    )
}

/// A new ratio file.
pub fn ratio_file(
    cases: Vec<(String, CaseRatios)>,
    commit: String,
    date: String,
    machine: super::doc::BenchMachine,
    load_average: super::doc::LoadAverage,
    settings: super::doc::Settings,
) -> RatioFile {
    RatioFile {
        schema: RATIOS_SCHEMA.into(),
        about: ABOUT.into(),
        commit,
        date,
        machine,
        load_average,
        settings,
        cases: cases.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::doc::{BenchMachine, LoadAverage, OtherCpu, Settings};

    fn ratios(ratio: f64, other: f64, errors: u64) -> CaseRatios {
        CaseRatios {
            title: "t".into(),
            scenario: "echo".into(),
            ratio,
            cpu_cost_ratio: None,
            other_cpu_pct: Some(OtherCpu {
                median: other,
                max: other,
            }),
            errors_total: errors,
            sessions_requested: 100,
            sessions_established: 100,
            gated: vec![Gated::ThroughputRatio],
        }
    }

    fn file(cases: Vec<(&str, CaseRatios)>) -> RatioFile {
        ratio_file(
            cases.into_iter().map(|(n, c)| (n.to_string(), c)).collect(),
            "abc".into(),
            "2026-12-01".into(),
            BenchMachine {
                cpu_model: "x".into(),
                cores: 2,
                kernel: "k".into(),
                memory_mib: None,
                os: "Linux".into(),
            },
            LoadAverage {
                start: vec![0.0; 3],
                end: vec![0.0; 3],
            },
            Settings {
                runs: 3,
                warmup: 0.5,
                duration: 2.0,
                server_cpu: 0,
                loadgen_cpu: 1,
                base_rev: None,
            },
        )
    }

    #[test]
    fn a_regressed_ratio_fails_on_a_quiet_machine_only() {
        let base = file(vec![("e", ratios(0.6, 0.0, 0))]);
        let same = file(vec![("e", ratios(0.55, 1.0, 0))]);
        assert!(compare_files(&base, &same, 30.0, 5.0, &[]).1.is_empty());
        let worse = file(vec![("e", ratios(0.3, 1.0, 0))]);
        let (text, failed) = compare_files(&base, &worse, 30.0, 5.0, &[]);
        assert_eq!(failed, ["e"], "{text}");
        assert!(text.contains("throughput_ratio regressed 50.0%"), "{text}");
        let busy = file(vec![("e", ratios(0.3, 12.0, 0))]);
        let (text, failed) = compare_files(&base, &busy, 30.0, 5.0, &[]);
        assert!(failed.is_empty(), "{text}");
        assert!(
            text.contains("not gated: other processes used 12%"),
            "{text}"
        );
    }

    #[test]
    fn errors_and_missing_sessions_always_fail() {
        let base = file(vec![("e", ratios(0.6, 0.0, 0))]);
        let errors = file(vec![("e", ratios(0.9, 50.0, 3))]);
        let (text, failed) = compare_files(&base, &errors, 30.0, 5.0, &[]);
        assert!(
            !failed.is_empty() && text.contains("errors rose from 0 to 3"),
            "{text}"
        );
        let mut short = ratios(0.9, 0.0, 0);
        short.sessions_established = 99;
        let (text, failed) = compare_files(&base, &file(vec![("e", short)]), 30.0, 5.0, &[]);
        assert!(
            !failed.is_empty() && text.contains("established 99 of 100"),
            "{text}"
        );
    }

    #[test]
    fn the_cpu_cost_ratio_is_gated_where_the_suite_says() {
        use crate::bench::doc::CpuCost;
        let cost = |r| {
            Some(CpuCost {
                median_over_median: r,
                server_cpu_ns_per_msg: 0.0,
                baseline_server_cpu_ns_per_msg: 0.0,
            })
        };
        let mut b = ratios(0.6, 0.0, 0);
        b.cpu_cost_ratio = cost(1.2);
        let mut n = ratios(0.6, 0.0, 0);
        n.cpu_cost_ratio = cost(2.4);
        let base = file(vec![("e", b)]);
        assert!(
            compare_files(&base, &file(vec![("e", n.clone())]), 30.0, 5.0, &[])
                .1
                .is_empty()
        );
        n.gated.push(Gated::CpuCostRatio);
        let (text, failed) = compare_files(&base, &file(vec![("e", n.clone())]), 30.0, 5.0, &[]);
        assert_eq!(failed, ["e"], "{text}");
        assert!(text.contains("cpu_cost_ratio regressed 100.0%"), "{text}");
        n.other_cpu_pct = Some(OtherCpu {
            median: 20.0,
            max: 20.0,
        });
        assert!(compare_files(&base, &file(vec![("e", n)]), 30.0, 5.0, &[])
            .1
            .is_empty());
    }

    #[test]
    fn new_cases_are_listed_not_compared() {
        let base = file(vec![]);
        let new = file(vec![("e", ratios(0.1, 0.0, 0))]);
        let (text, failed) = compare_files(&base, &new, 30.0, 5.0, &[]);
        assert!(failed.is_empty());
        assert!(text.contains("-- e: not in the baseline, not compared"));
    }

    #[test]
    fn each_kind_of_machine_has_its_own_baseline_when_one_was_measured() {
        assert_eq!(
            model_slug("Intel(R) Xeon(R) Processor"),
            "intel-r-xeon-r-processor"
        );
        assert_eq!(model_slug("AMD EPYC"), "amd-epyc");
        assert_eq!(model_slug("  "), "unknown");
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        assert_eq!(baseline_path(r, "AMD EPYC", false), r.join("baseline.json"));
        let own = r.join("baselines/amd-epyc.json");
        assert_eq!(baseline_path(r, "AMD EPYC", true), own);
        std::fs::create_dir_all(own.parent().unwrap()).unwrap();
        std::fs::write(&own, "{}").unwrap();
        assert_eq!(baseline_path(r, "AMD EPYC", false), own);
        assert_eq!(baseline_path(r, "Other", false), r.join("baseline.json"));
    }
}
