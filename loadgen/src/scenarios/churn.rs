//! `churn`: `--sessions` concurrent loops of connect → handshake → disconnect → close,
//! for the whole window. Reports sessions per second and the handshake latency (connect
//! start until the ack is written, or with `--verify` until the pong proving the server
//! accepted the ack has arrived). After `disconnect` the loop waits for the server to
//! close (bounded), so a server that ignores `disconnect` shows up as `no_close` errors,
//! and the server, not loadgen, holds the TCP TIME_WAIT.
//!
//! [`HandshakeWire`] is what one cycle puts on the wire, frame by frame, so that
//! `raw-churn --handshake` against `raw-server --handshake` can move the same bytes with
//! no protocol (the like-for-like baseline of this scenario).

use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde_json::json;
use sockchat_proto::frame::FrameType;
use sockchat_proto::{
    ByteStr, ClientSession, Features, Key, ServerSession, Session, SessionConfig,
};

use super::{finish, load_key, run_config, Finished, ScenarioError};
use crate::cli::ChurnArgs;
use crate::client::{self, check_session, is_pong, SessionError};
use crate::runner::{self, ThreadCtx};
use crate::stats::ns_between;

const HISTS: &[&str] = &["handshake", "cycle"];

/// The bytes of one churn cycle, frame by frame: the server's `session_init` (sent as
/// soon as it accepts), then the client's `session_ack` and `disconnect` (two writes),
/// after which the server closes without sending more. Written `INIT,ACK,DISCONNECT`, or
/// `sockchat` for [`of_sockchat`](Self::of_sockchat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HandshakeWire {
    /// Length of the server's `session_init` frame.
    pub init: usize,
    /// Length of the client's `session_ack` frame.
    pub ack: usize,
    /// Length of the client's `disconnect` frame.
    pub disconnect: usize,
}

impl HandshakeWire {
    /// The lengths sockchat's own sessions produce: a [`ServerSession`] (with a hyphenated
    /// UUID session id, as sockchat-server issues) and a [`ClientSession`] run against
    /// each other in memory, and the `disconnect` this scenario sends. Computed, not
    /// written down, so the baseline follows any change of the encoder or the handshake.
    pub fn of_sockchat() -> Self {
        let key = Arc::new(Key::reference_default());
        let config = Arc::new(SessionConfig::default());
        let now = Instant::now();
        let sid = ByteStr::from("00000000-0000-4000-8000-000000000000");
        let mut server = ServerSession::new(sid.clone(), key.clone(), config.clone(), now);
        let mut out = Vec::new();
        server.poll_transmit(&mut out);
        let init = out.iter().map(Bytes::len).sum();
        // `churn` asks for no features: its ack is the plain one.
        let plain = Arc::new(SessionConfig {
            features: Features::NONE,
            ..SessionConfig::default()
        });
        let mut session = ClientSession::new(key.clone(), plain, now);
        for b in out.drain(..) {
            session.deframer_mut().extend_from_slice(&b);
        }
        session.handle_input(now);
        assert!(
            session.is_established(),
            "session_init establishes the client"
        );
        session.poll_transmit(&mut out);
        let ack = out.iter().map(Bytes::len).sum();
        let disconnect = client::disconnect(&key, &sid).len();
        Self {
            init,
            ack,
            disconnect,
        }
    }
}

impl fmt::Display for HandshakeWire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{}", self.init, self.ack, self.disconnect)
    }
}

impl FromStr for HandshakeWire {
    type Err = String;

    /// `sockchat` ([`HandshakeWire::of_sockchat`]) or `INIT,ACK,DISCONNECT`.
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "sockchat" {
            return Ok(Self::of_sockchat());
        }
        let parts: Vec<usize> = s
            .split(',')
            .map(|p| p.trim().parse::<usize>().map_err(|e| format!("{p:?}: {e}")))
            .collect::<Result<_, _>>()?;
        match parts[..] {
            [init, ack, disconnect] if init > 0 && ack > 0 && disconnect > 0 => Ok(Self {
                init,
                ack,
                disconnect,
            }),
            _ => Err(format!(
                "{s:?}: want sockchat or INIT,ACK,DISCONNECT (three byte counts above 0)"
            )),
        }
    }
}

/// Runs the scenario.
pub fn run(a: &ChurnArgs) -> Result<Finished, ScenarioError> {
    let cfg = run_config(&a.common, "churn", HISTS, false)?;
    let key = load_key(a.common.key_file.as_deref())?;
    let verify = a.verify;
    let outcome = runner::run(cfg, key, move |ctx| thread(ctx, verify))?;
    Ok(finish_churn(
        "churn",
        outcome,
        HISTS,
        verify,
        a.common.duration,
    ))
}

/// The report of a churn run: sessions per second, and the loops that completed a cycle
/// as the established sessions.
pub fn finish_churn(
    scenario: &'static str,
    outcome: runner::RunOutcome,
    hists: &[&'static str],
    verify: bool,
    duration_s: f64,
) -> Finished {
    let mut extra = BTreeMap::new();
    extra.insert("verify".into(), json!(verify));
    extra.insert(
        "sessions_per_sec".into(),
        json!(outcome.result.messages as f64 / duration_s),
    );
    let loops_ok = outcome
        .result
        .counters
        .get("loops_ok")
        .copied()
        .unwrap_or(0);
    let mut f = finish(scenario, outcome, hists, extra);
    f.established = loops_ok;
    f
}

async fn thread(ctx: Rc<ThreadCtx>, verify: bool) {
    let handles: Vec<_> = ctx
        .my_sessions()
        .map(|i| monoio::spawn(churn_loop(ctx.clone(), i, verify)))
        .collect();
    for h in handles {
        h.await;
    }
}

/// Waits for the start, then staggers loop `i`'s first connect by the ramp.
pub async fn start_loop(ctx: &ThreadCtx, i: usize) -> crate::stats::Window {
    let w = ctx.wait_go().await;
    let ramp = ctx.cfg().ramp;
    if ramp > 0.0 {
        let at = w.go + Duration::from_secs_f64(i as f64 / ramp);
        monoio::time::sleep_until(at.into()).await;
    }
    w
}

async fn churn_loop(ctx: Rc<ThreadCtx>, i: usize, verify: bool) {
    let c = ctx.clone();
    run_loop(&ctx, i, move |t0| {
        let ctx = c.clone();
        async move { cycle(&ctx, verify, t0).await.map_err(|e| e.kind()) }
    })
    .await;
}

/// Loop `i` of a churn run: `cycle(start)` over and over until the window's end, each
/// bounded by the connect timeout; its result (the latency sample, in ns) is recorded
/// with the cycle time, its error counted.
pub async fn run_loop<F, Fut>(ctx: &ThreadCtx, i: usize, cycle: F)
where
    F: Fn(Instant) -> Fut,
    Fut: std::future::Future<Output = Result<u64, &'static str>>,
{
    let w = start_loop(ctx, i).await;
    let mut ok = 0u64;
    while Instant::now() < w.end {
        let t0 = Instant::now();
        match monoio::time::timeout(ctx.cfg().connect_timeout, cycle(t0)).await {
            Ok(Ok(ns)) => {
                let now = Instant::now();
                let mut rec = ctx.rec.borrow_mut();
                rec.sample(now, ns, 0);
                rec.record(1, now, ns_between(t0, now));
                ok += 1;
            }
            Ok(Err(kind)) => {
                ctx.error(kind);
                // Do not spin on a refusing server.
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => ctx.error("timeout"),
        }
    }
    if ok > 0 {
        ctx.rec.borrow_mut().count("loops_ok", 1);
    }
}

/// One connect → handshake → disconnect → close; returns the handshake time.
pub async fn cycle(ctx: &ThreadCtx, verify: bool, t0: Instant) -> Result<u64, SessionError> {
    let mut est = client::handshake(&ctx.cfg().target, ctx.key.clone(), &[]).await?;
    let sid = est.session_id.clone();
    if verify {
        client::write(est.reader.get_mut(), client::ping(&ctx.key, &sid)).await?;
        let f = est.reader.next().await?;
        check_session(&f, &sid)?;
        if !is_pong(&f) {
            return Err(SessionError::Unexpected(f.header.kind));
        }
    }
    let hs = ns_between(t0, Instant::now());
    client::write(est.reader.get_mut(), client::disconnect(&ctx.key, &sid)).await?;
    // The server ends the session on `disconnect`: wait for its close.
    let closed = monoio::time::timeout(Duration::from_secs(2), async {
        loop {
            match est.reader.next().await {
                Err(SessionError::Eof) | Err(SessionError::Read(_)) => return Ok(()),
                Err(e) => return Err(e),
                // A server may confirm with its own `disconnect` before closing.
                Ok(f) if f.header.kind == FrameType::Disconnect => {}
                Ok(f) => return Err(SessionError::Unexpected(f.header.kind)),
            }
        }
    })
    .await;
    match closed {
        Ok(r) => r.map(|_| hs),
        Err(_) => Err(SessionError::NoClose),
    }
}
