//! Every scenario for a couple of seconds over TCP and Unix, with assertions on the
//! report; a corrupting server is caught; raw scenarios against `loadgen raw-server`.

mod support;

use loadgen::conn::Target;
use loadgen::raw_server::RawServer;
use support::{assert_clean, run, settle, target, Double, DoubleOpts};

const TRANSPORTS: [&str; 2] = ["tcp", "unix"];

#[test]
fn echo_depth_one_and_mixed_sizes() {
    for t in TRANSPORTS {
        let (target, _d) = target(t);
        settle();
        let r = run("echo", &target, &["--sessions", "8"]);
        assert_clean(&r);
        assert_eq!(r.results.transport, t);
        let r = run(
            "echo",
            &target,
            &[
                "--sessions",
                "4",
                "--depth",
                "4",
                "--size-dist",
                "16:3,4096:1",
            ],
        );
        assert_clean(&r);
    }
}

#[test]
fn echo_chunked_large_messages() {
    for t in TRANSPORTS {
        let (target, _d) = target(t);
        settle();
        let r = run(
            "echo",
            &target,
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
    for t in TRANSPORTS {
        let (target, _d) = target(t);
        settle();
        let r = run("rate", &target, &["--sessions", "10", "--rate", "500"]);
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
    for t in TRANSPORTS {
        let (target, _d) = target(t);
        settle();
        let r = run(
            "heartbeat",
            &target,
            &["--sessions", "20", "--interval", "0.1"],
        );
        assert_clean(&r);
        assert!(r.results.counters["ticks"] > 0);
        assert!(r.results.extra.contains_key("missed_ticks"));
    }
}

#[test]
fn churn_verifies_handshakes() {
    for t in TRANSPORTS {
        let (target, _d) = target(t);
        settle();
        let r = run("churn", &target, &["--sessions", "4", "--verify"]);
        assert_clean(&r);
        assert!(r.results.extra["sessions_per_sec"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn fanout_in_chat_mode() {
    for t in TRANSPORTS {
        let d = Double::start(
            t,
            DoubleOpts {
                chat: true,
                ..Default::default()
            },
        );
        settle();
        let r = run("fanout", &d.target, &["--sessions", "6", "--rate", "20"]);
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
        settle();
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
