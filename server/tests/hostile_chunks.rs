//! Chunk abuse (the `chunk` extension): `total_len` above the limit, more partial
//! messages than allowed, duplicate and out-of-range indexes, bad counts and lengths,
//! chunks without the feature, and a chunked message that never finishes (closed at the
//! session timeout, its memory released).
//!
//! Same harness as `hostile_handshake.rs` (one core, a bystander doing echo round trips
//! on it, RSS bounded, the close counted). The server runs with `--max-message 4M` so the
//! memory bounds are small and exact: a session can make the server hold at most
//! `max_partial (4) × max_message` bytes of partial messages.

use std::time::Duration;

use sockchat_proto::{FrameType, Key};
use sockchat_testkit::*;

per_transport!(
    total_len_above_the_limit,
    more_partial_messages_than_allowed,
    duplicate_index,
    out_of_range_index,
    bad_count_and_length,
    chunk_without_the_feature,
    chunked_message_that_never_finishes,
);

const MAX_MESSAGE: u64 = 4 << 20;
const MAX_PARTIAL: u64 = 4;

fn key() -> Key {
    Key::reference_default()
}

fn arena(t: Transport, case: &str) -> Arena {
    Arena::start(t, case, &["--max-message", "4M", "--session-timeout", "2s"])
}

/// An established session that was granted `chunk`.
fn chunk_client(a: &Arena) -> Client {
    let mut c = a.server.connect(a.transport);
    c.handshake_chunk();
    c
}

/// Bytes `[i*cl, min((i+1)*cl, total))` of a message of `total` bytes in `count` chunks.
fn slot(total: u64, count: u64, i: u64) -> usize {
    let cl = total.div_ceil(count);
    ((i + 1) * cl).min(total).saturating_sub(i * cl) as usize
}

/// Sends `frames` on a writer thread and expects an `error` containing `needle`, then
/// the close.
fn expect_refused(c: &mut Client, frames: Vec<u8>, needle: &str) {
    let w = c.spawn_writer(frames);
    let out = c.expect_notice_within(FrameType::Error, needle, SHORT);
    let _ = w.join();
    eprintln!(
        "[{:?}] refused: {:?}",
        c.transport,
        out.notice().map(|n| n.1)
    );
}

/// `total_len` above `--max-message` (and absurdly large): refused at the first chunk,
/// before anything is reserved.
fn total_len_above_the_limit(t: Transport) {
    let a = arena(t, "chunk_total_len_over");
    for total in [MAX_MESSAGE + 1, 1 << 40, u64::MAX] {
        let mut c = chunk_client(&a);
        let f = chunk_frame(&key(), &c.session_id, "big", 0, 1 << 20, total, &[7; 1024]);
        expect_refused(&mut c, f, "too large");
    }
    let totals = a.finish(ARENA_SLACK);
    assert_eq!(totals.closes("chunk_violation"), 3, "{totals:?}");
}

/// `max_partial` (4) messages open at once are allowed; a fifth is refused. What the
/// server may hold meanwhile: 4 × the messages' `total_len`.
fn more_partial_messages_than_allowed(t: Transport) {
    let a = arena(t, "chunk_too_many_partial");
    let mut c = chunk_client(&a);
    let total = MAX_MESSAGE;
    let count = 4;
    for m in 0..MAX_PARTIAL {
        let f = chunk_frame(
            &key(),
            &c.session_id,
            &format!("m{m}"),
            0,
            count,
            total,
            &pattern(slot(total, count, 0), m),
        );
        c.send(&f);
    }
    c.ping(); // all four accepted, the session is alive
    let f = chunk_frame(
        &key(),
        &c.session_id,
        "m-too-many",
        0,
        count,
        total,
        &pattern(slot(total, count, 0), 9),
    );
    expect_refused(&mut c, f, "too many partial");
    let totals = a.finish(MAX_PARTIAL * MAX_MESSAGE + ARENA_SLACK);
    assert_eq!(totals.closes("chunk_violation"), 1, "{totals:?}");
}

fn duplicate_index(t: Transport) {
    let a = arena(t, "chunk_duplicate");
    let mut c = chunk_client(&a);
    let (total, count) = (300_000, 3);
    let first = chunk_frame(
        &key(),
        &c.session_id,
        "dup",
        1,
        count,
        total,
        &pattern(slot(total, count, 1), 1),
    );
    let mut both = first.clone();
    both.extend_from_slice(&first);
    expect_refused(&mut c, both, "duplicate");
    let totals = a.finish(ARENA_SLACK);
    assert_eq!(totals.closes("chunk_violation"), 1, "{totals:?}");
}

/// Index equal to the count, far past it, and not a u32 at all.
fn out_of_range_index(t: Transport) {
    let a = arena(t, "chunk_out_of_range");
    let (total, count) = (300_000, 3);
    for (index, needle) in [
        (3u64, "out of range"),
        (4_000_000_000, "out of range"),
        (1 << 40, "json"),
    ] {
        let mut c = chunk_client(&a);
        let f = chunk_frame(
            &key(),
            &c.session_id,
            "oor",
            index,
            count,
            total,
            &[1; 100_000],
        );
        expect_refused(&mut c, f, needle);
    }
    // An out-of-range index on a message already open.
    let mut c = chunk_client(&a);
    let mut f = chunk_frame(
        &key(),
        &c.session_id,
        "open",
        0,
        count,
        total,
        &pattern(slot(total, count, 0), 2),
    );
    f.extend(chunk_frame(
        &key(),
        &c.session_id,
        "open",
        7,
        count,
        total,
        &[1; 100_000],
    ));
    expect_refused(&mut c, f, "out of range");
    let totals = a.finish(ARENA_SLACK);
    assert_eq!(
        totals.closes("chunk_violation") + totals.closes("invalid_frame"),
        4,
        "{totals:?}"
    );
}

/// Count 0, a count leaving a chunk empty, a chunk of the wrong length, and a later chunk
/// disagreeing with its message's first one.
fn bad_count_and_length(t: Transport) {
    let a = arena(t, "chunk_bad_count_len");
    type Make = Box<dyn Fn(&str) -> Vec<u8>>;
    let cases: Vec<(&str, Make, &str)> = vec![
        (
            "count 0",
            Box::new(|sid| chunk_frame(&key(), sid, "c0", 0, 0, 10, b"x")),
            "count",
        ),
        (
            "count > total",
            Box::new(|sid| chunk_frame(&key(), sid, "cbig", 0, 11, 10, b"x")),
            "count",
        ),
        (
            "empty last chunk",
            Box::new(|sid| chunk_frame(&key(), sid, "c6", 0, 6, 10, b"xx")),
            "count",
        ),
        (
            "wrong length",
            Box::new(|sid| chunk_frame(&key(), sid, "len", 0, 2, 100, &[0; 49])),
            "bytes",
        ),
        (
            "inconsistent",
            Box::new(|sid| {
                let mut f = chunk_frame(&key(), sid, "inc", 0, 2, 100, &[0; 50]);
                f.extend(chunk_frame(&key(), sid, "inc", 1, 2, 98, &[0; 48]));
                f
            }),
            "inconsistent",
        ),
    ];
    let n = cases.len() as u64;
    for (what, make, needle) in cases {
        let mut c = chunk_client(&a);
        eprintln!("[{t:?}] {what}");
        let f = make(&c.session_id);
        expect_refused(&mut c, f, needle);
    }
    let totals = a.finish(ARENA_SLACK);
    assert_eq!(totals.closes("chunk_violation"), n, "{totals:?}");
}

/// A reference session (no features asked) sending `chunk` frames: a protocol violation.
fn chunk_without_the_feature(t: Transport) {
    let a = arena(t, "chunk_not_granted");
    let mut c = a.server.handshake(t);
    let f = chunk_frame(&key(), &c.session_id, "nope", 0, 2, 100, &[0; 50]);
    expect_refused(&mut c, f, "chunk");
    let totals = a.finish(ARENA_SLACK);
    assert_eq!(
        totals.closes("protocol_violation") + totals.closes("chunk_violation"),
        1,
        "{totals:?}"
    );
}

/// Three quarters of a 4 MiB chunked message (12 of 16 chunks of 256 KiB), then silence:
/// closed at the session timeout, and the partial message's memory freed. Three times in
/// a row, so a leak would add up.
///
/// "Freed" means given back to the kernel: the server fixes glibc's mmap threshold
/// (`server/src/alloc.rs`), so the message's buffer and the chunk frames' buffers are
/// unmapped when freed. Without that, glibc's dynamic threshold kept the freed memory
/// resident in the worker's arena, 3.7 MiB after round 1's close and more each round.
fn chunked_message_that_never_finishes(t: Transport) {
    let a = arena(t, "chunk_never_finishes");
    let pid = a.server.pid();
    let (total, count) = (MAX_MESSAGE, 16);
    let mut residual = Vec::new();
    for round in 0..3 {
        let mut c = chunk_client(&a);
        let mut f = Vec::new();
        for i in 0..12 {
            f.extend(chunk_frame(
                &key(),
                &c.session_id,
                "forever",
                i,
                count,
                total,
                &pattern(slot(total, count, i), i),
            ));
        }
        c.send(&f);
        // Held while open (the slots written so far are resident)...
        let held = wait_until(SHORT, || {
            proc_rss(pid).saturating_sub(a.baseline_rss) >= (5 << 19)
        });
        let held_kib = proc_rss(pid).saturating_sub(a.baseline_rss) >> 10;
        assert!(
            held,
            "[{t:?}] round {round}: the chunks never showed in the server's RSS ({held_kib} KiB)"
        );
        c.expect_notice_within(
            FrameType::Disconnect,
            "Session timeout",
            Duration::from_secs(2) + SHORT,
        );
        // ...and freed after the close, in every round: less than a chunk frame's
        // buffer (256 KiB) and allocator slack may stay.
        let bound = 1 << 20;
        let released = wait_until(SHORT, || {
            proc_rss(pid).saturating_sub(a.baseline_rss) < bound
        });
        let left = proc_rss(pid).saturating_sub(a.baseline_rss);
        eprintln!(
            "[{t:?}] round {round}: partial chunked message held {held_kib} KiB while open, \
             {} KiB above baseline after the close",
            left >> 10
        );
        assert!(
            released,
            "[{t:?}] round {round}: the partial message's memory was not freed \
             ({} KiB above baseline after the close, {residual:?} after earlier rounds)",
            left >> 10
        );
        residual.push(left);
    }
    let totals = a.finish(MAX_MESSAGE + ARENA_SLACK);
    assert_eq!(totals.closes("session_timeout"), 3, "{totals:?}");
}
