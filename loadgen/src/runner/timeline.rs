//! Per-second figures: each worker thread's intervals summed into timeline points (with
//! the second's histogram, its wall-clock end, stage target and part), and the measured
//! samples of each second kept for the interval log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::{unix_ms, Shared, TimelinePoint, WindowInterval};
use crate::histogram::{self, new_hist};
use crate::stats::{Interval, Window};

/// One second's sums over the threads that reported it so far.
struct Pending {
    threads: usize,
    msgs: u64,
    bytes: u64,
    errors: u64,
    open: i64,
    hist: Histogram<u64>,
    window_hist: Histogram<u64>,
}

/// Gathers per-thread intervals into per-second points.
pub(super) struct Timeline {
    nthreads: usize,
    pending: BTreeMap<u64, Pending>,
    points: Vec<TimelinePoint>,
    intervals: Vec<WindowInterval>,
    shared: Arc<Shared>,
}

impl Timeline {
    pub(super) fn new(nthreads: usize, shared: &Arc<Shared>) -> Self {
        Self {
            nthreads,
            pending: BTreeMap::new(),
            points: Vec::new(),
            intervals: Vec::new(),
            shared: shared.clone(),
        }
    }

    pub(super) fn add(&mut self, iv: Interval, w: Option<&Window>) -> Option<TimelinePoint> {
        let e = self.pending.entry(iv.second).or_insert_with(|| Pending {
            threads: 0,
            msgs: 0,
            bytes: 0,
            errors: 0,
            open: 0,
            hist: new_hist(),
            window_hist: new_hist(),
        });
        e.threads += 1;
        e.msgs += iv.messages;
        e.bytes += iv.bytes;
        e.errors += iv.errors;
        e.open += iv.open;
        e.hist.add(&iv.hist).expect("same bounds");
        e.window_hist.add(&iv.window_hist).expect("same bounds");
        if e.threads < self.nthreads {
            return None;
        }
        let done = self.pending.remove(&iv.second)?;
        let p = self.point(iv.second, &done, w);
        self.interval(iv.second, done.window_hist, w);
        self.points.push(p.clone());
        Some(p)
    }

    /// Keeps second `second`'s measured samples with its span inside the window.
    fn interval(&mut self, second: u64, hist: Histogram<u64>, w: Option<&Window>) {
        let Some(w) = w else { return };
        let start = (w.go + Duration::from_secs(second)).max(w.measure_start);
        let end = (w.go + Duration::from_secs(second + 1)).min(w.end);
        if end <= start {
            // A second past the window's end: what it holds was recorded just before
            // the end and reported late (ticks are taken up to 20 ms late).
            if let Some(last) = self.intervals.iter_mut().max_by_key(|i| i.start) {
                last.hist.add(&hist).expect("same bounds");
            }
            return;
        }
        self.intervals.push(WindowInterval {
            start: self.shared.unix_of(start),
            len: end.saturating_duration_since(start),
            hist,
        });
    }

    fn point(&self, second: u64, s: &Pending, w: Option<&Window>) -> TimelinePoint {
        let (msgs, bytes, errors, hist) = (s.msgs, s.bytes, s.errors, &s.hist);
        let phase = match w {
            Some(w) => {
                let start = w.go + Duration::from_secs(second);
                if start + Duration::from_secs(1) <= w.measure_start {
                    "warmup"
                } else if start >= w.end {
                    "drain"
                } else {
                    "measure"
                }
            }
            None => "measure",
        };
        let q = |q: f64| {
            if hist.is_empty() {
                0.0
            } else {
                hist.value_at_quantile(q) as f64 / 1000.0
            }
        };
        let cfg = &self.shared.cfg;
        let end = w.map(|w| w.go + Duration::from_secs(second + 1));
        // Seconds since the measured window's start, for the stage plan and the parts.
        let into = end.zip(w).map(|(e, w)| {
            if e >= w.measure_start {
                (e - w.measure_start).as_secs_f64()
            } else {
                -(w.measure_start - e).as_secs_f64()
            }
        });
        let part = into.filter(|t| *t > 0.0).and_then(|t| {
            cfg.parts
                .iter()
                .find(|(_, until)| t <= *until + 1e-9)
                .map(|(name, _)| name.to_string())
        });
        let stage_t = end.zip(w).map(|(e, w)| (e - w.go).as_secs_f64());
        TimelinePoint {
            t_s: second + 1,
            phase: phase.to_string(),
            messages_per_sec: msgs as f64,
            bytes_per_sec: bytes as f64,
            errors,
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            end_unix_ms: end.map(|e| unix_ms(self.shared.unix_of(e))),
            open_sessions: cfg.stages.as_ref().map(|_| s.open.max(0) as u64),
            // The plan's mean level over the second (for a rate: the messages due in it).
            target: cfg
                .stages
                .as_ref()
                .zip(stage_t)
                .map(|(st, t)| st.cumulative(t) - st.cumulative((t - 1.0).max(0.0))),
            part,
            loadgen_cpu_s: None,
            hist: histogram::encode(hist).ok(),
        }
    }

    /// Sets the CPU time of the latest completed second.
    pub(super) fn set_cpu(&mut self, s: f64) {
        if let Some(p) = self.points.last_mut() {
            p.loadgen_cpu_s = Some(s);
        }
    }

    pub(super) fn finish(mut self) -> (Vec<TimelinePoint>, Vec<WindowInterval>) {
        // Seconds some thread never reported (it ended early, or the run ended before
        // its last tick reached here) are still shown, and their measured samples still
        // logged: the interval log holds every sample the report's histogram holds.
        let rest: Vec<_> = std::mem::take(&mut self.pending).into_iter().collect();
        let w = self.shared.window.get().copied();
        for (second, s) in rest {
            let p = self.point(second, &s, w.as_ref());
            self.points.push(p);
            self.interval(second, s.window_hist, w.as_ref());
        }
        self.points.sort_by_key(|p| p.t_s);
        self.intervals.sort_by_key(|i| i.start);
        (self.points, self.intervals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Target;
    use crate::runner::{RingMode, RunConfig};
    use crate::shard::Shard;
    use sockchat_proto::Key;

    fn shared(threads: usize) -> Arc<Shared> {
        let cfg = RunConfig {
            scenario: "heartbeat",
            target: Target::Unix("/nonexistent".into()),
            sessions: threads,
            threads,
            ramp: 0.0,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(1),
            drain: Duration::from_secs(1),
            cpus: Vec::new(),
            progress: false,
            hist_names: vec!["latency"],
            setup: true,
            server_pid: None,
            ring: RingMode::Plain,
            shard: Shard::default(),
            start_at: None,
            stages: None,
            parts: Vec::new(),
        };
        let shared = Arc::new(Shared::new(cfg, Key::reference_default()));
        let go = shared.epoch;
        shared
            .window
            .set(Window {
                go,
                measure_start: go + Duration::from_secs(1),
                end: go + Duration::from_secs(4),
            })
            .expect("unset");
        shared
    }

    /// Thread `thread`'s report of `second` with `n` measured samples.
    fn interval(thread: usize, second: u64, n: u64) -> Interval {
        let mut window_hist = new_hist();
        let mut hist = new_hist();
        for v in 0..n {
            window_hist.record(1_000 + v).unwrap();
            hist.record(1_000 + v).unwrap();
        }
        Interval {
            thread,
            second,
            messages: n,
            bytes: 0,
            errors: 0,
            hist,
            window_hist,
            open: 0,
        }
    }

    #[test]
    fn every_measured_sample_reaches_the_interval_log() {
        let shared = shared(2);
        let w = shared.window.get().copied();
        let mut tl = Timeline::new(2, &shared);
        let mut recorded = 0;
        // Thread 0 reports every second up to the drain second; thread 1 ends early and
        // never reports its last measured second nor the drain second, so seconds 3
        // and 4 are only partly reported when the run finishes.
        for (thread, last) in [(0, 4), (1, 2)] {
            for second in 1..=last {
                let n = 3 + second + thread as u64;
                recorded += n;
                tl.add(interval(thread, second, n), w.as_ref());
            }
        }
        let (points, intervals) = tl.finish();
        assert_eq!(points.len(), 4, "every second is in the timeline");
        let logged: u64 = intervals.iter().map(|i| i.hist.len()).sum();
        assert_eq!(logged, recorded, "interval log counts vs recorded samples");
        let starts: Vec<_> = intervals.iter().map(|i| i.start).collect();
        let mut sorted = starts.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(starts, sorted, "one interval per second, in order");
        assert_eq!(intervals.len(), 3, "seconds 1..=3 of the window");
    }
}
