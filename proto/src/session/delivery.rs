//! One message delivered to many sessions (a room's members, a broadcast): what is the
//! same for every recipient is prepared once, what differs is done per recipient.
//!
//! Each recipient needs its own signed frame, because its session id is in the MAC'd
//! header JSON. What the recipients share is computed once per message:
//!
//! * the header JSON around the session id: the part before it
//!   (`{"type": "message", "content_type": C, "session_id": `) and the parts after it
//!   (`}` for a reference-style session, `, "room": R, "from": F}` for one granted
//!   `rooms`), so a recipient's JSON is three copies, byte for byte what
//!   [`Header::write_json`] writes;
//! * the content's CRC-32 (the content is the same for everyone);
//! * the CRC-32 state and the keyed HMAC-SHA256 state after the JSON before the session
//!   id, per key (a session speaks with the key its first frame verified with, so one
//!   key nearly always).
//!
//! Per recipient there remains the part of the JSON from the session id on, the HMAC
//! over it and the content, and the copy into the session's send queue.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::outbox::COALESCE_MAX;
use crate::codec::{EncodeError, EncodedFrame, Key};
use crate::frame::{FixedHeader, FrameType, FIXED_HEADER_LEN, MAX_CONTENT_LEN, MAX_HEADER_LEN};
use crate::header::{write_json_str, ByteStr, Header};
use crate::rooms::RoomName;

/// Keys a template keeps the prefix state of; a session with yet another key (only
/// possible while several keys are configured for rotation) is signed from scratch.
const MAX_KEYS: usize = 4;

/// A `message` prepared once for delivery to many sessions with
/// [`ServerSession::deliver_prepared`](super::ServerSession::deliver_prepared): the
/// frames are byte for byte those [`ServerSession::deliver`](super::ServerSession::deliver)
/// (with `room` and `from`) or [`Session::send_message`](super::Session::send_message)
/// (without) would queue, built at a fraction of the cost.
#[derive(Debug)]
pub struct DeliveryTemplate {
    content_type: Option<ByteStr>,
    content: Bytes,
    room: Option<(RoomName, ByteStr)>,
    /// CRC-32 of the content.
    content_crc: u32,
    /// The header JSON up to the session id's opening quote (excluded).
    prefix: Bytes,
    /// After the session id: `}`.
    plain_suffix: &'static [u8],
    /// After the session id, for a session granted `rooms`: `, "room": R, "from": F}`.
    rooms_suffix: Bytes,
    /// The CRC-32 state after `prefix`.
    prefix_crc: crc32fast::Hasher,
    /// Per key: the keyed HMAC state after `prefix`.
    keyed: Vec<(Arc<Key>, Hmac<Sha256>)>,
}

impl DeliveryTemplate {
    /// Prepares a `message` with `content_type` and `content`; `room` is the room and
    /// sender session id a session granted `rooms` gets as `room` and `from` (`None`: a
    /// plain message for everyone, as [`Session::send_message`](super::Session::send_message)
    /// sends).
    pub fn new(
        content_type: Option<ByteStr>,
        content: Bytes,
        room: Option<(RoomName, ByteStr)>,
    ) -> Self {
        let mut prefix = BytesMut::with_capacity(96);
        // The same bytes as `Header::write_json` up to the session id: written by it, from
        // a header without the keys that come after, so the two cannot drift apart.
        Header::new(FrameType::Message, content_type.clone(), None).write_json(&mut prefix);
        debug_assert!(prefix.ends_with(b"null}"));
        prefix.truncate(prefix.len() - b"null}".len());
        let mut rooms_suffix = BytesMut::new();
        if let Some((room, from)) = &room {
            rooms_suffix.put_slice(b", \"room\": ");
            write_json_str(&mut rooms_suffix, room.as_str());
            rooms_suffix.put_slice(b", \"from\": ");
            write_json_str(&mut rooms_suffix, from);
            rooms_suffix.put_u8(b'}');
        }
        let mut prefix_crc = crc32fast::Hasher::new();
        prefix_crc.update(&prefix);
        Self {
            content_crc: crc32fast::hash(&content),
            content_type,
            content,
            room,
            prefix: prefix.freeze(),
            plain_suffix: b"}",
            rooms_suffix: rooms_suffix.freeze(),
            prefix_crc,
            keyed: Vec::new(),
        }
    }

    /// The content type.
    pub fn content_type(&self) -> Option<&ByteStr> {
        self.content_type.as_ref()
    }

    /// The content.
    pub fn content(&self) -> &Bytes {
        &self.content
    }

    /// The room and the sender's session id, when the message has them.
    pub fn room(&self) -> Option<&(RoomName, ByteStr)> {
        self.room.as_ref()
    }

    /// True when the content fits one frame (a larger one is sent as chunks, which the
    /// template does not prepare).
    pub(crate) fn fits_one_frame(&self) -> bool {
        self.content.len() as u64 <= MAX_CONTENT_LEN
    }

    /// The keyed HMAC state after the prefix, for `key`.
    fn keyed_prefix(&mut self, key: &Arc<Key>) -> Hmac<Sha256> {
        if let Some((_, mac)) = self.keyed.iter().find(|(k, _)| Arc::ptr_eq(k, key)) {
            return mac.clone();
        }
        let mut mac = key.mac();
        mac.update(&self.prefix);
        if self.keyed.len() < MAX_KEYS {
            self.keyed.push((key.clone(), mac.clone()));
        }
        mac
    }

    /// Queues the frame for session `session_id` (signed with `key`; with `room` and
    /// `from` when `rooms`): into `tail` whole when the content is small, else its head
    /// into `tail` and the content shared, returned for the caller to queue after it.
    pub(crate) fn encode_for(
        &mut self,
        key: &Arc<Key>,
        session_id: &str,
        rooms: bool,
        tail: &mut BytesMut,
    ) -> Result<Option<EncodedFrame>, EncodeError> {
        if self.content.is_empty() {
            return Err(EncodeError::EmptyContent);
        }
        if !self.fits_one_frame() {
            return Err(EncodeError::ContentTooLarge(self.content.len()));
        }
        let suffix: &[u8] = if rooms && self.room.is_some() {
            &self.rooms_suffix
        } else {
            self.plain_suffix
        };
        let inline = self.content.len() <= COALESCE_MAX;
        let mut separate = BytesMut::new();
        let out = if inline { tail } else { &mut separate };
        let start = out.len();
        let json_len_guess = self.prefix.len() + session_id.len() + 2 + suffix.len();
        let content_len = if inline { self.content.len() } else { 0 };
        out.reserve(FIXED_HEADER_LEN + json_len_guess + content_len);
        out.put_bytes(0, FIXED_HEADER_LEN);
        out.put_slice(&self.prefix);
        let varying = out.len();
        write_json_str(out, session_id);
        out.put_slice(suffix);
        let json_len = out.len() - start - FIXED_HEADER_LEN;
        if json_len > MAX_HEADER_LEN as usize {
            out.truncate(start);
            return Err(EncodeError::HeaderTooLarge(json_len));
        }
        let mut crc = self.prefix_crc.clone();
        crc.update(&out[varying..]);
        let mut mac = self.keyed_prefix(key);
        mac.update(&out[varying..]);
        mac.update(&self.content);
        let fixed = FixedHeader {
            msg_type: 0,
            header_len: json_len as u32,
            header_crc: crc.finalize(),
            content_len: self.content.len() as u64,
            content_crc: self.content_crc,
            mac: mac.finalize().into_bytes().into(),
        };
        let mut bytes = [0u8; FIXED_HEADER_LEN];
        fixed.write(&mut bytes);
        out[start..start + FIXED_HEADER_LEN].copy_from_slice(&bytes);
        if inline {
            out.extend_from_slice(&self.content);
            return Ok(None);
        }
        Ok(Some(EncodedFrame {
            head: separate.freeze(),
            content: self.content.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode_into;

    fn reference(key: &Key, ct: Option<&str>, sid: &str, room: Option<(&str, &str)>) -> Vec<u8> {
        let mut h = Header::new(
            FrameType::Message,
            ct.map(ByteStr::from),
            Some(ByteStr::from(sid)),
        );
        if let Some((r, f)) = room {
            h.room = Some(ByteStr::from(r));
            h.from = Some(ByteStr::from(f));
        }
        let mut out = BytesMut::new();
        encode_into(key, &h, b"hello \"there\"", &mut out).unwrap();
        out.to_vec()
    }

    #[test]
    fn frames_match_the_encoder_byte_for_byte() {
        let key = Arc::new(Key::reference_default());
        let other = Arc::new(Key::new(b"another"));
        for ct in [
            None,
            Some("text/plain; charset=utf-8"),
            Some("odd \"ct\" é\n"),
        ] {
            let room = Some((RoomName::parse("r-1").unwrap(), ByteStr::from("sender-id")));
            let mut t =
                DeliveryTemplate::new(ct.map(ByteStr::from), Bytes::from("hello \"there\""), room);
            for (k, sid) in [(&key, "a-b"), (&other, "c\"d"), (&key, "e")] {
                for rooms in [false, true] {
                    let mut tail = BytesMut::from(&b"before"[..]);
                    assert!(t.encode_for(k, sid, rooms, &mut tail).unwrap().is_none());
                    let tags = rooms.then_some(("r-1", "sender-id"));
                    assert_eq!(&tail[..6], b"before");
                    assert_eq!(&tail[6..], &reference(k, ct, sid, tags)[..], "{ct:?} {sid}");
                }
            }
            assert_eq!(t.keyed.len(), 2, "one prefix state per key");
        }
    }

    /// Every `message` frame with a session id among the reference encoder's vectors,
    /// rebuilt from a template: the same bytes.
    #[test]
    fn reference_vectors_rebuilt_byte_for_byte() {
        use base64::engine::general_purpose::STANDARD as B64;
        use base64::Engine as _;
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/reference-frames.json"))
                .unwrap();
        let b64 = |v: &serde_json::Value| B64.decode(v.as_str().unwrap()).unwrap();
        let mut checked = 0;
        for case in v["valid"].as_array().unwrap() {
            let (Some("message"), Some(sid)) = (case["type"].as_str(), case["session_id"].as_str())
            else {
                continue;
            };
            let key = Arc::new(Key::new(&b64(&case["key_b64"])));
            let ct = case["content_type"].as_str().map(ByteStr::from);
            let mut t = DeliveryTemplate::new(ct, Bytes::from(b64(&case["content_b64"])), None);
            let mut out = BytesMut::new();
            if let Some(f) = t.encode_for(&key, sid, false, &mut out).unwrap() {
                out.extend_from_slice(&f.head);
                out.extend_from_slice(&f.content);
            }
            assert_eq!(&out[..], &b64(&case["frame_b64"])[..], "{}", case["name"]);
            checked += 1;
        }
        assert!(checked >= 3, "only {checked} message vectors");
    }

    #[test]
    fn large_content_is_shared_not_copied() {
        let key = Arc::new(Key::reference_default());
        let content = Bytes::from(vec![b'x'; COALESCE_MAX + 1]);
        let mut t = DeliveryTemplate::new(None, content.clone(), None);
        let mut tail = BytesMut::new();
        let frame = t.encode_for(&key, "s", true, &mut tail).unwrap().unwrap();
        assert!(tail.is_empty());
        assert_eq!(frame.content.as_ptr(), content.as_ptr());
        let h = Header::new(FrameType::Message, None, Some(ByteStr::from("s")));
        let mut want = BytesMut::new();
        encode_into(&key, &h, &content, &mut want).unwrap();
        assert_eq!([&frame.head[..], &frame.content[..]].concat(), &want[..]);
    }

    #[test]
    fn refuses_what_the_encoder_refuses() {
        let key = Arc::new(Key::reference_default());
        let mut tail = BytesMut::from(&b"kept"[..]);
        let mut t = DeliveryTemplate::new(None, Bytes::new(), None);
        let e = t.encode_for(&key, "s", false, &mut tail).unwrap_err();
        assert_eq!(e, EncodeError::EmptyContent);
        let long = "x".repeat(MAX_HEADER_LEN as usize);
        let mut t = DeliveryTemplate::new(Some(ByteStr::from(long)), Bytes::from("c"), None);
        let e = t.encode_for(&key, "s", false, &mut tail).unwrap_err();
        assert!(matches!(e, EncodeError::HeaderTooLarge(_)), "{e:?}");
        assert_eq!(&tail[..], b"kept", "nothing half-written stays queued");
    }
}
