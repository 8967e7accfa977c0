//! The real `sockchat-server` binary, started by a test in a temp dir of its own: it
//! listens on `127.0.0.1:0` and `DIR/sockchat.sock` by default, with one core; its stdout
//! is read for `listening ...` and `ready`, its stderr goes to a log file shown when a
//! test fails. It is stopped by PID: SIGTERM on request, SIGKILL and reap from `Drop`.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use sockchat_os::Stream;
use sockchat_proto::Key;

use crate::client::Client;
use crate::procfs::status_kib;
use crate::transport::Transport;
use crate::{EXIT, LONG, SHORT, STARTUP};

/// `target/<profile>`, the directory holding the running test's binaries.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// The `sockchat-server` binary, found or built once per test process.
///
/// A test cannot name another package's binary (`CARGO_BIN_EXE_*` covers only its own),
/// so the binary is looked up next to the test executable (`target/<profile>/`). The
/// server's own tests find it there, built by cargo for them (`CARGO_PKG_NAME`, set by
/// `cargo test`, says whose tests run); any other test runs `cargo build -p
/// sockchat-server` first, a no-op when it is up to date.
pub fn server_binary() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = profile_dir();
        let bin = dir.join("sockchat-server");
        let own_tests = std::env::var_os("CARGO_PKG_NAME").is_some_and(|n| n == "sockchat-server");
        if !(own_tests && bin.exists()) {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--quiet", "-p", "sockchat-server"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .env("CARGO_TARGET_DIR", dir.parent().expect("target dir"));
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().map_err(|e| format!("running cargo: {e}"))?;
            if !status.success() {
                return Err(format!("cargo build -p sockchat-server failed: {status}"));
            }
        }
        if bin.exists() {
            Ok(bin)
        } else {
            Err(format!("{} missing after build", bin.display()))
        }
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

/// How to start a server.
#[derive(Debug)]
pub struct ServerBuilder {
    binary: PathBuf,
    args: Vec<OsString>,
    tcp: Option<String>,
    unix: bool,
    unix_path: Option<PathBuf>,
    cores: Option<u32>,
    env: Vec<(OsString, OsString)>,
    dir: Option<tempfile::TempDir>,
}

impl ServerBuilder {
    /// One extra argument.
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Several extra arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `--cores N` (default 1).
    pub fn cores(mut self, n: u32) -> Self {
        self.cores = Some(n);
        self
    }

    /// Without the default `--tcp 127.0.0.1:0`.
    pub fn no_tcp(mut self) -> Self {
        self.tcp = None;
        self
    }

    /// Listen on this TCP address instead of `127.0.0.1:0` (e.g. the port of a server
    /// this one replaces).
    pub fn tcp_addr(mut self, addr: impl Into<String>) -> Self {
        self.tcp = Some(addr.into());
        self
    }

    /// Without the default `--unix DIR/sockchat.sock`.
    pub fn no_unix(mut self) -> Self {
        self.unix = false;
        self
    }

    /// Listen on this Unix path instead of one in the server's temp dir.
    pub fn unix_path(mut self, p: impl Into<PathBuf>) -> Self {
        self.unix_path = Some(p.into());
        self
    }

    /// Use this temp dir (e.g. one holding a key file made before the server).
    pub fn dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// An environment variable for the server.
    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    fn spawn(self) -> Server {
        let dir = match self.dir {
            Some(d) => d,
            None => tempfile::Builder::new()
                .prefix("sockchat-test-")
                .tempdir()
                .expect("temp dir"),
        };
        let stderr_path = dir.path().join("server-stderr.log");
        let stderr = File::create(&stderr_path).expect("stderr log file");
        let mut cmd = Command::new(&self.binary);
        if let Some(addr) = &self.tcp {
            cmd.arg("--tcp").arg(addr);
        }
        let unix_path = if self.unix {
            let p = self
                .unix_path
                .unwrap_or_else(|| dir.path().join("sockchat.sock"));
            cmd.arg("--unix").arg(&p);
            Some(p)
        } else {
            None
        };
        cmd.arg("--cores").arg(self.cores.unwrap_or(1).to_string());
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        // Plain logs in the stderr file (tracing-subscriber honours NO_COLOR).
        cmd.env("NO_COLOR", "1");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = cmd.spawn().expect("spawn sockchat-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Drains stdout for the child's whole life so it never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more; keep draining.
                    continue;
                }
            }
        });
        Server {
            child,
            dir,
            tcp: None,
            unix: None,
            tcp_all: Vec::new(),
            unix_all: Vec::new(),
            admin: None,
            configured_unix: unix_path,
            stderr_path,
            stdout: rx,
            stdout_seen: Vec::new(),
            status: None,
        }
    }

    /// Starts the server and waits for `ready`; panics (with its stderr) if it does not
    /// get there.
    pub fn start(self) -> Server {
        let want_tcp = self.tcp.is_some();
        let want_unix = self.unix;
        let mut server = self.spawn();
        if let Err(e) = server.wait_ready(STARTUP) {
            panic!("server did not become ready: {e}\n{}", server.diagnostics());
        }
        if want_tcp {
            assert!(
                server.tcp.is_some(),
                "no `listening tcp` line before `ready`\n{}",
                server.diagnostics()
            );
        }
        if want_unix {
            assert!(
                server.unix.is_some(),
                "no `listening unix` line before `ready`\n{}",
                server.diagnostics()
            );
        }
        server
    }

    /// Starts the server expecting it to fail at startup: returns its exit status and
    /// stderr. Panics if it prints `ready` or does not exit in time.
    pub fn start_expect_failure(self) -> (ExitStatus, String, Server) {
        let mut server = self.spawn();
        match server.wait_ready(STARTUP) {
            Ok(()) => panic!(
                "server became ready but was expected to fail\n{}",
                server.diagnostics()
            ),
            Err(_) => {
                let status = server.wait_exit(EXIT).unwrap_or_else(|| {
                    panic!("server neither ready nor exited\n{}", server.diagnostics())
                });
                let stderr = server.stderr();
                (status, stderr, server)
            }
        }
    }
}

/// A running (or exited) server child process, with its own temp dir.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// The server's private temp dir (Unix socket, stderr log, key files).
    pub dir: tempfile::TempDir,
    /// Address from the first `listening tcp` line.
    pub tcp: Option<SocketAddr>,
    /// Path from the first `listening unix` line.
    pub unix: Option<PathBuf>,
    /// Every `listening tcp` address, in order.
    pub tcp_all: Vec<SocketAddr>,
    /// Every `listening unix` path, in order.
    pub unix_all: Vec<PathBuf>,
    /// Address from the `listening admin` line (with `--admin`).
    pub admin: Option<SocketAddr>,
    configured_unix: Option<PathBuf>,
    stderr_path: PathBuf,
    stdout: Receiver<String>,
    stdout_seen: Vec<String>,
    status: Option<ExitStatus>,
}

impl Server {
    /// Defaults: `--tcp 127.0.0.1:0`, `--unix TMPDIR/sockchat.sock`, `--cores 1`; the
    /// binary from [`server_binary`].
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            binary: server_binary(),
            args: Vec::new(),
            tcp: Some("127.0.0.1:0".into()),
            unix: true,
            unix_path: None,
            cores: None,
            env: Vec::new(),
            dir: None,
        }
    }

    /// A default echo server.
    pub fn start() -> Server {
        Self::builder().start()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no `ready` within {timeout:?}"));
            }
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    self.stdout_seen.push(line.clone());
                    let line = line.trim();
                    if line == "ready" {
                        return Ok(());
                    }
                    if let Some(addr) = line.strip_prefix("listening tcp ") {
                        let addr: SocketAddr = addr
                            .trim()
                            .parse()
                            .map_err(|e| format!("bad address in {line:?}: {e}"))?;
                        self.tcp.get_or_insert(addr);
                        self.tcp_all.push(addr);
                    } else if let Some(addr) = line.strip_prefix("listening admin ") {
                        let addr: SocketAddr = addr
                            .trim()
                            .parse()
                            .map_err(|e| format!("bad address in {line:?}: {e}"))?;
                        self.admin = Some(addr);
                    } else if let Some(path) = line.strip_prefix("listening unix ") {
                        let path = PathBuf::from(path.trim());
                        self.unix.get_or_insert_with(|| path.clone());
                        self.unix_all.push(path);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("no `ready` within {timeout:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err("stdout closed before `ready`".into())
                }
            }
        }
    }

    /// The configured Unix socket path (known even before the server prints it).
    pub fn configured_unix_path(&self) -> Option<&Path> {
        self.configured_unix.as_deref()
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Stdout lines and the tail of stderr, for failure messages.
    pub fn diagnostics(&self) -> String {
        let err = self.stderr();
        let tail = if err.len() > 6000 {
            let mut cut = err.len() - 6000;
            while !err.is_char_boundary(cut) {
                cut += 1;
            }
            &err[cut..]
        } else {
            &err[..]
        };
        format!(
            "--- server stdout ---\n{}\n--- server stderr (tail) ---\n{tail}",
            self.stdout_seen.join("\n")
        )
    }

    /// Sends `sig` to this child only (by PID), unless it has been reaped.
    pub fn signal(&mut self, sig: libc::c_int) {
        if self.status.is_some() {
            return;
        }
        if let Ok(Some(st)) = self.child.try_wait() {
            self.status = Some(st);
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's PID, which has not been reaped (checked above),
        // so the PID cannot have been reused.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    /// Waits up to `timeout` for the child to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.status {
            return Some(st);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => {
                    self.status = Some(st);
                    return Some(st);
                }
                Ok(None) => {}
                Err(e) => panic!("waitpid: {e}"),
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Poll interval of the bounded wait for the exit.
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// True while the child has not exited.
    pub fn is_running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(st)) => {
                self.status = Some(st);
                false
            }
            _ => true,
        }
    }

    /// SIGTERM, then waits for the exit; panics if it does not exit within [`EXIT`].
    pub fn terminate(&mut self) -> ExitStatus {
        self.terminate_within(EXIT)
    }

    /// SIGTERM, then waits for the exit; panics if it does not exit within `timeout`.
    pub fn terminate_within(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        match self.wait_exit(timeout) {
            Some(st) => st,
            None => panic!(
                "server did not exit within {timeout:?} of SIGTERM\n{}",
                self.diagnostics()
            ),
        }
    }

    /// SIGTERM and asserts a clean exit (status 0).
    pub fn stop_clean(&mut self) {
        let st = self.terminate();
        assert!(
            st.success(),
            "server exited with {st} after SIGTERM\n{}",
            self.diagnostics()
        );
    }

    /// Connects without any handshake.
    pub fn connect_raw(&self, t: Transport) -> Stream {
        let s = match t {
            Transport::Tcp => {
                let addr = self.tcp.expect("server has no TCP listener");
                let s = TcpStream::connect_timeout(&addr, SHORT)
                    .unwrap_or_else(|e| panic!("connect tcp {addr}: {e}"));
                s.set_nodelay(true).expect("nodelay");
                Stream::Tcp(s)
            }
            Transport::Unix => {
                let p = self.unix.as_ref().expect("server has no Unix listener");
                Stream::Unix(
                    UnixStream::connect(p)
                        .unwrap_or_else(|e| panic!("connect unix {}: {e}", p.display())),
                )
            }
        };
        s.set_write_timeout(Some(LONG)).expect("write timeout");
        s
    }

    /// Connects and returns a client that has not read `session_init` yet.
    pub fn connect(&self, t: Transport) -> Client {
        Client::new(self.connect_raw(t), t, Key::reference_default())
    }

    /// Connects and completes the reference handshake (no features).
    pub fn handshake(&self, t: Transport) -> Client {
        let mut c = self.connect(t);
        c.handshake();
        c
    }

    /// Reads `VmRSS` and `VmHWM` (bytes) from /proc/PID/status; panics if they are gone.
    pub fn memory(&self) -> Memory {
        let pid = self.child.id();
        let field = |name: &str| -> u64 {
            status_kib(pid, name).unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
                * 1024
        };
        Memory {
            rss: field("VmRSS:"),
            hwm: field("VmHWM:"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.is_running() {
            // Only our own child, by PID: SIGKILL then reap.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
    }
}

/// Resident memory of the server.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Current resident set.
    pub rss: u64,
    /// Peak resident set.
    pub hwm: u64,
}

/// A fresh temp dir holding `key` (the secret) with permission bits `mode`; pass it to
/// [`ServerBuilder::dir`] and the path to `--key-file`.
pub fn key_file_dir(secret: &[u8], mode: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("sockchat-test-")
        .tempdir()
        .expect("temp dir");
    let path = dir.path().join("key");
    write_key_file(&path, secret, mode);
    (dir, path)
}

/// Writes `content` (one key per line, or one binary key) to the key file `path` with
/// permission bits `mode`, as an operator's tooling would: a file beside it renamed over
/// it, so a server reloading meanwhile never reads half a file.
pub fn write_key_file(path: &Path, content: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, content).expect("write key file");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).expect("chmod key");
    std::fs::rename(&tmp, path).expect("rename key file");
}
