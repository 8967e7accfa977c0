//! The `sockchat-client` binary against the in-test echo server: file mode, `--send`,
//! retries and resume, the shutdown reason, and interactive mode on a pseudo-terminal.

mod support;

use std::time::Duration;

use sockchat_client::Addr;
use sockchat_testkit::echo_double::EchoDouble;
use sockchat_testkit::process::{run, text, Running};
use sockchat_testkit::pty::PtyChild;
use sockchat_testkit::{pattern, wait_until};
use support::client;

const LIMIT: Duration = Duration::from_secs(60);

fn messages_file(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("messages.txt");
    std::fs::write(&p, body).unwrap();
    p
}

fn file_mode(addr: &Addr) {
    let dir = tempfile::tempdir().unwrap();
    let f = messages_file(
        dir.path(),
        "Hello Server\n\n   \nHow are you?\n{\"k\": 1}\nexit\nnever sent\n",
    );
    let mut cmd = client(addr);
    cmd.arg("file").arg(&f);
    let out = run(cmd, LIMIT);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "< Hello Server\n< How are you?\n< {\"k\": 1}\n");
    assert!(stderr.contains("3 of 3 messages echoed"), "{stderr}");
}

#[test]
fn file_mode_over_tcp() {
    let server = EchoDouble::tcp();
    file_mode(&server.addr);
    assert_eq!(server.received().len(), 3);
}

#[test]
fn file_mode_over_unix_with_an_interval() {
    let dir = tempfile::tempdir().unwrap();
    let server = EchoDouble::unix(dir.path().join("s.sock"));
    let f = messages_file(dir.path(), "one\ntwo\nthree\n");
    let mut cmd = client(&server.addr);
    cmd.arg("file").arg(&f).args(["--interval", "50ms"]);
    let started = std::time::Instant::now();
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(text(&out.stdout), "< one\n< two\n< three\n");
}

#[test]
fn a_dropped_connection_resumes_at_the_first_unechoed_line() {
    let server = EchoDouble::tcp();
    // The 3rd message kills the connection before its echo is sent.
    *server.shared.drop_on_message.lock().unwrap() = Some(3);
    let dir = tempfile::tempdir().unwrap();
    let f = messages_file(dir.path(), "l1\nl2\nl3\nl4\nl5\n");
    let mut cmd = client(&server.addr);
    cmd.arg("file").arg(&f).args(["--interval", "20ms"]);
    let out = run(cmd, LIMIT);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(text(&out.stdout), "< l1\n< l2\n< l3\n< l4\n< l5\n");
    assert!(stderr.contains("connection lost"), "{stderr}");
    assert!(stderr.contains("retry 1/5"), "{stderr}");
    let got: Vec<_> = server.received().iter().map(|b| text(b)).collect();
    assert_eq!(
        got,
        ["l1", "l2", "l3", "l3", "l4", "l5"],
        "l3 is sent again, nothing is lost"
    );
    assert_eq!(
        server
            .shared
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
}

#[test]
fn file_mode_survives_a_server_restart_and_prints_the_reason() {
    let mut server = EchoDouble::tcp();
    let dir = tempfile::tempdir().unwrap();
    let body: String = (1..=8).map(|i| format!("m{i}\n")).collect();
    let f = messages_file(dir.path(), &body);
    let mut cmd = client(&server.addr);
    cmd.arg("file")
        .arg(&f)
        .args(["--interval", "100ms", "--retries", "10"]);
    let running = Running::spawn(cmd);
    assert!(
        wait_until(LIMIT, || server.received().len() >= 3),
        "timed out waiting for three messages"
    );
    server.shutdown();
    // Down for a moment: the second retry is announced once the first reconnect failed.
    assert!(
        wait_until(LIMIT, || running.stderr().contains("retry 2/10")),
        "timed out waiting for a failed reconnect"
    );
    server.start_again();
    let (status, stdout, stderr) = running.wait(LIMIT);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("server disconnected: Server shutting down"),
        "{stderr}"
    );
    let expected: String = (1..=8).map(|i| format!("< m{i}\n")).collect();
    assert_eq!(stdout, expected);
}

#[test]
fn without_retries_the_shutdown_reason_is_the_exit_reason() {
    let mut server = EchoDouble::tcp();
    let dir = tempfile::tempdir().unwrap();
    let f = messages_file(dir.path(), "a\nb\nc\nd\ne\nf\n");
    let mut cmd = client(&server.addr);
    cmd.arg("file")
        .arg(&f)
        .args(["--interval", "100ms", "--retries", "0"]);
    let runner = std::thread::spawn(move || run(cmd, LIMIT));
    assert!(
        wait_until(LIMIT, || server.received().len() >= 2),
        "timed out waiting for two messages"
    );
    server.shutdown();
    let out = runner.join().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(last.starts_with("sockchat-client: "), "{stderr}");
    assert!(
        last.contains("server disconnected: Server shutting down"),
        "{stderr}"
    );
    assert!(last.contains("messages echoed"), "{stderr}");
}

#[test]
fn no_server_exhausts_the_retries_with_a_one_line_reason() {
    let dir = tempfile::tempdir().unwrap();
    let addr = Addr::Unix(dir.path().join("nobody.sock"));
    let f = messages_file(dir.path(), "hello\n");
    let mut cmd = client(&addr);
    cmd.arg("file").arg(&f).args(["--retries", "2"]);
    let out = run(cmd, LIMIT);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "two retry notes and the reason: {stderr}");
    assert!(lines[0].contains("retry 1/2"), "{stderr}");
    assert!(
        lines[2].starts_with("sockchat-client: cannot connect to unix "),
        "{stderr}"
    );
    assert!(lines[2].ends_with("(gave up after 2 retries)"), "{stderr}");
}

fn send_20_mib(addr: &Addr) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.bin");
    std::fs::write(&p, pattern(20 << 20, 42)).unwrap();
    let mut cmd = client(addr);
    cmd.arg("--send")
        .arg(&p)
        .args(["--content-type", "application/x-test"]);
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("(20971520 bytes, application/x-test): echo verified"),
        "{stdout}"
    );
}

#[test]
fn send_a_20_mib_file_over_tcp() {
    let server = EchoDouble::tcp();
    send_20_mib(&server.addr);
}

#[test]
fn send_a_20_mib_file_over_unix() {
    let dir = tempfile::tempdir().unwrap();
    let server = EchoDouble::unix(dir.path().join("s.sock"));
    send_20_mib(&server.addr);
}

fn interactive(addr: &Addr) -> PtyChild {
    let mut cmd = client(addr);
    cmd.arg("interactive");
    let pty = PtyChild::spawn(cmd);
    pty.expect("> ", LIMIT);
    pty
}

#[test]
fn interactive_on_a_terminal_echoes_and_exits_cleanly() {
    let server = EchoDouble::tcp();
    let mut pty = interactive(&server.addr);
    pty.type_str("hello there\r");
    pty.expect("< hello there", LIMIT);
    // A bracketed paste arrives in one piece.
    pty.paste("\x1b[200~pasted line\x1b[201~");
    pty.expect("pasted line", LIMIT);
    pty.type_str("\r");
    pty.expect("< pasted line", LIMIT);
    pty.type_str("exit\r");
    let status = pty.wait(LIMIT);
    assert!(status.success(), "{}", pty.output());
    assert_eq!(server.received().len(), 2);
}

#[test]
fn a_message_arriving_while_typing_prints_above_the_line() {
    let server = EchoDouble::tcp();
    let mut pty = interactive(&server.addr);
    pty.type_str("half a li");
    *server.shared.inject.lock().unwrap() = Some("news from the server".into());
    pty.expect("< news from the server", LIMIT);
    // The prompt and the partial line are drawn again below the message.
    assert!(
        wait_until(LIMIT, || {
            let out = pty.output();
            let after = &out[out.find("< news from the server").unwrap()..];
            after.contains("> ") && after.contains("half a li")
        }),
        "timed out waiting for the line redrawn"
    );
    pty.type_str("ne\r");
    pty.expect("< half a line", LIMIT);
    pty.type_str("exit\r");
    assert!(pty.wait(LIMIT).success(), "{}", pty.output());
    let got: Vec<_> = server.received().iter().map(|b| text(b)).collect();
    assert_eq!(got, ["half a line"]);
}

#[test]
fn interactive_over_unix_leaves_on_ctrl_d() {
    let dir = tempfile::tempdir().unwrap();
    let server = EchoDouble::unix(dir.path().join("s.sock"));
    let mut pty = interactive(&server.addr);
    pty.type_str("via unix\r");
    pty.expect("< via unix", LIMIT);
    pty.type_str("\x04");
    assert!(pty.wait(LIMIT).success(), "{}", pty.output());
}

#[test]
fn interactive_ctrl_c_forces_quit() {
    let server = EchoDouble::tcp();
    let mut pty = interactive(&server.addr);
    pty.type_str("\x03");
    let status = pty.wait(LIMIT);
    assert_eq!(status.code(), Some(130), "{}", pty.output());
}

#[test]
fn interactive_prints_the_shutdown_reason_and_reconnects() {
    let mut server = EchoDouble::tcp();
    let mut cmd = client(&server.addr);
    cmd.args(["interactive", "--retries", "10"]);
    let mut pty = PtyChild::spawn(cmd);
    pty.expect("> ", LIMIT);
    server.shutdown();
    pty.expect("server disconnected: Server shutting down", LIMIT);
    server.start_again();
    pty.expect("reconnected", LIMIT);
    pty.type_str("after restart\r");
    pty.expect("< after restart", LIMIT);
    pty.type_str("exit\r");
    assert!(pty.wait(LIMIT).success(), "{}", pty.output());
}

#[test]
fn interactive_with_piped_input_works_too() {
    let server = EchoDouble::tcp();
    let mut cmd = client(&server.addr);
    cmd.arg("interactive").stdin(std::process::Stdio::piped());
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"piped one\npiped two\n").unwrap();
    } // EOF: leave after the echoes
    assert!(
        wait_until(LIMIT, || child.try_wait().unwrap().is_some()),
        "client did not exit"
    );
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("< piped one\n< piped two\n"),
        "{}",
        text(&out.stdout)
    );
}
