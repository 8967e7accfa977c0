//! The scenarios. Each module provides `run(&Args) -> Result<Finished, ScenarioError>`
//! built on the [`runner`](crate::runner) harness.

pub mod churn;
pub mod echo;
pub mod fanout;
pub mod heartbeat;
pub mod rate;
pub mod raw;
pub mod rooms;
pub mod suite;

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use monoio::io::AsyncWriteRent;
use serde_json::Value;
use sockchat_proto::{ByteStr, Key};
use thiserror::Error;

use crate::cli::CommonArgs;
use crate::client::{self, Established, SessionError};
use crate::conn::Target;
use crate::runner::{RunConfig, RunError, RunOutcome, ThreadCtx};
use crate::stages::Stages;
use crate::stats::ns_between;

/// Why a scenario could not run (as opposed to errors measured during the run, which
/// are counted in the report).
#[derive(Debug, Error)]
pub enum ScenarioError {
    /// Invalid options.
    #[error("invalid options: {0}")]
    Config(String),
    /// The key file was refused (unreadable, readable by group or others, or empty).
    #[error(transparent)]
    Key(#[from] sockchat_os::KeyFileError),
    /// The harness failed.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// A finished scenario run: the harness outcome plus what only this scenario knows.
#[derive(Debug)]
pub struct Finished {
    /// Scenario name.
    pub scenario: &'static str,
    /// The harness outcome.
    pub outcome: RunOutcome,
    /// Sessions really established (for churn: loops that completed a cycle).
    pub established: u64,
    /// Histogram names, in the outcome's order; the first is the primary latency.
    pub hist_names: Vec<&'static str>,
    /// Scenario-specific results (requested rate, missed ticks, ...).
    pub extra: BTreeMap<String, Value>,
}

impl Finished {
    /// The histogram whose samples the per-second figures (and the interval log) hold:
    /// the primary latency, except for fan-out, whose primary latency (last delivery)
    /// is computed after the run from the per-delivery samples.
    pub fn sampled_name(&self) -> &'static str {
        match self.scenario {
            "fanout" => self.hist_names[1],
            _ => self.hist_names[0],
        }
    }
}

/// Reads the key: `path` if given, by the rules the server and client read it with
/// ([`sockchat_os::read_key_file`]), else the reference default.
pub fn load_key(path: Option<&Path>) -> Result<Key, ScenarioError> {
    match path {
        Some(path) => Ok(sockchat_os::read_key_file(path)?),
        None => Ok(Key::reference_default()),
    }
}

fn secs(s: f64, what: &str) -> Result<Duration, ScenarioError> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| ScenarioError::Config(format!("--{what} must be a non-negative number")))
}

/// Builds the harness configuration from the common options.
pub fn run_config(
    c: &CommonArgs,
    scenario: &'static str,
    hist_names: &[&'static str],
    setup: bool,
) -> Result<RunConfig, ScenarioError> {
    if c.sessions == 0 {
        return Err(ScenarioError::Config(
            "--sessions must be at least 1".into(),
        ));
    }
    let shard = c.shard.unwrap_or_default();
    run_config_for(c, scenario, hist_names, setup, shard.share(c.sessions))
}

/// Like [`run_config`] with this worker's session count given (fan-out deals its
/// receivers out, not its sessions).
pub fn run_config_for(
    c: &CommonArgs,
    scenario: &'static str,
    hist_names: &[&'static str],
    setup: bool,
    sessions: usize,
) -> Result<RunConfig, ScenarioError> {
    let shard = c.shard.unwrap_or_default();
    if sessions == 0 {
        return Err(ScenarioError::Config(format!(
            "shard {shard} of --sessions {} gets no sessions",
            c.sessions
        )));
    }
    if c.duration <= 0.0 {
        return Err(ScenarioError::Config("--duration must be positive".into()));
    }
    if c.ramp < 0.0 || !c.ramp.is_finite() {
        return Err(ScenarioError::Config("--ramp must be >= 0".into()));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = c.threads.unwrap_or(cores).clamp(1, sessions);
    // One descriptor per session, plus each thread's ring, eventfd and timer, stdio and
    // a few for the report.
    let need = sessions as u64 + 4 * threads as u64 + 16;
    // Unknown limit: let the connects themselves fail, counted, rather than refuse here.
    let limit = sockchat_os::raise_nofile_limit().unwrap_or(u64::MAX);
    if need > limit {
        return Err(ScenarioError::Config(format!(
            "{sessions} sessions need about {need} open files; the limit is {limit} (ulimit -n)"
        )));
    }
    Ok(RunConfig {
        scenario,
        target: c.target.target(),
        sessions,
        threads,
        ramp: shard.rate(c.ramp),
        warmup: secs(c.warmup, "warmup")?,
        duration: secs(c.duration, "duration")?,
        connect_timeout: secs(c.connect_timeout, "connect-timeout")?,
        drain: secs(c.drain, "drain")?,
        cpus: c.cpus.clone(),
        progress: !c.quiet,
        hist_names: hist_names.to_vec(),
        setup,
        server_pid: c.server_pid,
        ring: c.ring,
        shard,
        start_at: c
            .start_at_ms
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        stages: None,
        parts: Vec::new(),
    })
}

/// Harness configuration for a run whose sessions open and close along `st`: no setup
/// phase, and the plan is the measured window (no warm-up). This worker's sessions are
/// its share of the plan's peak, dealt out interleaved: its local session `j` is the
/// run's session `j * workers + index` (see [`stage_threshold`]), so every worker opens
/// and closes sessions at the same pace.
pub fn staged_config(
    c: &CommonArgs,
    scenario: &'static str,
    hist_names: &[&'static str],
    st: &Stages,
) -> Result<RunConfig, ScenarioError> {
    let mut common = c.clone();
    common.warmup = 0.0;
    common.duration = st.total().as_secs_f64();
    let peak = st.max().ceil() as usize;
    if peak == 0 {
        return Err(ScenarioError::Config(
            "--stages never opens a session".into(),
        ));
    }
    common.sessions = peak;
    let shard = common.shard.unwrap_or_default();
    let mut cfg = run_config_for(&common, scenario, hist_names, false, shard.share(peak))?;
    cfg.stages = Some(st.clone());
    Ok(cfg)
}

/// The stage level above which this worker's session `i` is open.
pub fn stage_threshold(ctx: &ThreadCtx, i: usize) -> f64 {
    let shard = ctx.cfg().shard;
    (i * shard.count + shard.index) as f64
}

/// Session `i`'s part of setup: waits for its connect slot, connects and hand-shakes
/// within the connect timeout, records the handshake time into histogram `hist`, and
/// tells the harness. `None` when it failed (already counted).
pub async fn establish(
    ctx: &ThreadCtx,
    i: usize,
    features: &[&'static str],
    hist: usize,
) -> Option<Established> {
    let target = ctx.cfg().target.clone();
    establish_with(ctx, i, &target, features, hist, |est| async { Ok(est) }).await
}

/// [`establish`] to `target`, with `then` (e.g. joining a room) part of the session's
/// setup: inside the same connect timeout, before the session counts as ready.
pub async fn establish_with<F, Fut>(
    ctx: &ThreadCtx,
    i: usize,
    target: &Target,
    features: &[&'static str],
    hist: usize,
    then: F,
) -> Option<Established>
where
    F: FnOnce(Established) -> Fut,
    Fut: std::future::Future<Output = Result<Established, SessionError>>,
{
    monoio::time::sleep_until(ctx.slot(i).into()).await;
    let t0 = Instant::now();
    let res = monoio::time::timeout(ctx.cfg().connect_timeout, async {
        then(client::handshake(target, ctx.key.clone(), features).await?).await
    })
    .await;
    match res {
        Ok(Ok(est)) => {
            ctx.rec
                .borrow_mut()
                .record_always(hist, ns_between(t0, Instant::now()));
            ctx.session_ready();
            Some(est)
        }
        Ok(Err(e)) => {
            ctx.session_failed(e.kind());
            None
        }
        Err(_) => {
            ctx.session_failed("setup_timeout");
            None
        }
    }
}

/// Sends `disconnect` (best effort, bounded: the session is over either way).
pub async fn say_goodbye<W: AsyncWriteRent>(w: &mut W, key: &Key, sid: &ByteStr) {
    let _ = monoio::time::timeout(
        Duration::from_secs(1),
        client::write(w, client::disconnect(key, sid)),
    )
    .await;
}

/// Deterministic content for session `i`, different per session so a reply delivered
/// to the wrong session is caught.
pub fn pattern(i: usize, len: usize) -> Bytes {
    let seed = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// Spawns `f(i)` for every session of this thread and waits for all of them.
pub async fn for_each_session<F, Fut>(ctx: &Rc<ThreadCtx>, f: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let handles: Vec<_> = ctx.my_sessions().map(|i| monoio::spawn(f(i))).collect();
    for h in handles {
        h.await;
    }
}

/// Runs the harness and wraps its outcome.
pub fn finish(
    scenario: &'static str,
    outcome: RunOutcome,
    hist_names: &[&'static str],
    extra: BTreeMap<String, Value>,
) -> Finished {
    Finished {
        scenario,
        established: outcome.established,
        outcome,
        hist_names: hist_names.to_vec(),
        extra,
    }
}
