//! Every `raw-server` engine echoes bytes exactly, over Unix and TCP, with payloads larger
//! than one ring buffer, several connections at once, and stops cleanly; the ring
//! engine's fan-out forwards each connection's bytes to every other connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use loadgen::conn::Target;
use loadgen::raw_server::{Engine, RawServer};
use loadgen::runner::RingMode;

fn check<S: Read + Write>(mut conns: Vec<S>) {
    // 3 × the ring's 4 KiB buffers plus an odd tail, in pieces.
    let payload: Vec<u8> = (0..12_345u32).map(|i| (i * 7 + 3) as u8).collect();
    for (n, c) in conns.iter_mut().enumerate() {
        for piece in payload.chunks(1000 + n) {
            c.write_all(piece).unwrap();
        }
    }
    for c in conns.iter_mut() {
        let mut got = vec![0u8; payload.len()];
        c.read_exact(&mut got).unwrap();
        assert!(got == payload, "echo differs");
    }
}

fn run(engine: Engine, ring: RingMode) {
    let dir = tempfile::tempdir().unwrap();
    let unix = RawServer::start_engine(
        &Target::Unix(dir.path().join("r.sock")),
        2,
        &[],
        ring,
        engine,
    )
    .unwrap();
    let Target::Unix(path) = &unix.target else {
        panic!()
    };
    let conns: Vec<UnixStream> = (0..8)
        .map(|_| {
            let c = UnixStream::connect(path).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            c
        })
        .collect();
    check(conns);
    unix.stop();

    let tcp = RawServer::start_engine(
        &Target::Tcp("127.0.0.1:0".parse().unwrap()),
        2,
        &[],
        ring,
        engine,
    )
    .unwrap();
    let Target::Tcp(addr) = tcp.target else {
        panic!()
    };
    assert_ne!(addr.port(), 0);
    let conns: Vec<TcpStream> = (0..8)
        .map(|_| {
            let c = TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            c
        })
        .collect();
    check(conns);
    tcp.stop();
}

#[test]
fn ring_engine_echoes() {
    run(Engine::Ring, RingMode::Defer);
    run(Engine::Ring, RingMode::Plain);
}

#[test]
fn compio_engine_echoes() {
    run(Engine::Compio, RingMode::Defer);
}

#[test]
fn monoio_engine_echoes() {
    run(Engine::Monoio, RingMode::Plain);
}

/// Connection `from` writes `payload` in pieces; every other open one reads it exactly.
fn fan<S: Read + Write>(conns: &mut [Option<S>], from: usize, payload: &[u8]) {
    let sender = conns[from].as_mut().unwrap();
    for piece in payload.chunks(1000 + from) {
        sender.write_all(piece).unwrap();
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let Some(c) = c.as_mut().filter(|_| i != from) else {
            continue;
        };
        let mut got = vec![0u8; payload.len()];
        c.read_exact(&mut got).unwrap();
        assert!(got == payload, "connection {i} got other bytes");
    }
}

fn fanout<S: Read + Write>(mut conns: Vec<Option<S>>) {
    // The server accepts in connect order and forwards only to connections it has
    // accepted: once the last one's token reached all the others, every one is in.
    let last = conns.len() - 1;
    fan(&mut conns, last, b"!");
    // 3 × the ring's 4 KiB buffers plus an odd tail.
    let big: Vec<u8> = (0..12_345u32).map(|i| (i * 7 + 3) as u8).collect();
    fan(&mut conns, 0, &big);
    // The sender got nothing of its own bytes: the first thing it reads is the next
    // connection's payload.
    fan(&mut conns, 2, b"from two");
    // A closed member is left out; the others still get everything.
    conns[4] = None;
    fan(&mut conns, 1, &big[..5000]);
}

#[test]
fn ring_fanout_forwards_to_every_other_connection() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::Unix(dir.path().join("f.sock"));
    let srv = RawServer::start_fanout(&target, None, RingMode::Plain).unwrap();
    let Target::Unix(path) = &srv.target else {
        panic!()
    };
    let conns: Vec<Option<UnixStream>> = (0..6)
        .map(|_| {
            let c = UnixStream::connect(path).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            Some(c)
        })
        .collect();
    fanout(conns);
    srv.stop();

    let tcp = Target::Tcp("127.0.0.1:0".parse().unwrap());
    let srv = RawServer::start_fanout(&tcp, None, RingMode::Defer).unwrap();
    let Target::Tcp(addr) = srv.target else {
        panic!()
    };
    let conns: Vec<Option<TcpStream>> = (0..6)
        .map(|_| {
            let c = TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            Some(c)
        })
        .collect();
    fanout(conns);
    srv.stop();
}
