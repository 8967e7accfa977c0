//! The real `sockchat-server` binary, started by a test in its own temp dir.
//!
//! A test of this crate cannot name another package's binary (`CARGO_BIN_EXE_*` covers
//! only its own), so the binary is looked up next to the test executable
//! (`target/<profile>/sockchat-server`) after one `cargo build -p sockchat-server` per
//! test process, which is a no-op when it is up to date (same approach as the client
//! crate's tests).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use loadgen::conn::Target;

/// `target/<profile>`, the directory holding this test's binaries.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// The server binary, built once per test process.
pub fn server_binary() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = profile_dir();
        let bin = dir.join("sockchat-server");
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
        if bin.exists() {
            Ok(bin)
        } else {
            Err(format!("{} missing after build", bin.display()))
        }
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A running server on `127.0.0.1:<free port>` and a Unix socket in its own temp dir.
/// Dropping it sends SIGTERM (by pid) and waits for the exit, with SIGKILL after 10 s.
pub struct RealServer {
    child: Child,
    /// The TCP listener.
    pub tcp: SocketAddr,
    /// The Unix socket.
    pub unix: PathBuf,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl RealServer {
    /// Starts `sockchat-server --tcp 127.0.0.1:0 --unix DIR/s.sock --cores 1 EXTRA...`
    /// and waits for its `ready` line.
    pub fn start(extra: &[&str]) -> RealServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let unix = dir.path().join("s.sock");
        let mut child = Command::new(server_binary())
            .args(["--tcp", "127.0.0.1:0", "--unix"])
            .arg(&unix)
            .args(["--cores", "1"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Its log would drown the test output; a failing test prints it.
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sockchat-server");
        let stdout = child.stdout.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        {
            let (log, mut stderr) = (log.clone(), child.stderr.take().unwrap());
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = stderr.read_to_string(&mut s);
                log.lock().unwrap().push_str(&s);
            });
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let mut tcp = None;
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening tcp ") {
                        tcp = Some(a.trim().parse().expect("listening tcp ADDR"));
                    }
                    let ready = line.trim() == "ready";
                    lines.push(line);
                    if ready {
                        break;
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    let log = log.lock().unwrap().clone();
                    panic!("sockchat-server not ready ({e:?}, {status:?}); said {lines:?}\n{log}");
                }
            }
        }
        RealServer {
            child,
            tcp: tcp.unwrap_or_else(|| panic!("no `listening tcp` line: {lines:?}")),
            unix,
            log,
            _dir: dir,
        }
    }

    /// The listener for `transport` ("tcp" or "unix").
    pub fn target(&self, transport: &str) -> Target {
        match transport {
            "tcp" => Target::Tcp(self.tcp),
            "unix" => Target::Unix(self.unix.clone()),
            other => panic!("unknown transport {other}"),
        }
    }

    /// SIGTERM by pid, then wait (bounded; SIGKILL past `limit`).
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        if let Ok(Some(s)) = self.child.try_wait() {
            return Some(s);
        }
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        let status = self.terminate(Duration::from_secs(10));
        if std::thread::panicking() {
            // The stderr reader finishes once the server has exited.
            std::thread::sleep(Duration::from_millis(50));
            eprintln!(
                "sockchat-server exit {status:?}; log:\n{}",
                self.log.lock().unwrap()
            );
        }
    }
}
