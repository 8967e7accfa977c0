//! How much CPU processes other than the server and loadgen used during one loadgen run,
//! in percent of the machine: each run's noise indicator, and what the quick check's
//! quiet-machine rule reads.

use crate::cpu::{children_times, pid_times};

/// (busy, total) jiffies of the whole machine from the first line of `/proc/stat`.
/// Steal counts as busy (the hypervisor gave the time to someone else); irq and softirq
/// time are left out of both, since loopback networking of our own processes is mostly
/// accounted there.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().next()?;
    let mut f = line.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let mut v = [0u64; 8];
    for (slot, field) in v.iter_mut().zip(f) {
        *slot = field.parse().ok()?;
    }
    let [user, nice, system, idle, iowait, _irq, _softirq, steal] = v;
    let busy = user + nice + system + steal;
    Some((busy, busy + idle + iowait))
}

fn machine_jiffies() -> Option<(u64, u64)> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Seconds of CPU used by the server (by PID) and by this process's reaped children.
fn ours_s(server_pid: u32) -> f64 {
    let srv = pid_times(server_pid).map_or(0.0, |t| t.total().as_secs_f64());
    let kids = children_times().map_or(0.0, |t| t.total().as_secs_f64());
    srv + kids
}

/// Readings at the start of a run.
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    server_pid: u32,
    machine: Option<(u64, u64)>,
    ours_s: f64,
}

impl Meter {
    /// Reads the counters now.
    pub fn start(server_pid: u32) -> Self {
        Self {
            server_pid,
            machine: machine_jiffies(),
            ours_s: ours_s(server_pid),
        }
    }

    /// Other processes' share of the machine's CPU since [`Meter::start`], percent to
    /// one decimal. Call after the loadgen child was waited for (its CPU time reaches
    /// the children's rusage only then).
    pub fn other_cpu_pct(&self) -> Option<f64> {
        let (b0, t0) = self.machine?;
        let (b1, t1) = machine_jiffies()?;
        let ours = (ours_s(self.server_pid) - self.ours_s) * clock_ticks();
        other_share(
            b1.saturating_sub(b0) as f64,
            t1.saturating_sub(t0) as f64,
            ours,
        )
    }
}

/// `busy - ours` as a percentage of `total` (all in jiffies), to one decimal.
pub fn other_share(busy: f64, total: f64, ours: f64) -> Option<f64> {
    if total <= 0.0 {
        return None;
    }
    Some(((busy - ours).max(0.0) * 100.0 / total * 10.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_and_total() {
        let text = "cpu  100 5 50 800 20 7 3 10 0 0\ncpu0 1 2 3 4\n";
        // busy = user + nice + system + steal; total adds idle and iowait, not irq.
        assert_eq!(parse_proc_stat(text), Some((165, 985)));
        assert_eq!(parse_proc_stat("intr 1 2 3"), None);
        assert!(machine_jiffies().is_some());
    }

    #[test]
    fn share_of_others() {
        assert_eq!(other_share(50.0, 200.0, 40.0), Some(5.0));
        // Our own processes can be charged a tick more than the machine counted.
        assert_eq!(other_share(50.0, 200.0, 60.0), Some(0.0));
        assert_eq!(other_share(10.0, 0.0, 0.0), None);
        assert_eq!(other_share(1.0, 3.0, 0.0), Some(33.3));
    }
}
