//! Limits: a client that sends but never reads is closed as a slow consumer with the
//! server's memory bounded; frame size and session count limits.

use std::io::Write;
use std::time::{Duration, Instant};

use sockchat_proto::FrameType;
use sockchat_testkit::*;

per_transport!(
    slow_consumer_is_closed,
    slow_consumer_closed_by_queue_limit,
    max_frame_is_enforced,
    max_sessions,
);

const QUEUE_LIMIT: u64 = 1 << 20;

/// A client that sends but never reads is closed, by whichever rule the server applies
/// first (send queue over the limit, or no write progress for the session timeout), and
/// the server's memory stays bounded. A bystander on the same core keeps being served.
fn slow_consumer_is_closed(t: Transport) {
    flood(t, "3s", Duration::from_secs(30));
}

/// The contract's rule: the session is closed once the server's queue for it passes
/// `--send-queue-limit`, long before any timeout. Needs the server to keep reading (and
/// queueing echoes) while its writes to that client are blocked.
fn slow_consumer_closed_by_queue_limit(t: Transport) {
    flood(t, "120s", Duration::from_secs(20));
}

fn flood(t: Transport, session_timeout: &str, flood_for: Duration) {
    let server = Server::builder()
        .args(["--send-queue-limit", &QUEUE_LIMIT.to_string()])
        .args(["--session-timeout", session_timeout])
        .start();
    let mut bystander = server.handshake(t);
    let mut c = server.handshake(t);
    c.echo(Some(TEXT_UTF8), b"warm up");
    bystander.echo(Some(TEXT_UTF8), b"warm up");
    let before = server.memory();

    // 64 KiB messages, never reading the echoes. Bounded in bytes and time.
    let frame = c.frame(
        FrameType::Message,
        Some("application/x-flood"),
        &pattern(64 << 10, 3),
    );
    const MAX_BYTES: u64 = 512 << 20;
    let started = Instant::now();
    let deadline = started + flood_for;
    c.stream
        .set_write_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    let mut sent: u64 = 0;
    let mut off = 0usize; // position in `frame`: partial writes continue where they stopped
    let mut peak_rss = before.rss;
    let mut closed_by = None;
    let mut last_ping = Instant::now();
    while sent < MAX_BYTES && Instant::now() < deadline {
        match c.stream.write(&frame[off..]) {
            Ok(n) => {
                sent += n as u64;
                off = (off + n) % frame.len();
            }
            Err(e) if is_closed_error(&e) => {
                closed_by = Some(e);
                break;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // The server is not reading right now; keep trying until the deadline.
            }
            Err(e) => panic!("[{t:?}] unexpected write error after {sent} bytes: {e}"),
        }
        peak_rss = peak_rss.max(server.memory().rss);
        if last_ping.elapsed() >= Duration::from_millis(500) {
            // The same core keeps serving others (and keeps the bystander alive).
            bystander.ping();
            last_ping = Instant::now();
        }
    }
    let closed_by = closed_by.unwrap_or_else(|| {
        panic!(
            "[{t:?}] the server did not close a client that does not read within {flood_for:?} \
             ({sent} bytes sent, send queue limit {QUEUE_LIMIT}, session timeout \
             {session_timeout}; if `sent` is only the kernel buffers' worth, the server \
             stopped reading instead of queueing up to the limit)"
        )
    });
    eprintln!(
        "[{t:?}] slow consumer closed after {sent} bytes sent in {:?} ({closed_by})",
        started.elapsed()
    );
    let after = server.memory();
    peak_rss = peak_rss.max(after.rss);
    let growth_hwm = after.hwm.saturating_sub(before.rss);
    let growth_rss = peak_rss.saturating_sub(before.rss);
    eprintln!(
        "[{t:?}] server RSS before {} KiB, peak sampled {} KiB, VmHWM after {} KiB",
        before.rss >> 10,
        peak_rss >> 10,
        after.hwm >> 10
    );
    let bound = 4 * QUEUE_LIMIT;
    assert!(
        growth_hwm < bound && growth_rss < bound,
        "[{t:?}] server memory grew by {} KiB (peak RSS) / {} KiB (VmHWM) for a {} KiB send queue limit",
        growth_rss >> 10,
        growth_hwm >> 10,
        QUEUE_LIMIT >> 10
    );
    // The client's side ends: whatever echoes were delivered, then the close.
    let deadline = Instant::now() + LONG;
    let mut frames = 0usize;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.read_frame(left) {
            Ok(f) => {
                frames += 1;
                assert!(
                    matches!(f.header.kind, FrameType::Message | FrameType::Error),
                    "{}",
                    f.header.kind
                );
                assert!(frames < 100_000);
            }
            // The server may cut a queued frame short when it drops a slow consumer.
            Err(e) if e.is_closed() || matches!(e, ReadError::EofInFrame(_)) => break,
            Err(e) => panic!("[{t:?}] slow consumer: expected a close, got {e:?}"),
        }
    }
    // Everyone else is fine.
    bystander.echo(Some(TEXT_UTF8), b"unaffected");
    server.handshake(t).ping();
}

fn max_frame_is_enforced(t: Transport) {
    let server = Server::builder().args(["--max-frame", "4096"]).start();
    let mut c = server.handshake(t);
    c.echo(Some(TEXT_UTF8), &pattern(1000, 1));
    let big = c.frame(FrameType::Message, Some(TEXT_UTF8), &pattern(64 << 10, 2));
    // The server refuses from the fixed header, before reading the rest.
    let writer = c.spawn_writer(big);
    c.expect_error_and_close("too large");
    let _ = writer.join();
    server.handshake(t).ping();
}

fn max_sessions(t: Transport) {
    let server = Server::builder().args(["--max-sessions", "2"]).start();
    let mut a = server.handshake(t);
    let mut b = server.handshake(t);
    a.ping();
    b.ping();
    // A third is refused: closed, with at most an error frame (no session).
    let mut c = server.connect(t);
    let frames = c.expect_closed(SHORT);
    assert!(
        frames.iter().all(|f| f.header.kind == FrameType::Error),
        "[{t:?}] a session over the limit got {:?}",
        describe(&frames)
    );
    a.echo(Some(TEXT_UTF8), b"a still works");
    // When one leaves, a new one is admitted (the server may take a moment to notice).
    let d = a.frame(
        FrameType::Disconnect,
        Some("application/json"),
        CLIENT_DISCONNECT_CONTENT,
    );
    a.send(&d);
    a.expect_closed(SHORT);
    let deadline = Instant::now() + SHORT;
    let mut admitted = None;
    for _ in 0..100 {
        let mut n = server.connect(t);
        if let Ok(f) = n.read_frame(SHORT) {
            if f.header.kind == FrameType::SessionInit {
                n.session_id = f
                    .header
                    .session_id
                    .as_deref()
                    .unwrap_or_default()
                    .to_string();
                admitted = Some(n);
                break;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        // Retry interval while waiting for the admission checked above.
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut n = admitted.expect("a new session is admitted after one left");
    let ack = n.ack_frame(None);
    n.send(&ack);
    n.ping();
    b.echo(Some(TEXT_UTF8), b"b still works");
}
