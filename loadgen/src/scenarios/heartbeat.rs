//! `heartbeat`: every session pings every `--interval`, session `i` starting
//! `i/sessions` of an interval after the start (staggered, so the server sees a steady
//! stream, not a burst per interval). Reports pong latency and missed ticks: a tick is
//! missed when its ping could not be sent within its interval (loadgen late) or its pong
//! came after the next tick was due (server late). A pong that never comes within
//! `max(3 intervals, 5 s)` is a `timeout` error and ends the session. Ticks and missed
//! ticks count the measured window only (not the warm-up), like the latency figures.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sockchat_proto::frame::FrameType;

use super::{establish, finish, for_each_session, load_key, run_config, say_goodbye};
use super::{staged_config, Finished, ScenarioError};
use crate::cli::HeartbeatArgs;
use crate::client::{self, check_session, is_pong, Established, SessionError};
use crate::runner::{self, ThreadCtx};
use crate::stages::Stages;
use crate::stats::{ns_between, Window};

const HISTS: &[&str] = &["pong_latency", "setup_handshake"];

/// Runs the scenario.
pub fn run(a: &HeartbeatArgs) -> Result<Finished, ScenarioError> {
    let interval = Duration::try_from_secs_f64(a.interval)
        .ok()
        .filter(|d| *d >= Duration::from_millis(1))
        .ok_or_else(|| ScenarioError::Config("--interval must be >= 0.001 s".into()))?;
    let cfg = match &a.stages {
        Some(st) => staged_config(&a.common, "heartbeat", HISTS, st)?,
        None => run_config(&a.common, "heartbeat", HISTS, true)?,
    };
    let key = load_key(a.common.key_file.as_deref())?;
    let p = Arc::new(Params {
        interval,
        stages: a.stages.clone(),
    });
    let outcome = runner::run(cfg, key, move |ctx| thread(ctx, p.clone()))?;
    let mut extra = BTreeMap::new();
    extra.insert("interval_s".into(), json!(a.interval));
    if let Some(st) = &a.stages {
        extra.insert("stages".into(), json!(st.to_string()));
    }
    for name in ["ticks", "missed_ticks"] {
        let v = outcome.result.counters.get(name).copied().unwrap_or(0);
        extra.insert(name.into(), json!(v));
    }
    Ok(finish("heartbeat", outcome, HISTS, extra))
}

#[derive(Debug)]
struct Params {
    interval: Duration,
    stages: Option<Stages>,
}

async fn thread(ctx: Rc<ThreadCtx>, p: Arc<Params>) {
    let c = ctx.clone();
    for_each_session(&ctx, move |i| {
        let (ctx, p) = (c.clone(), p.clone());
        async move {
            match &p.stages {
                Some(st) => staged(ctx, p.interval, st, i).await,
                None => session(ctx, p.interval, i).await,
            }
        }
    })
    .await;
}

async fn session(ctx: Rc<ThreadCtx>, interval: Duration, i: usize) {
    let Some(mut est) = establish(&ctx, i, &[], 1).await else {
        return;
    };
    let w = ctx.wait_go().await;
    let offset = interval.mul_f64(i as f64 / ctx.cfg().sessions as f64);
    beat(&ctx, &mut est, interval, w, w.go + offset, w.end).await;
}

/// Session `i` under `--stages`: open (connect and hand-shake) whenever the stage level
/// rises above it, heartbeat while open, say goodbye and close when the level falls.
async fn staged(ctx: Rc<ThreadCtx>, interval: Duration, st: &Stages, i: usize) {
    let w = ctx.wait_go().await;
    let offset = interval.mul_f64(i as f64 / ctx.cfg().sessions as f64);
    for (a, b) in st.open_intervals(super::stage_threshold(&ctx, i)) {
        let (open, close) = (
            w.go + Duration::from_secs_f64(a),
            (w.go + Duration::from_secs_f64(b)).min(w.end),
        );
        monoio::time::sleep_until(open.into()).await;
        let Some(mut est) = establish(&ctx, i, &[], 1).await else {
            continue;
        };
        ctx.rec.borrow_mut().session_open(1);
        beat(&ctx, &mut est, interval, w, open + offset, close).await;
        drop(est);
        ctx.rec.borrow_mut().session_open(-1);
    }
}

/// Pings every `interval` from `first` until `until`, then says goodbye.
async fn beat(
    ctx: &ThreadCtx,
    est: &mut Established,
    interval: Duration,
    w: Window,
    first: Instant,
    until: Instant,
) {
    let sid = est.session_id.clone();
    let ping = client::ping(&ctx.key, &sid);
    let pong_timeout = (interval * 3).max(Duration::from_secs(5));
    let tick_at = |k: u64| first + interval.mul_f64(k as f64);
    // Ticks (and missed ones) are counted for the measured window only, like latency.
    let counted = |k: u64| {
        let t = tick_at(k);
        t >= w.measure_start && t < w.end
    };
    let (mut k, mut ticks, mut missed) = (0u64, 0u64, 0u64);
    'ticks: loop {
        let sched = tick_at(k);
        if sched >= until {
            // Stay connected until the end: sessions that close as soon as their last
            // tick is done would close all through the window's last interval, and the
            // server's (and loadgen's) work for those closes would show up as the other
            // sessions' pong latency. Closing after the end puts it in the drain.
            monoio::time::sleep_until(until.into()).await;
            break;
        }
        monoio::time::sleep_until(sched.into()).await;
        let sent = Instant::now();
        if sent >= tick_at(k + 1) {
            // The sender itself fell behind by a whole interval: the ticks it slept
            // through are missed; go on with the current one.
            let behind = ((sent - sched).as_secs_f64() / interval.as_secs_f64()) as u64;
            for j in k..k + behind.max(1) {
                if counted(j) {
                    ticks += 1;
                    missed += 1;
                }
            }
            k += behind.max(1);
            continue;
        }
        if counted(k) {
            ticks += 1;
        }
        if let Err(e) = client::write(est.reader.get_mut(), ping.clone()).await {
            ctx.error(e.kind());
            break;
        }
        loop {
            let read = monoio::time::timeout(pong_timeout, est.reader.next()).await;
            let frame = match read {
                Err(_) => {
                    ctx.error(SessionError::Timeout.kind());
                    break 'ticks;
                }
                Ok(Err(e)) => {
                    ctx.error(e.kind());
                    break 'ticks;
                }
                Ok(Ok(f)) => f,
            };
            if let Err(e) = check_session(&frame, &sid) {
                ctx.error(e.kind());
                break 'ticks;
            }
            if !is_pong(&frame) {
                ctx.error(if frame.header.kind == FrameType::Heartbeat {
                    "bad_pong"
                } else {
                    "unexpected_frame"
                });
                continue;
            }
            let now = Instant::now();
            ctx.rec.borrow_mut().sample(now, ns_between(sent, now), 4);
            // Ticks whose time passed while waiting for this pong were missed.
            k += 1;
            while tick_at(k) <= now && tick_at(k) < until {
                if counted(k) {
                    missed += 1;
                    ticks += 1;
                }
                k += 1;
            }
            break;
        }
    }
    {
        let mut rec = ctx.rec.borrow_mut();
        rec.count("ticks", ticks);
        rec.count("missed_ticks", missed);
    }
    say_goodbye(est.reader.get_mut(), &ctx.key, &sid).await;
}
