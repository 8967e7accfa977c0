//! The rooms extension as `fanout --rooms` drives it: the rooms of a run, the `join` a
//! member sends during its setup (done once the server answers it, i.e. once the
//! membership is in effect everywhere, broker subscription included), and messages
//! addressed to a room.

use bytes::{Bytes, BytesMut};
use sockchat_proto::frame::FrameType;
use sockchat_proto::header::{Header, OCTET_STREAM, TEXT_UTF8};
use sockchat_proto::{encode_into, ByteStr, Key, RoomName};

use crate::client::{self, check_session, encode, Established, SessionError};

/// Room `k` of a run: `r0`, `r1`, ...
pub fn room_name(k: usize) -> RoomName {
    RoomName::parse(&format!("r{k}")).expect("r<number> is a valid room name")
}

/// Joins `room`: sends `join`, then waits for the server's answer. A refusal (an `error`
/// frame) or any other frame first fails the session's setup.
pub async fn join(
    mut est: Established,
    key: &Key,
    room: &RoomName,
) -> Result<Established, SessionError> {
    let mut h = Header::new(
        FrameType::Join,
        Some(TEXT_UTF8),
        Some(est.session_id.clone()),
    );
    h.room = Some(room.as_byte_str().clone());
    let frame = encode(key, &h, room.as_bytes());
    client::write(est.reader.get_mut(), frame).await?;
    let f = est.reader.next().await?;
    check_session(&f, &est.session_id)?;
    match f.header.kind {
        FrameType::Join if f.header.room.as_deref() == Some(room.as_str()) => Ok(est),
        FrameType::Error => Err(SessionError::ServerError(
            String::from_utf8_lossy(&f.content).into_owned(),
        )),
        other => Err(SessionError::Unexpected(other)),
    }
}

/// A `message` of session `sid` to `room`.
pub fn message(key: &Key, sid: &ByteStr, room: &RoomName, content: &[u8]) -> Bytes {
    let mut h = Header::new(FrameType::Message, Some(OCTET_STREAM), Some(sid.clone()));
    h.room = Some(room.as_byte_str().clone());
    encode(key, &h, content)
}

/// Length of the `message` frame sockchat-server delivers to a member of room `r0` granted
/// `rooms` (what `fanout --rooms 1` receives) for `content_len` bytes of content: the
/// sender's content type (octet-stream, as [`message`] sends), the member's session id,
/// `room` and `from` (the sender's id; ids are hyphenated UUIDs), encoded by
/// sockchat-proto's encoder. The like-for-like payload of `fanout --raw`.
pub fn delivery_frame_len(content_len: usize) -> usize {
    let sid = |s: &str| Some(ByteStr::from(s));
    let mut header = Header::new(
        FrameType::Message,
        Some(OCTET_STREAM),
        sid("00000000-0000-4000-8000-000000000000"),
    );
    header.room = Some(room_name(0).as_byte_str().clone());
    header.from = sid("00000000-0000-4000-8000-000000000001");
    let mut out = BytesMut::new();
    encode_into(
        &Key::reference_default(),
        &header,
        &vec![0u8; content_len],
        &mut out,
    )
    .expect("a small message frame encodes");
    out.len()
}
