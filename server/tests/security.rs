//! Security properties from server/SECURITY.md, checked against the real binary:
//! - the key never appears in logs (any level, both formats), `--help`/`--version`
//!   output, startup errors or any byte the server sends (error frames included);
//! - key files that group or others can access are refused with a clear one-line
//!   message (flag and environment; symlinks are judged by their target);
//! - the Unix socket's mode and owner are in force before the first connection can be
//!   accepted.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sockchat_proto::{FrameType, Key};
use sockchat_testkit::*;

const SECRET: &[u8] = b"h7-Sekr1t-do-not-log-3f9a0c27e5b1";

/// Every form of the secret a careless log line could contain.
fn forms() -> Vec<Vec<u8>> {
    let hex: String = SECRET.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        SECRET.to_vec(),
        hex.clone().into_bytes(),
        hex.to_uppercase().into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(SECRET)
            .into_bytes(),
        format!("{:?}", SECRET).into_bytes(),
    ]
}

fn assert_no_secret(what: &str, bytes: &[u8]) {
    for f in forms() {
        assert!(
            !bytes.windows(f.len()).any(|w| w == &f[..]),
            "{what} contains the key (as {:?})",
            String::from_utf8_lossy(&f)
        );
    }
}

/// Reads everything a connection receives until it closes (bounded), raw.
fn drain_raw(c: &mut Client, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut all = Vec::new();
    let mut buf = [0u8; 16384];
    while Instant::now() < deadline {
        c.stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match c.stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if is_closed_error(&e) => break,
            Err(_) => {}
        }
    }
    all
}

fn key_never_leaks(format: &str) {
    let (dir, path) = key_file_dir(SECRET, 0o600);
    let mut server = Server::builder()
        .dir(dir)
        .arg("--key-file")
        .arg(&path)
        .args(["--log-format", format])
        .env("RUST_LOG", "trace")
        .start();
    let key = Key::new(SECRET);
    let mut received = Vec::new();
    for t in TRANSPORTS {
        // A good session.
        let mut c = Client::new(server.connect_raw(t), t, key.clone());
        c.handshake();
        c.echo(Some(TEXT_UTF8), b"hello");
        c.ping();
        // A forged frame (default key): error frame, then the close.
        let mut f = Client::new(server.connect_raw(t), t, key.clone());
        f.handshake();
        let forged = build_frame(
            &Key::reference_default(),
            FrameType::Message,
            Some(TEXT_UTF8),
            Some(&f.session_id),
            b"forged",
        );
        f.send(&forged);
        received.extend(drain_raw(&mut f, SHORT));
        // Garbage, a bad ack, a foreign id: more error frames.
        let mut g = server.connect(t);
        g.send(b"\x89PNG garbage");
        received.extend(drain_raw(&mut g, SHORT));
        let mut b = Client::new(server.connect_raw(t), t, key.clone());
        b.read_init();
        b.session_id = "not-mine".into();
        let ack = b.ack_frame(None);
        b.send(&ack);
        received.extend(drain_raw(&mut b, SHORT));
        // A client with the wrong key sees only frames signed with the right one.
        let mut w = server.connect(t);
        received.extend(drain_raw(&mut w, Duration::from_millis(300)));
    }
    assert!(!received.is_empty(), "the server sent nothing to check");
    assert_no_secret("bytes sent by the server", &received);
    server.stop_clean();
    let log = server.stderr();
    assert!(
        log.lines().count() > 10,
        "expected a trace log, got:\n{log}"
    );
    assert_no_secret(&format!("the {format} trace log"), log.as_bytes());
}

#[test]
fn key_never_in_text_trace_logs_or_frames() {
    key_never_leaks("text");
}

#[test]
fn key_never_in_json_trace_logs_or_frames() {
    key_never_leaks("json");
}

fn run(args: &[&std::ffi::OsStr], env_key: Option<&Path>) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockchat-server"));
    cmd.args(args).stdin(Stdio::null());
    cmd.env("NO_COLOR", "1").env_remove("SOCKCHAT_KEY_FILE");
    if let Some(p) = env_key {
        cmd.env("SOCKCHAT_KEY_FILE", p);
    }
    // Only commands that exit at once (help, version, refused startup) run here; the
    // timeout guards against a server that would start anyway.
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + STARTUP;
    loop {
        if let Some(_st) = child.try_wait().expect("wait") {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sockchat-server {args:?} did not exit");
        }
        // Poll interval of the bounded wait for the exit.
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn key_never_in_help_version_or_startup_errors() {
    let (dir, path) = key_file_dir(SECRET, 0o600);
    let p = path.as_os_str();
    for args in [
        vec!["--help".as_ref()],
        vec!["-h".as_ref()],
        vec!["--key-file".as_ref(), p, "--help".as_ref()],
        vec!["--version".as_ref()],
    ] {
        let (_, out, err) = run(&args, Some(&path));
        assert!(!out.is_empty(), "{args:?}: no output");
        assert_no_secret(
            &format!("`sockchat-server {args:?}` stdout"),
            out.as_bytes(),
        );
        assert_no_secret(
            &format!("`sockchat-server {args:?}` stderr"),
            err.as_bytes(),
        );
    }
    // A startup error after the key was read (an impossible listener).
    let bad_dir = dir.path().join("missing-dir").join("s.sock");
    let (ok, out, err) = run(
        &[
            "--key-file".as_ref(),
            p,
            "--unix".as_ref(),
            bad_dir.as_os_str(),
        ],
        None,
    );
    assert!(!ok, "startup must fail: {out}{err}");
    assert_no_secret("the startup error", err.as_bytes());
    assert_no_secret("stdout of a failed startup", out.as_bytes());
}

/// Modes that give group or others any access are refused, by flag and by environment,
/// with a one-line `error:` naming the file and the problem; 0600 and 0400 are accepted.
/// A symlink (whose own mode is always 0777) is judged by the file it points to.
#[test]
fn key_files_accessible_by_group_or_others_are_refused() {
    for mode in [
        0o640, 0o604, 0o644, 0o660, 0o666, 0o610, 0o601, 0o620, 0o602,
    ] {
        let (dir, path) = key_file_dir(SECRET, mode);
        for via_env in [false, true] {
            let sock = dir.path().join("s.sock");
            let mut args: Vec<&std::ffi::OsStr> = vec!["--unix".as_ref(), sock.as_os_str()];
            if !via_env {
                args.extend(["--key-file".as_ref(), path.as_os_str()]);
            }
            let (ok, out, err) = run(&args, via_env.then_some(path.as_path()));
            let how = if via_env {
                "SOCKCHAT_KEY_FILE"
            } else {
                "--key-file"
            };
            assert!(!ok, "mode {mode:o} via {how}: startup must fail");
            assert!(!out.contains("ready"), "mode {mode:o}: {out}");
            let line = err.trim();
            assert_eq!(
                line.lines().count(),
                1,
                "mode {mode:o}: one line expected: {err}"
            );
            assert!(line.starts_with("error: "), "mode {mode:o}: {line}");
            assert!(
                line.contains(&path.display().to_string())
                    && line.contains("group or others")
                    && line.contains(&format!("{mode:o}")),
                "mode {mode:o} via {how}: unclear message: {line}"
            );
            assert_no_secret("the key file error", err.as_bytes());
        }
    }
    // Accepted modes (a server that starts), and symlinks judged by their target.
    for mode in [0o600, 0o400] {
        let (dir, path) = key_file_dir(SECRET, mode);
        let link = dir.path().join("link-to-key");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let mut s = Server::builder()
            .dir(dir)
            .no_tcp()
            .arg("--key-file")
            .arg(&link)
            .start();
        let mut c = Client::new(
            s.connect_raw(Transport::Unix),
            Transport::Unix,
            Key::new(SECRET),
        );
        c.handshake();
        c.ping();
        s.stop_clean();
    }
    let (dir, path) = key_file_dir(SECRET, 0o644);
    let link = dir.path().join("link-to-open-key");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let (ok, _, err) = run(&["--key-file".as_ref(), link.as_os_str()], None);
    assert!(
        !ok && err.contains("group or others"),
        "symlink to a 0644 key: {err}"
    );
}

/// Races connects against startup: the first connect that succeeds (possible only after
/// `listen`) must already see the configured mode and our uid/gid on the socket file, and
/// every stat of the file while the server starts shows nothing looser than the umask
/// default followed by the configured mode (never more permissive than either).
fn socket_mode_and_owner_before_first_accept(mode: u32) {
    let dir = tempfile::Builder::new()
        .prefix("sockchat-test-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("raced.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let (p2, stop2) = (path.clone(), stop.clone());
    let racer = thread::spawn(move || {
        // Bounded: ends on the first connection or after STARTUP.
        let deadline = Instant::now() + STARTUP;
        while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
            if let Ok(s) = std::os::unix::net::UnixStream::connect(&p2) {
                let meta = std::fs::symlink_metadata(&p2).expect("stat after connect");
                return Some((
                    s,
                    meta.permissions().mode() & 0o7777,
                    meta.uid(),
                    meta.gid(),
                ));
            }
            thread::yield_now();
        }
        None
    });
    let mut server = Server::builder()
        .dir(dir)
        .no_tcp()
        .unix_path(&path)
        .args(["--unix-mode", &format!("{mode:o}")])
        .start();
    stop.store(true, Ordering::Relaxed);
    let (stream, seen_mode, uid, gid) = racer
        .join()
        .unwrap()
        .expect("the racing client never connected");
    // SAFETY: plain getters.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    eprintln!("first connect saw mode {seen_mode:o}, owner {uid}:{gid}");
    assert_eq!(seen_mode, mode, "mode seen by the first connection");
    assert_eq!(
        (uid, gid),
        (euid, egid),
        "owner seen by the first connection"
    );
    // That first connection is served.
    let mut c = Client::new(
        Stream::Unix(stream),
        Transport::Unix,
        Key::reference_default(),
    );
    c.handshake();
    c.ping();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, mode);
    server.stop_clean();
    assert!(!path.exists(), "socket file not removed");
}

#[test]
fn unix_socket_mode_0600_and_owner_before_first_accept() {
    socket_mode_and_owner_before_first_accept(0o600);
}

#[test]
fn unix_socket_mode_0660_and_owner_before_first_accept() {
    socket_mode_and_owner_before_first_accept(0o660);
}
