//! TCP connects to an IPv4 loopback target are spread over several 127.0.0.x source
//! addresses (see `loadgen::conn::LOOPBACK_SOURCES`), on both monoio drivers; a refused
//! connect is reported as an error, not as a stream.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::thread;
use std::time::Duration;

use loadgen::conn::{Conn, Target};

const SESSIONS: usize = 8;

async fn connect_all(target: &Target) -> Vec<Conn> {
    let mut conns = Vec::new();
    for _ in 0..SESSIONS {
        let c = monoio::time::timeout(Duration::from_secs(5), Conn::connect(target))
            .await
            .expect("connect timed out")
            .expect("connect");
        conns.push(c);
    }
    conns
}

fn sources_seen(connect: impl FnOnce(&Target) -> Vec<Conn>) -> BTreeSet<IpAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let acceptor = thread::spawn(move || {
        (0..SESSIONS)
            .map(|_| listener.accept().unwrap().1)
            .collect::<Vec<_>>()
    });
    let conns = connect(&Target::Tcp(addr));
    let peers = acceptor.join().unwrap();
    drop(conns);
    for p in &peers {
        let IpAddr::V4(v4) = p.ip() else {
            panic!("peer {p} not IPv4")
        };
        assert!(v4.is_loopback(), "peer {p}");
        assert!(
            (2..=9).contains(&v4.octets()[3]),
            "peer {p} not from 127.0.0.2-9"
        );
    }
    peers.iter().map(SocketAddr::ip).collect()
}

/// `sources_seen` with the connects made on monoio's io_uring driver or its epoll one.
fn sources_seen_on(io_uring: bool) -> BTreeSet<IpAddr> {
    sources_seen(|t| {
        if io_uring {
            let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer();
            rt.build().unwrap().block_on(connect_all(t))
        } else {
            let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer();
            rt.build().unwrap().block_on(connect_all(t))
        }
    })
}

#[test]
fn loopback_connects_come_from_several_sources_on_io_uring() {
    let seen = sources_seen_on(true);
    assert!(seen.len() > 1, "one source address only: {seen:?}");
}

#[test]
fn loopback_connects_come_from_several_sources_on_epoll() {
    let seen = sources_seen_on(false);
    assert!(seen.len() > 1, "one source address only: {seen:?}");
}

#[test]
fn a_refused_loopback_connect_is_an_error() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    let res = rt.block_on(async {
        monoio::time::timeout(Duration::from_secs(5), Conn::connect(&Target::Tcp(addr))).await
    });
    let err = res
        .expect("timed out")
        .expect_err("connected to a closed port");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}
