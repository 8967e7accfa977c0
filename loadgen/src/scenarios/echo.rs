//! `echo`: closed loop. Each session keeps `--depth` messages in flight; every reply is
//! verified (the deframer checks magic, CRCs and HMAC; here: type, session id, and the
//! content byte for byte against what was sent).
//!
//! Per message the session does no encoding: each payload frame is encoded once per
//! session (the session id is in the header) and re-sent as a shared `Bytes`. Writer and
//! reader are separate tasks on the split connection, so a large message in flight in
//! both directions cannot deadlock; the reader hands the writer one credit per reply.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use serde_json::json;
use sockchat_proto::frame::{FrameType, MAX_CONTENT_LEN};
use sockchat_proto::header::OCTET_STREAM;
use sockchat_proto::{ByteStr, ChunkLimits};
use std::os::fd::AsRawFd;

use super::{establish, finish, for_each_session, load_key, pattern, run_config, say_goodbye};
use super::{staged_config, Finished, ScenarioError};
use crate::cli::EchoArgs;
use crate::client::{self, Established, SessionError};
use crate::echo_wire::{EchoReader, Take};
use crate::runner::{self, ThreadCtx};
use crate::stages::Stages;
use crate::stats::ns_between;
use crate::stats::Window;
use crate::sync::{join2, Credits};
use std::time::Duration;

const HISTS: &[&str] = &["latency", "setup_handshake"];

/// Sizes and weights of the payload mix.
#[derive(Debug, Clone)]
struct Params {
    depth: usize,
    sizes: Vec<usize>,
    /// Cumulative weights, same order as `sizes`.
    cumulative: Vec<u64>,
    chunked: bool,
    chunk_size: usize,
}

/// Parses `SIZE:WEIGHT,...` (a bare `SIZE` has weight 1).
pub fn parse_size_dist(s: &str) -> Result<Vec<(usize, u64)>, ScenarioError> {
    let bad = |m: &str| ScenarioError::Config(format!("--size-dist {s:?}: {m}"));
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (size, weight) = part.split_once(':').unwrap_or((part, "1"));
        let size: usize = size.trim().parse().map_err(|_| bad("bad size"))?;
        let weight: u64 = weight.trim().parse().map_err(|_| bad("bad weight"))?;
        if size == 0 || weight == 0 {
            return Err(bad("sizes and weights must be positive"));
        }
        out.push((size, weight));
    }
    if out.is_empty() {
        return Err(bad("empty"));
    }
    Ok(out)
}

/// Runs the scenario.
pub fn run(a: &EchoArgs) -> Result<Finished, ScenarioError> {
    if a.depth == 0 {
        return Err(ScenarioError::Config("--depth must be at least 1".into()));
    }
    let dist = match &a.size_dist {
        Some(s) => parse_size_dist(s)?,
        None if a.size == 0 => return Err(ScenarioError::Config("--size must be >= 1".into())),
        None => vec![(a.size, 1)],
    };
    if a.chunked && a.chunk_size == 0 {
        return Err(ScenarioError::Config("--chunk-size must be >= 1".into()));
    }
    let frame_limit = if a.chunked {
        a.chunk_size as u64
    } else {
        MAX_CONTENT_LEN
    };
    if !a.chunked && dist.iter().any(|&(n, _)| n as u64 > frame_limit) {
        return Err(ScenarioError::Config(
            "sizes above 10 MiB need --chunked".into(),
        ));
    }
    let mut total = 0;
    let p = Arc::new(Params {
        depth: a.depth,
        sizes: dist.iter().map(|d| d.0).collect(),
        cumulative: dist
            .iter()
            .map(|d| {
                total += d.1;
                total
            })
            .collect(),
        chunked: a.chunked,
        chunk_size: a.chunk_size,
    });
    let cfg = match &a.stages {
        Some(st) => staged_config(&a.common, "echo", HISTS, st)?,
        None => run_config(&a.common, "echo", HISTS, true)?,
    };
    let key = load_key(a.common.key_file.as_deref())?;
    let body_p = p.clone();
    let stages = a.stages.clone().map(Arc::new);
    let outcome = runner::run(cfg, key, move |ctx| {
        thread(ctx, body_p.clone(), stages.clone())
    })?;
    let mut extra = BTreeMap::new();
    if let Some(st) = &a.stages {
        extra.insert("stages".into(), json!(st.to_string()));
    }
    extra.insert("depth".into(), json!(p.depth));
    extra.insert("size_dist".into(), json!(dist));
    extra.insert("chunked".into(), json!(p.chunked));
    Ok(finish("echo", outcome, HISTS, extra))
}

async fn thread(ctx: Rc<ThreadCtx>, p: Arc<Params>, stages: Option<Arc<Stages>>) {
    let c = ctx.clone();
    for_each_session(&ctx, move |i| {
        let (ctx, p, stages) = (c.clone(), p.clone(), stages.clone());
        async move {
            match stages {
                Some(st) => staged(ctx, p, &st, i).await,
                None => session(ctx, p, i).await,
            }
        }
    })
    .await;
}

/// Session `i` under `--stages`: open whenever the stage level rises above it, echo
/// while open, say goodbye and close when the level falls.
async fn staged(ctx: Rc<ThreadCtx>, p: Arc<Params>, st: &Stages, i: usize) {
    let w = ctx.wait_go().await;
    for (a, b) in st.open_intervals(super::stage_threshold(&ctx, i)) {
        let close = (w.go + Duration::from_secs_f64(b)).min(w.end);
        monoio::time::sleep_until((w.go + Duration::from_secs_f64(a)).into()).await;
        let Some(est) = establish(&ctx, i, p.features(), 1).await else {
            continue;
        };
        ctx.rec.borrow_mut().session_open(1);
        established(ctx.clone(), p.clone(), i, est, Some(close)).await;
        ctx.rec.borrow_mut().session_open(-1);
    }
}

/// xorshift64*: one per session, for picking sizes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl Params {
    /// The features a session asks for in its handshake.
    fn features(&self) -> &'static [&'static str] {
        if self.chunked {
            &["chunk"]
        } else {
            &[]
        }
    }

    fn pick(&self, rng: &mut Rng) -> usize {
        if self.sizes.len() == 1 {
            return 0;
        }
        let total = *self.cumulative.last().expect("non-empty");
        let r = rng.next() % total;
        self.cumulative.iter().position(|&c| r < c).unwrap_or(0)
    }
}

/// One payload: the content (to compare replies with) and its frames as sent.
struct Payload {
    content: Bytes,
    wire: Bytes,
}

fn payloads(ctx: &ThreadCtx, p: &Params, i: usize, sid: &ByteStr) -> Vec<Payload> {
    let key = &ctx.key;
    p.sizes
        .iter()
        .map(|&n| {
            let content = pattern(i, n);
            let wire = if p.chunked && n > p.chunk_size {
                let frames = sockchat_proto::split(
                    key,
                    Some(sid.clone()),
                    Some(OCTET_STREAM),
                    ByteStr::from(format!("m{n}")),
                    content.clone(),
                    p.chunk_size,
                )
                .expect("validated sizes");
                let mut all = BytesMut::new();
                for f in frames {
                    all.extend_from_slice(&f.head);
                    all.extend_from_slice(&f.content);
                }
                all.freeze()
            } else {
                client::frame(key, FrameType::Message, OCTET_STREAM, sid, &content)
            };
            Payload { content, wire }
        })
        .collect()
}

struct Flight {
    inflight: RefCell<VecDeque<(Instant, usize)>>,
    credits: Credits,
    write_failed: Cell<bool>,
}

impl Flight {
    /// `depth` credits, nothing in flight.
    fn new(depth: usize) -> Rc<Self> {
        Rc::new(Self {
            inflight: RefCell::new(VecDeque::with_capacity(depth)),
            credits: Credits::new(depth as u64),
            write_failed: Cell::new(false),
        })
    }
}

async fn session(ctx: Rc<ThreadCtx>, p: Arc<Params>, i: usize) {
    let Some(est) = establish(&ctx, i, p.features(), 1).await else {
        return;
    };
    established(ctx, p, i, est, None).await;
}

/// The load of an established session, until the window's end (or `close`, if earlier).
async fn established(
    ctx: Rc<ThreadCtx>,
    p: Arc<Params>,
    i: usize,
    est: Established,
    close: Option<Instant>,
) {
    let sid = est.session_id.clone();
    let payloads = Rc::new(payloads(&ctx, &p, i, &sid));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
    let max_wire = payloads.iter().map(|x| x.wire.len()).max().unwrap_or(0);
    let (conn, mut deframer) = est.reader.into_parts();
    let watch = ctx.watch(i, conn.as_raw_fd());
    let (rd, mut wr) = conn.into_split();
    let capacity = (max_wire * p.depth).clamp(4096, 256 << 10);
    let mut reader = EchoReader::new(
        rd,
        deframer.take_buffer(),
        capacity,
        ctx.key.clone(),
        sid.clone(),
    );
    if p.chunked {
        reader = reader.with_chunks(ChunkLimits {
            max_message_len: p.sizes.iter().max().copied().unwrap_or(1) as u64,
            max_partial: 1,
        });
    }
    let mut w = ctx.wait_go().await;
    if let Some(c) = close {
        w.end = w.end.min(c);
    }
    let wr = if p.depth == 1 {
        let res = ping_pong(&ctx, &p, &payloads, &mut rng, &mut reader, &mut wr, w).await;
        ended_fast(&ctx, res);
        Some(wr)
    } else {
        pipelined(&ctx, &p, payloads, rng, &mut reader, wr, w).await
    };
    if let Some(mut wr) = wr {
        say_goodbye(&mut wr, &ctx.key, &sid).await;
    }
    ctx.rec
        .borrow_mut()
        .count("echo_slow_path", reader.slow_path());
    // Before the socket closes (with `reader`, after this).
    drop(watch);
}

/// Counts a reply checked by [`EchoReader`].
fn record_take(ctx: &ThreadCtx, t: Take, bytes: usize, sent: Instant, now: Instant) {
    match t {
        Take::Echo => ctx
            .rec
            .borrow_mut()
            .sample(now, ns_between(sent, now), bytes as u64),
        Take::Mismatch => ctx.error(SessionError::EchoMismatch.kind()),
        Take::Need => {}
    }
}

/// Counts how a fast-path loop ended; after the deadline any failure is its doing.
fn ended_fast(ctx: &ThreadCtx, res: Result<(), &'static str>) {
    if let Err(kind) = res {
        ctx.error(if ctx.expired() {
            SessionError::Timeout.kind()
        } else {
            kind
        });
    }
}

/// Depth 1: each message is written together with the read of its reply (one io_uring
/// submission) and the reply compared by bytes.
async fn ping_pong<R: AsyncReadRent, W: AsyncWriteRent>(
    ctx: &ThreadCtx,
    p: &Params,
    payloads: &[Payload],
    rng: &mut Rng,
    reader: &mut EchoReader<R>,
    wr: &mut W,
    w: Window,
) -> Result<(), &'static str> {
    loop {
        let pl = &payloads[p.pick(rng)];
        let sent = Instant::now();
        let (wrote, got) = join2(
            client::write(wr, pl.wire.clone()),
            reader.reply(&pl.wire, &pl.content),
        )
        .await;
        wrote.map_err(|e| e.kind())?;
        let got = got.map_err(|e| e.kind())?;
        let now = Instant::now();
        record_take(ctx, got, pl.content.len(), sent, now);
        if now >= w.end {
            return Ok(());
        }
    }
}

/// Depth > 1: a writer task sends every message that is due in one write; the reader
/// checks every reply a read brought, then hands the writer that many credits at once.
/// Returns the write half when the writer ended in time (for the goodbye).
async fn pipelined<R: AsyncReadRent, W: AsyncWriteRent + 'static>(
    ctx: &Rc<ThreadCtx>,
    p: &Arc<Params>,
    payloads: Rc<Vec<Payload>>,
    mut rng: Rng,
    reader: &mut EchoReader<R>,
    mut wr: W,
    w: Window,
) -> Option<W> {
    let flight = Flight::new(p.depth);
    let writer = monoio::spawn({
        let (flight, payloads, ctx, p) = (flight.clone(), payloads.clone(), ctx.clone(), p.clone());
        async move {
            // One size: every batch is a prefix of `depth` copies of the frame.
            let single = (payloads.len() == 1).then(|| {
                let one = &payloads[0].wire;
                (one.len(), one.repeat(p.depth).into())
            });
            let mut scratch: Vec<u8> = Vec::new();
            loop {
                let n = flight.credits.acquire_all().await as usize;
                if n == 0 {
                    break;
                }
                let now = Instant::now();
                let res = match &single {
                    Some((len, all)) => {
                        let all: &Bytes = all;
                        flight
                            .inflight
                            .borrow_mut()
                            .extend(std::iter::repeat_n((now, 0), n));
                        client::write(&mut wr, all.slice(..n * len)).await
                    }
                    None => {
                        scratch.clear();
                        for _ in 0..n {
                            let idx = p.pick(&mut rng);
                            scratch.extend_from_slice(&payloads[idx].wire);
                            flight.inflight.borrow_mut().push_back((now, idx));
                        }
                        let (res, buf) = wr.write_all(std::mem::take(&mut scratch)).await;
                        scratch = buf;
                        res.map(drop).map_err(SessionError::Write)
                    }
                };
                if let Err(e) = res {
                    // After the deadline the reader counts the timeout.
                    if !ctx.expired() {
                        ctx.error(e.kind());
                    }
                    flight.write_failed.set(true);
                    break;
                }
            }
            wr
        }
    });
    let res = async {
        loop {
            let now = Instant::now();
            let mut done = 0;
            loop {
                let Some(&(sent, idx)) = flight.inflight.borrow().front() else {
                    break;
                };
                let pl = &payloads[idx];
                let t = reader.take(&pl.wire, &pl.content).map_err(|e| e.kind())?;
                if t == Take::Need {
                    break;
                }
                flight.inflight.borrow_mut().pop_front();
                record_take(ctx, t, pl.content.len(), sent, now);
                done += 1;
            }
            if done > 0 {
                if now >= w.end {
                    flight.credits.close();
                } else {
                    flight.credits.grant_n(done);
                }
            }
            if flight.write_failed.get()
                || (flight.credits.is_closed() && flight.inflight.borrow().is_empty())
            {
                return Ok(());
            }
            if reader.buffered() > 0 && flight.inflight.borrow().is_empty() {
                return Err("unsolicited_reply");
            }
            reader.fill().await.map_err(|e| e.kind())?;
        }
    }
    .await;
    ended_fast(ctx, res);
    flight.credits.close();
    // The writer ends at once unless it is stuck in a write the server no longer reads
    // (then the deadline watch ends that write).
    monoio::time::timeout(ctx.cfg().drain, writer).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_dist_parses_and_picks_by_weight() {
        assert_eq!(
            parse_size_dist("64:80, 1024:20,9").unwrap(),
            vec![(64, 80), (1024, 20), (9, 1)]
        );
        assert!(parse_size_dist("0:1").is_err());
        assert!(parse_size_dist("x").is_err());
        assert!(parse_size_dist("").is_err());
        let p = Params {
            depth: 1,
            sizes: vec![1, 2],
            cumulative: vec![3, 4],
            chunked: false,
            chunk_size: 1,
        };
        let mut rng = Rng(7);
        let firsts = (0..4000).filter(|_| p.pick(&mut rng) == 0).count();
        assert!((2700..3300).contains(&firsts), "{firsts}");
    }
}
