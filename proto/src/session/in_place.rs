//! A large chunk's content received straight into its place in the message's buffer
//! (issue 10, point 4): the session side of [`Reassembler::lend`].
//!
//! The driver asks once the head of a large frame is buffered
//! ([`ServerSession::receive_chunk_in_place`](super::ServerSession::receive_chunk_in_place)).
//! Only a chunk that [`on_chunk`](FramedCommon::on_chunk) would accept is received this
//! way, so every refusal (a bad header, a foreign session id, a chunk the reassembler
//! refuses, the memory budget) still comes from the usual path, in the usual order,
//! once the frame is complete. The content's CRC and HMAC are checked when the slot
//! comes back, as `verify` checks them, before the chunk counts.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::common::FramedCommon;
use super::{CloseReason, Message};
use crate::codec::verify_content;
use crate::error::DecodeError;
use crate::frame::{FixedHeader, FrameType, FIXED_HEADER_LEN};
use crate::header::{ByteStr, Header};

/// What became of a slot given back ([`FramedCommon::fill_chunk_slot`]).
#[derive(Debug)]
pub(super) enum Filled {
    /// This many bytes are still due: receive them into the slot and give it back.
    More(BytesMut, usize),
    /// The chunk is in place; the message, when it is complete, with the chunk's room.
    Placed(Option<(Message, Option<ByteStr>)>),
    /// The session is closed (by this chunk, or before it came back).
    Closed,
}

impl FramedCommon {
    /// Lends the slot of the chunk whose head is buffered, with the part of its content
    /// already buffered copied in; `None` (nothing changed) unless the frame is a chunk
    /// of this session that the reassembler would place and that is not all buffered.
    pub(super) fn lend_chunk_slot(&mut self, now: Instant) -> Option<BytesMut> {
        // Before the first frame the key is not settled (`ring`): no chunk comes then.
        if self.closed || !self.features.chunk || self.ring.is_some() {
            return None;
        }
        let buffered = self.deframer.buffered_bytes();
        let fixed = FixedHeader::parse(buffered, self.deframer.limits())
            .ok()
            .flatten()?;
        let head_len = FIXED_HEADER_LEN + fixed.header_len as usize;
        if buffered.len() < head_len || buffered.len() >= fixed.frame_len() {
            return None;
        }
        if crc32fast::hash(&buffered[FIXED_HEADER_LEN..head_len]) != fixed.header_crc {
            return None;
        }
        // A copy of the head (a few hundred bytes): the deframer's buffer is reused for
        // the next frame, and the head is kept for the echo (`Reassembled::frames`).
        let head = Bytes::copy_from_slice(&buffered[..head_len]);
        let header = Header::parse_within(&head, FIXED_HEADER_LEN..head_len).ok()?;
        if header.kind != FrameType::Chunk || header.session_id != self.session_id {
            return None;
        }
        let info = header.chunk.as_ref()?;
        let content_len = usize::try_from(fixed.content_len).ok()?;
        // The memory budget, as `on_chunk` applies it (a refusal is left to the usual
        // path).
        let opens = self.chunk_opens(info);
        if opens && info.total_len > self.deframer.allowance() {
            return None;
        }
        let opened = self.config.message_timeout.map(|_| now);
        let ct = header.content_type.as_ref();
        let r = self.reassembler();
        let mut slot = r.lend(info, ct, content_len, head, opened).ok().flatten()?;
        if opens {
            self.deframer.spend_allowance(info.total_len);
        }
        // What is buffered is this frame's start only (checked above): its content part
        // moves to the slot, and the deframer is left empty for the next frame.
        let buf = self.deframer.buffer_mut();
        slot.extend_from_slice(&buf[head_len..]);
        buf.clear();
        Some(slot)
    }

    /// Takes back the slot lent by [`lend_chunk_slot`](Self::lend_chunk_slot) with what
    /// was received into it. Once it is full: the content's CRC and HMAC are checked
    /// (a mismatch closes the session as an invalid frame), then the chunk is placed.
    pub(super) fn fill_chunk_slot(&mut self, slot: BytesMut) -> Filled {
        if self.closed {
            return Filled::Closed;
        }
        let Some(r) = self.reassembler.as_mut() else {
            return Filled::Closed;
        };
        let Some(head) = r.lent_head().cloned() else {
            return Filled::Closed;
        };
        let missing = r.lent_missing(&slot);
        if missing > 0 {
            return Filled::More(slot, missing);
        }
        let limits = *self.deframer.limits();
        // Both parsed when the slot was lent; parsed again rather than stored (a header
        // is a few hundred bytes), and any error is the frame's, as it would be.
        let parsed = FixedHeader::parse(&head, &limits).and_then(|fixed| {
            let fixed = fixed.ok_or(DecodeError::Truncated {
                missing: FIXED_HEADER_LEN,
            })?;
            Ok((
                fixed,
                Header::parse_within(&head, FIXED_HEADER_LEN..head.len())?,
            ))
        });
        let (fixed, header) = match parsed {
            Ok(p) => p,
            Err(e) => {
                self.close(CloseReason::InvalidFrame(e));
                return Filled::Closed;
            }
        };
        if let Err(e) = verify_content(&self.key, &fixed, &head[FIXED_HEADER_LEN..], &slot) {
            self.close(CloseReason::InvalidFrame(e));
            return Filled::Closed;
        }
        let placed = r.fill(slot);
        let message = self.chunk_placed(placed);
        if self.closed {
            return Filled::Closed;
        }
        Filled::Placed(message.map(|m| (m, header.room)))
    }

    /// End of input while a slot was lent: the frame is truncated.
    pub(super) fn chunk_slot_eof(&mut self, slot: &BytesMut) {
        let missing = self
            .reassembler
            .as_ref()
            .map_or(1, |r| r.lent_missing(slot).max(1));
        self.close(CloseReason::InvalidFrame(DecodeError::Truncated {
            missing,
        }));
    }
}
