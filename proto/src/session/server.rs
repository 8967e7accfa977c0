//! The server end of a session.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::common::FramedCommon;
use super::in_place::Filled;
use super::reason::{Side, Violation};
use super::{
    disconnect_reason, CloseReason, Event, Features, Message, SendError, Session, SessionConfig,
};
use crate::codec::{Frame, Key};
use crate::deframer::Deframer;
use crate::frame::FrameType;
use crate::header::{ByteStr, Header, OCTET_STREAM};
use crate::keyring::KeyRing;
use crate::rooms::Membership;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitAck { deadline: Instant },
    Open,
}

/// The server end of one session: sends `session_init`, checks the ack, answers pings,
/// closes silent sessions, reassembles chunked messages and reports messages as
/// [`Event`]s. See the [module docs](super) for how to drive it.
#[derive(Debug)]
pub struct ServerSession {
    pub(super) core: FramedCommon,
    state: State,
    last_seen: Instant,
    pub(super) membership: Membership,
}

impl ServerSession {
    /// A new session with id `session_id` (a fresh UUIDv4 in the reference); queues
    /// `session_init`.
    pub fn new(
        session_id: ByteStr,
        key: Arc<Key>,
        config: Arc<SessionConfig>,
        now: Instant,
    ) -> Self {
        let deadline = now + config.handshake_timeout;
        let mut core = FramedCommon::new(key, config, Side::Server);
        core.session_id = Some(session_id);
        core.queue_control(FrameType::SessionInit, OCTET_STREAM, b"Session established");
        Self {
            core,
            state: State::AwaitAck { deadline },
            last_seen: now,
            membership: Membership::new(),
        }
    }

    /// The session's id.
    pub fn session_id(&self) -> &ByteStr {
        self.core
            .session_id
            .as_ref()
            .expect("server sessions always have an id")
    }

    /// Features granted to the client (none until the handshake completes).
    pub fn features(&self) -> Features {
        self.core.features
    }

    /// The receive buffer: append bytes read from the peer, then call
    /// [`handle_input`](Session::handle_input).
    pub fn deframer_mut(&mut self) -> &mut Deframer {
        &mut self.core.deframer
    }

    /// Bytes reserved for chunked messages still arriving.
    pub fn reassembly_bytes(&self) -> u64 {
        self.core.reassembly_bytes()
    }

    /// A new session with several keys (a key rotation): `session_init` is signed with
    /// the ring's first key; the client's `session_ack` may be signed with any of them,
    /// and the session then answers with, and only accepts, the key the ack used.
    pub fn with_keys(
        session_id: ByteStr,
        keys: Arc<KeyRing>,
        config: Arc<SessionConfig>,
        now: Instant,
    ) -> Self {
        let mut s = Self::new(session_id, keys.signing().clone(), config, now);
        s.core.set_ring(keys);
        s
    }

    /// How many bytes this session may still reserve for frames larger than
    /// [`SMALL_FRAME`](crate::deframer::SMALL_FRAME) and for new chunked messages (whose whole
    /// `total_len` is reserved at their first chunk): a driver enforcing a memory budget
    /// across sessions sets it to what is left of the budget before feeding input. A
    /// frame or message that would need more is refused, before anything is reserved,
    /// with an `error` frame and [`CloseReason::MemoryBudget`]. Unlimited by default.
    pub fn set_memory_allowance(&mut self, bytes: u64) {
        self.core.set_allowance(bytes);
    }

    /// Bytes this session holds for input that a memory budget counts: partial chunked
    /// messages (their whole `total_len`) and a receive buffer grown for a large frame.
    pub fn held_input_bytes(&self) -> u64 {
        self.core.held_input_bytes()
    }

    /// Once the head (fixed header and header JSON) of a large `chunk` frame of this
    /// session is buffered, but not all its content: lends the chunk's slot in its
    /// message's buffer, so that the rest of the content is received straight into its
    /// final place instead of into a frame buffer and then copied. Returns the slot
    /// (an empty buffer whose capacity is the content's length) holding the part of
    /// the content already buffered, which the deframer no longer holds; append the
    /// rest to its spare capacity and give it back with
    /// [`chunk_in_place_received`](Self::chunk_in_place_received), without handling
    /// input meanwhile.
    ///
    /// `None`, with nothing changed, for anything else (a frame that is not such a
    /// chunk, or one the reassembler would refuse): receive it as usual; any error in
    /// it is found then, as before.
    pub fn receive_chunk_in_place(&mut self, now: Instant) -> Option<BytesMut> {
        if self.state != State::Open {
            return None;
        }
        self.core.lend_chunk_slot(now)
    }

    /// Gives back the slot from [`receive_chunk_in_place`](Self::receive_chunk_in_place)
    /// with what was received into it. `Some((slot, missing))`: `missing` more bytes
    /// are due, receive them into it and call again. `None`: the frame was handled as
    /// [`handle_input`](Session::handle_input) handles one (verified, placed, the message
    /// reported when complete), or it closed the session; poll events as usual.
    pub fn chunk_in_place_received(
        &mut self,
        slot: BytesMut,
        now: Instant,
    ) -> Option<(BytesMut, usize)> {
        match self.core.fill_chunk_slot(slot) {
            Filled::More(slot, missing) => Some((slot, missing)),
            Filled::Placed(done) => {
                self.last_seen = now;
                if let Some((message, room)) = done {
                    self.on_message(message, room.as_ref());
                }
                None
            }
            Filled::Closed => None,
        }
    }

    /// End of input while a slot from
    /// [`receive_chunk_in_place`](Self::receive_chunk_in_place) was being filled: the
    /// frame is truncated, and the session closes.
    pub fn chunk_in_place_eof(&mut self, slot: BytesMut) {
        self.core.chunk_slot_eof(&slot);
    }

    fn on_frame(&mut self, frame: Frame, now: Instant) {
        let header = &frame.header;
        let ours = header.session_id.as_ref() == self.core.session_id.as_ref();
        match self.state {
            State::AwaitAck { .. } => match header.kind {
                FrameType::SessionAck if ours => self.on_ack(&frame),
                FrameType::Disconnect if ours => self.on_disconnect(&frame),
                _ => self.core.close(CloseReason::HandshakeFailed),
            },
            State::Open if !ours => self.core.close(CloseReason::ForeignSessionId),
            State::Open => match header.kind {
                FrameType::Message => {
                    let room = frame.header.room;
                    let message = Message {
                        content_type: frame.header.content_type,
                        content: frame.content,
                        frame: Some(frame.raw),
                        chunks: None,
                        room: None,
                        from: None,
                    };
                    self.on_message(message, room.as_ref());
                }
                FrameType::Heartbeat => {
                    if &frame.content[..] == b"ping" {
                        self.core
                            .queue_control(FrameType::Heartbeat, OCTET_STREAM, b"pong");
                    }
                }
                FrameType::Chunk => {
                    if let Some(m) = self.core.on_chunk(&frame, now, true) {
                        self.on_message(m, frame.header.room.as_ref());
                    }
                }
                FrameType::Join | FrameType::Leave => self.on_room_request(&frame),
                FrameType::Disconnect => self.on_disconnect(&frame),
                FrameType::Error => {
                    let text = String::from_utf8_lossy(&frame.content).into_owned();
                    self.core
                        .events
                        .push_back(Event::PeerError(ByteStr::from(text)));
                }
                FrameType::SessionInit | FrameType::SessionAck => {
                    self.core.close(CloseReason::ProtocolViolation(
                        Violation::HandshakeInOpenSession,
                    ));
                }
            },
        }
    }

    fn on_ack(&mut self, frame: &Frame) {
        self.state = State::Open;
        if let Some(asked) = &frame.header.features {
            // Only a client that asks gets an answer: a reference client never sees a
            // frame it does not know.
            let granted = self.core.config.features.grant(asked);
            self.core.features = granted;
            let mut header = Header::new(
                FrameType::SessionAck,
                Some(OCTET_STREAM),
                self.core.session_id.clone(),
            );
            header.features = Some(granted.names());
            self.core
                .queue_control_with(header, b"Session acknowledged");
        }
        self.core.events.push_back(Event::Established {
            session_id: self.session_id().clone(),
            features: self.core.features,
        });
    }

    fn on_disconnect(&mut self, frame: &Frame) {
        let reason = disconnect_reason(&frame.content);
        self.core.close(CloseReason::ClientDisconnect { reason });
    }
}

impl Session for ServerSession {
    super::common::framed_session_methods!();

    fn handle_timeout(&mut self, now: Instant) {
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => {
                let reason = match self.state {
                    State::AwaitAck { .. } => CloseReason::HandshakeTimeout,
                    State::Open if self.core.message_deadline().is_some_and(|d| now >= d) => {
                        CloseReason::MessageTimeout
                    }
                    State::Open => CloseReason::SessionTimeout,
                };
                self.core.close(reason);
            }
            _ => {}
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.core.closed {
            return None;
        }
        Some(match self.state {
            State::AwaitAck { deadline } => deadline,
            State::Open => {
                let silence = self.last_seen + self.core.config.session_timeout;
                self.core
                    .message_deadline()
                    .map_or(silence, |m| m.min(silence))
            }
        })
    }

    fn echo(&mut self, message: Message) -> Result<(), SendError> {
        if !self.is_established() {
            return Err(SendError::NotOpen);
        }
        if let Some(frame) = message.frame {
            self.core.outbox.push(frame);
            return Ok(());
        }
        if let Some(chunks) = message.chunks {
            for c in chunks {
                self.core.outbox.push_frame(c);
            }
            return Ok(());
        }
        self.core
            .send_message(message.content_type, message.content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle established session on a server holds one of these; the server's
    /// target is 1 KiB of user-space memory per idle session in all, so growth here is a
    /// regression to look at (bench-results/server.md has the measured total).
    #[test]
    fn an_idle_session_stays_small() {
        let size = std::mem::size_of::<ServerSession>();
        assert!(size <= 288, "ServerSession is {size} bytes");
    }
}
