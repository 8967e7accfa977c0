//! SIGTERM: every session gets `disconnect` "Server shutting down" after the echoes it is
//! owed, the Unix socket file is removed and the server exits 0.

use std::time::{Duration, Instant};

use sockchat_proto::FrameType;
use sockchat_testkit::*;

per_transport!(shutdown_notifies_100_clients, shutdown_idle_server);

const CLIENTS: usize = 100;

fn shutdown_notifies_100_clients(t: Transport) {
    let mut server = Server::builder().cores(2).start();
    let sock = server.unix.clone().expect("unix path");
    assert!(sock.exists());
    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| server.handshake(t)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        if i % 2 == 0 {
            c.echo(Some(TEXT_UTF8), format!("warm-up {i}").as_bytes());
        }
    }
    // One more connection still in its handshake, and one that never read session_init.
    let mut half_open = server.connect(t);
    half_open.read_init();
    let never_read = server.connect_raw(t);

    // Messages in flight as the signal lands: their echoes, if the server read them,
    // must come before the disconnect.
    let sent: Vec<Vec<u8>> = clients
        .iter_mut()
        .enumerate()
        .map(|(i, c)| {
            let f = c.frame(
                FrameType::Message,
                Some(TEXT_UTF8),
                format!("in flight {i}").as_bytes(),
            );
            c.send(&f);
            f
        })
        .collect();

    let started = Instant::now();
    server.signal(libc::SIGTERM);

    let mut echoed = 0;
    for (i, c) in clients.iter_mut().enumerate() {
        let frames = c.expect_closed(LONG);
        let (last, before) = frames
            .split_last()
            .unwrap_or_else(|| panic!("[{t:?}] client {i}: closed without a disconnect frame"));
        assert_eq!(
            last.header.kind,
            FrameType::Disconnect,
            "[{t:?}] client {i}: {:?}",
            describe(&frames)
        );
        assert_eq!(
            &last.content[..],
            SHUTDOWN_CONTENT,
            "[{t:?}] client {i}: disconnect content"
        );
        let expected = build_frame(
            &c.key,
            FrameType::Disconnect,
            Some("application/json"),
            Some(&c.session_id),
            SHUTDOWN_CONTENT,
        );
        assert!(
            last.raw[..] == expected[..],
            "[{t:?}] client {i}: disconnect is not the reference encoding"
        );
        match before {
            [] => {}
            [echo] => {
                assert!(
                    echo.raw[..] == sent[i][..],
                    "[{t:?}] client {i}: the frame before the disconnect is not the owed echo: {:?}",
                    describe(&frames)
                );
                echoed += 1;
            }
            _ => panic!(
                "[{t:?}] client {i}: too many frames {:?}",
                describe(&frames)
            ),
        }
    }
    eprintln!("[{t:?}] {echoed}/{CLIENTS} in-flight messages echoed before the disconnect");

    // The half-open session is closed too (a disconnect is optional before an ack).
    let frames = half_open.expect_closed(LONG);
    assert!(
        frames
            .iter()
            .all(|f| matches!(f.header.kind, FrameType::Disconnect | FrameType::Error)),
        "{:?}",
        describe(&frames)
    );
    drop(never_read);

    let status = server.wait_exit(EXIT).unwrap_or_else(|| {
        panic!(
            "server did not exit after SIGTERM\n{}",
            server.diagnostics()
        )
    });
    assert!(
        status.success(),
        "exit status {status}\n{}",
        server.diagnostics()
    );
    eprintln!("[{t:?}] shutdown took {:?}", started.elapsed());
    assert!(
        !sock.exists(),
        "Unix socket file {} left behind",
        sock.display()
    );
}

fn shutdown_idle_server(t: Transport) {
    let mut server = Server::builder()
        .cores(2)
        .args(["--shutdown-grace", "2s"])
        .start();
    let sock = server.unix.clone().expect("unix path");
    server.handshake(t).ping();
    let started = Instant::now();
    server.stop_clean();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "an idle server took {:?} to stop",
        started.elapsed()
    );
    assert!(!sock.exists(), "Unix socket file left behind");
    // The process is gone, so its TCP listener is too (connecting to the old port is not a
    // reliable check on a shared machine: another process may bind it at once). The Unix
    // path, which is ours alone, must refuse.
    assert!(std::os::unix::net::UnixStream::connect(&sock).is_err());
}
