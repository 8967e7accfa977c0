//! Logs written to a file carry no ANSI escape codes (only a terminal gets colours),
//! in both formats, and `--log-level` (or `log_level` in the config file) sets the
//! filter.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the server with stderr to a file (no NO_COLOR, no terminal), waits for
/// `ready`, sends SIGTERM, returns what it logged.
fn logs_of(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sockchat-server"))
        .args(["--tcp", "127.0.0.1:0", "--cores", "1"])
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l == "ready" => break,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "no ready: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    }
    // SAFETY: kill(2) on our own unreaped child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let st = child.wait().unwrap();
    assert!(st.success());
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn a_log_file_has_no_escape_codes() {
    for format in ["text", "json"] {
        let text = logs_of(&["--log-format", format]);
        assert!(text.contains("ready"), "{text}");
        assert!(
            !text.contains('\u{1b}'),
            "{format} log to a file holds escape codes: {text:?}"
        );
    }
}

#[test]
fn log_level_sets_the_filter() {
    let quiet = logs_of(&["--log-level", "warn"]);
    assert!(!quiet.contains("INFO"), "{quiet}");
    let loud = logs_of(&["--log-level", "debug"]);
    assert!(loud.contains("DEBUG"), "{loud}");
}
