//! The rooms extension as `fanout --rooms` drives it: the rooms of a run, the `join` a
//! member sends during its setup (done once the server answers it, i.e. once the
//! membership is in effect everywhere, broker subscription included), and messages
//! addressed to a room.

use bytes::Bytes;
use sockchat_proto::frame::FrameType;
use sockchat_proto::header::{Header, OCTET_STREAM, TEXT_UTF8};
use sockchat_proto::{ByteStr, Key, RoomName};

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
