//! `--config` TOML files and `--check-config`, against the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use sockchat_testkit::*;

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("sockchat.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn check_config(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sockchat-server"))
        .arg("--check-config")
        .args(args)
        .env_remove("SOCKCHAT_KEY_FILE")
        .output()
        .expect("run sockchat-server --check-config");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn listeners_and_limits_come_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("from-file.sock");
    let cfg = write_config(
        dir.path(),
        &format!(
            "# sockchat-server settings\ntcp = [\"127.0.0.1:0\"]\nunix = [\"{}\"]\n\
             max_sessions = 1\nunix_mode = \"600\"\nhandshake_timeout = \"3s\"\n",
            sock.display()
        ),
    );
    let mut server = Server::builder()
        .no_tcp()
        .no_unix()
        .arg("--config")
        .arg(&cfg)
        .start();
    assert_eq!(server.unix.as_deref(), Some(sock.as_path()));
    assert!(server.tcp.is_some());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "unix_mode from the file");
    let _one = server.handshake(Transport::Unix);
    let mut two = server.connect(Transport::Tcp);
    two.expect_error_and_close("Server full");
    server.stop_clean();
}

#[test]
fn the_command_line_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "max_sessions = 1\ntcp = [\"127.0.0.1:1\"]\n");
    // --max-sessions and --tcp on the command line replace the file's values (the
    // file's TCP address, port 1, could not be bound by this test).
    let mut server = Server::builder()
        .arg("--config")
        .arg(&cfg)
        .args(["--max-sessions", "3"])
        .start();
    assert_ne!(server.tcp.unwrap().port(), 1);
    let _a = server.handshake(Transport::Tcp);
    let _b = server.handshake(Transport::Unix);
    let _c = server.handshake(Transport::Tcp);
    let mut d = server.connect(Transport::Unix);
    d.expect_error_and_close("Server full");
    server.stop_clean();
}

#[test]
fn an_unknown_key_is_an_error_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "max_sessions = 5\nmax_sesions_per_peer = 2\n");
    let (status, stderr, _s) = Server::builder()
        .arg("--config")
        .arg(&cfg)
        .start_expect_failure();
    assert!(!status.success());
    assert!(
        stderr.contains("unknown key `max_sesions_per_peer`"),
        "{stderr}"
    );
}

#[test]
fn check_config_validates_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, b"k1\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let good = write_config(
        dir.path(),
        &format!(
            "tcp = [\"0.0.0.0:9999\"]\nkey_file = \"{}\"\nmax_sessions_per_peer = 10\n\
             max_messages_per_sec = 100\nmemory_budget = \"256M\"\nadmin = \"127.0.0.1:9100\"\n\
             proxy_protocol = true\nlog_level = \"info,sockchat_server=debug\"\n",
            key.display()
        ),
    );
    let (ok, out) = check_config(&["--config", good.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("valid"), "{out}");

    // A value its flag refuses, named by the flag.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "max_frame = \"11M\"\n").unwrap();
    let (ok, out) = check_config(&["--config", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("--max-frame"), "{out}");
    // A wrong TOML type.
    std::fs::write(&bad, "line_mode = \"yes\"\n").unwrap();
    let (ok, out) = check_config(&["--config", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        out.contains("line_mode") && out.contains("true or false"),
        "{out}"
    );
    // Not TOML at all.
    std::fs::write(&bad, "max_sessions = \n").unwrap();
    let (ok, out) = check_config(&["--config", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("not valid TOML"), "{out}");
    // A key file others can read.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = check_config(&["--config", good.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("chmod 600"), "{out}");
    // The default key off loopback.
    let (ok, out) = check_config(&["--tcp", "0.0.0.0:9999"]);
    assert!(!ok);
    assert!(out.contains("default key"), "{out}");
    // A missing file.
    let (ok, out) = check_config(&["--config", "/nonexistent/sockchat.toml"]);
    assert!(!ok);
    assert!(out.contains("cannot read config file"), "{out}");
}
