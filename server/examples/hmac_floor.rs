//! The floor of one chat delivery: one HMAC-SHA256 over the header JSON a rooms
//! recipient gets (`room` and `from` included) plus the content, with the pre-keyed
//! state the server uses. `ci/fanout-bench.sh` runs it in the same quiet window as the
//! fan-out load, so the server's CPU per delivery can be given as a ratio to it.
//!
//! Usage: `hmac_floor [CONTENT_BYTES] [ITERATIONS]` (defaults 64, 2,000,000); prints
//! `hmac_floor_ns=N`.

use std::hint::black_box;
use std::time::Instant;

use sockchat_proto::header::{ByteStr, Header, TEXT_UTF8};
use sockchat_proto::{FrameType, Key};

fn main() {
    let mut args = std::env::args().skip(1);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let iters: u32 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let key = Key::reference_default();
    let mut h = Header::new(
        FrameType::Message,
        Some(TEXT_UTF8),
        Some(ByteStr::from("3f2b8c1e-6d4a-4e8b-9c71-2a5d0e9f1b34")),
    );
    h.room = Some(ByteStr::from("lobby"));
    h.from = Some(ByteStr::from("7d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"));
    let json = h.to_json();
    let content = vec![b'x'; size];
    let start = Instant::now();
    for _ in 0..iters {
        black_box(key.sign(black_box(&json), black_box(&content)));
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(iters);
    println!("header_json_bytes={} content_bytes={size}", json.len());
    println!("hmac_floor_ns={ns:.1}");
}
