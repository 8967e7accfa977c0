//! Single-core HMAC-SHA256 throughput of `Key::sign` over 1 MiB buffers: the bound for a
//! server that verifies every byte it receives. `ci/bench.sh` runs it pinned to the
//! server's core, in the same run as the 1 MiB echo cases, and divides by it.
//!
//! Usage: `hmac_throughput [SECONDS]` (default 2). Prints one JSON object on stdout:
//! `{"bytes_per_sec": ..., "buffer_bytes": 1048576, "signs": N, "seconds": S}`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use sockchat_proto::Key;

const BUFFER: usize = 1 << 20;
const HEADER: &[u8] =
    br#"{"type": "message", "content_type": "application/octet-stream", "session_id": "3f2b8c1e-6d4a-4e8b-9c71-2a5d0e9f1b34"}"#;

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("SECONDS must be a number"))
        .unwrap_or(2.0);
    let key = Key::reference_default();
    let content: Vec<u8> = (0..BUFFER).map(|i| (i * 31 + 7) as u8).collect();
    // Warm-up: caches, frequency.
    for _ in 0..8 {
        black_box(key.sign(black_box(HEADER), black_box(&content)));
    }
    let limit = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut signs = 0u64;
    while start.elapsed() < limit {
        black_box(key.sign(black_box(HEADER), black_box(&content)));
        signs += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let bytes_per_sec = (signs as f64 * BUFFER as f64) / elapsed;
    println!(
        "{{\"bytes_per_sec\": {bytes_per_sec:.0}, \"buffer_bytes\": {BUFFER}, \"signs\": {signs}, \"seconds\": {elapsed:.3}}}"
    );
}
