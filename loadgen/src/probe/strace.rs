//! System calls a running process makes while a load runs: `strace -c -f` attached to
//! every thread of the process (by PID, so the probed server starts as it always does),
//! detached with SIGINT after the load, its summary table parsed.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::bench::BenchError;

/// The receive and send family: the calls that move bytes between a socket and memory.
const RECV_SEND: &[&str] = &[
    "recv", "recvfrom", "recvmsg", "recvmmsg", "send", "sendto", "sendmsg", "sendmmsg", "read",
    "readv", "write", "writev",
];

/// What strace counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyscallCount {
    /// Calls by name.
    pub calls: BTreeMap<String, u64>,
    /// All of them.
    pub total: u64,
    /// Those of the receive/send family (`recv*`, `send*`, `read*`, `write*`).
    pub recv_send_family: u64,
}

/// Parses strace's `-c` summary (`% time  seconds  usecs/call  calls  errors  syscall`;
/// the errors column is empty for calls that never failed).
pub fn parse_summary(text: &str) -> SyscallCount {
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // At least: % time, seconds, usecs/call, calls, name; numbers first.
        if cols.len() < 5 || cols[0].parse::<f64>().is_err() {
            continue;
        }
        let name = cols[cols.len() - 1];
        if name == "total" || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if let Ok(n) = cols[3].parse::<u64>() {
            calls.insert(name.to_string(), n);
        }
    }
    let total = calls.values().sum();
    let recv_send_family = calls
        .iter()
        .filter(|(k, _)| RECV_SEND.contains(&k.as_str()))
        .map(|(_, v)| v)
        .sum();
    SyscallCount {
        calls,
        total,
        recv_send_family,
    }
}

/// strace attached to a process.
#[derive(Debug)]
pub struct Attached {
    child: Child,
    summary: PathBuf,
}

/// Attaches `strace -c -f` to `pid` (with `-f`, strace seizes every thread of the
/// process, "attached with N threads", and those it starts later); returns once strace
/// says so (or fails after 10 s).
pub fn attach(strace: &Path, pid: u32, dir: &Path) -> Result<Attached, BenchError> {
    let summary = dir.join(format!("strace-{pid}.txt"));
    let log = dir.join(format!("strace-{pid}.log"));
    let err = File::create(&log).map_err(|e| BenchError::io(&log, e))?;
    let child = Command::new(strace)
        .args(["-c", "-f", "-o"])
        .arg(&summary)
        .arg("-p")
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .map_err(|e| BenchError::spawn(&strace.display().to_string(), e))?;
    let mut a = Attached { child, summary };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        if said.contains(&format!("Process {pid} attached")) {
            return Ok(a);
        }
        if Instant::now() >= deadline || matches!(a.child.try_wait(), Ok(Some(_))) {
            a.interrupt();
            let _ = a.child.wait();
            return Err(BenchError::Timeout(format!(
                "strace did not attach to {pid}: {said}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Attached {
    fn interrupt(&self) {
        // SAFETY: kill(2) on the PID of our own child strace, not yet reaped (callers
        // wait for it only after this), so the PID is still its.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
    }

    /// Detaches (SIGINT: strace leaves the process running and writes its summary) and
    /// reads the counts.
    pub fn detach(mut self) -> Result<SyscallCount, BenchError> {
        self.interrupt();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(BenchError::Timeout("strace did not detach in 20 s".into()));
                }
            }
        }
        let text =
            std::fs::read_to_string(&self.summary).map_err(|e| BenchError::io(&self.summary, e))?;
        Ok(parse_summary(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// strace 6.1's `-c` table.
    const SUMMARY: &str = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 88.02    0.101562          23      4321           io_uring_enter
  6.00    0.006922           5      1200        12 recvfrom
  3.00    0.003461           3       900           sendmsg
  2.00    0.002307           2       800           futex
  0.98    0.001130          11       100         4 write
------ ----------- ----------- --------- --------- ----------------
100.00    0.115382          15      7321        16 total
";

    #[test]
    fn summary_counts_calls_and_the_recv_send_family() {
        let c = parse_summary(SUMMARY);
        assert_eq!(c.calls["io_uring_enter"], 4321);
        assert_eq!(c.calls["recvfrom"], 1200);
        assert_eq!(c.total, 7321);
        assert_eq!(c.recv_send_family, 1200 + 900 + 100);
    }
}
