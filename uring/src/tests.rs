//! The data ring over real sockets.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

pub(super) fn small(defer: bool) -> RingConfig {
    RingConfig {
        buf_count: 8,
        buf_size: 256,
        entries: 64,
        defer_taskrun: defer,
        rearm_free: 1,
    }
}

/// Submits, waits (bounded) for the eventfd, drains; until `done` says so.
pub(super) fn pump<S>(
    ring: &mut DataRing,
    state: &mut S,
    mut on: impl FnMut(&mut DataRing, &mut S, Completion),
    mut done: impl FnMut(&DataRing, &S) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while !done(ring, state) {
        assert!(Instant::now() < deadline, "timed out: {ring:?}");
        ring.submit().unwrap();
        let mut pfd = libc::pollfd {
            fd: ring.eventfd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 50) };
        ring.clear_wake();
        ring.submit().unwrap();
        ring.poll(&mut out);
        for c in out.drain(..) {
            on(ring, state, c);
        }
    }
}

#[test]
fn receives_in_order_then_eof_with_no_buffer_held() {
    for defer in [true, false] {
        let mut ring = DataRing::new(small(defer)).unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        ring.recv(Token(3), a.as_raw_fd());
        let sent: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        for piece in sent.chunks(700) {
            b.write_all(piece).unwrap();
        }
        drop(b);
        let mut st: (Vec<u8>, Option<bool>) = (Vec::new(), None);
        pump(
            &mut ring,
            &mut st,
            |r, (got, ended), c| match c {
                Completion::Data { token, buf } => {
                    assert_eq!(token, Token(3));
                    got.extend_from_slice(r.bytes(&buf));
                    r.recycle(buf);
                }
                Completion::RecvEnded { result, .. } => *ended = Some(result.is_ok()),
                other => panic!("{other:?}"),
            },
            |_, (_, ended)| ended.is_some(),
        );
        let (got, ended) = st;
        assert_eq!(ended, Some(true), "end of stream is not an error");
        assert!(
            got == sent,
            "bytes differ ({} of {})",
            got.len(),
            sent.len()
        );
        assert_eq!(ring.buffers_out(), 0);
        assert!(ring.is_idle(Token(3)));
        assert_eq!(ring.in_flight(), 0);
    }
}

#[test]
fn empty_ring_backs_off_and_loses_nothing() {
    let mut ring = DataRing::new(small(true)).unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    ring.recv(Token(0), a.as_raw_fd());
    // More than the ring's 8 × 256 bytes, all at once.
    let sent: Vec<u8> = (0..20_000u32).map(|i| (i * 13 % 256) as u8).collect();
    let writer = std::thread::spawn(move || {
        b.write_all(&sent).unwrap();
        sent
    });
    // Hold every buffer until the ring ran dry.
    let mut held: Vec<RingBuf> = Vec::new();
    pump(
        &mut ring,
        &mut held,
        |_, held, c| match c {
            Completion::Data { buf, .. } => held.push(buf),
            other => panic!("{other:?}"),
        },
        |r, _| r.stats().enobufs > 0,
    );
    assert_eq!(held.len(), 8, "the ring lent all its buffers");
    assert!(!ring.is_idle(Token(0)), "a starved receive still counts");
    let mut got = Vec::new();
    for buf in held.drain(..) {
        got.extend_from_slice(ring.bytes(&buf));
        ring.recycle(buf);
    }
    let total = 20_000;
    let mut st = (got, false);
    pump(
        &mut ring,
        &mut st,
        |r, (got, ended), c| match c {
            Completion::Data { buf, .. } => {
                got.extend_from_slice(r.bytes(&buf));
                r.recycle(buf);
            }
            // The writer closes once done: end of stream only after all the bytes.
            Completion::RecvEnded { result, .. } => {
                result.unwrap();
                *ended = true;
            }
            other => panic!("{other:?}"),
        },
        |_, (_, ended)| *ended,
    );
    let got = st.0;
    assert_eq!(got.len(), total);
    let sent = writer.join().unwrap();
    assert!(
        got == sent,
        "bytes differ ({} of {})",
        got.len(),
        sent.len()
    );
    assert!(ring.stats().rearmed >= 1);
}

#[test]
fn multishot_accept_takes_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sock");
    let l = UnixListener::bind(&path).unwrap();
    l.set_nonblocking(true).unwrap();
    let mut ring = DataRing::new(small(true)).unwrap();
    ring.accept(Token(9), l.as_raw_fd());
    let clients: Vec<UnixStream> = (0..5)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    let mut accepted = Vec::new();
    pump(
        &mut ring,
        &mut accepted,
        |_, accepted, c| match c {
            Completion::Accepted {
                token,
                result,
                more,
            } => {
                assert_eq!(token, Token(9));
                assert!(more, "still armed");
                accepted.push(result.unwrap());
            }
            other => panic!("{other:?}"),
        },
        |_, accepted| accepted.len() == 5,
    );
    assert!(ring.in_flight() == 1, "one accept serves them all");
    ring.cancel_accept(Token(9));
    let mut ended = false;
    pump(
        &mut ring,
        &mut ended,
        |_, ended, c| {
            if let Completion::Accepted { more: false, .. } = c {
                *ended = true;
            }
        },
        |_, ended| *ended,
    );
    assert!(ring.is_idle(Token(9)));
    drop(clients);
}

/// One part goes out as a plain `send` (no msghdr); a partial one hands back the rest of
/// that part, and the send contexts are reused, so many sends leave the ring idle.
#[test]
fn single_part_sends_continue_after_a_partial_send() {
    let mut ring = DataRing::new(small(true)).unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let big: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut expect = big.clone();
    let mut smalls = Vec::new();
    for i in 0..200u32 {
        smalls.push(Bytes::from(i.to_le_bytes().to_vec()));
        expect.extend_from_slice(&i.to_le_bytes());
    }
    let total = expect.len();
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let mut got = vec![0u8; total];
        b.read_exact(&mut got).unwrap();
        got
    });
    let fd = a.as_raw_fd();
    ring.send(Token(3), fd, &mut vec![Bytes::from(big)]);
    // (sent, partial sends seen, the small parts still to send one by one)
    let mut st = (0usize, 0usize, smalls.into_iter());
    pump(
        &mut ring,
        &mut st,
        |r, (sent, partial, rest), c| match c {
            Completion::Sent {
                result, mut unsent, ..
            } => {
                *sent += result.unwrap();
                if !unsent.is_empty() {
                    *partial += 1;
                    assert_eq!(unsent.len(), 1, "one part, its rest");
                    r.send(Token(3), fd, &mut unsent);
                } else if let Some(next) = rest.next() {
                    r.send(Token(3), fd, &mut vec![next]);
                }
            }
            other => panic!("{other:?}"),
        },
        |r, (sent, ..)| *sent == total && !r.sending(Token(3)),
    );
    assert!(reader.join().unwrap() == expect, "bytes in order");
    assert!(ring.is_idle(Token(3)));
}

#[test]
fn vectored_send_waits_on_a_full_socket_and_reports_what_is_left() {
    let mut ring = DataRing::new(small(true)).unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let parts: Vec<Bytes> = (0..64u8).map(|i| Bytes::from(vec![i; 16 * 1024])).collect();
    let expect: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    let reader = std::thread::spawn(move || {
        // Read slowly so the socket fills and the send has to wait.
        std::thread::sleep(Duration::from_millis(100));
        let mut got = vec![0u8; 64 * 16 * 1024];
        b.read_exact(&mut got).unwrap();
        got
    });
    ring.send(Token(1), a.as_raw_fd(), &mut parts.clone());
    assert!(ring.sending(Token(1)));
    let fd = a.as_raw_fd();
    let mut st = (0usize, false);
    pump(
        &mut ring,
        &mut st,
        |r, (sent, done), c| match c {
            Completion::Sent {
                result, mut unsent, ..
            } => {
                *sent += result.unwrap();
                if unsent.is_empty() {
                    *done = true;
                } else {
                    r.send(Token(1), fd, &mut unsent);
                }
            }
            other => panic!("{other:?}"),
        },
        |_, (_, done)| *done,
    );
    let sent = st.0;
    assert_eq!(sent, expect.len());
    assert!(reader.join().unwrap() == expect);
    assert!(ring.is_idle(Token(1)));
}

#[test]
fn cancelled_receive_ends_once_and_frees_the_token() {
    let mut ring = DataRing::new(small(true)).unwrap();
    let (a, _b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    ring.recv(Token(2), a.as_raw_fd());
    ring.submit().unwrap();
    assert!(!ring.is_idle(Token(2)));
    assert!(
        !ring.cancel_recv(Token(2)),
        "a receive in the kernel ends later"
    );
    let mut ends = 0;
    pump(
        &mut ring,
        &mut ends,
        |_, ends, c| match c {
            Completion::RecvEnded { result, .. } => {
                assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
                *ends += 1;
            }
            other => panic!("{other:?}"),
        },
        |r, _| r.in_flight() == 0,
    );
    assert_eq!(ends, 1);
    assert!(ring.is_idle(Token(2)));
}

#[test]
fn shutdown_cancels_everything_and_waits_for_it() {
    let mut ring = DataRing::new(small(true)).unwrap();
    let pairs: Vec<(UnixStream, UnixStream)> =
        (0..4).map(|_| UnixStream::pair().unwrap()).collect();
    for (i, (a, _)) in pairs.iter().enumerate() {
        a.set_nonblocking(true).unwrap();
        ring.recv(Token(i as u32), a.as_raw_fd());
    }
    ring.submit().unwrap();
    assert_eq!(ring.in_flight(), 4);
    let mut ended = 0;
    assert!(ring.shutdown(Duration::from_secs(5), |_, c| {
        if let Completion::RecvEnded { .. } = c {
            ended += 1;
        }
    }));
    assert_eq!(ended, 4);
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn advance_across_parts() {
    let mut v = vec![
        Bytes::from_static(b"abc"),
        Bytes::new(),
        Bytes::from_static(b"defg"),
        Bytes::from_static(b"hi"),
    ];
    advance(&mut v, 4);
    assert_eq!(v.len(), 2);
    assert_eq!(&v[0][..], b"efg");
    advance(&mut v, 5);
    assert!(v.is_empty());
}
