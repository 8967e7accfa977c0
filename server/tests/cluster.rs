//! Rooms across nodes through a real NATS broker (`nats-server`, started per test on a
//! free loopback port and stopped by PID): delivery both ways exactly once with
//! `room`/`from`, isolation, no copy to the sender, reference clients in the lobby, join
//! answered only once the subscription holds, broker loss and return, max_payload.

use std::time::{Duration, Instant};

use sockchat_proto::FrameType;
use sockchat_testkit::admin::{sample, scrape_until};
use sockchat_testkit::nats::Nats;
use sockchat_testkit::rooms::*;
use sockchat_testkit::*;

fn node(nats: &Nats, name: &str) -> Server {
    nats.node_builder(name)
        .cores(2)
        .args(["--admin", "127.0.0.1:0"])
        .start()
}

/// Waits (bounded) until the node's stats line reports the broker connected.
fn wait_connected(server: &Server) {
    wait_stat(server, "broker=connected", Duration::from_secs(20));
}

fn wait_stat(server: &Server, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if last_stats(server).contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the stats within {within:?}:\n{}",
            server.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn last_stats(server: &Server) -> String {
    server
        .stderr()
        .lines()
        .rev()
        .find(|l| l.contains(" stats "))
        .unwrap_or_default()
        .to_string()
}

/// The value of `key=N` in the last stats line.
fn stat(server: &Server, key: &str) -> u64 {
    let line = last_stats(server);
    line.split_whitespace()
        .find_map(|w| w.trim_matches('"').strip_prefix(&format!("{key}=")))
        .and_then(|v| v.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

#[test]
fn two_nodes_share_rooms_both_ways_exactly_once() {
    let nats = Nats::start();
    let a = node(&nats, "node-a");
    let b = node(&nats, "node-b");
    wait_connected(&a);
    wait_connected(&b);

    let mut a1 = rooms_client(&a, Transport::Unix);
    let mut a2 = rooms_client(&a, Transport::Tcp);
    let mut b1 = rooms_client(&b, Transport::Unix);
    let mut b2 = rooms_client(&b, Transport::Tcp);
    let mut b_other = rooms_client(&b, Transport::Tcp);
    for c in [&mut a1, &mut a2, &mut b1, &mut b2] {
        join(c, "ops");
    }
    join(&mut b_other, "other");

    // a1 → ops: a2 (same node), b1 and b2 (other node), once each; a1 gets no copy;
    // b_other (another room) gets nothing.
    let from = a1.session_id.clone();
    say(&mut a1, Some("ops"), b"from a");
    for c in [&mut a2, &mut b1, &mut b2] {
        expect_delivery(c, "ops", &from, b"from a");
    }
    // And the other way.
    let from_b = b2.session_id.clone();
    say(&mut b2, Some("ops"), b"from b");
    for c in [&mut a1, &mut a2, &mut b1] {
        expect_delivery(c, "ops", &from_b, b"from b");
    }
    // Exactly once, no self-echo: the next frame everyone reads is its pong.
    for c in [&mut a1, &mut a2, &mut b1, &mut b2, &mut b_other] {
        c.ping();
    }
    // In order per sender.
    for i in 0..20 {
        say(&mut a2, Some("ops"), format!("n{i}").as_bytes());
    }
    let from_a2 = a2.session_id.clone();
    for i in 0..20 {
        expect_delivery(&mut b1, "ops", &from_a2, format!("n{i}").as_bytes());
    }
    for c in [&mut a1, &mut b2] {
        for i in 0..20 {
            expect_delivery(c, "ops", &from_a2, format!("n{i}").as_bytes());
        }
    }
    assert!(stat(&a, "self_echo") + stat(&b, "self_echo") <= 200);
}

#[test]
fn reference_clients_chat_in_the_lobby_across_nodes() {
    let nats = Nats::start();
    let a = node(&nats, "ref-a");
    let b = node(&nats, "ref-b");
    wait_connected(&a);
    wait_connected(&b);
    let mut ra = a.handshake(Transport::Tcp);
    ra.ping();
    let mut rb = b.handshake(Transport::Unix);
    rb.ping();
    // The lobby subscription of a node is made when its first session starts; a
    // message sent before node b's subscription holds could miss b, so wait for it.
    wait_stat(&b, "unconfirmed_joins=0", Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(10);
    let content = b"hello from a reference client";
    loop {
        let f = ra.frame(FrameType::Message, Some(TEXT_UTF8), content);
        ra.send(&f);
        match rb.read_frame(Duration::from_millis(300)) {
            Ok(m) => {
                let expected = build_frame(
                    &rb.key,
                    FrameType::Message,
                    Some(TEXT_UTF8),
                    Some(&rb.session_id),
                    content,
                );
                assert!(m.raw[..] == expected[..], "the reference's exact frame");
                break;
            }
            Err(ReadError::Timeout) => assert!(Instant::now() < deadline, "never arrived"),
            Err(e) => panic!("{e:?}"),
        }
    }
    // Once the lobby holds on both nodes, every message arrives: drain and check one more.
    while rb.read_frame(Duration::from_millis(300)).is_ok() {}
    let f = rb.frame(FrameType::Message, Some(TEXT_UTF8), b"and back");
    rb.send(&f);
    loop {
        let m = ra.expect_kind(FrameType::Message, SHORT);
        if &m.content[..] == b"and back" {
            break;
        }
    }
}

/// A join is answered once the node's subscription holds: a message sent by a member on
/// another node right after the answer reaches the new member. Repeated with fresh rooms,
/// so a lucky race would not pass it.
#[test]
fn join_is_answered_only_after_the_subscription_holds() {
    let nats = Nats::start();
    let a = node(&nats, "join-a");
    let b = node(&nats, "join-b");
    wait_connected(&a);
    wait_connected(&b);
    let mut sender = rooms_client(&a, Transport::Unix);
    let mut joiner = rooms_client(&b, Transport::Unix);
    for i in 0..25 {
        let room = format!("fresh-{i}");
        join(&mut sender, &room);
        join(&mut joiner, &room);
        say(&mut sender, Some(&room), b"right after");
        let from = sender.session_id.clone();
        expect_delivery(&mut joiner, &room, &from, b"right after");
        leave(&mut joiner, &room);
        leave(&mut sender, &room);
    }
    assert_eq!(stat(&b, "unconfirmed_joins"), 0, "{}", last_stats(&b));
}

#[test]
fn broker_loss_keeps_local_delivery_and_recovers() {
    let mut nats = Nats::start();
    let port = nats.port;
    let a = node(&nats, "loss-a");
    let b = node(&nats, "loss-b");
    wait_connected(&a);
    wait_connected(&b);
    let mut a1 = rooms_client(&a, Transport::Unix);
    let mut a2 = rooms_client(&a, Transport::Unix);
    let mut b1 = rooms_client(&b, Transport::Unix);
    for c in [&mut a1, &mut a2, &mut b1] {
        join(c, "survive");
    }
    let from = a1.session_id.clone();
    say(&mut a1, Some("survive"), b"before");
    expect_delivery(&mut a2, "survive", &from, b"before");
    expect_delivery(&mut b1, "survive", &from, b"before");

    nats.kill();
    wait_stat(&a, "broker=disconnected", Duration::from_secs(10));
    let dropped_before = stat(&a, "publish_dropped");
    // Local delivery goes on; the cross-node copy is dropped and counted.
    say(&mut a1, Some("survive"), b"during");
    expect_delivery(&mut a2, "survive", &from, b"during");
    wait_stat(
        &a,
        &format!("publish_dropped={}", dropped_before + 1),
        Duration::from_secs(5),
    );
    // /metrics shows the same: the broker state and the dropped publication.
    let admin = a.admin.expect("admin endpoint");
    let m = scrape_until(admin, Duration::from_secs(5), |m| {
        sample(m, "sockchat_broker_publish_dropped_total{}") > dropped_before as f64
    });
    assert_eq!(
        sample(&m, "sockchat_broker_state{state=\"disconnected\"}"),
        1.0
    );
    assert_eq!(
        m.get("sockchat_broker_state{state=\"connected\"}"),
        Some(&0.0)
    );
    assert!(sample(&m, "sockchat_broker_publish_dropped_total{}") > dropped_before as f64);
    assert!(sample(&m, "sockchat_broker_published_total{}") >= 1.0);
    assert!(sample(&m, "sockchat_broker_disconnects_total{}") >= 1.0);
    // Nodes stay up and serve new sessions.
    let mut late = rooms_client(&b, Transport::Tcp);
    join(&mut late, "survive");

    // The broker comes back on the same port: the nodes reconnect, re-subscribe, and
    // cross-node delivery resumes.
    let _nats = Nats::start_on(port);
    wait_stat(&a, "broker=connected", Duration::from_secs(20));
    wait_stat(&b, "broker=connected", Duration::from_secs(20));
    assert!(stat(&a, "reconnects") >= 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    loop {
        n += 1;
        let text = format!("after {n}");
        say(&mut a1, Some("survive"), text.as_bytes());
        expect_delivery(&mut a2, "survive", &from, text.as_bytes());
        match b1.read_frame(Duration::from_millis(300)) {
            Ok(m) => {
                assert_eq!(m.header.room.as_deref(), Some("survive"));
                break;
            }
            Err(ReadError::Timeout) => {
                assert!(
                    Instant::now() < deadline,
                    "no cross-node delivery after the broker returned"
                )
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    // `late` joined while the broker was down: it gets room messages too.
    let m = late.expect_kind(FrameType::Message, SHORT);
    assert_eq!(m.header.room.as_deref(), Some("survive"));
}

#[test]
fn messages_larger_than_max_payload_are_refused_naming_the_limit() {
    let nats = Nats::start();
    let a = node(&nats, "big-a");
    wait_connected(&a);
    let mut c = rooms_client(&a, Transport::Unix);
    let mut local = rooms_client(&a, Transport::Unix);
    join(&mut c, "big");
    join(&mut local, "big");
    let f = room_message(&c, Some("big"), Some(OCTET), &pattern(2 * 1024 * 1024, 1));
    c.send(&f);
    let text = expect_refusal(&mut c, "max_payload");
    assert!(text.contains("1048576"), "names the limit: {text}");
    // Refused entirely: not delivered locally either.
    local.expect_silence(Duration::from_millis(300));
    // A message that fits goes through.
    say(&mut c, Some("big"), b"small");
    let from = c.session_id.clone();
    expect_delivery(&mut local, "big", &from, b"small");
}
