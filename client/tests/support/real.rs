//! The real `sockchat-server` binary, started for a test.
//!
//! A test of this crate cannot name another package's binary (`CARGO_BIN_EXE_*` covers
//! only its own), so the binary is looked up next to the test executable
//! (`target/<profile>/sockchat-server`) after one `cargo build -p sockchat-server` per
//! test process, which is a no-op when `cargo test --workspace` already built it.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sockchat_client::Addr;

/// `target/<profile>`, the directory holding this test's binaries.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// The server binary, built once per test process; `Err` if it cannot be built.
pub fn server_binary() -> Result<PathBuf, String> {
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
}

/// A running server; SIGKILLed (by pid) if a test leaves it running.
pub struct RealServer {
    child: Child,
    pub tcp: Addr,
    pub unix: Addr,
    pub lines: Vec<String>,
    log: Arc<Mutex<String>>,
}

/// Why a real server could not be had.
#[derive(Debug)]
pub enum Unavailable {
    /// The binary exists but exits before listening (not written yet).
    NotReady(String),
}

impl RealServer {
    /// Starts the server on `tcp` (e.g. `127.0.0.1:0`) and a Unix socket at `unix`, and
    /// waits for its `ready` line.
    pub fn start(tcp: &str, unix: &Path, extra: &[&str]) -> Result<RealServer, Unavailable> {
        let bin = server_binary().map_err(Unavailable::NotReady)?;
        let mut child = Command::new(&bin)
            .args(["--tcp", tcp, "--unix"])
            .arg(unix)
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
        let mut server = RealServer {
            child,
            tcp: Addr::Tcp(String::new()),
            unix: Addr::Unix(unix.to_path_buf()),
            lines: Vec::new(),
            log,
        };
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening tcp ") {
                        server.tcp = Addr::Tcp(a.trim().to_owned());
                    }
                    let ready = line.trim() == "ready";
                    server.lines.push(line);
                    if ready {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.child.wait().ok();
                    if server.lines.iter().any(|l| l.starts_with("listening")) {
                        panic!(
                            "server exited after listening, before ready: {status:?} {:?}",
                            server.lines
                        );
                    }
                    return Err(Unavailable::NotReady(format!(
                        "exited with {status:?} before listening; said {:?}",
                        server.lines
                    )));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("server not ready within 20 s; said {:?}", server.lines)
                }
            }
        }
        assert!(
            matches!(&server.tcp, Addr::Tcp(a) if !a.is_empty()),
            "no `listening tcp` line: {:?}",
            server.lines
        );
        Ok(server)
    }

    /// SIGTERM and wait for the exit (graceful shutdown).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < end,
                "server ignored SIGTERM for {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("server log:\n{}", self.log.lock().unwrap());
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A real server on `tcp` and `unix`; panics with the reason when it does not start.
pub fn real_server(tcp: &str, unix: &Path) -> RealServer {
    real_server_with(tcp, unix, &[])
}

/// [`real_server`] with extra command-line arguments.
pub fn real_server_with(tcp: &str, unix: &Path, extra: &[&str]) -> RealServer {
    match RealServer::start(tcp, unix, extra) {
        Ok(s) => s,
        Err(Unavailable::NotReady(why)) => panic!("sockchat-server did not start: {why}"),
    }
}
