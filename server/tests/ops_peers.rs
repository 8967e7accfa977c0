//! Per-peer session limits over TCP (by IP address) and Unix (by uid), and the PROXY
//! protocol (v1, v2, missing, malformed) feeding the TCP peer address.

use std::io::Write;
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::time::Duration;

use sockchat_proto::Key;
use sockchat_testkit::admin::{sample, scrape_until};
use sockchat_testkit::proxy_header::{proxy_v1, proxy_v2};
use sockchat_testkit::*;

const LIMIT_TEXT: &str = "max_sessions_per_peer = 2";

/// A TCP connection from `local` (any 127/8 address works on loopback).
fn connect_from(local: &str, server: SocketAddr) -> Stream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{local}:0").parse().unwrap();
    s.bind(&local.into()).unwrap();
    s.connect_timeout(&server.into(), SHORT).unwrap();
    s.set_nodelay(true).unwrap();
    Stream::Tcp(s.into())
}

#[test]
fn per_peer_limit_over_tcp_and_unix() {
    let mut server = Server::builder()
        .cores(2)
        .args(["--max-sessions-per-peer", "2", "--admin", "127.0.0.1:0"])
        .start();
    let tcp = server.tcp.unwrap();
    for t in TRANSPORTS {
        let a = server.handshake(t);
        let _b = server.handshake(t);
        // The third from the same address (TCP) or uid (Unix) is refused, naming the limit.
        let mut c = server.connect(t);
        c.expect_error_and_close(LIMIT_TEXT);
        // One leaves: room again.
        drop(a);
        assert!(
            wait_until(SHORT, || {
                let mut d = server.connect(t);
                match d.read_frame(SHORT) {
                    Ok(f) if f.header.kind == sockchat_proto::FrameType::SessionInit => {
                        d.send(&d.ack_frame(None));
                        true
                    }
                    _ => false,
                }
            }),
            "[{t:?}] no room after a session of the peer ended"
        );
    }
    // Another address is another peer (TCP sessions above all came from 127.0.0.1).
    let mut other = Client::new(
        connect_from("127.0.0.2", tcp),
        Transport::Tcp,
        Key::reference_default(),
    );
    other.handshake();
    other.echo(Some(TEXT_UTF8), b"from 127.0.0.2");

    let m = scrape_until(server.admin.unwrap(), SHORT, |s| {
        sample(s, "sockchat_session_closes_total{reason=\"peer_limit\"}") >= 2.0
    });
    assert!(sample(&m, "sockchat_session_closes_total{reason=\"peer_limit\"}") >= 2.0);
    server.stop_clean();
}

/// Sends `header` then expects `session_init` (a session) or a close without a frame.
fn after_header(server: &Server, header: &[u8]) -> Client {
    let mut s = server.connect_raw(Transport::Tcp);
    s.write_all(header).unwrap();
    Client::new(s, Transport::Tcp, Key::reference_default())
}

fn expect_closed_silently(c: &mut Client, within: Duration) {
    let frames = c.expect_closed(within);
    assert!(
        frames.is_empty(),
        "expected a close without frames, got {:?}",
        describe(&frames)
    );
}

#[test]
fn proxy_protocol_v1_and_v2_name_the_peer() {
    let mut server = Server::builder()
        .no_unix()
        .args([
            "--proxy-protocol",
            "--max-sessions-per-peer",
            "1",
            "--handshake-timeout",
            "1s",
            "--admin",
            "127.0.0.1:0",
        ])
        .start();
    let dst = server.tcp.unwrap();
    let a: SocketAddr = "192.0.2.10:40000".parse().unwrap();

    // v1 naming 192.0.2.10: a session.
    let mut one = after_header(&server, &proxy_v1(a, dst));
    one.handshake();
    one.echo(Some(TEXT_UTF8), b"through PROXY v1");
    // Same client address from another port, in v2: over its per-peer limit, although
    // the real connection address (127.0.0.1) is the same as for any other test client.
    let SocketAddr::V4(dst4) = dst else { panic!() };
    let mut two = after_header(
        &server,
        &proxy_v2(SocketAddrV4::new([192, 0, 2, 10].into(), 40001), dst4),
    );
    two.expect_error_and_close("max_sessions_per_peer = 1");
    // v2 naming another client: a session.
    let mut three = after_header(
        &server,
        &proxy_v2(SocketAddrV4::new([198, 51, 100, 7].into(), 5), dst4),
    );
    three.handshake();
    three.echo(Some(TEXT_UTF8), b"through PROXY v2");

    // Missing: a sockchat client speaking first is closed without a word.
    let mut raw = server.connect(Transport::Tcp);
    let ack = raw.ack_frame(None);
    raw.send(&ack);
    expect_closed_silently(&mut raw, SHORT);
    // Missing: nothing at all within the handshake timeout.
    let mut quiet = server.connect(Transport::Tcp);
    expect_closed_silently(&mut quiet, SHORT);
    // Malformed v1 (a bad address) and v2 (a bad signature byte).
    let mut bad1 = after_header(&server, b"PROXY TCP4 999.0.2.1 198.51.100.1 1 2\r\n");
    expect_closed_silently(&mut bad1, SHORT);
    let mut v2 = proxy_v2(SocketAddrV4::new([198, 51, 100, 8].into(), 5), dst4);
    v2[12] = 0x31; // version 3
    let mut bad2 = after_header(&server, &v2);
    expect_closed_silently(&mut bad2, SHORT);

    let m = scrape_until(server.admin.unwrap(), SHORT, |s| {
        sample(s, "sockchat_proxy_header_rejected_total{}") >= 4.0
    });
    assert_eq!(sample(&m, "sockchat_proxy_header_rejected_total{}"), 4.0);
    assert_eq!(
        sample(&m, "sockchat_session_closes_total{reason=\"peer_limit\"}"),
        1.0
    );
    one.echo(Some(TEXT_UTF8), b"still here");
    server.stop_clean();
}

#[test]
fn a_header_split_over_writes_or_followed_by_data_in_the_same_write() {
    let mut server = Server::builder()
        .no_unix()
        .args(["--proxy-protocol", "--line-mode"])
        .start();
    let dst = server.tcp.unwrap();
    let h = proxy_v1("203.0.113.5:999".parse().unwrap(), dst);
    let mut s = TcpStream::connect(dst).unwrap();
    s.set_nodelay(true).unwrap();
    for part in h.chunks(7) {
        s.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = Client::new(Stream::Tcp(s), Transport::Tcp, Key::reference_default());
    c.handshake();
    c.echo(Some(TEXT_UTF8), b"split header");

    // A line-mode client speaks at once: its first line travels with the header and
    // must reach the session, not be eaten with the header.
    let mut s = TcpStream::connect(dst).unwrap();
    let mut first = h.clone();
    first.extend_from_slice(b"ping\n");
    s.write_all(&first).unwrap();
    let mut line = LineClient::new(Stream::Tcp(s), Transport::Tcp);
    line.expect_line(b"pong\n");
    server.stop_clean();
}
