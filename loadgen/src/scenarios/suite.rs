//! The default suite, what `loadgen --sessions N --unix PATH` runs with no scenario: one
//! set of sessions is established (the connect rate), then measured phase after phase,
//! each `--duration` long:
//!
//! 1. `echo`: every session in strict ping-pong (depth 1), replies verified by bytes;
//! 2. `heartbeat`: every session pings every `--interval` (staggered): pong latency and
//!    missed ticks across all of them;
//! 3. `churn`: `--churn-loops` loops connect, hand-shake, disconnect and close while the
//!    established sessions stay connected (they keep heartbeating, unmeasured).
//!
//! The warm-up before the first phase is echo load. One report holds every phase: a
//! histogram each (`echo_latency`, `pong_latency`, `churn_handshake`, and the setup's
//! `setup_handshake`), the per-phase figures in `extra`, and a short verdict per figure.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use monoio::io::Splitable;
use serde_json::{json, Value};
use sockchat_proto::frame::FrameType;
use sockchat_proto::header::OCTET_STREAM;
use sockchat_proto::Deframer;
use std::os::fd::AsRawFd;

use super::{establish, finish, load_key, pattern, run_config, say_goodbye};
use super::{Finished, ScenarioError};
use crate::cli::SuiteArgs;
use crate::client::{self, check_session, is_pong, FrameReader, SessionError};
use crate::echo_wire::{EchoReader, Take};
use crate::runner::{self, ThreadCtx};
use crate::stats::{ns_between, Window};
use crate::sync::join2;

const HISTS: &[&str] = &[
    "echo_latency",
    "pong_latency",
    "churn_handshake",
    "setup_handshake",
];
const ECHO: usize = 0;
const PONG: usize = 1;
const CHURN: usize = 2;
const SIZE: usize = 64;

#[derive(Debug)]
struct Params {
    phase: Duration,
    interval: Duration,
    loops: usize,
}

/// The phases' ends, from the window.
fn ends(w: &Window, phase: Duration) -> (Instant, Instant) {
    (w.measure_start + phase, w.measure_start + phase * 2)
}

/// Runs the suite.
pub fn run(a: &SuiteArgs) -> Result<Finished, ScenarioError> {
    let interval = Duration::try_from_secs_f64(a.interval)
        .ok()
        .filter(|d| *d >= Duration::from_millis(1))
        .ok_or_else(|| ScenarioError::Config("--interval must be >= 0.001 s".into()))?;
    let phase = super::secs(a.common.duration, "duration")?;
    let mut common = a.common.clone();
    // --duration is each phase's; the measured window holds all three.
    common.duration = a.common.duration * 3.0;
    let mut cfg = run_config(&common, "suite", HISTS, true)?;
    let d = a.common.duration;
    cfg.parts = vec![("echo", d), ("heartbeat", 2.0 * d), ("churn", 3.0 * d)];
    let loops = cfg.shard.share(a.churn_loops);
    // Unknown limit: let the connects themselves fail, counted, rather than refuse here.
    let limit = sockchat_os::raise_nofile_limit().unwrap_or(u64::MAX);
    let need = (cfg.sessions + loops) as u64 + 4 * cfg.threads as u64 + 16;
    if need > limit {
        return Err(ScenarioError::Config(format!(
            "{} sessions and {loops} churn loops need about {need} open files; the limit is {limit} (ulimit -n)",
            cfg.sessions
        )));
    }
    let key = load_key(a.common.key_file.as_deref())?;
    let p = Arc::new(Params {
        phase,
        interval,
        loops,
    });
    let body = p.clone();
    let outcome = runner::run(cfg, key, move |ctx| thread(ctx, body.clone()))?;
    let extra = figures(&outcome, a, &p);
    Ok(finish("suite", outcome, HISTS, extra))
}

async fn thread(ctx: Rc<ThreadCtx>, p: Arc<Params>) {
    let n = ctx.cfg().threads;
    let mut handles: Vec<_> = ctx
        .my_sessions()
        .map(|i| monoio::spawn(session(ctx.clone(), p.clone(), i)))
        .collect();
    for l in (ctx.idx..p.loops).step_by(n) {
        handles.push(monoio::spawn(churn_loop(ctx.clone(), p.clone(), l)));
    }
    for h in handles {
        h.await;
    }
}

async fn session(ctx: Rc<ThreadCtx>, p: Arc<Params>, i: usize) {
    let Some(est) = establish(&ctx, i, &[], 3).await else {
        return;
    };
    let sid = est.session_id.clone();
    let content = pattern(i, SIZE);
    let wire = client::frame(&ctx.key, FrameType::Message, OCTET_STREAM, &sid, &content);
    let (conn, mut deframer) = est.reader.into_parts();
    let watch = ctx.watch(i, conn.as_raw_fd());
    let (rd, mut wr) = conn.into_split();
    let mut echo = EchoReader::new(
        rd,
        deframer.take_buffer(),
        4096,
        ctx.key.clone(),
        sid.clone(),
    );
    let w = ctx.wait_go().await;
    let (echo_end, _) = ends(&w, p.phase);
    // Warm-up and phase 1: ping-pong, each write submitted with the read of its reply.
    let res: Result<(), &'static str> = async {
        loop {
            let sent = Instant::now();
            let (wrote, got) = join2(
                client::write(&mut wr, wire.clone()),
                echo.reply(&wire, &content),
            )
            .await;
            wrote.map_err(|e| e.kind())?;
            let now = Instant::now();
            match got.map_err(|e| e.kind())? {
                Take::Echo => {
                    ctx.rec
                        .borrow_mut()
                        .sample_to(ECHO, now, ns_between(sent, now), SIZE as u64)
                }
                Take::Mismatch => ctx.error(SessionError::EchoMismatch.kind()),
                Take::Need => {}
            }
            if now >= echo_end {
                return Ok(());
            }
        }
    }
    .await;
    if let Err(kind) = res {
        ctx.error(if ctx.expired() { "timeout" } else { kind });
        return;
    }
    let slow = echo.slow_path();
    let (rd, rest) = echo.into_parts();
    let mut d = Deframer::default();
    d.extend_from_slice(&rest);
    let mut reader = FrameReader::with_deframer(rd, d, ctx.key.clone());
    // Phases 2 and 3: heartbeat; measured in phase 2 only.
    let offset = p.interval.mul_f64(i as f64 / ctx.cfg().sessions as f64);
    heartbeat(&ctx, &p, &mut reader, &mut wr, &sid, w, offset).await;
    ctx.rec.borrow_mut().count("echo_slow_path", slow);
    say_goodbye(&mut wr, &ctx.key, &sid).await;
    drop(watch);
}

/// Pings every interval from the heartbeat phase's start to the window's end; pong
/// latencies and ticks count in the heartbeat phase only.
async fn heartbeat<R: monoio::io::AsyncReadRent, W: monoio::io::AsyncWriteRent>(
    ctx: &ThreadCtx,
    p: &Params,
    reader: &mut FrameReader<R>,
    wr: &mut W,
    sid: &sockchat_proto::ByteStr,
    w: Window,
    offset: Duration,
) {
    let (hb_start, hb_end) = ends(&w, p.phase);
    let ping: Bytes = client::ping(&ctx.key, sid);
    let pong_timeout = (p.interval * 3).max(Duration::from_secs(5));
    let tick_at = |k: u64| hb_start + offset + p.interval.mul_f64(k as f64);
    let measured = |t: Instant| t >= hb_start && t < hb_end;
    let (mut k, mut ticks, mut missed) = (0u64, 0u64, 0u64);
    while tick_at(k) < w.end {
        let sched = tick_at(k);
        monoio::time::sleep_until(sched.into()).await;
        let sent = Instant::now();
        if measured(sched) {
            ticks += 1;
        }
        if let Err(e) = client::write(wr, ping.clone()).await {
            ctx.error(e.kind());
            break;
        }
        let frame = match monoio::time::timeout(pong_timeout, reader.next()).await {
            Err(_) => {
                ctx.error(SessionError::Timeout.kind());
                break;
            }
            Ok(Err(e)) => {
                ctx.error(e.kind());
                break;
            }
            Ok(Ok(f)) => f,
        };
        if let Err(e) = check_session(&frame, sid) {
            ctx.error(e.kind());
            break;
        }
        if !is_pong(&frame) {
            ctx.error("bad_pong");
            break;
        }
        let now = Instant::now();
        if measured(sched) {
            ctx.rec
                .borrow_mut()
                .sample_to(PONG, now, ns_between(sent, now), 4);
        }
        // Ticks whose time passed while waiting were missed.
        k += 1;
        while tick_at(k) <= now && tick_at(k) < w.end {
            if measured(tick_at(k)) {
                ticks += 1;
                missed += 1;
            }
            k += 1;
        }
    }
    // Closes wait for the end, so they are not measured as churn-phase load.
    monoio::time::sleep_until(w.end.into()).await;
    let mut rec = ctx.rec.borrow_mut();
    rec.count("ticks", ticks);
    rec.count("missed_ticks", missed);
}

/// A churn loop of the third phase.
async fn churn_loop(ctx: Rc<ThreadCtx>, p: Arc<Params>, l: usize) {
    let w = ctx.wait_go().await;
    let (_, start) = ends(&w, p.phase);
    // Staggered starts, 1 ms apart, so the loops do not connect in one burst.
    monoio::time::sleep_until((start + Duration::from_millis(l as u64)).into()).await;
    while Instant::now() < w.end {
        let t0 = Instant::now();
        match monoio::time::timeout(
            ctx.cfg().connect_timeout,
            super::churn::cycle(&ctx, true, t0),
        )
        .await
        {
            Ok(Ok(hs)) => {
                let now = Instant::now();
                ctx.rec.borrow_mut().sample_to(CHURN, now, hs, 0);
            }
            Ok(Err(e)) => {
                ctx.error(e.kind());
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => ctx.error("timeout"),
        }
    }
}

/// Per-phase figures and a verdict for each.
fn figures(o: &runner::RunOutcome, a: &SuiteArgs, p: &Params) -> BTreeMap<String, Value> {
    let r = &o.result;
    let d = p.phase.as_secs_f64();
    let n = |i: usize| r.hists[i].len();
    let q = |i: usize, q: f64| {
        if r.hists[i].is_empty() {
            0.0
        } else {
            r.hists[i].value_at_quantile(q) as f64 / 1000.0
        }
    };
    let sessions = o.cfg.sessions;
    let connect_rate = if o.ready_s > 0.0 {
        o.established as f64 / o.ready_s
    } else {
        0.0
    };
    let echo_rate = n(ECHO) as f64 / d;
    let churn_rate = n(CHURN) as f64 / d;
    let ticks = r.counters.get("ticks").copied().unwrap_or(0);
    let missed = r.counters.get("missed_ticks").copied().unwrap_or(0);
    // loadgen's CPU during the echo phase: the seconds of that part.
    let echo_secs: Vec<f64> = o
        .timeline
        .iter()
        .filter(|t| t.part.as_deref() == Some("echo"))
        .filter_map(|t| t.loadgen_cpu_s)
        .collect();
    let busy = if echo_secs.is_empty() {
        0.0
    } else {
        echo_secs.iter().sum::<f64>() / (echo_secs.len() as f64 * o.cfg.threads as f64)
    };
    let mut v = Vec::new();
    let ramp = o.cfg.ramp;
    v.push(format!(
        "connect    {}/{} sessions in {:.2} s = {:.0}/s: {}",
        o.established,
        sessions,
        o.ready_s,
        connect_rate,
        if o.established < sessions as u64 {
            "NOT all sessions connected".to_string()
        } else if ramp > 0.0 && o.ready_s <= 1.1 * (sessions.saturating_sub(1)) as f64 / ramp + 0.1
        {
            format!("paced by --ramp {ramp:.0}; raise it to find the server's connect rate")
        } else {
            "below the --ramp pace: connecting was the bottleneck".to_string()
        }
    ));
    v.push(format!(
        "echo       {echo_rate:.0} msg/s over {sessions} sessions (64 B, depth 1), p50 {:.0} µs, p99 {:.0} µs: {}",
        q(ECHO, 0.5),
        q(ECHO, 0.99),
        if busy >= crate::merge::SATURATED {
            format!("loadgen used {:.0}% of its threads' CPU in this phase, so this is at least partly loadgen's limit; split it with --shard over more cores or machines", busy * 100.0)
        } else {
            format!("loadgen used {:.0}% of its threads' CPU in this phase: the limit is the server's (or the machine's, if they share it)", busy * 100.0)
        }
    ));
    let pct = q(PONG, 0.99) / (p.interval.as_secs_f64() * 1e6) * 100.0;
    v.push(format!(
        "heartbeat  {sessions} sessions every {} s: pong p50 {:.0} µs, p99 {:.0} µs ({pct:.2}% of the interval), {missed} of {ticks} ticks missed: {}",
        a.interval,
        q(PONG, 0.5),
        q(PONG, 0.99),
        if missed > 0 {
            "ticks missed: the server (or loadgen) fell a whole interval behind"
        } else if pct <= 1.0 {
            "on time"
        } else if pct <= 10.0 {
            "late at the tail"
        } else {
            "late: the tail is a large part of the interval"
        }
    ));
    v.push(format!(
        "churn      {churn_rate:.0} sessions/s from {} loops while {sessions} sessions stayed connected, handshake p99 {:.0} µs",
        p.loops,
        q(CHURN, 0.99)
    ));
    let errors = r.error_total();
    v.push(if errors == 0 {
        "errors     none".to_string()
    } else {
        format!("errors     {errors}: see the error counts")
    });
    let mut extra = BTreeMap::new();
    extra.insert("phase_s".into(), json!(d));
    extra.insert("interval_s".into(), json!(a.interval));
    extra.insert("churn_loops".into(), json!(p.loops));
    extra.insert("connects_per_sec".into(), json!(connect_rate));
    extra.insert("echo_messages_per_sec".into(), json!(echo_rate));
    extra.insert("ticks".into(), json!(ticks));
    extra.insert("missed_ticks".into(), json!(missed));
    extra.insert("sessions_per_sec".into(), json!(churn_rate));
    extra.insert("verdicts".into(), json!(v));
    extra
}
