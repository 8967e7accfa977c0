//! Handshake, echo of every kind of content, large frames, chunked messages, framing
//! edge cases (many frames per write, one frame in 1-byte writes), heartbeats, timeouts,
//! client disconnect and foreign session ids.

use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sockchat_proto::chunk::{split, ChunkLimits, Reassembler};
use sockchat_proto::frame::MAX_CONTENT_LEN;
use sockchat_proto::{ByteStr, FrameType, Header};
use sockchat_testkit::*;

per_transport!(
    handshake,
    session_init_is_byte_compatible,
    bad_ack_is_refused,
    message_before_ack_is_refused,
    handshake_timeout_closes,
    echo_text_binary_utf8,
    echo_ten_mib_frame,
    chunked_fifty_mib_message,
    chunked_echo_is_the_chunks_as_received,
    chunk_feature_not_answered_without_asking,
    many_frames_in_one_write,
    one_frame_in_one_byte_writes,
    ping_pong,
    silence_times_out,
    client_disconnect_closes_session,
    closed_sessions_free_their_slot,
    foreign_session_id_is_refused,
);

fn handshake(t: Transport) {
    let server = Server::start();
    let mut a = server.connect(t);
    a.handshake();
    let mut b = server.connect(t);
    b.handshake();
    assert_ne!(a.session_id, b.session_id, "session ids must be unique");
    // The reference server answers a plain ack with nothing; the session is open.
    a.ping();
    b.ping();
    a.echo(Some(TEXT_UTF8), b"after handshake");
}

/// `session_init` is exactly what the reference encoder writes for that id.
fn session_init_is_byte_compatible(t: Transport) {
    let server = Server::start();
    let mut c = server.connect(t);
    let init = c.read_init();
    let expected = build_frame(
        &c.key,
        FrameType::SessionInit,
        Some(OCTET),
        Some(&c.session_id),
        b"Session established",
    );
    assert!(
        init.raw[..] == expected[..],
        "session_init is not byte-identical to the reference encoding"
    );
    // Key order and separators as Python's json.dumps.
    let json = std::str::from_utf8(init.header_json()).unwrap();
    assert!(
        json.starts_with(r#"{"type": "session_init", "content_type": "application/octet-stream", "session_id": ""#),
        "{json}"
    );
}

fn bad_ack_is_refused(t: Transport) {
    let server = Server::start();
    let mut c = server.connect(t);
    c.read_init();
    let wrong = build_frame(
        &c.key,
        FrameType::SessionAck,
        Some(OCTET),
        Some("00000000-0000-4000-8000-000000000000"),
        b"Session acknowledged",
    );
    c.send(&wrong);
    c.expect_error_and_close("Invalid session acknowledgment");
    // The server is fine.
    server.handshake(t).ping();
}

fn message_before_ack_is_refused(t: Transport) {
    let server = Server::start();
    let mut c = server.connect(t);
    c.read_init();
    let m = c.frame(FrameType::Message, Some(TEXT_UTF8), b"too early");
    c.send(&m);
    c.expect_error_and_close("Invalid session acknowledgment");
    server.handshake(t).ping();
}

fn handshake_timeout_closes(t: Transport) {
    let server = Server::builder()
        .args(["--handshake-timeout", "500ms"])
        .start();
    let mut c = server.connect(t);
    c.read_init();
    let started = Instant::now();
    // Nothing sent: the server gives up (a disconnect or error frame is optional).
    let frames = c.expect_closed(SHORT);
    assert!(
        frames
            .iter()
            .all(|f| matches!(f.header.kind, FrameType::Disconnect | FrameType::Error)),
        "unexpected frames before the handshake timeout close: {:?}",
        describe(&frames)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "closed after {:?}, well before the 500ms handshake timeout",
        started.elapsed()
    );
    server.handshake(t).ping();
}

fn echo_text_binary_utf8(t: Transport) {
    let server = Server::start();
    let mut c = server.handshake(t);
    // The reference client's text, UTF-8 text, binary with every byte value, a null
    // content_type, and a content_type with non-ASCII (escaped by json.dumps).
    c.echo(Some(TEXT_UTF8), b"Hello Server");
    c.echo(Some(TEXT_UTF8), "你好，服务器 ✓ — ñ 🚀".as_bytes());
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(4096 + 17).collect();
    c.echo(Some("image/jpeg"), &all_bytes);
    c.echo(Some("application/octet-stream"), &[0u8]);
    c.echo(None, b"no content type");
    c.echo(Some("text/plain; name=\"caf\u{e9}\""), b"x");
    c.echo(Some(TEXT_UTF8), &pattern(100_000, 7));
}

fn echo_ten_mib_frame(t: Transport) {
    let server = Server::start();
    let mut c = server.handshake(t);
    let content = pattern(MAX_CONTENT_LEN as usize, 42);
    let frame = c.frame(FrameType::Message, Some("application/x-big"), &content);
    let writer = c.spawn_writer(frame.clone());
    let back = c.expect_kind(FrameType::Message, LONG);
    writer.join().unwrap().expect("write 10 MiB frame");
    assert_eq!(back.raw.len(), frame.len());
    assert!(back.raw[..] == frame[..], "10 MiB echo differs");
    // Still healthy afterwards.
    c.ping();
}

fn chunked_fifty_mib_message(t: Transport) {
    let server = Server::builder()
        .args(["--max-message", &(64u64 << 20).to_string()])
        .start();
    let mut c = server.connect(t);
    c.handshake_chunk();
    const TOTAL: usize = 50 << 20;
    let content = Bytes::from(pattern(TOTAL, 99));
    let ct = "application/x-fifty";
    // Write the chunks from a thread (8 MiB each), reading the echo concurrently.
    let mut w = c.stream.try_clone().unwrap();
    let (key, sid, body) = (c.key.clone(), c.session_id.clone(), content.clone());
    let writer = thread::spawn(move || -> std::io::Result<u32> {
        use std::io::Write;
        let frames = split(
            &key,
            Some(ByteStr::from(sid.as_str())),
            Some(ByteStr::from(ct)),
            ByteStr::from("m-1"),
            body,
            8 << 20,
        )
        .expect("split");
        let count = frames.chunk_count();
        for f in frames {
            w.write_all(&f.head)?;
            w.write_all(&f.content)?;
        }
        Ok(count)
    });
    let mut r = Reassembler::new(ChunkLimits {
        max_message_len: 64 << 20,
        max_partial: 1,
    });
    let deadline = Instant::now() + LONG;
    let mut chunks = 0u32;
    let whole = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = c
            .read_frame(left)
            .unwrap_or_else(|e| panic!("[{t:?}] reading echoed chunks after {chunks}: {e:?}"));
        assert_eq!(
            f.header.kind,
            FrameType::Chunk,
            "a 50 MiB echo must come as chunks"
        );
        assert_eq!(f.header.session_id.as_deref(), Some(c.session_id.as_str()));
        assert!(f.content.len() as u64 <= MAX_CONTENT_LEN);
        chunks += 1;
        assert!(chunks <= 100_000, "too many chunks");
        let info = f.header.chunk.clone().expect("chunk info");
        assert_eq!(info.total_len, TOTAL as u64);
        if let Some(m) = r
            .push(&info, f.header.content_type.as_ref(), &f.content)
            .expect("echoed chunks follow the layout rule")
        {
            break m;
        }
    };
    let sent_chunks = writer.join().unwrap().expect("write chunks");
    assert_eq!(sent_chunks, 7);
    assert_eq!(whole.content_type.as_deref(), Some(ct));
    assert_eq!(whole.content.len(), TOTAL);
    assert!(whole.content == content, "reassembled echo differs");
    c.ping();
}

/// A chunked message comes back as the very chunk frames it came in (the same bytes,
/// in the order they arrived: nothing re-encoded, nothing signed again), sent out of
/// order here, the last one short.
fn chunked_echo_is_the_chunks_as_received(t: Transport) {
    let server = Server::start();
    let mut c = server.connect(t);
    c.handshake_chunk();
    let (total, count) = (300_000u64, 5u64);
    let chunk_len = total.div_ceil(count);
    let frames: Vec<Vec<u8>> = [3u64, 0, 4, 1, 2]
        .iter()
        .map(|&i| {
            let len = ((i + 1) * chunk_len).min(total) - i * chunk_len;
            let content = pattern(len as usize, i);
            chunk_frame(&c.key, &c.session_id, "m-7", i, count, total, &content)
        })
        .collect();
    let writer = c.spawn_writer(frames.concat());
    for (k, f) in frames.iter().enumerate() {
        let back = c.expect_kind(FrameType::Chunk, SHORT);
        assert!(back.raw[..] == f[..], "[{t:?}] echoed chunk {k} differs");
    }
    writer.join().unwrap().unwrap();
    c.ping();
}

/// A reference client never asks for features and never gets a `session_ack` back.
fn chunk_feature_not_answered_without_asking(t: Transport) {
    let server = Server::start();
    let mut c = server.handshake(t);
    // If the server answered the plain ack, that answer would come before the pong.
    c.ping();
    // A message above 10 MiB cannot be sent to a client that did not ask for chunks; a
    // 10 MiB one still comes back in one frame (checked in echo_ten_mib_frame).
    // Chunk frames without the feature are a protocol violation.
    let mut h = Header::new(
        FrameType::Chunk,
        Some(ByteStr::from(OCTET)),
        Some(ByteStr::from(c.session_id.as_str())),
    );
    h.chunk = Some(sockchat_proto::ChunkInfo {
        message_id: ByteStr::from("x"),
        index: 0,
        count: 2,
        total_len: 4,
    });
    let f = build_frame_with(&c.key, &h, b"ab");
    c.send(&f);
    let frames = c.expect_closed(SHORT);
    assert_eq!(
        frames.last().map(|f| f.header.kind),
        Some(FrameType::Error),
        "chunk without the feature: {:?}",
        describe(&frames)
    );
}

fn many_frames_in_one_write(t: Transport) {
    let server = Server::start();
    let mut c = server.handshake(t);
    let mut all = Vec::new();
    let mut frames = Vec::new();
    for i in 0..300usize {
        let content = match i % 3 {
            0 => format!("message {i}").into_bytes(),
            1 => pattern(1 + i * 7, i as u64),
            _ => "ü".repeat(1 + i % 50).into_bytes(),
        };
        let ct = if i % 3 == 1 { "image/png" } else { TEXT_UTF8 };
        let f = c.frame(FrameType::Message, Some(ct), &content);
        all.extend_from_slice(&f);
        frames.push(f);
    }
    let ping = c.frame(FrameType::Heartbeat, Some(OCTET), b"ping");
    let writer = c.spawn_writer(all);
    for (i, f) in frames.iter().enumerate() {
        let back = c.expect_kind(FrameType::Message, SHORT);
        assert!(back.raw[..] == f[..], "echo {i} differs");
    }
    writer.join().unwrap().expect("write batch");
    // A ping and a message in one write.
    let msg = c.frame(FrameType::Message, Some(TEXT_UTF8), b"after ping");
    c.send(&[ping, msg.clone()].concat());
    let pong = c.expect_kind(FrameType::Heartbeat, SHORT);
    assert_eq!(&pong.content[..], b"pong");
    let back = c.expect_kind(FrameType::Message, SHORT);
    assert!(back.raw[..] == msg[..]);
}

fn one_frame_in_one_byte_writes(t: Transport) {
    let server = Server::start();
    let mut c = server.connect(t);
    c.read_init();
    // The ack itself arrives one byte at a time too.
    let ack = c.ack_frame(None);
    // Each byte is read by the server before the next is written, so it really gets
    // them one read at a time.
    for b in &ack {
        c.send(std::slice::from_ref(b));
        assert!(
            wait_peer_read_all(&c.stream, SHORT),
            "[{t:?}] ack byte unread"
        );
    }
    let f = c.frame(
        FrameType::Message,
        Some(TEXT_UTF8),
        "byte by byte ✓".as_bytes(),
    );
    for b in &f {
        c.send(std::slice::from_ref(b));
        assert!(
            wait_peer_read_all(&c.stream, SHORT),
            "[{t:?}] frame byte unread"
        );
    }
    let back = c.expect_kind(FrameType::Message, SHORT);
    assert!(back.raw[..] == f[..]);
    c.ping();
}

fn ping_pong(t: Transport) {
    let server = Server::start();
    let mut c = server.handshake(t);
    for _ in 0..5 {
        let ping = c.frame(FrameType::Heartbeat, Some(OCTET), b"ping");
        c.send(&ping);
        let pong = c.expect_kind(FrameType::Heartbeat, SHORT);
        // Byte-identical to the reference's pong for this session.
        let expected = build_frame(
            &c.key,
            FrameType::Heartbeat,
            Some(OCTET),
            Some(&c.session_id),
            b"pong",
        );
        assert!(
            pong.raw[..] == expected[..],
            "pong is not the reference encoding"
        );
    }
}

fn silence_times_out(t: Transport) {
    let server = Server::builder().args(["--session-timeout", "1s"]).start();
    let mut c = server.handshake(t);
    // Pings keep the session alive past the timeout...
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        c.ping();
        // The pacing is the behaviour under test: a ping every 250 ms, under the 1 s
        // timeout, keeps the session alive.
        thread::sleep(Duration::from_millis(250));
    }
    // ...silence ends it with a disconnect naming the reason.
    let silent_from = Instant::now();
    let frames = c.expect_closed(SHORT);
    let last = frames.last().unwrap_or_else(|| {
        panic!("[{t:?}] closed without a disconnect frame after the session timeout")
    });
    assert_eq!(
        last.header.kind,
        FrameType::Disconnect,
        "{:?}",
        describe(&frames)
    );
    let body: serde_json::Value = serde_json::from_slice(&last.content).expect("JSON content");
    assert_eq!(body["reason"], "Session timeout");
    assert_eq!(body["message"], "Disconnecting");
    assert_eq!(
        last.header.content_type.as_deref(),
        Some("application/json")
    );
    assert!(
        silent_from.elapsed() >= Duration::from_millis(500),
        "timed out after {:?} of silence with a 1s timeout",
        silent_from.elapsed()
    );
    // Other sessions are unaffected.
    server.handshake(t).ping();
}

fn client_disconnect_closes_session(t: Transport) {
    let server = Server::start();
    let mut c = server.handshake(t);
    c.echo(Some(TEXT_UTF8), b"before");
    let d = c.frame(
        FrameType::Disconnect,
        Some("application/json"),
        CLIENT_DISCONNECT_CONTENT,
    );
    c.send(&d);
    let frames = c.expect_closed(SHORT);
    assert!(
        frames
            .iter()
            .all(|f| f.header.kind == FrameType::Disconnect),
        "only a disconnect may answer a client disconnect: {:?}",
        describe(&frames)
    );
    // Many sessions come and go; the server keeps serving new ones.
    for i in 0..20 {
        let mut c = server.handshake(t);
        c.echo(Some(TEXT_UTF8), format!("session {i}").as_bytes());
        let d = c.frame(
            FrameType::Disconnect,
            Some("application/json"),
            CLIENT_DISCONNECT_CONTENT,
        );
        c.send(&d);
        c.expect_closed(SHORT);
    }
    // And a client that just drops the connection.
    for _ in 0..20 {
        drop(server.handshake(t));
    }
    let mut c = server.handshake(t);
    c.echo(Some(TEXT_UTF8), b"still serving");
}

/// With `--max-sessions 1`, a new session is only admitted once the previous one is gone:
/// proof that a disconnect (or a dropped connection) removes the session.
fn closed_sessions_free_their_slot(t: Transport) {
    let server = Server::builder().args(["--max-sessions", "1"]).start();
    for round in 0..6 {
        // The server may need a moment to notice the previous close: retry, bounded.
        let deadline = Instant::now() + SHORT;
        let mut attempts = 0;
        let mut c = loop {
            attempts += 1;
            let mut c = server.connect(t);
            match c.read_frame(SHORT) {
                Ok(f) if f.header.kind == FrameType::SessionInit => {
                    c.session_id = f
                        .header
                        .session_id
                        .as_deref()
                        .unwrap_or_default()
                        .to_string();
                    break c;
                }
                _ => {}
            }
            assert!(
                Instant::now() < deadline && attempts < 200,
                "[{t:?}] round {round}: no session admitted after the previous one closed"
            );
            // Retry interval while waiting for the slot to free up (the event is the
            // admission itself, checked above).
            thread::sleep(Duration::from_millis(25));
        };
        let ack = c.ack_frame(None);
        c.send(&ack);
        c.echo(Some(TEXT_UTF8), format!("round {round}").as_bytes());
        // While it lives, nobody else gets in.
        let mut other = server.connect(t);
        let frames = other.expect_closed(SHORT);
        assert!(
            frames.iter().all(|f| f.header.kind == FrameType::Error),
            "[{t:?}] a second session was admitted: {:?}",
            describe(&frames)
        );
        if round % 2 == 0 {
            let d = c.frame(
                FrameType::Disconnect,
                Some("application/json"),
                CLIENT_DISCONNECT_CONTENT,
            );
            c.send(&d);
            c.expect_closed(SHORT);
        } else {
            drop(c);
        }
    }
}

fn foreign_session_id_is_refused(t: Transport) {
    let server = Server::start();
    let mut a = server.handshake(t);
    let mut b = server.handshake(t);
    // A frame carrying another live session's id, and one carrying a made-up id.
    let stolen = build_frame(
        &a.key,
        FrameType::Message,
        Some(TEXT_UTF8),
        Some(&b.session_id),
        b"not mine",
    );
    a.send(&stolen);
    a.expect_error_and_close("Invalid session id");
    // b is untouched and receives nothing.
    b.echo(Some(TEXT_UTF8), b"b still works");

    let mut c = server.handshake(t);
    let made_up = build_frame(
        &c.key,
        FrameType::Heartbeat,
        Some(OCTET),
        Some("3f2b8c1e-6d4a-4e8b-9c71-2a5d0e9f1b34"),
        b"ping",
    );
    c.send(&made_up);
    c.expect_error_and_close("Invalid session id");

    // A null session id is foreign too.
    let mut d = server.handshake(t);
    let null = build_frame(&d.key, FrameType::Message, Some(TEXT_UTF8), None, b"x");
    d.send(&null);
    d.expect_error_and_close("Invalid session id");
}
