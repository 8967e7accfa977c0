//! What a benchmark run writes: the run document (`bench-results/<date>-<commit>.json`,
//! schema `sockchat-bench/1`, the same layout `ci/bench.py` wrote so earlier runs still
//! read) and the ratio file (`bench-results/baseline.json`, schema
//! `sockchat-bench-ratios/2`) that `loadgen compare` compares natively.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::process::HmacRun;
use super::suite::{default_gate, Better, Gated, Mode, Target, Unit};
use super::BenchError;
use crate::report::Tool;

/// Schema of the run document.
pub const SCHEMA: &str = "sockchat-bench/1";
/// Schema of the ratio file.
pub const RATIOS_SCHEMA: &str = "sockchat-bench-ratios/2";

/// One benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchDoc {
    /// [`SCHEMA`].
    pub schema: String,
    /// Which suite ran.
    pub suite: Mode,
    /// Short commit of the tree.
    pub commit: String,
    /// Full commit.
    pub commit_full: String,
    /// Uncommitted changes under server/, loadgen/, proto/ or Cargo.lock.
    pub dirty: bool,
    /// UTC date.
    pub date: String,
    /// UTC start time.
    pub started_utc: String,
    /// Wall-clock seconds of the run.
    pub duration_s: f64,
    /// The machine.
    pub machine: BenchMachine,
    /// Load average at the start and the end.
    pub load_average: LoadAverage,
    /// Runs and timings used.
    pub settings: Settings,
    /// The loadgen build that measured (from its reports).
    pub loadgen_tool: Option<Tool>,
    /// Failed loadgen runs and servers that did not stop cleanly.
    pub problems: Vec<String>,
    /// Every case.
    #[serde(default)]
    pub cases: Vec<CaseResult>,
}

/// Machine facts of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchMachine {
    /// CPU model.
    pub cpu_model: String,
    /// CPUs.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// Memory.
    pub memory_mib: Option<u64>,
    /// OS description.
    pub os: String,
}

/// 1/5/15-minute load averages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadAverage {
    /// At the start.
    pub start: Vec<f64>,
    /// At the end.
    pub end: Vec<f64>,
}

/// Settings of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Runs per side.
    pub runs: u32,
    /// Warm-up seconds.
    pub warmup: f64,
    /// Measured seconds.
    pub duration: f64,
    /// CPU of the servers.
    pub server_cpu: usize,
    /// CPU of loadgen.
    pub loadgen_cpu: usize,
    /// The second build's revision, if any.
    pub base_rev: Option<String>,
}

/// Median, range and every run of one side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Each run's value (3 decimals).
    pub runs: Vec<f64>,
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

/// Figures of one loadgen run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadDetail {
    /// Messages (churn: cycles) per second.
    pub messages_per_sec: f64,
    /// Payload bytes per second.
    pub bytes_per_sec: f64,
    /// Primary latency p50.
    pub latency_p50_us: f64,
    /// p99.
    pub latency_p99_us: f64,
    /// p99.9.
    pub latency_p999_us: f64,
    /// Errors counted.
    pub errors: u64,
    /// `established/requested`.
    pub sessions: String,
    /// Server CPU per message.
    pub server_cpu_ns_per_msg: Option<f64>,
    /// loadgen CPU per message.
    pub loadgen_cpu_ns_per_msg: Option<f64>,
    /// Other processes' CPU share during the run.
    pub other_cpu_pct: Option<f64>,
}

/// Figures of one idle-memory run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryDetail {
    /// VmRSS before the idle sessions.
    pub rss_before_kib: u64,
    /// VmRSS with them.
    pub rss_after_kib: u64,
    /// Open fds before.
    pub fds_before: usize,
    /// Open fds after.
    pub fds_after: usize,
    /// Sessions loadgen established.
    pub sessions: u64,
    /// RSS growth per session.
    pub bytes_per_session: f64,
}

/// One run's figures, by kind of side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Detail {
    /// A loadgen scenario.
    Load(LoadDetail),
    /// The HMAC baseline.
    Hmac(HmacRun),
    /// The one-HMAC floor of a delivery.
    HmacFloor(super::process::HmacFloorRun),
    /// Idle memory.
    Memory(MemoryDetail),
}

impl Detail {
    /// Server CPU per message, for loadgen runs that measured it.
    pub fn server_cpu_ns_per_msg(&self) -> Option<f64> {
        match self {
            Detail::Load(d) => d.server_cpu_ns_per_msg,
            Detail::Hmac(_) | Detail::HmacFloor(_) | Detail::Memory(_) => None,
        }
    }

    /// loadgen CPU per message.
    pub fn loadgen_cpu_ns_per_msg(&self) -> Option<f64> {
        match self {
            Detail::Load(d) => d.loadgen_cpu_ns_per_msg,
            Detail::Hmac(_) | Detail::HmacFloor(_) | Detail::Memory(_) => None,
        }
    }

    /// Other processes' CPU share.
    pub fn other_cpu_pct(&self) -> Option<f64> {
        match self {
            Detail::Load(d) => d.other_cpu_pct,
            Detail::Hmac(_) | Detail::HmacFloor(_) | Detail::Memory(_) => None,
        }
    }
}

/// The baseline side of a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineResult {
    /// Its runs.
    #[serde(flatten)]
    pub stats: Stats,
    /// What it is.
    pub title: String,
    /// Its loadgen command.
    pub command: Option<String>,
    /// Each run's figures.
    pub details: Vec<Detail>,
}

/// Subject / baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatioStats {
    /// Median over median.
    pub median_over_median: Option<f64>,
    /// Each interleaved pair's ratio (4 decimals).
    pub per_run: Vec<f64>,
    /// Smallest pair ratio.
    pub min: Option<f64>,
    /// Largest pair ratio.
    pub max: Option<f64>,
}

/// Server CPU per message, subject vs baseline (medians).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CpuCost {
    /// Subject median / baseline median.
    pub median_over_median: f64,
    /// Subject median, ns.
    pub server_cpu_ns_per_msg: f64,
    /// Baseline median, ns.
    pub baseline_server_cpu_ns_per_msg: f64,
}

/// Other processes' CPU share over a case's runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OtherCpu {
    /// Median.
    pub median: f64,
    /// Largest.
    pub max: f64,
}

/// Whether a target is met.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standing {
    /// Met.
    pub met: bool,
    /// Headroom in percent (negative: missed).
    pub margin_pct: f64,
    /// Human text.
    pub text: String,
}

/// One case's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    /// Name.
    pub name: String,
    /// Title.
    pub title: String,
    /// Group.
    pub group: String,
    /// Unit.
    pub unit: Unit,
    /// Direction.
    pub better: Better,
    /// The subject's runs.
    pub subject: Stats,
    /// The subject's loadgen command.
    pub subject_command: Option<String>,
    /// The subject's figures per run.
    pub details: Vec<Detail>,
    /// Seconds the case took.
    pub seconds: f64,
    /// The baseline, if any.
    pub baseline: Option<BaselineResult>,
    /// Subject / baseline.
    pub ratio: Option<RatioStats>,
    /// Server CPU per message, compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cost_ratio: Option<CpuCost>,
    /// Other processes' CPU share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_cpu_pct: Option<OtherCpu>,
    /// The target.
    pub target: Option<Target>,
    /// Its standing.
    pub standing: Option<Standing>,
}

/// The ratios of one case, as the quick check compares them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseRatios {
    /// Case title.
    pub title: String,
    /// loadgen scenario of the subject.
    pub scenario: String,
    /// Throughput ratio, subject / baseline (higher is better).
    pub ratio: f64,
    /// Server CPU per message, compared (shown, not gated).
    pub cpu_cost_ratio: Option<CpuCost>,
    /// Other processes' CPU share during the case.
    pub other_cpu_pct: Option<OtherCpu>,
    /// Errors in the subject's median run.
    pub errors_total: u64,
    /// Sessions the median run asked for.
    pub sessions_requested: u64,
    /// Sessions it established.
    pub sessions_established: u64,
    /// Ratios the check gates (from the suite that measured the new file).
    #[serde(default = "default_gate")]
    pub gated: Vec<Gated>,
}

/// `bench-results/baseline.json` and the quick check's own ratios.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RatioFile {
    /// [`RATIOS_SCHEMA`].
    pub schema: String,
    /// What the file is.
    pub about: String,
    /// Commit measured.
    pub commit: String,
    /// UTC date.
    pub date: String,
    /// Machine.
    pub machine: BenchMachine,
    /// Load average.
    pub load_average: LoadAverage,
    /// Settings.
    pub settings: Settings,
    /// Ratios by case name.
    pub cases: BTreeMap<String, CaseRatios>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, BenchError> {
    let bytes = std::fs::read(path).map_err(|e| BenchError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| BenchError::Json {
        what: path.display().to_string(),
        source,
    })
}

/// Writes `value` as indented JSON with a final newline.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), BenchError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|source| BenchError::Json {
        what: path.display().to_string(),
        source,
    })?;
    text.push('\n');
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| BenchError::io(dir, e))?;
    }
    std::fs::write(path, text).map_err(|e| BenchError::io(path, e))
}

impl BenchDoc {
    /// Reads a run document.
    pub fn read(path: &Path) -> Result<Self, BenchError> {
        let doc: Self = read_json(path)?;
        if doc.schema != SCHEMA {
            return Err(BenchError::Suite(format!(
                "{}: schema {}, this loadgen reads {SCHEMA}",
                path.display(),
                doc.schema
            )));
        }
        Ok(doc)
    }
}

impl RatioFile {
    /// Reads a ratio file.
    pub fn read(path: &Path) -> Result<Self, BenchError> {
        let f: Self = read_json(path)?;
        if f.schema != RATIOS_SCHEMA {
            return Err(BenchError::Suite(format!(
                "{}: schema {}, this loadgen reads {RATIOS_SCHEMA}",
                path.display(),
                f.schema
            )));
        }
        Ok(f)
    }

    /// True when `path` holds a ratio file (any schema version), not a loadgen report.
    pub fn sniff(path: &Path) -> bool {
        read_json::<serde_json::Value>(path)
            .ok()
            .and_then(|v| {
                v.get("schema")?
                    .as_str()
                    .map(|s| s.starts_with("sockchat-bench-ratios"))
            })
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_run_documents_read_back_unchanged() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-results");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if !(name.starts_with("20") && name.ends_with(".json")) {
                continue;
            }
            let doc = BenchDoc::read(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!doc.cases.is_empty());
            // Every field is typed: a round trip keeps the document as it was.
            let original: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            let again = serde_json::to_value(&doc).unwrap();
            assert_eq!(strip_ints(original), strip_ints(again), "{name}");
            n += 1;
        }
        assert!(n > 0, "no run documents in {}", dir.display());
    }

    /// JSON integers and floats of the same value compare equal.
    fn strip_ints(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Number(n) => Value::from(n.as_f64().unwrap()),
            Value::Array(a) => Value::Array(a.into_iter().map(strip_ints).collect()),
            Value::Object(o) => {
                Value::Object(o.into_iter().map(|(k, v)| (k, strip_ints(v))).collect())
            }
            v => v,
        }
    }

    #[test]
    fn committed_baselines_are_ratio_files() {
        let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-results");
        let mut files = vec![results.join("baseline.json")];
        if let Ok(dir) = std::fs::read_dir(results.join("baselines")) {
            files.extend(dir.map(|e| e.unwrap().path()));
        }
        for p in files {
            assert!(RatioFile::sniff(&p), "{}", p.display());
            let f = RatioFile::read(&p).unwrap();
            assert!(f.cases.values().all(|c| c.ratio > 0.0), "{}", p.display());
        }
    }
}
