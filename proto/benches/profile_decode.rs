//! A fixed-iteration driver for profiling decode+verify against its parts, where
//! criterion's adaptive loop gets in the way (callgrind needs a known call count; `perf`
//! counters are not available on this VM).
//!
//! `cargo bench -p sockchat-proto --bench profile_decode -- MODE SIZE ITERS`
//! * MODE `decode` | `hmac` | `parse` | `crc`: runs that step ITERS times on a `message`
//!   frame with SIZE bytes of content (for callgrind: Ir per call = total / ITERS).
//! * MODE `compare`: times all four natively, interleaved in rounds so that load from
//!   other processes hits them alike, and prints the best round of each (ns per call).
//!
//! Under valgrind, sha2 falls back to its portable code (valgrind does not expose SHA-NI),
//! so only the non-HMAC instruction counts carry over to the real machine.

use std::hint::black_box;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use sockchat_proto::header::TEXT_UTF8;
use sockchat_proto::{decode_frame, encode_into, ByteStr, FrameType, Header, Key, Limits};

struct Case {
    key: Key,
    limits: Limits,
    wire: Bytes,
    json: Bytes,
    content: Vec<u8>,
}

fn case(size: usize) -> Case {
    let key = Key::reference_default();
    let header = Header::new(
        FrameType::Message,
        Some(TEXT_UTF8),
        Some(ByteStr::from("3f2b8c1e-6d4a-4e8b-9c71-2a5d0e9f1b34")),
    );
    let content: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
    let mut out = BytesMut::new();
    encode_into(&key, &header, &content, &mut out).unwrap();
    Case {
        key,
        limits: Limits::default(),
        wire: out.freeze(),
        json: header.to_json(),
        content,
    }
}

fn run(mode: &str, c: &Case, iters: u64) {
    match mode {
        "decode" => {
            for _ in 0..iters {
                black_box(decode_frame(&c.key, &c.limits, black_box(c.wire.clone())).unwrap());
            }
        }
        "hmac" => {
            for _ in 0..iters {
                black_box(c.key.sign(black_box(&c.json), black_box(&c.content)));
            }
        }
        "parse" => {
            for _ in 0..iters {
                black_box(Header::parse(black_box(&c.json)).unwrap());
            }
        }
        "crc" => {
            for _ in 0..iters {
                black_box(crc32fast::hash(black_box(&c.json)));
                black_box(crc32fast::hash(black_box(&c.content)));
            }
        }
        other => panic!("unknown mode {other}"),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; ignore flags.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mode = args.first().map_or("compare", String::as_str);
    let size: usize = args.get(1).map_or(64, |s| s.parse().unwrap());
    let iters: u64 = args.get(2).map_or(10_000, |s| s.parse().unwrap());
    let c = case(size);
    if mode != "compare" {
        run(mode, &c, iters);
        return;
    }
    let modes = ["decode", "hmac", "parse", "crc"];
    let mut best = [f64::INFINITY; 4];
    for _round in 0..30 {
        for (i, m) in modes.iter().enumerate() {
            let t = Instant::now();
            run(m, &c, iters);
            best[i] = best[i].min(t.elapsed().as_nanos() as f64 / iters as f64);
        }
    }
    println!("content {size} B, best of 30 rounds of {iters} calls, ns per call:");
    for (m, b) in modes.iter().zip(best) {
        println!("  {m:<7} {b:>12.1}");
    }
    println!(
        "  decode/hmac time ratio {:.2}; decode - (hmac + parse + crc) = {:.1} ns",
        best[0] / best[1],
        best[0] - best[1] - best[2] - best[3]
    );
}
