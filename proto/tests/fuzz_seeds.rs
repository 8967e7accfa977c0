//! Each fuzz target body (`sockchat_proto::fuzzing`, feature `fuzzing`) over seed inputs:
//! the reference vectors in the `deframer` target's layout (as `fuzz/seed_corpus.py`
//! writes them) and pseudo-random inputs for both targets. A finding panics. This keeps
//! the bodies compiled and running in CI, which does not build the cargo-fuzz crate.

use base64::Engine as _;
use sockchat_proto::fuzzing;

fn vectors() -> serde_json::Value {
    serde_json::from_str(include_str!("vectors/reference-frames.json")).expect("vectors JSON")
}

fn b64(v: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("base64 string"))
        .expect("base64")
}

/// Deterministic pseudo-random inputs of lengths 0..=`max_len` (xorshift64).
fn noise_inputs(count: usize, max_len: usize) -> Vec<Vec<u8>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..count)
        .map(|_| {
            let len = next() as usize % (max_len + 1);
            (0..len).map(|_| next() as u8).collect()
        })
        .collect()
}

/// The `deframer` seeds `fuzz/seed_corpus.py` writes: raw mode for every vector frame up
/// to 4 KiB (three piece shapes), signed mode for each valid default-key frame whose
/// header JSON fits the shape byte (the target rebuilds exactly that frame), and the
/// six-frame stream.
fn deframer_seeds() -> Vec<Vec<u8>> {
    let v = vectors();
    let mut seeds = Vec::new();
    let valid = v["valid"].as_array().unwrap();
    for case in valid.iter().chain(v["invalid"].as_array().unwrap()) {
        let frame = b64(&case["frame_b64"]);
        if frame.len() > 4096 {
            continue;
        }
        // Mode bit 1: the vectors' custom key.
        let mode = if b64(&case["key_b64"]) == b"default-key" {
            0
        } else {
            2
        };
        for shape in [0u8, 7, 200] {
            seeds.push([&[mode, shape][..], &frame].concat());
        }
    }
    for case in valid {
        if b64(&case["key_b64"]) != b"default-key" {
            continue;
        }
        let frame = b64(&case["frame_b64"]);
        let header_len = u32::from_be_bytes(frame[12..16].try_into().unwrap());
        if let Ok(shape) = u8::try_from(header_len) {
            seeds.push([&[1, shape][..], &frame[64..]].concat());
        }
    }
    let stream = b64(&v["stream_b64"]);
    for shape in [0u8, 3, 31, 255] {
        seeds.push([&[0, shape][..], &stream].concat());
    }
    seeds
}

#[test]
fn deframer_over_the_seed_corpus_and_noise() {
    let seeds = deframer_seeds();
    assert!(seeds.len() > 40, "{} seeds", seeds.len());
    for s in seeds.iter().chain(&noise_inputs(300, 600)) {
        fuzzing::deframer(s);
    }
}

#[test]
fn session_over_noise_and_the_vectors() {
    let mut seeds = noise_inputs(400, 2000);
    let v = vectors();
    for case in v["valid"].as_array().unwrap() {
        seeds.push(b64(&case["frame_b64"]));
    }
    for s in &seeds {
        fuzzing::session(s);
    }
}
