//! `--interval-log PATH`: the primary latency of each second of the measured window in
//! HdrHistogram's interval-log format (the `hdrhistogram` crate's writer; the same text
//! format Java's `HistogramLogWriter` writes and `HistogramLogProcessor` and the Python
//! `hdrhistogram` package read). Values are nanoseconds; timestamps are seconds since
//! the `BaseTime` header, which is the measured window's start on the wall clock.
//!
//! Each interval holds exactly the samples the report's histogram holds for that second,
//! so the intervals' counts add up to the report's `latency_us.count`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use thiserror::Error;

use crate::runner::WindowInterval;

/// Writing the interval log failed.
#[derive(Debug, Error)]
pub enum IntervalLogError {
    /// File I/O.
    #[error("interval log {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A histogram did not serialise.
    #[error("interval log {path}: {message}")]
    Encode {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
}

/// Writes `intervals` (the samples of histogram `name`, measured from `start`) to
/// `path`.
pub fn write(
    path: &Path,
    name: &str,
    start: SystemTime,
    intervals: &[WindowInterval],
) -> Result<(), IntervalLogError> {
    let p = path.display().to_string();
    let io = |source| IntervalLogError::Io {
        path: p.clone(),
        source,
    };
    let mut out = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    {
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "loadgen {} {}: {name} per second of the measured window, values in ns",
                env!("CARGO_PKG_VERSION"),
                env!("LOADGEN_GIT_COMMIT")
            ))
            .with_start_time(start)
            .with_base_time(start)
            // The max column in seconds, like the Java tools print it.
            .with_max_value_divisor(1e9)
            .begin_log_with(&mut out, &mut ser)
            .map_err(io)?;
        let tag = Tag::new(name);
        for iv in intervals {
            let offset = iv.start.duration_since(start).unwrap_or(Duration::ZERO);
            log.write_histogram(&iv.hist, offset, iv.len, tag)
                .map_err(|e| IntervalLogError::Encode {
                    path: p.clone(),
                    message: e.to_string(),
                })?;
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut f = std::fs::File::create(path).map_err(io)?;
    f.write_all(&out).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::new_hist;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

    #[test]
    fn intervals_read_back_with_their_counts() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let intervals: Vec<WindowInterval> = (0..3u64)
            .map(|i| {
                let mut hist = new_hist();
                for v in 0..=i * 10 {
                    hist.record(1_000 + v).unwrap();
                }
                WindowInterval {
                    start: start + Duration::from_secs(i),
                    len: Duration::from_secs(1),
                    hist,
                }
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lat.hlog");
        write(&path, "latency", start, &intervals).unwrap();
        let text = std::fs::read(&path).unwrap();
        let mut counts = Vec::new();
        for e in IntervalLogIterator::new(&text) {
            if let LogEntry::Interval(h) = e.unwrap() {
                assert_eq!(h.tag().map(|t| t.as_str()), Some("latency"));
                let b = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    h.encoded_histogram(),
                )
                .unwrap();
                let back: hdrhistogram::Histogram<u64> =
                    Deserializer::new().deserialize(&mut b.as_slice()).unwrap();
                counts.push((h.start_timestamp().as_secs(), back.len()));
            }
        }
        assert_eq!(counts, vec![(0, 1), (1, 11), (2, 21)]);
    }
}
