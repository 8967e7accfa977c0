//! The chunk extension: splitting a large message into `chunk` frames and reassembling it.
//!
//! A peer that asked for the `chunk` feature may send a message larger than one frame
//! (10 MiB) as `chunk` frames. Each is a complete frame (own CRCs and HMAC) whose header
//! carries a [`ChunkInfo`]: `message_id`, `index`, `count` and `total_len`.
//!
//! # Chunk layout
//!
//! For a message of `total_len` bytes sent as `count` chunks:
//!
//! * `chunk_len = ceil(total_len / count)`;
//! * chunk `i` covers bytes `[i * chunk_len, min((i + 1) * chunk_len, total_len))` and must
//!   be exactly that long;
//! * every chunk is non-empty, so `count` is valid only when `(count - 1) * chunk_len <
//!   total_len` (which also rules out `count > total_len`).
//!
//! Fixing the layout from `(total_len, count)` alone means the receiver knows every slot's
//! offset and length from any one chunk, so chunks can arrive in any order and each is
//! copied once, straight into the final buffer.
//!
//! The splitter ([`split`]) with a maximum chunk size `C` uses `count = ceil(total_len / C)`
//! and then the rule above. Why every chunk is `≤ C` and none is empty (`T = total_len`,
//! `c = chunk_len`):
//!
//! * `count ≥ T / C`, so `T / count ≤ C`, and since `C` is an integer, `c = ceil(T / count)
//!   ≤ C`.
//! * `count = ceil(T / C)` gives `count - 1 < T / C`, i.e. `(count - 1) * C < T`; with
//!   `c ≤ C`, `(count - 1) * c ≤ (count - 1) * C < T`, so the last chunk starts before the
//!   end and is non-empty (and so is every earlier one, each being a full `c > 0` bytes).
//! * `count * c ≥ count * (T / count) = T`, so the chunks cover the whole message.
//!
//! # Memory
//!
//! The [`Reassembler`] checks `total_len` against [`ChunkLimits::max_message_len`] (and
//! every other property of the first chunk) before it reserves anything; then it
//! reserves the whole message once, zeroed (a large zeroed allocation is obtained from
//! `calloc`, whose pages the OS maps lazily, so the zeroing costs nothing up front). At
//! most [`ChunkLimits::max_partial`] messages are open at once, so a session holds at most
//! `max_partial * max_message_len` bytes of partial messages; [`Reassembler::reserved_bytes`]
//! lets the caller enforce a budget across sessions.
//!
//! Which slots are filled is tracked in a bitset of `count / 8` bytes (rounded up to
//! 8-byte words). `count` is peer-controlled, but `count ≤ total_len ≤ max_message_len`, so
//! the bitset is at most 1/8 of the buffer it describes.

use std::collections::HashMap;
use std::iter::FusedIterator;
use std::ops::Range;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use crate::codec::{encode_parts, EncodeError, EncodedFrame, Key};
use crate::frame::{FrameType, MAX_CONTENT_LEN, MAX_HEADER_LEN};
use crate::header::{ByteStr, ChunkInfo, Header};

/// Bounds on what a peer may make a [`Reassembler`] hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Largest `total_len` accepted for one chunked message.
    pub max_message_len: u64,
    /// Most messages that may be partially received at once.
    pub max_partial: usize,
}

impl Default for ChunkLimits {
    /// 64 MiB per message, 4 partial messages.
    fn default() -> Self {
        Self {
            max_message_len: 64 * 1024 * 1024,
            max_partial: 4,
        }
    }
}

/// Why a chunk was refused.
///
/// None of the variants carries secret material, so the [`Display`](std::fmt::Display)
/// text is safe to send back to the peer in an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// The message's `total_len` is above the limit (checked before reserving anything).
    #[error("chunked message too large: {total_len} bytes (limit {limit})")]
    TooLarge {
        /// Length announced by the peer.
        total_len: u64,
        /// Limit in force.
        limit: u64,
    },
    /// A chunk opened a new message while the maximum number were already partial.
    #[error("too many partial chunked messages (limit {limit})")]
    TooManyPartial {
        /// Limit in force.
        limit: usize,
    },
    /// `count` and `total_len` do not describe a valid layout: either is zero, or
    /// `count` would leave some chunk empty (e.g. `count > total_len`).
    #[error("invalid chunk count {count} for a message of {total_len} bytes")]
    BadCount {
        /// Count announced by the peer.
        count: u32,
        /// Length announced by the peer.
        total_len: u64,
    },
    /// `index` is not below `count`.
    #[error("chunk index {index} out of range (count {count})")]
    IndexOutOfRange {
        /// Index announced by the peer.
        index: u32,
        /// The message's chunk count.
        count: u32,
    },
    /// This chunk of the message was already received.
    #[error("duplicate chunk {index}")]
    Duplicate {
        /// Index announced by the peer.
        index: u32,
    },
    /// `count`, `total_len` or `content_type` differ from the message's first chunk.
    #[error("chunk inconsistent with the first chunk of its message")]
    Inconsistent,
    /// The chunk's content does not exactly fill its slot.
    #[error("chunk {index} has {got} bytes, its slot has {expected}")]
    WrongLength {
        /// Index of the chunk.
        index: u32,
        /// Length of the chunk's slot under the layout rule.
        expected: u64,
        /// Length of the content received.
        got: u64,
    },
}

impl ChunkError {
    /// A short, stable, machine-friendly name, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::TooManyPartial { .. } => "too_many_partial",
            Self::BadCount { .. } => "bad_count",
            Self::IndexOutOfRange { .. } => "index_out_of_range",
            Self::Duplicate { .. } => "duplicate",
            Self::Inconsistent => "inconsistent",
            Self::WrongLength { .. } => "wrong_length",
        }
    }
}

/// A message whose chunks have all arrived.
#[derive(Debug)]
pub struct Reassembled {
    /// The sender's id for the message.
    pub message_id: ByteStr,
    /// The whole message's `content_type`, as carried by its chunks.
    pub content_type: Option<ByteStr>,
    /// The whole message.
    pub content: Bytes,
}

/// The layout of one message, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    count: u32,
    total_len: u64,
    chunk_len: u64,
}

impl Layout {
    /// Validates `count` against `total_len` per the layout rule.
    fn new(count: u32, total_len: u64) -> Result<Self, ChunkError> {
        let bad = ChunkError::BadCount { count, total_len };
        if count == 0 || total_len == 0 {
            return Err(bad);
        }
        let chunk_len = total_len.div_ceil(u64::from(count));
        // The last chunk must start before the end; an overflow means it starts far past it.
        match u64::from(count - 1).checked_mul(chunk_len) {
            Some(last_start) if last_start < total_len => Ok(Self {
                count,
                total_len,
                chunk_len,
            }),
            _ => Err(bad),
        }
    }

    /// The byte range of chunk `index`, which must be below `count`. Cannot overflow:
    /// `index * chunk_len ≤ (count - 1) * chunk_len < total_len` was checked in `new`.
    fn slot(&self, index: u32) -> Range<u64> {
        debug_assert!(index < self.count);
        let start = u64::from(index) * self.chunk_len;
        let end = start.saturating_add(self.chunk_len).min(self.total_len);
        start..end
    }

    /// Checks `index` and the content length against this layout; returns the slot.
    fn check(&self, index: u32, got: usize) -> Result<Range<u64>, ChunkError> {
        if index >= self.count {
            return Err(ChunkError::IndexOutOfRange {
                index,
                count: self.count,
            });
        }
        let slot = self.slot(index);
        let expected = slot.end - slot.start;
        let got = got as u64;
        if got != expected {
            return Err(ChunkError::WrongLength {
                index,
                expected,
                got,
            });
        }
        Ok(slot)
    }
}

/// A message some of whose chunks have arrived.
#[derive(Debug)]
struct Partial {
    /// When the message opened, if the caller keeps a message timeout.
    opened: Option<Instant>,
    layout: Layout,
    content_type: Option<ByteStr>,
    buf: BytesMut,
    /// Bit `i` set once chunk `i` has been placed.
    filled: Vec<u64>,
    received: u32,
}

impl Partial {
    fn is_filled(&self, index: u32) -> bool {
        let (word, bit) = (index as usize / 64, index % 64);
        self.filled[word] & (1 << bit) != 0
    }

    fn mark_filled(&mut self, index: u32) {
        let (word, bit) = (index as usize / 64, index % 64);
        self.filled[word] |= 1 << bit;
    }
}

/// Reassembles chunked messages for one session.
///
/// A chunk that is refused leaves the reassembler unchanged; a refused chunk means the
/// peer is broken or hostile, so the caller normally ends the session (and drops the
/// reassembler or calls [`clear`](Self::clear)).
#[derive(Debug)]
pub struct Reassembler {
    limits: ChunkLimits,
    partial: HashMap<ByteStr, Partial>,
    reserved: u64,
}

impl Reassembler {
    /// An empty reassembler enforcing `limits`.
    pub fn new(limits: ChunkLimits) -> Self {
        Self {
            limits,
            partial: HashMap::new(),
            reserved: 0,
        }
    }

    /// Places `content` into its slot of the message's single buffer (reserved once, at the
    /// first chunk, after checking `total_len` against the limit). Returns the complete
    /// message when all `count` chunks arrived.
    ///
    /// The first chunk received for a `message_id` (whatever its index) fixes the
    /// message's `count`, `total_len` and `content_type`; later chunks must match them.
    ///
    /// For a new message the checks run in this order, all before any allocation:
    /// `total_len` against the limit ([`ChunkError::TooLarge`]), the layout
    /// ([`ChunkError::BadCount`]), the index and the content's length, then the number of
    /// open messages ([`ChunkError::TooManyPartial`]). A message of one chunk is returned
    /// at once without being held, so it does not count against `max_partial`.
    pub fn push(
        &mut self,
        info: &ChunkInfo,
        content_type: Option<&ByteStr>,
        content: &[u8],
    ) -> Result<Option<Reassembled>, ChunkError> {
        self.push_at(info, content_type, content, None)
    }

    /// Like [`push`](Self::push), noting `now` as the time a new message opened (see
    /// [`oldest_open`](Self::oldest_open)), for a message timeout.
    pub fn push_at(
        &mut self,
        info: &ChunkInfo,
        content_type: Option<&ByteStr>,
        content: &[u8],
        now: Option<Instant>,
    ) -> Result<Option<Reassembled>, ChunkError> {
        let index = info.index;
        if let Some(p) = self.partial.get_mut(&info.message_id) {
            if p.layout.count != info.count
                || p.layout.total_len != info.total_len
                || p.content_type.as_ref() != content_type
            {
                return Err(ChunkError::Inconsistent);
            }
            let slot = p.layout.check(index, content.len())?;
            if p.is_filled(index) {
                return Err(ChunkError::Duplicate { index });
            }
            // Lossless: slot.end ≤ total_len = buf.len().
            p.buf[slot.start as usize..slot.end as usize].copy_from_slice(content);
            p.mark_filled(index);
            p.received += 1;
            if p.received < p.layout.count {
                return Ok(None);
            }
            let (message_id, p) = self
                .partial
                .remove_entry(&info.message_id)
                .expect("entry was just found");
            self.reserved = self.reserved.saturating_sub(p.layout.total_len);
            return Ok(Some(Reassembled {
                message_id,
                content_type: p.content_type,
                content: p.buf.freeze(),
            }));
        }

        // A new message: every check comes before any allocation.
        let limit = self.limits.max_message_len;
        let too_large = ChunkError::TooLarge {
            total_len: info.total_len,
            limit,
        };
        if info.total_len > limit {
            return Err(too_large);
        }
        let len = usize::try_from(info.total_len).map_err(|_| too_large)?;
        let layout = Layout::new(info.count, info.total_len)?;
        let slot = layout.check(index, content.len())?;
        if layout.count == 1 {
            // Nothing to wait for: hand the content over without holding any state.
            return Ok(Some(Reassembled {
                message_id: detach(&info.message_id),
                content_type: content_type.map(detach),
                content: Bytes::copy_from_slice(content),
            }));
        }
        if self.partial.len() >= self.limits.max_partial {
            return Err(ChunkError::TooManyPartial {
                limit: self.limits.max_partial,
            });
        }

        let mut buf = BytesMut::zeroed(len);
        buf[slot.start as usize..slot.end as usize].copy_from_slice(content);
        let mut p = Partial {
            opened: now,
            layout,
            content_type: content_type.map(detach),
            buf,
            filled: vec![0; layout.count.div_ceil(64) as usize],
            received: 1,
        };
        p.mark_filled(index);
        self.partial.insert(detach(&info.message_id), p);
        self.reserved = self.reserved.saturating_add(layout.total_len);
        Ok(None)
    }

    /// Number of messages partially received.
    pub fn partial_count(&self) -> usize {
        self.partial.len()
    }

    /// True when a chunk of `message_id` would join a message already open (rather than
    /// open a new one and reserve its `total_len`).
    pub fn is_open(&self, message_id: &ByteStr) -> bool {
        self.partial.contains_key(message_id)
    }

    /// When the oldest open message (opened through [`push_at`](Self::push_at)) opened.
    pub fn oldest_open(&self) -> Option<Instant> {
        self.partial.values().filter_map(|p| p.opened).min()
    }

    /// Sum of `total_len` of the open partial messages: the bytes reserved for them.
    pub fn reserved_bytes(&self) -> u64 {
        self.reserved
    }

    /// Drops every partial message, releasing its memory.
    pub fn clear(&mut self) {
        // Replace rather than `clear()`: the map's own table is released too.
        self.partial = HashMap::new();
        self.reserved = 0;
    }
}

/// Copies a string taken from a received frame: strings parsed from a header share the
/// frame's buffer, and keeping one in a long-lived map would pin the whole frame (up to
/// 10 MiB) in memory for as long as the message is partial.
fn detach(s: &ByteStr) -> ByteStr {
    ByteStr::from(s.as_str())
}

/// Splits one message into chunk frames (lazy iterator, so a 64 MiB message is not
/// encoded all at once).
///
/// `max_chunk` is clamped to the 10 MiB frame limit. Everything that could make a frame
/// fail to encode is checked here, so the iterator itself is infallible:
///
/// * empty `content`: [`EncodeError::EmptyContent`];
/// * `max_chunk == 0`, or more than `u32::MAX` chunks needed:
///   [`EncodeError::ContentTooLarge`] (the content cannot be carried as chunks of that
///   size);
/// * header JSON (with the widest index) above 64 KiB: [`EncodeError::HeaderTooLarge`].
pub fn split(
    key: &Key,
    session_id: Option<ByteStr>,
    content_type: Option<ByteStr>,
    message_id: ByteStr,
    content: Bytes,
    max_chunk: usize,
) -> Result<ChunkFrames, EncodeError> {
    let header = Header::new(FrameType::Chunk, content_type, session_id);
    split_with(key, header, message_id, content, max_chunk)
}

/// Like [`split`], with the other keys of every chunk header (`content_type`,
/// `session_id` and extension keys such as `room` and `from`) taken from `base`; its
/// `type` and chunk keys are set here.
pub fn split_with(
    key: &Key,
    base: Header,
    message_id: ByteStr,
    content: Bytes,
    max_chunk: usize,
) -> Result<ChunkFrames, EncodeError> {
    if content.is_empty() {
        return Err(EncodeError::EmptyContent);
    }
    let total_len = content.len() as u64;
    let max_chunk = (max_chunk as u64).min(MAX_CONTENT_LEN);
    if max_chunk == 0 {
        return Err(EncodeError::ContentTooLarge(content.len()));
    }
    let count = u32::try_from(total_len.div_ceil(max_chunk))
        .map_err(|_| EncodeError::ContentTooLarge(content.len()))?;
    let layout = Layout::new(count, total_len)
        .expect("ceil(T / C) chunks always form a valid layout (proof in the module docs)");
    let mut header = base;
    header.kind = FrameType::Chunk;
    // The header JSON differs between chunks only in the index's digits, so the last
    // index gives the longest one.
    header.chunk = Some(ChunkInfo {
        message_id,
        index: count - 1,
        count,
        total_len,
    });
    let json_len = header.to_json().len();
    if json_len > MAX_HEADER_LEN as usize {
        return Err(EncodeError::HeaderTooLarge(json_len));
    }
    Ok(ChunkFrames {
        key: key.clone(),
        header,
        content,
        layout,
        next: 0,
    })
}

/// The chunk frames of one message, encoded one at a time as they are taken. Each frame's
/// content is a slice of the message (no copy).
#[derive(Debug)]
pub struct ChunkFrames {
    key: Key,
    /// The chunk header; only `chunk.index` changes from frame to frame.
    header: Header,
    content: Bytes,
    layout: Layout,
    next: u32,
}

impl ChunkFrames {
    /// Number of chunks the message is split into (the `count` in every chunk header);
    /// [`len`](ExactSizeIterator::len) gives those not yet taken.
    pub fn chunk_count(&self) -> u32 {
        self.layout.count
    }
}

impl Iterator for ChunkFrames {
    type Item = EncodedFrame;

    fn next(&mut self) -> Option<EncodedFrame> {
        if self.next >= self.layout.count {
            return None;
        }
        let index = self.next;
        self.next += 1;
        let slot = self.layout.slot(index);
        if let Some(c) = &mut self.header.chunk {
            c.index = index;
        }
        // Lossless: slot.end ≤ total_len = content.len().
        let part = self.content.slice(slot.start as usize..slot.end as usize);
        // Cannot fail: the part is non-empty and at most max_chunk ≤ 10 MiB (module docs),
        // and `split` checked the longest header JSON.
        Some(encode_parts(&self.key, &self.header, part).expect("checked in split"))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.layout.count - self.next) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for ChunkFrames {}

impl FusedIterator for ChunkFrames {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode_frame;
    use crate::frame::Limits;

    /// Deterministic, position-dependent bytes, so a chunk placed in the wrong slot shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ (i as u8))
            .collect()
    }

    fn slots(total: usize, count: u32) -> Vec<Range<usize>> {
        let l = Layout::new(count, total as u64).unwrap();
        (0..count)
            .map(|i| {
                let s = l.slot(i);
                s.start as usize..s.end as usize
            })
            .collect()
    }

    fn ct() -> ByteStr {
        ByteStr::from("image/jpeg")
    }

    #[test]
    fn in_order() {
        let data = pattern(10);
        let mut r = Reassembler::new(ChunkLimits::default());
        let s = slots(10, 4);
        assert_eq!(s, vec![0..3, 3..6, 6..9, 9..10]);
        for (i, range) in s.iter().enumerate().take(3) {
            let out = r
                .push(
                    &ChunkInfo::new("m", i as u32, 4, 10),
                    Some(&ct()),
                    &data[range.clone()],
                )
                .unwrap();
            assert!(out.is_none());
            assert_eq!(r.reserved_bytes(), 10);
            assert_eq!(r.partial_count(), 1);
        }
        let done = r
            .push(&ChunkInfo::new("m", 3, 4, 10), Some(&ct()), &data[9..])
            .unwrap()
            .unwrap();
        assert_eq!(done.message_id, "m");
        assert_eq!(done.content_type, Some(ct()));
        assert_eq!(&done.content[..], &data[..]);
        assert_eq!(r.partial_count(), 0);
        assert_eq!(r.reserved_bytes(), 0);
    }

    #[test]
    fn out_of_order_with_short_last_chunk() {
        let total = 1000;
        let data = pattern(total);
        let s = slots(total, 7); // chunk_len 143, last chunk 142 bytes
        assert_eq!(s[6].len(), 142);
        let mut r = Reassembler::new(ChunkLimits::default());
        let order = [6, 2, 0, 5, 3, 1, 4];
        for (n, &i) in order.iter().enumerate() {
            let out = r
                .push(
                    &ChunkInfo::new("x", i, 7, total as u64),
                    None,
                    &data[s[i as usize].clone()],
                )
                .unwrap();
            if n + 1 < order.len() {
                assert!(out.is_none());
            } else {
                let m = out.unwrap();
                assert_eq!(m.content_type, None);
                assert_eq!(&m.content[..], &data[..]);
            }
        }
        assert_eq!(r.reserved_bytes(), 0);
    }

    #[test]
    fn single_chunk_holds_no_state() {
        let mut r = Reassembler::new(ChunkLimits::default());
        let m = r
            .push(&ChunkInfo::new("one", 0, 1, 5), Some(&ct()), b"hello")
            .unwrap()
            .unwrap();
        assert_eq!(&m.content[..], b"hello");
        assert_eq!(m.message_id, "one");
        assert_eq!(r.partial_count(), 0);
        assert_eq!(r.reserved_bytes(), 0);
    }

    #[test]
    fn interleaved_messages() {
        let (a, b) = (pattern(9), pattern(20));
        let mut r = Reassembler::new(ChunkLimits::default());
        assert!(r
            .push(&ChunkInfo::new("a", 0, 3, 9), None, &a[0..3])
            .unwrap()
            .is_none());
        assert!(r
            .push(&ChunkInfo::new("b", 1, 2, 20), None, &b[10..])
            .unwrap()
            .is_none());
        assert_eq!(r.reserved_bytes(), 29);
        assert!(r
            .push(&ChunkInfo::new("a", 2, 3, 9), None, &a[6..])
            .unwrap()
            .is_none());
        let mb = r
            .push(&ChunkInfo::new("b", 0, 2, 20), None, &b[..10])
            .unwrap()
            .unwrap();
        assert_eq!(&mb.content[..], &b[..]);
        assert_eq!(r.reserved_bytes(), 9);
        let ma = r
            .push(&ChunkInfo::new("a", 1, 3, 9), None, &a[3..6])
            .unwrap()
            .unwrap();
        assert_eq!(&ma.content[..], &a[..]);
        // A completed id may be reused for a new message.
        assert!(r
            .push(&ChunkInfo::new("a", 0, 2, 4), None, b"ab")
            .unwrap()
            .is_none());
    }

    #[test]
    fn too_large_is_checked_before_reserving() {
        let limits = ChunkLimits {
            max_message_len: 100,
            max_partial: 4,
        };
        let mut r = Reassembler::new(limits);
        let e = r
            .push(&ChunkInfo::new("m", 0, 2, 101), None, &[0; 51])
            .unwrap_err();
        assert_eq!(
            e,
            ChunkError::TooLarge {
                total_len: 101,
                limit: 100
            }
        );
        assert_eq!(e.kind(), "too_large");
        // Even an absurd length with an absurd count is refused on the length first.
        let e = r
            .push(&ChunkInfo::new("m", 0, u32::MAX, u64::MAX), None, &[0; 1])
            .unwrap_err();
        assert_eq!(e.kind(), "too_large");
        assert_eq!(r.reserved_bytes(), 0);
        assert_eq!(r.partial_count(), 0);
        // Exactly at the limit is fine.
        assert!(r
            .push(&ChunkInfo::new("m", 0, 2, 100), None, &[0; 50])
            .unwrap()
            .is_none());
        assert_eq!(r.reserved_bytes(), 100);
    }

    #[test]
    fn too_many_partial() {
        let mut r = Reassembler::new(ChunkLimits {
            max_message_len: 1 << 20,
            max_partial: 2,
        });
        r.push(&ChunkInfo::new("a", 0, 2, 2), None, b"a").unwrap();
        r.push(&ChunkInfo::new("b", 0, 2, 2), None, b"b").unwrap();
        let e = r
            .push(&ChunkInfo::new("c", 0, 2, 2), None, b"c")
            .unwrap_err();
        assert_eq!(e, ChunkError::TooManyPartial { limit: 2 });
        assert_eq!(e.kind(), "too_many_partial");
        assert_eq!(r.reserved_bytes(), 4);
        // Chunks of open messages still go through, and a single-chunk message needs no slot.
        assert!(r
            .push(&ChunkInfo::new("solo", 0, 1, 1), None, b"s")
            .unwrap()
            .is_some());
        assert!(r
            .push(&ChunkInfo::new("a", 1, 2, 2), None, b"A")
            .unwrap()
            .is_some());
        assert!(r
            .push(&ChunkInfo::new("c", 0, 2, 2), None, b"c")
            .unwrap()
            .is_none());
    }

    #[test]
    fn bad_count() {
        let mut r = Reassembler::new(ChunkLimits::default());
        for (count, total) in [
            (0, 10),
            (1, 0),
            (0, 0),
            (11, 10),
            (6, 10),
            (u32::MAX, 1 << 20),
        ] {
            let e = r
                .push(&ChunkInfo::new("m", 0, count, total), None, b"x")
                .unwrap_err();
            assert_eq!(
                e,
                ChunkError::BadCount {
                    count,
                    total_len: total
                },
                "count {count} total {total}"
            );
            assert_eq!(e.kind(), "bad_count");
        }
        // 10 bytes as 5 chunks of 2 is fine; as 6 (chunk_len 2) the last would be empty.
        assert!(Layout::new(5, 10).is_ok());
        assert!(Layout::new(10, 10).is_ok());
        assert_eq!(r.reserved_bytes(), 0);
    }

    #[test]
    fn layout_rule_holds_for_every_small_case() {
        for total in 1..=200u64 {
            for count in 1..=total as u32 + 2 {
                let chunk_len = total.div_ceil(u64::from(count));
                let nonempty = (u64::from(count) - 1) * chunk_len < total;
                match Layout::new(count, total) {
                    Ok(l) => {
                        assert!(nonempty);
                        let mut at = 0;
                        for i in 0..count {
                            let s = l.slot(i);
                            assert_eq!(s.start, at);
                            assert!(s.end > s.start && s.end - s.start <= chunk_len);
                            at = s.end;
                        }
                        assert_eq!(at, total);
                    }
                    Err(_) => assert!(!nonempty || count == 0),
                }
            }
        }
    }

    #[test]
    fn index_out_of_range() {
        let mut r = Reassembler::new(ChunkLimits::default());
        let e = r
            .push(&ChunkInfo::new("m", 4, 4, 10), None, b"x")
            .unwrap_err();
        assert_eq!(e, ChunkError::IndexOutOfRange { index: 4, count: 4 });
        assert_eq!(e.kind(), "index_out_of_range");
        r.push(&ChunkInfo::new("m", 0, 4, 10), None, b"abc")
            .unwrap();
        let e = r
            .push(&ChunkInfo::new("m", u32::MAX, 4, 10), None, b"x")
            .unwrap_err();
        assert_eq!(
            e,
            ChunkError::IndexOutOfRange {
                index: u32::MAX,
                count: 4
            }
        );
    }

    #[test]
    fn duplicate() {
        let mut r = Reassembler::new(ChunkLimits::default());
        r.push(&ChunkInfo::new("m", 1, 3, 9), None, b"def").unwrap();
        let e = r
            .push(&ChunkInfo::new("m", 1, 3, 9), None, b"def")
            .unwrap_err();
        assert_eq!(e, ChunkError::Duplicate { index: 1 });
        assert_eq!(e.kind(), "duplicate");
        // The refused chunk changed nothing: the message still completes.
        r.push(&ChunkInfo::new("m", 0, 3, 9), None, b"abc").unwrap();
        let m = r
            .push(&ChunkInfo::new("m", 2, 3, 9), None, b"ghi")
            .unwrap()
            .unwrap();
        assert_eq!(&m.content[..], b"abcdefghi");
    }

    #[test]
    fn duplicate_in_bitset_beyond_first_word() {
        let total = 300usize;
        let data = pattern(total);
        let mut r = Reassembler::new(ChunkLimits::default());
        for i in [0u32, 63, 64, 65, 128, 299] {
            let i_us = i as usize;
            r.push(
                &ChunkInfo::new("m", i, 300, 300),
                None,
                &data[i_us..i_us + 1],
            )
            .unwrap();
            let e = r
                .push(
                    &ChunkInfo::new("m", i, 300, 300),
                    None,
                    &data[i_us..i_us + 1],
                )
                .unwrap_err();
            assert_eq!(e, ChunkError::Duplicate { index: i });
        }
    }

    #[test]
    fn inconsistent() {
        let mut r = Reassembler::new(ChunkLimits::default());
        r.push(&ChunkInfo::new("m", 0, 3, 9), Some(&ct()), b"abc")
            .unwrap();
        for (count, total, c) in [
            (4, 9, Some(ct())),
            (3, 10, Some(ct())),
            (3, 9, None),
            (3, 9, Some(ByteStr::from("text/plain"))),
        ] {
            let e = r
                .push(&ChunkInfo::new("m", 1, count, total), c.as_ref(), b"def")
                .unwrap_err();
            assert_eq!(e, ChunkError::Inconsistent);
            assert_eq!(e.kind(), "inconsistent");
        }
        assert_eq!(r.reserved_bytes(), 9);
    }

    #[test]
    fn wrong_length() {
        let mut r = Reassembler::new(ChunkLimits::default());
        // First chunk of a message: refused before anything is reserved.
        let e = r
            .push(&ChunkInfo::new("m", 0, 4, 10), None, b"abcd")
            .unwrap_err();
        assert_eq!(
            e,
            ChunkError::WrongLength {
                index: 0,
                expected: 3,
                got: 4
            }
        );
        assert_eq!(e.kind(), "wrong_length");
        assert_eq!(r.reserved_bytes(), 0);
        // Later chunks: overrun and underrun of the short last slot.
        r.push(&ChunkInfo::new("m", 0, 4, 10), None, b"abc")
            .unwrap();
        for bad in [&b"jk"[..], b""] {
            let e = r
                .push(&ChunkInfo::new("m", 3, 4, 10), None, bad)
                .unwrap_err();
            assert_eq!(
                e,
                ChunkError::WrongLength {
                    index: 3,
                    expected: 1,
                    got: bad.len() as u64
                }
            );
        }
        let e = r
            .push(&ChunkInfo::new("m", 1, 4, 10), None, b"de")
            .unwrap_err();
        assert_eq!(e.kind(), "wrong_length");
    }

    #[test]
    fn clear_releases_everything() {
        let mut r = Reassembler::new(ChunkLimits::default());
        r.push(&ChunkInfo::new("a", 0, 2, 1000), None, &[1; 500])
            .unwrap();
        r.push(&ChunkInfo::new("b", 0, 2, 2000), None, &[1; 1000])
            .unwrap();
        assert_eq!((r.partial_count(), r.reserved_bytes()), (2, 3000));
        r.clear();
        assert_eq!((r.partial_count(), r.reserved_bytes()), (0, 0));
        // A chunk of a cleared message starts over.
        assert!(r
            .push(&ChunkInfo::new("a", 1, 2, 1000), None, &[2; 500])
            .unwrap()
            .is_none());
    }

    #[test]
    fn stored_strings_do_not_pin_the_frame() {
        let frame = Bytes::from(vec![b'x'; 4096]);
        let id = ByteStr::from_utf8(frame.slice(0..8)).unwrap();
        let ctype = ByteStr::from_utf8(frame.slice(8..16)).unwrap();
        let mut r = Reassembler::new(ChunkLimits::default());
        let chunk = ChunkInfo {
            message_id: id,
            index: 0,
            count: 2,
            total_len: 2,
        };
        r.push(&chunk, Some(&ctype), b"a").unwrap();
        let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let (k, p) = r.partial.iter().next().unwrap();
        assert!(!range.contains(&(k.as_bytes().as_ptr() as usize)));
        let stored = p.content_type.as_ref().unwrap();
        assert!(!range.contains(&(stored.as_bytes().as_ptr() as usize)));
    }

    #[test]
    fn split_layout_and_errors() {
        let key = Key::reference_default();
        let id = ByteStr::from("m");
        let content = Bytes::from(pattern(10));
        let frames = split(&key, None, None, id.clone(), content.clone(), 3).unwrap();
        assert_eq!(frames.len(), 4);
        assert_eq!(frames.chunk_count(), 4);
        let lens: Vec<usize> = frames.map(|f| f.content.len()).collect();
        assert_eq!(lens, vec![3, 3, 3, 1]);
        // 10 bytes at max 4: count 3, chunk_len 4 -> 4, 4, 2.
        let lens: Vec<usize> = split(&key, None, None, id.clone(), content.clone(), 4)
            .unwrap()
            .map(|f| f.content.len())
            .collect();
        assert_eq!(lens, vec![4, 4, 2]);
        // One chunk when it fits.
        assert_eq!(
            split(&key, None, None, id.clone(), content.clone(), 10)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            split(&key, None, None, id.clone(), Bytes::new(), 3).unwrap_err(),
            EncodeError::EmptyContent
        );
        assert_eq!(
            split(&key, None, None, id.clone(), content.clone(), 0).unwrap_err(),
            EncodeError::ContentTooLarge(10)
        );
        let long_id = ByteStr::from("i".repeat(MAX_HEADER_LEN as usize));
        assert!(matches!(
            split(&key, None, None, long_id, content, 3).unwrap_err(),
            EncodeError::HeaderTooLarge(_)
        ));
    }

    #[test]
    fn split_clamps_to_the_frame_limit() {
        let key = Key::reference_default();
        let total = MAX_CONTENT_LEN as usize + 1;
        let frames = split(
            &key,
            None,
            None,
            ByteStr::from("big"),
            Bytes::from(vec![7; total]),
            usize::MAX,
        )
        .unwrap();
        assert_eq!(frames.len(), 2);
        for f in frames {
            assert!(f.content.len() as u64 <= MAX_CONTENT_LEN);
        }
    }

    #[test]
    fn split_frames_share_the_content() {
        let key = Key::reference_default();
        let content = Bytes::from(pattern(100));
        let base = content.as_ptr() as usize;
        for (i, f) in split(&key, None, None, ByteStr::from("m"), content.clone(), 30)
            .unwrap()
            .enumerate()
        {
            assert_eq!(f.content.as_ptr() as usize, base + i * 25);
        }
    }

    /// Encodes, decodes and verifies every frame, then reassembles, for a range of sizes
    /// and chunk sizes, in forward and reverse order.
    #[test]
    fn split_push_round_trip() {
        let key = Key::reference_default();
        let limits = Limits::default();
        let session = ByteStr::from("3f1c6a0e-8d2b-4c55-9a77-0e6b1d2c4f10");
        let sizes = [
            1usize,
            2,
            3,
            7,
            64,
            1000,
            4097,
            65_537,
            1 << 20,
            (3 << 20) + 5,
        ];
        let max_chunks = [1usize, 3, 1000, 4096, 1 << 18, 1 << 20];
        for &size in &sizes {
            let data = Bytes::from(pattern(size));
            for &max_chunk in &max_chunks {
                // Keep the per-frame overhead of 1-byte chunks of big messages out of CI.
                if size / max_chunk > 5000 {
                    continue;
                }
                for reverse in [false, true] {
                    let mut r = Reassembler::new(ChunkLimits::default());
                    let frames = split(
                        &key,
                        Some(session.clone()),
                        Some(ct()),
                        ByteStr::from("msg-1"),
                        data.clone(),
                        max_chunk,
                    )
                    .unwrap();
                    let expected = size.div_ceil(max_chunk);
                    assert_eq!(frames.len(), expected);
                    let mut frames: Vec<EncodedFrame> = frames.collect();
                    if reverse {
                        frames.reverse();
                    }
                    let n = frames.len();
                    let mut done = None;
                    for (k, f) in frames.into_iter().enumerate() {
                        assert!(f.content.len() <= max_chunk && !f.content.is_empty());
                        let mut wire = BytesMut::from(&f.head[..]);
                        wire.extend_from_slice(&f.content);
                        let frame = decode_frame(&key, &limits, wire.freeze()).unwrap();
                        assert_eq!(frame.header.kind, FrameType::Chunk);
                        assert_eq!(frame.header.session_id.as_ref(), Some(&session));
                        let ci = frame.header.chunk.as_ref().unwrap();
                        let out = r
                            .push(ci, frame.header.content_type.as_ref(), &frame.content)
                            .unwrap();
                        if k + 1 < n {
                            assert!(out.is_none());
                        } else {
                            done = out;
                        }
                    }
                    let m = done.expect("complete after the last chunk");
                    assert_eq!(m.message_id, "msg-1");
                    assert_eq!(m.content_type, Some(ct()));
                    assert!(m.content == data, "size {size} max_chunk {max_chunk}");
                    assert_eq!(r.reserved_bytes(), 0);
                }
            }
        }
    }

    #[test]
    fn error_text_is_descriptive() {
        let e = ChunkError::WrongLength {
            index: 3,
            expected: 1,
            got: 2,
        };
        assert_eq!(e.to_string(), "chunk 3 has 2 bytes, its slot has 1");
    }
}

#[cfg(test)]
mod timing_tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn open_messages_and_their_age() {
        let t0 = Instant::now();
        let mut r = Reassembler::new(ChunkLimits::default());
        assert_eq!(r.oldest_open(), None);
        assert!(!r.is_open(&ByteStr::from("a")));
        r.push_at(&ChunkInfo::new("a", 0, 2, 4), None, b"ab", Some(t0))
            .unwrap();
        let t1 = t0 + Duration::from_secs(1);
        r.push_at(&ChunkInfo::new("b", 0, 2, 4), None, b"ab", Some(t1))
            .unwrap();
        assert!(r.is_open(&ByteStr::from("a")));
        assert_eq!(r.oldest_open(), Some(t0));
        let done = r
            .push_at(&ChunkInfo::new("a", 1, 2, 4), None, b"cd", Some(t1))
            .unwrap();
        assert_eq!(&done.unwrap().content[..], b"abcd");
        assert_eq!(r.oldest_open(), Some(t1));
        // push (no time) opens messages that no timeout applies to.
        r.clear();
        r.push(&ChunkInfo::new("c", 0, 2, 4), None, b"ab").unwrap();
        assert_eq!(r.oldest_open(), None);
    }
}
