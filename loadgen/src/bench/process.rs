//! The processes a benchmark starts: servers (pinned with `taskset`, ready once they print
//! their readiness line, stopped by PID), loadgen runs (pinned, bounded in time, their
//! JSON report read back with loadgen's own [`Report`] type) and the HMAC baseline.
//! Only processes started here are ever signalled, and only by their PID.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::meter::Meter;
use super::BenchError;
use crate::report::Report;

/// Seconds a server has to print its readiness line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Seconds a server has to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// A loadgen run may take this much longer than its warm-up plus measured window.
const LOADGEN_SLACK: Duration = Duration::from_secs(120);
/// Bound on the HMAC baseline run.
const HMAC_TIMEOUT: Duration = Duration::from_secs(60);
/// Polling step while waiting for a child with a deadline (std has no timed wait).
const POLL: Duration = Duration::from_millis(5);

/// Which output stream carries a server's readiness line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// sockchat-server: `listening ...` lines then `ready` on stdout.
    Stdout,
    /// loadgen raw-server: `raw-server listening on ...` on stderr.
    Stderr,
}

/// A server process started by the bench.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Its PID (taskset execs the server, so this is the server's own).
    pub pid: u32,
    /// Lines read up to readiness.
    pub lines: Vec<String>,
    /// loadgen's target options for it (`--tcp ADDR` / `--unix PATH`).
    pub target: [String; 2],
    /// Binary name, for messages.
    pub name: String,
    reader: Option<JoinHandle<()>>,
}

/// Waits for `child` to exit until `deadline`; `None` if it is still running.
fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

fn pinned(cpu: usize, argv: &[OsString]) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(cpu.to_string()).args(argv);
    cmd
}

impl Server {
    /// Starts `argv` pinned to `cpu`; returns once `ready` accepts a line of `stream`.
    /// Every line of that stream (before and after readiness) is copied to `log` by a
    /// thread, so the server never blocks on a full pipe; the other stream goes straight
    /// to `log`.
    pub fn start(
        argv: &[OsString],
        cpu: usize,
        stream: Stream,
        log: &Path,
        mut ready: impl FnMut(&str) -> bool,
    ) -> Result<Self, BenchError> {
        let name = Path::new(&argv[0])
            .file_name()
            .map_or_else(|| "server".into(), |n| n.to_string_lossy().into_owned());
        let open_log = || {
            File::options()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| BenchError::io(log, e))
        };
        let mut cmd = pinned(cpu, argv);
        // Its own process group: a Ctrl-C at the terminal reaches the bench, which then
        // stops the server by PID, rather than racing it.
        cmd.process_group(0).stdin(Stdio::null());
        match stream {
            Stream::Stdout => cmd.stdout(Stdio::piped()).stderr(open_log()?),
            Stream::Stderr => cmd.stdout(Stdio::null()).stderr(Stdio::piped()),
        };
        let mut child = cmd.spawn().map_err(|e| BenchError::spawn(&name, e))?;
        let pid = child.id();
        let pipe: Box<dyn Read + Send> = match stream {
            Stream::Stdout => Box::new(child.stdout.take().expect("piped")),
            Stream::Stderr => Box::new(child.stderr.take().expect("piped")),
        };
        let mut log_file = open_log()?;
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                let _ = writeln!(log_file, "{line}");
                // After readiness nobody listens: the send fails and the copy goes on.
                let _ = tx.send(line);
            }
        });
        let mut srv = Self {
            child,
            pid,
            lines: Vec::new(),
            target: [String::new(), String::new()],
            name,
            reader: Some(reader),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let done = ready(&line);
                    srv.lines.push(line);
                    if done {
                        return Ok(srv);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = srv.stop();
                    return Err(BenchError::NotReady(srv.name.clone(), srv.lines.clone()));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = srv.stop();
                    return Err(BenchError::ExitedEarly(srv.name.clone(), srv.lines.clone()));
                }
            }
        }
    }

    /// SIGTERM, up to 10 s to exit, then SIGKILL; only this process, by PID. Returns
    /// the exit status.
    pub fn stop(&mut self) -> Result<ExitStatus, BenchError> {
        let io = |e| BenchError::spawn(&self.name, e);
        let status = match self.child.try_wait().map_err(io)? {
            Some(st) => st,
            None => {
                // SAFETY: kill(2) with a PID of a child we spawned and have not reaped
                // (try_wait just returned None), so the PID cannot have been reused.
                unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
                match wait_until(&mut self.child, Instant::now() + STOP_TIMEOUT).map_err(io)? {
                    Some(st) => st,
                    None => {
                        let _ = self.child.kill();
                        self.child.wait().map_err(io)?
                    }
                }
            }
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Ok(status)
    }

    /// VmRSS in KiB, from `/proc/PID/status`.
    pub fn rss_kib(&self) -> Result<u64, BenchError> {
        let path = PathBuf::from(format!("/proc/{}/status", self.pid));
        let text = std::fs::read_to_string(&path).map_err(|e| BenchError::io(&path, e))?;
        text.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| BenchError::Suite(format!("no VmRSS in {}", path.display())))
    }

    /// Open file descriptors, from `/proc/PID/fd`.
    pub fn fds(&self) -> Result<usize, BenchError> {
        let path = PathBuf::from(format!("/proc/{}/fd", self.pid));
        Ok(std::fs::read_dir(&path)
            .map_err(|e| BenchError::io(&path, e))?
            .count())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Error paths drop servers without stop(): never leave one running.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.stop();
        }
    }
}

/// One loadgen run as the bench saw it.
#[derive(Debug, Clone)]
pub struct LoadRun {
    /// The run's JSON report, read with loadgen's own type.
    pub report: Report,
    /// Where it was written.
    pub path: PathBuf,
    /// CPU used by other processes during the run, percent of the machine.
    pub other_cpu_pct: Option<f64>,
    /// The command, with the listener shown as `127.0.0.1:PORT` / `SOCK`.
    pub command: String,
    /// loadgen's exit code (0: every session established, no error).
    pub exit_code: Option<i32>,
}

/// What a loadgen invocation needs besides its scenario options.
#[derive(Debug, Clone)]
pub struct LoadSpec<'a> {
    /// Scenario subcommand.
    pub scenario: &'a str,
    /// Scenario options.
    pub args: &'a [String],
    /// Report label.
    pub label: &'a str,
    /// Warm-up seconds.
    pub warmup: f64,
    /// Measured seconds.
    pub duration: f64,
    /// Pass `--server-pid` (server CPU per message).
    pub server_pid: bool,
}

/// The target options as shown in reports (the port or socket path changes every run).
pub fn display_target(target: &[String; 2]) -> [&'static str; 2] {
    if target[0] == "--tcp" {
        ["--tcp", "127.0.0.1:PORT"]
    } else {
        ["--unix", "SOCK"]
    }
}

/// The loadgen argv of `spec` against `srv`, writing its report to `json`.
pub fn loadgen_argv(
    loadgen: &Path,
    spec: &LoadSpec<'_>,
    srv: &Server,
    cpu: usize,
    json: &Path,
) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![loadgen.into(), spec.scenario.into()];
    v.extend(srv.target.iter().map(OsString::from));
    v.extend(spec.args.iter().map(OsString::from));
    for (k, val) in [
        ("--threads", "1".to_string()),
        ("--cpus", cpu.to_string()),
        ("--warmup", spec.warmup.to_string()),
        ("--duration", spec.duration.to_string()),
    ] {
        v.push(k.into());
        v.push(val.into());
    }
    v.push("--quiet".into());
    if spec.server_pid {
        v.push("--server-pid".into());
        v.push(srv.pid.to_string().into());
    }
    v.extend([
        "--label".into(),
        spec.label.into(),
        "--json".into(),
        json.into(),
    ]);
    v
}

/// Starts loadgen pinned to `cpu` (not waiting for it).
pub fn spawn_loadgen(argv: &[OsString], cpu: usize, out: &Path) -> Result<Child, BenchError> {
    let log = File::create(out).map_err(|e| BenchError::io(out, e))?;
    let log2 = log.try_clone().map_err(|e| BenchError::io(out, e))?;
    pinned(cpu, argv)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| BenchError::spawn("loadgen", e))
}

/// Waits for a loadgen started by [`spawn_loadgen`] (killing it past `budget`) and reads
/// its report.
pub fn finish_loadgen(
    mut child: Child,
    budget: Duration,
    json: &Path,
    out: &Path,
    scenario: &str,
) -> Result<(Report, Option<i32>), BenchError> {
    let io = |e| BenchError::spawn("loadgen", e);
    let status = match wait_until(&mut child, Instant::now() + budget).map_err(io)? {
        Some(st) => st,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BenchError::Timeout(format!(
                "loadgen {scenario} ran past {} s",
                budget.as_secs()
            )));
        }
    };
    if !json.exists() {
        return Err(BenchError::NoReport {
            scenario: scenario.into(),
            code: status.code(),
            output: std::fs::read_to_string(out).unwrap_or_default(),
        });
    }
    Ok((Report::read(json)?, status.code()))
}

/// Runs loadgen to completion against `srv`, measuring other processes' CPU meanwhile.
pub fn run_loadgen(
    loadgen: &Path,
    spec: &LoadSpec<'_>,
    srv: &Server,
    cpu: usize,
    json: &Path,
) -> Result<LoadRun, BenchError> {
    let argv = loadgen_argv(loadgen, spec, srv, cpu, json);
    let out = json.with_extension("out");
    let meter = Meter::start(srv.pid);
    let child = spawn_loadgen(&argv, cpu, &out)?;
    let budget = Duration::from_secs_f64(spec.warmup + spec.duration) + LOADGEN_SLACK;
    let (report, exit_code) = finish_loadgen(child, budget, json, &out, spec.scenario)?;
    let other_cpu_pct = meter.other_cpu_pct();
    let mut command = vec!["loadgen", spec.scenario];
    command.extend(display_target(&srv.target));
    command.extend(spec.args.iter().map(String::as_str));
    Ok(LoadRun {
        report,
        path: json.to_path_buf(),
        other_cpu_pct,
        command: command.join(" "),
        exit_code,
    })
}

/// The HMAC baseline's output (`proto/examples/hmac_throughput.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
pub struct HmacRun {
    /// Bytes signed per second.
    pub bytes_per_sec: u64,
    /// Buffer signed per call.
    pub buffer_bytes: u64,
    /// Calls made.
    pub signs: u64,
    /// Seconds measured.
    pub seconds: f64,
}

/// Runs the HMAC throughput example pinned to `cpu` for `seconds`; its stdout goes to
/// `out` (a file, so the wait below bounds the whole run).
pub fn run_hmac(bin: &Path, cpu: usize, seconds: f64, out: &Path) -> Result<HmacRun, BenchError> {
    let argv = [bin.as_os_str().to_owned(), seconds.to_string().into()];
    let text = run_to_file("hmac_throughput", &argv, cpu, out)?;
    serde_json::from_str(&text).map_err(|source| BenchError::Json {
        what: "hmac_throughput output".into(),
        source,
    })
}

/// Runs `argv` pinned to `cpu` with its stdout in `out` (a file, so the bounded wait
/// bounds the whole run; stderr passes through) and returns what it printed.
fn run_to_file(
    name: &str,
    argv: &[OsString],
    cpu: usize,
    out: &Path,
) -> Result<String, BenchError> {
    let log = File::create(out).map_err(|e| BenchError::io(out, e))?;
    let io = |e| BenchError::spawn(name, e);
    let mut child = pinned(cpu, argv)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(io)?;
    match wait_until(&mut child, Instant::now() + HMAC_TIMEOUT).map_err(io)? {
        Some(st) if st.success() => {}
        Some(st) => return Err(BenchError::Timeout(format!("{name} failed: {st}"))),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BenchError::Timeout(format!(
                "{name} ran past {} s",
                HMAC_TIMEOUT.as_secs()
            )));
        }
    }
    std::fs::read_to_string(out).map_err(|e| BenchError::io(out, e))
}

/// The one-HMAC floor of a chat delivery (`server/examples/hmac_floor.rs`): one
/// HMAC-SHA256 over a rooms recipient's header JSON plus the content.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
pub struct HmacFloorRun {
    /// Nanoseconds per HMAC.
    pub ns: f64,
    /// Header JSON bytes signed with the content.
    pub header_json_bytes: u64,
    /// Content bytes.
    pub content_bytes: u64,
}

/// Runs the HMAC floor example pinned to `cpu` for `content` bytes of content.
pub fn run_hmac_floor(
    bin: &Path,
    cpu: usize,
    content: usize,
    out: &Path,
) -> Result<HmacFloorRun, BenchError> {
    let argv = [bin.as_os_str().to_owned(), content.to_string().into()];
    let text = run_to_file("hmac_floor", &argv, cpu, out)?;
    let field = |k: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| BenchError::Suite(format!("hmac_floor printed no {k}: {text}")))
    };
    Ok(HmacFloorRun {
        ns: field("hmac_floor_ns")?,
        header_json_bytes: field("header_json_bytes")? as u64,
        content_bytes: field("content_bytes")? as u64,
    })
}

/// A NATS broker (`nats-server`) the bench started for a cluster case: on a free
/// loopback port, stopped by PID.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
}

/// Where `nats-server` is (the Debian package puts it in /usr/sbin).
fn nats_binary() -> Result<PathBuf, BenchError> {
    [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .ok_or_else(|| BenchError::Suite("nats-server not found (apt-get install nats-server)".into()))
}

impl Broker {
    /// Starts a broker pinned to `cpu` and waits (bounded) until it accepts connections.
    pub fn start(cpu: usize, log: &Path) -> Result<Self, BenchError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| BenchError::spawn("free port", e))?
            .port();
        let argv: Vec<OsString> = vec![
            nats_binary()?.into(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string().into(),
        ];
        let out = File::create(log).map_err(|e| BenchError::io(log, e))?;
        let child = pinned(cpu, &argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .map_err(|e| BenchError::spawn("nats-server", e))?;
        let mut b = Broker {
            child,
            url: format!("nats://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= deadline {
                b.stop();
                return Err(BenchError::NotReady("nats-server".into(), Vec::new()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(b)
    }

    /// SIGTERM, then SIGKILL after 5 s; only this process, by PID.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on our own child's PID, not yet reaped (try_wait just
            // returned None), so the PID is still its.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            if !matches!(
                wait_until(&mut self.child, Instant::now() + Duration::from_secs(5)),
                Ok(Some(_))
            ) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}
