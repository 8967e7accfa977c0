//! The reference encoder's frames (tests/vectors/reference-frames.json, a byte-identical
//! copy of shared/vectors/reference-frames.json).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sockchat_proto::{
    decode_frame, encode_into, encode_parts, ByteStr, Decoded, Deframer, FrameType, Header, Key,
    Limits,
};

fn vectors() -> Value {
    serde_json::from_str(include_str!("vectors/reference-frames.json")).unwrap()
}

fn b64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap()).unwrap()
}

fn opt_str(v: &Value) -> Option<&str> {
    v.as_str()
}

#[test]
fn valid_frames_decode_and_reencode_byte_for_byte() {
    let v = vectors();
    let valid = v["valid"].as_array().unwrap();
    assert_eq!(valid.len(), 13);
    for case in valid {
        let name = case["name"].as_str().unwrap();
        let key = Key::new(&b64(&case["key_b64"]));
        let wire = Bytes::from(b64(&case["frame_b64"]));
        let frame = decode_frame(&key, &Limits::default(), wire.clone())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            frame.header.kind.as_str(),
            case["type"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            frame.header.content_type.as_deref(),
            opt_str(&case["content_type"]),
            "{name}"
        );
        assert_eq!(
            frame.header.session_id.as_deref(),
            opt_str(&case["session_id"]),
            "{name}"
        );
        assert_eq!(&frame.content[..], &b64(&case["content_b64"])[..], "{name}");
        assert_eq!(frame.raw, wire, "{name}");

        let header = Header::new(
            FrameType::from_wire(case["type"].as_str().unwrap()).unwrap(),
            opt_str(&case["content_type"]).map(ByteStr::from),
            opt_str(&case["session_id"]).map(ByteStr::from),
        );
        let content = b64(&case["content_b64"]);
        let mut out = BytesMut::new();
        encode_into(&key, &header, &content, &mut out).unwrap();
        assert_eq!(&out[..], &wire[..], "{name}: encode_into");
        let parts = encode_parts(&key, &header, Bytes::from(content)).unwrap();
        assert_eq!(
            [&parts.head[..], &parts.content[..]].concat(),
            &wire[..],
            "{name}: encode_parts"
        );
    }
}

#[test]
fn max_content_frame_rebuilt_from_its_pattern() {
    let v = vectors();
    let case = &v["max_content"];
    let key = Key::new(&b64(&case["key_b64"]));
    let content: Vec<u8> = (0..=255u8).cycle().take(256 * 40960).collect();
    let header = Header::new(
        FrameType::Message,
        opt_str(&case["content_type"]).map(ByteStr::from),
        opt_str(&case["session_id"]).map(ByteStr::from),
    );
    let mut out = BytesMut::new();
    encode_into(&key, &header, &content, &mut out).unwrap();
    assert_eq!(out.len() as u64, case["frame_len"].as_u64().unwrap());
    let digest: String = Sha256::digest(&out)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digest, case["frame_sha256"].as_str().unwrap());
    assert!(out.starts_with(&b64(&case["frame_prefix_b64"])));
    let frame = decode_frame(&key, &Limits::default(), out.freeze()).unwrap();
    assert_eq!(&frame.content[..], &content[..]);
}

#[test]
fn invalid_frames_give_their_errors() {
    let v = vectors();
    let invalid = v["invalid"].as_array().unwrap();
    assert_eq!(invalid.len(), 12);
    for case in invalid {
        let name = case["name"].as_str().unwrap();
        let key = Key::new(&b64(&case["key_b64"]));
        let wire = Bytes::from(b64(&case["frame_b64"]));
        let err = decode_frame(&key, &Limits::default(), wire.clone()).expect_err(name);
        assert_eq!(err.kind(), case["error"].as_str().unwrap(), "{name}: {err}");
        // The streaming deframer agrees: the same error, or (for a truncated frame) a
        // "need more" followed by Truncated at end of input.
        let mut d = Deframer::new(Limits::default());
        d.extend_from_slice(&wire);
        match d.decode(&key) {
            Err(e) => assert_eq!(e, err, "{name}"),
            Ok(Decoded::NeedMore(_)) => {
                assert_eq!(d.finish().unwrap_err().kind(), "truncated", "{name}")
            }
            Ok(Decoded::Frame(f)) => panic!("{name}: decoded {f:?}"),
        }
    }
}

fn stream_frames(d: &mut Deframer, key: &Key, out: &mut Vec<Bytes>) {
    loop {
        match d.decode(key).unwrap() {
            Decoded::Frame(f) => out.push(f.raw),
            Decoded::NeedMore(n) => {
                assert!(n > 0);
                break;
            }
        }
    }
}

fn expected_stream() -> (Vec<u8>, Vec<Bytes>) {
    let v = vectors();
    let stream = b64(&v["stream_b64"]);
    let frames: Vec<Bytes> = v["valid"].as_array().unwrap()[..6]
        .iter()
        .map(|c| Bytes::from(b64(&c["frame_b64"])))
        .collect();
    assert_eq!(stream, frames.concat());
    let names: Vec<&str> = v["stream_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let valid_names: Vec<&str> = v["valid"].as_array().unwrap()[..6]
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, valid_names);
    (stream, frames)
}

#[test]
fn stream_split_at_every_byte_boundary() {
    let (stream, frames) = expected_stream();
    let key = Key::reference_default();
    for split in 0..=stream.len() {
        let mut d = Deframer::new(Limits::default());
        let mut got = Vec::new();
        for piece in [&stream[..split], &stream[split..]] {
            d.extend_from_slice(piece);
            stream_frames(&mut d, &key, &mut got);
        }
        assert_eq!(got, frames, "split at {split}");
        d.finish().unwrap();
    }
}

#[test]
fn stream_fed_one_byte_at_a_time_and_in_random_multiway_splits() {
    let (stream, frames) = expected_stream();
    let key = Key::reference_default();
    let mut d = Deframer::new(Limits::default());
    let mut got = Vec::new();
    for b in &stream {
        d.extend_from_slice(std::slice::from_ref(b));
        stream_frames(&mut d, &key, &mut got);
    }
    assert_eq!(got, frames);

    // A small deterministic LCG: reproducible splits without a seed file.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..500 {
        let mut d = Deframer::new(Limits::default());
        let mut got = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let step = 1 + (state >> 33) as usize % 160;
            let end = (at + step).min(stream.len());
            d.extend_from_slice(&stream[at..end]);
            stream_frames(&mut d, &key, &mut got);
            at = end;
        }
        assert_eq!(got, frames);
    }
}
