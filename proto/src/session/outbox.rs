//! The queue of bytes a session wants written.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::codec::EncodedFrame;

/// Frames waiting to be written, in order. Small frames are encoded straight into one
/// growing buffer so that everything ready goes out in one write; large contents stay
/// separate [`Bytes`] for a vectored write without copying.
#[derive(Debug, Default)]
pub struct Outbox {
    parts: VecDeque<Bytes>,
    tail: BytesMut,
    queued: usize,
}

/// Content at or below this size is copied into the coalescing buffer; above it, it is
/// queued by reference (a copy of a few KiB costs less than another iovec entry).
pub(crate) const COALESCE_MAX: usize = 4096;

/// Capacity an empty coalescing buffer starts with when a frame is copied in: room for a
/// pipelined batch of small frames (16 echoes of a 240-byte frame), where growing by
/// doubling from the first frame's size reallocated and copied four times per batch
/// (the buffer is freed whenever the session goes idle, see [`Outbox::shrink_idle`]).
const TAIL_START: usize = 4096;

impl Outbox {
    /// The buffer small frames are encoded into, after everything already queued.
    pub(crate) fn tail_mut(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Queues bytes (e.g. a verified frame) without copying them if they are large.
    pub fn push(&mut self, bytes: Bytes) {
        if bytes.len() <= COALESCE_MAX {
            if self.tail.is_empty() && self.tail.capacity() < bytes.len() {
                self.tail.reserve(TAIL_START);
            }
            self.tail.extend_from_slice(&bytes);
        } else {
            self.flush_tail();
            self.queued += bytes.len();
            self.parts.push_back(bytes);
        }
    }

    /// Queues an encoded frame's two parts.
    pub fn push_frame(&mut self, frame: EncodedFrame) {
        self.tail.extend_from_slice(&frame.head);
        self.push(frame.content);
    }

    fn flush_tail(&mut self) {
        if !self.tail.is_empty() {
            let b = self.take_tail();
            self.queued += b.len();
            self.parts.push_back(b);
        }
    }

    /// The coalescing buffer's bytes as one part. A buffer filled to its capacity (what
    /// a frame encoded into a fresh buffer sized for it is: a chat delivery) is handed
    /// over whole, which allocates nothing; otherwise it is split, and the rest of its
    /// capacity stays for the next frames (its allocation is reused once the part is
    /// sent and dropped).
    fn take_tail(&mut self) -> Bytes {
        if self.tail.len() == self.tail.capacity() {
            std::mem::take(&mut self.tail).freeze()
        } else {
            self.tail.split().freeze()
        }
    }

    /// Bytes queued and not yet handed out by [`drain_into`](Self::drain_into).
    pub fn queued_bytes(&self) -> usize {
        self.queued + self.tail.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queued_bytes() == 0
    }

    /// Frees the buffers of an empty outbox (the coalescing buffer keeps the spare
    /// capacity of the last frames otherwise), so an idle session holds none.
    pub fn shrink_idle(&mut self) {
        if self.is_empty() {
            self.tail = BytesMut::new();
            self.parts = VecDeque::new();
        }
    }

    /// Moves everything queued, in order, to `out` (for one vectored write).
    pub fn drain_into(&mut self, out: &mut Vec<Bytes>) {
        if self.parts.is_empty() {
            // Only small frames queued (the common case): straight out, the queue of
            // parts untouched (an idle session's has no allocation to grow).
            if !self.tail.is_empty() {
                out.push(self.take_tail());
            }
        } else {
            self.flush_tail();
            out.extend(self.parts.drain(..));
        }
        self.queued = 0;
        // An idle session should not keep a large coalescing buffer alive.
        if self.tail.capacity() > 64 * 1024 {
            self.tail = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_coalesces_small_parts() {
        let mut o = Outbox::default();
        o.push(Bytes::from_static(b"ab"));
        o.push(Bytes::from_static(b"cd"));
        let big = Bytes::from(vec![7u8; 10_000]);
        o.push(big.clone());
        o.push(Bytes::from_static(b"ef"));
        assert_eq!(o.queued_bytes(), 10_006);
        let mut out = Vec::new();
        o.drain_into(&mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(&out[0][..], b"abcd");
        assert_eq!(out[1].as_ptr(), big.as_ptr(), "large parts are not copied");
        assert_eq!(&out[2][..], b"ef");
        assert!(o.is_empty());
    }

    #[test]
    fn a_batch_of_small_frames_fills_one_allocation() {
        let mut o = Outbox::default();
        let frame = Bytes::from(vec![1u8; 240]);
        o.push(frame.clone());
        // Room for the whole batch from the first frame on: no growing by doubling.
        let cap = o.tail.capacity();
        assert!(cap >= 16 * 240, "capacity {cap}");
        for _ in 1..16 {
            o.push(frame.clone());
        }
        assert_eq!(o.tail.capacity(), cap, "the buffer did not grow");
        let mut out = Vec::new();
        o.drain_into(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), 16 * 240);
        // Idle again: nothing kept.
        o.shrink_idle();
        assert_eq!(o.tail.capacity(), 0);
    }
}
