//! Shared test helpers: the echo server double, the real server, a pseudo-terminal,
//! and running the client binary with a time limit.
#![allow(dead_code)]

pub mod double;
pub mod pty;
pub mod real;

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sockchat_client::Addr;

/// The client binary, pointed at `addr`, with fast retries for tests.
pub fn client(addr: &Addr) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockchat-client"));
    match addr {
        Addr::Tcp(a) => cmd.args(["--tcp", a]),
        Addr::Unix(p) => cmd.arg("--unix").arg(p),
    };
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to completion, killing it (by its pid) after `timeout`.
pub fn run(mut cmd: Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let end = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "client still running after {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&err_t.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Waits until `cond` holds (panics after `timeout`).
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A deterministic pseudo-random file body (xorshift), so echo checks are not fooled
/// by repeating patterns.
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A client running in the background whose output can be watched as it comes.
pub struct Running {
    child: std::process::Child,
    pub stdout: std::sync::Arc<std::sync::Mutex<String>>,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn client");
        let collect = |mut r: Box<dyn Read + Send>| {
            let buf = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let b = buf.clone();
            let t = std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = r.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    b.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            });
            (buf, t)
        };
        let (stdout, t1) = collect(Box::new(child.stdout.take().unwrap()));
        let (stderr, t2) = collect(Box::new(child.stderr.take().unwrap()));
        Running {
            child,
            stdout,
            stderr,
            readers: vec![t1, t2],
        }
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the exit, killing the client (by its pid) after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> (std::process::ExitStatus, String, String) {
        let end = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "client still running after {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for t in std::mem::take(&mut self.readers) {
            let _ = t.join();
        }
        (status, self.stdout(), self.stderr())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
