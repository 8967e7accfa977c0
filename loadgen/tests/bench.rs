//! `loadgen bench` through the real binary: a small suite end to end against the real
//! sockchat-server and the raw server (processes, interleaving, documents, README,
//! charts, baseline and gate), and `loadgen compare` on ratio files. Figures are not
//! asserted (timing belongs to benchmarks), only that every part is produced and that a
//! regression fails.

#[path = "support/bins.rs"]
mod bins;

use std::path::{Path, PathBuf};

use bins::bin_dir;
use std::process::{Command, Output};

use loadgen::bench::doc::{BenchDoc, Detail, RatioFile};
use loadgen::bench::suite::echo_frame_len;

fn loadgen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const SUITE: &str = r#"
[modes.full]
runs = 1
warmup = 0.2
duration = 0.5

[modes.quick]
runs = 1
update_baseline_runs = 1
warmup = 0.2
duration = 0.5
order = "rounds"

[gate]
max_regression_pct = 30.0
busy_threshold_pct = 5.0
confirm_runs = 1

[[case]]
name = "echo-frame"
title = "echo 64 B vs raw {frame_len} B"
group = "echo"
unit = "msg/s"
better = "higher"
metric = "messages_per_sec"
suites = ["full", "quick"]
subject = { run = "sockchat", transport = "unix", scenario = "echo", args = ["--sessions", "4", "--depth", "4", "--size", "64"] }
baseline = { run = "raw-server", transport = "tcp", scenario = "raw-echo", args = ["--sessions", "4", "--depth", "4"], size_as_frame_of = 64, label_suffix = "raw" }
baseline_title = "raw echo of {frame_len} B"
target = { kind = "cpu_ratio", op = "<=", value = 1000.0 }

[[case]]
name = "hb"
title = "heartbeat, 20 sessions"
group = "latency"
unit = "µs"
better = "lower"
metric = "latency_p99_us"
suites = ["full", "quick"]
subject = { run = "sockchat", transport = "tcp", scenario = "heartbeat", args = ["--sessions", "20", "--interval", "0.2"] }
target = { kind = "absolute", op = "<=", value = 10000000.0 }

[[chart]]
dir = "echo"
groups = ["echo"]

[report]
client_bound_groups = ["echo"]
notes = ["raw payload {frame_len} B"]
"#;

fn bench(dir: &Path, extra: &[&str]) -> Output {
    loadgen()
        .arg("bench")
        .arg("--bin-dir")
        .arg(dir.join("bin"))
        .arg("--suite")
        .arg(dir.join("suite.toml"))
        .arg("--results")
        .arg(dir.join("results"))
        // One CPU for both sides: the test must pass on any machine.
        .args(["--server-cpu", "0", "--loadgen-cpu", "0"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_small_suite_runs_end_to_end_and_a_regression_fails_the_gate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    bin_dir(dir);
    std::fs::write(dir.join("suite.toml"), SUITE).unwrap();
    let results = dir.join("results");
    std::fs::create_dir_all(&results).unwrap();

    // Full: the run document, README and chart.
    let out = bench(dir, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let docs: Vec<PathBuf> = std::fs::read_dir(&results)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(docs.len(), 1, "{docs:?}");
    let doc = BenchDoc::read(&docs[0]).unwrap();
    assert!(doc.problems.is_empty(), "{:?}", doc.problems);
    let names: Vec<&str> = doc.cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["echo-frame", "hb"]);
    let echo = &doc.cases[0];
    let frame = echo_frame_len(64);
    assert_eq!(echo.title, format!("echo 64 B vs raw {frame} B"));
    let base = echo.baseline.as_ref().expect("baseline");
    let cmd = base.command.as_deref().unwrap();
    assert!(
        cmd.starts_with("loadgen raw-echo --tcp 127.0.0.1:PORT"),
        "{cmd}"
    );
    assert!(cmd.ends_with(&format!("--size {frame}")), "{cmd}");
    assert!(echo.subject.median > 0.0 && base.stats.median > 0.0);
    assert!(echo.ratio.as_ref().unwrap().median_over_median.is_some());
    // Server CPU per message measured on both sides, so the CPU target has a standing.
    let cost = echo.cpu_cost_ratio.expect("cpu cost ratio");
    assert!(cost.server_cpu_ns_per_msg > 0.0 && cost.baseline_server_cpu_ns_per_msg > 0.0);
    assert!(echo.standing.is_some());
    assert!(matches!(&echo.details[0], Detail::Load(d) if d.errors == 0 && d.sessions == "4/4"));
    assert!(doc.cases[1].baseline.is_none());
    assert!(doc.cases[1].standing.is_some());
    let readme = std::fs::read_to_string(results.join("README.md")).unwrap();
    for want in [
        "## Targets",
        "## Every case",
        &format!("- raw payload {frame} B"),
        "![latency percentiles](charts/echo/latency.svg)",
    ] {
        assert!(readme.contains(want), "{want} missing:\n{readme}");
    }
    assert!(results.join("charts/echo/latency.svg").exists());
    let chart_table = std::fs::read_to_string(results.join("charts/echo/README.md")).unwrap();
    assert!(
        !chart_table.contains("sockchat-bench-"),
        "temp paths left:\n{chart_table}"
    );

    // --render-only regenerates the same README from the document.
    std::fs::remove_file(results.join("README.md")).unwrap();
    let out = bench(dir, &["--render-only", docs[0].to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(results.join("README.md")).unwrap(),
        readme
    );

    // Quick: baseline (the heartbeat, with no baseline side, is not run for it), then
    // the same code against it passes, with nothing to confirm...
    let out = bench(dir, &["--quick", "--update-baseline"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("== hb"), "{}", text(&out));
    // This machine's own baseline (`bench-results/baselines/<cpu model>.json`).
    let model = loadgen::machine::Machine::detect().cpu_model;
    let baseline = loadgen::bench::gate::baseline_path(&results, &model, true);
    assert!(!results.join("baseline.json").exists());
    let mut ratios = RatioFile::read(&baseline).unwrap();
    assert_eq!(ratios.cases.keys().collect::<Vec<_>>(), ["echo-frame"]);
    let out = bench(dir, &["--quick", "--max-regression", "1000000"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    // Round by round: each round runs every case once.
    assert!(t.contains("-- round 1/1\n  echo-frame run 1: "), "{t}");
    assert!(t.contains("\n  hb run 1: "), "{t}");
    assert!(!t.contains("confirming"), "{t}");
    assert!(t.contains("load check: PASS"));

    // ...and a baseline ten times better makes it a 90% regression: the case is run
    // again (confirm_runs) and still fails on all its runs: exit 1 (gated even on a busy
    // machine with --busy-threshold 101).
    ratios.cases.get_mut("echo-frame").unwrap().ratio *= 10.0;
    loadgen::bench::doc::write_json(&baseline, &ratios).unwrap();
    let keep = dir.join("keep");
    let out = bench(
        dir,
        &[
            "--quick",
            "--busy-threshold",
            "101",
            "--keep",
            keep.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("confirming echo-frame: 1 more run(s) each"),
        "{t}"
    );
    assert!(t.contains("  echo-frame run 2: "), "{t}");
    assert!(!t.contains("  hb run 2: "), "{t}");
    let (first, all) = t
        .split_once("== all runs of the confirmed case(s)")
        .expect(&t);
    assert!(first.contains("FAIL: throughput_ratio regressed"), "{t}");
    assert!(all.contains("FAIL: throughput_ratio regressed"), "{t}");
    assert!(t.contains("load check: FAIL"), "{t}");
    // Both runs of each side are kept, and the ratio file is the one judged last.
    let kept = |suffix: &str| {
        std::fs::read_dir(&keep)
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                n.to_string_lossy().ends_with(suffix)
            })
            .count()
    };
    assert_eq!(kept("-echo-frame.json"), 2);
    assert_eq!(kept("-echo-frame-raw.json"), 2);
    assert!(RatioFile::read(&keep.join("ratios.json")).is_ok());
}

#[test]
fn compare_reads_ratio_files_natively() {
    let tmp = tempfile::tempdir().unwrap();
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-results/baseline.json");
    let base = RatioFile::read(&committed).unwrap();
    let mut new = base.clone();
    for c in new.cases.values_mut() {
        c.other_cpu_pct = None;
    }
    let name = new.cases.keys().next().unwrap().clone();
    new.cases.get_mut(&name).unwrap().ratio /= 2.0;
    let path = tmp.path().join("new.json");
    loadgen::bench::doc::write_json(&path, &new).unwrap();

    let same = loadgen()
        .arg("compare")
        .arg(&committed)
        .arg(&committed)
        .output()
        .unwrap();
    assert!(same.status.success(), "{}", text(&same));
    let worse = loadgen()
        .arg("compare")
        .arg(&committed)
        .arg(&path)
        .args(["--max-regression", "30"])
        .output()
        .unwrap();
    assert_eq!(worse.status.code(), Some(3), "{}", text(&worse));
    let t = text(&worse);
    assert!(t.contains(&format!("-- {name}: throughput ratio")), "{t}");
    assert!(t.contains("FAIL: throughput_ratio regressed 50.0%"), "{t}");
}
