//! Session rules for operating a server, on a simulated clock: several keys (rotation),
//! the memory allowance (budget) and the chunked-message timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sockchat_proto::header::{ByteStr, ChunkInfo, Header, OCTET_STREAM, TEXT_UTF8};
use sockchat_proto::session::{Session, SMALL_FRAME};
use sockchat_proto::{
    encode_into, ClientSession, CloseReason, Event, FrameType, Key, KeyRing, ServerSession,
    SessionConfig,
};

const SID: &str = "3f2b8c1e-6d4a-4e8b-9c71-2a5d0e9f1b34";

fn key(s: &str) -> Arc<Key> {
    Arc::new(Key::new(s.as_bytes()))
}

fn frame(key: &Key, kind: FrameType, content: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    let h = Header::new(kind, Some(OCTET_STREAM), Some(ByteStr::from(SID)));
    encode_into(key, &h, content, &mut out).unwrap();
    out
}

fn ack(key: &Key, features: bool) -> BytesMut {
    let mut out = BytesMut::new();
    let mut h = Header::new(
        FrameType::SessionAck,
        Some(OCTET_STREAM),
        Some(ByteStr::from(SID)),
    );
    if features {
        h.features = Some(vec![ByteStr::from("chunk")]);
    }
    encode_into(key, &h, b"Session acknowledged", &mut out).unwrap();
    out
}

fn chunk(key: &Key, id: &str, index: u32, count: u32, total: u64, content: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    let mut h = Header::new(FrameType::Chunk, Some(TEXT_UTF8), Some(ByteStr::from(SID)));
    h.chunk = Some(ChunkInfo {
        message_id: ByteStr::from(id),
        index,
        count,
        total_len: total,
    });
    encode_into(key, &h, content, &mut out).unwrap();
    out
}

/// Feeds `bytes`; returns the events and what the server sent.
fn feed(s: &mut ServerSession, bytes: &[u8], now: Instant) -> (Vec<Event>, Vec<u8>) {
    s.deframer_mut().extend_from_slice(bytes);
    s.handle_input(now);
    drain(s)
}

fn drain(s: &mut ServerSession) -> (Vec<Event>, Vec<u8>) {
    let mut ev = Vec::new();
    while let Some(e) = s.poll_event() {
        ev.push(e);
    }
    let mut out = Vec::new();
    s.poll_transmit(&mut out);
    (ev, out.concat())
}

/// A server session on `k` and `cfg` past its handshake (the ack asks for features), its
/// output so far drained.
fn established(k: &Arc<Key>, cfg: &Arc<SessionConfig>, t0: Instant) -> ServerSession {
    let mut s = ServerSession::new(ByteStr::from(SID), k.clone(), cfg.clone(), t0);
    drain(&mut s);
    feed(&mut s, &ack(k, true), t0);
    s
}

fn closed(ev: &[Event]) -> Option<CloseReason> {
    ev.iter().find_map(|e| match e {
        Event::Closed(r) => Some(r.clone()),
        _ => None,
    })
}

/// Decodes every frame of `wire` with `key` (panics on a frame it does not verify).
fn frames(key: &Key, wire: &[u8]) -> Vec<(FrameType, Vec<u8>)> {
    let mut d = sockchat_proto::Deframer::new(Default::default());
    d.extend_from_slice(wire);
    let mut v = Vec::new();
    while let sockchat_proto::Decoded::Frame(f) = d.decode(key).expect("verifies") {
        v.push((f.header.kind, f.content.to_vec()));
    }
    v
}

#[test]
fn a_session_answers_with_the_key_its_ack_used() {
    let (new, old) = (key("new"), key("old"));
    let ring = Arc::new(KeyRing::new(vec![new.clone(), old.clone()]).unwrap());
    let t0 = Instant::now();
    let cfg = Arc::new(SessionConfig::default());

    // session_init is signed with the first key.
    let mut s = ServerSession::with_keys(ByteStr::from(SID), ring.clone(), cfg.clone(), t0);
    let (_, init) = drain(&mut s);
    assert_eq!(frames(&new, &init)[0].0, FrameType::SessionInit);

    // An ack signed with the second key is accepted; the echo comes back with it.
    let (ev, _) = feed(&mut s, &ack(&old, false), t0);
    assert!(matches!(ev[0], Event::Established { .. }));
    let (ev, _) = feed(&mut s, &frame(&old, FrameType::Message, b"hi"), t0);
    let Some(Event::Message(m)) = ev.into_iter().next() else {
        panic!()
    };
    s.send_message(m.content_type, m.content).unwrap();
    let (_, out) = drain(&mut s);
    assert_eq!(
        frames(&old, &out),
        vec![(FrameType::Message, b"hi".to_vec())]
    );

    // From then on only that key: a frame signed with the other one is refused.
    let (ev, out) = feed(&mut s, &frame(&new, FrameType::Message, b"x"), t0);
    assert!(matches!(closed(&ev), Some(CloseReason::InvalidFrame(_))));
    assert_eq!(frames(&old, &out)[0].0, FrameType::Error);

    // A key outside the ring is refused at the ack.
    let mut s = ServerSession::with_keys(ByteStr::from(SID), ring, cfg, t0);
    drain(&mut s);
    let (ev, _) = feed(&mut s, &ack(&key("stranger"), false), t0);
    assert!(matches!(closed(&ev), Some(CloseReason::InvalidFrame(_))));
}

#[test]
fn a_client_with_several_keys_follows_the_servers_init() {
    let (new, old) = (key("new"), key("old"));
    let t0 = Instant::now();
    let cfg = Arc::new(SessionConfig::default());
    let mut server = ServerSession::new(ByteStr::from(SID), new.clone(), cfg.clone(), t0);
    let ring = Arc::new(KeyRing::new(vec![old.clone(), new.clone()]).unwrap());
    let mut client = ClientSession::with_keys(ring, cfg, t0);
    for _ in 0..4 {
        let mut out = Vec::new();
        server.poll_transmit(&mut out);
        for b in out.drain(..) {
            client.deframer_mut().extend_from_slice(&b);
        }
        client.handle_input(t0);
        client.poll_transmit(&mut out);
        for b in out.drain(..) {
            server.deframer_mut().extend_from_slice(&b);
        }
        server.handle_input(t0);
    }
    assert!(server.is_established() && client.is_established());
}

#[test]
fn the_allowance_refuses_large_frames_and_new_messages_first() {
    let k = key("k");
    let t0 = Instant::now();
    let cfg = Arc::new(SessionConfig::default());
    let mut s = established(&k, &cfg, t0);
    s.set_memory_allowance(1 << 20);

    // Small frames pass whatever the allowance.
    s.set_memory_allowance(0);
    let small = vec![1u8; SMALL_FRAME / 2];
    let (ev, _) = feed(&mut s, &frame(&k, FrameType::Message, &small), t0);
    assert!(matches!(ev[0], Event::Message(_)));

    // A chunk opening a 3 MiB message with 2 MiB allowed: refused before reserving.
    s.set_memory_allowance(2 << 20);
    let c = chunk(&k, "m", 0, 3, 3 << 20, &vec![0u8; 1 << 20]);
    let (ev, out) = feed(&mut s, &c, t0);
    assert_eq!(closed(&ev), Some(CloseReason::MemoryBudget));
    assert_eq!(s.held_input_bytes(), 0);
    let sent = frames(&k, &out);
    assert_eq!(sent[0].0, FrameType::Error);
    assert!(String::from_utf8_lossy(&sent[0].1).contains("memory_budget"));

    // A large frame whose header arrives with too little allowed: refused before its
    // buffer grows.
    let mut s = established(&k, &cfg, t0);
    s.set_memory_allowance(100_000);
    let big = frame(&k, FrameType::Message, &vec![2u8; 1 << 20]);
    let (ev, _) = feed(&mut s, &big[..4096], t0);
    assert_eq!(closed(&ev), Some(CloseReason::MemoryBudget));
    assert!(s.deframer_mut().capacity() < 1 << 20);

    // Within the allowance: accepted, and held bytes count the open message.
    let mut s = established(&k, &cfg, t0);
    s.set_memory_allowance(8 << 20);
    let c = chunk(&k, "m", 0, 3, 3 << 20, &vec![0u8; 1 << 20]);
    let (ev, _) = feed(&mut s, &c, t0);
    assert!(closed(&ev).is_none(), "{ev:?}");
    assert!(s.held_input_bytes() >= 3 << 20);
}

#[test]
fn a_chunked_message_must_complete_in_time() {
    let k = key("k");
    let t0 = Instant::now();
    let cfg = Arc::new(SessionConfig {
        message_timeout: Some(Duration::from_secs(2)),
        ..SessionConfig::default()
    });
    let mut s = established(&k, &cfg, t0);
    let t1 = t0 + Duration::from_secs(1);
    feed(&mut s, &chunk(&k, "m", 0, 2, 4, b"ab"), t1);
    assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_secs(2)));
    // Pings keep the session alive but not the message.
    let t2 = t1 + Duration::from_millis(1500);
    feed(&mut s, &frame(&k, FrameType::Heartbeat, b"ping"), t2);
    s.handle_timeout(t2);
    assert!(!s.is_closed());
    s.handle_timeout(t1 + Duration::from_secs(2));
    let (ev, out) = drain(&mut s);
    assert_eq!(closed(&ev), Some(CloseReason::MessageTimeout));
    assert_eq!(frames(&k, &out).last().unwrap().0, FrameType::Error);

    // A message that completes in time ends its deadline.
    let mut s = established(&k, &cfg, t0);
    feed(&mut s, &chunk(&k, "m", 0, 2, 4, b"ab"), t0);
    let (ev, _) = feed(&mut s, &chunk(&k, "m", 1, 2, 4, b"cd"), t0);
    assert!(matches!(&ev[0], Event::Message(m) if &m.content[..] == b"abcd"));
    assert_eq!(
        s.poll_timeout(),
        Some(t0 + SessionConfig::default().session_timeout)
    );
}
