//! A real NATS broker (`nats-server`) for the cluster tests: started on a free loopback
//! port in its own temp dir, stopped by PID (SIGKILL, from [`Nats::kill`] or `Drop`). `.ci/run`
//! installs the Debian package when it is missing; without it these tests fail and say
//! how to install it.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A running NATS broker.
#[derive(Debug)]
pub struct Nats {
    child: Option<Child>,
    /// The client port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    for p in [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    let which = Command::new("sh")
        .args(["-c", "command -v nats-server"])
        .output()
        .expect("run sh");
    let found = String::from_utf8_lossy(&which.stdout).trim().to_string();
    assert!(
        !found.is_empty(),
        "nats-server not found: install it (`apt-get install -y nats-server`; .ci/run does)"
    );
    PathBuf::from(found)
}

/// A loopback port nobody listens on now (the broker binds it at once, so the window for
/// another process to take it is short).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl Nats {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub fn start() -> Nats {
        Self::start_on(free_port())
    }

    /// Starts a broker on `port` (to restart one where its clients expect it).
    pub fn start_on(port: u16) -> Nats {
        let dir = tempfile::Builder::new()
            .prefix("sockchat-nats-")
            .tempdir()
            .expect("temp dir");
        let log = std::fs::File::create(dir.path().join("nats.log")).expect("log file");
        let child = Command::new(binary())
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn nats-server");
        let mut nats = Nats {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {port}: {}",
                nats.log()
            );
            if let Some(Ok(Some(st))) = nats.child.as_mut().map(|c| c.try_wait()) {
                panic!("nats-server exited ({st}): {}", nats.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
        nats
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A chat-mode server node of a cluster on this broker, named `name`, with a stats line
    /// every 100 ms (the tests read its `broker=` state there). Add more flags, then start.
    pub fn node_builder(&self, name: &str) -> crate::ServerBuilder {
        crate::Server::builder().args([
            "--mode",
            "chat",
            "--cluster",
            &self.url(),
            "--node-name",
            name,
            "--stats-interval",
            "100ms",
        ])
    }

    /// The broker's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// Kills the broker (SIGKILL: an abrupt loss, not a lame-duck shutdown) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's PID; it has not been reaped yet.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}
