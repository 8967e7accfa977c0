//! Per-core deadlines: one ordered set for every session on the core, and one task that
//! sleeps until the earliest and wakes the sessions whose deadline passed.
//!
//! No session has a timer task or a timer entry in the runtime's wheel. Entries are lazy:
//! a session's deadline usually only moves later (each frame received pushes the silence
//! deadline forward), so the entry is *not* moved on every frame. When an entry fires,
//! the session is asked for its real next deadline, and is either timed out or
//! re-registered. An entry is replaced only when a session needs an *earlier* deadline
//! than the one registered.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::task::Waker;
use std::time::Instant;

/// The ordered set of `(deadline, connection id)`, with no I/O or clock. Each connection
/// keeps its own registered deadline in a `Cell` (passed in), so lookups are O(log n).
#[derive(Debug, Default)]
pub struct TimerSet {
    set: BTreeSet<(Instant, u64)>,
}

impl TimerSet {
    /// Makes sure `id` fires no later than `at`. `current` is the deadline registered for
    /// `id` (kept by the caller); a later or equal one is kept as is. Returns true when
    /// an entry was inserted.
    pub fn schedule(&mut self, id: u64, current: &Cell<Option<Instant>>, at: Instant) -> bool {
        if let Some(cur) = current.get() {
            if cur <= at {
                return false;
            }
            self.set.remove(&(cur, id));
        }
        self.set.insert((at, id));
        current.set(Some(at));
        true
    }

    /// Removes `id`'s entry, if any.
    pub fn cancel(&mut self, id: u64, current: &Cell<Option<Instant>>) {
        if let Some(cur) = current.take() {
            self.set.remove(&(cur, id));
        }
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.set.first().map(|&(t, _)| t)
    }

    /// Removes every entry due at `now` and appends their ids to `out`, earliest first.
    /// The caller must clear each one's `current` cell.
    pub fn pop_expired(&mut self, now: Instant, out: &mut Vec<u64>) {
        while let Some(&(t, id)) = self.set.first() {
            if t > now {
                break;
            }
            self.set.pop_first();
            out.push(id);
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// True when no entry is registered.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// A [`TimerSet`] shared by a core's tasks, which wakes the core's timer task when a
/// deadline earlier than the one it sleeps until is registered.
#[derive(Default)]
pub(crate) struct CoreTimers {
    set: RefCell<TimerSet>,
    /// The deadline the timer task sleeps until (`None`: it sleeps with no deadline).
    sleeping_until: Cell<Option<Instant>>,
    /// Set when the timer task must recompute its deadline.
    dirty: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for CoreTimers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreTimers")
            .field("entries", &self.set.borrow().len())
            .finish_non_exhaustive()
    }
}

impl CoreTimers {
    pub(crate) fn schedule(&self, id: u64, current: &Cell<Option<Instant>>, at: Instant) {
        let inserted = self.set.borrow_mut().schedule(id, current, at);
        if inserted && self.sleeping_until.get().is_none_or(|s| at < s) {
            self.dirty.set(true);
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }

    pub(crate) fn cancel(&self, id: u64, current: &Cell<Option<Instant>>) {
        self.set.borrow_mut().cancel(id, current);
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.set.borrow().next()
    }

    pub(crate) fn pop_expired(&self, now: Instant, out: &mut Vec<u64>) {
        self.set.borrow_mut().pop_expired(now, out);
    }

    /// Records what the timer task sleeps until and registers its waker; returns true if
    /// it must recompute (an earlier deadline arrived since it last looked).
    pub(crate) fn park(&self, until: Option<Instant>, waker: &Waker) -> bool {
        self.sleeping_until.set(until);
        let stale = self.waker.take();
        match stale {
            Some(w) if w.will_wake(waker) => self.waker.set(Some(w)),
            _ => self.waker.set(Some(waker.clone())),
        }
        self.dirty.replace(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_in_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut s = TimerSet::default();
        let cells: Vec<Cell<Option<Instant>>> = (0..3).map(|_| Cell::new(None)).collect();
        s.schedule(0, &cells[0], t0 + Duration::from_secs(3));
        s.schedule(1, &cells[1], t0 + Duration::from_secs(1));
        s.schedule(2, &cells[2], t0 + Duration::from_secs(2));
        assert_eq!(s.next(), Some(t0 + Duration::from_secs(1)));
        let mut out = Vec::new();
        s.pop_expired(t0, &mut out);
        assert!(out.is_empty());
        s.pop_expired(t0 + Duration::from_secs(2), &mut out);
        assert_eq!(out, vec![1, 2]);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn later_deadlines_are_lazy_earlier_ones_replace() {
        let t0 = Instant::now();
        let mut s = TimerSet::default();
        let c = Cell::new(None);
        assert!(s.schedule(7, &c, t0 + Duration::from_secs(5)));
        // Later: kept lazily, no new entry.
        assert!(!s.schedule(7, &c, t0 + Duration::from_secs(30)));
        assert_eq!(s.len(), 1);
        assert_eq!(c.get(), Some(t0 + Duration::from_secs(5)));
        // Earlier: replaces.
        assert!(s.schedule(7, &c, t0 + Duration::from_secs(1)));
        assert_eq!(s.len(), 1);
        assert_eq!(s.next(), Some(t0 + Duration::from_secs(1)));
        s.cancel(7, &c);
        assert!(s.is_empty());
        assert_eq!(c.get(), None);
    }

    #[test]
    fn same_instant_different_ids() {
        let t = Instant::now();
        let mut s = TimerSet::default();
        let a = Cell::new(None);
        let b = Cell::new(None);
        s.schedule(1, &a, t);
        s.schedule(2, &b, t);
        let mut out = Vec::new();
        s.pop_expired(t, &mut out);
        assert_eq!(out, vec![1, 2]);
    }

    #[test]
    fn core_timers_signal_earlier_deadlines() {
        let t0 = Instant::now();
        let ct = CoreTimers::default();
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: std::sync::Arc<Self>) {}
        }
        let waker = &Waker::from(std::sync::Arc::new(Noop));
        assert!(!ct.park(Some(t0 + Duration::from_secs(10)), waker));
        let c = Cell::new(None);
        ct.schedule(1, &c, t0 + Duration::from_secs(20));
        assert!(!ct.park(Some(t0 + Duration::from_secs(10)), waker));
        let d = Cell::new(None);
        ct.schedule(2, &d, t0 + Duration::from_secs(1));
        assert!(ct.park(Some(t0 + Duration::from_secs(1)), waker));
        assert_eq!(ct.next(), Some(t0 + Duration::from_secs(1)));
    }
}
