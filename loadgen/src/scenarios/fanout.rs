//! `fanout`, for the server's chat mode: session 0 sends `--rate` messages per second,
//! every other session receives each of them. Reports the time from a send to its *last*
//! delivery (the primary latency) and to each delivery.
//!
//! With `--rooms N` the sessions are N rooms' members (session i in room `r{i % N}`,
//! joined during setup with the rooms extension); each room's first member sends
//! `--rate` messages per second to its room, and every delivery is checked for its
//! `room` and `from` headers. `--targets` adds server nodes: member j of every room
//! connects to node j % nodes, so each room spans every node (a cluster's cross-node
//! path). `extra` reports rooms, nodes, deliveries and deliveries per second.
//!
//! Assumes the chat server delivers the sender's content unchanged as a `message` frame
//! on each receiver's own session. The content carries its sequence number and send time
//! (nanoseconds since the run's epoch, an `Instant` shared by all threads), so receivers
//! on any thread compute latencies without coordination; the per-message "last delivery"
//! is computed after the run from each thread's (count, latest arrival) per sequence
//! number. A message not delivered to every receiver is an `incomplete_fanout` error.
//!
//! With `--raw` there is no protocol ([`raw`]): against `loadgen raw-server --fanout`,
//! which forwards each connection's bytes to every other connection, connection 0 sends
//! fixed-size `--size` byte payloads carrying the same sequence number and send time,
//! and the others read them; latencies, completeness and the report are this module's.
//!
//! Split over workers (`--shard`), worker 0 holds the sender and the receivers are dealt
//! out; the workers must share a window (`--start-at-ms`). Send times are then wall-clock
//! nanoseconds, so latencies across hosts assume synchronised clocks. Each worker checks
//! completeness over its own receivers and writes every message's (sequence, send time,
//! latest arrival, deliveries) to `extra.deliveries_by_seq`, from which `loadgen merge`
//! computes the run's last-delivery latency over all workers.

mod raw;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use monoio::io::Splitable;
use serde_json::{json, Value};
use sockchat_proto::frame::{FrameType, MAX_CONTENT_LEN};
use sockchat_proto::header::{ByteStr, Header, OCTET_STREAM};

use super::rooms::{self, room_name};
use super::{establish_with, finish, load_key, pattern, run_config_for, say_goodbye};
use super::{Finished, ScenarioError};
use crate::cli::FanoutArgs;
use crate::client::{self, check_header, FrameReader, SessionError};
use crate::conn::Target;
use crate::fanout_wire::FanoutReader;
use crate::runner::{self, ThreadCtx};
use crate::stats::{ns_between, Window};
use sockchat_proto::rooms::FEATURE_ROOMS;
use sockchat_proto::RoomName;

const HISTS: &[&str] = &["last_delivery", "delivery", "setup_handshake"];

/// Per message ([`key`]): deliveries seen, the latest arrival and the send time
/// (wall-clock ns).
type Deliveries = HashMap<u64, (u64, u64, u64)>;

/// A message's key: its room (0 without rooms) and its sequence number in that room.
fn key(room: usize, seq: u64) -> u64 {
    ((room as u64) << 32) | seq
}

#[derive(Debug, Default)]
struct Log {
    /// (key, send time in ns since epoch) of every message sent.
    sent: Mutex<Vec<(u64, u64)>>,
    deliveries: Mutex<Deliveries>,
    /// Receivers established (and joined) per room.
    receivers: Mutex<Vec<u64>>,
}

#[derive(Debug)]
struct Params {
    rate: f64,
    size: usize,
    /// The rooms (empty: none, everyone in the lobby).
    rooms: Vec<RoomName>,
    /// Server nodes; member j of a room connects to node j % len.
    nodes: Vec<Target>,
    /// No protocol: fixed-size payloads through `raw-server --fanout`.
    raw: bool,
    /// The content every message carries past its stamp (`pattern(0, size)`): one copy
    /// for all receivers, so checking it does not touch a cold copy per receiver.
    pad: Bytes,
    log: Log,
}

impl Params {
    /// Rooms the sessions are dealt over (1 without rooms: the lobby).
    fn groups(&self) -> usize {
        self.rooms.len().max(1)
    }

    /// Session `i`'s room index.
    fn room_of(&self, i: usize) -> usize {
        i % self.groups()
    }

    /// True for a room's sender (the room's first member, held by worker 0).
    fn is_sender(&self, ctx: &ThreadCtx, i: usize) -> bool {
        i < self.groups() && ctx.cfg().shard.index == 0
    }

    /// Session `i`'s node.
    fn node_of(&self, i: usize) -> &Target {
        &self.nodes[(i / self.groups()) % self.nodes.len()]
    }

    /// Session `i`'s setup: connect to its node, hand-shake, join its room.
    async fn establish(&self, ctx: &ThreadCtx, i: usize) -> Option<client::Established> {
        let room = self.rooms.get(self.room_of(i)).cloned();
        let features: &[&'static str] = if room.is_some() {
            &[FEATURE_ROOMS]
        } else {
            &[]
        };
        let key = ctx.key.clone();
        establish_with(ctx, i, self.node_of(i), features, 2, |est| async move {
            match &room {
                Some(r) => rooms::join(est, &key, r).await,
                None => Ok(est),
            }
        })
        .await
    }
}

/// Messages the sender sends: those scheduled before the end.
fn expected(rate: f64, w: &Window) -> u64 {
    ((w.end - w.go).as_secs_f64() * rate).ceil() as u64
}

/// Runs the scenario.
pub fn run(a: &FanoutArgs) -> Result<Finished, ScenarioError> {
    let mut a = a.clone();
    if let Some(n) = a.size_as_delivery_of {
        a.size = rooms::delivery_frame_len(n);
    }
    let a = &a;
    if a.common.sessions < 2 {
        return Err(ScenarioError::Config("fanout needs --sessions >= 2".into()));
    }
    if !(a.rate > 0.0 && a.rate.is_finite()) {
        return Err(ScenarioError::Config("--rate must be positive".into()));
    }
    let min_size = if a.rooms > 0 { 24 } else { 16 };
    if a.size < min_size || a.size as u64 > MAX_CONTENT_LEN {
        return Err(ScenarioError::Config(format!(
            "--size must be {min_size}..=10 MiB"
        )));
    }
    if a.raw && (a.rooms > 0 || !a.targets.is_empty() || a.common.shard.is_some()) {
        return Err(ScenarioError::Config(
            "fanout --raw has no rooms, one server and one process: --rooms, --targets and --shard do not apply".into(),
        ));
    }
    if a.rooms > 0 && a.common.sessions < 2 * a.rooms {
        return Err(ScenarioError::Config(
            "--rooms N needs --sessions >= 2N: a sender and a receiver per room".into(),
        ));
    }
    let shard = a.common.shard.unwrap_or_default();
    if shard.is_split() && a.rooms > 0 {
        return Err(ScenarioError::Config(
            "fanout --rooms runs in one process: --shard splits the lobby fan-out only".into(),
        ));
    }
    if shard.is_split() && a.common.start_at_ms.is_none() {
        return Err(ScenarioError::Config(
            "fanout with --shard needs --start-at-ms: the sender's and the receivers' windows must be the same".into(),
        ));
    }
    // Worker 0 holds the sender; the receivers are dealt out.
    let local = shard.share(a.common.sessions - 1) + usize::from(shard.index == 0);
    let cfg = run_config_for(&a.common, "fanout", HISTS, true, local)?;
    let key = load_key(a.common.key_file.as_deref())?;
    let mut nodes = vec![a.common.target.target()];
    nodes.extend(a.targets.iter().cloned());
    let p = Arc::new(Params {
        rate: a.rate,
        size: a.size,
        rooms: (0..a.rooms).map(room_name).collect(),
        nodes,
        raw: a.raw,
        pad: pattern(0, a.size),
        log: Log {
            receivers: Mutex::new(vec![0; a.rooms.max(1)]),
            ..Log::default()
        },
    });
    let body_p = p.clone();
    let mut outcome = runner::run(cfg, key, move |ctx| thread(ctx, body_p.clone()))?;
    let has_sender = shard.index == 0;
    let receivers = outcome.established.saturating_sub(u64::from(has_sender));
    // Per room: the receivers that must get its messages (without rooms, this worker's).
    let room_receivers = if a.rooms > 0 {
        std::mem::take(&mut *p.log.receivers.lock().expect("not poisoned"))
    } else {
        vec![receivers]
    };
    let mut sent = std::mem::take(&mut *p.log.sent.lock().expect("not poisoned"));
    let deliveries = std::mem::take(&mut *p.log.deliveries.lock().expect("not poisoned"));
    let (mut incomplete, mut complete) = (0u64, 0u64);
    let window = outcome.window;
    if !has_sender {
        // The messages the sender (on worker 0) sent in the shared window; their send
        // times are in the deliveries (or unknown, if none arrived here).
        let n = window.map_or(0, |w| expected(a.rate, &w));
        sent = (0..n)
            .map(|seq| (seq, deliveries.get(&seq).map_or(0, |d| d.2)))
            .collect();
    }
    let epoch = outcome.epoch;
    let epoch_ns = unix_ns(outcome.epoch_unix);
    let mut by_seq = Vec::new();
    for (seq, send_ns) in &sent {
        let d = deliveries.get(seq).copied();
        if let Some((n, last, _)) = d {
            by_seq.push(json!([seq, send_ns, last, n]));
        }
        let receivers = room_receivers[(seq >> 32) as usize];
        match d {
            Some((n, last, _)) if n >= receivers => {
                complete += 1;
                let t = epoch + Duration::from_nanos(send_ns.saturating_sub(epoch_ns));
                let in_window = window.is_some_and(|w| t >= w.measure_start && t < w.end);
                if in_window {
                    outcome.result.hists[0].saturating_record(last.saturating_sub(*send_ns));
                }
            }
            None if receivers == 0 => complete += 1,
            _ => incomplete += 1,
        }
    }
    if incomplete > 0 {
        *outcome
            .result
            .errors
            .entry("incomplete_fanout")
            .or_default() += incomplete;
    }
    let mut extra = BTreeMap::new();
    let deliveries_n = outcome.result.hists[1].len();
    extra.insert("rooms".into(), json!(a.rooms));
    extra.insert("nodes".into(), json!(p.nodes.len()));
    extra.insert("deliveries".into(), json!(deliveries_n));
    extra.insert(
        "deliveries_per_sec".into(),
        json!(deliveries_n as f64 / a.common.duration),
    );
    extra.insert("rate".into(), json!(a.rate));
    extra.insert("size".into(), json!(a.size));
    extra.insert("raw".into(), json!(a.raw));
    extra.insert("receivers".into(), json!(receivers));
    extra.insert("sent".into(), json!(sent.len()));
    extra.insert("complete_fanouts".into(), json!(complete));
    if shard.is_split() {
        extra.insert("deliveries_by_seq".into(), Value::Array(by_seq));
    }
    Ok(finish("fanout", outcome, HISTS, extra))
}

async fn thread(ctx: Rc<ThreadCtx>, p: Arc<Params>) {
    let local: Rc<RefCell<Deliveries>> = Rc::default();
    let handles: Vec<_> = ctx
        .my_sessions()
        .map(|i| {
            let (ctx, p, local) = (ctx.clone(), p.clone(), local.clone());
            monoio::spawn(async move {
                match (p.raw, p.is_sender(&ctx, i)) {
                    (false, true) => sender(ctx, p, i).await,
                    (false, false) => receiver(ctx, p, local, i).await,
                    (true, true) => raw::sender(ctx, p, i).await,
                    (true, false) => raw::receiver(ctx, p, local, i).await,
                }
            })
        })
        .collect();
    for h in handles {
        h.await;
    }
    let mut all = p.log.deliveries.lock().expect("not poisoned");
    for (seq, (n, last, sent)) in local.borrow().iter() {
        let e = all.entry(*seq).or_insert((0, 0, *sent));
        e.0 += n;
        e.1 = e.1.max(*last);
    }
}

/// Nanoseconds since the Unix epoch.
fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `t` on the wall clock, in ns: the process's clock reading at its epoch plus the
/// monotonic time since (so one process's timestamps never jump).
fn since_epoch(ctx: &ThreadCtx, t: Instant) -> u64 {
    unix_ns(ctx.shared.epoch_unix) + ns_between(ctx.shared.epoch, t)
}

/// Waits for message `seq`'s send time, writes its sequence number and the send time into
/// `content` and logs it as sent.
async fn stamp(ctx: &ThreadCtx, p: &Params, w: &Window, room: usize, seq: u64, content: &mut [u8]) {
    let at = w.go + Duration::from_secs_f64(1.0 / p.rate).mul_f64(seq as f64);
    monoio::time::sleep_until(at.into()).await;
    let send_ns = since_epoch(ctx, Instant::now());
    content[..8].copy_from_slice(&seq.to_le_bytes());
    content[8..16].copy_from_slice(&send_ns.to_le_bytes());
    p.log
        .sent
        .lock()
        .expect("not poisoned")
        .push((key(room, seq), send_ns));
}

/// Records a delivery of `content` (sequence number and send time first) in `room`,
/// arrived at `now`.
fn delivered(
    ctx: &ThreadCtx,
    local: &RefCell<Deliveries>,
    room: usize,
    content: &[u8],
    now: Instant,
) {
    let seq = key(
        room,
        u64::from_le_bytes(content[..8].try_into().expect("8 bytes")),
    );
    let send_ns = u64::from_le_bytes(content[8..16].try_into().expect("8 bytes"));
    let now_ns = since_epoch(ctx, now);
    ctx.rec
        .borrow_mut()
        .sample_to(1, now, now_ns.saturating_sub(send_ns), content.len() as u64);
    let mut l = local.borrow_mut();
    let e = l.entry(seq).or_insert((0, 0, send_ns));
    e.0 += 1;
    e.1 = e.1.max(now_ns);
}

async fn sender(ctx: Rc<ThreadCtx>, p: Arc<Params>, i: usize) {
    let Some(est) = p.establish(&ctx, i).await else {
        return;
    };
    let sid = est.session_id.clone();
    let room = p.room_of(i);
    let mut content = p.pad.to_vec();
    if !p.rooms.is_empty() {
        content[16..24].copy_from_slice(&(room as u64).to_le_bytes());
    }
    let w = ctx.wait_go().await;
    let (conn, deframer) = est.reader.into_parts();
    let (rd, mut wr) = conn.into_split();
    // Drain whatever the server sends the sender (a chat server may echo to it too), so
    // its socket never fills; the task ends with the runtime.
    let mut reader = FrameReader::with_deframer(rd, deframer, ctx.key.clone());
    let c = ctx.clone();
    monoio::spawn(async move {
        while let Ok(f) = reader.next().await {
            if f.header.kind == FrameType::Message {
                c.rec.borrow_mut().count("sender_deliveries", 1);
            }
        }
    });
    for seq in 0..expected(p.rate, &w) {
        stamp(&ctx, &p, &w, room, seq, &mut content).await;
        let f = match p.rooms.get(room) {
            Some(r) => rooms::message(&ctx.key, &sid, r, &content),
            None => client::frame(&ctx.key, FrameType::Message, OCTET_STREAM, &sid, &content),
        };
        if let Err(e) = client::write(&mut wr, f).await {
            ctx.error(e.kind());
            break;
        }
    }
    say_goodbye(&mut wr, &ctx.key, &sid).await;
}

/// What a delivery's header says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// A `message` of this session (in its room, from someone).
    Ok,
    /// The session cannot go on (an `error`, a `disconnect`, another session's frame).
    End(&'static str),
    /// Not a delivery of this run: counted, the next frame is read.
    Skip(&'static str),
}

/// Judges a frame's header (`content` only names a server's `error`): this session's, a
/// `message`, and with rooms tagged with the receiver's `room` and a sender.
fn judge(header: &Header, content: &[u8], sid: &ByteStr, room: Option<&RoomName>) -> Verdict {
    if let Err(e) = check_header(header, content, sid) {
        return Verdict::End(e.kind());
    }
    if header.kind != FrameType::Message {
        return Verdict::Skip(SessionError::Unexpected(header.kind).kind());
    }
    match room {
        Some(r) if header.room.as_deref() != Some(r.as_str()) || header.from.is_none() => {
            Verdict::Skip("fanout_wrong_room")
        }
        _ => Verdict::Ok,
    }
}

async fn receiver(ctx: Rc<ThreadCtx>, p: Arc<Params>, local: Rc<RefCell<Deliveries>>, i: usize) {
    let Some(est) = p.establish(&ctx, i).await else {
        return;
    };
    let room = p.room_of(i);
    p.log.receivers.lock().expect("not poisoned")[room] += 1;
    let sid = est.session_id.clone();
    let (conn, deframer) = est.reader.into_parts();
    let mut rd = FanoutReader::new(conn, deframer, ctx.key.clone());
    let pad = &p.pad;
    // Content past the sequence number, send time (and room): the same for every message.
    let fixed = if p.rooms.is_empty() { 16 } else { 24 };
    let w = ctx.wait_go().await;
    let want = expected(p.rate, &w);
    let deadline = w.end + ctx.cfg().drain;
    // One deadline for the whole loop (one timer entry per receiver, not one per frame);
    // missing deliveries are counted as incomplete fan-outs.
    let _ = monoio::time::timeout_at(deadline.into(), async {
        let mut got = 0u64;
        // The verdict on the known header (the last decoded `message`'s), which a
        // repeated header shares: judged once, not per frame.
        let mut known: Option<Verdict> = None;
        while got < want {
            let (header, c, repeat) = match rd.next().await {
                Ok(f) => f,
                Err(e) => {
                    ctx.error(e.kind());
                    return;
                }
            };
            let now = Instant::now();
            let verdict = match known {
                Some(v) if repeat => v,
                _ => {
                    let v = judge(header, c, &sid, p.rooms.get(room));
                    if header.kind == FrameType::Message {
                        known = Some(v);
                    }
                    v
                }
            };
            match verdict {
                Verdict::Ok => {}
                Verdict::End(kind) => {
                    ctx.error(kind);
                    return;
                }
                Verdict::Skip(kind) => {
                    ctx.error(kind);
                    continue;
                }
            }
            if c.len() != p.size || c[fixed..] != pad[fixed..] {
                ctx.error("fanout_bad_content");
                continue;
            }
            if !p.rooms.is_empty() {
                let in_room = u64::from_le_bytes(c[16..24].try_into().expect("8 bytes"));
                if in_room != room as u64 {
                    ctx.error("fanout_wrong_room");
                    continue;
                }
            }
            got += 1;
            delivered(&ctx, &local, room, c, now);
        }
    })
    .await;
    // How many frames were verified without a header parse (see `fanout_wire`).
    let (fast, decoded) = rd.paths();
    {
        let mut rec = ctx.rec.borrow_mut();
        rec.count("fanout_fast_path", fast);
        rec.count("fanout_decoded", decoded);
    }
    say_goodbye(rd.get_mut(), &ctx.key, &sid).await;
}
