//! Every scenario for a couple of seconds over TCP and Unix against the real
//! `sockchat-server` (started per test, in its own temp dir, stopped with SIGTERM), with
//! assertions on the report; a corrupting double is caught; valid echoes in other bytes
//! are accepted; raw scenarios against `loadgen raw-server`; `fanout --rooms` on one
//! node and on two nodes clustered through a real NATS broker (`--targets`); the raw
//! handshake churn moves the bytes the real server's churn cycle moves.

mod support;

use std::time::{Duration, Instant};

use loadgen::conn::Target;
use loadgen::raw_server::RawServer;
use loadgen::runner::RingMode;
use loadgen::scenarios::churn::HandshakeWire;
use serde_json::json;
use sockchat_testkit::nats::Nats;
use sockchat_testkit::{hostile, Server};
use support::double::{Double, DoubleOpts};
use support::{assert_clean, run, target};

const TRANSPORTS: [&str; 2] = ["tcp", "unix"];

#[test]
fn echo_depth_one_and_pipelined_mixed_sizes() {
    let server = Server::start();
    for t in TRANSPORTS {
        let target = target(&server, t);
        let r = run("echo", &target, &["--sessions", "8"]);
        assert_clean(&r);
        assert_eq!(r.results.transport, t);
        // The server's echo is byte-identical to the frame sent: every reply was
        // verified by comparison, none needed decoding.
        assert_eq!(r.results.counters["echo_slow_path"], 0, "{}", r.summary());
        let r = run(
            "echo",
            &target,
            &[
                "--sessions",
                "4",
                "--depth",
                "16",
                "--size-dist",
                "16:3,4096:1,100000:1",
            ],
        );
        assert_clean(&r);
        assert_eq!(r.results.counters["echo_slow_path"], 0, "{}", r.summary());
    }
}

#[test]
fn echo_chunked_large_messages() {
    let server = Server::start();
    for t in TRANSPORTS {
        let r = run(
            "echo",
            &target(&server, t),
            &[
                "--sessions",
                "2",
                "--size-dist",
                "100:1,300000:1",
                "--chunked",
                "--chunk-size",
                "65536",
            ],
        );
        assert_clean(&r);
        assert_eq!(r.results.extra["chunked"], true);
    }
}

#[test]
fn rate_reports_scheduled_and_actual_latency() {
    let server = Server::start();
    for t in TRANSPORTS {
        let r = run(
            "rate",
            &target(&server, t),
            &["--sessions", "10", "--rate", "500"],
        );
        assert_clean(&r);
        let x = &r.results;
        for name in ["latency_scheduled", "latency_actual", "send_lag"] {
            assert!(x.latencies_us[name].count > 0, "{name}");
        }
        // Coordinated-omission correction can only add latency.
        assert!(x.latencies_us["latency_scheduled"].max >= x.latencies_us["latency_actual"].max);
        assert_eq!(x.extra["requested_rate"], 500.0);
        let achieved = x.extra["achieved_rate"].as_f64().unwrap();
        assert!(achieved > 0.0, "{achieved}");
    }
}

#[test]
fn heartbeat_pings_every_interval() {
    let server = Server::start();
    for t in TRANSPORTS {
        let r = run(
            "heartbeat",
            &target(&server, t),
            &["--sessions", "20", "--interval", "0.1"],
        );
        assert_clean(&r);
        let x = &r.results;
        // Ticks of the measured window only: 20 sessions x 1.2 s / 0.1 s = 240 (a
        // session's ticks are staggered by its offset, so one more or less each).
        let ticks = x.extra["ticks"].as_u64().unwrap();
        assert!((220..=260).contains(&ticks), "ticks {ticks}");
        assert!(x.extra.contains_key("missed_ticks"));
    }
}

#[test]
fn churn_verifies_handshakes() {
    let server = Server::start();
    for t in TRANSPORTS {
        let r = run(
            "churn",
            &target(&server, t),
            &["--sessions", "4", "--verify"],
        );
        assert_clean(&r);
        assert!(r.results.extra["sessions_per_sec"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn fanout_in_chat_mode() {
    let server = Server::builder().args(["--mode", "chat"]).start();
    for t in TRANSPORTS {
        let r = run(
            "fanout",
            &target(&server, t),
            &["--sessions", "6", "--rate", "20"],
        );
        assert_clean(&r);
        let x = &r.results;
        assert_eq!(x.extra["receivers"], 5);
        assert_eq!(x.extra["complete_fanouts"], x.extra["sent"]);
        // A message's last delivery comes no earlier than any of its deliveries.
        let (last, each) = (
            &x.latencies_us["last_delivery"],
            &x.latencies_us["delivery"],
        );
        assert!(last.count > 0 && last.max >= each.p50, "{last:?} {each:?}");
    }
}

#[test]
fn a_corrupted_echo_is_caught_and_counted() {
    for t in TRANSPORTS {
        let d = Double::start(
            t,
            DoubleOpts {
                corrupt_nth: Some(50),
                ..Default::default()
            },
        );
        let r = run("echo", &d.target, &["--sessions", "4"]);
        let x = &r.results;
        assert_eq!(
            x.errors.get("content_crc_mismatch"),
            Some(&1),
            "{:?}",
            x.errors
        );
        assert_eq!(x.errors_total, 1, "{:?}", x.errors);
        assert!(!x.ok);
        assert!(r.summary().contains("content_crc_mismatch=1"));
    }
}

#[test]
fn valid_echoes_in_other_bytes_are_verified_by_decoding() {
    for t in TRANSPORTS {
        let d = Double::start(
            t,
            DoubleOpts {
                foreign_header: true,
                ..Default::default()
            },
        );
        for depth in ["1", "8"] {
            let r = run("echo", &d.target, &["--sessions", "4", "--depth", depth]);
            assert_clean(&r);
            let x = &r.results;
            assert!(
                x.counters["echo_slow_path"] >= x.messages,
                "{}",
                r.summary()
            );
        }
    }
}

#[test]
fn raw_scenarios_against_the_raw_server() {
    for t in TRANSPORTS {
        let dir = tempfile::tempdir().unwrap();
        let want = match t {
            "tcp" => Target::Tcp("127.0.0.1:0".parse().unwrap()),
            _ => Target::Unix(dir.path().join("raw.sock")),
        };
        let server = RawServer::start(&want, 1, &[]).expect("raw server starts");
        let r = run(
            "raw-echo",
            &server.target,
            &["--sessions", "8", "--depth", "2"],
        );
        assert_clean(&r);
        let r = run(
            "raw-churn",
            &server.target,
            &["--sessions", "4", "--verify"],
        );
        assert_clean(&r);
        // Stopping ends its threads and removes the socket file.
        let target = server.target.clone();
        server.stop();
        if let Target::Unix(p) = &target {
            assert!(!p.exists());
        }
    }
}

#[test]
fn handshake_wire_is_what_a_churn_cycle_moves() {
    // The lengths computed with proto's sessions are, byte for byte, what the real
    // server receives and sends per churn cycle (it counts both).
    let wire = HandshakeWire::of_sockchat();
    assert_eq!(
        wire.to_string().parse::<HandshakeWire>(),
        Ok(wire),
        "INIT,ACK,DISCONNECT round-trips"
    );
    let mut server = Server::builder().args(["--log-format", "json"]).start();
    for t in TRANSPORTS {
        assert_clean(&run("churn", &target(&server, t), &["--sessions", "2"]));
    }
    server.stop_clean();
    let log = server.stderr();
    let totals = hostile::parse_totals(&log).expect("server stopped line");
    let accepted = totals.get("accepted");
    assert!(accepted > 0, "{log}");
    assert_eq!(
        totals.get("bytes_in"),
        accepted * (wire.ack + wire.disconnect) as u64
    );
    assert_eq!(totals.get("bytes_out"), accepted * wire.init as u64);

    // The raw pair moves the same bytes with no protocol; a client expecting other
    // lengths notices.
    for t in TRANSPORTS {
        let dir = tempfile::tempdir().unwrap();
        let want = match t {
            "tcp" => Target::Tcp("127.0.0.1:0".parse().unwrap()),
            _ => Target::Unix(dir.path().join("raw.sock")),
        };
        let raw = RawServer::start_handshake(&want, 1, &[], RingMode::Plain, wire)
            .expect("raw server starts");
        let r = run(
            "raw-churn",
            &raw.target,
            &["--sessions", "4", "--handshake", "sockchat"],
        );
        assert_clean(&r);
        assert_eq!(r.results.latency_name, "handshake");
        let short = format!("{},{},{}", wire.init - 1, wire.ack, wire.disconnect);
        let r = run(
            "raw-churn",
            &raw.target,
            &["--sessions", "1", "--handshake", &short],
        );
        assert_eq!(r.results.messages, 0, "{}", r.summary());
        assert!(
            r.results.errors.contains_key("unexpected_bytes"),
            "{}",
            r.summary()
        );
        raw.stop();
    }
}

#[test]
fn fewer_sessions_than_asked_fails_the_run() {
    // Nothing listens on this path: every connect fails.
    let dir = tempfile::tempdir().unwrap();
    let target = Target::Unix(dir.path().join("nobody.sock"));
    let r = run(
        "heartbeat",
        &target,
        &["--sessions", "3", "--connect-timeout", "0.5"],
    );
    let x = &r.results;
    assert_eq!(x.sessions_established, 0);
    assert!(!x.ok);
    assert_eq!(x.errors.get("connect"), Some(&3), "{:?}", x.errors);
    assert!(x.problems.iter().any(|p| p.contains("0 of 3 sessions")));
}

/// A chat node of a cluster on `nats`, reporting its broker state every 100 ms.
fn node(nats: &Nats, name: &str) -> Server {
    let server = nats.node_builder(name).start();
    // Bounded wait for the broker connection (the stats line says so).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.stderr().contains("broker=connected") {
        assert!(
            Instant::now() < deadline,
            "{name}: no broker connection:\n{}",
            server.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

#[test]
fn rooms_on_one_node_deliver_to_every_other_member() {
    let server = Server::builder().args(["--mode", "chat"]).start();
    for t in ["unix", "tcp"] {
        // 3 rooms of 4 members: 3 senders at 20 msg/s, 9 receivers.
        let r = run(
            "fanout",
            &target(&server, t),
            &["--rooms", "3", "--sessions", "12", "--rate", "20"],
        );
        assert_clean(&r);
        let x = &r.results;
        assert_eq!(x.extra["rooms"], json!(3));
        assert_eq!(x.extra["nodes"], json!(1));
        assert_eq!(
            x.extra["complete_fanouts"],
            x.extra["sent"],
            "{}",
            r.summary()
        );
        let sent = x.extra["sent"].as_u64().unwrap();
        // Each room's 3 receivers get each of its sender's messages (sent covers all
        // rooms): at least the measured window's share of those deliveries.
        assert!(sent >= 3 * 20, "{sent}");
        assert!(x.extra["deliveries"].as_u64().unwrap() > 0);
        assert!(x.latency_us.count > 0);
        // Each receiver decodes its first delivery; the others repeat its header JSON
        // and are verified (CRCs, HMAC) without parsing it again.
        assert_eq!(x.counters["fanout_decoded"], 9, "{}", r.summary());
        assert!(x.counters["fanout_fast_path"] >= 9 * (sent / 3 - 1));
    }
}

#[test]
fn raw_fanout_through_the_raw_fanout_server() {
    for t in TRANSPORTS {
        let dir = tempfile::tempdir().unwrap();
        let want = match t {
            "tcp" => Target::Tcp("127.0.0.1:0".parse().unwrap()),
            _ => Target::Unix(dir.path().join("fan.sock")),
        };
        let server = RawServer::start_fanout(&want, None, loadgen::runner::RingMode::Plain)
            .expect("raw fan-out server starts");
        let r = run(
            "fanout",
            &server.target,
            &["--raw", "--sessions", "6", "--rate", "20", "--size", "310"],
        );
        assert_clean(&r);
        let x = &r.results;
        assert_eq!(x.extra["raw"], json!(true));
        assert_eq!(x.extra["receivers"], json!(5));
        let sent = x.extra["sent"].as_u64().unwrap();
        assert!(sent >= 20, "{sent}");
        assert_eq!(x.extra["complete_fanouts"], json!(sent), "{}", r.summary());
        assert!(x.latencies_us["last_delivery"].count > 0);
        server.stop();
    }
}

#[test]
fn a_room_spans_two_nodes_through_the_broker() {
    let nats = Nats::start();
    let a = node(&nats, "a");
    let b = node(&nats, "b");
    let b_sock = b.unix.clone().expect("a Unix listener");
    // 2 rooms of 4 members; members 0 and 2 of each room on node a, 1 and 3 on node b.
    let r = run(
        "fanout",
        &target(&a, "unix"),
        &[
            "--rooms",
            "2",
            "--sessions",
            "8",
            "--rate",
            "20",
            "--targets",
            &format!("unix:{}", b_sock.display()),
        ],
    );
    assert_clean(&r);
    let x = &r.results;
    assert_eq!(x.extra["nodes"], json!(2));
    assert_eq!(
        x.extra["complete_fanouts"],
        x.extra["sent"],
        "{}",
        r.summary()
    );
    assert!(x.latency_us.count > 0);
}

#[test]
fn rooms_are_refused_where_they_cannot_work() {
    let server = Server::builder().args(["--mode", "chat"]).start();
    let t = target(&server, "unix");
    for bad in [
        // A sender and a receiver per room at least.
        vec!["--rooms", "3", "--sessions", "5"],
        // Room and sequence need 24 bytes of content.
        vec!["--rooms", "1", "--sessions", "2", "--size", "16"],
        // The raw fan-out has no rooms.
        vec!["--raw", "--rooms", "1", "--sessions", "4"],
    ] {
        let mut argv = vec!["loadgen", "fanout", "--unix"];
        let sock = t.to_string();
        argv.push(sock.strip_prefix("unix:").unwrap());
        argv.extend(bad.iter().copied());
        let cli = <loadgen::cli::Cli as clap::Parser>::try_parse_from(&argv).unwrap();
        let err = loadgen::run_load(&cli.command).unwrap_err().to_string();
        assert!(err.contains("--"), "{err}");
    }
}
