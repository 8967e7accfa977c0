//! Per-thread recording of samples, counters and errors, and merging the threads'
//! results.
//!
//! Each worker thread owns one [`Recorder`] (no atomics on the per-message path). Errors
//! are counted in every phase, setup and drain included: an error is never hidden by
//! falling outside the measured window. Latency samples and message counts only count
//! inside the window (after warm-up, before the end).

use std::collections::BTreeMap;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::histogram::new_hist;

/// What a worker thread sends the main thread once a second: the live progress line and
/// the throughput timeline are built from these.
#[derive(Debug)]
pub struct Interval {
    /// Index of the worker thread.
    pub thread: usize,
    /// Which second of the load phase (0 = the first second after the start).
    pub second: u64,
    /// Completed messages (or cycles) in that second, in any phase.
    pub messages: u64,
    /// Payload bytes in that second.
    pub bytes: u64,
    /// Errors in that second.
    pub errors: u64,
    /// The primary latency of that second.
    pub hist: Histogram<u64>,
    /// The samples of that second that fell inside the measured window (what the
    /// report's histograms hold), for the interval log.
    pub window_hist: Histogram<u64>,
    /// Sessions open at the end of that second (tracked by scenarios that open and
    /// close sessions during the load phase).
    pub open: i64,
}

/// The measured window, known once the run's setup is over.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Start of the load phase (warm-up begins).
    pub go: Instant,
    /// Warm-up ends; measurement begins.
    pub measure_start: Instant,
    /// Measurement ends; sessions stop sending and drain.
    pub end: Instant,
}

/// One worker thread's recorder.
#[derive(Debug)]
pub struct Recorder {
    window: Option<Window>,
    hists: Vec<Histogram<u64>>,
    interval_hist: Histogram<u64>,
    interval_window_hist: Histogram<u64>,
    open: i64,
    messages: u64,
    bytes: u64,
    total_messages: u64,
    interval_messages: u64,
    interval_bytes: u64,
    interval_errors: u64,
    errors: BTreeMap<&'static str, u64>,
    counters: BTreeMap<&'static str, u64>,
}

impl Recorder {
    /// A recorder with `nhists` histograms; index 0 is the scenario's primary latency.
    pub fn new(nhists: usize) -> Self {
        Self {
            window: None,
            hists: (0..nhists.max(1)).map(|_| new_hist()).collect(),
            interval_hist: new_hist(),
            interval_window_hist: new_hist(),
            open: 0,
            messages: 0,
            bytes: 0,
            total_messages: 0,
            interval_messages: 0,
            interval_bytes: 0,
            interval_errors: 0,
            errors: BTreeMap::new(),
            counters: BTreeMap::new(),
        }
    }

    /// Sets the measured window.
    pub fn set_window(&mut self, w: Window) {
        self.window = Some(w);
    }

    /// True when `now` is inside the measured window.
    pub fn in_window(&self, now: Instant) -> bool {
        self.window
            .is_some_and(|w| now >= w.measure_start && now < w.end)
    }

    /// A completed message (or cycle) at `now` whose primary latency is `ns`, carrying
    /// `bytes` of payload.
    pub fn sample(&mut self, now: Instant, ns: u64, bytes: u64) {
        self.sample_to(0, now, ns, bytes);
    }

    /// Like [`sample`](Self::sample) with the latency going to histogram `idx`.
    pub fn sample_to(&mut self, idx: usize, now: Instant, ns: u64, bytes: u64) {
        self.total_messages += 1;
        self.interval_messages += 1;
        self.interval_bytes += bytes;
        self.interval_hist.saturating_record(ns);
        if self.in_window(now) {
            self.messages += 1;
            self.bytes += bytes;
            self.hists[idx].saturating_record(ns);
            self.interval_window_hist.saturating_record(ns);
        }
    }

    /// A session opened (`+1`) or closed (`-1`) during the load phase.
    pub fn session_open(&mut self, delta: i64) {
        self.open += delta;
    }

    /// A secondary latency sample into histogram `idx` (only inside the window).
    pub fn record(&mut self, idx: usize, now: Instant, ns: u64) {
        if self.in_window(now) {
            self.hists[idx].saturating_record(ns);
        }
    }

    /// Records into histogram `idx` regardless of the window (setup-time measurements
    /// such as connect latency, whose samples all happen before the window).
    pub fn record_always(&mut self, idx: usize, ns: u64) {
        self.hists[idx].saturating_record(ns);
    }

    /// Counts one error of `kind`.
    pub fn error(&mut self, kind: &'static str) {
        *self.errors.entry(kind).or_default() += 1;
        self.interval_errors += 1;
    }

    /// Adds `n` to the scenario counter `name` (counted in every phase).
    pub fn count(&mut self, name: &'static str, n: u64) {
        *self.counters.entry(name).or_default() += n;
    }

    /// Takes the current second's interval figures.
    pub fn take_interval(&mut self, thread: usize, second: u64) -> Interval {
        let hist = std::mem::replace(&mut self.interval_hist, new_hist());
        let window_hist = std::mem::replace(&mut self.interval_window_hist, new_hist());
        let iv = Interval {
            thread,
            second,
            messages: self.interval_messages,
            bytes: self.interval_bytes,
            errors: self.interval_errors,
            hist,
            window_hist,
            open: self.open,
        };
        self.interval_messages = 0;
        self.interval_bytes = 0;
        self.interval_errors = 0;
        iv
    }

    /// The thread's final figures.
    pub fn finish(self) -> ThreadResult {
        ThreadResult {
            hists: self.hists,
            messages: self.messages,
            bytes: self.bytes,
            total_messages: self.total_messages,
            errors: self.errors,
            counters: self.counters,
        }
    }
}

/// Figures of one thread, or of all threads merged.
#[derive(Debug, Clone)]
pub struct ThreadResult {
    /// Histograms in the scenario's order.
    pub hists: Vec<Histogram<u64>>,
    /// Messages completed inside the window.
    pub messages: u64,
    /// Payload bytes inside the window.
    pub bytes: u64,
    /// Messages completed in any phase (the denominator of CPU per message, which is
    /// measured over the whole load phase).
    pub total_messages: u64,
    /// Errors by kind, all phases.
    pub errors: BTreeMap<&'static str, u64>,
    /// Scenario counters.
    pub counters: BTreeMap<&'static str, u64>,
}

impl ThreadResult {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &ThreadResult) {
        for (a, b) in self.hists.iter_mut().zip(&other.hists) {
            a.add(b).expect("histograms share bounds");
        }
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.total_messages += other.total_messages;
        for (k, v) in &other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in &other.counters {
            *self.counters.entry(k).or_default() += v;
        }
    }

    /// Total errors of every kind.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Saturating nanoseconds between two instants.
pub fn ns_between(earlier: Instant, later: Instant) -> u64 {
    later
        .saturating_duration_since(earlier)
        .as_nanos()
        .min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn samples_outside_the_window_count_only_in_the_interval() {
        let t0 = Instant::now();
        let mut r = Recorder::new(2);
        r.set_window(Window {
            go: t0,
            measure_start: t0 + Duration::from_secs(1),
            end: t0 + Duration::from_secs(2),
        });
        r.sample(t0, 10, 5); // warm-up
        r.sample(t0 + Duration::from_millis(1500), 20, 5);
        r.record(1, t0 + Duration::from_millis(1500), 7);
        r.record(1, t0 + Duration::from_secs(3), 7); // drain
        r.error("eof");
        let iv = r.take_interval(0, 0);
        assert_eq!((iv.messages, iv.bytes, iv.errors), (2, 10, 1));
        let res = r.finish();
        assert_eq!((res.messages, res.total_messages, res.bytes), (1, 2, 5));
        assert_eq!(res.hists[1].len(), 1);
        let mut all = res.clone();
        all.merge(&res);
        assert_eq!(all.errors["eof"], 2);
        assert_eq!(all.hists[0].len(), 2);
    }
}
