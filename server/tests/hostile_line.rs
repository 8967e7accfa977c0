//! Line-mode abuse. Line mode off: a line client gets a clear error (`bad magic`) and a
//! close. Line mode on: an over-long line (`error: Line too long`, close, memory bounded
//! by `--max-frame`) and invalid UTF-8 (`invalid`, the session goes on).
//!
//! Same harness as `hostile_handshake.rs` (one core, a bystander doing echo round trips
//! on it, RSS bounded, closes counted).

use sockchat_testkit::*;

per_transport!(
    line_client_with_line_mode_off,
    over_long_line,
    invalid_utf8_lines,
);

const MAX_LINE: u64 = 64 << 10;

/// A framed-only server refuses a line client: one `error` frame naming the bad magic,
/// then the close, whatever the client keeps sending.
fn line_client_with_line_mode_off(t: Transport) {
    let a = Arena::start(t, "line_mode_off", &[]);
    for first in [
        &b"ping\n"[..],
        b"hello there, server\n",
        b"\n",
        b"\x00\x01\x02",
    ] {
        let mut c = a.server.connect(t);
        c.read_init();
        let w = c.spawn_writer([first, &b"more lines\n".repeat(1000)[..]].concat());
        c.expect_notice_within(sockchat_proto::FrameType::Error, "bad magic", SHORT);
        let _ = w.join();
    }
    let totals = a.finish(ARENA_SLACK);
    assert_eq!(totals.closes("invalid_frame"), 4, "{totals:?}");
}

/// A line far longer than `--max-frame` (1 MiB without a newline, from a writer thread):
/// `error: Line too long` and the close, having buffered at most `--max-frame` bytes.
fn over_long_line(t: Transport) {
    let a = Arena::start(
        t,
        "line_too_long",
        &["--line-mode", "--max-frame", &MAX_LINE.to_string()],
    );
    for _ in 0..3 {
        let mut l = LineClient::new(a.server.connect_raw(t), t);
        let mut w = l.stream.try_clone().expect("clone");
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            w.write_all(&vec![b'a'; 1 << 20])
        });
        l.expect_line(b"error: Line too long\n");
        l.expect_closed(SHORT);
        let _ = writer.join();
    }
    // Bound: one line buffer of at most --max-frame per offender (one at a time).
    let totals = a.finish(MAX_LINE + ARENA_SLACK);
    assert_eq!(totals.closes("line_too_long"), 3, "{totals:?}");
}

/// Lines that are not UTF-8 (a lone continuation byte, an overlong encoding, a surrogate,
/// a truncated sequence) each get `invalid`; the session keeps working.
fn invalid_utf8_lines(t: Transport) {
    let a = Arena::start(t, "line_invalid_utf8", &["--line-mode"]);
    let mut l = LineClient::new(a.server.connect_raw(t), t);
    l.send(b"hello\n");
    l.expect_line(b"hello\n");
    for bad in [
        &b"\x80\n"[..],
        b"\xc0\xaf\n",
        b"\xed\xa0\x80\n",
        b"abc\xe2\x82\n",
        b"\xff\xfe\xfd\n",
    ] {
        l.send(bad);
        l.expect_line(b"invalid\n");
    }
    l.send("still here: caf\u{e9}\n".as_bytes());
    l.expect_line("still here: caf\u{e9}\n".as_bytes());
    l.send(b"ping\n");
    l.expect_line(b"pong\n");
    l.send(b"disconnect\n");
    // The close is counted before the socket is closed (the session's task counts it
    // right after dropping the stream, with no await between), so seeing the close is
    // enough: nothing to wait for before stopping the server.
    l.expect_closed(SHORT);
    let totals = a.finish(ARENA_SLACK);
    assert_eq!(totals.closes("client_disconnect"), 1, "{totals:?}");
}
