//! Unix socket files at startup and shutdown: a stale file is replaced, a live one makes
//! startup fail without disturbing its owner, `--unix-mode`, repeatable listeners.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};

use sockchat_proto::Key;
use sockchat_testkit::*;

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sockchat-test-")
        .tempdir()
        .unwrap()
}

#[test]
fn stale_socket_file_is_replaced() {
    let dir = temp_dir();
    let path = dir.path().join("stale.sock");
    // A listener that died without unlinking its file.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    // A child being spawned by a parallel test may hold the listener's fd between fork
    // and exec for a moment: wait (bounded) until the file refuses connections.
    let deadline = std::time::Instant::now() + SHORT;
    while UnixStream::connect(&path).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stale file must refuse connections"
        );
        // Poll interval of that bounded wait.
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut server = Server::builder().unix_path(&path).start();
    let mut c = server.handshake(Transport::Unix);
    c.echo(Some(TEXT_UTF8), b"on a replaced socket");
    server.stop_clean();
    assert!(!path.exists(), "socket file not removed at shutdown");
}

#[test]
fn live_socket_file_is_refused() {
    let dir = temp_dir();
    let path = dir.path().join("live.sock");
    let owner = UnixListener::bind(&path).unwrap();
    let (status, stderr, _server) = Server::builder().unix_path(&path).start_expect_failure();
    assert!(!status.success(), "startup must fail on a live socket");
    let lower = stderr.to_lowercase();
    assert!(
        lower.contains("already in use") || lower.contains("live"),
        "stderr does not say the socket is in use: {stderr}"
    );
    // The owner's socket is untouched and still reachable.
    assert!(path.exists(), "the live socket file was removed");
    owner.set_nonblocking(false).unwrap();
    let _client = UnixStream::connect(&path).expect("the owner still listens");
    let (_conn, _) = owner.accept().unwrap();
}

#[test]
fn second_server_on_the_same_path_fails() {
    let a = Server::builder().no_tcp().start();
    let path = a.unix.clone().unwrap();
    let (status, stderr, _b) = Server::builder()
        .no_tcp()
        .unix_path(&path)
        .start_expect_failure();
    assert!(!status.success());
    let lower = stderr.to_lowercase();
    assert!(
        lower.contains("already in use") || lower.contains("live"),
        "stderr: {stderr}"
    );
    assert!(
        path.exists(),
        "the second server removed the first one's socket"
    );
    let mut c = a.handshake(Transport::Unix);
    c.echo(Some(TEXT_UTF8), b"first server unaffected");
}

#[test]
fn unix_mode_is_applied() {
    let server = Server::builder().args(["--unix-mode", "660"]).start();
    let path = server.unix.clone().unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket file mode {mode:o}");
    server.handshake(Transport::Unix).ping();
}

#[test]
fn repeated_listeners_all_serve() {
    let dir = temp_dir();
    let second = dir.path().join("second.sock");
    let mut server = Server::builder()
        .args(["--tcp", "127.0.0.1:0"])
        .arg("--unix")
        .arg(&second)
        .start();
    assert_eq!(server.tcp_all.len(), 2, "two `listening tcp` lines");
    assert_eq!(server.unix_all.len(), 2, "two `listening unix` lines");
    assert_ne!(server.tcp_all[0], server.tcp_all[1]);
    assert!(server.unix_all.contains(&second));
    for addr in server.tcp_all.clone() {
        let s = std::net::TcpStream::connect(addr).expect("TCP listener");
        let mut c = Client::new(Stream::Tcp(s), Transport::Tcp, Key::reference_default());
        c.handshake();
        c.echo(Some(TEXT_UTF8), format!("via {addr}").as_bytes());
    }
    for path in server.unix_all.clone() {
        let s = UnixStream::connect(&path).expect("Unix listener");
        let mut c = Client::new(Stream::Unix(s), Transport::Unix, Key::reference_default());
        c.handshake();
        c.echo(Some(TEXT_UTF8), b"via unix");
    }
    server.stop_clean();
    assert!(!second.exists(), "second socket file not removed");
    assert!(!server.configured_unix_path().unwrap().exists());
}
