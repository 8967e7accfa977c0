//! The requests an io_uring instance holds, as `/proc/PID/fdinfo/FD` lists them: every
//! request armed on a file's readiness (a receive waiting for data, an accept, a
//! `POLL_ADD`) is one `op=N` line under `PollList:`.

use std::collections::BTreeMap;

use io_uring::opcode;
use serde::{Deserialize, Serialize};

/// One io_uring instance of a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingState {
    /// Its descriptor in the process.
    pub fd: u32,
    /// Armed requests by opcode name (`RECV`, `POLL_ADD`, ...; `op N` for others).
    pub pending: BTreeMap<String, u64>,
    /// Of those, receives (`RECV`, `RECVMSG`, `READ`, `READV`).
    pub pending_receives: u64,
    /// Of those, `POLL_ADD`s (readiness only: the bytes then move by syscall).
    pub pending_polls: u64,
}

/// The opcode's name (from the `io-uring` crate's constants, not a table of our own).
fn op_name(op: u8) -> String {
    let known = [
        (opcode::PollAdd::CODE, "POLL_ADD"),
        (opcode::Accept::CODE, "ACCEPT"),
        (opcode::Recv::CODE, "RECV"),
        (opcode::RecvMsg::CODE, "RECVMSG"),
        (opcode::Read::CODE, "READ"),
        (opcode::Readv::CODE, "READV"),
        (opcode::Send::CODE, "SEND"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::Write::CODE, "WRITE"),
        (opcode::Writev::CODE, "WRITEV"),
        (opcode::Timeout::CODE, "TIMEOUT"),
        (opcode::Connect::CODE, "CONNECT"),
    ];
    known
        .iter()
        .find(|(code, _)| *code == op)
        .map_or_else(|| format!("op {op}"), |(_, name)| (*name).to_string())
}

/// Parses one fdinfo text.
pub fn parse(fd: u32, text: &str) -> RingState {
    let mut pending = BTreeMap::new();
    let (mut receives, mut polls) = (0, 0);
    let list = text
        .lines()
        .skip_while(|l| !l.starts_with("PollList:"))
        .skip(1)
        .take_while(|l| l.starts_with(char::is_whitespace));
    for line in list {
        let Some(op) = line
            .trim()
            .strip_prefix("op=")
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.trim().parse::<u8>().ok())
        else {
            continue;
        };
        *pending.entry(op_name(op)).or_insert(0) += 1;
        if [
            opcode::Recv::CODE,
            opcode::RecvMsg::CODE,
            opcode::Read::CODE,
            opcode::Readv::CODE,
        ]
        .contains(&op)
        {
            receives += 1;
        } else if op == opcode::PollAdd::CODE {
            polls += 1;
        }
    }
    RingState {
        fd,
        pending,
        pending_receives: receives,
        pending_polls: polls,
    }
}

/// Every io_uring instance of process `pid`.
pub fn of_process(pid: u32) -> std::io::Result<Vec<RingState>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let e = e?;
        let Ok(fd) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A descriptor closed since the listing is no longer a ring of the process.
        let Ok(link) = std::fs::read_link(e.path()) else {
            continue;
        };
        if !link.to_string_lossy().contains("io_uring") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
            continue;
        };
        out.push(parse(fd, &text));
    }
    out.sort_by_key(|r| r.fd);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An fdinfo as kernel 6.18 prints it (abridged).
    const FDINFO: &str = "pos:\t0\nSqHead:\t11\nSQEs:\t0\nCQEs:\t0\nUserBufs:\t0\nPollList:\n  op=27, task_works=0\n  op=27, task_works=0\n  op=13, task_works=0\n  op=6, task_works=0\n  op=99, task_works=0\nCqOverflowList:\nNAPI:\tdisabled\n";

    #[test]
    fn armed_requests_are_counted_by_opcode() {
        let r = parse(5, FDINFO);
        assert_eq!(r.fd, 5);
        assert_eq!(r.pending["RECV"], 2);
        assert_eq!(r.pending["ACCEPT"], 1);
        assert_eq!(r.pending["POLL_ADD"], 1);
        assert_eq!(r.pending["op 99"], 1);
        assert_eq!((r.pending_receives, r.pending_polls), (2, 1));
    }

    #[test]
    fn a_ring_with_nothing_armed_has_no_requests() {
        let r = parse(3, "SqHead:\t0\nPollList:\nCqOverflowList:\n");
        assert!(r.pending.is_empty());
        assert_eq!((r.pending_receives, r.pending_polls), (0, 0));
    }

    #[test]
    fn this_process_rings_are_found() {
        let ring = io_uring::IoUring::new(8).unwrap();
        let found = of_process(std::process::id()).unwrap();
        use std::os::fd::AsRawFd;
        assert!(
            found.iter().any(|r| r.fd == ring.as_raw_fd() as u32),
            "{found:?}"
        );
    }
}
