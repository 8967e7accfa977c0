//! Body of the fuzz target `session`: a `ServerSession` driven by a sequence of operations decoded
//! from the input (via `arbitrary`): raw bytes, well-formed signed frames of any type
//! (with this session's id or another), signed arbitrary header JSON, whole messages cut
//! into chunk frames (fed in any order), clock steps, EOF, echoes, sends and closes.
//!
//! Random bytes almost never pass CRC-32 and HMAC, so most operations build correctly
//! signed frames: that is what lets the fuzzer past the handshake into heartbeats,
//! messages, chunk reassembly and disconnects.
//!
//! Input is fed as a server feeds it: the rest of a chunk whose slot the session lends
//! (`ServerSession::receive_chunk_in_place`) goes into that slot.
//!
//! Checked on every input: nothing panics; everything the server transmits decodes as
//! valid frames with the session's key; at most one `Closed` event, and none after it; a
//! session is never timed out before its `poll_timeout`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};

use crate::session::{Event, Message, Session, SessionConfig};
use crate::{
    encode_into, encode_unchecked, split, ByteStr, ChunkInfo, ChunkLimits, CloseReason, Decoded,
    Deframer, FrameType, Header, Key, Limits, ServerSession,
};

const SESSION_ID: &str = "3f2b8c1e-6d4a-4e8b-9c71-2a5d0e9f1b34";

/// One frame to build (see [`build`]).
#[derive(Arbitrary, Debug)]
struct FrameSpec {
    kind: u8,
    own_id: bool,
    other_id: Option<String>,
    content_type: Option<String>,
    content: Vec<u8>,
    features: Option<Vec<String>>,
    /// Add `"chunk"` to `features`: random strings almost never spell it, and without it
    /// the server refuses every chunk frame before the reassembler.
    ask_chunk: bool,
    chunk: Option<(String, u8, u8, u16)>,
    /// Split the frame in two writes at this fraction of its length.
    split: u8,
}

/// One step of the session's life.
#[derive(Arbitrary, Debug)]
enum Op {
    Raw(Vec<u8>),
    Frame(FrameSpec),
    SignedJson {
        json: Vec<u8>,
        content: Vec<u8>,
    },
    /// A whole message split into well-formed chunk frames by `chunk::split`, then fed in
    /// an order picked by `order` (each byte selects one of the chunks: so some may be
    /// repeated, reordered or missing).
    Chunked {
        id: u8,
        content: Vec<u8>,
        max_chunk: u8,
        order: Option<Vec<u8>>,
    },
    Advance(u32),
    Eof,
    EchoAll,
    Send(Vec<u8>),
    Close,
}

fn build(key: &Key, spec: &FrameSpec) -> Option<Vec<u8>> {
    let kind = FrameType::ALL[usize::from(spec.kind) % FrameType::ALL.len()];
    let session_id = if spec.own_id {
        Some(ByteStr::from(SESSION_ID))
    } else {
        spec.other_id.as_deref().map(ByteStr::from)
    };
    let mut h = Header::new(
        kind,
        spec.content_type.as_deref().map(ByteStr::from),
        session_id,
    );
    h.features = spec
        .features
        .as_ref()
        .map(|f| f.iter().map(|s| ByteStr::from(s.as_str())).collect());
    if spec.ask_chunk {
        h.features
            .get_or_insert_with(Vec::new)
            .push(ByteStr::from_static("chunk"));
    }
    if kind == FrameType::Chunk {
        let (id, index, count, total) = spec.chunk.clone().unwrap_or_default();
        // Small numbers, so that chunks of one message meet and reassembly completes.
        h.chunk = Some(ChunkInfo {
            message_id: ByteStr::from(id),
            index: u32::from(index % 8),
            count: u32::from(count % 8),
            total_len: u64::from(total),
        });
    }
    let mut out = BytesMut::new();
    encode_into(key, &h, &spec.content, &mut out).ok()?;
    Some(out.to_vec())
}

struct Harness {
    session: ServerSession,
    key: Arc<Key>,
    now: Instant,
    /// The client's view of what the server sent.
    client: Deframer,
    closed_events: usize,
    messages: Vec<Message>,
    /// A chunk's slot lent by the session, with the bytes it still misses: input goes
    /// there first, as a server receives the rest of a large chunk into it.
    slot: Option<(BytesMut, usize)>,
}

impl Harness {
    fn feed(&mut self, mut bytes: &[u8]) {
        while let Some((mut slot, missing)) = self.slot.take() {
            let n = missing.min(bytes.len());
            slot.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if n < missing {
                self.slot = Some((slot, missing - n));
                return;
            }
            self.slot = self.session.chunk_in_place_received(slot, self.now);
            self.drain();
        }
        self.session.deframer_mut().extend_from_slice(bytes);
        self.session.handle_input(self.now);
        self.drain();
        // As the server does once a large frame's head is in (here whatever its size).
        if !self.session.is_input_idle() {
            if let Some(slot) = self.session.receive_chunk_in_place(self.now) {
                let missing = slot.capacity() - slot.len();
                assert!(missing > 0, "a slot is lent only for content still due");
                assert!(
                    self.session.is_input_idle(),
                    "the slot took the buffered part"
                );
                self.slot = Some((slot, missing));
            }
        }
    }

    fn eof(&mut self) {
        match self.slot.take() {
            Some((slot, _)) => self.session.chunk_in_place_eof(slot),
            None => self.session.handle_eof(),
        }
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(ev) = self.session.poll_event() {
            assert_eq!(self.closed_events, 0, "event after Closed: {ev:?}");
            match ev {
                Event::Closed(_) => self.closed_events += 1,
                // Kept (a few) for `EchoAll`.
                Event::Message(m) if self.messages.len() < 16 => self.messages.push(m),
                _ => {}
            }
        }
        assert_eq!(self.session.is_closed(), self.closed_events == 1);
        if self.session.is_closed() {
            assert_eq!(self.session.poll_timeout(), None);
        }
        let mut out = Vec::new();
        self.session.poll_transmit(&mut out);
        for b in out {
            self.client.extend_from_slice(&b);
            loop {
                match self.client.decode(&self.key) {
                    Ok(Decoded::Frame(f)) => {
                        assert_eq!(f.header.session_id.as_deref(), Some(SESSION_ID));
                    }
                    Ok(Decoded::NeedMore(_)) => break,
                    Err(e) => panic!("server sent an invalid frame: {e}"),
                }
            }
        }
    }
}

/// Runs one input: decoded (as libFuzzer's `fuzz_target!` decodes a typed input) into up
/// to 64 operations. Panics on a finding.
pub fn session(data: &[u8]) {
    let Ok(ops) = Vec::<Op>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    run(&ops);
}

fn run(ops: &[Op]) {
    let key = Arc::new(Key::reference_default());
    let config = Arc::new(SessionConfig {
        limits: Limits::new(4096, 16 * 1024),
        chunk: ChunkLimits {
            max_message_len: 64 * 1024,
            max_partial: 2,
        },
        max_chunk: 1024,
        ..SessionConfig::default()
    });
    let start = Instant::now();
    let mut h = Harness {
        session: ServerSession::new(ByteStr::from(SESSION_ID), key.clone(), config, start),
        key: key.clone(),
        now: start,
        client: Deframer::new(Limits::default()),
        closed_events: 0,
        messages: Vec::new(),
        slot: None,
    };
    h.drain();
    for op in ops.iter().take(64) {
        match op {
            Op::Raw(bytes) => h.feed(bytes),
            Op::Frame(spec) => {
                if let Some(frame) = build(&key, spec) {
                    let at = frame.len() * usize::from(spec.split) / 256;
                    h.feed(&frame[..at]);
                    h.feed(&frame[at..]);
                }
            }
            Op::SignedJson { json, content } => {
                let frame = encode_unchecked(&key, json, content);
                h.feed(&frame);
            }
            Op::Chunked {
                id,
                content,
                max_chunk,
                order,
            } => {
                let Ok(parts) = split(
                    &key,
                    Some(ByteStr::from(SESSION_ID)),
                    None,
                    ByteStr::from(id.to_string()),
                    Bytes::copy_from_slice(content),
                    usize::from(*max_chunk).max(1),
                ) else {
                    continue;
                };
                let parts: Vec<_> = parts.collect();
                let picks: Vec<usize> = match order {
                    None => (0..parts.len()).collect(),
                    Some(o) => o.iter().map(|&i| usize::from(i) % parts.len()).collect(),
                };
                for i in picks.into_iter().take(64) {
                    let p = &parts[i];
                    h.feed(&[&p.head[..], &p.content[..]].concat());
                }
            }
            Op::Advance(ms) => {
                let before = h.session.poll_timeout();
                h.now += Duration::from_millis(u64::from(*ms % 120_000));
                let was_closed = h.session.is_closed();
                h.session.handle_timeout(h.now);
                if let Some(deadline) = before {
                    if h.now < deadline && !was_closed {
                        assert!(!h.session.is_closed(), "timed out before its deadline");
                    }
                }
                h.drain();
            }
            Op::Eof => h.eof(),
            Op::EchoAll => {
                for m in std::mem::take(&mut h.messages) {
                    let _ = h.session.echo(m);
                }
                h.drain();
            }
            Op::Send(content) => {
                let _ = h
                    .session
                    .send_message(None, Bytes::copy_from_slice(content));
                h.drain();
            }
            Op::Close => {
                h.session.close(CloseReason::ServerShutdown);
                h.drain();
            }
        }
    }
}
