//! Lending a chunk's slot: the content of a large chunk received straight into its
//! place in the message's buffer (issue 10, point 4), instead of into a frame buffer
//! and then copied.
//!
//! Once a chunk frame's head (fixed header and header JSON) is in, the session checks
//! it as [`Reassembler::push_frame`] would and borrows the chunk's slot
//! ([`Reassembler::lend`]); the driver receives the content into it and gives it back
//! verified ([`Reassembler::fill`]). Meanwhile the message's buffer is split around the
//! slot, and put together again (without copying) when the slot comes back.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{detach, ChunkError, ChunkInfo, Reassembled, Reassembler};
use crate::header::ByteStr;

/// The slot lent out, and what is needed to put the chunk in place when it comes back.
#[derive(Debug)]
pub(super) struct Lent {
    message_id: ByteStr,
    index: u32,
    /// The slot's length: the chunk's content length.
    len: usize,
    /// The message's buffer after the slot (its part before the slot stays in place).
    rest: BytesMut,
    /// The chunk frame's head, kept for [`Reassembled::frames`].
    head: Bytes,
}

impl Reassembler {
    /// Checks a chunk whose head has arrived but not its content (`content_len` bytes)
    /// exactly as [`push_frame`](Self::push_frame) would, opening its message if it is
    /// new, and lends out its slot: an empty buffer whose capacity is exactly the
    /// content's length, to be filled with the content and given back with
    /// [`fill`](Self::fill) once the frame is verified.
    ///
    /// `Ok(None)` (nothing lent, nothing changed) for a chunk that is a whole message by
    /// itself, or while another slot is lent: place those with `push_frame`. A chunk
    /// refused here is refused the same way by `push_frame`.
    ///
    /// A message opened here is held (and counted in
    /// [`reserved_bytes`](Self::reserved_bytes)) before the chunk is verified; a caller
    /// that finds the chunk invalid ends the session, and with it the message.
    pub fn lend(
        &mut self,
        info: &ChunkInfo,
        content_type: Option<&ByteStr>,
        content_len: usize,
        head: Bytes,
        now: Option<Instant>,
    ) -> Result<Option<BytesMut>, ChunkError> {
        if self.lent.is_some() {
            return Ok(None);
        }
        let Some(slot) = self.place(info, content_type, content_len, true, now)? else {
            return Ok(None);
        };
        let p = self
            .partial
            .get_mut(&info.message_id)
            .expect("checked or opened above");
        // Lossless: slot.end ≤ total_len = buf.len(). Neither split copies: both halves
        // share the buffer, and `fill` joins them back where they were.
        let rest = p.buf.split_off(slot.end as usize);
        let mut slot_buf = p.buf.split_off(slot.start as usize);
        slot_buf.clear();
        self.lent = Some(Lent {
            message_id: detach(&info.message_id),
            index: info.index,
            len: content_len,
            rest,
            head,
        });
        Ok(Some(slot_buf))
    }

    /// The index of the slot lent out of message `message_id`, if one is.
    pub(super) fn lent_index(&self, message_id: &ByteStr) -> Option<u32> {
        self.lent
            .as_ref()
            .filter(|l| l.message_id == *message_id)
            .map(|l| l.index)
    }

    /// Bytes the lent slot `buf` still misses (0 when there is no lent slot).
    pub fn lent_missing(&self, buf: &BytesMut) -> usize {
        self.lent
            .as_ref()
            .map_or(0, |l| l.len.saturating_sub(buf.len()))
    }

    /// The head (fixed header and header JSON) of the chunk whose slot is lent.
    pub fn lent_head(&self) -> Option<&Bytes> {
        self.lent.as_ref().map(|l| &l.head)
    }

    /// Takes the lent slot back, filled with the chunk's verified content, and places
    /// the chunk as [`push_frame`](Self::push_frame) would: returns the message when it
    /// is complete. A slot not exactly filled is [`ChunkError::WrongLength`] (the
    /// message then holds a zeroed or truncated chunk; drop the reassembler).
    pub fn fill(&mut self, mut buf: BytesMut) -> Result<Option<Reassembled>, ChunkError> {
        let Some(lent) = self.lent.take() else {
            return Ok(None);
        };
        let Some(p) = self.partial.get_mut(&lent.message_id) else {
            return Ok(None);
        };
        let got = buf.len();
        let wrong = got != lent.len;
        // Joined back without a copy: `buf` starts where the part before it ends (it has
        // not grown past its capacity: a receive only fills spare capacity).
        buf.resize(lent.len, 0);
        p.buf.unsplit(buf);
        p.buf.unsplit(lent.rest);
        if wrong {
            return Err(ChunkError::WrongLength {
                index: lent.index,
                expected: lent.len as u64,
                got: got as u64,
            });
        }
        Ok(self.placed(&lent.message_id, lent.index, Some(&lent.head)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkLimits;

    fn info(index: u32) -> ChunkInfo {
        ChunkInfo::new("m", index, 3, 30)
    }

    #[test]
    fn a_lent_slot_is_filled_in_place_beside_pushed_chunks() {
        let mut r = Reassembler::new(ChunkLimits::default());
        let head = Bytes::from_static(b"head");
        assert!(r.push(&info(2), None, &[2; 10]).unwrap().is_none());
        let mut slot = r
            .lend(&info(0), None, 10, head.clone(), None)
            .unwrap()
            .unwrap();
        assert_eq!((slot.len(), slot.capacity()), (0, 10));
        assert!(
            r.lend(&info(1), None, 10, head.clone(), None)
                .unwrap()
                .is_none(),
            "one slot at a time"
        );
        slot.extend_from_slice(&[0; 4]);
        assert_eq!(r.lent_missing(&slot), 6);
        slot.extend_from_slice(&[0; 6]);
        let at = slot.as_ptr();
        assert!(r.fill(slot).unwrap().is_none());
        let m = r.push(&info(1), None, &[1; 10]).unwrap().expect("complete");
        assert_eq!(&m.content[..], &[[0u8; 10], [1; 10], [2; 10]].concat()[..]);
        assert_eq!(
            m.content.as_ptr(),
            at,
            "filled where it lies in the message"
        );
        assert_eq!(r.reserved_bytes(), 0);
    }

    #[test]
    fn lending_refuses_what_pushing_refuses() {
        let mut r = Reassembler::new(ChunkLimits::default());
        let head = Bytes::new();
        assert!(r.push(&info(0), None, &[0; 10]).unwrap().is_none());
        assert_eq!(
            r.lend(&info(0), None, 10, head.clone(), None).unwrap_err(),
            ChunkError::Duplicate { index: 0 }
        );
        assert!(matches!(
            r.lend(&info(1), None, 9, head.clone(), None),
            Err(ChunkError::WrongLength { .. })
        ));
        let other = ChunkInfo::new("m", 1, 4, 30);
        assert_eq!(
            r.lend(&other, None, 10, head.clone(), None).unwrap_err(),
            ChunkError::Inconsistent
        );
        let single = ChunkInfo::new("s", 0, 1, 10);
        assert!(r.lend(&single, None, 10, head, None).unwrap().is_none());
        assert_eq!(r.partial_count(), 1, "nothing opened by a refusal");
    }

    #[test]
    fn a_slot_given_back_short_is_the_wrong_length() {
        let mut r = Reassembler::new(ChunkLimits::default());
        let mut slot = r
            .lend(&info(1), None, 10, Bytes::new(), None)
            .unwrap()
            .unwrap();
        slot.extend_from_slice(&[1; 3]);
        assert_eq!(
            r.fill(slot).unwrap_err(),
            ChunkError::WrongLength {
                index: 1,
                expected: 10,
                got: 3
            }
        );
    }
}
