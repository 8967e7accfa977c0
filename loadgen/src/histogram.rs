//! Latency histograms: recording bounds, percentile summaries, and the portable
//! base64-of-V2-deflate form written to reports so runs can be merged later.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Values are nanoseconds: loopback round trips are tens of microseconds, so µs
/// resolution would put most samples in a handful of buckets.
pub const LOWEST_NS: u64 = 1;
/// One hour: anything slower is an outage, recorded saturated at this value.
pub const HIGHEST_NS: u64 = 3_600 * 1_000_000_000;
/// Three significant digits: 0.1% value error.
pub const SIGFIG: u8 = 3;

/// A new empty latency histogram (nanoseconds).
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, SIGFIG).expect("valid histogram bounds")
}

/// Why a stored histogram could not be read back.
#[derive(Debug, Error)]
pub enum HistError {
    /// Not valid base64.
    #[error("histogram is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Not a V2 (deflate) HdrHistogram.
    #[error("histogram does not decode: {0}")]
    Decode(String),
    /// Serializing failed.
    #[error("histogram does not encode: {0}")]
    Encode(String),
}

/// Encodes `h` as base64 of HdrHistogram's compressed V2 form (the same bytes the Java
/// and Go HdrHistogram libraries read).
pub fn encode(h: &Histogram<u64>) -> Result<String, HistError> {
    let mut out = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut out)
        .map_err(|e| HistError::Encode(format!("{e:?}")))?;
    Ok(B64.encode(out))
}

/// Decodes what [`encode`] wrote.
pub fn decode(s: &str) -> Result<Histogram<u64>, HistError> {
    let bytes = B64.decode(s.trim())?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| HistError::Decode(format!("{e:?}")))
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Number of samples.
    pub count: u64,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl Summary {
    /// Summarises a nanosecond histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
            count: h.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_base64_v2() {
        let mut h = new_hist();
        for v in [1_000u64, 25_000, 25_000, 3_000_000, HIGHEST_NS * 2] {
            h.saturating_record(v);
        }
        let back = decode(&encode(&h).unwrap()).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back.max(), h.max());
        assert_eq!(Summary::of(&back), Summary::of(&h));
        assert!(decode("not base64!").is_err());
        assert!(decode("AAAA").is_err());
    }
}
