//! The rooms extension on both ends of a session: the server's membership rules (join,
//! leave, which room a message goes to, refusals that keep the session open) and the
//! client's requests and answers.

use bytes::Bytes;

use super::{ClientSession, Event, Message, SendError, ServerSession};
use crate::codec::Frame;
use crate::frame::FrameType;
use crate::header::{ByteStr, Header, TEXT_UTF8};
use crate::rooms::{RoomError, RoomName};
use crate::session::{CloseReason, Session, Violation};

/// The room a `join`/`leave` names: its `room` header and its content must agree.
fn requested_room(frame: &Frame) -> Result<RoomName, RoomError> {
    let header = frame.header.room.as_ref();
    let content = std::str::from_utf8(&frame.content).ok();
    match (header, content) {
        (Some(h), Some(c)) if h.as_str() == c => RoomName::from_byte_str(h.clone()),
        // A bad name in both places is reported as a bad name, not a mismatch.
        (Some(h), _) if RoomName::parse(h).is_err() => RoomName::from_byte_str(h.clone()),
        _ => Err(RoomError::Mismatch),
    }
}

impl ServerSession {
    /// Handles a `join` or `leave` frame.
    pub(super) fn on_room_request(&mut self, frame: &Frame) {
        if !self.core.features.rooms {
            self.core.close(CloseReason::ProtocolViolation(
                Violation::RoomsWithoutFeature,
            ));
            return;
        }
        let room = match requested_room(frame) {
            Ok(r) => r,
            Err(e) => return self.refuse(e),
        };
        if frame.header.kind == FrameType::Join {
            match self.membership.join(&room, self.core.config.max_rooms) {
                Ok(_) => self.core.events.push_back(Event::Joined(room)),
                Err(e) => self.refuse(e),
            }
        } else {
            // Leaving a room one is not in is already in effect: answered all the same.
            self.membership.leave(&room);
            self.queue_room_answer(FrameType::Leave, &room);
            self.core.events.push_back(Event::Left(room));
        }
    }

    /// Sends the answer to a `join` once it is in effect everywhere it must be (for a
    /// clustered server: after the broker confirmed the subscription). Nothing is sent
    /// if the session left the room (or closed) in the meantime.
    pub fn confirm_join(&mut self, room: &RoomName) {
        if self.is_established() && self.membership.contains(room) {
            self.queue_room_answer(FrameType::Join, room);
        }
    }

    /// The rooms this session is a member of.
    pub fn rooms(&self) -> Vec<RoomName> {
        self.membership.rooms()
    }

    /// True when this session is in `room`.
    pub fn is_member(&self, room: &str) -> bool {
        self.membership.contains(room)
    }

    /// Refuses a request with an `error` frame naming why; the session stays open.
    pub fn refuse(&mut self, error: RoomError) {
        if self.core.closed {
            return;
        }
        self.core.queue_error(&error.to_string());
        self.core.events.push_back(Event::Refused(error));
    }

    /// Resolves the room of a message the peer sent, then reports it, or refuses it
    /// when the sender is not a member. Sessions without the rooms feature always talk
    /// in the lobby (a `room` key from them is an unknown key, ignored).
    pub(super) fn on_message(&mut self, mut message: Message, room: Option<&ByteStr>) {
        let room = match room {
            Some(name) if self.core.features.rooms => match RoomName::from_byte_str(name.clone()) {
                Ok(r) => r,
                Err(e) => return self.refuse(e),
            },
            _ => RoomName::lobby(),
        };
        if !self.membership.contains(&room) {
            return self.refuse(RoomError::NotMember(room));
        }
        message.room = Some(room);
        self.core.events.push_back(Event::Message(message));
    }

    /// Delivers a room message from session `from` to this session: a `message` frame
    /// (or chunks, if it asked for them) signed for this session, with the sender's
    /// content type and content. A session granted `rooms` gets the header keys `room`
    /// and `from` too; a reference-style session gets exactly the reference's frame.
    pub fn deliver(
        &mut self,
        content_type: Option<ByteStr>,
        content: Bytes,
        room: &RoomName,
        from: &ByteStr,
    ) -> Result<(), SendError> {
        if !self.is_established() {
            return Err(SendError::NotOpen);
        }
        if self.core.features.rooms {
            self.core
                .send_message_with(content_type, content, Some(room.as_byte_str()), Some(from))
        } else {
            self.core.send_message(content_type, content)
        }
    }

    fn queue_room_answer(&mut self, kind: FrameType, room: &RoomName) {
        let mut h = Header::new(kind, Some(TEXT_UTF8), self.core.session_id.clone());
        h.room = Some(room.as_byte_str().clone());
        self.core.queue_control_with(h, room.as_bytes());
    }
}

impl ClientSession {
    /// Asks to join `room` (needs the rooms feature); [`Event::Joined`] reports the
    /// answer.
    pub fn join(&mut self, room: &RoomName) -> Result<(), SendError> {
        self.room_request(FrameType::Join, room)
    }

    /// Asks to leave `room`; [`Event::Left`] reports the answer.
    pub fn leave(&mut self, room: &RoomName) -> Result<(), SendError> {
        self.room_request(FrameType::Leave, room)
    }

    /// Sends a message to `room` (to the lobby, without a `room` key, when `room` is the
    /// lobby, so it works with any server).
    pub fn send_to_room(
        &mut self,
        room: &RoomName,
        content_type: Option<ByteStr>,
        content: Bytes,
    ) -> Result<(), SendError> {
        if !self.is_established() {
            return Err(SendError::NotOpen);
        }
        if room.is_lobby() {
            return self.core.send_message(content_type, content);
        }
        if !self.core.features.rooms {
            return Err(SendError::NoRooms);
        }
        self.core
            .send_message_with(content_type, content, Some(room.as_byte_str()), None)
    }

    fn room_request(&mut self, kind: FrameType, room: &RoomName) -> Result<(), SendError> {
        if !self.is_established() {
            return Err(SendError::NotOpen);
        }
        if !self.core.features.rooms {
            return Err(SendError::NoRooms);
        }
        let mut h = Header::new(kind, Some(TEXT_UTF8), self.core.session_id.clone());
        h.room = Some(room.as_byte_str().clone());
        self.core.queue_control_with(h, room.as_bytes());
        Ok(())
    }

    /// The server's answer to a `join` or `leave`.
    pub(super) fn on_room_answer(&mut self, frame: &Frame) {
        let Ok(room) = requested_room(frame) else {
            self.core
                .close(CloseReason::ProtocolViolation(Violation::BadRoomAnswer));
            return;
        };
        let event = if frame.header.kind == FrameType::Join {
            Event::Joined(room)
        } else {
            Event::Left(room)
        };
        self.core.events.push_back(event);
    }
}

/// The `room` and `from` of a delivered message, as the client reports them.
pub(super) fn delivered_tags(header: &Header) -> (Option<RoomName>, Option<ByteStr>) {
    let room = header
        .room
        .as_ref()
        .and_then(|r| RoomName::from_byte_str(r.clone()).ok());
    (room, header.from.clone())
}
