//! Floods: a client sending as fast as it can without reading (closed at
//! `--send-queue-limit`), 1,000 connections opened and dropped without a handshake, and
//! connections reset (RST) in the middle of a frame.
//!
//! Same harness as `hostile_handshake.rs` (one core, a bystander doing echo round trips
//! on it, RSS bounded, closes counted); the connection cases also check the server's
//! open file descriptors come back to where they were.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use sockchat_proto::FrameType;
use sockchat_testkit::*;

per_transport!(
    sender_that_never_reads,
    thousand_connections_dropped_without_handshake,
    reset_in_the_middle_of_a_frame,
);

const QUEUE_LIMIT: u64 = 1 << 20;

/// Sends 64 KiB messages as fast as the socket takes them and never reads. With a
/// session timeout of 120 s, only the send queue limit can close it, and must within the
/// 20 s allowed. Memory: the queue may hold the limit plus one message (checked before
/// queueing), the echoes share the received buffers; bound = limit + message + slack.
fn sender_that_never_reads(t: Transport) {
    let a = Arena::start(
        t,
        "never_reads",
        &[
            "--send-queue-limit",
            &QUEUE_LIMIT.to_string(),
            "--session-timeout",
            "120s",
        ],
    );
    let mut c = a.server.handshake(t);
    let frame = c.frame(FrameType::Message, Some(OCTET), &pattern(64 << 10, 3));
    c.stream
        .set_write_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(20);
    let (mut sent, mut off) = (0u64, 0usize);
    let mut closed = None;
    // Bounded by the deadline and by 512 MiB.
    while Instant::now() < deadline && sent < (512 << 20) {
        match c.stream.write(&frame[off..]) {
            Ok(n) => {
                sent += n as u64;
                off = (off + n) % frame.len();
            }
            Err(e) if is_closed_error(&e) => {
                closed = Some(e);
                break;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("[{t:?}] write error after {sent} bytes: {e}"),
        }
    }
    let e = closed.unwrap_or_else(|| {
        panic!("[{t:?}] a client that never reads was not closed within 20 s ({sent} bytes sent)")
    });
    eprintln!(
        "[{t:?}] never-reading client closed after {sent} bytes in {:?} ({e})",
        started.elapsed()
    );
    // Whatever echoes were written, then the close (a frame may be cut short).
    c.read_until_closed(LONG);
    let totals = a.finish(QUEUE_LIMIT + (64 << 10) + ARENA_SLACK);
    assert_eq!(totals.closes("slow_consumer"), 1, "{totals:?}");
}

/// 1,000 connections opened and dropped without a handshake, 100 at a time, in three
/// styles: closed at once, closed after reading `session_init`, closed after a few bytes
/// of a frame. The server's fds and sessions come back to where they were.
fn thousand_connections_dropped_without_handshake(t: Transport) {
    let a = Arena::start(t, "thousand_dropped", &[]);
    let pid = a.server.pid();
    let fds_before = proc_fds(pid);
    for batch in 0..10 {
        let mut conns: Vec<Client> = (0..100).map(|_| a.server.connect(t)).collect();
        for (i, c) in conns.iter_mut().enumerate() {
            match (batch * 100 + i) % 3 {
                0 => {}
                1 => {
                    c.read_init();
                }
                _ => {
                    let _ = c.try_send(&sockchat_proto::frame::MAGIC);
                }
            }
        }
        drop(conns);
    }
    assert_fds_back(t, pid, fds_before);
    eprintln!(
        "[{t:?}] server fds: {fds_before} before, {} after 1,000 dropped connections",
        proc_fds(pid)
    );
    let totals = a.finish(ARENA_SLACK);
    let ended = dropped(&totals);
    // Plus the bystander's own close (it hangs up when its thread ends).
    assert_eq!(ended, 1000 + 1, "{totals:?}");
    assert_eq!(totals.get("accepted"), 1001, "{totals:?}");
}

/// Waits for the server's open fds to come back to `before`.
fn assert_fds_back(t: Transport, pid: u32, before: usize) {
    let back = wait_until(SHORT, || proc_fds(pid) <= before);
    assert!(
        back,
        "[{t:?}] the server's fds did not come back: {before} before, {} now",
        proc_fds(pid)
    );
}

/// Sessions closed by their peer going away, whichever way the server saw it.
fn dropped(totals: &Totals) -> u64 {
    totals.closes("peer_closed") + totals.closes("io_error") + totals.closes("invalid_frame")
}

/// Half of a 64 KiB frame, then a reset: TCP with `SO_LINGER` 0 (the kernel sends RST);
/// Unix has no RST, so the socket is closed with our receive side unread (the nearest
/// thing: the server sees the end mid-frame). 200 times; fds back, memory bounded.
fn reset_in_the_middle_of_a_frame(t: Transport) {
    let a = Arena::start(t, "rst_mid_frame", &[]);
    let pid = a.server.pid();
    let fds_before = proc_fds(pid);
    for i in 0..200u64 {
        let mut c = a.server.handshake(t);
        let f = c.frame(FrameType::Message, Some(OCTET), &pattern(64 << 10, i));
        c.send(&f[..f.len() / 2]);
        if let Stream::Tcp(s) = &c.stream {
            let l = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: setsockopt on a socket we own, with a correctly sized linger struct.
            let rc = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&l as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0, "SO_LINGER");
        }
        drop(c);
    }
    assert_fds_back(t, pid, fds_before);
    let totals = a.finish(ARENA_SLACK);
    let ended = dropped(&totals);
    eprintln!("[{t:?}] resets: {totals:?}");
    // Plus the bystander's own close (it hangs up when its thread ends).
    assert_eq!(ended, 200 + 1, "{totals:?}");
}
