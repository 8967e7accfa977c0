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
use std::fmt;
use std::iter::FusedIterator;
use std::ops::Range;
use std::sync::Arc;
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
    /// A chunk of a message one of whose slots is lent out ([`Reassembler::lend`]) and
    /// not given back yet: a driver's mistake (it must not handle input meanwhile).
    #[error("chunk of a message whose slot {index} is being received into")]
    SlotLent {
        /// Index of the lent slot.
        index: u32,
    },
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
            Self::SlotLent { .. } => "slot_lent",
            Self::WrongLength { .. } => "wrong_length",
        }
    }
}

/// Where a [`Reassembler`] gets the buffer of a new chunked message (by default a
/// fresh zeroed allocation). A driver that receives many large messages supplies one
/// that reuses buffers: a fresh buffer of a megabyte or more is a new mapping on most
/// allocators, faulted in page by page as the chunks are copied into it.
pub trait MessageBuffers: fmt::Debug + Send + Sync {
    /// A buffer of exactly `len` bytes (initialised, any content: every byte is
    /// overwritten by a chunk before the message is handed out). One of another length
    /// is not used (a fresh one is allocated instead).
    fn take(&self, len: usize) -> BytesMut;
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
    /// The chunk frames exactly as received, in the order they arrived: each one's head
    /// (fixed header and header JSON, copied when it arrived) and its content, a slice of
    /// [`content`](Self::content). Sending them back sends the very bytes received, with
    /// no re-encoding and no HMAC. Kept only for chunks pushed with
    /// [`push_frame`](Reassembler::push_frame), and only while the heads are small
    /// beside the message (see [`Reassembler::push_frame`]).
    pub frames: Option<Vec<EncodedFrame>>,
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
    /// The heads of the chunks received so far, with their index (see
    /// [`Reassembled::frames`]); `None` once given up.
    heads: Option<Vec<(u32, Bytes)>>,
    /// Bytes of `heads`.
    heads_len: u64,
}

impl Partial {
    /// Keeps chunk `index`'s head for [`Reassembled::frames`] while the heads stay small
    /// beside the message; gives them all up otherwise (or when `head` is `None`).
    fn keep_head(&mut self, index: u32, head: Option<&[u8]>) {
        let Some(heads) = self.heads.as_mut() else {
            return;
        };
        let limit = (self.layout.total_len / 32).max(4096);
        match head {
            Some(h) if self.heads_len + h.len() as u64 <= limit => {
                heads.push((index, Bytes::copy_from_slice(h)));
                self.heads_len += h.len() as u64;
            }
            _ => {
                self.heads = None;
                self.heads_len = 0;
            }
        }
    }

    fn is_filled(&self, index: u32) -> bool {
        let (word, bit) = (index as usize / 64, index % 64);
        self.filled[word] & (1 << bit) != 0
    }

    fn mark_filled(&mut self, index: u32) {
        let (word, bit) = (index as usize / 64, index % 64);
        self.filled[word] |= 1 << bit;
    }
}

/// Where a checked chunk goes.
#[derive(Debug)]
enum Place {
    /// Into an open message, at `slot`.
    Open { slot: Range<u64> },
    /// It opens a new message; it goes at `slot`.
    New { layout: Layout, slot: Range<u64> },
    /// It is a whole message by itself.
    Single,
}

/// Reassembles chunked messages for one session.
///
/// A chunk that is refused leaves the reassembler unchanged; a refused chunk means the
/// peer is broken or hostile, so the caller normally ends the session (and drops the
/// reassembler or calls [`clear`](Self::clear)).
#[derive(Debug)]
pub struct Reassembler {
    limits: ChunkLimits,
    buffers: Option<Arc<dyn MessageBuffers>>,
    partial: HashMap<ByteStr, Partial>,
    reserved: u64,
    /// Bytes of the chunk heads kept by the open messages ([`Reassembled::frames`]).
    heads: u64,
    /// The slot lent out for a chunk's content to be received into it (`lend.rs`).
    lent: Option<lend::Lent>,
}

impl Reassembler {
    /// An empty reassembler enforcing `limits`.
    pub fn new(limits: ChunkLimits) -> Self {
        Self::with_buffers(limits, None)
    }

    /// An empty reassembler enforcing `limits` that takes each new message's buffer from
    /// `buffers` (a fresh zeroed allocation when `None`).
    pub fn with_buffers(limits: ChunkLimits, buffers: Option<Arc<dyn MessageBuffers>>) -> Self {
        Self {
            limits,
            buffers,
            lent: None,
            partial: HashMap::new(),
            reserved: 0,
            heads: 0,
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
        self.push_inner(info, content_type, content, None, now)
    }

    /// Like [`push_at`](Self::push_at) for a chunk frame that can be sent back as it
    /// came (it carries the receiver's own session id): `head` is the frame's fixed
    /// header and header JSON, kept (copied, so the frame's buffer is not held) until the
    /// message is complete, for [`Reassembled::frames`].
    ///
    /// Heads are kept only while they add at most a 32nd of the message (or 4 KiB) to
    /// what it holds: a peer sending tiny chunks with large headers would otherwise make
    /// a message hold many times its size. Past that they are dropped, and the message
    /// comes without its frames. Their bytes are [`heads_bytes`](Self::heads_bytes).
    pub fn push_frame(
        &mut self,
        info: &ChunkInfo,
        content_type: Option<&ByteStr>,
        head: &[u8],
        content: &[u8],
        now: Option<Instant>,
    ) -> Result<Option<Reassembled>, ChunkError> {
        self.push_inner(info, content_type, content, Some(head), now)
    }

    fn push_inner(
        &mut self,
        info: &ChunkInfo,
        content_type: Option<&ByteStr>,
        content: &[u8],
        head: Option<&[u8]>,
        now: Option<Instant>,
    ) -> Result<Option<Reassembled>, ChunkError> {
        let keep_heads = head.is_some();
        let Some(slot) = self.place(info, content_type, content.len(), keep_heads, now)? else {
            // Nothing to wait for: hand the content over without holding any state.
            let content = Bytes::copy_from_slice(content);
            return Ok(Some(Reassembled {
                message_id: detach(&info.message_id),
                content_type: content_type.map(detach),
                frames: head.map(|h| {
                    vec![EncodedFrame {
                        head: Bytes::copy_from_slice(h),
                        content: content.clone(),
                    }]
                }),
                content,
            }));
        };
        let p = self
            .partial
            .get_mut(&info.message_id)
            .expect("checked or opened above");
        // Lossless: slot.end ≤ total_len = buf.len().
        p.buf[slot.start as usize..slot.end as usize].copy_from_slice(content);
        Ok(self.placed(&info.message_id, info.index, head))
    }

    /// Checks a chunk of `len` bytes and opens its message if it is new: its slot, or
    /// `None` for a chunk that is a whole message by itself (nothing is held for it).
    fn place(
        &mut self,
        info: &ChunkInfo,
        content_type: Option<&ByteStr>,
        len: usize,
        keep_heads: bool,
        now: Option<Instant>,
    ) -> Result<Option<Range<u64>>, ChunkError> {
        Ok(match self.check(info, content_type, len)? {
            Place::Single => None,
            Place::New { layout, slot } => {
                self.open(info, content_type, layout, keep_heads, now);
                Some(slot)
            }
            Place::Open { slot } => Some(slot),
        })
    }

    /// Every check of a chunk before its content is placed; for a new message, in the
    /// order [`push`](Self::push) documents, all before any allocation.
    fn check(
        &self,
        info: &ChunkInfo,
        content_type: Option<&ByteStr>,
        len: usize,
    ) -> Result<Place, ChunkError> {
        let index = info.index;
        if let Some(lent) = self.lent_index(&info.message_id) {
            // Its buffer is split around the lent slot until `fill`.
            return Err(ChunkError::SlotLent { index: lent });
        }
        if let Some(p) = self.partial.get(&info.message_id) {
            if p.layout.count != info.count
                || p.layout.total_len != info.total_len
                || p.content_type.as_ref() != content_type
            {
                return Err(ChunkError::Inconsistent);
            }
            let slot = p.layout.check(index, len)?;
            if p.is_filled(index) {
                return Err(ChunkError::Duplicate { index });
            }
            return Ok(Place::Open { slot });
        }
        let limit = self.limits.max_message_len;
        let too_large = ChunkError::TooLarge {
            total_len: info.total_len,
            limit,
        };
        if info.total_len > limit {
            return Err(too_large);
        }
        usize::try_from(info.total_len).map_err(|_| too_large)?;
        let layout = Layout::new(info.count, info.total_len)?;
        let slot = layout.check(index, len)?;
        if layout.count == 1 {
            return Ok(Place::Single);
        }
        if self.partial.len() >= self.limits.max_partial {
            return Err(ChunkError::TooManyPartial {
                limit: self.limits.max_partial,
            });
        }
        Ok(Place::New { layout, slot })
    }

    /// Opens a message [`check`](Self::check) found new: reserves its buffer.
    fn open(
        &mut self,
        info: &ChunkInfo,
        content_type: Option<&ByteStr>,
        layout: Layout,
        keep_heads: bool,
        now: Option<Instant>,
    ) {
        // Lossless: `check` converted total_len to usize.
        let len = layout.total_len as usize;
        let buf = match &self.buffers {
            Some(b) => Some(b.take(len)).filter(|b| b.len() == len),
            None => None,
        }
        .unwrap_or_else(|| BytesMut::zeroed(len));
        let p = Partial {
            opened: now,
            layout,
            content_type: content_type.map(detach),
            buf,
            filled: vec![0; layout.count.div_ceil(64) as usize],
            received: 0,
            heads: keep_heads.then(Vec::new),
            heads_len: 0,
        };
        self.reserved = self.reserved.saturating_add(layout.total_len);
        self.partial.insert(detach(&info.message_id), p);
    }

    /// Records chunk `index` of open message `message_id` as placed; returns the message
    /// once it is complete.
    fn placed(
        &mut self,
        message_id: &ByteStr,
        index: u32,
        head: Option<&[u8]>,
    ) -> Option<Reassembled> {
        let p = self.partial.get_mut(message_id)?;
        p.mark_filled(index);
        p.received += 1;
        let before = p.heads_len;
        p.keep_head(index, head);
        self.heads = (self.heads + p.heads_len).saturating_sub(before);
        if p.received < p.layout.count {
            return None;
        }
        let (message_id, p) = self.partial.remove_entry(message_id)?;
        self.reserved = self.reserved.saturating_sub(p.layout.total_len);
        self.heads = self.heads.saturating_sub(p.heads_len);
        let content = p.buf.freeze();
        let frames = p.heads.map(|heads| {
            heads
                .into_iter()
                .map(|(i, head)| {
                    let slot = p.layout.slot(i);
                    EncodedFrame {
                        head,
                        content: content.slice(slot.start as usize..slot.end as usize),
                    }
                })
                .collect()
        });
        Some(Reassembled {
            message_id,
            content_type: p.content_type,
            content,
            frames,
        })
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

    /// Bytes of the chunk heads the open messages keep (see
    /// [`push_frame`](Self::push_frame)); held beside [`reserved_bytes`](Self::reserved_bytes).
    pub fn heads_bytes(&self) -> u64 {
        self.heads
    }

    /// Drops every partial message, releasing its memory.
    pub fn clear(&mut self) {
        // Replace rather than `clear()`: the map's own table is released too.
        self.partial = HashMap::new();
        self.reserved = 0;
        self.heads = 0;
        self.lent = None;
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

mod lend;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod frames_tests;

#[cfg(test)]
mod timing_tests;
