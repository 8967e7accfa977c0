//! `loadgen probe`: what a server's data path looks like from outside, the evidence
//! issue 10 asks for: server RSS per idle connection (at 1,000 and 5,000 by default),
//! the requests armed in each of its io_uring instances with those connections idle
//! (`/proc/PID/fdinfo`: receives, or polls), and `strace -c -f` system calls per
//! message under echo load. It starts the server itself, pinned as `loadgen bench` pins
//! it: `sockchat-server --cores 1 --mode echo` or `loadgen raw-server --threads 1`
//! (`--server-arg` adds flags, e.g. `--engine ring --ring defer`), over a Unix socket.

pub mod rings;
pub mod strace;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::bench::cases::{Bench, Bins, RunSettings};
use crate::bench::process::{self, LoadSpec, Server};
use crate::bench::suite::{echo_frame_len, Build, Transport};
use crate::bench::BenchError;
use crate::machine::Machine;
use crate::report::Tool;
use rings::RingState;
use strace::SyscallCount;

/// Schema of [`ProbeReport`].
pub const SCHEMA: &str = "loadgen-probe/1";
/// Issue 10's bound on receive/send-family system calls per message under echo load.
pub const MAX_RECV_SEND_PER_MSG: f64 = 0.005;
/// Seconds between the last idle connection's acceptance and the reading.
const SETTLE: Duration = Duration::from_secs(1);

/// Which server the probe starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeServer {
    /// `sockchat-server --cores 1 --mode echo --session-timeout 5m`; idle connections
    /// are established sessions (handshake done) held by `loadgen heartbeat`.
    Sockchat,
    /// `loadgen raw-server --threads 1`; idle connections each echoed one byte first.
    Raw,
}

/// `probe` options.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Directory of the release binaries (sockchat-server, loadgen).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: PathBuf,
    /// The server to start and probe.
    #[arg(long, value_enum)]
    pub server: ProbeServer,
    /// A further server flag (repeat it: `--server-arg=--engine --server-arg=ring`).
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Idle connection counts (ascending, cumulative) at which RSS and the rings are read.
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 5000])]
    pub idle: Vec<usize>,
    /// Seconds of echo load (100 sessions, depth 16, 64 B content; raw: payloads of
    /// sockchat's frame length) traced by strace; 0 = no trace.
    #[arg(long, default_value_t = 3.0)]
    pub echo_seconds: f64,
    /// The strace binary.
    #[arg(long, default_value = "/usr/bin/strace", value_name = "PATH")]
    pub strace: PathBuf,
    /// CPU the server is pinned to.
    #[arg(long, default_value_t = 0)]
    pub server_cpu: usize,
    /// CPU loadgen is pinned to.
    #[arg(long, default_value_t = 1)]
    pub loadgen_cpu: usize,
    /// Write the report here as JSON.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// The server as probed at one number of idle connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdleLevel {
    /// Idle connections open (asked).
    pub connections: usize,
    /// Server descriptors then (the fewer of the reads around the RSS read).
    pub fds: usize,
    /// VmRSS then, KiB.
    pub rss_kib: u64,
    /// (RSS now − RSS before any idle connection) / connections.
    pub bytes_per_connection: f64,
    /// Every io_uring instance of the server then.
    pub rings: Vec<RingState>,
}

impl IdleLevel {
    /// Armed receive requests over all rings.
    pub fn pending_receives(&self) -> u64 {
        self.rings.iter().map(|r| r.pending_receives).sum()
    }

    /// Armed `POLL_ADD`s over all rings.
    pub fn pending_polls(&self) -> u64 {
        self.rings.iter().map(|r| r.pending_polls).sum()
    }
}

/// System calls under echo load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EchoTrace {
    /// The load, as run.
    pub command: String,
    /// Messages echoed in the measured window (loadgen's count: the drain's few are
    /// traced but not counted, so the per-message figures lean high).
    pub messages: u64,
    /// loadgen errors.
    pub errors: u64,
    /// strace's counts over the load.
    pub syscalls: SyscallCount,
    /// All system calls per message.
    pub syscalls_per_msg: f64,
    /// Receive/send-family calls per message.
    pub recv_send_per_msg: f64,
}

/// One target's standing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// What is checked.
    pub target: String,
    /// What was measured, in words.
    pub measured: String,
    /// Whether it holds.
    pub met: bool,
}

/// `loadgen probe`'s report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// [`SCHEMA`].
    pub schema: String,
    /// This loadgen.
    pub tool: Tool,
    /// Where it ran.
    pub machine: Machine,
    /// Which server.
    pub server: ProbeServer,
    /// Its extra flags.
    pub server_args: Vec<String>,
    /// VmRSS after warm-up, before any idle connection, KiB.
    pub rss_before_kib: u64,
    /// The server's io_uring instances then: what is armed without idle connections
    /// (listeners, wake-up polls), subtracted in the verdicts.
    pub rings_before: Vec<RingState>,
    /// Readings with idle connections.
    pub idle: Vec<IdleLevel>,
    /// The traced echo load (absent with `--echo-seconds 0`).
    pub echo: Option<EchoTrace>,
    /// Issue 10's targets.
    pub verdicts: Vec<Verdict>,
    /// Anything that makes a figure doubtful.
    pub problems: Vec<String>,
}

/// Runs the probe and prints its table.
pub fn run(a: &ProbeArgs) -> Result<ProbeReport, BenchError> {
    if a.idle.is_empty() || a.idle.windows(2).any(|w| w[0] >= w[1]) || a.idle[0] == 0 {
        return Err(BenchError::Suite(
            "--idle takes ascending positive counts".into(),
        ));
    }
    // Raw idle connections are held by this process.
    let _ = sockchat_os::raise_nofile_limit();
    let tmp = tempfile::Builder::new()
        .prefix("loadgen-probe-")
        .tempdir()
        .map_err(|e| BenchError::io(Path::new("/tmp"), e))?;
    let bins = Bins {
        server: a.bin_dir.join("sockchat-server"),
        loadgen: a.bin_dir.join("loadgen"),
        hmac: a.bin_dir.join("examples").join("hmac_throughput"),
        hmac_floor: a.bin_dir.join("examples").join("hmac_floor"),
        base_server: None,
    };
    let set = RunSettings {
        runs: 1,
        warmup: 0.5,
        duration: 1.0,
        hmac_seconds: 0.0,
        server_cpu: a.server_cpu,
        loadgen_cpu: a.loadgen_cpu,
        base_rev: String::new(),
    };
    let mut bench = Bench::new(bins, set, tmp.path());
    let srv = start(&mut bench, a)?;
    let res = probe(&mut bench, a, &srv, tmp.path());
    bench.stopped(srv)?;
    let mut report = res?;
    report.problems.extend(bench.problems);
    print!("{}", report.markdown());
    if let Some(path) = &a.json {
        crate::bench::doc::write_json(path, &report)?;
    }
    Ok(report)
}

fn start(bench: &mut Bench, a: &ProbeArgs) -> Result<Server, BenchError> {
    match a.server {
        ProbeServer::Sockchat => {
            let mut args = vec!["--session-timeout".to_string(), "5m".to_string()];
            args.extend(a.server_args.iter().cloned());
            bench.sockchat(Transport::Unix, "echo", &args, Build::This)
        }
        ProbeServer::Raw => bench.raw_server(Transport::Unix, &a.server_args),
    }
}

/// The echo load of this server kind: (scenario, options).
fn echo_load(server: ProbeServer, sessions: usize, depth: usize) -> (&'static str, Vec<String>) {
    let (scenario, size) = match server {
        ProbeServer::Sockchat => ("echo", 64),
        ProbeServer::Raw => ("raw-echo", echo_frame_len(64)),
    };
    let args = [
        "--sessions".to_string(),
        sessions.to_string(),
        "--depth".into(),
        depth.to_string(),
        "--size".into(),
        size.to_string(),
    ];
    (scenario, args.to_vec())
}

fn probe(
    bench: &mut Bench,
    a: &ProbeArgs,
    srv: &Server,
    tmp: &Path,
) -> Result<ProbeReport, BenchError> {
    // Warm-up: allocator arenas, runtime slabs and buffer pools reach their working
    // size before "before" is read.
    let (scenario, args) = echo_load(a.server, 200, 4);
    bench.loadgen(
        &LoadSpec {
            scenario,
            args: &args,
            label: "warmup",
            warmup: 0.5,
            duration: 1.0,
            server_pid: false,
        },
        srv,
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let (fds0, rss0) = (srv.fds()?, srv.rss_kib()?);
    let rings_before =
        rings::of_process(srv.pid).map_err(|e| BenchError::io(Path::new("/proc"), e))?;
    let mut problems = Vec::new();
    let idle = match a.server {
        ProbeServer::Raw => idle_raw(srv, &a.idle, fds0, rss0)?,
        ProbeServer::Sockchat => idle_sockchat(bench, a, srv, fds0, rss0, &mut problems)?,
    };
    for l in &idle {
        if l.fds < fds0 + l.connections {
            problems.push(format!(
                "at {} idle connections the server had {} descriptors, {fds0} before: not all were open at the reading",
                l.connections, l.fds
            ));
        }
    }
    let echo = if a.echo_seconds > 0.0 {
        Some(trace_echo(bench, a, srv, tmp)?)
    } else {
        None
    };
    let mut report = ProbeReport {
        schema: SCHEMA.into(),
        tool: Tool::current(),
        machine: Machine::detect(),
        server: a.server,
        server_args: a.server_args.clone(),
        rss_before_kib: rss0,
        rings_before,
        idle,
        echo,
        verdicts: Vec::new(),
        problems,
    };
    report.verdicts = report.judge();
    Ok(report)
}

/// Reads the server with `connections` idle connections open.
fn reading(
    srv: &Server,
    connections: usize,
    fds0: usize,
    rss0: u64,
) -> Result<IdleLevel, BenchError> {
    // Bounded wait until the server holds a descriptor per connection.
    let deadline = Instant::now() + Duration::from_secs(30);
    while srv.fds()? < fds0 + connections && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(SETTLE);
    let fds_a = srv.fds()?;
    let rss = srv.rss_kib()?;
    let rings = rings::of_process(srv.pid).map_err(|e| BenchError::io(Path::new("/proc"), e))?;
    let fds = fds_a.min(srv.fds()?);
    Ok(IdleLevel {
        connections,
        fds,
        rss_kib: rss,
        bytes_per_connection: (rss as f64 - rss0 as f64) * 1024.0 / connections as f64,
        rings,
    })
}

/// Raw server: this process opens the connections, each echoes one byte, then idles.
fn idle_raw(
    srv: &Server,
    levels: &[usize],
    fds0: usize,
    rss0: u64,
) -> Result<Vec<IdleLevel>, BenchError> {
    let path = PathBuf::from(&srv.target[1]);
    let io = |e| BenchError::io(&path, e);
    let mut conns: Vec<UnixStream> = Vec::new();
    let mut out = Vec::new();
    for &n in levels {
        let first = conns.len();
        while conns.len() < n {
            let mut s = UnixStream::connect(&path).map_err(io)?;
            s.write_all(b"x").map_err(io)?;
            conns.push(s);
        }
        for s in &mut conns[first..] {
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(io)?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).map_err(io)?;
            if b != *b"x" {
                return Err(BenchError::Suite("raw-server echoed another byte".into()));
            }
        }
        out.push(reading(srv, n, fds0, rss0)?);
    }
    Ok(out)
}

/// sockchat: one `loadgen heartbeat` per level adds the sessions up to it (handshake
/// done, then no traffic: the interval is longer than the hold), each holding its
/// sessions until every level is read.
fn idle_sockchat(
    bench: &mut Bench,
    a: &ProbeArgs,
    srv: &Server,
    fds0: usize,
    rss0: u64,
    problems: &mut Vec<String>,
) -> Result<Vec<IdleLevel>, BenchError> {
    let loadgen = a.bin_dir.join("loadgen");
    let mut children = Vec::new();
    let mut out = Vec::new();
    let mut held = 0;
    for (k, &n) in a.idle.iter().enumerate() {
        let add = n - held;
        // Held while the later levels are added and read (~3 s each, bounded by the
        // 30 s wait in `reading`).
        let hold = 4.0 + 4.0 * (a.idle.len() - k) as f64;
        let args: Vec<String> = [
            "--sessions",
            &add.to_string(),
            "--interval",
            "600",
            "--ramp",
            "5000",
        ]
        .map(String::from)
        .to_vec();
        let label = format!("idle-{n}");
        let spec = LoadSpec {
            scenario: "heartbeat",
            args: &args,
            label: &label,
            warmup: 0.0,
            duration: hold,
            server_pid: false,
        };
        let json = bench.path(&label, "json");
        let log = json.with_extension("out");
        let argv = process::loadgen_argv(&loadgen, &spec, srv, a.loadgen_cpu, &json);
        children.push((
            process::spawn_loadgen(&argv, a.loadgen_cpu, &log)?,
            json,
            log,
            add,
        ));
        held = n;
        out.push(reading(srv, n, fds0, rss0)?);
    }
    for (child, json, log, add) in children {
        let (report, code) =
            process::finish_loadgen(child, Duration::from_secs(120), &json, &log, "heartbeat")?;
        let r = &report.results;
        if code != Some(0) || (r.sessions_established as usize) < add {
            problems.push(format!(
                "idle heartbeat: loadgen exit {code:?}, {}/{add} sessions",
                r.sessions_established
            ));
        }
    }
    Ok(out)
}

/// Echo load with strace attached to the server.
fn trace_echo(
    bench: &mut Bench,
    a: &ProbeArgs,
    srv: &Server,
    tmp: &Path,
) -> Result<EchoTrace, BenchError> {
    let (scenario, args) = echo_load(a.server, 100, 16);
    let attached = strace::attach(&a.strace, srv.pid, tmp)?;
    let run = bench.loadgen(
        &LoadSpec {
            scenario,
            args: &args,
            label: "traced-echo",
            warmup: 0.0,
            duration: a.echo_seconds,
            server_pid: false,
        },
        srv,
    );
    let syscalls = attached.detach()?;
    let run = run?;
    let messages = run.report.results.messages;
    let per = |n: u64| n as f64 / messages.max(1) as f64;
    Ok(EchoTrace {
        command: run.command,
        messages,
        errors: run.report.results.errors_total,
        syscalls_per_msg: per(syscalls.total),
        recv_send_per_msg: per(syscalls.recv_send_family),
        syscalls,
    })
}

impl ProbeReport {
    /// Issue 10's targets against these figures.
    pub fn judge(&self) -> Vec<Verdict> {
        let mut v = Vec::new();
        if let Some(e) = &self.echo {
            v.push(Verdict {
                target: format!(
                    "under echo load, < {MAX_RECV_SEND_PER_MSG} receive/send-family system calls per message"
                ),
                measured: format!(
                    "{:.4} per message ({} calls, {} messages)",
                    e.recv_send_per_msg, e.syscalls.recv_send_family, e.messages
                ),
                met: e.messages > 0 && e.errors == 0 && e.recv_send_per_msg < MAX_RECV_SEND_PER_MSG,
            });
        }
        let before = |f: fn(&RingState) -> u64| self.rings_before.iter().map(f).sum::<u64>();
        let (receives0, polls0) = (before(|r| r.pending_receives), before(|r| r.pending_polls));
        for l in &self.idle {
            // What the idle connections added: one armed receive each, and no poll.
            let receives = l.pending_receives().saturating_sub(receives0);
            let polls = l.pending_polls().saturating_sub(polls0);
            v.push(Verdict {
                target: format!(
                    "{} idle connections: pending receive requests, not polls (fdinfo)",
                    l.connections
                ),
                measured: format!(
                    "{receives} receives and {polls} polls armed beyond the {receives0} and {polls0} armed with no idle connection"
                ),
                met: polls == 0 && receives >= l.connections as u64,
            });
        }
        v
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let args = if self.server_args.is_empty() {
            String::new()
        } else {
            format!(" {}", self.server_args.join(" "))
        };
        let _ = writeln!(
            s,
            "probe of {}{args} (loadgen {} {}; {} × {}, kernel {}); RSS {} KiB before any idle connection\n",
            match self.server {
                ProbeServer::Sockchat => "sockchat-server",
                ProbeServer::Raw => "loadgen raw-server",
            },
            self.tool.version,
            &self.tool.git_commit[..self.tool.git_commit.len().min(7)],
            self.machine.cores,
            self.machine.cpu_model,
            self.machine.kernel,
            self.rss_before_kib
        );
        let _ = writeln!(
            s,
            "| idle connections | RSS | per connection | armed in the rings (fdinfo) |"
        );
        let _ = writeln!(s, "| --- | --- | --- | --- |");
        for l in &self.idle {
            let armed: Vec<String> = l
                .rings
                .iter()
                .map(|r| {
                    let ops: Vec<String> =
                        r.pending.iter().map(|(k, n)| format!("{k}×{n}")).collect();
                    format!(
                        "fd {}: {}",
                        r.fd,
                        if ops.is_empty() {
                            "none".into()
                        } else {
                            ops.join(", ")
                        }
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} KiB | {:.0} B | {} |",
                l.connections,
                l.rss_kib,
                l.bytes_per_connection,
                if armed.is_empty() {
                    "no io_uring".into()
                } else {
                    armed.join("; ")
                }
            );
        }
        if let Some(e) = &self.echo {
            let mut top: Vec<(&String, &u64)> = e.syscalls.calls.iter().collect();
            top.sort_by(|x, y| y.1.cmp(x.1));
            let top: Vec<String> = top
                .iter()
                .take(6)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(
                s,
                "\n`{}`: {} messages, {} errors; {:.4} system calls per message, {:.4} of the receive/send family (strace -c -f; top: {})",
                e.command,
                e.messages,
                e.errors,
                e.syscalls_per_msg,
                e.recv_send_per_msg,
                top.join(", ")
            );
        }
        let _ = writeln!(s);
        for v in &self.verdicts {
            let _ = writeln!(
                s,
                "- {}: {} — {}",
                if v.met { "met" } else { "NOT met" },
                v.target,
                v.measured
            );
        }
        for p in &self.problems {
            let _ = writeln!(s, "- problem: {p}");
        }
        s
    }
}
