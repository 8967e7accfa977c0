//! The rooms extension from a test's side, on top of [`Client`]: the handshake asking for
//! rooms, join, leave, a message to a room, a room delivery, a refusal that keeps the
//! session open. For the one-node and cluster room tests.

use sockchat_proto::{ByteStr, FrameType, Header};

use crate::{build_frame_with, Client, Server, Transport, SHORT, TEXT_UTF8};

/// Completes the handshake asking for chunk and rooms; checks what was granted.
pub fn handshake_rooms(c: &mut Client, expect_rooms: bool) {
    let (_, granted) = c.handshake_asking(&["chunk", "rooms"]);
    let want: Vec<String> = if expect_rooms {
        vec!["chunk".into(), "rooms".into()]
    } else {
        vec!["chunk".into()]
    };
    assert_eq!(granted, want, "features granted");
}

/// A rooms client connected to `server` over `t`, handshaken, known to the server.
pub fn rooms_client(server: &Server, t: Transport) -> Client {
    let mut c = server.connect(t);
    handshake_rooms(&mut c, true);
    c.ping();
    c
}

/// A `join`/`leave` frame naming `room` in the header and `content` in the content.
pub fn room_frame(c: &Client, kind: FrameType, room: &str, content: &str) -> Vec<u8> {
    let mut h = Header::new(
        kind,
        Some(ByteStr::from(TEXT_UTF8)),
        Some(ByteStr::from(c.session_id.as_str())),
    );
    h.room = Some(ByteStr::from(room));
    build_frame_with(&c.key, &h, content.as_bytes())
}

/// Sends `join`/`leave` for `room` and expects the answer naming it.
pub fn room_request(c: &mut Client, kind: FrameType, room: &str) {
    let f = room_frame(c, kind, room, room);
    c.send(&f);
    let answer = c.expect_kind(kind, SHORT);
    assert_eq!(
        answer.header.room.as_deref(),
        Some(room),
        "answer names the room"
    );
    assert_eq!(&answer.content[..], room.as_bytes());
    assert_eq!(
        answer.header.session_id.as_deref(),
        Some(c.session_id.as_str())
    );
}

/// Joins `room` and expects the answer.
pub fn join(c: &mut Client, room: &str) {
    room_request(c, FrameType::Join, room);
}

/// Leaves `room` and expects the answer.
pub fn leave(c: &mut Client, room: &str) {
    room_request(c, FrameType::Leave, room);
}

/// A `message` frame to `room` (no `room` key when `None`).
pub fn room_message(c: &Client, room: Option<&str>, ct: Option<&str>, content: &[u8]) -> Vec<u8> {
    let mut h = Header::new(
        FrameType::Message,
        ct.map(ByteStr::from),
        Some(ByteStr::from(c.session_id.as_str())),
    );
    h.room = room.map(ByteStr::from);
    build_frame_with(&c.key, &h, content)
}

/// Sends a text message to `room` (to the lobby when `None`).
pub fn say(c: &mut Client, room: Option<&str>, content: &[u8]) {
    let f = room_message(c, room, Some(TEXT_UTF8), content);
    c.send(&f);
}

/// Expects the next frame to be a delivery of `content` in `room` from `from`, signed
/// for `c`.
pub fn expect_delivery(c: &mut Client, room: &str, from: &str, content: &[u8]) {
    let m = c.expect_kind(FrameType::Message, SHORT);
    assert_eq!(
        m.header.session_id.as_deref(),
        Some(c.session_id.as_str()),
        "signed for the recipient"
    );
    assert_eq!(m.header.room.as_deref(), Some(room), "room key");
    assert_eq!(m.header.from.as_deref(), Some(from), "from key");
    assert_eq!(
        String::from_utf8_lossy(&m.content),
        String::from_utf8_lossy(content)
    );
    assert_eq!(m.header.content_type.as_deref(), Some(TEXT_UTF8));
}

/// Expects an `error` frame containing `needle`, then proves the session is still open.
pub fn expect_refusal(c: &mut Client, needle: &str) -> String {
    let e = c.expect_kind(FrameType::Error, SHORT);
    let text = String::from_utf8_lossy(&e.content).into_owned();
    assert!(
        text.to_lowercase().contains(&needle.to_lowercase()),
        "refusal {text:?} does not contain {needle:?}"
    );
    c.ping();
    text
}
