//! The header JSON: parsing (zero-copy where the JSON has no escapes) and writing in
//! exactly the bytes Python's `json.dumps` produces.
//!
//! Parsing first tries a byte-exact match of the layout every reference peer writes (no
//! escapes, keys in the reference's order), which costs a few comparisons; anything else goes
//! to `serde_json`, borrowing from the frame buffer. The criterion bench `header_json`
//! (proto/benches/codec.rs, figures in bench-results/proto.md) compared `serde_json` with
//! `simd-json` on the reference vectors' ~110-byte headers: `simd_json::serde::from_slice`
//! was 1.9–2.3× slower (it allocates its tape and string buffers per call); its
//! buffer-reusing entry point was within the run-to-run noise of `serde_json` (0.76–0.98×).
//! `serde_json` is kept: no speed reason to switch, one fewer dependency, no `unsafe` input
//! handling, and the fast path above takes the common case off both.

use std::borrow::Cow;
use std::fmt;
use std::ops::{Deref, Range};

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;

use crate::error::DecodeError;
use crate::frame::FrameType;

/// Immutable UTF-8 text backed by [`Bytes`], so strings taken from a received frame share
/// its buffer instead of being copied.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteStr(Bytes);

impl ByteStr {
    /// Wraps a static string without allocating.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }

    /// Checks `bytes` is UTF-8 and wraps it.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Self(bytes))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checks or guarantees UTF-8 and the bytes are immutable.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl Deref for ByteStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for ByteStr {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&str> for ByteStr {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl PartialEq<str> for ByteStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ByteStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for ByteStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ByteStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `content_type` the reference uses for control frames.
pub const OCTET_STREAM: ByteStr = ByteStr::from_static("application/octet-stream");
/// The `content_type` of `disconnect` frames.
pub const APPLICATION_JSON: ByteStr = ByteStr::from_static("application/json");
/// The `content_type` the reference client gives text messages.
pub const TEXT_UTF8: ByteStr = ByteStr::from_static("text/plain; charset=utf-8");

/// Where a `chunk` frame's content belongs (chunk extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkInfo {
    /// Identifies the message the chunk belongs to, unique among the sender's partial
    /// messages.
    pub message_id: ByteStr,
    /// 0-based position of this chunk.
    pub index: u32,
    /// Number of chunks in the message.
    pub count: u32,
    /// Length of the whole message in bytes.
    pub total_len: u64,
}

impl ChunkInfo {
    /// Chunk `index` of `count` of the message `message_id`, `total_len` bytes in all.
    pub fn new(message_id: impl Into<ByteStr>, index: u32, count: u32, total_len: u64) -> Self {
        Self {
            message_id: message_id.into(),
            index,
            count,
            total_len,
        }
    }
}

/// A parsed header JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The frame's type (`type`).
    pub kind: FrameType,
    /// `content_type`, `null` as `None`.
    pub content_type: Option<ByteStr>,
    /// `session_id`, `null` as `None`.
    pub session_id: Option<ByteStr>,
    /// Extension: capabilities asked for (client `session_ack`) or granted (server's answer).
    pub features: Option<Vec<ByteStr>>,
    /// Extension: present on `chunk` frames.
    pub chunk: Option<ChunkInfo>,
    /// Rooms extension: the room of a `join`, `leave` or `message` (and its chunks).
    pub room: Option<ByteStr>,
    /// Rooms extension: the sender's session id on a delivered room message.
    pub from: Option<ByteStr>,
}

impl Header {
    /// A header with the three reference keys only.
    pub fn new(
        kind: FrameType,
        content_type: Option<ByteStr>,
        session_id: Option<ByteStr>,
    ) -> Self {
        Self {
            kind,
            content_type,
            session_id,
            features: None,
            chunk: None,
            room: None,
            from: None,
        }
    }

    /// Parses header JSON held in `json` (a slice of the frame buffer); strings without
    /// escapes are returned as slices of it. Unknown keys are ignored.
    pub fn parse(json: &Bytes) -> Result<Self, DecodeError> {
        Self::parse_within(json, 0..json.len())
    }

    /// Parses the header JSON at `range` of `buf` (the whole frame), so strings can share
    /// `buf` without first taking a separate `Bytes` of the JSON.
    pub(crate) fn parse_within(buf: &Bytes, range: Range<usize>) -> Result<Self, DecodeError> {
        if let Some(h) = parse_canonical(buf, range.clone()) {
            return Ok(h);
        }
        let json = &buf[range];
        // serde's derived struct visitor also accepts a JSON array of the fields in order;
        // the protocol (and the reference) only knows objects.
        if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(DecodeError::BadHeaderJson(
                "header is not a JSON object".into(),
            ));
        }
        let raw: RawHeader<'_> = serde_json::from_slice(json).map_err(bad_json)?;
        let share = |s: Text<'_>| -> ByteStr {
            match s.0 {
                Cow::Borrowed(b) => ByteStr(buf.slice_ref(b.as_bytes())),
                Cow::Owned(o) => ByteStr::from(o),
            }
        };
        let name = raw
            .kind
            .ok_or_else(|| DecodeError::BadHeaderJson("missing \"type\"".into()))?;
        let kind = FrameType::from_wire(&name.0)
            .ok_or_else(|| DecodeError::UnknownType(excerpt(&name.0, 64)))?;
        let chunk = if kind == FrameType::Chunk {
            match (raw.message_id, raw.index, raw.count, raw.total_len) {
                (Some(id), Some(index), Some(count), Some(total_len)) => Some(ChunkInfo {
                    message_id: share(id),
                    index,
                    count,
                    total_len,
                }),
                _ => {
                    return Err(DecodeError::BadHeaderJson(
                        "chunk needs message_id, index, count and total_len".into(),
                    ))
                }
            }
        } else {
            None
        };
        Ok(Self {
            kind,
            content_type: raw.content_type.map(share),
            session_id: raw.session_id.map(share),
            features: raw.features.map(|f| f.into_iter().map(share).collect()),
            chunk,
            room: raw.room.map(share),
            from: raw.from.map(share),
        })
    }

    /// Appends this header as JSON, byte-identical to Python's
    /// `json.dumps({"type": ..., "content_type": ..., "session_id": ...})`; the extension
    /// keys follow in a fixed order when present (`room`, `from`, `features`, then the
    /// chunk keys).
    pub fn write_json(&self, out: &mut impl BufMut) {
        out.put_slice(b"{\"type\": ");
        write_json_str(out, self.kind.as_str());
        out.put_slice(b", \"content_type\": ");
        write_opt(out, self.content_type.as_deref());
        out.put_slice(b", \"session_id\": ");
        write_opt(out, self.session_id.as_deref());
        if let Some(room) = &self.room {
            out.put_slice(b", \"room\": ");
            write_json_str(out, room);
        }
        if let Some(from) = &self.from {
            out.put_slice(b", \"from\": ");
            write_json_str(out, from);
        }
        if let Some(features) = &self.features {
            out.put_slice(b", \"features\": [");
            for (i, f) in features.iter().enumerate() {
                if i > 0 {
                    out.put_slice(b", ");
                }
                write_json_str(out, f);
            }
            out.put_u8(b']');
        }
        if let Some(c) = &self.chunk {
            out.put_slice(b", \"message_id\": ");
            write_json_str(out, &c.message_id);
            out.put_slice(b", \"index\": ");
            put_int(out, u64::from(c.index));
            out.put_slice(b", \"count\": ");
            put_int(out, u64::from(c.count));
            out.put_slice(b", \"total_len\": ");
            put_int(out, c.total_len);
        }
        out.put_u8(b'}');
    }

    /// The header JSON as a new buffer.
    pub fn to_json(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(128);
        self.write_json(&mut out);
        out.freeze()
    }
}

/// The fast path: the exact bytes every reference peer and this crate's writer produce for
/// a non-chunk frame, `{"type": "T", "content_type": C, "session_id": S}` with C and S
/// plain-ASCII strings or `null`. It accepts only inputs serde_json would read the same
/// way, and returns `None` for anything else (other key order or spacing, escapes,
/// non-ASCII, extra keys, chunk frames), which then takes the general parser. On ~110-byte
/// headers this replaces most of the decode cost of a small frame (bench-results/proto.md).
fn parse_canonical(buf: &Bytes, range: Range<usize>) -> Option<Header> {
    const TYPE_KEY: &[u8] = b"{\"type\": \"";
    let start = range.start;
    let json = &buf[range];
    // One branch-free pass (the compiler vectorises it): printable ASCII only and no
    // backslash means no escapes anywhere and valid UTF-8 everywhere, so the string values
    // below need no further checks.
    let plain = json
        .iter()
        .fold(true, |ok, &b| ok & (0x20..0x7f).contains(&b) & (b != b'\\'));
    if !plain || !json.starts_with(TYPE_KEY) {
        return None;
    }
    let t = TYPE_KEY.len() + memchr::memchr(b'"', &json[TYPE_KEY.len()..])?;
    let kind = FrameType::from_wire_bytes(&json[TYPE_KEY.len()..t])?;
    if kind == FrameType::Chunk {
        return None;
    }
    let (content_type, next) = opt_field(json, t + 1, b", \"content_type\": ")?;
    let content_type = content_type.map(|r| {
        interned(&json[r.clone()])
            .unwrap_or_else(|| ByteStr(buf.slice(start + r.start..start + r.end)))
    });
    let (session_id, next) = opt_field(json, next, b", \"session_id\": ")?;
    let session_id = session_id.map(|r| ByteStr(buf.slice(start + r.start..start + r.end)));
    if &json[next..] != b"}" {
        return None;
    }
    Some(Header::new(kind, content_type, session_id))
}

/// The protocol's own content types as static strings: sharing them costs no reference
/// count (a shared `Bytes` slice of the frame buffer costs an atomic increment and
/// decrement per frame, with the frame buffer kept alive as long as the header is).
fn interned(content_type: &[u8]) -> Option<ByteStr> {
    [OCTET_STREAM, APPLICATION_JSON, TEXT_UTF8]
        .into_iter()
        .find(|known| &known.as_bytes()[..] == content_type)
}

/// `key` then `null` or a string; where the string's value is in `json`, and the index
/// after it. The caller has checked that `json` is plain printable ASCII without
/// backslashes.
fn opt_field(json: &[u8], at: usize, key: &[u8]) -> Option<(Option<Range<usize>>, usize)> {
    if json.get(at..at + key.len())? != key {
        return None;
    }
    let at = at + key.len();
    match json.get(at)? {
        b'n' if json.get(at..at + 4)? == b"null" => Some((None, at + 4)),
        b'"' => {
            let end = at + 1 + memchr::memchr(b'"', &json[at + 1..])?;
            Some((Some(at + 1..end), end + 1))
        }
        _ => None,
    }
}

#[derive(Deserialize, Default)]
// Every key is optional (absent is `None`); `Header::parse` decides what is required.
#[serde(default)]
struct RawHeader<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Text<'a>>,
    #[serde(borrow)]
    content_type: Option<Text<'a>>,
    #[serde(borrow)]
    session_id: Option<Text<'a>>,
    #[serde(borrow)]
    features: Option<Vec<Text<'a>>>,
    #[serde(borrow)]
    message_id: Option<Text<'a>>,
    index: Option<u32>,
    count: Option<u32>,
    total_len: Option<u64>,
    #[serde(borrow)]
    room: Option<Text<'a>>,
    #[serde(borrow)]
    from: Option<Text<'a>>,
}

/// A JSON string borrowed from the input when it has no escapes. serde only borrows a
/// bare `Cow<str>` field, not one inside `Option` or `Vec`, hence this visitor.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// serde_json's messages can quote a peer's string value whole ("invalid type: string
/// \"...\""); the text goes back in an `error` frame, so it is cut to a short excerpt.
fn bad_json(e: serde_json::Error) -> DecodeError {
    DecodeError::BadHeaderJson(excerpt(&e.to_string(), 120))
}

/// At most `max` chars of text derived from peer input, so an `error` frame never
/// reflects a large payload back.
fn excerpt(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

fn put_int(out: &mut impl BufMut, v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.put_slice(&buf[i..]);
}

fn write_opt(out: &mut impl BufMut, s: Option<&str>) {
    match s {
        Some(s) => write_json_str(out, s),
        None => out.put_slice(b"null"),
    }
}

/// Python's `ensure_ascii` string encoding: `"` and `\` escaped, `\n \r \t \b \f` by
/// name, every other character outside printable ASCII as lowercase `\uXXXX`
/// (astral characters as a surrogate pair).
pub(crate) fn write_json_str(out: &mut impl BufMut, s: &str) {
    out.put_u8(b'"');
    let bytes = s.as_bytes();
    let plain = |b: u8| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
    if bytes.iter().all(|&b| plain(b)) {
        out.put_slice(bytes);
    } else {
        for ch in s.chars() {
            match ch {
                '"' => out.put_slice(b"\\\""),
                '\\' => out.put_slice(b"\\\\"),
                '\n' => out.put_slice(b"\\n"),
                '\r' => out.put_slice(b"\\r"),
                '\t' => out.put_slice(b"\\t"),
                '\u{8}' => out.put_slice(b"\\b"),
                '\u{c}' => out.put_slice(b"\\f"),
                c if (' '..='~').contains(&c) => out.put_u8(c as u8),
                c => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        put_u_escape(out, *unit);
                    }
                }
            }
        }
    }
    out.put_u8(b'"');
}

fn put_u_escape(out: &mut impl BufMut, unit: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.put_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.put_u8(HEX[usize::from((unit >> shift) & 0xf)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of(h: &Header) -> String {
        String::from_utf8(h.to_json().to_vec()).unwrap()
    }

    #[test]
    fn writes_python_json_dumps_form() {
        let h = Header::new(FrameType::Message, Some(TEXT_UTF8), None);
        assert_eq!(
            json_of(&h),
            r#"{"type": "message", "content_type": "text/plain; charset=utf-8", "session_id": null}"#
        );
    }

    #[test]
    fn escapes_like_ensure_ascii() {
        // Expected output produced by CPython 3.11: json.dumps("a\"\\\n\x01\x7f\u00e9\u4f60\U0001F600")
        let h = Header::new(
            FrameType::Message,
            Some(ByteStr::from("a\"\\\n\u{1}\u{7f}\u{e9}\u{4f60}\u{1F600}")),
            None,
        );
        assert!(json_of(&h).contains(r#""a\"\\\n\u0001\u007f\u00e9\u4f60\ud83d\ude00""#));
    }

    #[test]
    fn parses_any_key_order_and_ignores_unknown_keys() {
        let json = Bytes::from_static(
            br#"{"x": {"deep": [1, 2]}, "session_id": "s", "type": "heartbeat", "content_type": null}"#,
        );
        let h = Header::parse(&json).unwrap();
        assert_eq!(h.kind, FrameType::Heartbeat);
        assert_eq!(h.session_id.as_deref(), Some("s"));
        assert_eq!(h.content_type, None);
    }

    #[test]
    fn borrowed_strings_share_the_frame_buffer() {
        let json = Bytes::from_static(
            br#"{"type": "message", "content_type": "a/b", "session_id": "id"}"#,
        );
        let h = Header::parse(&json).unwrap();
        let ct = h.content_type.unwrap();
        let range = json.as_ptr() as usize..json.as_ptr() as usize + json.len();
        assert!(range.contains(&(ct.as_bytes().as_ptr() as usize)));
    }

    #[test]
    fn the_canonical_fast_path_agrees_with_serde_json() {
        let cases: [&[u8]; 8] = [
            br#"{"type": "message", "content_type": "text/plain; charset=utf-8", "session_id": "abc"}"#,
            br#"{"type": "error", "content_type": null, "session_id": null}"#,
            br#"{"type": "heartbeat", "content_type": "", "session_id": ""}"#,
            // Not canonical: each must take the general path and give the same answer.
            br#"{"type":"message","content_type":"a","session_id":"b"}"#,
            br#"{"type": "message", "content_type": "\u00e9", "session_id": "b"}"#,
            br#"{"type": "message", "content_type": "a", "session_id": "b", "x": 1}"#,
            br#"{"type": "message", "content_type": "a", "session_id": "b"} "#,
            br#"{"type": "message", "content_type": "a", "session_id": 5}"#,
        ];
        for (i, case) in cases.iter().enumerate() {
            let json = Bytes::copy_from_slice(case);
            let fast = parse_canonical(&json, 0..json.len());
            assert_eq!(fast.is_some(), i < 3, "case {i}");
            let raw: Result<RawHeader<'_>, _> = serde_json::from_slice(case);
            match (fast, raw) {
                (Some(f), Ok(r)) => {
                    assert_eq!(
                        f.content_type.as_deref(),
                        r.content_type.as_ref().map(|t| &*t.0)
                    );
                    assert_eq!(
                        f.session_id.as_deref(),
                        r.session_id.as_ref().map(|t| &*t.0)
                    );
                }
                (None, _) => {}
                (Some(_), Err(e)) => {
                    panic!("case {i}: fast path accepted what serde_json refuses: {e}")
                }
            }
        }
    }

    #[test]
    fn the_protocols_content_types_are_not_shared_with_the_frame_buffer() {
        for (ct, known) in [
            ("application/octet-stream", true),
            ("application/json", true),
            ("text/plain; charset=utf-8", true),
            ("image/png", false),
        ] {
            let json = Bytes::from(format!(
                r#"{{"type": "message", "content_type": "{ct}", "session_id": "abc"}}"#
            ));
            let h = parse_canonical(&json, 0..json.len()).expect("canonical");
            let got = h.content_type.expect("a content type");
            assert_eq!(got.as_str(), ct);
            let inside = json.as_ptr_range().contains(&got.as_bytes().as_ptr());
            assert_eq!(inside, !known, "{ct}");
            // The session id always shares the buffer.
            let sid = h.session_id.expect("a session id");
            assert!(json.as_ptr_range().contains(&sid.as_bytes().as_ptr()));
        }
    }

    #[test]
    fn truncated_canonical_prefixes_never_panic() {
        let full = br#"{"type": "message", "content_type": null, "session_id": "abc"}"#;
        for end in 0..full.len() {
            let json = Bytes::copy_from_slice(&full[..end]);
            assert!(parse_canonical(&json, 0..json.len()).is_none());
            assert!(Header::parse(&json).is_err());
        }
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let json = Bytes::from_static(
            br#"{"type": "message", "content_type": "\u00e9\n", "session_id": null}"#,
        );
        assert_eq!(
            Header::parse(&json).unwrap().content_type.as_deref(),
            Some("\u{e9}\n")
        );
    }

    #[test]
    fn rejects_non_objects_unknown_types_and_deep_nesting() {
        for bad in [&b"[1]"[..], b"\"x\"", b"{", b"{}", br#"{"type": 3}"#] {
            assert!(matches!(
                Header::parse(&Bytes::copy_from_slice(bad)),
                Err(DecodeError::BadHeaderJson(_))
            ));
        }
        let unknown = Bytes::from_static(br#"{"type": "teleport"}"#);
        assert_eq!(
            Header::parse(&unknown),
            Err(DecodeError::UnknownType("teleport".into()))
        );
        // 10,000 levels: as a known key's value it is a type error; under an unknown key
        // serde_json skips it iteratively (no recursion, so no stack risk) and the header
        // is accepted; the 64 KiB header limit bounds the work either way.
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let deep_known = format!("{{\"type\": {}}}", nest(10_000));
        assert!(matches!(
            Header::parse(&Bytes::from(deep_known)),
            Err(DecodeError::BadHeaderJson(_))
        ));
        let deep_unknown = format!("{{\"type\": \"message\", \"x\": {}}}", nest(10_000));
        assert_eq!(
            Header::parse(&Bytes::from(deep_unknown)).unwrap().kind,
            FrameType::Message
        );
    }

    #[test]
    fn arrays_are_not_headers_and_errors_do_not_reflect_long_input() {
        let array = Bytes::from_static(br#"["message", null, "abc"]"#);
        assert_eq!(
            Header::parse(&array),
            Err(DecodeError::BadHeaderJson(
                "header is not a JSON object".into()
            ))
        );
        let long = format!(
            r#"{{"type": "message", "index": "{}"}}"#,
            "x".repeat(60_000)
        );
        match Header::parse(&Bytes::from(long)) {
            Err(DecodeError::BadHeaderJson(text)) => assert!(text.chars().count() <= 121, "{text}"),
            other => panic!("{other:?}"),
        }
        let unknown = format!(r#"{{"type": "{}"}}"#, "y".repeat(1000));
        match Header::parse(&Bytes::from(unknown)) {
            Err(DecodeError::UnknownType(name)) => assert_eq!(name.chars().count(), 65),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chunk_headers_round_trip() {
        let mut h = Header::new(
            FrameType::Chunk,
            Some(OCTET_STREAM),
            Some(ByteStr::from("s")),
        );
        h.chunk = Some(ChunkInfo {
            message_id: ByteStr::from("m1"),
            index: 2,
            count: 7,
            total_len: 1 << 33,
        });
        let json = h.to_json();
        assert!(json_of(&h)
            .ends_with(r#""message_id": "m1", "index": 2, "count": 7, "total_len": 8589934592}"#));
        assert_eq!(Header::parse(&json).unwrap(), h);
        let missing = Bytes::from_static(br#"{"type": "chunk", "index": 0}"#);
        assert!(matches!(
            Header::parse(&missing),
            Err(DecodeError::BadHeaderJson(_))
        ));
    }
}
