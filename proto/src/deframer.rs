//! Streaming deframer: bytes in, in pieces of any size; verified frames out.

use bytes::{Buf, BytesMut};

use crate::codec::{verify, Frame, Key};
use crate::error::DecodeError;
use crate::frame::{FixedHeader, Limits, FIXED_HEADER_LEN};

/// Result of one [`Deframer::decode`] step.
#[derive(Debug)]
// `Frame` is the common case (every decode that completes); boxing it would cost an
// allocation per frame to save stack space on the rare `NeedMore`.
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    /// A complete, verified frame, sharing the deframer's buffer.
    Frame(Frame),
    /// At least this many more bytes are needed before anything can be decided.
    NeedMore(usize),
}

/// Splits a byte stream into frames.
///
/// The caller appends received bytes to [`buffer_mut`](Self::buffer_mut) (or lends the
/// buffer to an ownership-passing read with [`take_buffer`](Self::take_buffer) /
/// [`put_buffer`](Self::put_buffer)) and calls [`decode`](Self::decode) until it returns
/// [`Decoded::NeedMore`]. As soon as a fixed header has passed its magic, version and
/// length checks, the buffer is grown once to hold the whole frame, so the rest of a large
/// frame is read straight into the memory the returned [`Frame`] points to: no second copy.
/// Nothing is reserved for a frame whose fixed header fails those checks.
///
/// The parsed fixed header of a partly received frame is not stored: its 64 bytes are
/// still at the front of the buffer and re-parsing them costs a few dozen instructions,
/// while storing them would cost every idle session 64 bytes.
#[derive(Debug, Default)]
pub struct Deframer {
    buf: BytesMut,
    limits: Limits,
    /// Bytes this deframer may still reserve for frames larger than [`SMALL_FRAME`].
    allowance: u64,
}

/// Frames up to this size (fixed header, header JSON and content) are received whatever
/// the [allowance](Deframer::set_allowance): a session holds at most one such partial
/// frame, so they are what a server keeps serving when its memory budget is spent.
pub const SMALL_FRAME: usize = 64 * 1024;

impl Deframer {
    /// A deframer enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            buf: BytesMut::new(),
            limits,
            allowance: u64::MAX,
        }
    }

    /// How many more bytes [`decode`](Self::decode) may reserve for frames larger than
    /// [`SMALL_FRAME`]: a frame that would need more is refused with
    /// [`DecodeError::OverAllowance`] before anything is reserved. Unlimited by default;
    /// a driver enforcing a memory budget sets it before feeding input.
    pub fn set_allowance(&mut self, bytes: u64) {
        self.allowance = bytes;
    }

    /// What is left of the allowance.
    pub fn allowance(&self) -> u64 {
        self.allowance
    }

    /// Takes `bytes` off the allowance (memory reserved elsewhere for the same peer).
    pub fn spend_allowance(&mut self, bytes: u64) {
        self.allowance = self.allowance.saturating_sub(bytes);
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The receive buffer; append received bytes to it.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends received bytes (for callers that read into their own buffer).
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Takes the receive buffer, e.g. to lend it to an ownership-passing read. Give it
    /// back with [`put_buffer`](Self::put_buffer) before decoding again.
    #[inline]
    pub fn take_buffer(&mut self) -> BytesMut {
        std::mem::take(&mut self.buf)
    }

    /// Returns the buffer taken with [`take_buffer`](Self::take_buffer), with any newly
    /// read bytes appended after those it held.
    #[inline]
    pub fn put_buffer(&mut self, buf: BytesMut) {
        debug_assert!(
            self.buf.is_empty(),
            "buffer put back while another is in place"
        );
        self.buf = buf;
    }

    /// Capacity of the receive buffer (what it holds in memory).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Bytes received but not yet returned as frames.
    #[inline]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The received bytes not yet returned as frames, starting at the next frame.
    ///
    /// For a caller that knows the exact bytes of the frame it expects: a load generator
    /// compares an echo with the frame it sent and, when they are equal, drops it with
    /// [`skip_frame`](Self::skip_frame) instead of decoding it. Equality with a frame
    /// encoded with the same key is full verification (magic, lengths, both CRCs, HMAC and
    /// header are all the same bytes), so only frames that differ need
    /// [`decode`](Self::decode), which names what is wrong with them.
    #[inline]
    pub fn buffered_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Drops the next `len` buffered bytes: one whole frame (or several) the caller has
    /// verified by other means, as [`buffered_bytes`](Self::buffered_bytes) describes.
    /// Decoding goes on at the frame after them.
    ///
    /// # Panics
    /// If `len` is more than [`buffered`](Self::buffered): a bug in the caller, which only
    /// skips bytes it has looked at, never something a peer can cause.
    #[inline]
    pub fn skip_frame(&mut self, len: usize) {
        // A frame boundary, so the next `decode` starts at a fixed header (debug builds
        // check the cheap part: a valid fixed header at the front of the skipped bytes).
        debug_assert!(
            len == 0 || self.pending_frame_len().is_some(),
            "skip_frame must start at a frame"
        );
        self.buf.advance(len);
    }

    /// True when no partial frame is held, so the buffer can go back to a pool.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty()
    }

    /// Length of the frame being received, once its fixed header has been checked.
    pub fn pending_frame_len(&self) -> Option<usize> {
        self.pending().map(|f| f.frame_len())
    }

    /// The fixed header at the front of the buffer, if complete and valid.
    fn pending(&self) -> Option<FixedHeader> {
        FixedHeader::parse(&self.buf, &self.limits).ok().flatten()
    }

    /// Decodes the next frame from the buffered bytes.
    ///
    /// After an error the stream is out of sync and the connection should be closed.
    pub fn decode(&mut self, key: &Key) -> Result<Decoded, DecodeError> {
        let Some(fixed) = FixedHeader::parse(&self.buf, &self.limits)? else {
            return Ok(Decoded::NeedMore(FIXED_HEADER_LEN - self.buf.len()));
        };
        let len = fixed.frame_len();
        if self.buf.len() < len {
            // Limits were checked by `parse`; only now is memory reserved, once, for the
            // whole frame (a no-op on later calls for the same frame).
            if self.buf.capacity() < len {
                let need = len - self.buf.len();
                if len > SMALL_FRAME {
                    if need as u64 > self.allowance {
                        return Err(DecodeError::OverAllowance { frame_len: len });
                    }
                    self.allowance -= need as u64;
                }
                self.buf.reserve(need);
            }
            return Ok(Decoded::NeedMore(len - self.buf.len()));
        }
        let raw = self.buf.split_to(len).freeze();
        verify(key, &fixed, raw).map(Decoded::Frame)
    }

    /// Like [`decode`](Self::decode), verifying with each of `keys` in turn (a frame that
    /// fails every one is [`DecodeError::HmacMismatch`]); also returns the index of the
    /// key that verified it. The CRCs are checked by every attempt, so only the HMAC is
    /// computed again per extra key; only a session's first frame is decoded this way.
    pub fn decode_any(
        &mut self,
        keys: &[std::sync::Arc<Key>],
    ) -> Result<(Decoded, usize), DecodeError> {
        let Some((first, rest)) = keys.split_first() else {
            return Err(DecodeError::HmacMismatch);
        };
        let Some(fixed) = FixedHeader::parse(&self.buf, &self.limits)? else {
            return Ok((Decoded::NeedMore(FIXED_HEADER_LEN - self.buf.len()), 0));
        };
        if self.buf.len() < fixed.frame_len() || rest.is_empty() {
            return self.decode(first).map(|d| (d, 0));
        }
        let raw = self.buf.split_to(fixed.frame_len()).freeze();
        let mut last = DecodeError::HmacMismatch;
        for (i, key) in keys.iter().enumerate() {
            match verify(key, &fixed, raw.clone()) {
                Ok(frame) => return Ok((Decoded::Frame(frame), i)),
                Err(DecodeError::HmacMismatch) => last = DecodeError::HmacMismatch,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Call at end of input: an error if a partial frame is buffered.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let missing = match self.pending() {
            Some(f) => f.frame_len() - self.buf.len(),
            None => FIXED_HEADER_LEN.saturating_sub(self.buf.len()).max(1),
        };
        Err(DecodeError::Truncated { missing })
    }
}

#[cfg(test)]
mod key_tests {
    use std::sync::Arc;

    use super::*;
    use crate::codec::encode_into;
    use crate::frame::FrameType;
    use crate::header::{Header, OCTET_STREAM};

    fn frame(key: &Key, content: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        let h = Header::new(FrameType::Message, Some(OCTET_STREAM), None);
        encode_into(key, &h, content, &mut out).unwrap();
        out
    }

    #[test]
    fn decode_any_names_the_key_that_verified() {
        let (a, b, c) = (
            Arc::new(Key::new(b"a")),
            Arc::new(Key::new(b"b")),
            Arc::new(Key::new(b"c")),
        );
        let mut d = Deframer::new(Limits::default());
        d.extend_from_slice(&frame(&b, b"signed with b"));
        d.extend_from_slice(&frame(&c, b"signed with c"));
        let (got, i) = d.decode_any(&[a.clone(), b.clone()]).unwrap();
        assert!(matches!(got, Decoded::Frame(f) if &f.content[..] == b"signed with b"));
        assert_eq!(i, 1);
        assert_eq!(
            d.decode_any(&[a.clone(), b.clone()]).unwrap_err(),
            DecodeError::HmacMismatch
        );
        // One key: plain decode.
        let mut d = Deframer::new(Limits::default());
        d.extend_from_slice(&frame(&a, b"x"));
        assert!(matches!(
            d.decode_any(&[a]).unwrap(),
            (Decoded::Frame(_), 0)
        ));
    }

    #[test]
    fn the_allowance_bounds_large_frames_only() {
        let key = Key::new(b"k");
        let big = frame(&key, &vec![7u8; 200_000]);
        let mut d = Deframer::new(Limits::default());
        d.set_allowance(100_000);
        d.extend_from_slice(&big[..100]);
        assert_eq!(
            d.decode(&key).unwrap_err(),
            DecodeError::OverAllowance {
                frame_len: big.len()
            }
        );
        assert!(d.capacity() < 100_000, "nothing reserved");
        let mut d = Deframer::new(Limits::default());
        d.set_allowance(300_000);
        d.extend_from_slice(&big[..100]);
        assert!(matches!(d.decode(&key).unwrap(), Decoded::NeedMore(_)));
        assert!(d.allowance() <= 300_000 - 199_000);
        d.extend_from_slice(&big[100..]);
        assert!(matches!(d.decode(&key).unwrap(), Decoded::Frame(_)));
        // Small frames whatever the allowance.
        let small = frame(&key, &vec![1u8; SMALL_FRAME / 2]);
        let mut d = Deframer::new(Limits::default());
        d.set_allowance(0);
        d.extend_from_slice(&small[..100]);
        assert!(matches!(d.decode(&key).unwrap(), Decoded::NeedMore(_)));
        d.extend_from_slice(&small[100..]);
        assert!(matches!(d.decode(&key).unwrap(), Decoded::Frame(_)));
    }
}

#[cfg(test)]
mod skip_tests {
    use super::*;
    use crate::codec::encode_into;
    use crate::frame::FrameType;
    use crate::header::{ByteStr, Header, OCTET_STREAM};

    fn frame(key: &Key, content: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        let h = Header::new(
            FrameType::Message,
            Some(OCTET_STREAM),
            Some(ByteStr::from_static("s1")),
        );
        encode_into(key, &h, content, &mut out).unwrap();
        out
    }

    #[test]
    fn a_frame_recognised_by_its_bytes_is_skipped_and_decoding_resumes_after_it() {
        let key = Key::reference_default();
        let (a, b) = (frame(&key, b"first"), frame(&key, b"second"));
        let mut d = Deframer::default();
        d.extend_from_slice(&a);
        d.extend_from_slice(&b[..10]);
        assert_eq!(&d.buffered_bytes()[..a.len()], &a[..]);
        d.skip_frame(a.len());
        assert_eq!(d.buffered_bytes(), &b[..10]);
        assert!(matches!(d.decode(&key), Ok(Decoded::NeedMore(_))));
        d.extend_from_slice(&b[10..]);
        match d.decode(&key) {
            Ok(Decoded::Frame(f)) => assert_eq!(&f.content[..], b"second"),
            other => panic!("expected the second frame, got {other:?}"),
        }
        assert!(d.is_idle());
        assert!(d.finish().is_ok());
    }

    #[test]
    #[should_panic]
    fn skipping_more_than_was_received_is_a_caller_bug() {
        let key = Key::reference_default();
        let a = frame(&key, b"x");
        let mut d = Deframer::default();
        d.extend_from_slice(&a);
        d.skip_frame(a.len() + 1);
    }
}
