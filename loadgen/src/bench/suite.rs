//! The benchmark suite as data: `ci/bench-suite.toml` parsed into typed cases, checked,
//! and cut down to one mode (full or quick). Unknown keys are refused, so a typo in the
//! file fails loudly instead of silently dropping a case option.

use std::path::Path;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use sockchat_proto::frame::FrameType;
use sockchat_proto::header::OCTET_STREAM;
use sockchat_proto::{encode_into, ByteStr, Header, Key};

use super::BenchError;

/// The whole suite file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// Runs and timings per mode.
    pub modes: Modes,
    /// The quick check's verdict rule.
    pub gate: GateRule,
    /// The cases, in the order they run.
    #[serde(rename = "case")]
    pub cases: Vec<CaseSpec>,
    /// Cases run only with a second build (`BASE_REV`), after the others.
    #[serde(rename = "base_rev_case", default)]
    pub base_rev_cases: Vec<CaseSpec>,
    /// Chart directories and the case groups drawn in each.
    #[serde(rename = "chart", default)]
    pub charts: Vec<ChartSpec>,
    /// Report text and checks.
    pub report: ReportSpec,
}

/// `[modes.full]` and `[modes.quick]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Modes {
    /// The full suite.
    pub full: ModeSettings,
    /// The CI check.
    pub quick: ModeSettings,
    /// The raw servers' runtimes side by side (default: the full suite's settings).
    pub runtime: Option<ModeSettings>,
}

/// Default runs and timings of one mode (each can be overridden on the command line).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeSettings {
    /// Runs of each side of each case.
    pub runs: u32,
    /// Runs when writing the baseline (`--update-baseline`); default `runs`.
    pub update_baseline_runs: Option<u32>,
    /// Seconds of load before measuring.
    pub warmup: f64,
    /// Seconds measured.
    pub duration: f64,
    /// In what order the cases' runs go (default: case by case).
    #[serde(default)]
    pub order: Order,
}

/// The order of a mode's runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Every run of a case, then the next case.
    #[default]
    Cases,
    /// Round by round: one run (subject and baseline) of every case per round, so a
    /// case's runs are spread over the whole suite instead of a few seconds of it.
    Rounds,
}

/// `[gate]`: when the quick check fails.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateRule {
    /// A throughput ratio worse than the baseline's by more than this (percent) fails.
    pub max_regression_pct: f64,
    /// Throughput ratios are gated only when other processes used less than this
    /// percent of the machine's CPU during the case.
    pub busy_threshold_pct: f64,
    /// A case that fails the comparison is run this many more times (after every other
    /// case, round by round among the failing ones) and judged again on all its runs
    /// together; 0: judged on the first runs only.
    #[serde(default)]
    pub confirm_runs: u32,
}

/// One `[[chart]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartSpec {
    /// Directory under `bench-results/charts/`.
    pub dir: String,
    /// Case groups whose median runs are drawn.
    pub groups: Vec<String>,
}

/// `[report]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSpec {
    /// Groups whose baseline is loadgen's raw client against the raw server.
    pub client_bound_groups: Vec<String>,
    /// "Notes on method" bullets (may use `{frame_len}`).
    pub notes: Vec<String>,
}

/// Which suite runs a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every case, the committed report.
    Full,
    /// The CI check.
    Quick,
    /// The raw echo servers' engines side by side (`loadgen bench --runtime`).
    Runtime,
}

/// Unit of a case's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Unit {
    /// Messages per second.
    #[serde(rename = "msg/s")]
    MsgPerSec,
    /// Bytes per second.
    #[serde(rename = "B/s")]
    BytesPerSec,
    /// Churn cycles per second.
    #[serde(rename = "sessions/s")]
    SessionsPerSec,
    /// Microseconds.
    #[serde(rename = "µs")]
    Micros,
    /// Bytes per session.
    #[serde(rename = "B/session")]
    BytesPerSession,
    /// Nanoseconds of server CPU per delivery.
    #[serde(rename = "ns/delivery")]
    NanosPerDelivery,
}

/// Which direction is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Throughput-like.
    Higher,
    /// Latency- or cost-like.
    Lower,
}

/// The figure a loadgen run contributes as the case's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// `results.messages_per_sec` (churn: cycles per second).
    MessagesPerSec,
    /// `results.bytes_per_sec`.
    BytesPerSec,
    /// p99 of the primary latency.
    LatencyP99Us,
    /// Server CPU per message (`--server-pid`; fan-out: per delivery).
    ServerCpuNsPerMsg,
    /// The side's own value (idle memory, HMAC).
    Value,
}

/// Comparison operator of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Op {
    /// At least.
    #[serde(rename = ">=")]
    AtLeast,
    /// At most.
    #[serde(rename = "<=")]
    AtMost,
}

/// What a target is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// The ratio of the medians (subject / baseline).
    Ratio,
    /// Server CPU per message, subject median / baseline median.
    CpuRatio,
    /// The subject's median itself.
    Absolute,
}

/// A ratio the quick check compares with the baseline's (on a quiet machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gated {
    /// Throughput, subject / baseline (higher is better).
    ThroughputRatio,
    /// Server CPU per message, subject / baseline (lower is better).
    CpuCostRatio,
}

/// The default gate: the throughput ratio only (the CPU cost ratio moved 30-60% with
/// the machine's load on the same binaries).
pub fn default_gate() -> Vec<Gated> {
    vec![Gated::ThroughputRatio]
}

/// A case's target.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// What is compared.
    pub kind: TargetKind,
    /// How.
    pub op: Op,
    /// With what.
    pub value: f64,
}

/// TCP or Unix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Loopback TCP on an ephemeral port.
    Tcp,
    /// A Unix socket in the run's temp dir.
    Unix,
}

/// Which sockchat-server binary a side runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Build {
    /// This tree's release build.
    #[default]
    This,
    /// The `BASE_REV` build.
    Base,
}

/// One side (subject or baseline) of a case.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "run", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Side {
    /// sockchat-server plus a loadgen scenario.
    Sockchat {
        /// Which build.
        #[serde(default)]
        build: Build,
        /// Listener.
        transport: Transport,
        /// `--mode` of the server.
        #[serde(default = "echo_mode")]
        mode: String,
        /// Further server flags.
        #[serde(default)]
        server_args: Vec<String>,
        /// loadgen scenario.
        scenario: String,
        /// Scenario options (the runner adds threads, pinning, timings, JSON).
        args: Vec<String>,
        /// Warm-up of at least this many seconds.
        min_warmup: Option<f64>,
        /// Label suffix (`NAME-SUFFIX`) in reports and charts.
        label_suffix: Option<String>,
    },
    /// loadgen's raw monoio echo server plus a raw scenario.
    RawServer {
        /// Listener.
        transport: Transport,
        /// loadgen scenario (`raw-echo`, `raw-churn`, `fanout` with `--raw`).
        scenario: String,
        /// Scenario options.
        args: Vec<String>,
        /// Add `--size` = sockchat's frame length for this many bytes of content.
        size_as_frame_of: Option<usize>,
        /// Add `--size` = the length of the frame sockchat delivers to a rooms member
        /// (`fanout --rooms`) for this many bytes of content.
        size_as_delivery_of: Option<usize>,
        /// Further raw-server flags (e.g. `--ring coop`).
        #[serde(default)]
        server_args: Vec<String>,
        /// Label suffix.
        label_suffix: Option<String>,
    },
    /// Single-core HMAC-SHA256 throughput.
    Hmac,
    /// One HMAC over a rooms recipient's header JSON and `content` bytes (the floor of
    /// a chat delivery), pinned to the server's CPU; value = ns per HMAC.
    HmacFloor {
        /// Content bytes.
        content: usize,
    },
    /// `nodes` sockchat-servers (`--mode chat`, Unix) clustered through a NATS broker
    /// the bench starts (all on the server CPU), plus a loadgen scenario given every
    /// node (`--targets`).
    Cluster {
        /// Server nodes.
        nodes: usize,
        /// loadgen scenario.
        scenario: String,
        /// Scenario options.
        args: Vec<String>,
        /// Further server flags.
        #[serde(default)]
        server_args: Vec<String>,
        /// Label suffix.
        label_suffix: Option<String>,
    },
    /// Server RSS growth per idle session.
    IdleMemory {
        /// Idle sessions established.
        sessions: usize,
        /// Seconds loadgen holds them.
        hold_s: f64,
        /// Further server flags.
        #[serde(default)]
        server_args: Vec<String>,
    },
}

fn echo_mode() -> String {
    "echo".into()
}

/// One case as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseSpec {
    /// Short unique name (`--only`, baseline keys, chart labels).
    pub name: String,
    /// Human title (may use `{frame_len}`, `{base_rev}`).
    pub title: String,
    /// Report group (charts, notes).
    pub group: String,
    /// Unit of the value.
    pub unit: Unit,
    /// Direction.
    pub better: Better,
    /// The figure taken from each run.
    pub metric: Metric,
    /// Suites that run the case.
    pub suites: Vec<Mode>,
    /// What is measured.
    pub subject: Side,
    /// What it is divided by, measured interleaved.
    pub baseline: Option<Side>,
    /// Describes the baseline (may use the same placeholders).
    pub baseline_title: Option<String>,
    /// The goal, if any.
    pub target: Option<Target>,
    /// Ratios the quick check gates (default: the throughput ratio).
    #[serde(default = "default_gate")]
    pub gate: Vec<Gated>,
}

impl Suite {
    /// Reads and checks the suite file.
    pub fn load(path: &Path) -> Result<Self, BenchError> {
        let text = std::fs::read_to_string(path).map_err(|e| BenchError::io(path, e))?;
        Self::parse(&text).map_err(|e| match e {
            BenchError::Suite(m) => BenchError::Suite(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// Parses and checks suite text.
    pub fn parse(text: &str) -> Result<Self, BenchError> {
        let suite: Suite = toml::from_str(text).map_err(|e| BenchError::Suite(e.to_string()))?;
        suite.check()?;
        Ok(suite)
    }

    fn check(&self) -> Result<(), BenchError> {
        let bad = |m: String| Err(BenchError::Suite(m));
        let mut seen = std::collections::BTreeSet::new();
        for c in self.cases.iter().chain(&self.base_rev_cases) {
            if !seen.insert(c.name.as_str()) {
                return bad(format!("case {} defined twice", c.name));
            }
            if c.baseline.is_some() != c.baseline_title.is_some() {
                return bad(format!(
                    "case {}: baseline and baseline_title go together",
                    c.name
                ));
            }
            if matches!(c.subject, Side::Hmac | Side::HmacFloor { .. }) {
                return bad(format!("case {}: hmac can only be a baseline", c.name));
            }
            if matches!(c.baseline, Some(Side::IdleMemory { .. })) {
                return bad(format!(
                    "case {}: idle-memory can only be a subject",
                    c.name
                ));
            }
            if let Some(t) = c.target {
                if t.kind != TargetKind::Absolute && c.baseline.is_none() {
                    return bad(format!(
                        "case {}: a {:?} target needs a baseline",
                        c.name, t.kind
                    ));
                }
            }
            let value_side = matches!(c.subject, Side::IdleMemory { .. });
            if value_side != (c.metric == Metric::Value) {
                return bad(format!(
                    "case {}: metric \"value\" is for idle-memory subjects only",
                    c.name
                ));
            }
            for side in std::iter::once(&c.subject).chain(&c.baseline) {
                if let Side::RawServer {
                    args,
                    size_as_frame_of,
                    size_as_delivery_of,
                    ..
                } = side
                {
                    let sizes = usize::from(size_as_frame_of.is_some())
                        + usize::from(size_as_delivery_of.is_some())
                        + usize::from(args.iter().any(|a| a == "--size"));
                    if sizes > 1 {
                        return bad(format!(
                            "case {}: size_as_frame_of, size_as_delivery_of and --size each set the size: give one",
                            c.name
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Settings of `mode`.
    pub fn mode(&self, mode: Mode) -> ModeSettings {
        match mode {
            Mode::Full => self.modes.full,
            Mode::Quick => self.modes.quick,
            Mode::Runtime => self.modes.runtime.unwrap_or(self.modes.full),
        }
    }

    /// The cases `mode` runs, in order; with a base build, the base-rev cases after them.
    pub fn select(&self, mode: Mode, with_base: bool) -> Vec<&CaseSpec> {
        let base = self.base_rev_cases.iter().filter(|_| with_base);
        self.cases
            .iter()
            .chain(base)
            .filter(|c| c.suites.contains(&mode))
            .collect()
    }
}

/// Length of the `message` frame sockchat-server echoes for `content_len` bytes of
/// content: the frame loadgen's `echo` sends (octet-stream, a hyphenated UUID session
/// id as the server issues), encoded by sockchat-proto's encoder, so the figure follows any change
/// of the encoder or the header.
pub fn echo_frame_len(content_len: usize) -> usize {
    let key = Key::reference_default();
    // The server's session ids are hyphenated UUIDs: 36 characters.
    let sid = ByteStr::from("00000000-0000-4000-8000-000000000000");
    let header = Header::new(FrameType::Message, Some(OCTET_STREAM), Some(sid));
    let mut out = BytesMut::new();
    encode_into(&key, &header, &vec![0u8; content_len], &mut out)
        .expect("a small message frame encodes");
    out.len()
}

pub use crate::scenarios::rooms::delivery_frame_len;

impl Side {
    /// The `--size` a raw side adds (its like-for-like payload length), if it has one.
    pub fn raw_size(&self) -> Option<usize> {
        match self {
            Side::RawServer {
                size_as_frame_of,
                size_as_delivery_of,
                ..
            } => size_as_frame_of
                .map(echo_frame_len)
                .or(size_as_delivery_of.map(delivery_frame_len)),
            _ => None,
        }
    }
}

impl CaseSpec {
    /// The like-for-like payload length of this case's raw side (`{frame_len}`).
    pub fn frame_len(&self) -> Option<usize> {
        std::iter::once(&self.subject)
            .chain(&self.baseline)
            .find_map(Side::raw_size)
    }
}

impl Suite {
    /// The like-for-like payload length the notes refer to: the first case's that has
    /// one (0 when none does).
    pub fn notes_frame_len(&self) -> usize {
        self.cases.iter().find_map(CaseSpec::frame_len).unwrap_or(0)
    }
}

/// Replaces the title placeholders.
pub fn fill(text: &str, frame_len: usize, base_rev: &str) -> String {
    text.replace("{frame_len}", &frame_len.to_string())
        .replace("{base_rev}", base_rev)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPO_SUITE: &str = include_str!("../../../ci/bench-suite.toml");

    fn minimal(case: &str) -> String {
        format!(
            "[modes.full]\nruns = 3\nwarmup = 1.0\nduration = 5.0\n\
             [modes.quick]\nruns = 3\nupdate_baseline_runs = 5\nwarmup = 0.5\nduration = 2.0\n\
             [gate]\nmax_regression_pct = 30.0\nbusy_threshold_pct = 5.0\n\
             [report]\nclient_bound_groups = []\nnotes = []\n{case}"
        )
    }

    const ECHO: &str = r#"
[[case]]
name = "e"
title = "echo"
group = "echo"
unit = "msg/s"
better = "higher"
metric = "messages_per_sec"
suites = ["quick"]
subject = { run = "sockchat", transport = "unix", scenario = "echo", args = ["--size", "64"] }
baseline = { run = "raw-server", transport = "unix", scenario = "raw-echo", args = [], size_as_frame_of = 64, label_suffix = "raw" }
baseline_title = "raw {frame_len} B"
target = { kind = "cpu_ratio", op = "<=", value = 1.3 }
"#;

    #[test]
    fn order_and_confirm_runs_default_and_parse() {
        let s = Suite::parse(&minimal(ECHO)).unwrap();
        assert_eq!(s.modes.quick.order, Order::Cases);
        assert_eq!(s.gate.confirm_runs, 0);
        let text = minimal(ECHO)
            .replace("duration = 2.0\n", "duration = 2.0\norder = \"rounds\"\n")
            .replace(
                "busy_threshold_pct = 5.0\n",
                "busy_threshold_pct = 5.0\nconfirm_runs = 4\n",
            );
        let s = Suite::parse(&text).unwrap();
        assert_eq!(s.modes.quick.order, Order::Rounds);
        assert_eq!(s.gate.confirm_runs, 4);
        let bad = minimal(ECHO).replace("duration = 2.0\n", "duration = 2.0\norder = \"random\"\n");
        assert!(Suite::parse(&bad).is_err());
    }

    #[test]
    fn the_committed_suite_parses_and_keeps_the_cases() {
        let s = Suite::parse(REPO_SUITE).unwrap();
        let names =
            |m, base| -> Vec<String> { s.select(m, base).iter().map(|c| c.name.clone()).collect() };
        assert_eq!(
            names(Mode::Quick, false),
            [
                "echo64-d16-tcp",
                "echo64-d16-unix",
                "echo-frame64-d16-tcp",
                "echo-frame64-d16-unix",
                "echo-frame64-d1-s50-tcp",
                "echo-frame64-d1-s50-unix",
                "churn-tcp",
                "churn-unix",
                "heartbeat-500"
            ]
        );
        let full = names(Mode::Full, false);
        for n in [
            "echo64-d1-tcp",
            "echo64-d1-unix",
            "echo1m-unix",
            "echo1m-chunked-unix",
            "churn-tcp-wire",
            "churn-unix-wire",
            "heartbeat-5k",
            "idle-memory-5k",
            "fanout-1000",
        ] {
            assert!(
                full.iter().any(|f| f == n),
                "{n} missing from the full suite"
            );
        }
        assert!(!full.iter().any(|f| f.starts_with("base-")));
        // The raw engines side by side run only in their own suite.
        let runtime = names(Mode::Runtime, false);
        assert_eq!(runtime.len(), 12, "{runtime:?}");
        assert!(runtime.iter().all(|n| n.starts_with("runtime-")));
        assert!(!full.iter().any(|f| f.starts_with("runtime-")));
        assert_eq!(s.mode(Mode::Runtime).duration, 3.0);
        assert_eq!(names(Mode::Full, true).len(), full.len() + 4);
        assert_eq!(s.gate.max_regression_pct, 30.0);
        assert_eq!(s.gate.busy_threshold_pct, 5.0);
        // The quick check's runs in rounds, its baseline on more runs than the check,
        // and a failing case confirmed at the same limit.
        assert_eq!(s.modes.quick.order, Order::Rounds);
        assert_eq!(s.modes.full.order, Order::Cases);
        assert!(s.modes.quick.update_baseline_runs > Some(s.modes.quick.runs));
        assert!(s.gate.confirm_runs > 0);
        // Issue 10's echo depth 1 target is a CPU ratio: the check gates it there only.
        for c in s.select(Mode::Quick, false) {
            let cpu = c.gate.contains(&Gated::CpuCostRatio);
            assert_eq!(cpu, c.name.starts_with("echo-frame64-d1-"), "{}", c.name);
            assert!(c.gate.contains(&Gated::ThroughputRatio) || c.baseline.is_none());
        }
    }

    #[test]
    fn parses_sides_and_targets() {
        let s = Suite::parse(&minimal(ECHO)).unwrap();
        let c = &s.cases[0];
        assert_eq!(
            c.target,
            Some(Target {
                kind: TargetKind::CpuRatio,
                op: Op::AtMost,
                value: 1.3
            })
        );
        match &c.baseline {
            Some(Side::RawServer {
                size_as_frame_of,
                label_suffix,
                transport,
                ..
            }) => {
                assert_eq!(*size_as_frame_of, Some(64));
                assert_eq!(label_suffix.as_deref(), Some("raw"));
                assert_eq!(*transport, Transport::Unix);
            }
            other => panic!("baseline parsed as {other:?}"),
        }
        match &c.subject {
            Side::Sockchat { mode, build, .. } => {
                assert_eq!(mode, "echo");
                assert_eq!(*build, Build::This);
            }
            other => panic!("subject parsed as {other:?}"),
        }
        assert!(s.select(Mode::Full, false).is_empty());
    }

    #[test]
    fn refuses_typos_and_inconsistent_cases() {
        let typo = ECHO.replace("label_suffix", "label_sufix");
        assert!(Suite::parse(&minimal(&typo)).is_err());
        let unknown_run = ECHO.replace("run = \"raw-server\"", "run = \"rawserver\"");
        assert!(Suite::parse(&minimal(&unknown_run)).is_err());
        let twice = format!("{ECHO}{ECHO}");
        let e = Suite::parse(&minimal(&twice)).unwrap_err().to_string();
        assert!(e.contains("defined twice"), "{e}");
        let no_title = ECHO.replace("baseline_title = \"raw {frame_len} B\"", "");
        assert!(Suite::parse(&minimal(&no_title)).is_err());
        let double_size = ECHO.replace("args = [], size", "args = [\"--size\", \"9\"], size");
        let e = Suite::parse(&minimal(&double_size))
            .unwrap_err()
            .to_string();
        assert!(e.contains("each set the size"), "{e}");
        let bad_op = ECHO.replace("op = \"<=\"", "op = \"<\"");
        assert!(Suite::parse(&minimal(&bad_op)).is_err());
    }

    #[test]
    fn delivery_len_comes_from_the_encoder_and_carries_room_and_from() {
        let small = delivery_frame_len(64);
        assert_eq!(delivery_frame_len(1064) - small, 1000);
        // `, "room": "r0", "from": "<36-character id>"` on top of the echoed frame.
        let extra = ", \"room\": \"r0\", \"from\": \"\"".len() + 36;
        assert_eq!(small, echo_frame_len(64) + extra);
        let case = ECHO.replace("size_as_frame_of", "size_as_delivery_of");
        let s = Suite::parse(&minimal(&case)).unwrap();
        assert_eq!(s.cases[0].frame_len(), Some(small));
        assert_eq!(s.notes_frame_len(), small);
    }

    #[test]
    fn frame_len_comes_from_the_encoder() {
        // Fixed header + JSON header + content: longer than the content by the same
        // overhead at every size, and about 240 B for 64 B of content.
        let small = echo_frame_len(64);
        let big = echo_frame_len(1064);
        assert_eq!(big - small, 1000);
        assert!((200..300).contains(&small), "{small}");
        assert_eq!(
            fill("raw {frame_len} B vs {base_rev}", small, "abc"),
            format!("raw {small} B vs abc")
        );
    }
}
