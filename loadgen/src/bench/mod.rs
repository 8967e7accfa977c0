//! `loadgen bench`: the load benchmark suite (driven by `ci/bench.sh`).
//!
//! Every case starts its own `sockchat-server --cores 1` pinned to `--server-cpu` and runs
//! loadgen (`--threads 1`) pinned to `--loadgen-cpu`; each case's baseline (loadgen's raw
//! monoio echo server, single-core HMAC-SHA256, ...) is measured in the same run,
//! interleaved run by run with the case, so the ratios compare figures taken minutes
//! apart on the same machine under the same load. The cases, baselines and targets are
//! data: `ci/bench-suite.toml` ([`suite`]).
//!
//! * full (default): every case; writes `bench-results/<date>-<commit>.json`, the charts,
//!   and `bench-results/README.md`.
//! * `--quick`: the CI subset; compares its ratios with `bench-results/baseline.json`
//!   ([`gate`]) and fails on a drop beyond the suite's limit, or on any error; a case
//!   that fails is first run `confirm_runs` more times and judged on all its runs.
//!   A mode's runs go case by case or round by round ([`schedule`]).
//! * `--quick --update-baseline`: the same subset; writes this machine's baseline instead
//!   (`bench-results/baselines/<cpu model>.json`, read in preference to `baseline.json`
//!   on that kind of machine: `gate::baseline_path`).
//! * `--render-only RUN.json`: regenerates the README from a committed run document.

pub mod cases;
mod collect;
pub mod doc;
pub mod gate;
pub mod markdown;
pub mod meter;
pub mod process;
pub mod schedule;
pub mod stats;
pub mod suite;

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use clap::Args;
use thiserror::Error;

use cases::{Bench, Bins, CaseRun, RunSettings};
use collect::{keep_reports, merge_parts};
use doc::{BenchDoc, BenchMachine, LoadAverage, RatioFile, Settings};
use suite::{Mode, Suite};

/// A benchmark run that could not be carried out.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BenchError {
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The suite file, or a document, is not what this build reads.
    #[error("{0}")]
    Suite(String),
    /// A process could not be started or waited for.
    #[error("{what}: {source}")]
    Spawn {
        /// The program.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A server printed no readiness line in time.
    #[error("{0} did not report readiness: {1:?}")]
    NotReady(String, Vec<String>),
    /// A server exited before it was ready.
    #[error("{0} exited before readiness: {1:?}")]
    ExitedEarly(String, Vec<String>),
    /// A process ran past its time bound, or failed.
    #[error("{0}")]
    Timeout(String),
    /// loadgen exited without writing its report.
    #[error("loadgen {scenario} wrote no report (exit {code:?}):\n{output}")]
    NoReport {
        /// Scenario.
        scenario: String,
        /// Exit code.
        code: Option<i32>,
        /// Its output.
        output: String,
    },
    /// A loadgen report could not be read.
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    /// Charts could not be drawn.
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    /// JSON that is not what it should be.
    #[error("{what}: {source}")]
    Json {
        /// Which.
        what: String,
        /// The error.
        source: serde_json::Error,
    },
}

impl BenchError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn spawn(what: &str, source: std::io::Error) -> Self {
        Self::Spawn {
            what: what.into(),
            source,
        }
    }
}

/// `bench` options (`ci/bench.sh` passes `--bin-dir` and, with `BASE_REV`, the base
/// build; every other option passes through).
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Directory of the release binaries: sockchat-server, loadgen,
    /// examples/hmac_throughput.
    #[arg(long, value_name = "DIR")]
    pub bin_dir: PathBuf,
    /// The suite: cases, baselines, targets.
    #[arg(long, default_value = "ci/bench-suite.toml", value_name = "FILE")]
    pub suite: PathBuf,
    /// Where reports, charts and the quick check's baselines (baseline.json, baselines/) live.
    #[arg(long, default_value = "bench-results", value_name = "DIR")]
    pub results: PathBuf,
    /// The CI subset; compares its ratios with baseline.json.
    #[arg(long)]
    pub quick: bool,
    /// The raw echo servers' engines side by side (the suite's "runtime" cases); writes
    /// the run document to RESULTS/runtime/DATE-COMMIT.json.
    #[arg(long, conflicts_with = "quick")]
    pub runtime: bool,
    /// With --quick: write this machine's baseline (RESULTS/baselines/<cpu model>.json) instead of comparing.
    #[arg(long, requires = "quick")]
    pub update_baseline: bool,
    /// Runs per side (default: the suite's for the mode).
    #[arg(long)]
    pub runs: Option<u32>,
    /// Warm-up seconds per run (default: the suite's).
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Measured seconds per run (default: the suite's).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds of each HMAC baseline run.
    #[arg(long, default_value_t = 2.0)]
    pub hmac_seconds: f64,
    /// CPU the servers are pinned to.
    #[arg(long, default_value_t = 0)]
    pub server_cpu: usize,
    /// CPU loadgen is pinned to.
    #[arg(long, default_value_t = 1)]
    pub loadgen_cpu: usize,
    /// Quick: largest tolerated ratio regression, percent (default: the suite's).
    #[arg(long)]
    pub max_regression: Option<f64>,
    /// Quick: gate throughput ratios only when other processes used less than this
    /// percent of the CPUs (default: the suite's).
    #[arg(long)]
    pub busy_threshold: Option<f64>,
    /// Only these cases (full mode: no files written, unless `--part-out`).
    #[arg(long, value_delimiter = ',', value_name = "CASE,...")]
    pub only: Vec<String>,
    /// With `--only` in full mode: write the part's run document here, to be combined
    /// with the other parts by `--merge-parts` (so a full suite can run in windows
    /// shorter than the whole suite on a shared machine).
    #[arg(long, value_name = "PART.json", requires = "only")]
    pub part_out: Option<PathBuf>,
    /// Combine part documents (written by `--part-out`, together covering the suite)
    /// into one run document in the results directory and regenerate README.md from it
    /// (charts left as they are).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "PART.json,...",
        conflicts_with = "only"
    )]
    pub merge_parts: Vec<PathBuf>,
    /// Copy every raw loadgen report here.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// A second sockchat-server build to run interleaved (set by bench.sh from BASE_REV).
    #[arg(long, value_name = "PATH", requires = "base_rev")]
    pub base_server: Option<PathBuf>,
    /// The second build's revision.
    #[arg(long, value_name = "REV")]
    pub base_rev: Option<String>,
    /// Regenerate README.md from a committed run document (charts left as they are).
    #[arg(long, value_name = "RUN.json")]
    pub render_only: Option<PathBuf>,
}

fn git(args: &[&str]) -> String {
    std::process::Command::new("git")
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn load_average() -> Vec<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() == 3 {
        v
    } else {
        vec![0.0; 3]
    }
}

fn machine() -> BenchMachine {
    let m = crate::machine::Machine::detect();
    BenchMachine {
        os: format!("Linux-{}-{}", m.kernel, std::env::consts::ARCH),
        cpu_model: m.cpu_model,
        cores: m.cores,
        kernel: m.kernel,
        memory_mib: (m.memory_bytes > 0).then_some(m.memory_bytes / (1024 * 1024)),
    }
}

/// Chart directories of the suite that exist under `results/charts`.
fn existing_charts(suite: &Suite, results: &Path) -> Vec<String> {
    suite
        .charts
        .iter()
        .filter(|c| {
            results
                .join("charts")
                .join(&c.dir)
                .join("README.md")
                .exists()
        })
        .map(|c| c.dir.clone())
        .collect()
}

/// Draws each chart of the suite from the median runs of its groups' cases.
fn charts(suite: &Suite, runs: &[CaseRun], results: &Path, tmp: &Path) -> Vec<String> {
    let mut made = Vec::new();
    for chart in &suite.charts {
        let paths: Vec<PathBuf> = runs
            .iter()
            .filter(|r| chart.groups.contains(&r.result.group))
            .flat_map(|r| [&r.median, &r.baseline_median])
            .filter_map(|m| m.as_ref().map(|l| l.path.clone()))
            .collect();
        if paths.is_empty() {
            continue;
        }
        let out = results.join("charts").join(&chart.dir);
        let _ = std::fs::remove_dir_all(&out);
        match crate::render::render(&paths, &out) {
            Ok(r) => {
                // The runs' JSON lived in a temp dir: keep just the file names.
                let prefix = format!("{}/", tmp.display());
                if let Ok(md) = std::fs::read_to_string(&r.markdown) {
                    let _ = std::fs::write(&r.markdown, md.replace(&prefix, ""));
                }
                made.push(chart.dir.clone());
            }
            Err(e) => println!("loadgen report for {} failed:\n{e}", chart.dir),
        }
    }
    made
}

fn write_readme(
    doc: &BenchDoc,
    suite: &Suite,
    charts: &[String],
    results: &Path,
    json_name: &str,
) -> Result<(), BenchError> {
    let text = markdown::readme(
        doc,
        suite,
        suite.notes_frame_len(),
        charts,
        results,
        json_name,
    );
    let path = results.join("README.md");
    std::fs::write(&path, text).map_err(|e| BenchError::io(&path, e))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Runs the suite as `a` says. `Ok(false)`: the quick check failed.
pub fn run(a: &BenchArgs) -> Result<bool, BenchError> {
    let suite = Suite::load(&a.suite)?;
    if !a.merge_parts.is_empty() {
        return merge_parts(a, &suite);
    }
    if let Some(path) = &a.render_only {
        let doc = BenchDoc::read(path)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        write_readme(
            &doc,
            &suite,
            &existing_charts(&suite, &a.results),
            &a.results,
            &name,
        )?;
        return Ok(true);
    }
    let mode = match (a.quick, a.runtime) {
        (true, _) => Mode::Quick,
        (false, true) => Mode::Runtime,
        (false, false) => Mode::Full,
    };
    let ms = suite.mode(mode);
    let default_runs = match (mode, a.update_baseline) {
        (Mode::Quick, true) => ms.update_baseline_runs.unwrap_or(ms.runs),
        _ => ms.runs,
    };
    let base_rev = a.base_rev.clone().unwrap_or_default();
    let set = RunSettings {
        runs: a.runs.unwrap_or(default_runs),
        warmup: a.warmup.unwrap_or(ms.warmup),
        duration: a.duration.unwrap_or(ms.duration),
        hmac_seconds: a.hmac_seconds,
        server_cpu: a.server_cpu,
        loadgen_cpu: a.loadgen_cpu,
        base_rev: base_rev.clone(),
    };
    let bins = Bins {
        server: a.bin_dir.join("sockchat-server"),
        loadgen: a.bin_dir.join("loadgen"),
        hmac: a.bin_dir.join("examples").join("hmac_throughput"),
        hmac_floor: a.bin_dir.join("examples").join("hmac_floor"),
        base_server: a.base_server.clone(),
    };
    let mut selected = suite.select(mode, a.base_server.is_some());
    if !a.only.is_empty() {
        selected.retain(|c| a.only.contains(&c.name));
    }
    if a.update_baseline {
        // baseline.json holds ratios only: a case without a baseline side adds nothing.
        selected.retain(|c| c.baseline.is_some());
    }

    let started = SystemTime::now();
    let t0 = Instant::now();
    let commit = Some(git(&["rev-parse", "--short", "HEAD"]))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let dirty = !git(&[
        "status",
        "--porcelain",
        "--",
        "server",
        "loadgen",
        "proto",
        "Cargo.lock",
    ])
    .is_empty();
    let load_start = load_average();
    println!(
        "sockchat bench ({}): {} cases, {} run(s) each, commit {commit}{}, load average {}",
        markdown::mode_name(mode),
        selected.len(),
        set.runs,
        if dirty { " +changes" } else { "" },
        markdown::fmt_load(&load_start)
    );

    let tmp = tempfile::Builder::new()
        .prefix("sockchat-bench-")
        .tempdir()
        .map_err(|e| BenchError::io(Path::new("/tmp"), e))?;
    let mut bench = Bench::new(bins, set, tmp.path());
    let first_runs = bench.settings().runs;
    let mut accs = schedule::run_all(&mut bench, &selected, first_runs, ms.order, &base_rev)?;
    let finish = |bench: &Bench, accs: &[cases::CaseRuns]| -> Vec<CaseRun> {
        selected
            .iter()
            .zip(accs)
            .map(|(c, acc)| bench.finish(c, acc))
            .collect()
    };
    let mut runs = finish(&bench, &accs);
    let load_end = load_average();
    let duration = t0.elapsed().as_secs_f64();
    let results: Vec<_> = runs.iter().map(|r| r.result.clone()).collect();
    print!("{}", markdown::console_table(&results));
    println!(
        "load average {} at the start, {} at the end; {duration:.0} s",
        markdown::fmt_load(&load_start),
        markdown::fmt_load(&load_end)
    );
    for p in &bench.problems {
        println!("problem: {p}");
    }
    let problems_shown = bench.problems.len();
    if let Some(keep) = &a.keep {
        keep_reports(tmp.path(), keep)?;
    }

    let started_utc = humantime::format_rfc3339_seconds(started).to_string();
    let date = started_utc[..10].to_string();
    let settings = Settings {
        runs: bench.settings().runs,
        warmup: bench.settings().warmup,
        duration: bench.settings().duration,
        server_cpu: a.server_cpu,
        loadgen_cpu: a.loadgen_cpu,
        base_rev: a.base_rev.clone(),
    };
    let load_average = LoadAverage {
        start: load_start.iter().map(|x| stats::round_to(*x, 2)).collect(),
        end: load_end.iter().map(|x| stats::round_to(*x, 2)).collect(),
    };

    if a.quick {
        let this_machine = machine();
        let baseline = gate::baseline_path(&a.results, &this_machine.cpu_model, a.update_baseline);
        let ratio_file = |runs: &[CaseRun]| {
            gate::ratio_file(
                gate::case_ratios(runs, &|name| {
                    selected
                        .iter()
                        .find(|c| c.name == name)
                        .map_or_else(suite::default_gate, |c| c.gate.clone())
                }),
                commit.clone(),
                date.clone(),
                machine(),
                load_average.clone(),
                settings.clone(),
            )
        };
        let mut ratios = ratio_file(&runs);
        if a.update_baseline {
            if let Some(dir) = baseline.parent() {
                std::fs::create_dir_all(dir).map_err(|source| BenchError::Io {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
            doc::write_json(&baseline, &ratios)?;
            println!("wrote {}", baseline.display());
            return Ok(true);
        }
        let mut ok = true;
        if baseline.exists() {
            let base = RatioFile::read(&baseline)?;
            let max = a.max_regression.unwrap_or(suite.gate.max_regression_pct);
            let busy = a.busy_threshold.unwrap_or(suite.gate.busy_threshold_pct);
            print!("{}", gate::header(&baseline, &base, max));
            let order: Vec<String> = selected.iter().map(|c| c.name.clone()).collect();
            let (text, mut failed) = gate::compare_files(&base, &ratios, max, busy, &order);
            print!("{text}");
            let confirm = suite.gate.confirm_runs;
            if !failed.is_empty() && confirm > 0 {
                // A failure is confirmed on more runs taken minutes later: a real
                // regression stays in every run, a spell of a slow shared host does not.
                // The verdict is on all of the case's runs together, at the same limit.
                println!(
                    "== confirming {}: {confirm} more run(s) each (round by round, after the other cases); verdict on all runs",
                    failed.join(", ")
                );
                let which: Vec<usize> = (0..selected.len())
                    .filter(|i| failed.contains(&selected[*i].name))
                    .collect();
                schedule::rounds(
                    &mut bench,
                    &selected,
                    &mut accs,
                    &which,
                    confirm,
                    "confirmation round",
                )?;
                runs = finish(&bench, &accs);
                ratios = ratio_file(&runs);
                let names: Vec<String> = which.iter().map(|i| selected[*i].name.clone()).collect();
                let mut confirmed = ratios.clone();
                confirmed.cases.retain(|n, _| names.contains(n));
                println!("== all runs of the confirmed case(s)");
                let (text, still) = gate::compare_files(&base, &confirmed, max, busy, &names);
                print!("{text}");
                failed = still;
            }
            ok = failed.is_empty();
        } else {
            println!(
                "no {}: nothing to compare (create it with `ci/bench.sh --quick --update-baseline`)",
                baseline.display()
            );
        }
        let new_path = a.keep.as_deref().unwrap_or(tmp.path()).join("ratios.json");
        doc::write_json(&new_path, &ratios)?;
        if let Some(keep) = &a.keep {
            keep_reports(tmp.path(), keep)?;
        }
        for p in &bench.problems[problems_shown..] {
            println!("problem: {p}");
        }
        if !bench.problems.is_empty() {
            println!("FAIL: loadgen reported errors (see problems above)");
            ok = false;
        }
        println!("load check: {}", if ok { "PASS" } else { "FAIL" });
        return Ok(ok);
    }

    if !a.only.is_empty() && mode != Mode::Runtime && a.part_out.is_none() {
        println!("--only: partial run, no files written");
        return Ok(true);
    }
    let doc = BenchDoc {
        schema: doc::SCHEMA.into(),
        suite: mode,
        commit_full: git(&["rev-parse", "HEAD"]),
        commit: commit.clone(),
        dirty,
        date: date.clone(),
        started_utc,
        duration_s: stats::round_to(duration, 1),
        machine: machine(),
        load_average,
        settings,
        loadgen_tool: runs
            .iter()
            .find_map(|r| r.median.as_ref())
            .map(|m| m.report.tool.clone()),
        problems: bench.problems.clone(),
        cases: results,
    };
    if let Some(part) = &a.part_out {
        doc::write_json(part, &doc)?;
        println!("wrote part {}", part.display());
        return Ok(true);
    }
    let name = format!("{date}-{commit}.json");
    if mode == Mode::Runtime {
        // Its own document (runs of a few cases each, so named to the second): the full
        // suite's README and charts stay the full suite's.
        let hms: String = doc.started_utc[11..19]
            .chars()
            .filter(|c| *c != ':')
            .collect();
        let path = a
            .results
            .join("runtime")
            .join(format!("{date}-{commit}-{hms}.json"));
        doc::write_json(&path, &doc)?;
        println!("wrote {}", path.display());
        return Ok(true);
    }
    let path = a.results.join(&name);
    doc::write_json(&path, &doc)?;
    println!("wrote {}", path.display());
    let made = charts(&suite, &runs, &a.results, tmp.path());
    write_readme(&doc, &suite, &made, &a.results, &name)?;
    Ok(true)
}
