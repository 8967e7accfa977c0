//! The thread-per-core harness every scenario runs in.
//!
//! Each worker thread runs its own monoio runtime (io_uring with a legacy fallback, plus
//! the timer) and the sessions whose global index is congruent to the thread's index, so
//! no session state is ever shared between threads. Phases:
//!
//! 1. setup: session `i` connects at `epoch + i / ramp` (an even ramp over all threads),
//!    hand-shakes, then waits at its thread's gate;
//! 2. when every thread's sessions are established or have failed, the last thread to
//!    finish fixes the start (`go`), and every gate opens at that instant;
//! 3. load: warm-up, then the measured window, then a bounded drain.
//!
//! Once a second each thread sends its interval figures to the main thread, which draws
//! the progress line ([`progress`]) and builds the timeline ([`timeline`]). The main thread samples CPU time at `go`
//! and when the last worker ends.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use sockchat_proto::Key;
use thiserror::Error;

use crate::conn::Target;
use crate::cpu::{self, CpuReport, CpuTimes};
use crate::shard::Shard;
use crate::stages::Stages;
use crate::stats::{Interval, Recorder, ThreadResult, Window};
use crate::sync::Gate;

mod progress;
mod timeline;

use progress::Progress;
use timeline::Timeline;

/// What the harness needs to know, shared by all threads.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Scenario name, for the progress line.
    pub scenario: &'static str,
    /// Where to connect.
    pub target: Target,
    /// Sessions (or concurrent loops) in total.
    pub sessions: usize,
    /// Worker threads.
    pub threads: usize,
    /// Connections per second during setup, over all threads; 0 = no pacing.
    pub ramp: f64,
    /// Excluded from results.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Limit on connect + handshake of one session.
    pub connect_timeout: Duration,
    /// How long sessions may wait for outstanding replies after the window.
    pub drain: Duration,
    /// CPUs to pin worker threads to (round robin); empty = no pinning.
    pub cpus: Vec<usize>,
    /// Show the live progress line.
    pub progress: bool,
    /// Names of the scenario's histograms; the first is the primary latency.
    pub hist_names: Vec<&'static str>,
    /// Whether sessions are established before the load phase (false for churn).
    pub setup: bool,
    /// Server process to read CPU time from.
    pub server_pid: Option<u32>,
    /// io_uring setup flags of the worker runtimes.
    pub ring: RingMode,
    /// This worker's part of a run split over several processes (`sessions` and `ramp`
    /// above are already its share).
    pub shard: Shard,
    /// Wall-clock instant the measured window starts at (`--start-at-ms`): warm-up runs
    /// before it. `None`: the window starts 100 ms after setup plus the warm-up.
    pub start_at: Option<SystemTime>,
    /// The stage plan of the load level, shown in the timeline (`target`).
    pub stages: Option<Stages>,
    /// Named consecutive parts of the measured window (the default suite's phases):
    /// (name, end in seconds from the window's start). Shown in progress and timeline.
    pub parts: Vec<(&'static str, f64)>,
}

/// How the worker threads' io_uring rings are set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RingMode {
    /// `IORING_SETUP_COOP_TASKRUN | TASKRUN_FLAG` (and a larger completion queue):
    /// completions are not signalled to the thread with an inter-processor interrupt; it
    /// picks them up at its next `io_uring_enter`. Cheaper per message with a few hundred
    /// busy sessions, but with monoio 0.2.4 it delayed completions by seconds with
    /// 19,900 heartbeat sessions (see README), so it is not the default.
    Coop,
    /// Coop plus `SINGLE_ISSUER | DEFER_TASKRUN` (completion work runs only when the
    /// thread waits for events).
    Defer,
    /// No setup flags (monoio's default).
    #[default]
    Plain,
}

/// State shared by all worker threads (atomics, touched only during setup and once a
/// second).
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub cfg: RunConfig,
    /// The frame key.
    pub key: Key,
    /// Start of setup; connect slots and fan-out timestamps count from here.
    pub epoch: Instant,
    /// The wall clock at `epoch`.
    pub epoch_unix: SystemTime,
    threads_ready: AtomicUsize,
    /// Sessions established during setup.
    pub established: AtomicU64,
    /// Sessions that failed during setup.
    pub setup_failed: AtomicU64,
    window: OnceLock<Window>,
    abort: AtomicBool,
    /// Why the load phase could not start at `--start-at-ms`.
    start_problem: Mutex<Option<String>>,
    /// When the last session finished its setup.
    ready: OnceLock<Instant>,
    /// Threads that woke at the measured window's start, and the latest of their clock
    /// readings then (ns from `epoch`): the start as it happened, not as planned.
    started_threads: AtomicUsize,
    started_late_ns: AtomicU64,
}

impl Shared {
    fn new(cfg: RunConfig, key: Key) -> Self {
        Self {
            cfg,
            key,
            epoch: Instant::now(),
            epoch_unix: SystemTime::now(),
            threads_ready: AtomicUsize::new(0),
            established: AtomicU64::new(0),
            setup_failed: AtomicU64::new(0),
            window: OnceLock::new(),
            abort: AtomicBool::new(false),
            start_problem: Mutex::new(None),
            ready: OnceLock::new(),
            started_threads: AtomicUsize::new(0),
            started_late_ns: AtomicU64::new(0),
        }
    }

    /// The wall clock at `t` (as this process's clock reads it).
    pub fn unix_of(&self, t: Instant) -> SystemTime {
        if t >= self.epoch {
            self.epoch_unix + (t - self.epoch)
        } else {
            self.epoch_unix - (self.epoch - t)
        }
    }

    /// The instant the wall clock will read (or read) `at`.
    pub fn instant_of(&self, at: SystemTime) -> Instant {
        match at.duration_since(self.epoch_unix) {
            Ok(d) => self.epoch + d,
            Err(e) => self.epoch.checked_sub(e.duration()).unwrap_or(self.epoch),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One worker thread's context, handed to the scenario's thread body.
#[derive(Debug)]
pub struct ThreadCtx {
    /// Index of this thread.
    pub idx: usize,
    /// Shared state.
    pub shared: Arc<Shared>,
    /// This thread's recorder.
    pub rec: RefCell<Recorder>,
    /// This thread's copy of the key (the HMAC state is cloned per frame; keeping one
    /// per thread avoids sharing it). An `Arc` only because proto's `ClientSession`,
    /// which does the handshake, takes one.
    pub key: Arc<Key>,
    gate: Gate,
    window: Cell<Option<Window>>,
    pending_setup: Cell<usize>,
    setup_done: Gate,
    finished: Cell<bool>,
    watched: RefCell<HashMap<usize, RawFd>>,
    expired: Cell<bool>,
}

impl ThreadCtx {
    /// The run configuration.
    pub fn cfg(&self) -> &RunConfig {
        &self.shared.cfg
    }

    /// Global indices of this thread's sessions.
    pub fn my_sessions(&self) -> impl Iterator<Item = usize> {
        let n = self.cfg().threads;
        (self.idx..self.cfg().sessions).step_by(n)
    }

    /// When session `i` may connect.
    pub fn slot(&self, i: usize) -> Instant {
        let ramp = self.cfg().ramp;
        if ramp > 0.0 {
            self.shared.epoch + Duration::from_secs_f64(i as f64 / ramp)
        } else {
            self.shared.epoch
        }
    }

    fn setup_step(&self) {
        let left = self.pending_setup.get().saturating_sub(1);
        self.pending_setup.set(left);
        if left == 0 {
            self.setup_done.open();
        }
    }

    /// A session finished its setup successfully.
    pub fn session_ready(&self) {
        self.shared.established.fetch_add(1, Ordering::Relaxed);
        self.setup_step();
    }

    /// A session failed its setup with an error of `kind`.
    pub fn session_failed(&self, kind: &'static str) {
        self.rec.borrow_mut().error(kind);
        self.shared.setup_failed.fetch_add(1, Ordering::Relaxed);
        self.setup_step();
    }

    /// Waits for the load phase and returns its window.
    pub async fn wait_go(&self) -> Window {
        self.gate.wait().await;
        self.window.get().expect("window set before the gate opens")
    }

    /// The window, once the gate is open.
    pub fn window(&self) -> Option<Window> {
        self.window.get()
    }

    /// Counts an error.
    pub fn error(&self, kind: &'static str) {
        self.rec.borrow_mut().error(kind);
    }

    /// Puts session `i`'s socket under the thread's deadline watch: once the load phase
    /// is over by more than the drain time, the socket is shut down, which ends any read
    /// or write still waiting on it. This replaces a timer per session loop (polled
    /// with every message) with one check by the thread's coordinator. The watch ends
    /// when the returned guard is dropped (drop it before closing the socket).
    pub fn watch(self: &Rc<Self>, i: usize, fd: RawFd) -> Watch {
        if self.expired.get() {
            shutdown_fd(fd);
        }
        self.watched.borrow_mut().insert(i, fd);
        Watch {
            ctx: self.clone(),
            i,
        }
    }

    /// True once the deadline passed and watched sockets were shut down: an error seen
    /// now is the consequence, and counts as a `timeout`.
    pub fn expired(&self) -> bool {
        self.expired.get()
    }

    fn expire(&self) {
        self.expired.set(true);
        for fd in self.watched.borrow().values() {
            shutdown_fd(*fd);
        }
    }
}

fn shutdown_fd(fd: RawFd) {
    // SAFETY: `fd` is a socket a live session owns (it unregisters before closing).
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// A socket under the deadline watch (see [`ThreadCtx::watch`]).
#[derive(Debug)]
pub struct Watch {
    ctx: Rc<ThreadCtx>,
    i: usize,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.ctx.watched.borrow_mut().remove(&self.i);
    }
}

/// One second of the run, over all threads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TimelinePoint {
    /// End of the second, counted from the start of the load phase.
    pub t_s: u64,
    /// `warmup`, `measure` or `drain`.
    pub phase: String,
    /// Messages (or cycles) completed in that second.
    pub messages_per_sec: f64,
    /// Payload bytes in that second.
    pub bytes_per_sec: f64,
    /// Errors in that second.
    pub errors: u64,
    /// Median latency of that second, µs.
    pub p50_us: f64,
    /// 99th percentile of that second, µs.
    pub p99_us: f64,
    /// 99.9th percentile of that second, µs.
    #[serde(default)]
    pub p999_us: f64,
    /// Wall-clock end of the second, ms since the Unix epoch (what `loadgen merge`
    /// aligns workers' timelines on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_unix_ms: Option<u64>,
    /// Sessions open at the end of the second (runs that open and close sessions
    /// along `--stages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_sessions: Option<u64>,
    /// The stage plan's mean level over the second (rate or sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    /// loadgen's CPU seconds (user + system, all threads) in that second, sampled when
    /// the second's figures arrived (so approximately aligned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadgen_cpu_s: Option<f64>,
    /// The part of the run (the default suite's phase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    /// The second's primary latency, base64 HdrHistogram V2 deflate (ns), so merged
    /// timelines get exact per-second percentiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hist: Option<String>,
}

/// The measured samples of one second of the load phase (for the interval log).
#[derive(Debug, Clone)]
pub struct WindowInterval {
    /// Start of the second (clipped to the window).
    pub start: SystemTime,
    /// Its length inside the window.
    pub len: Duration,
    /// The samples.
    pub hist: Histogram<u64>,
}

/// The load phase on the wall clock, ms since the Unix epoch.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct WallWindow {
    /// Start of the load phase (warm-up).
    pub go_unix_ms: u64,
    /// Start of the measured window, as planned (`--start-at-ms`, or setup + warm-up).
    pub start_unix_ms: u64,
    /// End of the measured window.
    pub end_unix_ms: u64,
    /// Start of the measured window as it happened: each worker thread reads the wall
    /// clock when its coordinator wakes at the planned start; this is the latest reading,
    /// the instant by which every thread had passed it. A stalled or CPU-starved worker
    /// shows here, where the plan cannot. Absent in older reports and when a thread ended
    /// before the start; a merged report holds the latest of its inputs'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_start_unix_ms: Option<u64>,
}

/// What a run produced.
#[derive(Debug)]
pub struct RunOutcome {
    /// All threads merged.
    pub result: ThreadResult,
    /// The window, if setup completed.
    pub window: Option<Window>,
    /// Per-second figures.
    pub timeline: Vec<TimelinePoint>,
    /// Sessions established during setup.
    pub established: u64,
    /// Start of setup (the reference for timestamps carried between threads).
    pub epoch: Instant,
    /// The wall clock at `epoch`.
    pub epoch_unix: SystemTime,
    /// Seconds from the first connect to the start of the load phase.
    pub setup_s: f64,
    /// Seconds from the first connect until every session was established (or failed).
    pub ready_s: f64,
    /// CPU figures.
    pub cpu: CpuReport,
    /// The configuration the run used.
    pub cfg: RunConfig,
    /// The window on the wall clock.
    pub wall: Option<WallWindow>,
    /// Per-second histograms of the measured samples, for `--interval-log`.
    pub intervals: Vec<WindowInterval>,
    /// Why the run is not valid beyond the counted errors (a missed start instant).
    pub problems: Vec<String>,
}

/// Why the harness could not run.
#[derive(Debug, Error)]
pub enum RunError {
    /// A worker thread could not start or build its runtime.
    #[error("worker thread {0}: {1}")]
    Thread(usize, String),
    /// A worker thread panicked.
    #[error("worker thread {0} panicked")]
    Panicked(usize),
}

/// Runs `body` on every worker thread and gathers the results.
pub fn run<F, Fut>(cfg: RunConfig, key: Key, body: F) -> Result<RunOutcome, RunError>
where
    F: Fn(Rc<ThreadCtx>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let nthreads = cfg.threads.max(1);
    let shared = Arc::new(Shared::new(
        RunConfig {
            threads: nthreads,
            ..cfg
        },
        key,
    ));
    let start_deadline = shared.cfg.start_at.map(|t| shared.instant_of(t));
    let body = Arc::new(body);
    let (tx, rx) = mpsc::channel::<Interval>();
    let mut handles = Vec::with_capacity(nthreads);
    for idx in 0..nthreads {
        let (shared, body, tx) = (shared.clone(), body.clone(), tx.clone());
        let h = std::thread::Builder::new()
            .name(format!("loadgen-{idx}"))
            .spawn(move || worker(idx, shared, tx, move |ctx| body(ctx)))
            .map_err(|e| RunError::Thread(idx, e.to_string()))?;
        handles.push(h);
    }
    drop(tx);
    let mut progress = Progress::new(&shared.cfg);
    let mut timeline = Timeline::new(nthreads, &shared);
    let mut cpu_start: Option<(Instant, CpuTimes, Option<CpuTimes>)> = None;
    let mut cpu_last = cpu::self_times().unwrap_or_default();
    loop {
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok(iv) => {
                if let Some(p) = timeline.add(iv, shared.window.get()) {
                    let now = cpu::self_times().unwrap_or_default();
                    timeline.set_cpu(now.since(cpu_last).total().as_secs_f64());
                    cpu_last = now;
                    progress.tick(&p, &shared);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if cpu_start.is_none() {
            if let Some(w) = shared.window.get() {
                // `go` is set 100 ms ahead, so this sample lands at the start.
                std::thread::sleep(w.go.saturating_duration_since(Instant::now()));
                let server = shared.cfg.server_pid.and_then(|p| cpu::pid_times(p).ok());
                cpu_last = cpu::self_times().unwrap_or_default();
                cpu_start = Some((Instant::now(), cpu_last, server));
            } else {
                progress.setup(&shared);
            }
        }
        // A worker that ended before the start failed (its coordinator waits for the
        // start otherwise): release the others instead of leaving them at their gates.
        if shared.window.get().is_none() && handles.iter().any(|h| h.is_finished()) {
            shared.abort.store(true, Ordering::Release);
        }
        // Setup still running at the start instant: this worker cannot measure the
        // window the others measure.
        if let Some(at) = start_deadline {
            if shared.window.get().is_none()
                && !shared.abort.load(Ordering::Acquire)
                && Instant::now() >= at
            {
                set_problem(
                    &shared,
                    format!(
                        "setup was not complete at the --start-at-ms instant ({} of {} sessions established)",
                        shared.established.load(Ordering::Relaxed),
                        shared.cfg.sessions
                    ),
                );
                shared.abort.store(true, Ordering::Release);
            }
        }
    }
    let end = Instant::now();
    let cpu_end = cpu::self_times().unwrap_or_default();
    let server_end = shared.cfg.server_pid.and_then(|p| cpu::pid_times(p).ok());
    let mut merged: Option<ThreadResult> = None;
    for (idx, h) in handles.into_iter().enumerate() {
        let r = h.join().map_err(|_| RunError::Panicked(idx))??;
        match &mut merged {
            None => merged = Some(r),
            Some(m) => m.merge(&r),
        }
    }
    progress.finish();
    let result = merged.expect("at least one thread");
    let window = shared.window.get().copied();
    let cpu = match cpu_start {
        Some((t0, c0, s0)) => CpuReport::new(
            end - t0,
            result.total_messages,
            cpu_end.since(c0),
            shared.cfg.server_pid,
            s0.zip(server_end).map(|(a, b)| b.since(a)),
        ),
        None => CpuReport::default(),
    };
    let wall = window.map(|w| WallWindow {
        go_unix_ms: unix_ms(shared.unix_of(w.go)),
        start_unix_ms: unix_ms(shared.unix_of(w.measure_start)),
        end_unix_ms: unix_ms(shared.unix_of(w.end)),
        observed_start_unix_ms: (shared.started_threads.load(Ordering::Acquire) == nthreads).then(
            || {
                let late = Duration::from_nanos(shared.started_late_ns.load(Ordering::Acquire));
                unix_ms(shared.epoch_unix + late)
            },
        ),
    });
    let problems = shared
        .start_problem
        .lock()
        .expect("not poisoned")
        .iter()
        .cloned()
        .collect();
    let (timeline, intervals) = timeline.finish();
    Ok(RunOutcome {
        timeline,
        intervals,
        wall,
        problems,
        cfg: shared.cfg.clone(),
        established: shared.established.load(Ordering::Relaxed),
        epoch: shared.epoch,
        epoch_unix: shared.epoch_unix,
        setup_s: window.map_or(0.0, |w| (w.go - shared.epoch).as_secs_f64()),
        ready_s: shared
            .ready
            .get()
            .map_or(0.0, |t| (*t - shared.epoch).as_secs_f64()),
        result,
        window,
        cpu,
    })
}

fn worker<Fut: Future<Output = ()> + 'static>(
    idx: usize,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Interval>,
    body: impl FnOnce(Rc<ThreadCtx>) -> Fut,
) -> Result<ThreadResult, RunError> {
    let cfg = &shared.cfg;
    if !cfg.cpus.is_empty() {
        let cpu = cfg.cpus[idx % cfg.cpus.len()];
        monoio::utils::bind_to_cpu_set([cpu])
            .map_err(|e| RunError::Thread(idx, format!("pin to CPU {cpu}: {e:?}")))?;
    }
    let mut rt = runtime(cfg.ring).map_err(|e| RunError::Thread(idx, format!("runtime: {e}")))?;
    let nhists = cfg.hist_names.len();
    let ctx = Rc::new(ThreadCtx {
        idx,
        key: Arc::new(shared.key.clone()),
        rec: RefCell::new(Recorder::new(nhists)),
        gate: Gate::default(),
        window: Cell::new(None),
        pending_setup: Cell::new(0),
        setup_done: Gate::default(),
        finished: Cell::new(false),
        watched: RefCell::new(HashMap::new()),
        expired: Cell::new(false),
        shared: shared.clone(),
    });
    let mine = if cfg.setup {
        ctx.my_sessions().count()
    } else {
        0
    };
    ctx.pending_setup.set(mine);
    if mine == 0 {
        ctx.setup_done.open();
    }
    rt.block_on(async {
        let coord = monoio::spawn(coordinator(ctx.clone(), tx));
        body(ctx.clone()).await;
        ctx.finished.set(true);
        // Unblock the coordinator if every session failed before the start.
        ctx.setup_done.open();
        coord.await;
    });
    let rec = ctx.rec.replace(Recorder::new(nhists));
    Ok(rec.finish())
}

/// Completion queue size with the coop modes (their completions are reaped in batches).
const CQ_ENTRIES: u32 = 32768;

/// A worker's runtime: io_uring (set up as `ring` says) with the legacy driver as the
/// fallback, and the timer.
pub fn runtime(
    ring: RingMode,
) -> std::io::Result<
    monoio::FusionRuntime<
        monoio::time::TimeDriver<monoio::IoUringDriver>,
        monoio::time::TimeDriver<monoio::LegacyDriver>,
    >,
> {
    let mut urb = io_uring::IoUring::builder();
    match ring {
        RingMode::Plain => {}
        RingMode::Coop => {
            urb.setup_coop_taskrun()
                .setup_taskrun_flag()
                .setup_cqsize(CQ_ENTRIES);
        }
        RingMode::Defer => {
            urb.setup_coop_taskrun()
                .setup_taskrun_flag()
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_cqsize(CQ_ENTRIES);
        }
    }
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(4096)
        .uring_builder(urb)
        .enable_timer()
        .build()
}

/// Setup barrier, start, the deadline watch, and the once-a-second interval reports of
/// one thread.
async fn coordinator(ctx: Rc<ThreadCtx>, tx: mpsc::Sender<Interval>) {
    let shared = &ctx.shared;
    ctx.setup_done.wait().await;
    let nthreads = shared.cfg.threads;
    if shared.threads_ready.fetch_add(1, Ordering::AcqRel) + 1 == nthreads {
        let _ = shared.ready.set(Instant::now());
        if let Some(w) = start_window(shared) {
            let _ = shared.window.set(w);
        } else {
            shared.abort.store(true, Ordering::Release);
        }
    }
    let w = loop {
        if let Some(w) = shared.window.get() {
            break *w;
        }
        if shared.abort.load(Ordering::Acquire) {
            // An empty window in the past: sessions waiting at the gate end at once
            // (nothing is measured; the run reports why).
            let now = Instant::now();
            ctx.window.set(Some(Window {
                go: now,
                measure_start: now,
                end: now,
            }));
            ctx.finished.set(true);
            ctx.gate.open();
            return;
        }
        monoio::time::sleep(Duration::from_millis(1)).await;
    };
    ctx.window.set(Some(w));
    ctx.rec.borrow_mut().set_window(w);
    monoio::time::sleep_until(w.go.into()).await;
    ctx.gate.open();
    let deadline = w.end + shared.cfg.drain;
    let mut second = 0u64;
    let mut started = false;
    loop {
        let tick = w.go + Duration::from_secs(second + 1);
        // Sleep in short steps so a finished thread reports without waiting a second.
        while Instant::now() < tick && !ctx.finished.get() {
            let mut step = tick.min(Instant::now() + Duration::from_millis(20));
            if !started {
                step = step.min(w.measure_start);
            }
            monoio::time::sleep_until(step.into()).await;
            let now = Instant::now();
            if !started && now >= w.measure_start {
                started = true;
                let ns = now.saturating_duration_since(shared.epoch).as_nanos() as u64;
                shared.started_late_ns.fetch_max(ns, Ordering::AcqRel);
                shared.started_threads.fetch_add(1, Ordering::AcqRel);
            }
            if !ctx.expired.get() && Instant::now() >= deadline {
                ctx.expire();
            }
        }
        let iv = ctx.rec.borrow_mut().take_interval(ctx.idx, second);
        let _ = tx.send(iv);
        second += 1;
        if ctx.finished.get() {
            break;
        }
    }
}

/// The window of a run whose setup just completed: 100 ms from now plus the warm-up, or
/// with `--start-at-ms` the measured window starts at that instant (warm-up before it,
/// shortened if setup took longer). `None` (and the reason recorded) when the instant
/// has already passed.
fn start_window(shared: &Shared) -> Option<Window> {
    let cfg = &shared.cfg;
    let now = Instant::now();
    let Some(at) = cfg.start_at else {
        let go = now + Duration::from_millis(100);
        let measure_start = go + cfg.warmup;
        return Some(Window {
            go,
            measure_start,
            end: measure_start + cfg.duration,
        });
    };
    let measure_start = shared.instant_of(at);
    let earliest = now + Duration::from_millis(10);
    if measure_start < earliest {
        set_problem(
            shared,
            format!(
                "setup finished {:.0} ms after the --start-at-ms instant",
                (earliest - measure_start).as_secs_f64() * 1e3
            ),
        );
        return None;
    }
    let go = measure_start
        .checked_sub(cfg.warmup)
        .unwrap_or(now)
        .max(earliest);
    Some(Window {
        go,
        measure_start,
        end: measure_start + cfg.duration,
    })
}

fn set_problem(shared: &Shared, p: String) {
    let mut slot = shared.start_problem.lock().expect("not poisoned");
    slot.get_or_insert(p);
}
