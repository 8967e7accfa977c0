//! `--memory-budget`: one server-wide bound on the memory peers can make the server hold
//! (partial large frames, partial chunked messages, send queues), split into equal
//! per-core shares so that checking and charging it is a plain `Cell` on the core's own
//! thread: no lock, no shared cache line on the hot path.
//!
//! The rule itself (refuse a reservation larger than what is left, before reserving it)
//! is the session's, in `sockchat_proto`; a core tells each session how much is left of
//! its share before feeding it input, and charges what the session then holds.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Default `--memory-budget`: a quarter of the memory this process may use (physical
/// memory, or the cgroup's `memory.max` when that is lower).
pub fn default_budget() -> u64 {
    let physical = physical_memory().unwrap_or(4 << 30);
    let limit = cgroup_limit().map_or(physical, |c| c.min(physical));
    (limit / 4).max(64 << 20)
}

fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads system constants.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages > 0 && page > 0).then(|| pages as u64 * page as u64)
}

/// cgroup v2 `memory.max` of this process's cgroup (what a container limit sets).
fn cgroup_limit() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let path = format!("/sys/fs/cgroup{}/memory.max", rel.trim_end());
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// One core's share of the budget and what it holds now. Only its core writes it; the
/// published copy is what the admin thread reads for `/metrics`.
#[derive(Debug)]
pub(crate) struct CoreBudget {
    share: Cell<u64>,
    used: Cell<u64>,
    published: Arc<AtomicU64>,
}

impl CoreBudget {
    /// `budget / cores`, publishing usage into `published`.
    pub(crate) fn new(budget: u64, cores: usize, published: Arc<AtomicU64>) -> Self {
        Self {
            share: Cell::new(share_of(budget, cores)),
            used: Cell::new(0),
            published,
        }
    }

    /// A new total budget (SIGHUP).
    pub(crate) fn set_budget(&self, budget: u64, cores: usize) {
        self.share.set(share_of(budget, cores));
    }

    /// Bytes a session may still reserve.
    pub(crate) fn available(&self) -> u64 {
        self.share.get().saturating_sub(self.used.get())
    }

    /// Moves a session's charge from `before` to `after` bytes.
    pub(crate) fn recharge(&self, before: u64, after: u64) {
        if before == after {
            return;
        }
        let used = (self.used.get() + after).saturating_sub(before);
        self.used.set(used);
        self.published.store(used, Relaxed);
    }

    /// Bytes charged now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used.get()
    }
}

fn share_of(budget: u64, cores: usize) -> u64 {
    (budget / cores.max(1) as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_charges() {
        let published = Arc::new(AtomicU64::new(0));
        let b = CoreBudget::new(1000, 4, published.clone());
        assert_eq!(b.available(), 250);
        b.recharge(0, 200);
        assert_eq!(b.available(), 50);
        assert_eq!(published.load(Relaxed), 200);
        b.recharge(200, 300);
        assert_eq!(b.available(), 0);
        b.recharge(300, 0);
        assert_eq!(b.used(), 0);
        assert_eq!(b.available(), 250);
        b.set_budget(4000, 4);
        assert_eq!(b.available(), 1000);
    }

    #[test]
    fn default_is_a_sensible_share() {
        let d = default_budget();
        assert!(d >= 64 << 20);
        assert!(d <= physical_memory().unwrap_or(u64::MAX));
    }
}
