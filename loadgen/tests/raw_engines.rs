//! Every `raw-server` engine echoes bytes exactly, over Unix and TCP, with payloads larger
//! than one ring buffer, several connections at once, and stops cleanly.

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
