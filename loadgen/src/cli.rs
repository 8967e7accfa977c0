//! Command line (clap). Every argument struct is also serialised into the JSON report as
//! the run's full configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::conn::Target;
use crate::runner::RingMode;
use crate::shard::Shard;
use crate::stages::Stages;

/// Load generator for sockchat: thread-per-core (monoio, io_uring), every received frame
/// verified, coordinated-omission-corrected latency, versioned JSON reports.
#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about,
    long_about = None,
    after_help = "With options and no command (e.g. `loadgen --sessions 5000 --unix /tmp/chat.sock`), runs `suite`."
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Scenarios and tools.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The default with no scenario: establish --sessions, then echo throughput,
    /// heartbeat latency across all of them and connect/disconnect churn, --duration
    /// each, in one report with a verdict per figure.
    Suite(SuiteArgs),
    /// Closed loop: each session keeps --depth messages in flight and verifies every echo.
    Echo(EchoArgs),
    /// Open loop at a fixed total --rate; latency from the scheduled and the actual send time.
    Rate(RateArgs),
    /// Every session pings every --interval (staggered); pong latency and missed ticks.
    Heartbeat(HeartbeatArgs),
    /// Concurrent loops of connect, handshake, disconnect, close; sessions/s.
    Churn(ChurnArgs),
    /// Chat mode: session 0 sends, all others receive; time from send to the last delivery.
    Fanout(FanoutArgs),
    /// Like echo without the protocol: fixed-size payloads echoed back byte for byte.
    RawEcho(RawEchoArgs),
    /// Plain connect / close loops without the protocol.
    RawChurn(RawChurnArgs),
    /// The minimal monoio echo server that raw-echo and raw-churn measure as a baseline.
    RawServer(RawServerArgs),
    /// Renders runs' JSON reports as a Markdown table and SVG charts.
    Report(ReportArgs),
    /// Compares two runs (or two benchmark ratio files) and fails past a regression
    /// threshold.
    Compare(CompareArgs),
    /// The load benchmark suite of ci/bench-suite.toml (run through ci/bench.sh).
    Bench(crate::bench::BenchArgs),
    /// Starts a server (sockchat-server or raw-server) and reports its RSS per idle
    /// connection, the requests armed in its io_uring instances (/proc/PID/fdinfo) and
    /// `strace -c -f` system calls per message under echo load.
    Probe(crate::probe::ProbeArgs),
    /// Combines the reports of a run's workers (--shard I/N) into one report: histograms
    /// added, counters summed, timelines aligned on wall-clock seconds.
    Merge(MergeArgs),
}

/// Where to connect or listen: exactly one of --tcp / --unix.
#[derive(Debug, Clone, Args, Serialize)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// TCP address, e.g. 127.0.0.1:7000.
    #[arg(long, value_name = "ADDR")]
    pub tcp: Option<SocketAddr>,
    /// Unix socket path, e.g. /tmp/chat.sock.
    #[arg(long, value_name = "PATH")]
    pub unix: Option<PathBuf>,
}

impl TargetArgs {
    /// The chosen target.
    pub fn target(&self) -> Target {
        match (&self.tcp, &self.unix) {
            (Some(a), _) => Target::Tcp(*a),
            (None, Some(p)) => Target::Unix(p.clone()),
            (None, None) => unreachable!("clap requires one of --tcp/--unix"),
        }
    }
}

/// Options every load scenario takes.
#[derive(Debug, Clone, Args, Serialize)]
pub struct CommonArgs {
    /// Target.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Sessions to establish (for churn scenarios: concurrent connect loops).
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
    /// Worker threads, each with its own runtime; default: all cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Connections per second while establishing sessions, over all threads (0 = no
    /// pacing). Fewer sessions established than asked fails the run.
    #[arg(long, default_value_t = 2000.0)]
    pub ramp: f64,
    /// Seconds of load before measuring (excluded from results, errors still count).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds allowed for outstanding replies after the measured window.
    #[arg(long, default_value_t = 2.0)]
    pub drain: f64,
    /// Seconds allowed for one connect + handshake.
    #[arg(long, default_value_t = 5.0)]
    pub connect_timeout: f64,
    /// File holding the shared HMAC key (one trailing newline is trimmed); default: the
    /// reference key `default-key`.
    #[arg(long, env = "SOCKCHAT_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Write the versioned JSON report here.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Also read this server process's CPU time (from /proc/PID/stat) at the start and
    /// the end, and report its CPU time per message.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Pin worker threads to these CPUs, round robin (e.g. "1" or "2,3").
    #[arg(long, value_delimiter = ',', value_name = "CPU,...")]
    pub cpus: Vec<usize>,
    /// No live progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Name of this run in reports (default: scenario and transport).
    #[arg(long)]
    pub label: Option<String>,
    /// io_uring setup of the worker threads: plain (monoio's default), coop
    /// (COOP_TASKRUN: no interrupt per completion; cheaper with few sessions, but it
    /// stalled completions with ~20k sessions), defer (also DEFER_TASKRUN).
    #[arg(long, value_enum, default_value_t = RingMode::Plain)]
    pub ring: RingMode,
    /// Run as worker I of N (e.g. 0/2): take this worker's share of --sessions, --rate,
    /// --ramp and fan-out receivers (shares differ by at most one); combine the workers'
    /// reports with `loadgen merge`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Wall-clock instant (ms since the Unix epoch) the measured window starts at:
    /// sessions connect and warm up before it, so workers started apart measure the
    /// same window. A worker that cannot make it says so and exits non-zero.
    #[arg(long, value_name = "UNIX_MS")]
    pub start_at_ms: Option<u64>,
    /// Write the primary latency of each second of the measured window to PATH as an
    /// HdrHistogram interval log (values in ns; readable by HistogramLogProcessor).
    #[arg(long, value_name = "PATH")]
    pub interval_log: Option<PathBuf>,
}

/// `echo` options.
#[derive(Debug, Clone, Args, Serialize)]
pub struct EchoArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Messages in flight per session (1 = strict ping-pong).
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Content bytes per message.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// A mix of sizes instead of --size: SIZE:WEIGHT,... e.g. "64:80,1024:15,65536:5".
    #[arg(long, value_name = "SIZE:WEIGHT,...")]
    pub size_dist: Option<String>,
    /// Send messages larger than --chunk-size as chunk frames (asks for the "chunk"
    /// feature in the handshake and waits for the server to grant it).
    #[arg(long)]
    pub chunked: bool,
    /// Chunk content size for --chunked.
    #[arg(long, default_value_t = 1 << 20)]
    pub chunk_size: usize,
    /// Open and close sessions along stages instead of holding --sessions, e.g.
    /// "10s:100,30s:1000,10s:0" (see `heartbeat --stages`); works with --chunked.
    #[arg(long, value_name = "DUR:SESSIONS,...")]
    pub stages: Option<Stages>,
}

/// `suite` options (what `loadgen` runs when no scenario is given).
#[derive(Debug, Clone, Args, Serialize)]
pub struct SuiteArgs {
    /// Common options (--duration is each phase's).
    #[command(flatten)]
    pub common: CommonArgs,
    /// Seconds between one session's pings in the heartbeat phase.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Concurrent connect/disconnect loops in the churn phase.
    #[arg(long, default_value_t = 16)]
    pub churn_loops: usize,
}

/// `rate` options.
#[derive(Debug, Clone, Args, Serialize)]
pub struct RateArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Total messages per second, spread evenly over sessions and over time (with
    /// --find-max-rate: the first rate tried; default 1000).
    #[arg(long, default_value_t = 0.0, required_unless_present_any = ["stages", "find_max_rate"])]
    pub rate: f64,
    /// Content bytes per message.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Ramp the total rate linearly from 0 through each stage's target, e.g.
    /// "10s:1000,30s:20000,10s:0" (a "0s:N" stage is a step). The stages replace
    /// --rate, --warmup and --duration: the whole plan is measured.
    #[arg(long, value_name = "DUR:RATE,...", conflicts_with = "find_max_rate")]
    pub stages: Option<Stages>,
    /// Search for the highest rate whose coordinated-omission-corrected p99 stays within
    /// --p99 with at most --max-errors errors: doubling from --rate, then bisecting;
    /// each step is a run of --warmup + --duration.
    #[arg(long, requires = "p99")]
    pub find_max_rate: bool,
    /// Latency target of --find-max-rate, e.g. 10ms or 500us.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(serialize_with = "ser_duration")]
    pub p99: Option<std::time::Duration>,
    /// Errors a --find-max-rate step may have and still pass.
    #[arg(long, default_value_t = 0)]
    pub max_errors: u64,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 10ms)"))
}

fn ser_duration<S: serde::Serializer>(
    d: &Option<std::time::Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&humantime::format_duration(*d).to_string()),
        None => s.serialize_none(),
    }
}

/// `heartbeat` options.
#[derive(Debug, Clone, Args, Serialize)]
pub struct HeartbeatArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Seconds between one session's pings (session starts are staggered over one interval).
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Open and close sessions along stages instead of holding --sessions, e.g.
    /// "10s:1000,30s:5000,10s:0": the count ramps linearly from 0 through each target.
    /// Replaces --sessions, --warmup and --duration (the whole plan is measured).
    #[arg(long, value_name = "DUR:SESSIONS,...")]
    pub stages: Option<Stages>,
}

/// `churn` options.
#[derive(Debug, Clone, Args, Serialize)]
pub struct ChurnArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Prove each handshake was accepted: ping after the ack and require the pong.
    #[arg(long)]
    pub verify: bool,
}

/// `fanout` options.
#[derive(Debug, Clone, Args, Serialize)]
pub struct FanoutArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Messages per second the sender sends.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Content bytes per message (at least 16: sequence number and send time; with
    /// --rooms at least 24: and the room).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Rooms: session i asks for the "rooms" feature and joins room `r{i % N}` during
    /// setup; the first member of each room sends --rate messages per second to it,
    /// the others receive. 0: no rooms, every session in the lobby, session 0 sends.
    #[arg(long, default_value_t = 0)]
    pub rooms: usize,
    /// Further server nodes (a cluster): member j of every room connects to node
    /// j % (1 + count), node 0 being --tcp/--unix, so each room spans every node.
    #[arg(long, value_delimiter = ',', value_name = "unix:PATH|tcp:ADDR,...")]
    pub targets: Vec<Target>,
    /// No protocol, against `loadgen raw-server --fanout`: connection 0 sends --size
    /// byte payloads (sequence number, send time, a fixed pattern), every other
    /// connection reads them; the raw floor of the framed fan-out (no --rooms,
    /// --targets or --shard).
    #[arg(long)]
    pub raw: bool,
    /// With --raw: payloads as long as the frame sockchat-server delivers to a rooms
    /// member for N bytes of content (computed with sockchat-proto's encoder), instead
    /// of --size.
    #[arg(long, value_name = "N", requires = "raw")]
    pub size_as_delivery_of: Option<usize>,
}

/// `raw-echo` options.
#[derive(Debug, Clone, Args, Serialize)]
pub struct RawEchoArgs {
    /// Common options (--key-file is ignored).
    #[command(flatten)]
    pub common: CommonArgs,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
}

/// `raw-churn` options.
#[derive(Debug, Clone, Args, Serialize)]
pub struct RawChurnArgs {
    /// Common options (--key-file is ignored).
    #[command(flatten)]
    pub common: CommonArgs,
    /// Prove each connection was accepted: one byte out, the same byte back.
    #[arg(long, conflicts_with = "handshake")]
    pub verify: bool,
    /// Move the bytes of a `churn` cycle against `raw-server --handshake` with the same
    /// value: read INIT bytes, write ACK bytes, write DISCONNECT bytes, wait for the
    /// server's close (the like-for-like baseline of `churn`). `sockchat`: the lengths
    /// sockchat-proto's own sessions produce.
    #[arg(long, value_name = "sockchat|INIT,ACK,DISCONNECT")]
    pub handshake: Option<crate::scenarios::churn::HandshakeWire>,
}

/// `raw-server` options.
#[derive(Debug, Clone, Args, Serialize)]
pub struct RawServerArgs {
    /// Where to listen.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Worker threads (one runtime and accept loop each); default: all cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Pin worker threads to these CPUs, round robin.
    #[arg(long, value_delimiter = ',', value_name = "CPU,...")]
    pub cpus: Vec<usize>,
    /// io_uring setup of the workers (plain: monoio's default, as sockchat-server).
    #[arg(long, value_enum, default_value_t = RingMode::Plain)]
    pub ring: RingMode,
    /// Echo implementation: monoio (the baseline), compio, or ring (monoio plus an own
    /// io_uring data ring with provided buffers and multishot operations).
    #[arg(long, value_enum, default_value_t = crate::raw_server::Engine::Monoio)]
    pub engine: crate::raw_server::Engine,
    /// Forward every byte a connection sends to every other connection instead of
    /// echoing it (the raw fan-out floor that `fanout --raw` measures). Needs
    /// `--engine ring` and one worker (--threads 1, the default with --fanout).
    #[arg(long)]
    pub fanout: bool,
    /// Play sockchat-server's side of a `churn` cycle instead of echoing, bytes only:
    /// send INIT bytes on accept, read ACK + DISCONNECT bytes, close (monoio engine; for
    /// `raw-churn --handshake` with the same value; `sockchat`: the lengths sockchat-proto's
    /// own sessions produce).
    #[arg(
        long,
        value_name = "sockchat|INIT,ACK,DISCONNECT",
        conflicts_with = "fanout"
    )]
    pub handshake: Option<crate::scenarios::churn::HandshakeWire>,
}

/// `report` options.
#[derive(Debug, Clone, Args, Serialize)]
pub struct ReportArgs {
    /// JSON reports written with --json.
    #[arg(required = true, value_name = "RUN.json")]
    pub runs: Vec<PathBuf>,
    /// Output directory (created): README.md, latency.svg, throughput.svg.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `compare` options.
#[derive(Debug, Clone, Args, Serialize)]
#[command(after_help = crate::compare::METRICS_HELP)]
pub struct CompareArgs {
    /// The baseline run.
    pub base: PathBuf,
    /// The new run.
    pub new: PathBuf,
    /// Largest tolerated regression of any compared metric, in percent.
    #[arg(long, default_value_t = 5.0)]
    pub max_regression: f64,
    /// Ratio files (bench-results/baseline.json): throughput ratios are gated only for
    /// cases during which other processes used less than this percent of the CPUs.
    #[arg(long, default_value_t = 5.0)]
    pub busy_threshold: f64,
}

/// `merge` options.
#[derive(Debug, Clone, Args, Serialize)]
pub struct MergeArgs {
    /// The workers' JSON reports (written with --json).
    #[arg(required = true, value_name = "RUN.json")]
    pub runs: Vec<PathBuf>,
    /// Write the merged report here.
    #[arg(long, value_name = "OUT.json")]
    pub json: PathBuf,
    /// Name of the merged run in reports (default: scenario, transport, "merged").
    #[arg(long)]
    pub label: Option<String>,
}
