//! Chat mode: a message from one session reaches every other session, re-encoded with
//! each recipient's session id, across cores and across transports.

use sockchat_proto::FrameType;
use sockchat_testkit::*;

per_transport!(chat_delivers_to_every_other_session);

/// Receivers per transport: TCP connections are spread over the cores by the kernel's
/// SO_REUSEPORT hash, so with 16 of them the odds that all land on one core are 2^-15.
const TCP_RECEIVERS: usize = 16;
const UNIX_RECEIVERS: usize = 8;

fn chat_delivers_to_every_other_session(t: Transport) {
    // Two cores and many receivers: which core takes a connection is the kernel's choice,
    // so some receivers are on the sender's core and some are not. The server's debug log
    // at shutdown (sessions per core) confirms the premise.
    let mut server = Server::builder()
        .cores(2)
        .args(["--mode", "chat"])
        .env("RUST_LOG", "sockchat_server=debug")
        .start();
    let mut receivers: Vec<Client> = Vec::new();
    for i in 0..TCP_RECEIVERS + UNIX_RECEIVERS {
        let rt = if i % 3 == 2 {
            Transport::Unix
        } else {
            Transport::Tcp
        };
        let mut c = server.handshake(rt);
        // A round trip proves the server has registered the session.
        c.ping();
        receivers.push(c);
    }
    let mut sender = server.handshake(t);
    sender.ping();

    for (n, (ct, content)) in [
        (Some(TEXT_UTF8), "hello everyone ✓".as_bytes().to_vec()),
        (Some("image/jpeg"), pattern(70_000, 5)),
        (None, b"null content type".to_vec()),
    ]
    .into_iter()
    .enumerate()
    {
        let f = sender.frame(FrameType::Message, ct, &content);
        sender.send(&f);
        for (i, r) in receivers.iter_mut().enumerate() {
            let m = r.expect_kind(FrameType::Message, SHORT);
            assert_eq!(
                m.header.session_id.as_deref(),
                Some(r.session_id.as_str()),
                "[{t:?}] message {n} to receiver {i} must carry the receiver's session id"
            );
            assert_eq!(m.header.content_type.as_deref(), ct);
            assert!(m.content[..] == content[..], "message {n} receiver {i}");
            // Exactly what the reference would encode for that session.
            let expected = build_frame(
                &r.key,
                FrameType::Message,
                ct,
                Some(&r.session_id),
                &content,
            );
            assert!(
                m.raw[..] == expected[..],
                "message {n} receiver {i}: encoding"
            );
        }
        // The sender does not get its own message: the next thing it reads is its pong.
        sender.ping();
    }

    // Messages from a receiver reach the sender and the other receivers, not itself.
    let (first, rest) = receivers.split_first_mut().unwrap();
    let f = first.frame(FrameType::Message, Some(TEXT_UTF8), b"from receiver 0");
    first.send(&f);
    let m = sender.expect_kind(FrameType::Message, SHORT);
    assert_eq!(&m.content[..], b"from receiver 0");
    for r in rest.iter_mut() {
        let m = r.expect_kind(FrameType::Message, SHORT);
        assert_eq!(&m.content[..], b"from receiver 0");
    }
    first.ping();

    // A departed session is no longer a recipient; the others still are.
    let fds_before = proc_fds(server.pid());
    let gone = receivers.pop().unwrap();
    drop(gone);
    // The server has noticed the close once it has closed its socket.
    assert!(
        wait_until(SHORT, || proc_fds(server.pid()) < fds_before),
        "[{t:?}] the server kept the departed session's socket"
    );
    let f = sender.frame(FrameType::Message, Some(TEXT_UTF8), b"after a departure");
    sender.send(&f);
    for r in receivers.iter_mut() {
        let m = r.expect_kind(FrameType::Message, SHORT);
        assert_eq!(&m.content[..], b"after a departure");
    }
    sender.ping();

    // Premise: sessions were live on both cores when the server stopped.
    server.stop_clean();
    let per_core = sessions_per_core(&server.stderr());
    if per_core.is_empty() {
        eprintln!("no per-core session counts in the server's debug log; premise unchecked");
    } else {
        eprintln!("[{t:?}] sessions per core at shutdown: {per_core:?}");
        assert!(
            per_core.iter().filter(|&&(_, n)| n > 0).count() >= 2,
            "[{t:?}] all sessions were on one core, so nothing crossed cores: {per_core:?}"
        );
    }
}

/// `(core, sessions)` from the server's debug lines `shutting down core=C sessions=N`.
fn sessions_per_core(stderr: &str) -> Vec<(String, u64)> {
    stderr
        .lines()
        .filter(|l| l.contains("shutting down"))
        .filter_map(|l| {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .map(|v| {
                        v.trim_matches(|c: char| !c.is_ascii_alphanumeric())
                            .to_string()
                    })
            };
            let core = field("core=")?;
            let n = field("sessions=")?.parse().ok()?;
            Some((core, n))
        })
        .collect()
}
