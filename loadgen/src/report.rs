//! The versioned JSON report and the human summary.
//!
//! One report describes one run: the tool and commit, the machine, the full
//! configuration, the results (with every histogram in HdrHistogram's compressed V2
//! form, base64, so runs can be merged and re-analysed), the per-second timeline and the
//! CPU cost. `schema_version` changes whenever a field changes meaning or is removed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::cpu::CpuReport;
use crate::histogram::{self, HistError, Summary};
use crate::machine::Machine;
use crate::max_rate::MaxRate;
use crate::runner::{RunConfig, TimelinePoint, WallWindow};
use crate::scenarios::Finished;
use crate::shard::Shard;

/// Current report schema.
pub const SCHEMA_VERSION: u32 = 1;

/// Reading or writing a report failed.
#[derive(Debug, Error)]
pub enum ReportError {
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Not a report.
    #[error("{path}: not a loadgen report: {source}")]
    Json {
        /// The file.
        path: String,
        /// The error.
        source: serde_json::Error,
    },
    /// A report of a schema this build does not read.
    #[error("{path}: schema_version {found}, this loadgen reads {SCHEMA_VERSION}")]
    Schema {
        /// The file.
        path: String,
        /// Its version.
        found: u32,
    },
    /// A histogram failed to encode or decode.
    #[error(transparent)]
    Hist(#[from] HistError),
}

/// Which program wrote the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tool {
    /// `loadgen`.
    pub name: String,
    /// Crate version.
    pub version: String,
    /// Commit built from (`unknown` outside a git checkout).
    pub git_commit: String,
}

impl Tool {
    /// This build.
    pub fn current() -> Self {
        Self {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
            git_commit: env!("LOADGEN_GIT_COMMIT").into(),
        }
    }
}

/// The results of one run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    /// Scenario name.
    pub scenario: String,
    /// `tcp` or `unix`.
    pub transport: String,
    /// Where the load went.
    pub target: String,
    /// True when every session was established and no error was counted.
    pub ok: bool,
    /// Why `ok` is false.
    pub problems: Vec<String>,
    /// Sessions (or churn loops) asked for.
    pub sessions_requested: u64,
    /// Sessions established (churn: loops that completed at least one cycle).
    pub sessions_established: u64,
    /// Worker threads.
    pub threads: usize,
    /// Seconds spent establishing sessions.
    pub setup_s: f64,
    /// Warm-up seconds (excluded).
    pub warmup_s: f64,
    /// Measured seconds.
    pub duration_s: f64,
    /// Messages (churn: completed cycles) inside the measured window.
    pub messages: u64,
    /// `messages / duration_s`.
    pub messages_per_sec: f64,
    /// Payload bytes per second inside the window.
    pub bytes_per_sec: f64,
    /// Errors by kind, every phase.
    pub errors: BTreeMap<String, u64>,
    /// Sum of `errors`.
    pub errors_total: u64,
    /// Name of the primary latency (the first histogram).
    pub latency_name: String,
    /// The primary latency, µs.
    pub latency_us: Summary,
    /// Every latency histogram summarised, µs.
    pub latencies_us: BTreeMap<String, Summary>,
    /// Every histogram, base64 of HdrHistogram V2 deflate (values in nanoseconds).
    pub histograms: BTreeMap<String, String>,
    /// Scenario counters (ticks, missed ticks, ...).
    pub counters: BTreeMap<String, u64>,
    /// Scenario-specific figures (requested rate, depth, ...).
    pub extra: BTreeMap<String, Value>,
    /// This worker's part of a split run (`--shard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// The load phase and the measured window on the wall clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WallWindow>,
    /// `rate --find-max-rate`: the rate found and every step of the search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rate: Option<MaxRate>,
}

/// A whole report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// See [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The program.
    pub tool: Tool,
    /// The machine it ran on.
    pub machine: Machine,
    /// Name of the run in tables and charts.
    pub label: String,
    /// Unix time the report was written.
    pub finished_unix_s: u64,
    /// The full command-line configuration.
    pub config: Value,
    /// Results.
    pub results: Results,
    /// Per-second figures of the load phase (warm-up, measure, drain).
    pub timeline: Vec<TimelinePoint>,
    /// CPU time of loadgen (and of the server, with --server-pid).
    pub cpu: CpuReport,
    /// A merged report's inputs (`loadgen merge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<Vec<crate::merge::MergedInput>>,
    /// What a reader of the figures should know (non-overlapping windows, a saturated
    /// worker, ...); not failures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Report {
    /// Builds the report of a finished run.
    pub fn build(
        f: &Finished,
        run: &RunConfig,
        config: Value,
        label: Option<&str>,
    ) -> Result<Self, ReportError> {
        let r = &f.outcome.result;
        let mut histograms = BTreeMap::new();
        let mut latencies = BTreeMap::new();
        for (name, h) in f.hist_names.iter().zip(&r.hists) {
            histograms.insert(name.to_string(), histogram::encode(h)?);
            latencies.insert(name.to_string(), Summary::of(h));
        }
        let duration_s = run.duration.as_secs_f64();
        let errors: BTreeMap<String, u64> =
            r.errors.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let errors_total = r.error_total();
        let requested = run.sessions as u64;
        let mut problems = Vec::new();
        if f.established < requested {
            problems.push(format!(
                "only {} of {} sessions established",
                f.established, requested
            ));
        }
        if errors_total > 0 {
            problems.push(format!("{errors_total} errors"));
        }
        problems.extend(f.outcome.problems.iter().cloned());
        if f.outcome.window.is_none() {
            problems.push("the load phase never started".into());
        }
        let transport = run.target.transport();
        let results = Results {
            scenario: f.scenario.into(),
            transport: transport.into(),
            target: run.target.to_string(),
            ok: problems.is_empty(),
            problems,
            sessions_requested: requested,
            sessions_established: f.established,
            threads: run.threads,
            setup_s: f.outcome.setup_s,
            warmup_s: run.warmup.as_secs_f64(),
            duration_s,
            messages: r.messages,
            messages_per_sec: r.messages as f64 / duration_s,
            bytes_per_sec: r.bytes as f64 / duration_s,
            errors,
            errors_total,
            latency_name: f.hist_names[0].into(),
            latency_us: Summary::of(&r.hists[0]),
            latencies_us: latencies,
            histograms,
            counters: r
                .counters
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            extra: f.extra.clone(),
            shard: run.shard.is_split().then_some(run.shard),
            window: f.outcome.wall,
            max_rate: None,
        };
        Ok(Self {
            schema_version: SCHEMA_VERSION,
            tool: Tool::current(),
            machine: Machine::detect(),
            label: label
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}-{}", f.scenario, transport)),
            finished_unix_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            config,
            results,
            timeline: f.outcome.timeline.clone(),
            cpu: f.outcome.cpu.clone(),
            merged_from: None,
            warnings: Vec::new(),
        })
    }

    /// Writes the report as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<(), ReportError> {
        let io = |source| ReportError::Io {
            path: path.display().to_string(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).expect("reports serialise");
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::write(path, json).map_err(io)
    }

    /// Reads a report, refusing other schema versions.
    pub fn read(path: &Path) -> Result<Self, ReportError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ReportError::Io {
            path: p.clone(),
            source,
        })?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|source| ReportError::Json {
            path: p.clone(),
            source,
        })?;
        let found = v.get("schema_version").and_then(Value::as_u64).unwrap_or(0) as u32;
        if found != SCHEMA_VERSION {
            return Err(ReportError::Schema { path: p, found });
        }
        serde_json::from_value(v).map_err(|source| ReportError::Json { path: p, source })
    }

    /// The human summary printed on stdout.
    pub fn summary(&self) -> String {
        let r = &self.results;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "loadgen {} over {} ({} threads) — {}",
            r.scenario, r.target, r.threads, self.label
        );
        if let Some(sh) = r.shard {
            let _ = writeln!(s, "shard       {sh} (this worker's share of the run)");
        }
        if let Some(m) = &self.merged_from {
            let _ = writeln!(s, "merged      {} workers:", m.len());
            for i in m {
                let _ = writeln!(s, "  {}", i.line());
            }
        }
        if let Some(m) = &r.max_rate {
            let _ = write!(s, "{}", m.render());
        }
        let _ = writeln!(
            s,
            "sessions    {}/{} established (setup {:.2} s); warm-up {} s, measured {} s",
            r.sessions_established, r.sessions_requested, r.setup_s, r.warmup_s, r.duration_s
        );
        let _ = writeln!(
            s,
            "throughput  {} messages, {:.0} msg/s, {:.2} MB/s",
            r.messages,
            r.messages_per_sec,
            r.bytes_per_sec / 1e6
        );
        for (name, l) in &r.latencies_us {
            let mark = if *name == r.latency_name { "*" } else { " " };
            let _ = writeln!(
                s,
                "{mark}{name:<18} µs  p50 {:>9.1}  p90 {:>9.1}  p99 {:>9.1}  p99.9 {:>9.1}  max {:>9.1}  mean {:>9.1}  n={}",
                l.p50, l.p90, l.p99, l.p999, l.max, l.mean, l.count
            );
        }
        // Scalars only, and not twice when a counter has the same name.
        let shown = |(k, v): &(&String, &Value)| {
            (v.is_number() || v.is_boolean()) && !r.counters.contains_key(*k)
        };
        for (k, v) in r.extra.iter().filter(shown) {
            let _ = writeln!(s, "  {k:<22} {v}");
        }
        for (k, v) in &r.counters {
            let _ = writeln!(s, "  {k:<22} {v}");
        }
        if let Some(Value::Array(v)) = r.extra.get("verdicts") {
            let _ = writeln!(s, "verdicts");
            for line in v.iter().filter_map(Value::as_str) {
                let _ = writeln!(s, "  {line}");
            }
        }
        if r.errors.is_empty() {
            let _ = writeln!(s, "errors      none");
        } else {
            let list: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(s, "errors      {} ({})", r.errors_total, list.join(", "));
        }
        let c = &self.cpu;
        let _ = write!(
            s,
            "cpu         loadgen {:.2} s user + {:.2} s sys",
            c.loadgen_user_s, c.loadgen_sys_s
        );
        if let Some(ns) = c.loadgen_cpu_ns_per_msg {
            let _ = write!(s, " = {ns:.0} ns/msg");
        }
        if let (Some(u), Some(sy)) = (c.server_user_s, c.server_sys_s) {
            let _ = write!(s, "; server {u:.2} s user + {sy:.2} s sys");
            if let Some(ns) = c.server_cpu_ns_per_msg {
                let _ = write!(s, " = {ns:.0} ns/msg");
            }
        }
        let _ = writeln!(s);
        for w in &self.warnings {
            let _ = writeln!(s, "warning     {w}");
        }
        if r.ok {
            let _ = writeln!(s, "RESULT      OK");
        } else {
            let _ = writeln!(s, "RESULT      FAILED: {}", r.problems.join("; "));
        }
        s
    }
}
