//! `loadgen raw-server`: the smallest thread-per-core monoio echo server (bytes in, the
//! same bytes out), so `raw-echo` / `raw-churn` can measure what the machine and runtime
//! cost without any protocol, next to sockchat-server. With `--fanout` (ring engine, one
//! worker) it forwards each connection's bytes to every other connection instead: the
//! raw floor of a chat room's fan-out, which `fanout --raw` measures. With `--handshake`
//! (monoio engine) it plays sockchat-server's side of a churn cycle instead, bytes only:
//! the like-for-like baseline of `churn` (see [`HandshakeWire`]).
//!
//! TCP: one listener per thread with SO_REUSEPORT (the kernel balances connections).
//! Unix: AF_UNIX rejects SO_REUSEPORT on current kernels, so one std listener is bound
//! and each thread accepts on its own `try_clone` of it.

use std::io;
use std::net::SocketAddr;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::BytesMut;
use monoio::io::AsyncWriteRentExt;
use monoio::net::{ListenerOpts, TcpListener, UnixListener};
use serde::Serialize;
use thiserror::Error;

use crate::conn::{read_append, Conn, Target};
use crate::runner::RingMode;
use crate::scenarios::churn::HandshakeWire;

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Binding the listener failed.
    #[error("bind {0}: {1}")]
    Bind(String, io::Error),
    /// A worker could not start.
    #[error("worker: {0}")]
    Worker(String),
}

/// A running raw server. Dropping it (or [`stop`](Self::stop)) ends its workers: each
/// checks a stop flag every [`STOP_CHECK`] while it waits for connections, then drops
/// its runtime with every connection, and the Unix socket file is removed.
#[derive(Debug)]
pub struct RawServer {
    /// Where it listens (the TCP port is the real one when port 0 was asked for).
    pub target: Target,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

/// How often an idle worker looks at the stop flag.
pub const STOP_CHECK: Duration = Duration::from_millis(20);

impl RawServer {
    /// Binds `target` and starts `threads` workers (pinned to `cpus` round robin if not
    /// empty). Workers run until the process exits.
    pub fn start(target: &Target, threads: usize, cpus: &[usize]) -> Result<Self, ServerError> {
        Self::start_with(target, threads, cpus, RingMode::Plain)
    }

    /// [`start`](Self::start) with the workers' io_uring set up as `ring` says.
    pub fn start_with(
        target: &Target,
        threads: usize,
        cpus: &[usize],
        ring: RingMode,
    ) -> Result<Self, ServerError> {
        Self::start_engine(target, threads, cpus, ring, Engine::Monoio)
    }

    /// [`start_with`](Self::start_with) on the chosen I/O `engine`.
    pub fn start_engine(
        target: &Target,
        threads: usize,
        cpus: &[usize],
        ring: RingMode,
        engine: Engine,
    ) -> Result<Self, ServerError> {
        if engine != Engine::Monoio {
            let stop = Arc::new(AtomicBool::new(false));
            return start_uring(target, threads.max(1), cpus, ring, engine, false, stop);
        }
        Self::start_monoio(target, threads, cpus, ring, Behaviour::Echo)
    }

    /// The monoio server playing sockchat-server's side of a churn cycle on every
    /// connection instead of echoing: `wire.init` bytes out as soon as it is accepted,
    /// then read until the client's `ack` and `disconnect` bytes are in, then close.
    pub fn start_handshake(
        target: &Target,
        threads: usize,
        cpus: &[usize],
        ring: RingMode,
        wire: HandshakeWire,
    ) -> Result<Self, ServerError> {
        Self::start_monoio(target, threads, cpus, ring, Behaviour::Handshake(wire))
    }

    fn start_monoio(
        target: &Target,
        threads: usize,
        cpus: &[usize],
        ring: RingMode,
        behaviour: Behaviour,
    ) -> Result<Self, ServerError> {
        let threads = threads.max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<SocketAddr, String>>();
        let mut handles = Vec::new();
        let bound = match target {
            Target::Tcp(addr) => {
                // The first worker binds (port 0 resolved), the others reuse its port.
                let mut addr = *addr;
                for idx in 0..threads {
                    let tx = ready_tx.clone();
                    let cpu = (!cpus.is_empty()).then(|| cpus[idx % cpus.len()]);
                    handles.push(spawn(idx, cpu, ring, behaviour, stop.clone(), move || {
                        let opts = ListenerOpts::new().reuse_port(true).backlog(4096);
                        match TcpListener::bind_with_config(addr, &opts) {
                            Ok(l) => {
                                let _ = tx.send(l.local_addr().map_err(|e| e.to_string()));
                                Listener::Tcp(l)
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e.to_string()));
                                Listener::None
                            }
                        }
                    })?);
                    let got = ready_rx
                        .recv()
                        .map_err(|e| ServerError::Worker(e.to_string()))?
                        .map_err(|e| ServerError::Bind(addr.to_string(), io::Error::other(e)))?;
                    addr = got;
                }
                Target::Tcp(addr)
            }
            Target::Unix(path) => {
                let _ = std::fs::remove_file(path);
                let std_l = StdUnixListener::bind(path)
                    .map_err(|e| ServerError::Bind(path.display().to_string(), e))?;
                for idx in 0..threads {
                    let l = std_l
                        .try_clone()
                        .map_err(|e| ServerError::Bind(path.display().to_string(), e))?;
                    let cpu = (!cpus.is_empty()).then(|| cpus[idx % cpus.len()]);
                    handles.push(spawn(idx, cpu, ring, behaviour, stop.clone(), move || {
                        l.set_nonblocking(true).ok();
                        match UnixListener::from_std(l) {
                            Ok(l) => Listener::Unix(l),
                            Err(_) => Listener::None,
                        }
                    })?);
                }
                Target::Unix(PathBuf::from(path))
            }
        };
        Ok(Self {
            target: bound,
            threads: handles,
            stop,
        })
    }

    /// The raw fan-out server: one worker on the `ring` engine that forwards every byte a
    /// connection sends, unchanged, to every other connection (one worker, so every
    /// connection sees every other; pinned to `cpu` if given).
    pub fn start_fanout(
        target: &Target,
        cpu: Option<usize>,
        ring: RingMode,
    ) -> Result<Self, ServerError> {
        let cpus: Vec<usize> = cpu.into_iter().collect();
        let stop = Arc::new(AtomicBool::new(false));
        start_uring(target, 1, &cpus, ring, Engine::Ring, true, stop)
    }

    /// Blocks until every worker has ended (after the flag from
    /// [`stopper`](Self::stopper) is set), then removes the Unix socket file.
    pub fn wait(mut self) {
        for h in std::mem::take(&mut self.threads) {
            let _ = h.join();
        }
        self.remove_socket_file();
    }

    fn remove_socket_file(&self) {
        if let Target::Unix(p) = &self.target {
            let _ = std::fs::remove_file(p);
        }
    }

    /// A handle that stops the server from another thread.
    pub fn stopper(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Stops every worker and waits for them (each within about [`STOP_CHECK`]).
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.stop.store(true, Ordering::Release);
        for h in std::mem::take(&mut self.threads) {
            let _ = h.join();
        }
        self.remove_socket_file();
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shut();
        }
    }
}

/// Which echo implementation the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// monoio 0.2.4: an accept loop and a task per connection reading into its own
    /// buffer (the baseline).
    #[default]
    Monoio,
    /// compio 0.19: multishot accept, `read_multi` from the runtime's buffer pool.
    Compio,
    /// monoio plus a per-thread data ring of our own (`io-uring` 0.7): multishot accept,
    /// multishot buffer-select receive, sends from the ring buffers, eventfd wake-ups.
    Ring,
}

fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// Starts the compio or ring workers (`fanout`: ring workers that forward instead of
/// echoing).
fn start_uring(
    target: &Target,
    threads: usize,
    cpus: &[usize],
    ring: RingMode,
    engine: Engine,
    fanout: bool,
    stop: Arc<AtomicBool>,
) -> Result<RawServer, ServerError> {
    let mut listeners = Vec::new();
    let bound = match target {
        Target::Tcp(addr) => {
            let mut addr = *addr;
            for _ in 0..threads {
                let l = tcp_listener(addr).map_err(|e| ServerError::Bind(addr.to_string(), e))?;
                addr = l
                    .local_addr()
                    .map_err(|e| ServerError::Bind(addr.to_string(), e))?;
                listeners.push(crate::raw_compio::StdListener::Tcp(l));
            }
            Target::Tcp(addr)
        }
        Target::Unix(path) => {
            let _ = std::fs::remove_file(path);
            let err = |e| ServerError::Bind(path.display().to_string(), e);
            let l = StdUnixListener::bind(path).map_err(err)?;
            l.set_nonblocking(true).map_err(err)?;
            for _ in 0..threads {
                listeners.push(crate::raw_compio::StdListener::Unix(
                    l.try_clone().map_err(err)?,
                ));
            }
            Target::Unix(PathBuf::from(path))
        }
    };
    let mut handles = Vec::new();
    for (idx, l) in listeners.into_iter().enumerate() {
        let cpu = (!cpus.is_empty()).then(|| cpus[idx % cpus.len()]);
        let stop = stop.clone();
        let h = std::thread::Builder::new()
            .name(format!("raw-server-{idx}"))
            .spawn(move || match engine {
                Engine::Compio => crate::raw_compio::run_worker(l, ring, cpu, stop),
                _ => run_ring_worker(l, ring, cpu, fanout, stop),
            })
            .map_err(|e| ServerError::Worker(e.to_string()))?;
        handles.push(h);
    }
    Ok(RawServer {
        target: bound,
        threads: handles,
        stop,
    })
}

fn run_ring_worker(
    l: crate::raw_compio::StdListener,
    ring: RingMode,
    cpu: Option<usize>,
    fanout: bool,
    stop: Arc<AtomicBool>,
) {
    use std::os::fd::AsRawFd;
    if let Some(cpu) = cpu {
        let _ = monoio::utils::bind_to_cpu_set([cpu]);
    }
    let (fd, tcp) = match &l {
        crate::raw_compio::StdListener::Tcp(t) => (t.as_raw_fd(), true),
        crate::raw_compio::StdListener::Unix(u) => (u.as_raw_fd(), false),
    };
    let setup = crate::raw_ring::eventfd().and_then(|efd| {
        crate::raw_ring::driver(ring, vec![fd], tcp, efd.as_raw_fd(), fanout).map(|d| (d, efd))
    });
    let (driver, efd) = match setup {
        Ok(x) => x,
        Err(e) => {
            eprintln!("raw-server (ring): {e}");
            return;
        }
    };
    // monoio's own ring stays plain: it only carries the eventfd poll and the timer.
    let mut rt = match crate::runner::runtime(RingMode::Plain) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raw-server (ring): runtime: {e}");
            return;
        }
    };
    rt.block_on(crate::raw_ring::run(driver, efd, stop));
    drop(l);
}

/// What the monoio server does with a connection.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Echo,
    Handshake(HandshakeWire),
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
    None,
}

fn spawn(
    idx: usize,
    cpu: Option<usize>,
    ring: RingMode,
    behaviour: Behaviour,
    stop: Arc<AtomicBool>,
    make: impl FnOnce() -> Listener + Send + 'static,
) -> Result<JoinHandle<()>, ServerError> {
    std::thread::Builder::new()
        .name(format!("raw-server-{idx}"))
        .spawn(move || {
            if let Some(cpu) = cpu {
                let _ = monoio::utils::bind_to_cpu_set([cpu]);
            }
            let mut rt = match crate::runner::runtime(ring) {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("raw-server worker {idx}: runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = make();
                let stopped = async {
                    while !stop.load(Ordering::Acquire) {
                        monoio::time::sleep(STOP_CHECK).await;
                    }
                };
                let mut stopped = std::pin::pin!(stopped);
                loop {
                    let accept = async {
                        match &listener {
                            Listener::Tcp(l) => l.accept().await.map(|(s, _)| {
                                let _ = s.set_nodelay(true);
                                Conn::Tcp(s)
                            }),
                            Listener::Unix(l) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
                            Listener::None => Err(io::Error::other("no listener")),
                        }
                    };
                    if matches!(listener, Listener::None) {
                        return;
                    }
                    // The accept still in flight is cancelled when the runtime (and its
                    // ring) is dropped, with every connection task.
                    let conn = monoio::select! {
                        _ = &mut stopped => return,
                        c = accept => c,
                    };
                    match conn {
                        Ok(c) => match behaviour {
                            Behaviour::Echo => {
                                monoio::spawn(echo(c));
                            }
                            Behaviour::Handshake(wire) => {
                                monoio::spawn(handshake(c, wire));
                            }
                        },
                        // EMFILE and the like: back off instead of spinning.
                        Err(_) => monoio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            });
        })
        .map_err(|e| ServerError::Worker(e.to_string()))
}

/// Echoes until the peer closes.
async fn echo(mut c: Conn) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        buf.clear();
        let (res, b) = read_append(&mut c, buf).await;
        match res {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        let (res, b) = c.write_all(b).await;
        if res.is_err() {
            return;
        }
        buf = b;
    }
}

/// sockchat-server's side of a churn cycle, bytes only: `init` bytes out, read until the
/// client's `ack` and `disconnect` bytes are in, close. The buffer is the echo's, so the
/// two baselines cost the same per connection.
async fn handshake(mut c: Conn, wire: HandshakeWire) {
    let (res, _) = c.write_all(vec![0u8; wire.init]).await;
    if res.is_err() {
        return;
    }
    let want = wire.ack + wire.disconnect;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    while buf.len() < want {
        let (res, b) = read_append(&mut c, buf).await;
        match res {
            Ok(n) if n > 0 => buf = b,
            _ => return,
        }
    }
    // Dropping the connection closes it: the server closes first, as sockchat-server
    // does after `disconnect`.
}
