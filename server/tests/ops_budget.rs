//! `--memory-budget` against the hoarding pattern (sessions each opening four partial
//! chunked messages of 60 MiB, all chunks but the last): the server's memory stays
//! within the budget, the hoarders are refused with an `error` frame naming it, and a
//! bystander on the same core keeps echoing. `--message-timeout` closes a session whose
//! chunked message does not complete.

use std::time::{Duration, Instant};

use sockchat_proto::{encode_into, ByteStr, ChunkInfo, FrameType, Header, Key};
use sockchat_testkit::admin::{sample, scrape, scrape_until};
use sockchat_testkit::*;

const MIB: u64 = 1 << 20;
const BUDGET: u64 = 128 * MIB;
const MESSAGE: u64 = 60 * MIB;
const CHUNK: u64 = 10 * MIB;

/// A chunk frame of a `MESSAGE`-byte message, encoded by the protocol crate (optimised
/// CRC and HMAC even in a debug build).
fn chunk(key: &Key, sid: &str, id: &str, index: u32, count: u32, content: &[u8]) -> Vec<u8> {
    let mut h = Header::new(
        FrameType::Chunk,
        Some(ByteStr::from(OCTET)),
        Some(ByteStr::from(sid)),
    );
    h.chunk = Some(ChunkInfo {
        message_id: ByteStr::from(id),
        index,
        count,
        total_len: MESSAGE,
    });
    let mut out = bytes::BytesMut::new();
    encode_into(key, &h, content, &mut out).unwrap();
    out.to_vec()
}

#[test]
fn hoarding_stays_within_the_budget_and_others_keep_echoing() {
    let mut server = Server::builder()
        .args(["--memory-budget", "128M", "--admin", "127.0.0.1:0"])
        // The hoarders send for a while; only the budget should end them.
        .args(["--session-timeout", "300s"])
        .start();
    let admin = server.admin.unwrap();
    let base = server.memory().rss;
    let bystander = Bystander::start(&server, Transport::Unix);

    let content = std::sync::Arc::new(pattern(CHUNK as usize, 7));
    let hoarders: Vec<_> = (0..6)
        .map(|h| {
            let mut c = server.connect(Transport::Tcp);
            c.handshake_chunk();
            let content = content.clone();
            std::thread::spawn(move || {
                // All chunks but the last of four 60 MiB messages, encoded as they are
                // written on another thread while this one reads, so the error frame is
                // read as soon as it comes.
                let mut w = c.stream.try_clone().unwrap();
                let sid = c.session_id.clone();
                let writer = std::thread::spawn(move || {
                    let key = Key::reference_default();
                    let count = (MESSAGE / CHUNK) as u32;
                    for m in 0..4 {
                        for i in 0..count - 1 {
                            let f =
                                chunk(&key, &sid, &format!("hoard-{h}-{m}"), i, count, &content);
                            if std::io::Write::write_all(&mut w, &f).is_err() {
                                return;
                            }
                        }
                    }
                });
                let out = c.read_until_closed(LONG);
                let _ = writer.join();
                out
            })
        })
        .collect();
    let mut refused = 0;
    for h in hoarders {
        let out = h.join().unwrap();
        if let Some((kind, text)) = out.notice() {
            assert_eq!(kind, FrameType::Error, "{text}");
            assert!(text.contains("memory_budget"), "{text}");
            refused += 1;
        }
    }
    let hwm = server.memory().hwm;
    // The bystander shares the core with six senders of 10 MiB frames, each verified
    // (CRC + HMAC) in one step: it is not starved, though a round trip can wait behind a
    // few of those steps, so the bound here is the session's, not the 100 ms of the
    // single-offender cases.
    let report = bystander.finish();
    assert!(
        report.failure.is_none(),
        "bystander failed: {:?}",
        report.failure
    );
    assert!(
        report.round_trips >= 10,
        "bystander made {} round trips",
        report.round_trips
    );
    assert!(
        report.max_latency < Duration::from_secs(2),
        "bystander waited {:?} for an echo",
        report.max_latency
    );
    // Six hoarders want 6 x 4 x 60 MiB; the budget lets 128 MiB be held at once.
    assert!(refused >= 5, "only {refused} hoarders were refused");
    let growth = hwm.saturating_sub(base);
    assert!(
        growth <= BUDGET + 48 * MIB,
        "peak RSS grew by {} MiB for a {} MiB budget",
        growth / MIB,
        BUDGET / MIB
    );
    let m = scrape_until(admin, SHORT, |s| {
        sample(s, "sockchat_memory_reserved_bytes{}") == 0.0
    });
    assert!(
        sample(
            &m,
            "sockchat_session_closes_total{reason=\"memory_budget\"}"
        ) >= 5.0
    );
    assert_eq!(
        sample(&m, "sockchat_memory_reserved_bytes{}"),
        0.0,
        "budget released"
    );
    // Small frames were served throughout, and still are.
    let mut after = server.handshake(Transport::Tcp);
    after.echo(Some(TEXT_UTF8), b"after the hoarders");
    assert!(sample(&scrape(admin), "sockchat_memory_budget_bytes{}") == BUDGET as f64);
    server.stop_clean();
}

#[test]
fn an_incomplete_chunked_message_times_out() {
    let mut server = Server::builder().args(["--message-timeout", "1s"]).start();
    let mut c = server.connect(Transport::Tcp);
    c.handshake_chunk();
    let key = Key::reference_default();
    let start = Instant::now();
    let first = chunk_frame(&key, &c.session_id, "slow", 0, 2, 8, b"abcd");
    c.send(&first);
    // Pings keep the session alive, not the message.
    c.ping();
    let text = c.expect_error_and_close("message_timeout");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{text} after {:?}",
        start.elapsed()
    );
    server.stop_clean();
}
