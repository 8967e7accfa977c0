//! `loadgen probe` end to end: it starts the server, holds idle connections, reads RSS
//! and the rings' fdinfo, and traces an echo load with strace, against loadgen's raw
//! server (its io_uring data ring engine) and against sockchat-server.

#[path = "support/bins.rs"]
mod bins;

use bins::bin_dir;
use std::process::Command;

use loadgen::probe::{ProbeReport, ProbeServer};

fn probe(server: &str, extra: &[&str]) -> ProbeReport {
    let tmp = tempfile::tempdir().unwrap();
    let bin = bin_dir(tmp.path());
    let json = tmp.path().join("probe.json");
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["probe", "--server", server, "--idle", "20,40"])
        .args([
            "--echo-seconds",
            "0.5",
            "--server-cpu",
            "0",
            "--loadgen-cpu",
            "0",
        ])
        .arg("--bin-dir")
        .arg(&bin)
        .arg("--json")
        .arg(&json)
        .args(extra)
        .output()
        .unwrap();
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("system calls per message"), "{said}");
    let r: ProbeReport = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    r
}

/// What holds for any server: both levels read with their connections open, an echo
/// load traced with messages and system calls counted, a verdict per target.
fn check_common(r: &ProbeReport) {
    let conns: Vec<usize> = r.idle.iter().map(|l| l.connections).collect();
    assert_eq!(conns, [20, 40]);
    let e = r.echo.as_ref().expect("traced echo");
    assert!(e.messages > 0 && e.errors == 0, "{e:?}");
    assert!(e.syscalls.total > 0, "{e:?}");
    assert!(e.syscalls.calls.values().sum::<u64>() == e.syscalls.total);
    assert_eq!(r.verdicts.len(), 3, "{:?}", r.verdicts);
    // Every idle connection has something armed for it: a receive or a poll.
    let armed0: u64 = r
        .rings_before
        .iter()
        .map(|x| x.pending_receives + x.pending_polls)
        .sum();
    for l in &r.idle {
        let armed = l.pending_receives() + l.pending_polls();
        assert!(armed >= armed0 + l.connections as u64, "{l:?}");
    }
}

#[test]
fn probe_of_the_raw_ring_engine_sees_armed_receives_and_no_polls() {
    let r = probe(
        "raw",
        &[
            "--server-arg=--engine",
            "--server-arg=ring",
            "--server-arg=--ring",
            "--server-arg=defer",
        ],
    );
    assert_eq!(r.server, ProbeServer::Raw);
    check_common(&r);
    // The ring engine arms one multishot receive per idle connection, no poll.
    for v in r.verdicts.iter().filter(|v| v.target.contains("idle")) {
        assert!(v.met, "{v:?}");
    }
}

#[test]
fn probe_of_sockchat_server_reads_its_sessions() {
    let r = probe("sockchat", &[]);
    assert_eq!(r.server, ProbeServer::Sockchat);
    check_common(&r);
}
