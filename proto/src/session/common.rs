//! State and behaviour shared by both ends of a session.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::outbox;
use super::reason::{Notice, Side, Violation};
use super::{CloseReason, Event, Features, Message, Outbox, SendError, SessionConfig};
use crate::chunk::{self, Reassembler};
use crate::codec::{encode_into, encode_parts, Frame, Key};
use crate::deframer::{Decoded, Deframer, SMALL_FRAME};
use crate::error::DecodeError;
use crate::frame::{FrameType, MAX_CONTENT_LEN};
use crate::header::{ByteStr, ChunkInfo, Header, OCTET_STREAM};
use crate::keyring::KeyRing;

/// The parts of a session both roles share: codec state, queues, chunking.
#[derive(Debug)]
pub(crate) struct FramedCommon {
    pub(crate) key: Arc<Key>,
    pub(crate) config: Arc<SessionConfig>,
    pub(crate) session_id: Option<ByteStr>,
    pub(crate) features: Features,
    pub(crate) deframer: Deframer,
    pub(crate) outbox: Outbox,
    pub(crate) events: VecDeque<Event>,
    pub(super) reassembler: Option<Box<Reassembler>>,
    next_message_id: u64,
    pub(crate) closed: bool,
    side: Side,
    /// Before the first frame: every key that may verify it (then `key` becomes the one
    /// that did). `None` with a single key.
    pub(super) ring: Option<Arc<KeyRing>>,
}

impl FramedCommon {
    pub(crate) fn new(key: Arc<Key>, config: Arc<SessionConfig>, side: Side) -> Self {
        let deframer = Deframer::new(config.limits);
        Self {
            key,
            config,
            session_id: None,
            features: Features::NONE,
            deframer,
            outbox: Outbox::default(),
            events: VecDeque::new(),
            reassembler: None,
            next_message_id: 0,
            closed: false,
            side,
            ring: None,
        }
    }

    /// Several keys for the first frame: it may be signed with any of them, and the
    /// session then speaks with that one. `key` (signing what is sent before) should be
    /// the ring's signing key.
    pub(crate) fn set_ring(&mut self, ring: Arc<KeyRing>) {
        self.ring = (ring.len() > 1).then_some(ring);
    }

    /// What the session may still reserve for large frames and new chunked messages
    /// (kept by the deframer, which reserves frame buffers).
    pub(crate) fn set_allowance(&mut self, bytes: u64) {
        self.deframer.set_allowance(bytes);
    }

    /// Bytes held for input that a memory budget counts: partial chunked messages, and a
    /// receive buffer grown past [`SMALL_FRAME`] for a large frame.
    pub(crate) fn held_input_bytes(&self) -> u64 {
        let buf = self.deframer.capacity();
        let buf = if buf > SMALL_FRAME { buf as u64 } else { 0 };
        let heads = self.reassembler.as_ref().map_or(0, |r| r.heads_bytes());
        self.reassembly_bytes() + heads + buf
    }

    /// When the oldest partial chunked message runs out of time.
    pub(crate) fn message_deadline(&self) -> Option<Instant> {
        let timeout = self.config.message_timeout?;
        let opened = self.reassembler.as_ref()?.oldest_open()?;
        Some(opened + timeout)
    }

    /// Decodes one buffered frame; `None` when more bytes are needed or the session is
    /// closed. A decode error closes the session.
    pub(crate) fn next_frame(&mut self) -> Option<Frame> {
        if self.closed {
            return None;
        }
        let decoded = match self.ring.take() {
            // The first frame: whichever key verifies it is the session's from now on.
            Some(ring) => self.deframer.decode_any(ring.keys()).map(|(d, i)| {
                match d {
                    Decoded::Frame(_) => self.key = ring.keys()[i].clone(),
                    Decoded::NeedMore(_) => self.ring = Some(ring),
                }
                d
            }),
            None => self.deframer.decode(&self.key),
        };
        match decoded {
            Ok(Decoded::Frame(f)) => Some(f),
            Ok(Decoded::NeedMore(_)) => None,
            // The deframer refused to reserve a large frame's buffer: the memory budget.
            Err(DecodeError::OverAllowance { .. }) => {
                self.close(CloseReason::MemoryBudget);
                None
            }
            Err(e) => {
                self.close(CloseReason::InvalidFrame(e));
                None
            }
        }
    }

    /// Queues a frame whose content is small and static (control frames).
    pub(crate) fn queue_control(&mut self, kind: FrameType, content_type: ByteStr, content: &[u8]) {
        self.queue_control_with(
            Header::new(kind, Some(content_type), self.session_id.clone()),
            content,
        );
    }

    pub(crate) fn queue_control_with(&mut self, header: Header, content: &[u8]) {
        // Control contents are short and never empty, so encoding cannot fail; if it ever
        // did, dropping a control frame is safer than panicking on a peer's behalf.
        let _ = encode_into(&self.key, &header, content, self.outbox.tail_mut());
    }

    /// Queues an application message: one frame when it fits, chunks when it does not
    /// and the peer asked for them.
    pub(crate) fn send_message(
        &mut self,
        content_type: Option<ByteStr>,
        content: Bytes,
    ) -> Result<(), SendError> {
        self.send_message_with(content_type, content, None, None)
    }

    /// [`send_message`](Self::send_message) with the rooms extension's `room` and
    /// `from` header keys (on every chunk too).
    pub(crate) fn send_message_with(
        &mut self,
        content_type: Option<ByteStr>,
        content: Bytes,
        room: Option<&ByteStr>,
        from: Option<&ByteStr>,
    ) -> Result<(), SendError> {
        if self.closed || self.session_id.is_none() {
            return Err(SendError::NotOpen);
        }
        let mut header = Header::new(FrameType::Message, content_type, self.session_id.clone());
        header.room = room.cloned();
        header.from = from.cloned();
        let len = content.len();
        if len as u64 > MAX_CONTENT_LEN {
            let limit = self.config.chunk.max_message_len;
            if !self.features.chunk || len as u64 > limit {
                let limit = if self.features.chunk {
                    limit
                } else {
                    MAX_CONTENT_LEN
                };
                return Err(SendError::TooLarge { len, limit });
            }
            self.next_message_id += 1;
            let id = ByteStr::from(self.next_message_id.to_string());
            let max_chunk = self.config.max_chunk.clamp(1, MAX_CONTENT_LEN as usize);
            for part in chunk::split_with(&self.key, header, id, content, max_chunk)? {
                self.outbox.push_frame(part);
            }
            return Ok(());
        }
        if len <= outbox::COALESCE_MAX {
            encode_into(&self.key, &header, &content, self.outbox.tail_mut())?;
        } else {
            self.outbox
                .push_frame(encode_parts(&self.key, &header, content)?);
        }
        Ok(())
    }

    /// Handles a `chunk` frame received at `now`; returns the message when it is complete
    /// (its `room` and `from` are left for the caller, from the completing chunk's header).
    /// With `keep_frames` (a server: every chunk it accepts carries the session's own id)
    /// the message also carries its chunk frames as received, for an echo.
    pub(crate) fn on_chunk(
        &mut self,
        frame: &Frame,
        now: Instant,
        keep_frames: bool,
    ) -> Option<Message> {
        if !self.features.chunk {
            self.close(CloseReason::ProtocolViolation(
                Violation::ChunkWithoutFeature,
            ));
            return None;
        }
        let Some(info) = frame.header.chunk.as_ref() else {
            // Header::parse guarantees chunk info on chunk frames.
            self.close(CloseReason::ProtocolViolation(Violation::ChunkWithoutInfo));
            return None;
        };
        // The memory budget: a chunk that opens a new message reserves its total_len.
        if self.chunk_opens(info) {
            if info.total_len > self.deframer.allowance() {
                self.close(CloseReason::MemoryBudget);
                return None;
            }
            self.deframer.spend_allowance(info.total_len);
        }
        let opened = self.config.message_timeout.map(|_| now);
        let r = self.reassembler();
        let pushed = if keep_frames {
            // The content is the frame's tail: what precedes it is the head.
            let head = &frame.raw[..frame.raw.len() - frame.content.len()];
            let ct = frame.header.content_type.as_ref();
            r.push_frame(info, ct, head, &frame.content, opened)
        } else {
            r.push_at(
                info,
                frame.header.content_type.as_ref(),
                &frame.content,
                opened,
            )
        };
        self.chunk_placed(pushed)
    }

    /// What placing a chunk (`placed`, the reassembler's answer) means for the session:
    /// the message when it is complete (an idle reassembler is released), `None` when
    /// more chunks are due or the chunk was refused (the session is then closed).
    pub(super) fn chunk_placed(
        &mut self,
        placed: Result<Option<chunk::Reassembled>, chunk::ChunkError>,
    ) -> Option<Message> {
        match placed {
            Ok(Some(m)) => {
                if self
                    .reassembler
                    .as_ref()
                    .is_some_and(|r| r.partial_count() == 0)
                {
                    // Release the bookkeeping of an idle session.
                    self.reassembler = None;
                }
                Some(Message {
                    content_type: m.content_type,
                    content: m.content,
                    frame: None,
                    chunks: m.frames,
                    room: None,
                    from: None,
                })
            }
            Ok(None) => None,
            Err(e) => {
                self.close(CloseReason::Chunk(e));
                None
            }
        }
    }

    /// True when a chunk of `info` opens a new message, and so reserves its
    /// `total_len` of the memory budget. (One above the message limit is left to the
    /// reassembler's own error.)
    pub(super) fn chunk_opens(&self, info: &ChunkInfo) -> bool {
        info.count > 1
            && info.total_len <= self.config.chunk.max_message_len
            && !self
                .reassembler
                .as_ref()
                .is_some_and(|r| r.is_open(&info.message_id))
    }

    /// The session's reassembler, made at its first chunk.
    pub(super) fn reassembler(&mut self) -> &mut Reassembler {
        let (limits, buffers) = (self.config.chunk, &self.config.message_buffers);
        self.reassembler
            .get_or_insert_with(|| Box::new(Reassembler::with_buffers(limits, buffers.clone())))
    }

    /// Queues an `error` frame with `text` without ending the session (an application
    /// refusal).
    pub(crate) fn queue_error(&mut self, text: &str) {
        self.queue_control(FrameType::Error, OCTET_STREAM, text.as_bytes());
    }

    /// Bytes reserved for partially received chunked messages.
    pub(crate) fn reassembly_bytes(&self) -> u64 {
        self.reassembler.as_ref().map_or(0, |r| r.reserved_bytes())
    }

    /// End of input from the peer: a clean close between frames, or a truncated frame.
    pub(crate) fn handle_eof(&mut self) {
        if !self.closed {
            let reason = match self.deframer.finish() {
                Ok(()) => CloseReason::PeerClosed,
                Err(e) => CloseReason::InvalidFrame(e),
            };
            self.close(reason);
        }
    }

    /// Ends the session without telling the peer (it ended it).
    pub(crate) fn close_quietly(&mut self, reason: CloseReason) {
        if !self.closed {
            self.closed = true;
            self.reassembler = None;
            self.events.push_back(Event::Closed(reason));
        }
    }

    /// Ends the session: tells the peer as the reason requires (after everything already
    /// queued), emits [`Event::Closed`], and ignores input from then on.
    pub(crate) fn close(&mut self, reason: CloseReason) {
        if self.closed {
            return;
        }
        match reason.notice(self.side) {
            Notice::Disconnect => {
                let content = super::disconnect_content(&reason.wire_reason());
                let ct = crate::header::APPLICATION_JSON;
                self.queue_control(FrameType::Disconnect, ct, &content);
            }
            Notice::Error => {
                let text = reason.wire_reason();
                self.queue_control(FrameType::Error, OCTET_STREAM, text.as_bytes());
            }
            Notice::None => {}
        }
        if reason.discards_queue() {
            self.outbox = Outbox::default();
        }
        self.closed = true;
        self.reassembler = None;
        self.deframer = Deframer::new(self.config.limits);
        self.events.push_back(Event::Closed(reason));
    }
}

/// The [`Session`](super::Session) methods whose bodies are the same for both framed
/// roles (every one but the timers and, on the server, `echo`): they read frames through
/// the role's `on_frame` and otherwise forward to [`FramedCommon`]. Expanded inside each
/// role's `impl Session`, which must have a `core: FramedCommon`, a `last_seen: Instant`,
/// a `state` with an `Open` variant and `fn on_frame(&mut self, Frame, Instant)`. A macro
/// rather than provided trait methods over a `core()` accessor: `Session` is public and
/// `FramedCommon` is not.
macro_rules! framed_session_methods {
    () => {
        fn is_established(&self) -> bool {
            self.state == State::Open && !self.core.closed
        }

        fn is_closed(&self) -> bool {
            self.core.closed
        }

        fn handle_input(&mut self, now: ::std::time::Instant) {
            while let Some(frame) = self.core.next_frame() {
                self.last_seen = now;
                self.on_frame(frame, now);
            }
        }

        fn handle_input_until_event(&mut self, now: ::std::time::Instant) -> bool {
            while self.core.events.is_empty() {
                match self.core.next_frame() {
                    Some(frame) => {
                        self.last_seen = now;
                        self.on_frame(frame, now);
                    }
                    None => return false,
                }
            }
            true
        }

        fn handle_eof(&mut self) {
            self.core.handle_eof();
        }

        fn poll_event(&mut self) -> Option<$crate::session::Event> {
            self.core.events.pop_front()
        }

        fn poll_transmit(&mut self, out: &mut Vec<::bytes::Bytes>) {
            self.core.outbox.drain_into(out);
        }

        fn queued_bytes(&self) -> usize {
            self.core.outbox.queued_bytes()
        }

        fn send_message(
            &mut self,
            content_type: Option<$crate::header::ByteStr>,
            content: ::bytes::Bytes,
        ) -> Result<(), $crate::session::SendError> {
            if !self.is_established() {
                return Err($crate::session::SendError::NotOpen);
            }
            self.core.send_message(content_type, content)
        }

        fn close(&mut self, reason: $crate::session::CloseReason) {
            self.core.close(reason);
        }

        fn shrink_idle(&mut self) {
            if self.core.events.is_empty() {
                self.core.events = ::std::collections::VecDeque::new();
            }
            self.core.outbox.shrink_idle();
        }

        fn take_buffer(&mut self) -> ::bytes::BytesMut {
            self.core.deframer.take_buffer()
        }

        fn put_buffer(&mut self, buf: ::bytes::BytesMut) {
            self.core.deframer.put_buffer(buf);
        }

        fn is_input_idle(&self) -> bool {
            self.core.deframer.is_idle()
        }

        fn pending_frame_len(&self) -> Option<usize> {
            self.core.deframer.pending_frame_len()
        }
    };
}
pub(super) use framed_session_methods;
