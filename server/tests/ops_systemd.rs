//! systemd integration: the `sd_notify` datagrams on a `NOTIFY_SOCKET` the test binds,
//! the watchdog, and the shipped unit file checked by `systemd-analyze verify`.

use std::path::Path;
use std::process::Command;

use sockchat_testkit::*;

#[test]
fn ready_reloading_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::Builder::new()
        .prefix("sockchat-test-")
        .tempdir()
        .unwrap();
    let mut notify = NotifySocket::bind(dir.path());
    let mut server = Server::builder()
        .cores(2)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "300000")
        .dir(dir)
        .start();
    let ready = notify.expect("READY=1", SHORT);
    assert!(ready.contains("STATUS="), "{ready:?}");
    // READY=1 comes once the listeners accept: a session works right away.
    let mut c = server.handshake(Transport::Tcp);
    c.echo(Some(TEXT_UTF8), b"after READY=1");
    notify.expect("WATCHDOG=1", SHORT);

    server.signal(libc::SIGHUP);
    notify.expect("RELOADING=1", SHORT);
    let reloading = notify.position("RELOADING=1").unwrap();
    // The READY=1 that ends the reload comes after RELOADING=1.
    notify.expect_from(reloading + 1, "READY=1", SHORT);
    assert!(notify.seen[reloading].contains("MONOTONIC_USEC="));
    c.echo(Some(TEXT_UTF8), b"the session survives the reload");

    server.signal(libc::SIGTERM);
    notify.expect("STOPPING=1", SHORT);
    let st = server.wait_exit(EXIT).expect("exit");
    assert!(st.success());
}

fn verify(unit: &Path) -> Option<String> {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .ok()?;
    let diag = String::from_utf8_lossy(&out.stderr).into_owned();
    // Only what concerns this unit (the tool may also grumble about the host).
    let name = unit.file_name().unwrap().to_string_lossy().into_owned();
    let mine: Vec<&str> = diag.lines().filter(|l| l.contains(&name)).collect();
    Some(
        mine.join("\n")
            + if out.status.success() {
                ""
            } else {
                "\n(exit status non-zero)"
            },
    )
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let tool = Command::new("systemd-analyze").arg("--version").output();
    if !tool.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("systemd-analyze is not installed here: unit file not verified");
        return;
    }
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/sockchat-server.service"
    ))
    .expect("deploy/sockchat-server.service");
    assert!(unit.contains("Type=notify"));
    assert!(unit.contains("WatchdogSec="));
    // verify checks that ExecStart's binary exists: point it at the one under test.
    let unit = unit.replace(
        "/usr/local/bin/sockchat-server",
        env!("CARGO_BIN_EXE_sockchat-server"),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sockchat-server.service");
    std::fs::write(&path, &unit).unwrap();
    let diag = verify(&path).expect("run systemd-analyze");
    assert!(diag.trim().is_empty(), "systemd-analyze verify: {diag}");

    // The same check does see a broken unit.
    std::fs::write(&path, unit.replace("Type=notify", "Type=notify-bogus")).unwrap();
    let diag = verify(&path).expect("run systemd-analyze");
    assert!(
        diag.contains("notify-bogus") || diag.contains("service type"),
        "{diag:?}"
    );
}
