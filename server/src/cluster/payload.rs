//! The payload of a room message on the broker. The subject carries the room
//! (`sockchat.room.<ROOM>`); the payload is binary, all lengths big-endian:
//!
//! ```text
//! 4   magic "SCR1"
//! 1   kind: 0 = message, 1 = probe (a node confirming its own subscription)
//! 1   origin node name length N, then N bytes (UTF-8)
//! 1   room length R, then R bytes (the room again: the payload stands on its own)
//! 1   sender session id length S, then S bytes (a probe: its nonce, in decimal)
//! 2   content_type length C, then C bytes; 0xFFFF: null
//! ... content (the rest; empty only in a probe)
//! ```
//!
//! Hand-written rather than JSON or a serde format: five short fields and a content
//! that must not be escaped or copied twice; decoding never trusts a length without
//! checking it against what is left.

use bytes::{BufMut, Bytes, BytesMut};
use sockchat_proto::header::ByteStr;
use sockchat_proto::RoomName;

const MAGIC: &[u8; 4] = b"SCR1";
const KIND_MESSAGE: u8 = 0;
const KIND_PROBE: u8 = 1;
const NULL_CT: u16 = 0xFFFF;

/// Prefix of every room subject.
pub(crate) const SUBJECT_PREFIX: &str = "sockchat.room.";

/// The broker subject of `room`.
pub(crate) fn subject(room: &RoomName) -> String {
    format!("{SUBJECT_PREFIX}{room}")
}

/// Bytes a message's payload adds to its content (for the max_payload check before
/// encoding).
pub(crate) fn overhead(origin: &str, room: &RoomName, from: &str, ct: Option<&str>) -> usize {
    4 + 1 + 1 + origin.len() + 1 + room.len() + 1 + from.len() + 2 + ct.map_or(0, str::len)
}

/// A decoded payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Payload {
    /// A room message from a session of node `origin`.
    Message {
        origin: ByteStr,
        room: RoomName,
        from: ByteStr,
        content_type: Option<ByteStr>,
        content: Bytes,
    },
    /// A node's probe of its own subscription.
    Probe {
        origin: ByteStr,
        room: RoomName,
        nonce: u64,
    },
}

/// Why a payload from the broker was not understood (counted, never fatal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PayloadError {
    #[error("not a sockchat room payload")]
    BadMagic,
    #[error("truncated payload")]
    Truncated,
    #[error("a field is not valid: {0}")]
    BadField(&'static str),
    #[error("a field is too long to encode: {0}")]
    TooLong(&'static str),
}

fn put_short(out: &mut BytesMut, s: &[u8], what: &'static str) -> Result<(), PayloadError> {
    let len = u8::try_from(s.len()).map_err(|_| PayloadError::TooLong(what))?;
    out.put_u8(len);
    out.put_slice(s);
    Ok(())
}

fn head(
    kind: u8,
    origin: &str,
    room: &RoomName,
    from: &str,
    ct: Option<&str>,
    extra: usize,
) -> Result<BytesMut, PayloadError> {
    let mut out = BytesMut::with_capacity(overhead(origin, room, from, ct) + extra);
    out.put_slice(MAGIC);
    out.put_u8(kind);
    put_short(&mut out, origin.as_bytes(), "origin")?;
    put_short(&mut out, room.as_bytes(), "room")?;
    put_short(&mut out, from.as_bytes(), "from")?;
    match ct {
        None => out.put_u16(NULL_CT),
        Some(ct) => {
            let len = u16::try_from(ct.len())
                .ok()
                .filter(|&l| l != NULL_CT)
                .ok_or(PayloadError::TooLong("content_type"))?;
            out.put_u16(len);
            out.put_slice(ct.as_bytes());
        }
    }
    Ok(out)
}

/// Encodes a room message (one copy of the content).
pub(crate) fn encode_message(
    origin: &str,
    room: &RoomName,
    from: &str,
    content_type: Option<&str>,
    content: &[u8],
) -> Result<Bytes, PayloadError> {
    let mut out = head(
        KIND_MESSAGE,
        origin,
        room,
        from,
        content_type,
        content.len(),
    )?;
    out.put_slice(content);
    Ok(out.freeze())
}

/// Encodes a probe.
pub(crate) fn encode_probe(
    origin: &str,
    room: &RoomName,
    nonce: u64,
) -> Result<Bytes, PayloadError> {
    Ok(head(KIND_PROBE, origin, room, &nonce.to_string(), None, 0)?.freeze())
}

struct Reader {
    buf: Bytes,
    at: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, PayloadError> {
        if self.buf.len() - self.at < n {
            return Err(PayloadError::Truncated);
        }
        let b = self.buf.slice(self.at..self.at + n);
        self.at += n;
        Ok(b)
    }

    fn u8(&mut self) -> Result<u8, PayloadError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PayloadError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn text(&mut self, len: usize, what: &'static str) -> Result<ByteStr, PayloadError> {
        ByteStr::from_utf8(self.take(len)?).map_err(|_| PayloadError::BadField(what))
    }

    fn short_text(&mut self, what: &'static str) -> Result<ByteStr, PayloadError> {
        let len = usize::from(self.u8()?);
        self.text(len, what)
    }
}

/// Decodes a payload received from the broker; its strings and content share `buf`.
pub(crate) fn decode(buf: Bytes) -> Result<Payload, PayloadError> {
    if buf.len() < MAGIC.len() || &buf[..MAGIC.len()] != MAGIC {
        return Err(PayloadError::BadMagic);
    }
    let mut r = Reader {
        buf,
        at: MAGIC.len(),
    };
    let kind = r.u8()?;
    let origin = r.short_text("origin")?;
    let room = RoomName::from_byte_str(r.short_text("room")?)
        .map_err(|_| PayloadError::BadField("room"))?;
    let from = r.short_text("from")?;
    let content_type = match r.u16()? {
        NULL_CT => None,
        len => Some(r.text(usize::from(len), "content_type")?),
    };
    let content = r.buf.slice(r.at..);
    match kind {
        KIND_MESSAGE if !content.is_empty() => Ok(Payload::Message {
            origin,
            room,
            from,
            content_type,
            content,
        }),
        KIND_MESSAGE => Err(PayloadError::BadField("content")),
        KIND_PROBE => Ok(Payload::Probe {
            origin,
            room,
            nonce: from.parse().map_err(|_| PayloadError::BadField("nonce"))?,
        }),
        _ => Err(PayloadError::BadField("kind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> RoomName {
        RoomName::parse("team-1").unwrap()
    }

    #[test]
    fn messages_and_probes_round_trip() {
        let p = encode_message("node-a", &room(), "sid", Some("text/plain"), b"hi").unwrap();
        assert_eq!(
            p.len(),
            overhead("node-a", &room(), "sid", Some("text/plain")) + 2
        );
        assert_eq!(
            decode(p).unwrap(),
            Payload::Message {
                origin: ByteStr::from("node-a"),
                room: room(),
                from: ByteStr::from("sid"),
                content_type: Some(ByteStr::from("text/plain")),
                content: Bytes::from_static(b"hi"),
            }
        );
        let p = encode_message("n", &room(), "s", None, b"x").unwrap();
        assert!(matches!(
            decode(p),
            Ok(Payload::Message {
                content_type: None,
                ..
            })
        ));
        let p = encode_probe("n", &room(), 42).unwrap();
        assert_eq!(
            decode(p).unwrap(),
            Payload::Probe {
                origin: ByteStr::from("n"),
                room: room(),
                nonce: 42
            }
        );
        assert_eq!(subject(&room()), "sockchat.room.team-1");
    }

    #[test]
    fn every_truncation_and_garbage_is_an_error_not_a_panic() {
        let p = encode_message("node", &room(), "sid", Some("a/b"), b"content").unwrap();
        let content_start = p.len() - b"content".len();
        for end in 0..content_start {
            assert!(decode(p.slice(..end)).is_err(), "prefix of {end} bytes");
        }
        assert_eq!(
            decode(Bytes::from_static(b"nope")),
            Err(PayloadError::BadMagic)
        );
        let mut bad_room = BytesMut::from(&b"SCR1\x00\x01n\x03a b\x01s\xff\xffx"[..]);
        assert_eq!(
            decode(bad_room.split().freeze()),
            Err(PayloadError::BadField("room"))
        );
        assert!(encode_message(&"o".repeat(300), &room(), "s", None, b"x").is_err());
    }
}
