//! Line mode: with `--line-mode`, a connection whose first byte is not 0x89 speaks
//! newline-terminated lines; without it, such a client gets a bad-magic error and a close.

use std::io::Write;

use sockchat_proto::FrameType;
use sockchat_testkit::*;

per_transport!(
    line_mode_on,
    line_mode_framed_clients_still_work,
    line_mode_off_refuses_lines,
    line_too_long_closes,
);

fn line_mode_on(t: Transport) {
    let server = Server::builder().arg("--line-mode").start();
    let mut c = LineClient::new(server.connect_raw(t), t);
    c.send(b"ping\n");
    c.expect_line(b"pong\n");
    c.send(b"hello world\n");
    c.expect_line(b"hello world\n");
    c.send("héllo ✓ 你好\n".as_bytes());
    c.expect_line("héllo ✓ 你好\n".as_bytes());
    // Invalid UTF-8 is answered and the connection carries on.
    c.send(b"\xff\xfe bad\n");
    c.expect_line(b"invalid\n");
    // Several lines in one write, and a line split over writes.
    c.send(b"one\ntwo\nping\n");
    c.expect_line(b"one\n");
    c.expect_line(b"two\n");
    c.expect_line(b"pong\n");
    c.send(b"spl");
    // The server has read the first part before the rest is written.
    assert!(
        wait_peer_read_all(&c.stream, SHORT),
        "[{t:?}] \"spl\" unread"
    );
    c.send(b"it\n");
    c.expect_line(b"split\n");
    // telnet's CRLF: the codec drops the one `\r` before `\n` (proto/src/line.rs,
    // docs/PROTOCOL.md "newline-terminated lines"), so the line is `crlf` and its echo
    // is `crlf\n`, never the `\r` sent back.
    c.send(b"crlf\r\n");
    let l = c.read_line(SHORT).expect("crlf line");
    assert!(l == b"crlf\n", "{:?}", String::from_utf8_lossy(&l));
    c.send(b"disconnect\n");
    c.expect_closed(SHORT);

    // Many line clients at once, interleaved.
    let mut clients: Vec<LineClient> = (0..10)
        .map(|_| LineClient::new(server.connect_raw(t), t))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("client {i}\n").as_bytes());
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.expect_line(format!("client {i}\n").as_bytes());
        c.send(b"ping\n");
        c.expect_line(b"pong\n");
    }
}

fn line_mode_framed_clients_still_work(t: Transport) {
    let server = Server::builder().arg("--line-mode").start();
    let mut c = server.handshake(t);
    c.echo(Some(TEXT_UTF8), b"framed on a line-mode listener");
    c.ping();
    // A line client alongside.
    let mut l = LineClient::new(server.connect_raw(t), t);
    l.send(b"ping\n");
    l.expect_line(b"pong\n");
    c.echo(Some(TEXT_UTF8), b"still framed");
}

fn line_mode_off_refuses_lines(t: Transport) {
    let server = Server::start();
    let mut c = server.connect(t);
    c.send(b"ping\n");
    let frames = c.expect_closed(SHORT);
    let kinds: Vec<_> = frames.iter().map(|f| f.header.kind).collect();
    assert!(
        matches!(
            kinds[..],
            [FrameType::SessionInit, FrameType::Error] | [FrameType::Error]
        ),
        "[{t:?}] expected (session_init,) error, got {:?}",
        describe(&frames)
    );
    let text = String::from_utf8_lossy(&frames.last().unwrap().content).to_lowercase();
    assert!(text.contains("magic"), "[{t:?}] error text {text:?}");
    // Framed clients are unaffected.
    server.handshake(t).echo(Some(TEXT_UTF8), b"framed");
}

/// Line mode has framed mode's limits: `--max-frame` is also the longest line.
fn line_too_long_closes(t: Transport) {
    let server = Server::builder()
        .arg("--line-mode")
        .args(["--max-frame", "1024"])
        .start();
    let mut c = LineClient::new(server.connect_raw(t), t);
    c.send(b"short\n");
    c.expect_line(b"short\n");
    // 4 KiB without a newline: refused without waiting for one.
    let long = vec![b'a'; 4096];
    let _ = c.stream.write_all(&long);
    let mut said = Vec::new();
    let deadline = std::time::Instant::now() + SHORT;
    loop {
        match c.read_line(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(l) => {
                said.push(String::from_utf8_lossy(&l).into_owned());
                assert!(said.len() < 10, "[{t:?}] too many lines: {said:?}");
            }
            Err(e) if e.is_closed() => break,
            Err(e) => panic!("[{t:?}] expected a close after an over-long line, got {e:?}"),
        }
    }
    eprintln!("[{t:?}] the server said {said:?} before closing");
    // Others are unaffected.
    let mut d = LineClient::new(server.connect_raw(t), t);
    d.send(b"ping\n");
    d.expect_line(b"pong\n");
}
