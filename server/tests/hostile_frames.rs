//! Hostile frames from an established session: a fixed header announcing 10 MiB then
//! silence, a frame sent one byte per 100 ms, wrong CRCs, a wrong HMAC key, unknown type,
//! empty content, oversize lengths, header JSON that is not an object, nested 10,000
//! deep, or 64 KiB of junk keys.
//!
//! Same harness as `hostile_handshake.rs`: a one-core server, a bystander doing echo
//! round trips on the same core throughout (latency bound), the server's RSS bounded, a
//! bounded outcome for the offender (an `error` or `disconnect`, then the close), and the
//! close counted under its reason in the server's shutdown totals.

use std::time::Duration;

use sockchat_proto::frame::MAX_CONTENT_LEN;
use sockchat_proto::{FrameType, Key};
use sockchat_testkit::*;

per_transport!(
    ten_mib_announced_then_silence,
    partial_frame_then_silence_is_released,
    frame_one_byte_per_100ms,
    wrong_crcs,
    wrong_hmac_key,
    unknown_type,
    empty_content,
    oversize_lengths,
    header_json_not_an_object,
    header_json_nested_10000_deep,
    header_of_64_kib_junk_keys,
);

/// What a refused small frame can make the server hold: the frame (at most 64 KiB of
/// header plus a little content), its 16 KiB read buffer and the error frame. 4 MiB
/// leaves room for allocator arenas and the log; memory reserved from an announced
/// length that is then refused or never sent would go past it.
const SMALL_BOUND: u64 = 4 << 20;
const SESSION_TIMEOUT: Duration = Duration::from_secs(2);

fn key() -> Key {
    Key::reference_default()
}

/// A fixed header announcing `content_len` bytes of content after `header_len` bytes of
/// header (CRCs and MAC of nothing in particular: the server cannot check them before
/// the whole frame is in).
fn fixed_header(header_len: u32, content_len: u64) -> Vec<u8> {
    let mut f = raw_frame(&key(), b"{}", b"x");
    f.truncate(64);
    f[12..16].copy_from_slice(&header_len.to_be_bytes());
    f[20..28].copy_from_slice(&content_len.to_be_bytes());
    f
}

/// Sends `bytes` on a fresh established session (on a writer thread: the server may
/// refuse before reading it all) and expects an `error` containing `needle`, then the
/// close.
fn refused(arena: &Arena, bytes: Vec<u8>, needle: &str) -> String {
    let t = arena.transport;
    let mut c = arena.server.handshake(t);
    let writer = c.spawn_writer(bytes);
    let out = c.expect_notice_within(FrameType::Error, needle, SHORT);
    let _ = writer.join(); // may have failed with a reset: the server stopped reading
    let text = out.notice().expect("notice").1;
    let shown: String = text.chars().take(160).collect();
    eprintln!("[{t:?} {}] refused with {shown:?}", arena.case);
    // A short, sanitised excerpt at most, never the peer's input whole (serde_json's
    // messages quote wrong-typed strings whole; the proto cuts them since 121f274).
    assert!(
        text.len() < 512,
        "[{t:?}] the error text is {} bytes long: it must not reflect the peer's input",
        text.len()
    );
    text
}

/// A session frame with a reference header and `content`.
fn message(c_sid: &str, content: &[u8]) -> Vec<u8> {
    let h = reference_header_json("message", Some(TEXT_UTF8), Some(c_sid));
    raw_frame(&key(), h.as_bytes(), content)
}

/// A valid fixed header announcing a 10 MiB frame (the protocol's maximum), then nothing;
/// before the ack (closed at the handshake timeout) and after it (closed at the session
/// timeout: a frame in progress is not activity). Nothing is allocated for the announced
/// frame that the server's RSS would show.
fn ten_mib_announced_then_silence(t: Transport) {
    let arena = Arena::start(
        t,
        "ten_mib_then_silence",
        &["--session-timeout", "2s", "--handshake-timeout", "2s"],
    );
    let announce = fixed_header(100, MAX_CONTENT_LEN);
    let mut before_ack = arena.server.connect(t);
    before_ack.read_init();
    before_ack.send(&announce);
    let mut after_ack = arena.server.handshake(t);
    after_ack.send(&announce);
    before_ack.expect_notice_within(
        FrameType::Disconnect,
        "Handshake timeout",
        SESSION_TIMEOUT + SHORT,
    );
    after_ack.expect_notice_within(
        FrameType::Disconnect,
        "Session timeout",
        SESSION_TIMEOUT + SHORT,
    );
    let totals = arena.finish(SMALL_BOUND);
    assert_eq!(totals.closes("handshake_timeout"), 1, "{totals:?}");
    assert_eq!(totals.closes("session_timeout"), 1, "{totals:?}");
}

/// 6 MiB of a 10 MiB frame, then silence: the server holds what arrived until the session
/// timeout, then releases it (RSS back near the baseline).
fn partial_frame_then_silence_is_released(t: Transport) {
    let arena = Arena::start(t, "partial_frame_released", &["--session-timeout", "3s"]);
    let mut c = arena.server.handshake(t);
    let content = pattern(MAX_CONTENT_LEN as usize, 5);
    let mut f = message(&c.session_id, &content);
    f.truncate(6 << 20);
    let started = std::time::Instant::now();
    // On a writer thread: if the machine stalls past the timeout, the close is still read.
    let _ = c.spawn_writer(f).join();
    let pid = arena.server.pid();
    let held = proc_rss(pid).saturating_sub(arena.baseline_rss);
    eprintln!("[{t:?}] 6 MiB written in {:?}", started.elapsed());
    c.expect_notice_within(FrameType::Disconnect, "Session timeout", SHORT + SHORT);
    // Released: RSS back within 2 MiB of where it was (the server may take a moment to
    // finish the close after the notice).
    let released = wait_until(SHORT, || {
        proc_rss(pid).saturating_sub(arena.baseline_rss) < (2 << 20)
    });
    eprintln!(
        "[{t:?}] partial frame: {} KiB held while open, {} KiB above baseline after the close",
        held >> 10,
        proc_rss(pid).saturating_sub(arena.baseline_rss) >> 10
    );
    assert!(
        released,
        "[{t:?}] the partial frame's memory was not released after the close"
    );
    // Bound: one frame's buffer (10 MiB + header) plus SMALL_BOUND.
    let totals = arena.finish((10 << 20) + SMALL_BOUND);
    assert_eq!(totals.closes("session_timeout"), 1, "{totals:?}");
}

/// Slowloris after the handshake: a valid frame one byte per 100 ms. Only complete frames
/// count as activity, so the session is closed at the session timeout, long before the
/// 20 s the frame would take.
fn frame_one_byte_per_100ms(t: Transport) {
    let arena = Arena::start(t, "slowloris_frame", &["--session-timeout", "2s"]);
    let mut c = arena.server.handshake(t);
    let f = message(&c.session_id, &pattern(150, 9));
    let start = std::time::Instant::now();
    let mut notice = None;
    for b in &f {
        if c.try_send(&[*b]).is_err() {
            break;
        }
        match c.read_frame(Duration::from_millis(100)) {
            Ok(fr) => {
                notice = Some(fr);
                break;
            }
            Err(ReadError::Timeout) => {}
            Err(e) => panic!("[{t:?}] slowloris: {e:?} after {:?}", start.elapsed()),
        }
    }
    let notice = notice.unwrap_or_else(|| c.expect_frame(SHORT));
    assert_eq!(
        notice.header.kind,
        FrameType::Disconnect,
        "{}",
        describe(std::slice::from_ref(&notice))[0]
    );
    assert!(
        String::from_utf8_lossy(&notice.content).contains("Session timeout"),
        "{:?}",
        describe(&[notice])
    );
    c.read_until_closed(SHORT);
    let took = start.elapsed();
    eprintln!("[{t:?}] slowloris frame closed after {took:?}");
    assert!(took < SESSION_TIMEOUT + SHORT, "{took:?}");
    let totals = arena.finish(SMALL_BOUND);
    assert_eq!(totals.closes("session_timeout"), 1, "{totals:?}");
}

fn wrong_crcs(t: Transport) {
    let arena = Arena::start(t, "wrong_crcs", &[]);
    let sid = arena.server.handshake(t).session_id; // any id: the CRC fails first
    let mut f = message(&sid, b"header crc");
    f[16] ^= 0x01;
    refused(&arena, f, "header CRC");
    let mut f = message(&sid, b"content crc");
    f[31] ^= 0x80;
    refused(&arena, f, "content CRC");
    // A flipped content byte (CRC left as it was).
    let mut f = message(&sid, b"content byte");
    let last = f.len() - 1;
    f[last] ^= 0x20;
    refused(&arena, f, "content CRC");
    let totals = arena.finish(SMALL_BOUND);
    assert_eq!(totals.closes("invalid_frame"), 3, "{totals:?}");
}

/// Frames signed with another key (their CRCs are right), and a MAC of zeros.
fn wrong_hmac_key(t: Transport) {
    let arena = Arena::start(t, "wrong_hmac", &[]);
    for forged in [Some(Key::new(b"not-the-key")), Some(Key::new(b"")), None] {
        let mut c = arena.server.handshake(t);
        let h = reference_header_json("message", Some(TEXT_UTF8), Some(&c.session_id));
        let mut f = raw_frame(forged.as_ref().unwrap_or(&key()), h.as_bytes(), b"forged");
        if forged.is_none() {
            f[32..64].fill(0);
        }
        c.send(&f);
        c.expect_notice_within(FrameType::Error, "HMAC", SHORT);
    }
    let totals = arena.finish(SMALL_BOUND);
    assert_eq!(totals.closes("invalid_frame"), 3, "{totals:?}");
}

/// A type nobody knows, an empty one, one 60 KB long (the error must not reflect it).
fn unknown_type(t: Transport) {
    let arena = Arena::start(t, "unknown_type", &[]);
    let long = "z".repeat(60_000);
    for kind in ["gossip", "", "MESSAGE", long.as_str()] {
        let sid = "00000000-0000-4000-8000-000000000000";
        let h = reference_header_json(kind, Some(OCTET), Some(sid));
        refused(&arena, raw_frame(&key(), h.as_bytes(), b"?"), "type");
    }
    let totals = arena.finish(SMALL_BOUND);
    assert_eq!(totals.closes("invalid_frame"), 4, "{totals:?}");
}

fn empty_content(t: Transport) {
    let arena = Arena::start(t, "empty_content", &[]);
    let sid = arena.server.handshake(t).session_id;
    let h = reference_header_json("message", Some(TEXT_UTF8), Some(&sid));
    refused(&arena, raw_frame(&key(), h.as_bytes(), b""), "empty");
    let totals = arena.finish(SMALL_BOUND);
    assert_eq!(totals.closes("invalid_frame"), 1, "{totals:?}");
}

/// Lengths above the limits are refused from the fixed header alone (nothing more is
/// sent, so waiting for the rest would time out), and nothing is reserved for them.
fn oversize_lengths(t: Transport) {
    let arena = Arena::start(t, "oversize_lengths", &[]);
    refused(&arena, fixed_header(65_537, 10), "header too large");
    refused(&arena, fixed_header(u32::MAX, 10), "header too large");
    refused(
        &arena,
        fixed_header(100, MAX_CONTENT_LEN + 1),
        "content too large",
    );
    refused(&arena, fixed_header(100, u64::MAX), "content too large");
    let mut v2 = fixed_header(100, 10);
    v2[9] = 2;
    refused(&arena, v2, "version");
    let totals = arena.finish(SMALL_BOUND);
    assert_eq!(totals.closes("invalid_frame"), 5, "{totals:?}");
}

/// Header JSON that is valid JSON but not an object, or not JSON at all.
fn header_json_not_an_object(t: Transport) {
    let arena = Arena::start(t, "json_not_object", &[]);
    let cases: [&[u8]; 8] = [
        b"[\"message\", null, null]",
        b"\"message\"",
        b"null",
        b"42",
        b"true",
        b"",
        b"{\"type\": \"message\", ",
        b"{\"type\": \"mes\xffsage\", \"content_type\": null, \"session_id\": null}",
    ];
    for json in cases {
        // Refused; the text names the JSON, or (for a positional array read as the three
        // fields) the session id it does not carry.
        refused(&arena, raw_frame(&key(), json, b"x"), "");
    }
    // A JSON string of 60 KB as the header: refused without reflecting it.
    let long = format!("\"{}\"", "s".repeat(60_000));
    refused(&arena, raw_frame(&key(), long.as_bytes(), b"x"), "json");
    // A positional array carrying the session's own id: a serde-derived struct also
    // accepts a sequence of its fields in order, so this was taken as a valid `message`
    // until the proto refused arrays (121f274). The reference refuses it too.
    let mut c = arena.server.handshake(t);
    let json = format!("[\"message\", \"{TEXT_UTF8}\", \"{}\"]", c.session_id);
    c.send(&raw_frame(&key(), json.as_bytes(), b"array header"));
    c.expect_notice_within(FrameType::Error, "json", SHORT);
    let totals = arena.finish(SMALL_BOUND);
    assert_eq!(
        totals.closes("invalid_frame") + totals.closes("foreign_session_id"),
        10,
        "{totals:?}"
    );
}

/// Header JSON nested 10,000 deep: as the whole header (arrays, objects) it is refused
/// without overflowing the server's stack; as the value of an extra key of an otherwise
/// valid header, the server may ignore it (the protocol says extra keys are ignored) and
/// echo, or refuse it, but it must answer and stay up.
fn header_json_nested_10000_deep(t: Transport) {
    let arena = Arena::start(t, "json_nested_10000", &[]);
    let depth = 10_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    refused(&arena, raw_frame(&key(), arrays.as_bytes(), b"x"), "json");
    refused(&arena, raw_frame(&key(), objects.as_bytes(), b"x"), "json");
    for nested in [&arrays, &objects] {
        let mut c = arena.server.handshake(t);
        let h = format!(
            "{{\"type\": \"message\", \"content_type\": \"{TEXT_UTF8}\", \"session_id\": \"{}\", \"x\": {nested}}}",
            c.session_id
        );
        let f = raw_frame(&key(), h.as_bytes(), b"deep");
        c.send(&f);
        let first = c.expect_frame(SHORT);
        match first.header.kind {
            FrameType::Message => {
                assert!(first.raw[..] == f[..], "[{t:?}] the echo differs");
                c.ping();
                eprintln!("[{t:?}] nested extra key: ignored, echoed");
            }
            FrameType::Error => {
                let text = String::from_utf8_lossy(&first.content).to_lowercase();
                assert!(text.contains("json"), "[{t:?}] {text}");
                c.read_until_closed(SHORT);
                eprintln!("[{t:?}] nested extra key: refused ({text})");
            }
            other => panic!("[{t:?}] nested extra key: got a {other} frame"),
        }
    }
    arena.finish(SMALL_BOUND);
}

/// A header of exactly 65,536 bytes (the limit, inclusive) made of the three keys plus
/// junk keys is valid and echoed; 64 KiB of junk keys without them is refused.
fn header_of_64_kib_junk_keys(t: Transport) {
    let arena = Arena::start(t, "header_64k_junk", &[]);
    let mut c = arena.server.handshake(t);
    let mut h = format!(
        "{{\"type\": \"message\", \"content_type\": \"{TEXT_UTF8}\", \"session_id\": \"{}\"",
        c.session_id
    );
    let mut i = 0;
    while h.len() < 65_536 - 40 {
        h.push_str(&format!(", \"junk{i:05}\": {i}"));
        i += 1;
    }
    let pad = 65_536 - h.len() - ", \"pad\": \"\"}".len();
    h.push_str(&format!(", \"pad\": \"{}\"}}", "p".repeat(pad)));
    assert_eq!(h.len(), 65_536);
    let f = raw_frame(&key(), h.as_bytes(), b"junk keys");
    c.send(&f);
    let back = c.expect_kind(FrameType::Message, SHORT);
    assert!(back.raw[..] == f[..], "[{t:?}] echo differs");
    c.ping();

    let mut junk = String::from("{");
    let mut i = 0;
    while junk.len() < 65_000 {
        junk.push_str(&format!("\"junk{i:05}\": \"{}\", ", "j".repeat(20)));
        i += 1;
    }
    junk.push_str("\"end\": 0}");
    refused(&arena, raw_frame(&key(), junk.as_bytes(), b"x"), "");
    let totals = arena.finish(SMALL_BOUND);
    assert_eq!(totals.closes("invalid_frame"), 1, "{totals:?}");
}
