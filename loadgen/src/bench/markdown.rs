//! Human output: the console table after a run and `bench-results/README.md` (the layout
//! `ci/bench.py` wrote: header, targets, every case, notes, problems, charts, other
//! runs, commands).

use std::fmt::Write as _;
use std::path::Path;

use super::doc::{BenchDoc, CaseResult};
use super::stats::median;
use super::suite::{fill, Op, Suite, Target, TargetKind, Unit};

/// `v` with `decimals` decimals and `,` between thousands (Rust's formatter has no
/// grouping flag, and one helper is less than a dependency).
pub fn thousands(v: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, v.abs());
    let (int, frac) = s
        .split_once('.')
        .map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    if v < 0.0 && out.chars().any(|c| c != '0' && c != ',' && c != '.') {
        out.insert(0, '-');
    }
    out
}

/// A value in its unit, as the report shows it.
pub fn fmt_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::BytesPerSec => format!("{} MB/s", thousands(v / 1e6, 0)),
        Unit::Micros => format!("{} µs", thousands(v, 0)),
        Unit::BytesPerSession => format!("{} B", thousands(v, 0)),
        Unit::NanosPerDelivery => format!("{} ns", thousands(v, 0)),
        Unit::MsgPerSec => format!("{} msg/s", thousands(v, 0)),
        Unit::SessionsPerSec => format!("{} sessions/s", thousands(v, 0)),
    }
}

fn op_str(op: Op) -> &'static str {
    match op {
        Op::AtLeast => ">=",
        Op::AtMost => "<=",
    }
}

/// The target as text.
pub fn target_text(target: Option<&Target>, unit: Unit) -> String {
    match target {
        None => "(no target)".into(),
        Some(t) => match t.kind {
            TargetKind::Ratio => format!("ratio {} {}", op_str(t.op), t.value),
            TargetKind::CpuRatio => format!("server CPU/msg ratio {} {}", op_str(t.op), t.value),
            TargetKind::Absolute => format!("{} {}", op_str(t.op), fmt_value(t.value, unit)),
        },
    }
}

/// Load averages as `a / b / c`.
pub fn fmt_load(l: &[f64]) -> String {
    l.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn ratio_text(r: &CaseResult) -> String {
    r.ratio
        .as_ref()
        .and_then(|x| x.median_over_median)
        .map_or_else(|| "–".into(), |x| format!("{x:.3}"))
}

fn range_text(r: &CaseResult) -> String {
    format!(
        "{} – {}",
        fmt_value(r.subject.min, r.unit),
        fmt_value(r.subject.max, r.unit)
    )
}

fn base_text(r: &CaseResult) -> String {
    r.baseline
        .as_ref()
        .map_or_else(|| "–".into(), |b| fmt_value(b.stats.median, r.unit))
}

/// The table printed after a run.
pub fn console_table(results: &[CaseResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{:20} {:>17} {:>17} {:>7} {:>6} {:>6}  {:>29}  target",
        "case", "value (median)", "baseline", "ratio", "cost", "other", "range"
    );
    for r in results {
        let cost = r
            .cpu_cost_ratio
            .map_or_else(|| "–".into(), |c| format!("{:.2}", c.median_over_median));
        let other = r
            .other_cpu_pct
            .map_or_else(|| "–".into(), |o| format!("{:.0}%", o.median));
        let st = r.standing.as_ref().map_or("", |s| s.text.as_str());
        let _ = writeln!(
            s,
            "{:20} {:>17} {:>17} {:>7} {:>6} {:>6}  {:>29}  {} {st}",
            r.name,
            fmt_value(r.subject.median, r.unit),
            base_text(r),
            ratio_text(r),
            cost,
            other,
            range_text(r),
            target_text(r.target.as_ref(), r.unit),
        );
    }
    let _ = writeln!(
        s,
        "ratio = value / baseline (medians); cost = server CPU per message / baseline's; \
         other = CPU used by other processes during the case (median of runs, % of the machine)\n"
    );
    s
}

/// Echo/churn baselines whose loadgen side spent far more CPU per message than in the
/// sockchat run are limited by loadgen's raw client, not by the raw server: the README
/// says so, since the throughput ratio then overstates sockchat (the CPU cost ratio
/// does not).
pub fn client_bound_notes(cases: &[CaseResult], groups: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for r in cases {
        let Some(b) = &r.baseline else { continue };
        if !groups.contains(&r.group) {
            continue;
        }
        let lg: Option<Vec<f64>> = r
            .details
            .iter()
            .map(|d| d.loadgen_cpu_ns_per_msg())
            .collect();
        let blg: Option<Vec<f64>> = b
            .details
            .iter()
            .map(|d| d.loadgen_cpu_ns_per_msg())
            .collect();
        let (Some(a), Some(bb)) = (
            lg.as_deref().and_then(median),
            blg.as_deref().and_then(median),
        ) else {
            continue;
        };
        if bb > 2.0 * a {
            out.push(format!(
                "- **{}: the baseline is bound by loadgen's raw client**, not by the raw server: \
                 loadgen spent {} ns of CPU per message against the raw server vs {} ns against \
                 sockchat-server (loadgen's `raw-echo` writes one message per write, `echo` \
                 batches the whole window). The throughput ratio overstates sockchat here; the \
                 server CPU/msg ratio is the fair comparison.",
                r.name,
                thousands(bb, 0),
                thousands(a, 0)
            ));
        }
    }
    out
}

/// A line of the "Other runs" list for a committed run document.
fn other_run_line(path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let Ok(o) = BenchDoc::read(path) else {
        return format!("- [`{name}`]({name})");
    };
    let tool = o
        .loadgen_tool
        .as_ref()
        .map_or("?", |t| &t.git_commit[..t.git_commit.len().min(7)]);
    let mut line = format!(
        "- [`{name}`]({name}): {} suite at `{}` (loadgen built from `{tool}`), {}, load {} → {}",
        mode_name(o.suite),
        o.commit,
        o.started_utc,
        fmt_load(&o.load_average.start),
        fmt_load(&o.load_average.end)
    );
    if let Some(base) = &o.settings.base_rev {
        let pairs: Vec<String> = o
            .cases
            .iter()
            .filter(|c| c.group == "base-rev")
            .filter_map(|c| {
                let r = c.ratio.as_ref()?.median_over_median?;
                let other = c.other_cpu_pct.map_or(0.0, |o| o.median);
                Some(format!("{} {r:.2} [{other:.0}%]", c.name))
            })
            .collect();
        let _ = write!(
            line,
            "; includes the second-build comparison with `{base}` (ratio this build / {base}, \
             medians, other processes' CPU share in brackets): {}",
            pairs.join(", ")
        );
    }
    line
}

/// The README text for `doc`. `charts` are the chart directories present (relative to
/// `results`), `json_name` the run document's file name; other run documents in
/// `results` are listed.
pub fn readme(
    doc: &BenchDoc,
    suite: &Suite,
    frame_len: usize,
    charts: &[String],
    results: &Path,
    json_name: &str,
) -> String {
    let m = &doc.machine;
    let la = &doc.load_average;
    let st = &doc.settings;
    let mut l: Vec<String> = vec![
        "# sockchat load benchmarks".into(),
        String::new(),
        format!(
            "Generated by `ci/bench.sh` (do not edit by hand; re-run it). Raw figures of this \
             run: [`{json_name}`]({json_name})."
        ),
        String::new(),
        format!(
            "- Commit: `{}`{}, run {} ({}), {:.1} min",
            doc.commit,
            if doc.dirty {
                " (with uncommitted changes)"
            } else {
                ""
            },
            doc.date,
            doc.started_utc,
            doc.duration_s / 60.0
        ),
        format!(
            "- Machine: {}, {} CPUs, {} MiB, Linux {}",
            m.cpu_model,
            m.cores,
            thousands(m.memory_mib.unwrap_or(0) as f64, 0),
            m.kernel
        ),
        format!(
            "- Load average (1/5/15 min): {} at the start, {} at the end{}",
            fmt_load(&la.start),
            fmt_load(&la.end),
            if la.start[0].max(la.end[0]) > 1.0 {
                " — the machine was shared with other builds and tests; absolute figures are \
                 noisy, the ratios (measured interleaved) less so"
            } else {
                ""
            }
        ),
        format!(
            "- Each case: {} run(s) interleaved with its baseline (order alternating), {:?} s \
             warm-up + {:?} s measured per run; sockchat-server `--cores 1` pinned to CPU {}, \
             loadgen `--threads 1` pinned to CPU {}; a fresh server process per run",
            st.runs, st.warmup, st.duration, st.server_cpu, st.loadgen_cpu
        ),
        String::new(),
        "## Targets".into(),
        String::new(),
        "| target | measured | standing |".into(),
        "| --- | --- | --- |".into(),
    ];
    for r in &doc.cases {
        let (Some(t), Some(s)) = (&r.target, &r.standing) else {
            continue;
        };
        let meas = match (t.kind, &r.baseline, r.cpu_cost_ratio) {
            (TargetKind::CpuRatio, _, Some(c)) => format!(
                "server CPU/msg ratio {:.2} ({} / {} ns)",
                c.median_over_median,
                thousands(c.server_cpu_ns_per_msg, 0),
                thousands(c.baseline_server_cpu_ns_per_msg, 0)
            ),
            (_, Some(b), _) if r.ratio.is_some() && t.kind == TargetKind::Ratio => format!(
                "ratio {} ({} / {})",
                ratio_text(r),
                fmt_value(r.subject.median, r.unit),
                fmt_value(b.stats.median, r.unit)
            ),
            _ => fmt_value(r.subject.median, r.unit),
        };
        let mark = if s.met { "✅" } else { "❌" };
        l.push(format!(
            "| {}: {} | {meas} | {mark} {} |",
            r.title,
            target_text(Some(t), r.unit),
            s.text
        ));
    }
    l.extend([
        String::new(),
        "## Every case".into(),
        String::new(),
        "Value and baseline are medians of the runs; ratio = median / baseline median \
         (per-run ratios in the JSON); range = min – max of the case's runs."
            .into(),
        String::new(),
        "Server CPU/msg: the server's CPU time per message (churn: per cycle), medians, \
         sockchat vs baseline server and their ratio (lower is cheaper). Other CPU: share of \
         the machine's CPU time used by processes other than this server and loadgen during \
         the case's runs (median / max) — the noise indicator."
            .into(),
        String::new(),
        "| case | value | baseline | ratio | range (runs) | server CPU/msg (ratio) | other CPU | baseline is |"
            .into(),
        "| --- | --- | --- | --- | --- | --- | --- | --- |".into(),
    ]);
    for r in &doc.cases {
        let bt = r
            .baseline
            .as_ref()
            .map_or("none (absolute figure)", |b| b.title.as_str());
        let cost = r.cpu_cost_ratio.map_or_else(
            || "–".into(),
            |c| {
                format!(
                    "{} / {} ns ({:.2})",
                    thousands(c.server_cpu_ns_per_msg, 0),
                    thousands(c.baseline_server_cpu_ns_per_msg, 0),
                    c.median_over_median
                )
            },
        );
        let other = r.other_cpu_pct.map_or_else(
            || "–".into(),
            |o| format!("{:.0}% / {:.0}%", o.median, o.max),
        );
        l.push(format!(
            "| {} | **{}** | {} | {} | {} | {cost} | {other} | {bt} |",
            r.title,
            fmt_value(r.subject.median, r.unit),
            base_text(r),
            ratio_text(r),
            range_text(r)
        ));
    }
    l.extend([String::new(), "## Notes on method".into(), String::new()]);
    l.extend(client_bound_notes(
        &doc.cases,
        &suite.report.client_bound_groups,
    ));
    let base_rev = doc.settings.base_rev.as_deref().unwrap_or("");
    l.extend(
        suite
            .report
            .notes
            .iter()
            .map(|n| format!("- {}", fill(n, frame_len, base_rev))),
    );
    if !doc.problems.is_empty() {
        l.extend([
            String::new(),
            "## Problems during the run".into(),
            String::new(),
        ]);
        l.extend(doc.problems.iter().map(|p| format!("- {p}")));
    }
    if !charts.is_empty() {
        l.extend([
            String::new(),
            "## Charts (median runs, from `loadgen report`)".into(),
            String::new(),
        ]);
        for dir in charts {
            l.extend([
                format!("### {dir}"),
                String::new(),
                format!("[runs table](charts/{dir}/README.md)"),
                String::new(),
                format!("![latency percentiles](charts/{dir}/latency.svg)"),
                String::new(),
                format!("![throughput per second](charts/{dir}/throughput.svg)"),
                String::new(),
            ]);
        }
    }
    let mut others: Vec<_> = std::fs::read_dir(results)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            is_run_document(&n) && n != json_name
        })
        .collect();
    others.sort();
    if !others.is_empty() {
        l.extend([
            String::new(),
            "## Other runs (raw figures)".into(),
            String::new(),
        ]);
        l.extend(others.iter().map(|p| other_run_line(p)));
    }
    l.extend([
        String::new(),
        "## Reproduce".into(),
        String::new(),
        "```sh".into(),
        format!(
            "ci/bench.sh                 # full suite (~{} min here), writes this report",
            (doc.duration_s / 60.0).round()
        ),
        "ci/bench.sh --quick         # CI check: short runs, ratios compared with this machine's baseline"
            .into(),
        "BASE_REV=<git rev> ci/bench.sh   # also measures that revision's server, interleaved"
            .into(),
        "```".into(),
        String::new(),
        "Cases, baselines and targets: [`ci/bench-suite.toml`](../ci/bench-suite.toml). \
         Commands per case (`PORT`/`SOCK` are the per-run listener; every loadgen also gets \
         `--threads 1 --cpus 1 --warmup W --duration D --server-pid PID --json FILE`):"
            .into(),
        String::new(),
    ]);
    for r in &doc.cases {
        let Some(cmd) = &r.subject_command else {
            continue;
        };
        let mut line = format!("- {}: `{cmd}`", r.name);
        if let Some(bc) = r.baseline.as_ref().and_then(|b| b.command.as_ref()) {
            let _ = write!(line, " vs `{bc}`");
        }
        l.push(line);
    }
    l.push(String::new());
    l.join("\n")
}

/// `YYYY-MM-DD-<commit>.json`: a full run's document.
pub fn is_run_document(name: &str) -> bool {
    let b = name.as_bytes();
    name.ends_with(".json")
        && b.len() > 11
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
        && b[10] == b'-'
}

/// The suite's name as the README and the console say it.
pub fn mode_name(m: super::suite::Mode) -> &'static str {
    match m {
        super::suite::Mode::Full => "full",
        super::suite::Mode::Quick => "quick",
        super::suite::Mode::Runtime => "runtime",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_the_report_shows_them() {
        assert_eq!(thousands(1683158.4, 0), "1,683,158");
        assert_eq!(thousands(999.6, 0), "1,000");
        assert_eq!(thousands(12.0, 0), "12");
        assert_eq!(thousands(24103.0, 0), "24,103");
        assert_eq!(thousands(-1234.5, 1), "-1,234.5");
        assert_eq!(fmt_value(703175065.6, Unit::BytesPerSec), "703 MB/s");
        assert_eq!(fmt_value(3184.639, Unit::Micros), "3,185 µs");
        assert_eq!(fmt_value(978.1248, Unit::BytesPerSession), "978 B");
        assert_eq!(fmt_value(8239.4, Unit::SessionsPerSec), "8,239 sessions/s");
        assert_eq!(fmt_load(&[2.69, 2.82, 3.534]), "2.69 / 2.82 / 3.53");
    }

    #[test]
    fn run_document_names() {
        assert!(is_run_document("2026-11-22-647f94a.json"));
        assert!(!is_run_document("baseline.json"));
        assert!(!is_run_document("baseline-instructions.json"));
    }

    #[test]
    fn committed_report_is_what_the_writer_gives() {
        // bench-results/README.md names the run document it was written from: rendering
        // that document again (with the suite and the charts as committed) gives the
        // committed text, line for line.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let results = root.join("bench-results");
        let committed = std::fs::read_to_string(results.join("README.md")).unwrap();
        let name = committed
            .split("Raw figures of this run: [`")
            .nth(1)
            .and_then(|rest| rest.split('`').next())
            .expect("the README names its run document");
        assert!(is_run_document(name), "{name}");
        let doc = BenchDoc::read(&results.join(name)).unwrap();
        let suite = Suite::load(&root.join("ci/bench-suite.toml")).unwrap();
        let charts = crate::bench::existing_charts(&suite, &results);
        let ours = readme(
            &doc,
            &suite,
            suite.notes_frame_len(),
            &charts,
            &results,
            name,
        );
        for (x, y) in ours.lines().zip(committed.lines()) {
            assert_eq!(x, y);
        }
        assert_eq!(ours.lines().count(), committed.lines().count());
    }
}
