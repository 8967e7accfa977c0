//! Configuration that changes what is on the wire: the key file (flag and environment),
//! its permission check, and the JSON log format.

use std::path::PathBuf;

use sockchat_proto::{FrameType, Key};
use sockchat_testkit::*;

const SECRET: &[u8] = b"integration-test-secret-0123456789";

fn key_dir(mode: u32) -> (tempfile::TempDir, PathBuf) {
    key_file_dir(SECRET, mode)
}

fn check_keyed_server(server: &Server, t: Transport) {
    // A client with the same key talks; one with the default key cannot even verify
    // session_init.
    let mut c = Client::new(server.connect_raw(t), t, Key::new(SECRET));
    c.handshake();
    c.echo(Some(TEXT_UTF8), b"keyed");
    c.ping();

    let mut wrong = server.connect(t);
    match wrong.read_frame(SHORT) {
        Err(ReadError::Decode(e)) => assert_eq!(e.kind(), "hmac_mismatch"),
        other => panic!(
            "[{t:?}] a default-key client must fail the HMAC, got {:?}",
            other.map(|f| describe(&[f]))
        ),
    }
    // And a frame signed with the default key is refused by the server.
    let mut c2 = Client::new(server.connect_raw(t), t, Key::new(SECRET));
    c2.handshake();
    let forged = build_frame(
        &Key::reference_default(),
        FrameType::Message,
        Some(TEXT_UTF8),
        Some(&c2.session_id),
        b"forged",
    );
    c2.send(&forged);
    // The error frame is signed with the server's key, which c2 has.
    c2.expect_error_and_close("hmac");
}

per_transport!(key_file_flag, key_file_env);

fn key_file_flag(t: Transport) {
    let (dir, path) = key_dir(0o600);
    let server = Server::builder()
        .dir(dir)
        .arg("--key-file")
        .arg(&path)
        .start();
    check_keyed_server(&server, t);
}

fn key_file_env(t: Transport) {
    let (dir, path) = key_dir(0o400);
    let server = Server::builder()
        .dir(dir)
        .env("SOCKCHAT_KEY_FILE", &path)
        .start();
    check_keyed_server(&server, t);
}

#[test]
fn key_file_readable_by_others_is_refused() {
    for mode in [0o644, 0o640, 0o604] {
        let (dir, path) = key_dir(mode);
        let (status, stderr, _s) = Server::builder()
            .dir(dir)
            .arg("--key-file")
            .arg(&path)
            .start_expect_failure();
        assert!(
            !status.success(),
            "mode {mode:o}: startup must fail; stderr: {stderr}"
        );
        assert!(
            !stderr.contains(std::str::from_utf8(SECRET).unwrap()),
            "the key must never be logged"
        );
    }
}

#[test]
fn json_logs() {
    let mut server = Server::builder().args(["--log-format", "json"]).start();
    let mut c = server.handshake(Transport::Unix);
    c.echo(Some(TEXT_UTF8), b"log me");
    drop(c);
    server.stop_clean();
    let stderr = server.stderr();
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
        assert!(v.is_object(), "{line}");
    }
}
