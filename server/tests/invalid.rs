//! Every `invalid[]` reference vector gets an `error` frame naming the failure and a close,
//! while another session on the same core keeps echoing.

use std::net::Shutdown;

use sockchat_proto::{FrameType, Key};
use sockchat_testkit::*;

per_transport!(
    invalid_vectors_after_handshake,
    invalid_vectors_instead_of_ack,
    garbage_before_handshake,
);

/// What the error text must mention for each vector's `error` kind.
fn needle(kind: &str) -> &'static str {
    match kind {
        "bad_magic" => "magic",
        "unsupported_version" => "version",
        "header_crc_mismatch" | "content_crc_mismatch" => "crc",
        "hmac_mismatch" => "hmac",
        "bad_header_json" => "json",
        "unknown_type" => "type",
        "empty_content" => "empty",
        "header_too_large" | "content_too_large" => "too large",
        other => panic!("no expectation for vector error kind {other:?}"),
    }
}

/// One `invalid[]` vector: its name, error kind, the key it is to be checked with (the
/// receiver's key: `wrong_key` is a frame signed with the default key, checked with another
/// one), and its bytes.
#[derive(Debug)]
struct Case {
    name: String,
    kind: String,
    key: Vec<u8>,
    bytes: Vec<u8>,
}

fn invalid_cases() -> Vec<Case> {
    let v = vectors();
    let cases: Vec<_> = v["invalid"]
        .as_array()
        .expect("invalid[]")
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            kind: c["error"].as_str().unwrap().to_string(),
            key: b64(&c["key_b64"]),
            bytes: b64(&c["frame_b64"]),
        })
        .collect();
    assert!(
        cases.len() >= 12,
        "expected the 12 reference invalid vectors"
    );
    cases
}

/// A server keyed with `key` (the default key needs no key file).
fn keyed_server(key: &[u8]) -> Server {
    // One core, so the bystander shares the core with every refused connection.
    let b = Server::builder().cores(1);
    if key == b"default-key" {
        return b.start();
    }
    let (dir, path) = key_file_dir(key, 0o600);
    b.dir(dir).arg("--key-file").arg(path).start()
}

fn keyed_client(server: &Server, t: Transport, key: &[u8]) -> Client {
    let mut c = Client::new(server.connect_raw(t), t, Key::new(key));
    c.handshake();
    c
}

fn invalid_vectors_after_handshake(t: Transport) {
    let cases = invalid_cases();
    let mut keys: Vec<&[u8]> = cases.iter().map(|c| &c.key[..]).collect();
    keys.sort();
    keys.dedup();
    let mut checked = 0;
    for key in keys {
        let server = keyed_server(key);
        let mut bystander = keyed_client(&server, t, key);
        bystander.echo(Some(TEXT_UTF8), b"before");
        for case in cases.iter().filter(|c| c.key == key) {
            let Case {
                name, kind, bytes, ..
            } = case;
            let mut c = keyed_client(&server, t, key);
            c.echo(Some(TEXT_UTF8), b"established");
            c.send(bytes);
            if kind == "truncated" {
                // Only detectable at end of input: close our write side; the server must
                // close too (an error frame is optional) without harming anyone else.
                c.stream.shutdown(Shutdown::Write).unwrap();
                let frames = c.expect_closed(SHORT);
                assert!(
                    frames.iter().all(|f| f.header.kind == FrameType::Error),
                    "[{t:?}] {name}: unexpected frames {:?}",
                    describe(&frames)
                );
            } else {
                let text = c.expect_error_and_close(needle(kind));
                eprintln!("[{t:?}] {name}: {text}");
            }
            bystander.echo(Some(TEXT_UTF8), format!("after {name}").as_bytes());
            checked += 1;
        }
        bystander.ping();
        keyed_client(&server, t, key).ping();
    }
    assert_eq!(checked, cases.len());
}

fn invalid_vectors_instead_of_ack(t: Transport) {
    for case in invalid_cases() {
        let Case {
            name,
            kind,
            key,
            bytes,
        } = case;
        if kind == "truncated" {
            continue; // covered after the handshake
        }
        let server = keyed_server(&key);
        let mut bystander = keyed_client(&server, t, &key);
        let mut c = Client::new(server.connect_raw(t), t, Key::new(&key));
        c.read_init();
        c.send(&bytes);
        // The decode error is found before the handshake is judged, so it is named.
        let frames = c.expect_closed(SHORT);
        let err = frames
            .iter()
            .find(|f| f.header.kind == FrameType::Error)
            .unwrap_or_else(|| panic!("[{t:?}] {name}: no error frame: {:?}", describe(&frames)));
        let text = String::from_utf8_lossy(&err.content).to_lowercase();
        assert!(
            text.contains(needle(&kind)) || text.contains("invalid session acknowledgment"),
            "[{t:?}] {name}: error text {text:?}"
        );
        bystander.echo(Some(TEXT_UTF8), format!("after {name}").as_bytes());
    }
}

fn garbage_before_handshake(t: Transport) {
    let server = Server::builder().cores(1).start();
    let mut bystander = server.handshake(t);
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0u8; 100][..],
        &[0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A][..], // the PNG magic, close but wrong
    ] {
        let mut c = server.connect(t);
        c.read_init();
        c.send(junk);
        c.expect_error_and_close("magic");
        bystander.echo(Some(TEXT_UTF8), b"still here");
    }
}
