//! Hostile clients before and at the handshake: garbage instead of a frame, connecting
//! and never acking, an ack sent one byte per 100 ms, acks with a foreign or malformed
//! session id.
//!
//! Each case runs on a one-core server next to a well-behaved session doing echo round
//! trips (the "bystander", see `sockchat_testkit::Arena`): the offender gets an `error` or
//! `disconnect` and a close within a deadline, the bystander's round trips stay below
//! `BYSTANDER_MAX_LATENCY` throughout, the server's RSS stays within a bound derived from
//! the limits in force, and the server counts the close under the expected reason.

use std::thread;
use std::time::Duration;

use sockchat_proto::{FrameType, Key};
use sockchat_testkit::*;

per_transport!(
    garbage_instead_of_a_frame,
    connect_and_never_ack,
    ack_one_byte_per_100ms,
    ack_with_foreign_session_id,
    ack_with_malformed_session_id,
);

/// What the offenders of these cases can make the server hold: one frame of at most
/// 64 + 64 KiB + a few KiB (none is larger), its read buffer (16 KiB pooled) and its
/// reply. 4 MiB leaves room for allocator arenas and the log; a leak or an allocation
/// from an announced length would go past it.
const SMALL_BOUND: u64 = 4 << 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Garbage (not starting with the magic) before and after the handshake, and an HTTP
/// request: `Invalid frame: bad magic number`, then the close.
fn garbage_instead_of_a_frame(t: Transport) {
    let arena = Arena::start(t, "garbage", &[]);
    let mut before = arena.server.connect(t);
    before.read_init();
    let mut junk = pattern(4096, 11);
    junk[0] = 0x17;
    before.send(&junk);
    before.expect_notice_within(FrameType::Error, "magic", SHORT);

    let mut after = arena.server.handshake(t);
    after.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    after.expect_notice_within(FrameType::Error, "magic", SHORT);

    // Garbage that starts like a frame: the magic's first byte, then junk.
    let mut almost = arena.server.handshake(t);
    almost.send(&[0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]);
    almost.expect_notice_within(FrameType::Error, "magic", SHORT);

    let totals = arena.finish(SMALL_BOUND);
    assert_eq!(totals.closes("invalid_frame"), 3, "{totals:?}");
}

/// Connects, reads `session_init`, then sends nothing (several at once): each gets
/// `disconnect` `Handshake timeout` and a close.
fn connect_and_never_ack(t: Transport) {
    let arena = Arena::start(t, "never_ack", &["--handshake-timeout", "2s"]);
    let mut silent: Vec<Client> = (0..20).map(|_| arena.server.connect(t)).collect();
    for c in &mut silent {
        c.read_init();
    }
    for c in &mut silent {
        c.expect_notice_within(
            FrameType::Disconnect,
            "Handshake timeout",
            HANDSHAKE_TIMEOUT + SHORT,
        );
    }
    let totals = arena.finish(SMALL_BOUND);
    assert_eq!(totals.closes("handshake_timeout"), 20, "{totals:?}");
}

/// Sends `bytes` one byte per `gap`, watching for the server's answer between bytes.
/// Returns what came back once the server closed (or after everything was sent).
fn trickle(c: &mut Client, bytes: &[u8], gap: Duration, within: Duration) -> Outcome {
    let start = std::time::Instant::now();
    let mut frames = Vec::new();
    for b in bytes {
        if c.try_send(&[*b]).is_err() {
            break; // closed under us: read what was said
        }
        match c.read_frame(gap) {
            Ok(f) => {
                let done = matches!(f.header.kind, FrameType::Error | FrameType::Disconnect);
                frames.push(f);
                if done {
                    break;
                }
            }
            Err(ReadError::Timeout) => {}
            Err(e) if e.is_closed() => break,
            Err(e) => panic!("[{:?}] while trickling: {e:?}", c.transport),
        }
        assert!(
            start.elapsed() < within,
            "[{:?}] not closed within {within:?}",
            c.transport
        );
    }
    let rest = c.read_until_closed(within.saturating_sub(start.elapsed()));
    frames.extend(rest.frames);
    Outcome {
        frames,
        elapsed: start.elapsed(),
    }
}

/// Slowloris at the handshake: the ack one byte per 100 ms (a 130-byte ack would take
/// 13 s). Bytes arriving do not extend the handshake timeout: `Handshake timeout` after
/// about 2 s.
fn ack_one_byte_per_100ms(t: Transport) {
    let arena = Arena::start(t, "slowloris_ack", &["--handshake-timeout", "2s"]);
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let mut c = arena.server.connect(t);
            thread::spawn(move || {
                c.read_init();
                let ack = c.ack_frame(None);
                trickle(
                    &mut c,
                    &ack,
                    Duration::from_millis(100),
                    HANDSHAKE_TIMEOUT + SHORT,
                )
            })
        })
        .collect();
    for h in handles {
        let out = h.join().expect("slowloris thread");
        let notice = out.notice();
        assert!(
            matches!(&notice, Some((FrameType::Disconnect, text)) if text.contains("Handshake timeout")),
            "[{t:?}] slowloris ack: expected `Handshake timeout`, got {:?} after {:?}",
            describe(&out.frames),
            out.elapsed
        );
    }
    let totals = arena.finish(SMALL_BOUND);
    assert_eq!(totals.closes("handshake_timeout"), 3, "{totals:?}");
}

/// An ack carrying another live session's id (the bystander's, on the same core) or a
/// well-formed id nobody has: `Invalid session acknowledgment`, and the owner of the id
/// is untouched.
fn ack_with_foreign_session_id(t: Transport) {
    let arena = Arena::start(t, "ack_foreign_id", &[]);
    let live = arena
        .bystander
        .as_ref()
        .expect("bystander")
        .session_id
        .clone();
    let mut other = arena.server.handshake(t);
    for foreign in [
        live.as_str(),
        other.session_id.as_str(),
        "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
    ] {
        let mut c = arena.server.connect(t);
        c.read_init();
        let own = std::mem::replace(&mut c.session_id, foreign.to_string());
        let ack = c.ack_frame(None);
        c.session_id = own;
        c.send(&ack);
        c.expect_notice_within(FrameType::Error, "Invalid session acknowledgment", SHORT);
    }
    other.echo(
        Some(TEXT_UTF8),
        b"my id was used by someone else; I am fine",
    );
    let totals = arena.finish(SMALL_BOUND);
    assert_eq!(totals.closes("handshake_failed"), 3, "{totals:?}");
}

/// Acks whose `session_id` is not the session's: not a UUID, empty, null, 60 KB long, its
/// own id in upper case, a number, an array, missing. Strings get `Invalid session
/// acknowledgment`; values that are not strings fail the header JSON.
fn ack_with_malformed_session_id(t: Transport) {
    let arena = Arena::start(t, "ack_malformed_id", &[]);
    let key = Key::reference_default();
    let long = "a".repeat(60_000);
    // (description, header JSON given the real id, expected error text)
    type Make = Box<dyn Fn(&str) -> String>;
    let cases: Vec<(&str, Make, &str)> = vec![
        (
            "not a uuid",
            Box::new(|_| reference_header_json("session_ack", Some(OCTET), Some("not-a-uuid"))),
            "acknowledgment",
        ),
        (
            "empty",
            Box::new(|_| reference_header_json("session_ack", Some(OCTET), Some(""))),
            "acknowledgment",
        ),
        (
            "null",
            Box::new(|_| reference_header_json("session_ack", Some(OCTET), None)),
            "acknowledgment",
        ),
        (
            "60 KB",
            Box::new(move |_| reference_header_json("session_ack", Some(OCTET), Some(&long))),
            "acknowledgment",
        ),
        (
            "upper case",
            Box::new(|sid| {
                reference_header_json("session_ack", Some(OCTET), Some(&sid.to_uppercase()))
            }),
            "acknowledgment",
        ),
        (
            "own id plus junk",
            Box::new(|sid| {
                reference_header_json("session_ack", Some(OCTET), Some(&format!("{sid}\\u0000")))
            }),
            "acknowledgment",
        ),
        (
            "number",
            Box::new(|_| {
                r#"{"type": "session_ack", "content_type": null, "session_id": 12345}"#.to_string()
            }),
            "json",
        ),
        (
            "array",
            Box::new(|sid| {
                format!(
                    r#"{{"type": "session_ack", "content_type": null, "session_id": ["{sid}"]}}"#
                )
            }),
            "json",
        ),
        (
            "missing",
            Box::new(|_| r#"{"type": "session_ack", "content_type": null}"#.to_string()),
            "",
        ),
    ];
    let n = cases.len() as u64;
    for (what, make, needle) in cases {
        let mut c = arena.server.connect(t);
        c.read_init();
        let json = make(&c.session_id);
        c.send(&raw_frame(&key, json.as_bytes(), b"Session acknowledged"));
        let out = c.read_until_closed(SHORT);
        let notice = out.notice();
        assert!(
            matches!(&notice, Some((FrameType::Error, text)) if text.to_lowercase().contains(needle)),
            "[{t:?}] ack with a {what} session id: expected an error containing {needle:?}, got {:?}",
            describe(&out.frames)
        );
        eprintln!(
            "[{t:?}] ack with a {what} session id: {:?}",
            notice.map(|n| n.1)
        );
    }
    let totals = arena.finish(SMALL_BOUND);
    assert_eq!(
        totals.closes("handshake_failed") + totals.closes("invalid_frame"),
        n,
        "{totals:?}"
    );
}
