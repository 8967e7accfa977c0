//! CPU time of this process (getrusage) and of another one (`/proc/PID/stat`), so a run
//! can state what each message cost the load generator and the server.

use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// User and system CPU time consumed so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    /// User time.
    pub user: Duration,
    /// System (kernel) time.
    pub sys: Duration,
}

impl CpuTimes {
    /// Time spent from `earlier` to `self`.
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            sys: self.sys.saturating_sub(earlier.sys),
        }
    }

    /// User plus system.
    pub fn total(self) -> Duration {
        self.user + self.sys
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
}

/// This process's CPU time, all threads (microsecond resolution).
pub fn self_times() -> io::Result<CpuTimes> {
    // SAFETY: getrusage only writes the struct we pass; zeroed is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a live rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(CpuTimes {
        user: timeval(ru.ru_utime),
        sys: timeval(ru.ru_stime),
    })
}

/// CPU time of this process's waited-for children (all of them, since it started).
pub fn children_times() -> io::Result<CpuTimes> {
    // SAFETY: getrusage only writes the struct we pass; zeroed is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a live rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(CpuTimes {
        user: timeval(ru.ru_utime),
        sys: timeval(ru.ru_stime),
    })
}

/// Another process's CPU time from `/proc/PID/stat` (all threads; clock-tick resolution,
/// usually 10 ms, so short runs of a busy server are still meaningful but coarse).
pub fn pid_times(pid: u32) -> io::Result<CpuTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&stat).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad stat"))
}

fn parse_stat(stat: &str) -> Option<CpuTimes> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the name start at field 3 (state); utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tck = if tck > 0 { tck as u64 } else { 100 };
    let to_dur = |t: u64| Duration::from_nanos(t * 1_000_000_000 / tck);
    Some(CpuTimes {
        user: to_dur(utime),
        sys: to_dur(stime),
    })
}

/// CPU figures of a run, over the load phase (warm-up, measurement and drain).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CpuReport {
    /// Seconds the load phase lasted (wall clock).
    pub wall_s: f64,
    /// Messages completed during the load phase (the denominator below).
    pub messages: u64,
    /// loadgen user CPU seconds.
    pub loadgen_user_s: f64,
    /// loadgen system CPU seconds.
    pub loadgen_sys_s: f64,
    /// loadgen CPU (user + sys) nanoseconds per message.
    pub loadgen_cpu_ns_per_msg: Option<f64>,
    /// The `--server-pid` process, if given.
    pub server_pid: Option<u32>,
    /// Server user CPU seconds.
    pub server_user_s: Option<f64>,
    /// Server system CPU seconds.
    pub server_sys_s: Option<f64>,
    /// Server CPU nanoseconds per message.
    pub server_cpu_ns_per_msg: Option<f64>,
}

impl CpuReport {
    /// Builds the report from the CPU spent by loadgen and (optionally) the server.
    pub fn new(
        wall: Duration,
        messages: u64,
        loadgen: CpuTimes,
        server_pid: Option<u32>,
        server: Option<CpuTimes>,
    ) -> Self {
        let per_msg =
            |t: CpuTimes| (messages > 0).then(|| t.total().as_nanos() as f64 / messages as f64);
        Self {
            wall_s: wall.as_secs_f64(),
            messages,
            loadgen_user_s: loadgen.user.as_secs_f64(),
            loadgen_sys_s: loadgen.sys.as_secs_f64(),
            loadgen_cpu_ns_per_msg: per_msg(loadgen),
            server_pid,
            server_user_s: server.map(|s| s.user.as_secs_f64()),
            server_sys_s: server.map(|s| s.sys.as_secs_f64()),
            server_cpu_ns_per_msg: server.and_then(per_msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        let t = parse_stat(line).unwrap();
        // SAFETY: no preconditions.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(t.user, Duration::from_nanos(250 * 1_000_000_000 / tck));
        assert_eq!(t.sys, Duration::from_nanos(50 * 1_000_000_000 / tck));
        assert!(pid_times(std::process::id()).is_ok());
        assert!(self_times().is_ok());
    }
}
