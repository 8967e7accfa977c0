//! Frames for tests: valid ones from the encoder, deliberately broken ones (any header
//! JSON, any chunk numbers, with correct lengths, CRCs and HMAC so only what the test
//! chose is wrong), the reference vectors, and helpers to describe what came back.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use sockchat_proto::{
    decode_frame, encode_into, encode_unchecked, ByteStr, Frame, FrameType, Header, Key, Limits,
};

/// `content_type` of binary content and of the handshake frames.
pub const OCTET: &str = "application/octet-stream";
/// `content_type` of text messages.
pub const TEXT_UTF8: &str = "text/plain; charset=utf-8";
/// The content of the server's shutdown `disconnect`.
pub const SHUTDOWN_CONTENT: &[u8] =
    br#"{"message": "Disconnecting", "reason": "Server shutting down"}"#;
/// The content of a client's `disconnect`.
pub const CLIENT_DISCONNECT_CONTENT: &[u8] =
    br#"{"message": "Disconnecting", "reason": "Client disconnecting"}"#;

/// Builds one frame.
pub fn build_frame(
    key: &Key,
    kind: FrameType,
    content_type: Option<&str>,
    session_id: Option<&str>,
    content: &[u8],
) -> Vec<u8> {
    let header = Header::new(
        kind,
        content_type.map(ByteStr::from),
        session_id.map(ByteStr::from),
    );
    build_frame_with(key, &header, content)
}

/// Builds one frame from a full header (extension keys included).
pub fn build_frame_with(key: &Key, header: &Header, content: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_into(key, header, content, &mut out).expect("encode frame");
    out.to_vec()
}

/// Deterministic pseudo-random bytes (xorshift64*), so misplaced slices are caught.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Checks the form of a UUIDv4 in its canonical text form.
pub fn assert_uuid_v4(s: &str) {
    let b = s.as_bytes();
    assert_eq!(b.len(), 36, "session id {s:?} is not a canonical UUID");
    for (i, &c) in b.iter().enumerate() {
        if [8, 13, 18, 23].contains(&i) {
            assert_eq!(c, b'-', "session id {s:?}");
        } else {
            assert!(
                c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
                "session id {s:?} is not lowercase hex"
            );
        }
    }
    assert_eq!(b[14], b'4', "session id {s:?} is not version 4");
    assert!(
        matches!(b[19], b'8' | b'9' | b'a' | b'b'),
        "session id {s:?} has not the RFC 4122 variant"
    );
}

/// The reference vectors file (shared with the proto crate's tests).
pub fn vectors() -> serde_json::Value {
    serde_json::from_str(include_str!(
        "../../proto/tests/vectors/reference-frames.json"
    ))
    .expect("vectors JSON")
}

/// Decodes a base64 field of a vector.
pub fn b64(v: &serde_json::Value) -> Vec<u8> {
    B64.decode(v.as_str().expect("base64 string"))
        .expect("base64")
}
/// A frame with this exact header JSON (any bytes) and content: correct lengths, CRCs and
/// HMAC, so only what the test put in the header JSON (or changes afterwards) is wrong.
pub fn raw_frame(key: &Key, header_json: &[u8], content: &[u8]) -> Vec<u8> {
    encode_unchecked(key, header_json, content)
}

/// Header JSON in the reference's format (`json.dumps` defaults).
pub fn reference_header_json(kind: &str, content_type: Option<&str>, sid: Option<&str>) -> String {
    let q = |v: Option<&str>| v.map_or("null".to_string(), |s| format!("\"{s}\""));
    format!(
        "{{\"type\": \"{kind}\", \"content_type\": {}, \"session_id\": {}}}",
        q(content_type),
        q(sid)
    )
}

/// A `chunk` frame (extension) with any values, well formed otherwise.
pub fn chunk_frame(
    key: &Key,
    sid: &str,
    message_id: &str,
    index: u64,
    count: u64,
    total_len: u64,
    content: &[u8],
) -> Vec<u8> {
    let h = format!(
        "{{\"type\": \"chunk\", \"content_type\": \"application/octet-stream\", \
         \"session_id\": \"{sid}\", \"message_id\": \"{message_id}\", \"index\": {index}, \
         \"count\": {count}, \"total_len\": {total_len}}}"
    );
    raw_frame(key, h.as_bytes(), content)
}
/// Short human-readable summary of frames, for assertion messages.
pub fn describe(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| {
            format!(
                "{} ({} bytes: {:?})",
                f.header.kind,
                f.content.len(),
                String::from_utf8_lossy(&f.content[..f.content.len().min(120)])
            )
        })
        .collect()
}

/// Decodes exactly one frame from `bytes` with the default key (for building expectations).
pub fn decode_one(bytes: &[u8]) -> Frame {
    decode_frame(
        &Key::reference_default(),
        &Limits::default(),
        Bytes::copy_from_slice(bytes),
    )
    .expect("decode")
}
