//! The admin endpoint over real sockets: `/metrics` parsed by the reference Prometheus
//! parser and moving with traffic, closes by reason; `/healthz` and `/readyz` through a
//! lame-duck drain (SIGUSR2 and `POST /drain`) and a SIGTERM shutdown.

use std::time::{Duration, Instant};

use sockchat_proto::{CloseReason, FrameType};
use sockchat_testkit::admin::{get, http, parse_metrics, sample, scrape, scrape_until};
use sockchat_testkit::*;

fn admin_server(cores: u32, extra: &[&str]) -> Server {
    let s = Server::builder()
        .cores(cores)
        .args(["--admin", "127.0.0.1:0"])
        .args(extra.iter().copied())
        .start();
    assert!(
        s.admin.is_some(),
        "no `listening admin` line\n{}",
        s.diagnostics()
    );
    s
}

#[test]
fn metrics_parse_and_move_with_traffic() {
    let mut server = admin_server(2, &[]);
    let admin = server.admin.unwrap();
    let (status, body) = get(admin, "/metrics");
    assert_eq!(status, 200);
    let (before, types) = parse_metrics(&body);
    for (family, kind) in [
        ("sockchat_sessions", "gauge"),
        ("sockchat_sessions_accepted", "counter"),
        ("sockchat_messages_received", "counter"),
        ("sockchat_messages_sent", "counter"),
        ("sockchat_bytes_received", "counter"),
        ("sockchat_bytes_sent", "counter"),
        ("sockchat_session_closes", "counter"),
        ("sockchat_send_queue_bytes", "gauge"),
        ("sockchat_fanout_dropped", "counter"),
        ("sockchat_bytes_copied", "counter"),
        ("sockchat_bytes_in_place", "counter"),
        ("sockchat_ring_enobufs", "counter"),
        ("sockchat_ring_rearmed", "counter"),
        ("sockchat_build", "info"),
        ("sockchat_memory_budget_bytes", "gauge"),
    ] {
        assert_eq!(
            types.get(family).map(String::as_str),
            Some(kind),
            "{family}: {types:?}"
        );
    }
    // Every close reason has its series, even at zero; sessions by transport and core.
    for reason in CloseReason::LABELS {
        let key = format!("sockchat_session_closes_total{{reason=\"{reason}\"}}");
        assert!(before.contains_key(&key), "missing {key}");
    }
    for core in 0..2 {
        for t in ["tcp", "unix"] {
            let key = format!("sockchat_sessions{{core=\"{core}\",transport=\"{t}\"}}");
            assert_eq!(before.get(&key), Some(&0.0), "{key}");
        }
    }
    assert!(before.keys().any(|k| k.starts_with("sockchat_build_info{")));

    let mut tcp = server.handshake(Transport::Tcp);
    let mut unix = server.handshake(Transport::Unix);
    for i in 0..3 {
        tcp.echo(Some(TEXT_UTF8), format!("tcp {i}").as_bytes());
        unix.echo(Some(TEXT_UTF8), format!("unix {i}").as_bytes());
    }
    let sessions = |s: &sockchat_testkit::admin::Samples, t: &str| -> f64 {
        (0..2)
            .map(|c| {
                sample(
                    s,
                    &format!("sockchat_sessions{{core=\"{c}\",transport=\"{t}\"}}"),
                )
            })
            .sum()
    };
    let now = scrape(admin);
    assert_eq!(sessions(&now, "tcp"), 1.0);
    assert_eq!(sessions(&now, "unix"), 1.0);
    assert_eq!(sample(&now, "sockchat_messages_received_total{}"), 6.0);
    assert_eq!(sample(&now, "sockchat_messages_sent_total{}"), 6.0);
    assert_eq!(sample(&now, "sockchat_sessions_accepted_total{}"), 2.0);
    assert!(sample(&now, "sockchat_bytes_received_total{}") > 6.0 * 64.0);
    assert!(sample(&now, "sockchat_bytes_sent_total{}") > 6.0 * 64.0);
    // Every received byte went through a ring buffer and was copied into its session once.
    assert_eq!(
        sample(&now, "sockchat_bytes_copied_total{}"),
        sample(&now, "sockchat_bytes_received_total{}")
    );

    // Closes by reason: a client disconnect and an invalid frame.
    let bye = tcp.frame(
        FrameType::Disconnect,
        Some("application/json"),
        CLIENT_DISCONNECT_CONTENT,
    );
    tcp.send(&bye);
    tcp.expect_closed(SHORT);
    let mut bad = unix.frame(FrameType::Message, Some(TEXT_UTF8), b"x");
    bad[0] ^= 0xff;
    unix.send(&bad);
    unix.expect_error_and_close("magic");
    let after = scrape_until(admin, SHORT, |s| {
        sample(s, "sockchat_session_closes_total{reason=\"invalid_frame\"}") >= 1.0
            && sample(
                s,
                "sockchat_session_closes_total{reason=\"client_disconnect\"}",
            ) >= 1.0
    });
    assert_eq!(
        sample(
            &after,
            "sockchat_session_closes_total{reason=\"client_disconnect\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "sockchat_session_closes_total{reason=\"invalid_frame\"}"
        ),
        1.0
    );
    assert_eq!(sessions(&after, "tcp") + sessions(&after, "unix"), 0.0);

    let (status, _) = get(admin, "/nope");
    assert_eq!(status, 404);
    let (status, _) = http(admin, "POST", "/metrics");
    assert_eq!(status, 405);
    server.stop_clean();
}

/// Waits until `/readyz` answers `want`.
fn wait_ready_status(admin: std::net::SocketAddr, want: u16) -> bool {
    wait_until(SHORT, || get(admin, "/readyz").0 == want)
}

#[test]
fn ready_turns_503_and_sessions_are_spread_over_the_drain_period() {
    let mut server = admin_server(1, &["--drain-period", "2s", "--log-format", "json"]);
    let admin = server.admin.unwrap();
    assert_eq!(get(admin, "/healthz").0, 200);
    assert_eq!(get(admin, "/readyz").0, 200);
    let mut clients: Vec<Client> = (0..4)
        .map(|i| {
            server.handshake(if i % 2 == 0 {
                Transport::Tcp
            } else {
                Transport::Unix
            })
        })
        .collect();
    let tcp_addr = server.tcp.unwrap();

    server.signal(libc::SIGUSR2);
    assert!(
        wait_ready_status(admin, 503),
        "/readyz did not turn 503 on SIGUSR2"
    );
    assert_eq!(
        get(admin, "/healthz").0,
        200,
        "healthz stays 200 while draining"
    );

    // Every session gets `disconnect` "Server draining"; the last one no sooner than
    // 3/4 of the period after the first (4 sessions: slots at 0, 1/4, 2/4, 3/4). Each
    // client waits on its own thread: the order of the slots is the server's.
    let readers: Vec<_> = clients
        .drain(..)
        .map(|mut c| {
            std::thread::spawn(move || {
                let frames = c.expect_closed(LONG);
                (Instant::now(), frames)
            })
        })
        .collect();
    let mut at = Vec::new();
    for r in readers {
        let (t, frames) = r.join().expect("reader");
        at.push(t);
        let d = frames
            .iter()
            .find(|f| f.header.kind == FrameType::Disconnect)
            .unwrap_or_else(|| panic!("no disconnect: {:?}", describe(&frames)));
        assert_eq!(
            &d.content[..],
            br#"{"message": "Disconnecting", "reason": "Server draining"}"#
        );
    }
    at.sort();
    let spread = *at.last().unwrap() - at[0];
    assert!(
        spread >= Duration::from_millis(1200),
        "sessions were not spread over the drain period: {spread:?}"
    );
    // Listeners are closed: nobody new gets in.
    let refused = std::net::TcpStream::connect_timeout(&tcp_addr, SHORT);
    assert!(
        refused.is_err(),
        "TCP listener still accepting during a drain"
    );
    let st = server
        .wait_exit(EXIT)
        .unwrap_or_else(|| panic!("no exit after the drain\n{}", server.diagnostics()));
    assert!(
        st.success(),
        "drain must exit 0, got {st}\n{}",
        server.diagnostics()
    );
    let totals = parse_totals(&server.stderr()).expect("totals line");
    assert_eq!(totals.closes("server_draining"), 4);
}

#[test]
fn drain_through_the_admin_endpoint() {
    let mut server = admin_server(2, &["--drain-period", "100ms"]);
    let admin = server.admin.unwrap();
    let mut c = server.handshake(Transport::Unix);
    let (status, body) = http(admin, "POST", "/drain");
    assert_eq!(status, 202, "{body}");
    let frames = c.expect_closed(LONG);
    assert!(frames.iter().any(|f| f.header.kind == FrameType::Disconnect
        && f.content.windows(15).any(|w| w == b"Server draining")));
    let st = server.wait_exit(EXIT).expect("exit after drain");
    assert!(st.success(), "{st}");
}

#[test]
fn sigterm_turns_ready_503_before_the_shutdown_ends() {
    let mut server = admin_server(1, &[]);
    let admin = server.admin.unwrap();
    // A client that neither reads nor closes keeps the shutdown in its linger (up to a
    // second after the `disconnect`), while the admin endpoint still answers.
    let _quiet = server.handshake(Transport::Tcp);
    assert_eq!(get(admin, "/readyz").0, 200);
    server.signal(libc::SIGTERM);
    let mut seen = None;
    let deadline = Instant::now() + SHORT;
    while Instant::now() < deadline {
        match std::net::TcpStream::connect_timeout(&admin, SHORT) {
            Ok(_) => {
                let (status, _) = get(admin, "/readyz");
                if status != 200 {
                    seen = Some(status);
                    break;
                }
            }
            Err(_) => break,
        }
    }
    assert_eq!(
        seen,
        Some(503),
        "/readyz never answered 503 during the shutdown"
    );
    let st = server.wait_exit(EXIT).expect("exit");
    assert!(st.success());
}
