//! Counters: each core writes its own (relaxed atomics, one writer), the stats thread
//! and the shutdown summary read and add them up.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use sockchat_proto::{CloseReason, RoomError};

const REASONS: usize = CloseReason::LABELS.len();
const REFUSALS: usize = RoomError::LABELS.len();

/// One core's counters.
#[derive(Debug, Default)]
pub struct CoreStats {
    /// Sessions open now on this core (framed and line).
    pub sessions: AtomicU64,
    /// Connections accepted (including those refused as "Server full").
    pub accepted: AtomicU64,
    /// Application messages received.
    pub messages_in: AtomicU64,
    /// Application messages queued to peers (echoes and chat deliveries).
    pub messages_out: AtomicU64,
    /// Bytes read from peers.
    pub bytes_in: AtomicU64,
    /// Bytes written to peers.
    pub bytes_out: AtomicU64,
    /// Chat messages for this core dropped because its inbound queue was full.
    pub fanout_dropped: AtomicU64,
    /// Sessions open now over TCP (the rest of `sessions` are Unix).
    pub sessions_tcp: AtomicU64,
    /// Connections closed for a missing or invalid PROXY protocol header.
    pub proxy_rejected: AtomicU64,
    /// Times a session's reading was paused by `--max-messages-per-sec`.
    pub rate_limited: AtomicU64,
    /// Bytes queued to peers and not yet written (gauge).
    pub send_queue_bytes: AtomicU64,
    /// Bytes charged to this core's share of `--memory-budget` (gauge).
    pub memory_bytes: Arc<AtomicU64>,
    /// Received bytes copied in user space (from a ring buffer into a session's
    /// receive buffer, and from there into a chunk's slot).
    pub bytes_copied: AtomicU64,
    /// Received bytes the kernel wrote straight into a large frame's own buffer or a
    /// chunk's slot of its message (none of them copied in user space).
    pub bytes_in_place: AtomicU64,
    /// Receives that found the core's buffer ring empty (ENOBUFS), parked until buffers
    /// came back.
    pub ring_enobufs: AtomicU64,
    /// Parked receives re-armed.
    pub ring_rearmed: AtomicU64,
    /// Bumped by the core each time it is woken; the watchdog checks it moves.
    pub alive: AtomicU64,
    closes: [AtomicU64; REASONS],
    /// Room requests refused with an `error` frame, by [`RoomError::index`].
    pub(crate) room_refusals: [AtomicU64; REFUSALS],
}

impl CoreStats {
    /// Counts a close.
    pub fn count_close(&self, reason: &CloseReason) {
        self.closes[reason.index()].fetch_add(1, Relaxed);
    }

    /// Adds `n` to a counter (single writer: a relaxed add is enough).
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> Snapshot {
        let mut closes = [0u64; REASONS];
        for (c, a) in closes.iter_mut().zip(&self.closes) {
            *c = a.load(Relaxed);
        }
        let mut room_refusals = [0u64; REFUSALS];
        for (c, a) in room_refusals.iter_mut().zip(&self.room_refusals) {
            *c = a.load(Relaxed);
        }
        Snapshot {
            room_refusals,
            sessions: self.sessions.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
            messages_in: self.messages_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            fanout_dropped: self.fanout_dropped.load(Relaxed),
            sessions_tcp: self.sessions_tcp.load(Relaxed),
            proxy_rejected: self.proxy_rejected.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
            send_queue_bytes: self.send_queue_bytes.load(Relaxed),
            memory_bytes: self.memory_bytes.load(Relaxed),
            bytes_copied: self.bytes_copied.load(Relaxed),
            bytes_in_place: self.bytes_in_place.load(Relaxed),
            ring_enobufs: self.ring_enobufs.load(Relaxed),
            ring_rearmed: self.ring_rearmed.load(Relaxed),
            closes,
        }
    }
}

/// Counters at one instant (one core's, or the sum over cores).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Sessions open.
    pub sessions: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Messages queued to peers.
    pub messages_out: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Chat messages dropped at full cross-core queues.
    pub fanout_dropped: u64,
    /// Sessions open over TCP.
    pub sessions_tcp: u64,
    /// Connections closed for a missing or invalid PROXY header.
    pub proxy_rejected: u64,
    /// Times a session's reading was paused by the message rate limit.
    pub rate_limited: u64,
    /// Bytes queued to peers, not yet written.
    pub send_queue_bytes: u64,
    /// Bytes charged to the memory budget.
    pub memory_bytes: u64,
    /// Received bytes copied in user space.
    pub bytes_copied: u64,
    /// Received bytes written by the kernel straight into a frame's buffer.
    pub bytes_in_place: u64,
    /// Receives parked on an empty buffer ring.
    pub ring_enobufs: u64,
    /// Parked receives re-armed.
    pub ring_rearmed: u64,
    /// Closes, indexed by [`CloseReason::index`].
    pub closes: [u64; REASONS],
    /// Refused room requests, indexed by [`RoomError::index`].
    pub room_refusals: [u64; REFUSALS],
}

impl Snapshot {
    /// The sum of several cores' snapshots.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Snapshot>) -> Snapshot {
        let mut t = Snapshot::default();
        for s in all {
            t.sessions += s.sessions;
            t.accepted += s.accepted;
            t.messages_in += s.messages_in;
            t.messages_out += s.messages_out;
            t.bytes_in += s.bytes_in;
            t.bytes_out += s.bytes_out;
            t.fanout_dropped += s.fanout_dropped;
            t.sessions_tcp += s.sessions_tcp;
            t.proxy_rejected += s.proxy_rejected;
            t.rate_limited += s.rate_limited;
            t.send_queue_bytes += s.send_queue_bytes;
            t.memory_bytes += s.memory_bytes;
            t.bytes_copied += s.bytes_copied;
            t.bytes_in_place += s.bytes_in_place;
            t.ring_enobufs += s.ring_enobufs;
            t.ring_rearmed += s.ring_rearmed;
            for (a, b) in t.closes.iter_mut().zip(&s.closes) {
                *a += b;
            }
            for (a, b) in t.room_refusals.iter_mut().zip(&s.room_refusals) {
                *a += b;
            }
        }
        t
    }

    /// Closes counted for `label`.
    pub fn closes_for(&self, label: &str) -> u64 {
        CloseReason::LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.closes[i])
    }

    /// Total closes.
    pub fn total_closes(&self) -> u64 {
        self.closes.iter().sum()
    }

    /// The non-zero close counters as `label=n` pairs, space separated (`-` if none).
    pub fn closes_text(&self) -> String {
        nonzero_pairs(&CloseReason::LABELS, &self.closes)
    }

    /// The non-zero room refusal counters as `label=n` pairs (`-` if none).
    pub fn refusals_text(&self) -> String {
        nonzero_pairs(&RoomError::LABELS, &self.room_refusals)
    }

    /// Total refused room requests.
    pub fn total_room_refusals(&self) -> u64 {
        self.room_refusals.iter().sum()
    }

    /// Rates between `earlier` and `self`, `elapsed` apart.
    pub fn rates_since(&self, earlier: &Snapshot, elapsed: Duration) -> Rates {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let per = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
        let mut closes = [0u64; REASONS];
        for (i, c) in closes.iter_mut().enumerate() {
            *c = self.closes[i].saturating_sub(earlier.closes[i]);
        }
        Rates {
            sessions: self.sessions,
            messages_in_per_s: per(self.messages_in, earlier.messages_in),
            messages_out_per_s: per(self.messages_out, earlier.messages_out),
            bytes_in_per_s: per(self.bytes_in, earlier.bytes_in),
            bytes_out_per_s: per(self.bytes_out, earlier.bytes_out),
            copied_per_byte_in: {
                let copied = self.bytes_copied.saturating_sub(earlier.bytes_copied);
                let bytes_in = self.bytes_in.saturating_sub(earlier.bytes_in);
                copied as f64 / bytes_in.max(1) as f64
            },
            ring_enobufs: self.ring_enobufs.saturating_sub(earlier.ring_enobufs),
            closes: Snapshot {
                closes,
                ..Snapshot::default()
            },
        }
    }
}

/// The non-zero `counts` as `label=n` pairs, space separated (`-` if none).
fn nonzero_pairs(labels: &[&str], counts: &[u64]) -> String {
    let parts: Vec<String> = labels
        .iter()
        .zip(counts)
        .filter(|(_, n)| **n > 0)
        .map(|(l, n)| format!("{l}={n}"))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sessions={} accepted={} messages_in={} messages_out={} bytes_in={} bytes_out={} \
             fanout_dropped={} bytes_copied={} bytes_in_place={} ring_enobufs={} closes: {}",
            self.sessions,
            self.accepted,
            self.messages_in,
            self.messages_out,
            self.bytes_in,
            self.bytes_out,
            self.fanout_dropped,
            self.bytes_copied,
            self.bytes_in_place,
            self.ring_enobufs,
            self.closes_text()
        )
    }
}

/// Per-second rates over one stats interval.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Sessions open at the end of the interval.
    pub sessions: u64,
    /// Messages received per second.
    pub messages_in_per_s: f64,
    /// Messages queued to peers per second.
    pub messages_out_per_s: f64,
    /// Bytes read per second.
    pub bytes_in_per_s: f64,
    /// Bytes written per second.
    pub bytes_out_per_s: f64,
    /// Bytes copied in user space per byte received, over the interval.
    pub copied_per_byte_in: f64,
    /// Receives parked on an empty buffer ring during the interval.
    pub ring_enobufs: u64,
    /// Closes during the interval (only `closes` is set).
    pub closes: Snapshot,
}

impl fmt::Display for Rates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sessions={} msgs_in/s={:.0} msgs_out/s={:.0} bytes_in/s={:.0} bytes_out/s={:.0} \
             copied/byte_in={:.2} ring_enobufs={} closes: {}",
            self.sessions,
            self.messages_in_per_s,
            self.messages_out_per_s,
            self.bytes_in_per_s,
            self.bytes_out_per_s,
            self.copied_per_byte_in,
            self.ring_enobufs,
            self.closes.closes_text()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_and_rates() {
        let a = CoreStats::default();
        let b = CoreStats::default();
        CoreStats::add(&a.messages_in, 100);
        CoreStats::add(&b.messages_in, 50);
        CoreStats::add(&a.bytes_in, 6400);
        a.count_close(&CloseReason::SessionTimeout);
        b.count_close(&CloseReason::SessionTimeout);
        b.count_close(&CloseReason::ServerFull);
        let t0 = Snapshot::default();
        let t1 = Snapshot::sum([&a.snapshot(), &b.snapshot()]);
        assert_eq!(t1.messages_in, 150);
        assert_eq!(t1.closes_for("session_timeout"), 2);
        assert_eq!(t1.closes_for("server_full"), 1);
        assert_eq!(t1.total_closes(), 3);
        let r = t1.rates_since(&t0, Duration::from_secs(2));
        assert_eq!(r.messages_in_per_s, 75.0);
        assert_eq!(r.bytes_in_per_s, 3200.0);
        let line = r.to_string();
        assert!(line.contains("session_timeout=2"), "{line}");
        assert!(line.contains("server_full=1"), "{line}");
        assert!(Snapshot::default().to_string().ends_with("closes: -"));
    }
}
