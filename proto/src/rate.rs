//! [`TokenBucket`]: the per-session message rate rule (`--max-messages-per-sec`).
//!
//! A generic cell rate algorithm (GCRA), the token bucket kept as one instant: a session
//! may send `burst` messages at once and `per_sec` per second sustained. The decision is
//! the session rule; what to do about it is the driver's: sockchat's server stops
//! *reading* a session whose bucket is empty until [`TokenBucket::ready_at`], so the
//! sender's TCP window fills and it is slowed down by backpressure, and nothing is
//! buffered or dropped on its behalf. No clock is read: `now` is passed in.

use std::time::{Duration, Instant};

/// A message-rate bucket for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// Time one message costs (`1 s / per_sec`).
    interval: Duration,
    /// How far ahead of `now` the theoretical arrival time may run (`burst - 1`
    /// intervals) while messages are still accepted.
    tolerance: Duration,
    /// Theoretical arrival time: when the bucket is full again.
    tat: Option<Instant>,
}

impl TokenBucket {
    /// `per_sec` messages per second sustained, `burst` at once (both at least 1).
    pub fn new(per_sec: u32, burst: u32) -> Self {
        let interval = Duration::from_secs(1) / per_sec.max(1);
        Self {
            interval,
            tolerance: interval * (burst.max(1) - 1),
            tat: None,
        }
    }

    /// Takes one token for a message handled at `now` (a message already read is always
    /// handled: the driver must stop reading *before* the next one). Returns when the
    /// next message may be read: `None` if at once, `Some(t)` if the bucket is empty
    /// until `t`.
    pub fn take(&mut self, now: Instant) -> Option<Instant> {
        let tat = self.tat.map_or(now, |t| t.max(now)) + self.interval;
        self.tat = Some(tat);
        self.ready_at(now)
    }

    /// When the next message may be read: `None` if now, else the instant a token is
    /// back.
    pub fn ready_at(&self, now: Instant) -> Option<Instant> {
        let tat = self.tat?;
        // GCRA: a message conforms when now >= tat - tolerance.
        let ready = tat.checked_sub(self.tolerance).unwrap_or(now);
        (ready > now).then_some(ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_sustained_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3);
        // A burst of 3 passes; after the third the bucket is empty for one interval.
        assert_eq!(b.take(t0), None);
        assert_eq!(b.take(t0), None);
        let next = b.take(t0).expect("empty after the burst");
        assert_eq!(next, t0 + Duration::from_millis(100));
        assert_eq!(b.ready_at(t0 + Duration::from_millis(99)), Some(next));
        assert_eq!(b.ready_at(next), None);
        // Sustained: one message per 100 ms keeps it at the edge.
        let mut t = next;
        for _ in 0..20 {
            let n = b.take(t).expect("at the edge");
            assert_eq!(n - t, Duration::from_millis(100));
            t = n;
        }
        // A quiet spell refills the burst.
        let later = t + Duration::from_secs(5);
        assert_eq!(b.take(later), None);
        assert_eq!(b.take(later), None);
        assert!(b.take(later).is_some());
    }

    #[test]
    fn burst_of_one_paces_every_message() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(4, 1);
        assert_eq!(b.take(t0), Some(t0 + Duration::from_millis(250)));
        // Over a simulated second, the messages let through number per_sec.
        let mut t = t0;
        let mut n = 0;
        let mut bucket = TokenBucket::new(4, 1);
        while t < t0 + Duration::from_secs(1) {
            n += 1;
            t = bucket.take(t).unwrap_or(t);
        }
        assert_eq!(n, 4);
    }
}
