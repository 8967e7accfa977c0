//! `raw-echo` and `raw-churn`: the echo and churn measurements without the protocol, for
//! a baseline against `loadgen raw-server` (or any byte echo server). Payloads are
//! fixed-size; each echoed payload is compared byte for byte with what was sent.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use monoio::io::{AsyncWriteRentExt, Splitable};
use serde_json::json;

use super::churn::{finish_churn, run_loop, HandshakeWire};
use super::{finish, for_each_session, pattern, run_config, Finished, ScenarioError};
use crate::cli::{RawChurnArgs, RawEchoArgs};
use crate::conn::{read_append, Conn};
use crate::runner::{self, ThreadCtx};
use crate::stats::ns_between;
use crate::sync::Credits;

const ECHO_HISTS: &[&str] = &["latency", "setup_connect"];
const CHURN_HISTS: &[&str] = &["connect", "cycle"];
/// With `--handshake`: the handshake time, as `churn` reports it.
const HANDSHAKE_HISTS: &[&str] = &["handshake", "cycle"];

/// Runs `raw-echo`.
pub fn run_echo(a: &RawEchoArgs) -> Result<Finished, ScenarioError> {
    if a.depth == 0 || a.size == 0 {
        return Err(ScenarioError::Config(
            "--depth and --size must be >= 1".into(),
        ));
    }
    let cfg = run_config(&a.common, "raw-echo", ECHO_HISTS, true)?;
    let p = Arc::new((a.depth, a.size));
    let outcome = runner::run(cfg, sockchat_proto::Key::reference_default(), move |ctx| {
        echo_thread(ctx, p.clone())
    })?;
    let mut extra = BTreeMap::new();
    extra.insert("depth".into(), json!(a.depth));
    extra.insert("size".into(), json!(a.size));
    Ok(finish("raw-echo", outcome, ECHO_HISTS, extra))
}

async fn echo_thread(ctx: Rc<ThreadCtx>, p: Arc<(usize, usize)>) {
    let c = ctx.clone();
    for_each_session(&ctx, move |i| echo_session(c.clone(), p.0, p.1, i)).await;
}

/// Session `i`'s setup without a protocol: waits for its connect slot, connects within
/// the connect timeout, records the connect time into histogram `hist` and tells the
/// harness. `None` when it failed (already counted).
pub(super) async fn connect(ctx: &ThreadCtx, i: usize, hist: usize) -> Option<Conn> {
    monoio::time::sleep_until(ctx.slot(i).into()).await;
    let t0 = Instant::now();
    let cfg = ctx.cfg();
    match monoio::time::timeout(cfg.connect_timeout, Conn::connect(&cfg.target)).await {
        Ok(Ok(c)) => {
            let ns = ns_between(t0, Instant::now());
            ctx.rec.borrow_mut().record_always(hist, ns);
            ctx.session_ready();
            Some(c)
        }
        Ok(Err(_)) => {
            ctx.session_failed("connect");
            None
        }
        Err(_) => {
            ctx.session_failed("setup_timeout");
            None
        }
    }
}

async fn echo_session(ctx: Rc<ThreadCtx>, depth: usize, size: usize, i: usize) {
    let Some(conn) = connect(&ctx, i, 1).await else {
        return;
    };
    let payload: Bytes = pattern(i, size);
    let w = ctx.wait_go().await;
    let (mut rd, mut wr) = conn.into_split();
    let inflight: Rc<RefCell<VecDeque<Instant>>> = Rc::default();
    let credits = Rc::new(Credits::new(depth as u64));
    let write_failed = Rc::new(Cell::new(false));
    let writer = monoio::spawn({
        let (inflight, credits, failed, ctx, payload) = (
            inflight.clone(),
            credits.clone(),
            write_failed.clone(),
            ctx.clone(),
            payload.clone(),
        );
        async move {
            // Everything due goes out in one write, as the protocol `echo` scenario does,
            // so the baseline is not held back by one syscall per message on the client.
            let window: Bytes = payload.repeat(depth).into();
            loop {
                let n = credits.acquire_all().await as usize;
                if n == 0 {
                    break;
                }
                let now = Instant::now();
                inflight.borrow_mut().extend(std::iter::repeat_n(now, n));
                let (res, _) = wr.write_all(window.slice(..n * size)).await;
                if res.is_err() {
                    ctx.error("write");
                    failed.set(true);
                    break;
                }
            }
        }
    });
    let deadline = w.end + ctx.cfg().drain;
    let mut buf = BytesMut::with_capacity(size.max(4096));
    'outer: loop {
        if write_failed.get() || (credits.is_closed() && inflight.borrow().is_empty()) {
            break;
        }
        let read = monoio::time::timeout_at(deadline.into(), read_append(&mut rd, buf)).await;
        let (res, b) = match read {
            Ok(r) => r,
            Err(_) => {
                ctx.error("timeout");
                break;
            }
        };
        buf = b;
        match res {
            Ok(0) => {
                ctx.error("eof");
                break;
            }
            Ok(_) => {}
            Err(_) => {
                ctx.error("read");
                break;
            }
        }
        while buf.len() >= size {
            let now = Instant::now();
            let Some(sent) = inflight.borrow_mut().pop_front() else {
                ctx.error("unsolicited_reply");
                break 'outer;
            };
            if buf[..size] != payload[..] {
                ctx.error("echo_mismatch");
            } else {
                ctx.rec
                    .borrow_mut()
                    .sample(now, ns_between(sent, now), size as u64);
            }
            buf.advance(size);
            if now >= w.end {
                credits.close();
            } else {
                credits.grant();
            }
        }
    }
    credits.close();
    let _ = monoio::time::timeout(ctx.cfg().drain, writer).await;
}

/// Runs `raw-churn`.
pub fn run_churn(a: &RawChurnArgs) -> Result<Finished, ScenarioError> {
    let (verify, wire) = (a.verify, a.handshake);
    let hists = if wire.is_some() {
        HANDSHAKE_HISTS
    } else {
        CHURN_HISTS
    };
    let cfg = run_config(&a.common, "raw-churn", hists, false)?;
    let outcome = runner::run(cfg, sockchat_proto::Key::reference_default(), move |ctx| {
        churn_thread(ctx, verify, wire)
    })?;
    Ok(finish_churn(
        "raw-churn",
        outcome,
        hists,
        verify,
        a.common.duration,
    ))
}

async fn churn_thread(ctx: Rc<ThreadCtx>, verify: bool, wire: Option<HandshakeWire>) {
    let c = ctx.clone();
    for_each_session(&ctx, move |i| churn_loop(c.clone(), i, verify, wire)).await;
}

async fn churn_loop(ctx: Rc<ThreadCtx>, i: usize, verify: bool, wire: Option<HandshakeWire>) {
    run_loop(&ctx, i, |_| async {
        match wire {
            Some(w) => handshake_cycle(&ctx, w).await,
            None => raw_cycle(&ctx, verify).await,
        }
    })
    .await;
}

/// Connect, optionally one byte there and back, close. Returns the connect (or verified
/// round trip) time.
async fn raw_cycle(ctx: &ThreadCtx, verify: bool) -> Result<u64, &'static str> {
    let t0 = Instant::now();
    let mut conn = Conn::connect(&ctx.cfg().target)
        .await
        .map_err(|_| "connect")?;
    if verify {
        let (res, _) = conn.write_all(Bytes::from_static(b"v")).await;
        res.map_err(|_| "write")?;
        let (res, buf) = read_append(&mut conn, BytesMut::with_capacity(64)).await;
        match res {
            Ok(0) => return Err("eof"),
            Ok(_) if &buf[..] == b"v" => {}
            Ok(_) => return Err("echo_mismatch"),
            Err(_) => return Err("read"),
        }
    }
    Ok(ns_between(t0, Instant::now()))
}

/// The bytes of a `churn` cycle against `raw-server --handshake`: connect, read `init`
/// bytes, write `ack`, write `disconnect`, wait for the server's close. Returns the
/// handshake time (connect start until the ack is written), as `churn` does.
async fn handshake_cycle(ctx: &ThreadCtx, wire: HandshakeWire) -> Result<u64, &'static str> {
    let t0 = Instant::now();
    let mut conn = Conn::connect(&ctx.cfg().target)
        .await
        .map_err(|_| "connect")?;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    while buf.len() < wire.init {
        let (res, b) = read_append(&mut conn, buf).await;
        buf = b;
        match res {
            Ok(0) => return Err("eof"),
            Ok(_) => {}
            Err(_) => return Err("read"),
        }
    }
    if buf.len() > wire.init {
        return Err("unexpected_bytes");
    }
    let (res, _) = conn.write_all(vec![0u8; wire.ack]).await;
    res.map_err(|_| "write")?;
    let hs = ns_between(t0, Instant::now());
    let (res, _) = conn.write_all(vec![0u8; wire.disconnect]).await;
    res.map_err(|_| "write")?;
    buf.clear();
    // The server closes once both frames' bytes are in: the next read is the end.
    let closed = monoio::time::timeout(std::time::Duration::from_secs(2), async {
        match read_append(&mut conn, buf).await.0 {
            Ok(0) | Err(_) => Ok(()),
            Ok(_) => Err("unexpected_bytes"),
        }
    })
    .await;
    match closed {
        Ok(r) => r.map(|_| hs),
        Err(_) => Err("no_close"),
    }
}
