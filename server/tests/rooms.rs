//! The rooms extension on one node: membership routing across cores, isolation between
//! rooms, `room`/`from` on deliveries, refusals that keep the session open, reference
//! clients in the lobby, and a slow consumer in a 1,000-member room.

use std::time::Duration;

use sockchat_proto::FrameType;
use sockchat_testkit::admin::{sample, scrape_until};
use sockchat_testkit::rooms::*;
use sockchat_testkit::*;

fn chat_server(cores: u32) -> Server {
    Server::builder()
        .cores(cores)
        .args(["--mode", "chat", "--max-rooms-per-session", "4"])
        .start()
}

#[test]
fn rooms_route_by_membership_across_cores() {
    let server = chat_server(2);
    // Enough sessions that both cores hold members of each room (TCP spreads by hash,
    // Unix accepts split between the cores).
    let mut a: Vec<Client> = Vec::new();
    let mut b: Vec<Client> = Vec::new();
    for i in 0..12 {
        let t = if i % 2 == 0 {
            Transport::Tcp
        } else {
            Transport::Unix
        };
        let mut c = rooms_client(&server, t);
        if i % 3 == 2 {
            join(&mut c, "room-b");
            b.push(c);
        } else {
            join(&mut c, "room-a");
            a.push(c);
        }
    }
    let mut reference = server.handshake(Transport::Tcp);
    reference.ping();

    // A message to room-a reaches every other member of room-a once, with room/from.
    let sender_id = a[0].session_id.clone();
    say(&mut a[0], Some("room-a"), "to a".as_bytes());
    for c in a.iter_mut().skip(1) {
        expect_delivery(c, "room-a", &sender_id, b"to a");
    }
    // The sender gets no copy; room-b and the lobby-only reference client get nothing.
    a[0].ping();
    for c in b.iter_mut() {
        c.ping();
    }
    reference.ping();

    // room-b's members are still lobby members: a message without `room` goes to the
    // lobby, which includes the reference client (in the reference's exact frame).
    let from_b = b[0].session_id.clone();
    say(&mut b[0], None, b"hello lobby");
    let m = reference.expect_kind(FrameType::Message, SHORT);
    let expected = build_frame(
        &reference.key,
        FrameType::Message,
        Some(TEXT_UTF8),
        Some(&reference.session_id),
        b"hello lobby",
    );
    assert!(
        m.raw[..] == expected[..],
        "reference clients get reference frames"
    );
    for c in a.iter_mut().chain(b.iter_mut().skip(1)) {
        expect_delivery(c, "lobby", &from_b, b"hello lobby");
    }
    b[0].ping();

    // After leaving, a member gets nothing more from that room and may not send to it.
    leave(&mut a[1], "room-a");
    say(&mut a[0], Some("room-a"), b"second");
    for c in a.iter_mut().skip(2) {
        expect_delivery(c, "room-a", &sender_id, b"second");
    }
    a[1].ping();
    say(&mut a[1], Some("room-a"), b"not a member");
    expect_refusal(&mut a[1], "not a member of room room-a");
}

#[test]
fn bad_requests_are_refused_and_the_session_stays_open() {
    let server = Server::builder()
        .cores(1)
        .args(["--mode", "chat", "--max-rooms-per-session", "4"])
        .args(["--admin", "127.0.0.1:0"])
        .start();
    let admin = server.admin.expect("admin endpoint");
    let mut c = rooms_client(&server, Transport::Unix);
    let mut other = rooms_client(&server, Transport::Unix);

    for bad in ["", "a b", "dot.ted", &"x".repeat(65), "é"] {
        let f = room_frame(
            &c,
            FrameType::Join,
            bad,
            if bad.is_empty() { "-" } else { bad },
        );
        c.send(&f);
        expect_refusal(&mut c, "invalid room");
    }
    let f = room_frame(&c, FrameType::Join, "one", "two");
    c.send(&f);
    expect_refusal(&mut c, "must name the same room");

    say(&mut c, Some("elsewhere"), b"x");
    expect_refusal(&mut c, "not a member of room elsewhere");
    say(&mut c, Some("bad name!"), b"x");
    expect_refusal(&mut c, "invalid room name");

    // --max-rooms-per-session 4: the lobby and three more.
    for r in ["r1", "r2", "r3"] {
        join(&mut c, r);
    }
    let f = room_frame(&c, FrameType::Join, "r4", "r4");
    c.send(&f);
    expect_refusal(&mut c, "at most 4");
    // Joining a room again is answered (it is in effect) and takes no extra slot.
    join(&mut c, "r3");
    // None of it reached anyone else.
    other.expect_silence(Duration::from_millis(200));

    // Leaving the lobby: lobby messages (no `room`) are refused from then on.
    leave(&mut c, "lobby");
    say(&mut c, None, b"x");
    expect_refusal(&mut c, "not a member of room lobby");

    // Every refusal is counted by reason on /metrics, and none closed a session.
    let want = [
        ("bad_room_name", 6.0),
        ("room_mismatch", 1.0),
        ("not_member", 2.0),
        ("too_many_rooms", 1.0),
        ("refused", 0.0),
    ];
    let key = |r: &str| format!("sockchat_room_refusals_total{{reason=\"{r}\"}}");
    let m = scrape_until(admin, Duration::from_secs(5), |m| {
        want.iter().all(|(r, n)| sample(m, &key(r)) == *n)
    });
    for (r, n) in want {
        assert_eq!(m.get(&key(r)), Some(&n), "{r}");
    }
    let sessions: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("sockchat_sessions{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(sessions, 2.0);
}

#[test]
fn join_needs_the_rooms_feature_and_echo_mode_never_grants_it() {
    // Echo mode: asked, not granted; a join is then a protocol violation.
    let server = Server::start();
    let mut c = server.connect(Transport::Unix);
    handshake_rooms(&mut c, false);
    let f = room_frame(&c, FrameType::Join, "a", "a");
    c.send(&f);
    c.expect_error_and_close("rooms feature");

    // Chat mode, reference-style client: its `room` key is an unknown key (ignored),
    // so its message goes to the lobby.
    let chat = chat_server(1);
    let mut reference = chat.handshake(Transport::Tcp);
    reference.ping();
    let mut member = rooms_client(&chat, Transport::Tcp);
    let f = room_message(&reference, Some("not-joined"), Some(TEXT_UTF8), b"hi all");
    reference.send(&f);
    expect_delivery(
        &mut member,
        "lobby",
        &reference.session_id.clone(),
        b"hi all",
    );
    reference.ping();
}

/// Chunked messages to a room are reassembled, then delivered: chunked again to a member
/// that asked for chunks when the message is larger than a frame, whole otherwise.
#[test]
fn chunked_room_messages_are_reassembled_then_delivered() {
    let server = Server::builder().cores(1).args(["--mode", "chat"]).start();
    let mut sender = rooms_client(&server, Transport::Unix);
    let mut member = rooms_client(&server, Transport::Unix);
    join(&mut sender, "big");
    join(&mut member, "big");
    for (len, seed) in [(3_000_000, 9), (11 * 1024 * 1024, 10)] {
        let content = pattern(len, seed);
        let mut base = sockchat_proto::Header::new(
            FrameType::Chunk,
            Some(sockchat_proto::ByteStr::from("application/octet-stream")),
            Some(sockchat_proto::ByteStr::from(sender.session_id.as_str())),
        );
        base.room = Some(sockchat_proto::ByteStr::from("big"));
        let frames = sockchat_proto::chunk::split_with(
            &sender.key,
            base,
            sockchat_proto::ByteStr::from(format!("m{seed}")),
            bytes::Bytes::from(content.clone()),
            1 << 20,
        )
        .unwrap();
        let mut wire = Vec::new();
        for f in frames {
            wire.extend_from_slice(&f.head);
            wire.extend_from_slice(&f.content);
        }
        let w = sender.spawn_writer(wire);
        let mut whole = Vec::new();
        let first = member.expect_frame(LONG);
        assert_eq!(first.header.room.as_deref(), Some("big"));
        assert_eq!(
            first.header.from.as_deref(),
            Some(sender.session_id.as_str())
        );
        if len <= 10 * 1024 * 1024 {
            assert_eq!(
                first.header.kind,
                FrameType::Message,
                "fits one frame: whole"
            );
            whole.extend_from_slice(&first.content);
        } else {
            assert_eq!(
                first.header.kind,
                FrameType::Chunk,
                "larger than a frame: chunks"
            );
            let count = first.header.chunk.as_ref().unwrap().count as usize;
            whole.extend_from_slice(&first.content);
            for _ in 1..count {
                let f = member.expect_kind(FrameType::Chunk, LONG);
                assert_eq!(f.header.room.as_deref(), Some("big"));
                whole.extend_from_slice(&f.content);
            }
        }
        w.join().unwrap().unwrap();
        assert!(whole == content, "content of {len} bytes delivered intact");
        sender.ping();
    }
}

/// A member of a 1,000-member room that stops reading is closed as a slow consumer; the
/// other members get every message, in order, and the sender is not disturbed.
#[test]
fn a_slow_consumer_in_a_1000_member_room_is_closed_alone() {
    const MEMBERS: usize = 1000;
    const MESSAGES: usize = 80;
    const SIZE: usize = 8 * 1024;
    let mut server = Server::builder()
        .cores(2)
        .args(["--mode", "chat", "--send-queue-limit", "64K"])
        .start();
    let mut members: Vec<Client> = (0..MEMBERS)
        .map(|_| {
            let mut c = rooms_client(&server, Transport::Unix);
            join(&mut c, "crowd");
            c
        })
        .collect();
    let slow = members.pop().expect("members");
    let mut sender = members.remove(0);
    let from = sender.session_id.clone();
    // Lockstep: every reader takes message k before k + 1 is sent, so only the member
    // that never reads falls behind (socket buffer, then the 64 KiB send queue limit).
    for k in 0..MESSAGES {
        let mut content = pattern(SIZE, k as u64);
        content[..8].copy_from_slice(&(k as u64).to_be_bytes());
        let f = room_message(&sender, Some("crowd"), Some(OCTET), &content);
        sender.send(&f);
        for (i, c) in members.iter_mut().enumerate() {
            let m = c.expect_kind(FrameType::Message, SHORT);
            assert_eq!(m.header.from.as_deref(), Some(from.as_str()), "member {i}");
            assert!(
                m.content[..] == content[..],
                "member {i} message {k}: in order, intact"
            );
        }
    }
    sender.ping();
    // The slow member was closed: whatever it had buffered, then the end of the stream.
    let mut slow = slow;
    let got = slow.expect_closed(LONG);
    assert!(
        got.len() < MESSAGES,
        "the slow member was cut off, not served everything ({} frames)",
        got.len()
    );
    // Everyone else is still fine.
    for c in members.iter_mut().step_by(97) {
        c.ping();
    }
    server.stop_clean();
    let stderr = server.stderr();
    let stopped = stderr
        .lines()
        .find(|l| l.contains("server stopped"))
        .unwrap_or_else(|| panic!("no `server stopped` line:\n{stderr}"));
    assert!(
        stopped.contains("slow_consumer=1 ") || stopped.ends_with("slow_consumer=1"),
        "exactly one slow consumer: {stopped}"
    );
}
