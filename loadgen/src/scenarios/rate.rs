//! `rate`: open loop at a fixed total rate, spread evenly over sessions and over time:
//! session `i` sends at `go + i/rate + k * sessions/rate`, so consecutive messages of the
//! whole run are `1/rate` apart and nothing is sent in bursts.
//!
//! Latency is measured twice: from the *scheduled* send time (coordinated omission
//! corrected: a stalled server or a late sender shows up as latency, not as fewer
//! samples) and from the actual send time. `send_lag` (actual − scheduled) shows how late
//! the sender itself was; it includes monoio's 1 ms timer granularity, which therefore
//! also bounds the resolution of the scheduled latency from below.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::io::Splitable;
use serde_json::json;
use sockchat_proto::frame::{FrameType, MAX_CONTENT_LEN};
use sockchat_proto::header::OCTET_STREAM;

use super::{establish, finish, for_each_session, load_key, pattern, run_config, say_goodbye};
use super::{Finished, ScenarioError};
use crate::cli::RateArgs;
use crate::client::{self, check_session, FrameReader, SessionError};
use crate::runner::{self, ThreadCtx};
use crate::shard::Shard;
use crate::stages::Stages;
use crate::stats::{ns_between, Window};

const HISTS: &[&str] = &[
    "latency_scheduled",
    "latency_actual",
    "send_lag",
    "setup_handshake",
];

#[derive(Debug)]
struct Params {
    rate: f64,
    size: usize,
}

/// When messages are due, beyond a constant rate.
#[derive(Debug)]
struct Plan {
    /// The run's total stage plan (all shards), from the start of the load phase.
    stages: Option<Stages>,
    /// This worker of the run.
    shard: Shard,
    /// Constant rate: this worker's sends are shifted by `shard.index / rate` so the
    /// workers' sends interleave instead of coinciding.
    shard_offset: Duration,
}

/// Runs the scenario.
pub fn run(a: &RateArgs) -> Result<Finished, ScenarioError> {
    if a.stages.is_none() && !(a.rate > 0.0 && a.rate.is_finite()) {
        return Err(ScenarioError::Config("--rate must be positive".into()));
    }
    if a.size == 0 || a.size as u64 > MAX_CONTENT_LEN {
        return Err(ScenarioError::Config("--size must be 1..=10 MiB".into()));
    }
    let mut common = a.common.clone();
    if let Some(st) = &a.stages {
        common.warmup = 0.0;
        common.duration = st.total().as_secs_f64();
    }
    let mut cfg = run_config(&common, "rate", HISTS, true)?;
    cfg.stages = a.stages.clone();
    let shard = cfg.shard;
    let key = load_key(a.common.key_file.as_deref())?;
    // The mean rate of a stage plan (for the report); a constant rate otherwise.
    let total_rate = a.stages.as_ref().map_or(a.rate, |st| {
        st.cumulative(common.duration) / common.duration
    });
    let p = Arc::new(Params {
        rate: shard.rate(total_rate),
        size: a.size,
    });
    let plan = Arc::new(Plan {
        stages: a.stages.clone(),
        shard,
        shard_offset: if a.stages.is_none() {
            Duration::from_secs_f64(shard.index as f64 / a.rate)
        } else {
            Duration::ZERO
        },
    });
    let outcome = runner::run(cfg, key, move |ctx| thread(ctx, p.clone(), plan.clone()))?;
    let achieved = outcome.result.messages as f64 / common.duration;
    let mut extra = BTreeMap::new();
    extra.insert("requested_rate".into(), json!(shard.rate(total_rate)));
    extra.insert("achieved_rate".into(), json!(achieved));
    extra.insert("size".into(), json!(a.size));
    if let Some(st) = &a.stages {
        extra.insert("stages".into(), json!(st.to_string()));
    }
    Ok(finish("rate", outcome, HISTS, extra))
}

async fn thread(ctx: Rc<ThreadCtx>, p: Arc<Params>, plan: Arc<Plan>) {
    let c = ctx.clone();
    for_each_session(&ctx, move |i| {
        session(c.clone(), p.clone(), plan.clone(), i)
    })
    .await;
}

/// Session `i`'s sends under a stage plan: this worker's local message `n` is the run's
/// message `n * workers + index`, and session `i` of `sessions` sends local messages
/// `i, i + sessions, ...`. Returns the send offsets from the start of the load phase.
fn staged_sends(st: &Stages, shard: Shard, sessions: usize, i: usize) -> Vec<Duration> {
    let mut out = Vec::new();
    let mut n = i as u64;
    loop {
        let m = n * shard.count as u64 + shard.index as u64;
        let Some(t) = st.time_of(m as f64) else {
            break;
        };
        out.push(Duration::from_secs_f64(t));
        n += sessions as u64;
    }
    out
}

/// Session `i`'s schedule: first send offset, period, and how many sends fit before the
/// end (both sides compute it, so the reader knows when it has every reply).
fn schedule(p: &Params, sessions: usize, i: usize, w: &Window) -> (Duration, Duration, u64) {
    let offset = Duration::from_secs_f64(i as f64 / p.rate);
    let period = Duration::from_secs_f64(sessions as f64 / p.rate);
    let span = (w.end - w.go).as_secs_f64() - offset.as_secs_f64();
    let count = if span > 0.0 {
        (span / period.as_secs_f64()).ceil() as u64
    } else {
        0
    };
    (offset, period, count)
}

async fn session(ctx: Rc<ThreadCtx>, p: Arc<Params>, plan: Arc<Plan>, i: usize) {
    let Some(est) = establish(&ctx, i, &[], 3).await else {
        return;
    };
    let sid = est.session_id.clone();
    let content = pattern(i, p.size);
    let wire = client::frame(&ctx.key, FrameType::Message, OCTET_STREAM, &sid, &content);
    let w = ctx.wait_go().await;
    let sessions = ctx.cfg().sessions;
    let (offset, period, mut count) = schedule(&p, sessions, i, &w);
    let offset = offset + plan.shard_offset;
    if !plan.shard_offset.is_zero() {
        // The shifted schedule: only sends due before the end.
        let span = (w.end - w.go).as_secs_f64() - offset.as_secs_f64();
        count = if span > 0.0 {
            (span / period.as_secs_f64()).ceil() as u64
        } else {
            0
        };
    }
    let staged = plan
        .stages
        .as_ref()
        .map(|st| staged_sends(st, plan.shard, sessions, i));
    if let Some(s) = &staged {
        count = s.len() as u64;
    }
    let key = ctx.key.clone();
    let (conn, deframer) = est.reader.into_parts();
    let (rd, mut wr) = conn.into_split();
    let mut reader = FrameReader::with_deframer(rd, deframer, key.clone());
    let inflight: Rc<RefCell<VecDeque<(Instant, Instant)>>> = Rc::default();
    let write_failed = Rc::new(Cell::new(false));
    let writer = monoio::spawn({
        let (inflight, write_failed, ctx) = (inflight.clone(), write_failed.clone(), ctx.clone());
        async move {
            for k in 0..count {
                let sched = match &staged {
                    Some(s) => w.go + s[k as usize],
                    None => w.go + offset + period.mul_f64(k as f64),
                };
                if Instant::now() < sched {
                    monoio::time::sleep_until(sched.into()).await;
                }
                let actual = Instant::now();
                inflight.borrow_mut().push_back((sched, actual));
                ctx.rec
                    .borrow_mut()
                    .record(2, actual, ns_between(sched, actual));
                if let Err(e) = client::write(&mut wr, wire.clone()).await {
                    ctx.error(e.kind());
                    write_failed.set(true);
                    break;
                }
            }
            wr
        }
    });
    let deadline = (w.end + ctx.cfg().drain).into();
    // One timer for the whole loop (not one per read): the deadline is fixed.
    let res = monoio::time::timeout_at(deadline, async {
        let mut received = 0u64;
        while received < count && !write_failed.get() {
            let frame = reader.next().await.map_err(|e| e.kind())?;
            let now = Instant::now();
            check_session(&frame, &sid).map_err(|e| e.kind())?;
            if frame.header.kind != FrameType::Message {
                return Err(SessionError::Unexpected(frame.header.kind).kind());
            }
            let Some((sched, actual)) = inflight.borrow_mut().pop_front() else {
                return Err("unsolicited_reply");
            };
            received += 1;
            if frame.content != content {
                ctx.error(SessionError::EchoMismatch.kind());
                continue;
            }
            let mut rec = ctx.rec.borrow_mut();
            rec.sample(now, ns_between(sched, now), p.size as u64);
            rec.record(1, now, ns_between(actual, now));
        }
        Ok(())
    })
    .await;
    match res {
        Ok(Ok(())) => {}
        Ok(Err(kind)) => ctx.error(kind),
        Err(_) => ctx.error(SessionError::Timeout.kind()),
    }
    if let Ok(mut wr) = monoio::time::timeout(ctx.cfg().drain, writer).await {
        say_goodbye(&mut wr, &key, &sid).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spreads_sends_evenly() {
        let go = Instant::now();
        let w = Window {
            go,
            measure_start: go,
            end: go + Duration::from_secs(2),
        };
        let p = Params {
            rate: 1000.0,
            size: 1,
        };
        // 10 sessions at 1000/s: each every 10 ms, offsets 1 ms apart.
        let total: u64 = (0..10).map(|i| schedule(&p, 10, i, &w).2).sum();
        assert_eq!(total, 2000);
        let (o, per, n) = schedule(&p, 10, 3, &w);
        assert_eq!(
            (o, per, n),
            (Duration::from_millis(3), Duration::from_millis(10), 200)
        );
    }
}
