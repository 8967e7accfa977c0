//! Key rotation with SIGHUP over real sockets: the new key works without a restart,
//! existing sessions go on with theirs, a removed key is refused, and a bad key file on
//! reload keeps the old keys.

use sockchat_proto::{FrameType, Key};
use sockchat_testkit::*;

/// Connects; reads `session_init` verifying it with `init_key`; acks with `ack_key`.
fn session(server: &Server, t: Transport, init_key: &str, ack_key: &str) -> Client {
    let mut c = Client::new(server.connect_raw(t), t, Key::new(init_key.as_bytes()));
    c.read_init();
    c.key = Key::new(ack_key.as_bytes());
    let ack = c.ack_frame(None);
    c.send(&ack);
    c
}

#[test]
fn rotate_keys_with_sighup() {
    let dir = tempfile::Builder::new()
        .prefix("sockchat-test-")
        .tempdir()
        .unwrap();
    let keys = dir.path().join("keys");
    write_key_file(&keys, b"key-one\n", 0o600);
    let mut notify = NotifySocket::bind(dir.path());
    let mut server = Server::builder()
        .arg("--key-file")
        .arg(&keys)
        .env("NOTIFY_SOCKET", &notify.path)
        .dir(dir)
        .start();
    notify.expect("READY=1", SHORT);
    let t = Transport::Tcp;
    let mut old = session(&server, t, "key-one", "key-one");
    old.echo(Some(TEXT_UTF8), b"before the rotation");

    // Step 2 of the rotation: the new key first, the old one still accepted.
    write_key_file(&keys, b"key-two\nkey-one\n", 0o600);
    notify.reload(&mut server);
    let mut new = session(&server, t, "key-two", "key-two");
    new.echo(Some(TEXT_UTF8), b"signed with the new key");
    // A client still acking with the old key is accepted and answered with it.
    let mut late = session(&server, Transport::Unix, "key-two", "key-one");
    late.echo(Some(TEXT_UTF8), b"old key, new session");
    // The session from before goes on.
    old.echo(Some(TEXT_UTF8), b"during the rotation");

    // Step 3: the old key removed: new sessions with it are refused.
    write_key_file(&keys, b"key-two\n", 0o600);
    notify.reload(&mut server);
    let mut refused = session(&server, t, "key-two", "key-one");
    refused.key = Key::new(b"key-two");
    refused.expect_error_and_close("hmac");
    // Sessions that started with it go on until they end.
    old.echo(Some(TEXT_UTF8), b"after the removal");
    late.echo(Some(TEXT_UTF8), b"after the removal too");
    new.echo(Some(TEXT_UTF8), b"new key still");

    // A bad file on reload (readable by others) keeps the keys in force.
    write_key_file(&keys, b"key-three\n", 0o644);
    notify.reload(&mut server);
    assert!(
        server.stderr().contains("reload failed"),
        "{}",
        server.stderr()
    );
    let mut still = session(&server, t, "key-two", "key-two");
    still.echo(Some(TEXT_UTF8), b"old keys kept");
    // An empty one too.
    write_key_file(&keys, b"\n", 0o600);
    notify.reload(&mut server);
    let mut still = session(&server, t, "key-two", "key-two");
    still.echo(Some(TEXT_UTF8), b"still kept");
    let mut three = Client::new(server.connect_raw(t), t, Key::new(b"key-three"));
    let f = three.read_frame(SHORT);
    assert!(
        f.is_err(),
        "session_init must not verify with a key never loaded: {f:?}"
    );

    let bye = old.frame(
        FrameType::Disconnect,
        Some("application/json"),
        CLIENT_DISCONNECT_CONTENT,
    );
    old.send(&bye);
    old.expect_closed(SHORT);
    server.stop_clean();
}
