//! Codec benchmarks: encode, decode+verify and a bare HMAC-SHA256 per content size, and
//! the header JSON parsers (serde_json vs simd-json) on the reference vectors' headers.
//!
//! Run: `cargo bench -p sockchat-proto --bench codec -- --warm-up-time 1 --measurement-time 3`.
//! Groups are per content size (`64B`, `1KiB`, `64KiB`, `1MiB`), each with `hmac`,
//! `decode_verify` and `encode`; throughput is counted in *content* bytes, so within a
//! group the three throughputs compare directly (the issue targets are ratios within one run:
//! decode+verify of 1 MiB ≥ 90 % of bare HMAC; decode+verify of a 64 B frame ≤ 2.5× one
//! HMAC over its header JSON + content). Figures: bench-results/proto.md.

use std::hint::black_box;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::Deserialize;
use sockchat_proto::header::TEXT_UTF8;
use sockchat_proto::{decode_frame, encode_into, ByteStr, FrameType, Header, Key, Limits};

const SIZES: [(usize, &str); 4] = [
    (64, "64B"),
    (1024, "1KiB"),
    (64 * 1024, "64KiB"),
    (1024 * 1024, "1MiB"),
];

/// A `message` header as the server sends it: text content type and a UUID session id.
fn message_header() -> Header {
    Header::new(
        FrameType::Message,
        Some(TEXT_UTF8),
        Some(ByteStr::from("3f2b8c1e-6d4a-4e8b-9c71-2a5d0e9f1b34")),
    )
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

fn codec(c: &mut Criterion) {
    let key = Key::reference_default();
    let limits = Limits::default();
    let header = message_header();
    let json = header.to_json();

    // One group per size, measuring the bare HMAC, decode+verify and encode back to back:
    // the machine is shared and its load drifts within a run, so the operations a target
    // ratio compares are measured as close together in time as possible.
    for (len, name) in SIZES {
        let body = content(len);
        let mut out = BytesMut::new();
        encode_into(&key, &header, &body, &mut out).unwrap();
        let wire = out.freeze();
        let check = decode_frame(&key, &limits, wire.clone()).unwrap();
        assert_eq!(&check.content[..], &body[..]);

        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Bytes(len as u64));
        // `Key::sign` clones the pre-keyed HMAC state, as encode and decode do, and hashes
        // the same header JSON + content as the frame's tag covers.
        g.bench_function("hmac", |b| {
            b.iter(|| key.sign(black_box(&json), black_box(&body)))
        });
        // `Bytes::clone` is a reference-count increment: the frame is not copied.
        g.bench_function("decode_verify", |b| {
            b.iter(|| decode_frame(&key, &limits, black_box(wire.clone())).unwrap())
        });
        // A reused buffer, cleared each time, as a connection's write buffer would be.
        let mut out = BytesMut::with_capacity(64 + json.len() + len);
        g.bench_function("encode", |b| {
            b.iter(|| {
                out.clear();
                encode_into(&key, &header, black_box(&body), &mut out).unwrap();
                black_box(out.len())
            })
        });
        g.finish();
    }
}

/// The shape `Header::parse` reads, borrowed from the (scratch) input: simd-json
/// unescapes in place, so plain `&str` borrows work for it even with escapes.
#[derive(Deserialize)]
#[allow(dead_code)] // Fields are read only by the deserializer.
struct BorrowedHeader<'a> {
    #[serde(rename = "type")]
    kind: Option<&'a str>,
    #[serde(default)]
    content_type: Option<&'a str>,
    #[serde(default)]
    session_id: Option<&'a str>,
    #[serde(default)]
    features: Option<Vec<&'a str>>,
    #[serde(default)]
    message_id: Option<&'a str>,
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    total_len: Option<u64>,
}

/// Header JSONs of the reference vectors' valid frames.
fn reference_headers() -> Vec<Bytes> {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../tests/vectors/reference-frames.json")).unwrap();
    v["valid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let frame = B64.decode(case["frame_b64"].as_str().unwrap()).unwrap();
            let len = u32::from_be_bytes(frame[12..16].try_into().unwrap()) as usize;
            Bytes::copy_from_slice(&frame[64..64 + len])
        })
        .collect()
}

fn header_json(c: &mut Criterion) {
    let headers = reference_headers();
    // Every header parses with both parsers; none has escapes (serde_json's borrowed &str
    // would refuse them), so the borrowed struct is an equivalent for both.
    for h in &headers {
        Header::parse(h).unwrap();
        serde_json::from_slice::<BorrowedHeader<'_>>(h).unwrap();
        let mut s = h.to_vec();
        simd_json::serde::from_slice::<BorrowedHeader<'_>>(&mut s).unwrap();
    }
    let total: usize = headers.iter().map(Bytes::len).sum();
    let mut g = c.benchmark_group("header_json");
    // One iteration parses all 13 reference headers (81 to 122 B, 1,446 B in all).
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("serde_json/Header::parse", |b| {
        b.iter(|| {
            for h in &headers {
                black_box(Header::parse(black_box(h)).unwrap());
            }
        })
    });
    g.bench_function("serde_json/borrowed_struct", |b| {
        b.iter(|| {
            for h in &headers {
                black_box(serde_json::from_slice::<BorrowedHeader<'_>>(black_box(h)).unwrap());
            }
        })
    });
    // simd-json needs a mutable buffer: copy each header into a reused scratch Vec.
    let mut scratch = Vec::with_capacity(1024);
    g.bench_function("simd_json/borrowed_struct", |b| {
        b.iter(|| {
            for h in &headers {
                scratch.clear();
                scratch.extend_from_slice(black_box(h));
                black_box(
                    simd_json::serde::from_slice::<BorrowedHeader<'_>>(&mut scratch).unwrap(),
                );
            }
        })
    });
    // The same with simd-json's reusable internal buffers (its fastest entry point).
    let mut scratch = Vec::with_capacity(1024);
    let mut buffers = simd_json::Buffers::new(1024);
    g.bench_function("simd_json/borrowed_struct+buffers", |b| {
        b.iter(|| {
            for h in &headers {
                scratch.clear();
                scratch.extend_from_slice(black_box(h));
                black_box(
                    simd_json::serde::from_slice_with_buffers::<BorrowedHeader<'_>>(
                        &mut scratch,
                        &mut buffers,
                    )
                    .unwrap(),
                );
            }
        })
    });
    g.finish();
}

criterion_group!(benches, codec, header_json);
criterion_main!(benches);
