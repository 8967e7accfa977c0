//! The `sockchat-client` binary against the real `sockchat-server`, over TCP and Unix:
//! file and interactive modes, `--send` of 20 MiB, a retry across a server restart,
//! and the shutdown reason.
//!
//! The server binary is found or built on first use (`sockchat_testkit::server_binary`).

mod support;

use std::path::Path;
use std::time::Duration;

use sockchat_client::Addr;
use sockchat_testkit::process::{run, text, Running};
use sockchat_testkit::pty::PtyChild;
use sockchat_testkit::{pattern, wait_until, write_key_file, NotifySocket, Server, SHORT};
use support::client;

const LIMIT: Duration = Duration::from_secs(60);

/// A real server on `tcp` (e.g. `127.0.0.1:0`) and a Unix socket at `unix`.
fn real_server(tcp: &str, unix: &Path) -> Server {
    real_server_with(tcp, unix, &[])
}

/// [`real_server`] with extra command-line arguments.
fn real_server_with(tcp: &str, unix: &Path, extra: &[&str]) -> Server {
    Server::builder()
        .tcp_addr(tcp)
        .unix_path(unix)
        .args(extra.iter().copied())
        .start()
}

/// The server's TCP listener, as the client names it.
fn tcp_addr(server: &Server) -> Addr {
    Addr::Tcp(server.tcp.expect("a TCP listener").to_string())
}

/// The server's Unix socket, as the client names it.
fn unix_addr(server: &Server) -> Addr {
    Addr::Unix(server.unix.clone().expect("a Unix listener"))
}

fn messages_file(dir: &Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("messages.txt");
    std::fs::write(&p, body).unwrap();
    p
}

fn file_mode(addr: &Addr, dir: &Path) {
    let f = messages_file(dir, "Hello Server\n\nHow are you?\nexit\nignored\n");
    let mut cmd = client(addr);
    cmd.arg("file").arg(&f);
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "< Hello Server\n< How are you?\n");
}

fn interactive(addr: &Addr) {
    let mut cmd = client(addr);
    cmd.arg("interactive");
    let mut pty = PtyChild::spawn(cmd);
    pty.expect("> ", LIMIT);
    pty.type_str("hello real server\r");
    pty.expect("< hello real server", LIMIT);
    pty.type_str("exit\r");
    assert!(pty.wait(LIMIT).success(), "{}", pty.output());
}

fn send_20_mib(addr: &Addr, dir: &Path) {
    let p = dir.join("big.bin");
    std::fs::write(&p, pattern(20 << 20, 99)).unwrap();
    let mut cmd = client(addr);
    cmd.arg("--send").arg(&p).args(["--retries", "0"]);
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("(20971520 bytes, application/octet-stream): echo verified"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn both_modes_over_tcp_and_unix() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = real_server("127.0.0.1:0", &dir.path().join("s.sock"));
    for addr in [tcp_addr(&server), unix_addr(&server)] {
        file_mode(&addr, dir.path());
        interactive(&addr);
    }
    assert!(server.terminate_within(LIMIT).success());
}

/// `--send` of 20 MiB: more than one frame, so it travels as chunks and its echo comes
/// back as chunks. The server's send queue limit is raised to hold the whole echo (see
/// the next test for the default).
#[test]
fn send_a_20_mib_file_over_tcp_and_unix() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let mut server = real_server_with("127.0.0.1:0", &sock, &["--send-queue-limit", "64M"]);
    send_20_mib(&tcp_addr(&server), dir.path());
    send_20_mib(&unix_addr(&server), dir.path());
    assert!(server.terminate_within(LIMIT).success());
}

/// The same with the server's defaults.
#[test]
fn send_a_20_mib_file_with_default_server_limits() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = real_server("127.0.0.1:0", &dir.path().join("s.sock"));
    send_20_mib(&tcp_addr(&server), dir.path());
    assert!(server.terminate_within(LIMIT).success());
}

/// Echo lines seen in a file-mode client's stdout.
fn echoes(s: &str) -> usize {
    s.lines().filter(|l| l.starts_with("< ")).count()
}

fn restart_mid_file(use_unix: bool) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let mut server = real_server("127.0.0.1:0", &sock);
    let addr = if use_unix {
        unix_addr(&server)
    } else {
        tcp_addr(&server)
    };
    let tcp = server.tcp.expect("a TCP listener").to_string();
    let body: String = (1..=10).map(|i| format!("line {i}\n")).collect();
    let f = messages_file(dir.path(), &body);
    let mut cmd = client(&addr);
    cmd.arg("file")
        .arg(&f)
        .args(["--interval", "100ms", "--retries", "10"]);
    let running = Running::spawn(cmd);
    assert!(
        wait_until(LIMIT, || echoes(&running.stdout()) >= 3),
        "timed out waiting for three echoes"
    );
    assert!(server.terminate_within(LIMIT).success(), "graceful exit");
    assert!(
        wait_until(LIMIT, || {
            running
                .stderr()
                .contains("server disconnected: Server shutting down")
        }),
        "timed out waiting for the shutdown reason"
    );
    // Down for a moment: a retry hits the closed port or the missing socket (the second
    // retry is announced only once the first reconnect has failed).
    assert!(
        wait_until(LIMIT, || running.stderr().contains("retry 2/10")),
        "timed out waiting for a failed reconnect"
    );
    let _server = real_server(&tcp, &sock);
    let (status, stdout, stderr) = running.wait(LIMIT);
    assert!(status.success(), "{stderr}");
    let expected: String = (1..=10).map(|i| format!("< line {i}\n")).collect();
    assert_eq!(stdout, expected, "every line echoed once, in order");
    assert!(stderr.contains("retry 1/10"), "{stderr}");
}

#[test]
fn file_mode_resumes_after_a_server_restart_over_tcp() {
    restart_mid_file(false);
}

#[test]
fn file_mode_resumes_after_a_server_restart_over_unix() {
    restart_mid_file(true);
}

#[test]
fn interactive_prints_the_shutdown_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = real_server("127.0.0.1:0", &dir.path().join("s.sock"));
    let mut cmd = client(&unix_addr(&server));
    cmd.args(["interactive", "--retries", "0"]);
    let mut pty = PtyChild::spawn(cmd);
    pty.expect("> ", LIMIT);
    pty.type_str("before shutdown\r");
    pty.expect("< before shutdown", LIMIT);
    assert!(server.terminate_within(LIMIT).success());
    let status = pty.wait(LIMIT);
    assert_eq!(status.code(), Some(1), "{}", pty.output());
    let out = pty.output();
    assert!(
        out.contains("sockchat-client: server disconnected: Server shutting down"),
        "{out}"
    );
}

#[test]
fn key_file_is_read_as_the_server_reads_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "a shared secret\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key_arg = key.to_str().unwrap();
    let sock = dir.path().join("s.sock");
    let mut server = real_server_with("127.0.0.1:0", &sock, &["--key-file", key_arg]);
    let f = messages_file(dir.path(), "signed\n");

    let mut cmd = client(&unix_addr(&server));
    cmd.env("SOCKCHAT_KEY_FILE", &key).arg("file").arg(&f);
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "< signed\n");

    // The default key cannot talk to it, and retrying would not help.
    let mut cmd = client(&tcp_addr(&server));
    cmd.env_remove("SOCKCHAT_KEY_FILE").arg("file").arg(&f);
    let out = run(cmd, LIMIT);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "no retries: {stderr}");
    assert!(
        stderr.starts_with("sockchat-client: handshake failed"),
        "{stderr}"
    );
    assert!(server.terminate_within(LIMIT).success());
}

/// The rotation steps of the README ("Key rotation") on a running server: a client whose
/// key file holds the new key and the old one completes a session at every step,
/// whichever key the server signs `session_init` with; a client holding the old key
/// alone cannot once the server signs with the new one.
#[test]
fn a_key_ring_connects_through_a_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let server_keys = dir.path().join("server-keys");
    write_key_file(&server_keys, b"key-one\n", 0o600);
    // Step 1: clients get the new key first, the old one second.
    let ring = dir.path().join("client-keys");
    write_key_file(&ring, b"key-two\nkey-one\n", 0o600);
    let old_only = dir.path().join("old-key");
    write_key_file(&old_only, b"key-one\n", 0o600);
    let mut notify = NotifySocket::bind(dir.path());
    let mut server = Server::builder()
        .tcp_addr("127.0.0.1:0")
        .arg("--key-file")
        .arg(&server_keys)
        .env("NOTIFY_SOCKET", &notify.path)
        .start();
    notify.expect("READY=1", SHORT);
    let f = messages_file(dir.path(), "signed\n");
    let addr = tcp_addr(&server);
    let send = |keys: &Path| {
        let mut cmd = client(&addr);
        cmd.env("SOCKCHAT_KEY_FILE", keys)
            .args(["--retries", "0", "file"])
            .arg(&f);
        run(cmd, LIMIT)
    };
    let completes = |out: std::process::Output, step: &str| {
        assert!(out.status.success(), "{step}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "< signed\n", "{step}");
    };
    completes(send(&ring), "server on the old key");
    completes(send(&old_only), "server on the old key, old key alone");

    // Step 2: the server signs with the new key and still accepts the old one.
    write_key_file(&server_keys, b"key-two\nkey-one\n", 0o600);
    notify.reload(&mut server);
    completes(send(&ring), "server signing with the new key");
    let out = send(&old_only);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("sockchat-client: handshake failed"),
        "{stderr}"
    );

    // Step 3: the old key removed from the server.
    write_key_file(&server_keys, b"key-two\n", 0o600);
    notify.reload(&mut server);
    completes(send(&ring), "server on the new key alone");
    assert!(server.terminate_within(LIMIT).success());
}

/// Against a chat server nothing comes back to the sender: with `--no-echo`, interactive
/// mode sees the other session's message, and `exit` leaves at once with status 0.
#[test]
fn interactive_no_echo_against_a_chat_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = real_server_with(
        "127.0.0.1:0",
        &dir.path().join("s.sock"),
        &["--mode", "chat"],
    );
    let mut cmd = client(&unix_addr(&server));
    cmd.args(["interactive", "--no-echo", "--retries", "0"]);
    let mut pty = PtyChild::spawn(cmd);
    pty.expect("> ", LIMIT);
    // A second participant, over TCP: its line reaches the interactive session.
    let mut other = client(&tcp_addr(&server));
    other.args(["interactive", "--no-echo", "--retries", "0"]);
    let mut other = PtyChild::spawn(other);
    other.expect("> ", LIMIT);
    other.type_str("hello from the other side\r");
    pty.expect("hello from the other side", LIMIT);
    pty.type_str("nobody echoes this\r");
    other.expect("nobody echoes this", LIMIT);
    pty.type_str("exit\r");
    assert_eq!(pty.wait(LIMIT).code(), Some(0), "{}", pty.output());
    other.type_str("exit\r");
    assert_eq!(other.wait(LIMIT).code(), Some(0), "{}", other.output());
}
