//! A `ClientSession` and a `ServerSession` wired together in memory, on a simulated clock
//! (`sockchat_testkit::pair::Pair`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sockchat_proto::header::{ByteStr, Header, TEXT_UTF8};
use sockchat_proto::session::{Features, HandshakeFault, Session};
use sockchat_proto::{
    encode_into, ChunkError, ChunkInfo, ClientSession, CloseReason, Event, FrameType, Key,
    ServerSession, SessionConfig,
};
use sockchat_testkit::pair::{closed, messages, Pair, SESSION_ID as SID};

fn frame(kind: FrameType, session_id: Option<&str>, content: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    let h = Header::new(kind, Some(TEXT_UTF8), session_id.map(ByteStr::from));
    encode_into(&Key::reference_default(), &h, content, &mut out).unwrap();
    out
}

#[test]
fn handshake_negotiates_features_and_reports_established() {
    let mut p = Pair::new(SessionConfig::default(), SessionConfig::default());
    p.pump();
    let est = |events: &[Event]| {
        events.iter().find_map(|e| match e {
            Event::Established {
                session_id,
                features,
            } => Some((session_id.clone(), *features)),
            _ => None,
        })
    };
    assert_eq!(
        est(&p.server_events),
        Some((ByteStr::from(SID), Features::ALL))
    );
    assert_eq!(
        est(&p.client_events),
        Some((ByteStr::from(SID), Features::ALL))
    );
    assert_eq!(p.client.session_id().map(|s| s.as_str()), Some(SID));
}

#[test]
fn a_reference_style_client_gets_no_features_and_no_extra_frames() {
    let client_cfg = SessionConfig {
        features: Features::NONE,
        ..SessionConfig::default()
    };
    let mut p = Pair::new(SessionConfig::default(), client_cfg);
    // Capture what the server sends after the ack: nothing, since no features were asked.
    let mut out = Vec::new();
    p.server.poll_transmit(&mut out);
    for b in out.drain(..) {
        p.client.deframer_mut().extend_from_slice(&b);
    }
    p.client.handle_input(p.now);
    p.client.poll_transmit(&mut out);
    for b in out.drain(..) {
        p.server.deframer_mut().extend_from_slice(&b);
    }
    p.server.handle_input(p.now);
    assert!(p.server.is_established());
    assert_eq!(p.server.features(), Features::NONE);
    assert_eq!(p.server.queued_bytes(), 0);
}

#[test]
fn a_client_asking_features_of_a_server_without_them_still_connects() {
    let server_cfg = SessionConfig {
        features: Features::NONE,
        ..SessionConfig::default()
    };
    let mut p = Pair::new(server_cfg, SessionConfig::default());
    p.pump();
    assert!(p.client.is_established());
    assert_eq!(p.client.features(), Features::NONE);
}

/// A client fed `bytes` by a server, with what it reports.
fn client_fed(bytes: &[u8]) -> (ClientSession, Vec<Event>) {
    let now = Instant::now();
    let key = Arc::new(Key::reference_default());
    let mut c = ClientSession::new(key, Arc::new(SessionConfig::default()), now);
    c.deframer_mut().extend_from_slice(bytes);
    c.handle_input(now);
    let events = std::iter::from_fn(|| c.poll_event()).collect();
    (c, events)
}

#[test]
fn a_client_handshake_failure_names_what_came_instead_of_session_init() {
    let (c, events) = client_fed(&frame(FrameType::SessionInit, None, b"no id"));
    assert_eq!(closed(&events), vec![CloseReason::HandshakeFailed]);
    assert_eq!(c.handshake_fault(), Some(HandshakeFault::NoSessionId));

    let (c, events) = client_fed(&frame(FrameType::Message, Some(SID), b"too early"));
    assert_eq!(closed(&events), vec![CloseReason::HandshakeFailed]);
    assert_eq!(
        c.handshake_fault(),
        Some(HandshakeFault::Unexpected(FrameType::Message))
    );

    // An `error` is reported, not a handshake failure: the server may still go on.
    let (c, events) = client_fed(&frame(FrameType::Error, None, b"Server full"));
    assert!(closed(&events).is_empty());
    assert!(matches!(&events[..], [Event::PeerError(t)] if t.as_str() == "Server full"));
    assert_eq!(c.handshake_fault(), None);

    let (c, _) = client_fed(&frame(FrameType::SessionInit, Some(SID), b"hi"));
    assert_eq!(c.handshake_fault(), None);
}

#[test]
fn messages_echo_and_frames_pipelined_after_the_ack_are_handled() {
    let mut p = Pair::new(
        SessionConfig::default(),
        SessionConfig {
            features: Features::NONE,
            ..Default::default()
        },
    );
    // Deliver session_init, then the ack and two messages in the same bytes.
    let mut out = Vec::new();
    p.server.poll_transmit(&mut out);
    for b in out.drain(..) {
        p.client.deframer_mut().extend_from_slice(&b);
    }
    p.client.handle_input(p.now);
    p.client
        .send_message(Some(TEXT_UTF8), Bytes::from_static(b"one"))
        .unwrap();
    p.client
        .send_message(Some(TEXT_UTF8), Bytes::from_static("二".as_bytes()))
        .unwrap();
    p.pump();
    assert_eq!(
        messages(&p.server_events),
        vec![Bytes::from_static(b"one"), Bytes::from("二")]
    );
    // Echo: the server sends the same verified bytes back.
    for e in std::mem::take(&mut p.server_events) {
        if let Event::Message(m) = e {
            p.server.echo(m).unwrap();
        }
    }
    p.pump();
    assert_eq!(
        messages(&p.client_events),
        vec![Bytes::from_static(b"one"), Bytes::from("二")]
    );
}

#[test]
fn heartbeats_keep_the_session_alive_and_measure_rtt() {
    let mut p = Pair::established();
    // 5 s interval, 30 s timeout: a minute of heartbeats keeps it open.
    p.advance(Duration::from_secs(60));
    assert!(p.server.is_established());
    let pongs = p
        .client_events
        .iter()
        .filter(|e| matches!(e, Event::Pong { .. }))
        .count();
    assert_eq!(pongs, 12);
}

#[test]
fn a_silent_client_is_closed_at_the_session_timeout_with_a_disconnect() {
    let mut p = Pair::established();
    // The client stops pinging: only the server's timer runs.
    p.advance_server_only(Duration::from_secs(29));
    assert!(p.server.is_established());
    p.advance_server_only(Duration::from_secs(2));
    assert_eq!(closed(&p.server_events), vec![CloseReason::SessionTimeout]);
    assert_eq!(
        closed(&p.client_events),
        vec![CloseReason::ServerDisconnect {
            reason: "Session timeout".into()
        }]
    );
}

#[test]
fn handshake_timeout_closes_an_unacknowledged_session() {
    let key = Arc::new(Key::reference_default());
    let now = Instant::now();
    let mut s = ServerSession::new(
        ByteStr::from(SID),
        key,
        Arc::new(SessionConfig::default()),
        now,
    );
    s.handle_timeout(now + Duration::from_millis(4999));
    assert!(!s.is_closed());
    s.handle_timeout(now + Duration::from_secs(5));
    assert!(s.is_closed());
    let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert_eq!(closed(&events), vec![CloseReason::HandshakeTimeout]);
}

#[test]
fn an_ack_with_a_foreign_session_id_fails_the_handshake_with_an_error_frame() {
    let mut p = Pair::new(SessionConfig::default(), SessionConfig::default());
    let mut out = Vec::new();
    p.server.poll_transmit(&mut out); // session_init, not delivered
    p.inject_to_server(&frame(
        FrameType::SessionAck,
        Some("not-the-id"),
        b"Session acknowledged",
    ));
    assert_eq!(closed(&p.server_events), vec![CloseReason::HandshakeFailed]);
    // The reference's text for this case (vector `error`).
    assert!(p.client_events.iter().any(
        |e| matches!(e, Event::PeerError(t) if t.as_str() == "Invalid session acknowledgment")
    ));
}

#[test]
fn a_frame_with_a_foreign_session_id_gets_an_error_and_a_close() {
    let mut p = Pair::established();
    p.inject_to_server(&frame(FrameType::Message, Some("someone-else"), b"hi"));
    assert_eq!(
        closed(&p.server_events),
        vec![CloseReason::ForeignSessionId]
    );
    assert!(p
        .client_events
        .iter()
        .any(|e| matches!(e, Event::PeerError(t) if t.as_str() == "Invalid session id")));
}

#[test]
fn an_invalid_frame_gets_an_error_naming_it() {
    let mut p = Pair::established();
    let mut bad = frame(FrameType::Message, Some(SID), b"hello");
    let last = bad.len() - 1;
    bad[last] ^= 1; // content CRC mismatch
    p.inject_to_server(&bad);
    assert_eq!(
        closed(&p.server_events),
        vec![CloseReason::InvalidFrame(
            sockchat_proto::DecodeError::ContentCrcMismatch
        )]
    );
    assert!(p
        .client_events
        .iter()
        .any(|e| matches!(e, Event::PeerError(t) if t.contains("content CRC"))));
}

#[test]
fn client_disconnect_closes_both_ends_with_the_reason() {
    let mut p = Pair::established();
    p.client.disconnect("Client disconnecting");
    p.pump();
    let reason = CloseReason::ClientDisconnect {
        reason: "Client disconnecting".into(),
    };
    assert_eq!(closed(&p.server_events), vec![reason.clone()]);
    assert_eq!(closed(&p.client_events), vec![reason]);
}

#[test]
fn server_shutdown_notice_follows_the_replies_already_owed() {
    let mut p = Pair::established();
    p.client
        .send_message(Some(TEXT_UTF8), Bytes::from_static(b"last words"))
        .unwrap();
    p.pump();
    for e in std::mem::take(&mut p.server_events) {
        if let Event::Message(m) = e {
            p.server.echo(m).unwrap();
        }
    }
    p.server.close(CloseReason::ServerShutdown);
    p.pump();
    // The echo arrives before the disconnect.
    let order: Vec<&str> = p
        .client_events
        .iter()
        .map(|e| match e {
            Event::Message(_) => "message",
            Event::Closed(CloseReason::ServerShutdown) => "shutdown",
            _ => "other",
        })
        .collect();
    assert_eq!(order, vec!["message", "shutdown"]);
}

#[test]
fn a_chunked_message_is_reassembled_and_echoed_in_chunks() {
    let mut p = Pair::established();
    // Over the 10 MiB frame limit, so it must travel as chunks.
    let big: Bytes = (0..11 * 1024 * 1024 + 7)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let mut p2 = Pair::new(
        SessionConfig {
            max_chunk: 1 << 20,
            ..Default::default()
        },
        SessionConfig {
            max_chunk: 1 << 20,
            ..Default::default()
        },
    );
    p2.pump();
    p2.client
        .send_message(Some(TEXT_UTF8), big.clone())
        .unwrap();
    p2.pump();
    let chunks = p2.wire_to_server.len();
    assert!(chunks >= 2, "sent as chunks");
    let got = messages(&p2.server_events);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0], big);
    for e in std::mem::take(&mut p2.server_events) {
        if let Event::Message(m) = e {
            assert!(m.frame.is_none());
            p2.server.echo(m).unwrap();
        }
    }
    p2.pump();
    assert_eq!(messages(&p2.client_events), vec![big]);
    // Small messages stay single frames even with chunks enabled.
    p.client
        .send_message(None, Bytes::from_static(b"small"))
        .unwrap();
    p.pump();
    assert_eq!(
        messages(&p.server_events),
        vec![Bytes::from_static(b"small")]
    );
}

fn chunk_frame(info: ChunkInfo, content: &[u8]) -> BytesMut {
    let mut h = Header::new(FrameType::Chunk, None, Some(ByteStr::from(SID)));
    h.chunk = Some(info);
    let mut out = BytesMut::new();
    encode_into(&Key::reference_default(), &h, content, &mut out).unwrap();
    out
}

#[test]
fn chunk_limit_violations_close_the_session() {
    let mut p = Pair::established();
    p.inject_to_server(&chunk_frame(ChunkInfo::new("m", 0, 2, 1 << 40), b"x"));
    assert!(matches!(
        closed(&p.server_events)[..],
        [CloseReason::Chunk(ChunkError::TooLarge { .. })]
    ));
    assert_eq!(p.server.reassembly_bytes(), 0);

    let mut p = Pair::established();
    p.inject_to_server(&chunk_frame(ChunkInfo::new("m", 0, 2, 4), b"ab"));
    p.inject_to_server(&chunk_frame(ChunkInfo::new("m", 0, 2, 4), b"ab"));
    assert!(matches!(
        closed(&p.server_events)[..],
        [CloseReason::Chunk(ChunkError::Duplicate { index: 0 })]
    ));

    let mut p = Pair::established();
    p.inject_to_server(&chunk_frame(ChunkInfo::new("m", 5, 2, 4), b"ab"));
    assert!(matches!(
        closed(&p.server_events)[..],
        [CloseReason::Chunk(ChunkError::IndexOutOfRange { .. })]
    ));

    let mut p = Pair::established();
    for i in 0..4 {
        p.inject_to_server(&chunk_frame(
            ChunkInfo::new(format!("m{i}"), 0, 2, 4),
            b"ab",
        ));
    }
    assert!(closed(&p.server_events).is_empty());
    assert_eq!(p.server.reassembly_bytes(), 16);
    p.inject_to_server(&chunk_frame(ChunkInfo::new("m4", 0, 2, 4), b"ab"));
    assert!(matches!(
        closed(&p.server_events)[..],
        [CloseReason::Chunk(ChunkError::TooManyPartial { .. })]
    ));
    assert_eq!(p.server.reassembly_bytes(), 0, "memory released on close");
}

#[test]
fn chunks_without_the_feature_are_a_protocol_violation() {
    let no_features = || SessionConfig {
        features: Features::NONE,
        ..SessionConfig::default()
    };
    let mut p = Pair::new(SessionConfig::default(), no_features());
    p.pump();
    p.inject_to_server(&chunk_frame(ChunkInfo::new("m", 0, 1, 2), b"ab"));
    assert!(matches!(
        closed(&p.server_events)[..],
        [CloseReason::ProtocolViolation(_)]
    ));
}

#[test]
fn an_unfinished_chunk_stream_is_released_at_the_session_timeout() {
    let mut p = Pair::established();
    p.inject_to_server(&chunk_frame(ChunkInfo::new("m", 0, 2, 4), b"ab"));
    assert_eq!(p.server.reassembly_bytes(), 4);
    p.advance_server_only(Duration::from_secs(31));
    assert_eq!(closed(&p.server_events), vec![CloseReason::SessionTimeout]);
    assert_eq!(p.server.reassembly_bytes(), 0);
}
