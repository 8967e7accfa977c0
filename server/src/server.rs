//! The server as a whole: binds, starts one runtime thread per core, reports, stops.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::{mpsc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::admin::{self, Admin};
use crate::cluster::{Cluster, ClusterHandle, ClusterStats};
use crate::config::ServerConfig;
use crate::fanout::{self, Inbox, Mailbox};
use crate::handler::Handler;
use crate::listener::{self, Bound, ListenAddr, ListenError, SocketFile};
use crate::notify;
use crate::peer_limits::PeerLimits;
use crate::reload;
use crate::rooms::RoomDirectory;
use crate::stats::{CoreStats, Snapshot};
use crate::worker;

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A listener could not be bound.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// A core's runtime could not start (e.g. io_uring unavailable).
    #[error("core {core} failed to start: {source}")]
    Core {
        /// The core.
        core: usize,
        /// The error.
        source: std::io::Error,
    },
    /// A thread could not be spawned.
    #[error("cannot spawn thread: {0}")]
    Thread(std::io::Error),
    /// The admin endpoint could not be bound.
    #[error("cannot listen on admin address {addr}: {source}")]
    Admin {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Where the server is in its life, as `/readyz` and systemd see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Binding and starting the cores.
    Starting = 0,
    /// Every listener accepts.
    Ready = 1,
    /// Lame duck: listeners closed, sessions being sent away over the drain period.
    Draining = 2,
    /// Graceful shutdown.
    Stopping = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Starting,
            1 => Phase::Ready,
            2 => Phase::Draining,
            _ => Phase::Stopping,
        }
    }
}

/// State shared by all cores and the control threads.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Sessions open across all cores (the `--max-sessions` count).
    pub(crate) sessions: AtomicUsize,
    pub(crate) mailboxes: Arc<Vec<Mailbox>>,
    pub(crate) stats: Vec<Arc<CoreStats>>,
    /// Which cores have members of which room.
    pub(crate) directory: Arc<RoomDirectory>,
    /// The broker link, when clustered.
    pub(crate) cluster: Option<ClusterHandle>,
    files: Vec<SocketFile>,
    shutdown: AtomicBool,
    phase: AtomicU8,
    /// The settings in force; replaced as a whole by a SIGHUP reload.
    pub(crate) config: ArcSwap<ServerConfig>,
    /// Sessions per peer (`--max-sessions-per-peer`).
    pub(crate) peers: PeerLimits,
    finished: (Mutex<bool>, Condvar),
}

impl Shared {
    fn request_shutdown(&self) {
        if self.phase.swap(Phase::Stopping as u8, Ordering::AcqRel) != Phase::Stopping as u8 {
            notify::stopping("shutting down");
        }
        self.shutdown.store(true, Ordering::Release);
        for m in self.mailboxes.iter() {
            m.notify.request_shutdown();
        }
    }

    /// Lame-duck drain; only from `Ready` (a shutdown in progress stays one).
    pub(crate) fn request_drain(&self) -> bool {
        let from_ready = self
            .phase
            .compare_exchange(
                Phase::Ready as u8,
                Phase::Draining as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if from_ready {
            notify::stopping("draining");
            for m in self.mailboxes.iter() {
                m.notify.request_drain();
            }
        }
        from_ready
    }

    pub(crate) fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn set_finished(&self) {
        let (m, cv) = &self.finished;
        *m.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cv.notify_all();
    }

    /// Waits up to `d`; true once the server has stopped.
    fn wait_finished(&self, d: Duration) -> bool {
        let (m, cv) = &self.finished;
        let g = m.lock().unwrap_or_else(PoisonError::into_inner);
        let (g, _) = cv
            .wait_timeout_while(g, d, |done| !*done)
            .unwrap_or_else(PoisonError::into_inner);
        *g
    }

    pub(crate) fn core_snapshots(&self) -> Vec<Snapshot> {
        self.stats.iter().map(|s| s.snapshot()).collect()
    }

    fn totals(&self) -> Snapshot {
        let snaps: Vec<Snapshot> = self.stats.iter().map(|s| s.snapshot()).collect();
        Snapshot::sum(&snaps)
    }
}

/// Stops a running server from any thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Starts a graceful shutdown: stop accepting, `disconnect` every session after what
    /// it is owed, wait up to the grace period, close.
    pub fn shutdown(&self) {
        self.shared.request_shutdown();
    }

    /// True once a shutdown was requested.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutdown.load(Ordering::Acquire)
    }

    /// Removes the Unix socket files (for an immediate exit).
    pub fn remove_socket_files(&self) {
        for f in &self.shared.files {
            f.remove();
        }
    }

    /// Counters summed over cores.
    pub fn totals(&self) -> Snapshot {
        self.shared.totals()
    }

    /// The broker link's counters and state, when clustered.
    pub fn cluster_stats(&self) -> Option<Arc<ClusterStats>> {
        self.shared.cluster.as_ref().map(|c| c.stats.clone())
    }

    /// Starts a lame-duck drain (SIGUSR2, `POST /drain`): `/readyz` turns 503, the
    /// listeners close, and sessions are sent `disconnect` "Server draining" spread over
    /// the drain period; the server then stops. False if it was not serving (starting,
    /// already draining or shutting down).
    pub fn drain(&self) -> bool {
        self.shared.request_drain()
    }

    /// The server's phase.
    pub fn phase(&self) -> Phase {
        self.shared.phase()
    }

    /// The settings in force.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.shared.config.load_full()
    }

    /// Applies a re-read configuration to the running server (SIGHUP). Settings that
    /// need a restart keep their old values; their names are returned.
    pub fn reload(&self, new: ServerConfig) -> Vec<&'static str> {
        let old = self.shared.config.load_full();
        let (merged, kept) = reload::merge(&old, new);
        self.shared.config.store(Arc::new(merged));
        for m in self.shared.mailboxes.iter() {
            m.notify.request_reload();
        }
        kept
    }

    /// Each core's liveness counter (see [`poke_cores`](Self::poke_cores)).
    pub fn core_liveness(&self) -> Vec<u64> {
        self.shared
            .stats
            .iter()
            .map(|s| s.alive.load(Ordering::Relaxed))
            .collect()
    }

    /// Wakes every core's control task, which bumps its liveness counter.
    pub fn poke_cores(&self) {
        for m in self.shared.mailboxes.iter() {
            m.notify.notify();
        }
    }

    /// Waits up to `d`; true once the server has stopped.
    pub fn wait_stopped(&self, d: Duration) -> bool {
        self.shared.wait_finished(d)
    }
}

/// A server not yet bound.
#[derive(Clone)]
pub struct Server {
    config: Arc<ServerConfig>,
    handler: Arc<dyn Handler>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server running `handler` with `config`.
    pub fn new(config: ServerConfig, handler: impl Handler) -> Self {
        Self::with_handler(config, Arc::new(handler))
    }

    /// Same, with a shared handler.
    pub fn with_handler(config: ServerConfig, handler: Arc<dyn Handler>) -> Self {
        Self {
            config: Arc::new(config),
            handler,
        }
    }

    /// Binds every listener (TCP: one per core; Unix: one, shared by the cores).
    pub fn bind(self) -> Result<BoundServer, ServerError> {
        let c = &self.config;
        let Bound {
            per_core,
            addrs,
            files,
        } = listener::bind_all(&c.tcp, &c.unix, c.unix_mode, c.cores)?;
        let stats: Vec<Arc<CoreStats>> = (0..c.cores)
            .map(|_| Arc::new(CoreStats::default()))
            .collect();
        let (mailboxes, inboxes) =
            fanout::mailboxes(&stats, c.fanout_queue_len, c.fanout_queue_bytes);
        let admin = match c.admin {
            Some(addr) => match Admin::bind(addr) {
                Ok(a) => Some(a),
                Err(source) => {
                    for f in &files {
                        f.remove();
                    }
                    return Err(ServerError::Admin { addr, source });
                }
            },
            None => None,
        };
        let directory = Arc::new(RoomDirectory::default());
        let cluster = match (&c.cluster, c.rooms) {
            (Some(cc), true) => Some(
                Cluster::start(cc.clone(), directory.clone(), mailboxes.clone())
                    .map_err(ServerError::Thread)?,
            ),
            _ => None,
        };
        let shared = Arc::new(Shared {
            sessions: AtomicUsize::new(0),
            mailboxes,
            stats,
            directory,
            cluster: cluster.as_ref().map(|c| c.handle().clone()),
            files,
            shutdown: AtomicBool::new(false),
            phase: AtomicU8::new(Phase::Starting as u8),
            config: ArcSwap::new(self.config.clone()),
            peers: PeerLimits::default(),
            finished: (Mutex::new(false), Condvar::new()),
        });
        Ok(BoundServer {
            server: self,
            per_core,
            inboxes,
            addrs,
            admin,
            shared,
            cluster,
        })
    }
}

/// A server whose listeners are bound; [`run`](Self::run) serves until shutdown.
#[derive(Debug)]
pub struct BoundServer {
    server: Server,
    per_core: Vec<worker::CoreListeners>,
    inboxes: Vec<Inbox>,
    addrs: Vec<ListenAddr>,
    admin: Option<Admin>,
    shared: Arc<Shared>,
    cluster: Option<Cluster>,
}

impl BoundServer {
    /// The bound listeners (TCP with their real ports).
    pub fn addrs(&self) -> &[ListenAddr] {
        &self.addrs
    }

    /// The admin endpoint's address (with its real port), if one is configured.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().map(Admin::local_addr)
    }

    /// A handle to stop the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: self.shared.clone(),
        }
    }

    /// Starts the cores, calls `on_ready` once all of them accept, and serves until a
    /// shutdown completes. Removes the Unix socket files and returns the totals.
    pub fn run(self, on_ready: impl FnOnce(&[ListenAddr])) -> Result<Snapshot, ServerError> {
        let BoundServer {
            server,
            per_core,
            inboxes,
            addrs,
            admin,
            shared,
            mut cluster,
        } = self;
        let config = server.config.clone();
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, std::io::Result<()>)>();
        let mut threads = Vec::with_capacity(config.cores);
        let mut spawn_error = None;
        for (index, (listeners, inbox)) in per_core.into_iter().zip(inboxes).enumerate() {
            let config = config.clone();
            let handler = server.handler.clone();
            let shared2 = shared.clone();
            let ready = ready_tx.clone();
            let spawned = thread::Builder::new()
                .name(format!("sockchat-core-{index}"))
                .spawn(move || {
                    let r = worker::run_core(
                        index,
                        config,
                        handler,
                        shared2.clone(),
                        listeners,
                        inbox,
                        ready,
                    );
                    if let Err(e) = &r {
                        tracing::error!(core = index, error = %e, "core stopped");
                        shared2.request_shutdown();
                    }
                    r
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    spawn_error = Some(ServerError::Thread(e));
                    break;
                }
            }
        }
        drop(ready_tx);

        let mut start_error = spawn_error;
        if start_error.is_none() {
            for _ in 0..threads.len() {
                match ready_rx.recv() {
                    Ok((_, Ok(()))) => {}
                    Ok((core, Err(source))) => {
                        start_error = Some(ServerError::Core { core, source });
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        let admin_thread = match (admin, &start_error) {
            (Some(a), None) => match admin::spawn(a, shared.clone()) {
                Ok(t) => Some(t),
                Err(e) => {
                    start_error = Some(ServerError::Thread(e));
                    None
                }
            },
            _ => None,
        };
        if start_error.is_some() {
            shared.request_shutdown();
        } else {
            // Only from Starting: a signal during start-up already moved it on.
            let _ = shared.phase.compare_exchange(
                Phase::Starting as u8,
                Phase::Ready as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            tracing::info!(
                cores = config.cores,
                max_sessions = config.max_sessions,
                line_mode = config.line_mode,
                memory_budget = config.memory_budget,
                "ready"
            );
            on_ready(&addrs);
            notify::ready("serving");
        }

        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let stats_thread = config.stats_interval.map(|every| {
            let shared = shared.clone();
            thread::Builder::new()
                .name("sockchat-stats".into())
                .spawn(move || stats_loop(&shared, every, &stop_rx))
        });

        for (i, t) in threads.into_iter().enumerate() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    start_error.get_or_insert(ServerError::Core { core: i, source });
                }
                Err(_) => tracing::error!(core = i, "core thread panicked"),
            }
        }
        drop(stop_tx);
        if let Some(Ok(t)) = stats_thread {
            let _ = t.join();
        }
        if let Some(c) = cluster.as_mut() {
            c.stop();
            if let Some(s) = &shared.cluster {
                tracing::info!(cluster = %s.stats.text(), "broker link stopped");
            }
        }
        shared.set_finished();
        if let Some(t) = admin_thread {
            t.stop();
        }
        for f in &shared.files {
            f.remove();
            tracing::debug!(path = %f.path().display(), "removed socket file");
        }
        let totals = shared.totals();
        match start_error {
            Some(e) => Err(e),
            None => {
                tracing::info!(totals = %totals, "server stopped");
                Ok(totals)
            }
        }
    }
}

fn stats_loop(shared: &Shared, every: Duration, stop: &mpsc::Receiver<()>) {
    let mut last = shared.totals();
    let mut at = Instant::now();
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        let now = Instant::now();
        let t = shared.totals();
        let r = t.rates_since(&last, now - at);
        tracing::info!(
            sessions = r.sessions,
            msgs_in_per_s = r.messages_in_per_s.round() as u64,
            msgs_out_per_s = r.messages_out_per_s.round() as u64,
            bytes_in_per_s = r.bytes_in_per_s.round() as u64,
            bytes_out_per_s = r.bytes_out_per_s.round() as u64,
            fanout_dropped = t.fanout_dropped,
            copied_per_byte_in = format_args!("{:.3}", r.copied_per_byte_in),
            ring_enobufs = r.ring_enobufs,
            closes = %r.closes.closes_text(),
            room_refusals = %t.refusals_text(),
            cluster = %shared.cluster.as_ref().map_or_else(|| "-".to_string(), |c| c.stats.text()),
            "stats"
        );
        last = t;
        at = now;
    }
}
