//! Receiving echoes by comparing bytes.
//!
//! An echo server answers a `message` with a `message` carrying the same content on the
//! same session. sockchat-server encodes it with the same codec, so the reply is,
//! byte for byte, the frame loadgen sent, and byte equality with a frame loadgen encoded
//! itself (valid magic, CRCs and HMAC by construction) is full verification: magic,
//! version, lengths, CRCs, HMAC, header JSON, type, session id and content all match.
//! So the per-reply cost is one `memcmp` of the frame, with no CRC or HMAC computed.
//!
//! The bytes are held by proto's [`Deframer`], which is also what parses them: the fast
//! path only looks at its buffered bytes and skips a frame it recognised
//! ([`Deframer::buffered_bytes`], [`Deframer::skip_frame`]). When the bytes differ, the
//! frame is decoded and verified by the same deframer like any other, to name the error
//! (`content_crc_mismatch`, `hmac_mismatch`, `server_error`, ...) or to accept an echo
//! that is valid but encoded differently (a server that writes its header JSON another
//! way); those are counted in [`EchoReader::slow_path`].
//!
//! Reads go into the deframer's one buffer per session, which holds many frames: every
//! frame a read brought is checked before the next read.
//!
//! Chunked messages ([`EchoReader::with_chunks`]) work the same way: sockchat-server
//! echoes a chunked message as the chunk frames it received, so the reply is the bytes
//! of every chunk frame sent, in order, and one comparison verifies them all. Only when
//! they differ are the frames decoded, verified and reassembled, and the message
//! compared by content.

use std::sync::Arc;

use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use sockchat_proto::frame::FrameType;
use sockchat_proto::{ByteStr, ChunkLimits, Decoded, Deframer, Key, Limits, Reassembler};

use crate::client::{check_session, SessionError};

/// Spare capacity kept free for the next read.
const MIN_SPARE: usize = 2048;

/// What the buffered bytes say about the reply expected next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Not all of it has arrived: read more.
    Need,
    /// The echo, verified; its bytes are consumed.
    Echo,
    /// A valid `message` of this session whose content differs from what was sent
    /// (consumed; the session can go on).
    Mismatch,
}

/// Reads a session's replies into one buffer and checks them against what was sent.
#[derive(Debug)]
pub struct EchoReader<R> {
    r: R,
    deframer: Deframer,
    /// Bytes the frame being received needs in the buffer (0 when not known).
    want: usize,
    key: Arc<Key>,
    sid: ByteStr,
    slow_path: u64,
    /// Reassembles chunked replies on the slow path (`None`: chunks are unexpected).
    reasm: Option<Reassembler>,
}

impl<R: AsyncReadRent> EchoReader<R> {
    /// Reads from `r`, starting with the bytes `pending` a previous reader buffered;
    /// `capacity` is the initial buffer size (e.g. the bytes of `depth` replies).
    pub fn new(r: R, mut pending: BytesMut, capacity: usize, key: Arc<Key>, sid: ByteStr) -> Self {
        pending.reserve(capacity.saturating_sub(pending.len()).max(MIN_SPARE));
        let mut deframer = Deframer::new(Limits::default());
        deframer.put_buffer(pending);
        Self {
            r,
            deframer,
            want: 0,
            key,
            sid,
            slow_path: 0,
            reasm: None,
        }
    }

    /// Also takes chunked replies (messages of at most `limits.max_message_len` bytes).
    pub fn with_chunks(mut self, limits: ChunkLimits) -> Self {
        self.reasm = Some(Reassembler::new(limits));
        self
    }

    /// Replies accepted only after a full decode (valid, but not byte-identical to the
    /// frame sent).
    pub fn slow_path(&self) -> u64 {
        self.slow_path
    }

    /// Bytes received and not yet consumed.
    pub fn buffered(&self) -> usize {
        self.deframer.buffered()
    }

    /// Checks the buffered bytes for the echo of `sent` (the frames this session encoded
    /// for one message, whose content is `content`).
    pub fn take(&mut self, sent: &[u8], content: &[u8]) -> Result<Take, SessionError> {
        // Half a chunked reply was decoded already: the rest is decoded too.
        let reassembling = self.reasm.as_ref().is_some_and(|r| r.partial_count() > 0);
        let avail = self.deframer.buffered_bytes();
        let n = sent.len();
        if !reassembling {
            if avail.len() >= n {
                if avail[..n] == *sent {
                    self.deframer.skip_frame(n);
                    self.want = 0;
                    return Ok(Take::Echo);
                }
            } else if *avail == sent[..avail.len()] {
                // So far identical; the fixed header (and with it the length) may not be
                // complete yet, but if it matches, the frame is `n` bytes long.
                self.want = n;
                return Ok(Take::Need);
            }
        }
        self.decode(content)
    }

    /// The slow path: decode and verify the frames at the head of the buffer until a
    /// whole message (one `message` frame, or every chunk of one) is in.
    fn decode(&mut self, content: &[u8]) -> Result<Take, SessionError> {
        loop {
            let frame = match self.deframer.decode(&self.key)? {
                Decoded::NeedMore(more) => {
                    self.want = self.deframer.buffered() + more;
                    return Ok(Take::Need);
                }
                Decoded::Frame(frame) => frame,
            };
            self.want = 0;
            check_session(&frame, &self.sid)?;
            let h = &frame.header;
            let got = match (h.kind, self.reasm.as_mut(), h.chunk.as_ref()) {
                (FrameType::Message, _, _) => frame.content,
                (FrameType::Chunk, Some(r), Some(info)) => {
                    match r.push(info, h.content_type.as_ref(), &frame.content) {
                        Ok(Some(m)) => m.content,
                        Ok(None) => continue,
                        Err(e) => return Err(SessionError::Chunk(e)),
                    }
                }
                (kind, _, _) => return Err(SessionError::Unexpected(kind)),
            };
            self.slow_path += 1;
            return Ok(if got[..] == *content {
                Take::Echo
            } else {
                Take::Mismatch
            });
        }
    }

    /// Reads once, appending to the buffered bytes (room is made for the frame being
    /// received). End of stream is [`SessionError::Eof`].
    pub async fn fill(&mut self) -> Result<usize, SessionError> {
        let mut buf = self.deframer.take_buffer();
        let spare = self.want.saturating_sub(buf.len()).max(MIN_SPARE);
        if buf.capacity() - buf.len() < spare {
            // Moves the unread bytes to the front when the consumed space is enough.
            buf.reserve(spare);
        }
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = self.r.read(buf.slice_mut(len..cap)).await;
        self.deframer.put_buffer(slice.into_inner());
        match res {
            Ok(0) => Err(SessionError::Eof),
            Ok(n) => Ok(n),
            Err(e) => Err(SessionError::Read(e)),
        }
    }

    /// The stream and the bytes received but not consumed, for another reader to go on
    /// with (the default suite reads pongs after its echo phase).
    pub fn into_parts(mut self) -> (R, BytesMut) {
        let rest = self.deframer.take_buffer();
        (self.r, rest)
    }

    /// Reads until the echo of `sent` has arrived.
    pub async fn reply(&mut self, sent: &[u8], content: &[u8]) -> Result<Take, SessionError> {
        loop {
            match self.take(sent, content)? {
                Take::Need => {
                    self.fill().await?;
                }
                t => return Ok(t),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::frame;
    use sockchat_proto::header::OCTET_STREAM;

    use crate::script_reader::Script;

    fn reader(chunks: Vec<Vec<u8>>) -> EchoReader<Script> {
        let key = Arc::new(Key::reference_default());
        EchoReader::new(
            Script(chunks),
            BytesMut::new(),
            64,
            key,
            ByteStr::from_static("s1"),
        )
    }

    #[test]
    fn byte_equal_echoes_split_anywhere_are_taken_without_decoding() {
        let key = Key::reference_default();
        let sid = ByteStr::from_static("s1");
        let a = frame(&key, FrameType::Message, OCTET_STREAM, &sid, b"hello");
        let b = frame(&key, FrameType::Message, OCTET_STREAM, &sid, &[7u8; 5000]);
        let mut stream = a.to_vec();
        stream.extend_from_slice(&b);
        stream.extend_from_slice(&a);
        let chunks: Vec<Vec<u8>> = stream.chunks(37).map(<[u8]>::to_vec).collect();
        let mut r = reader(chunks);
        monoio::start::<monoio::LegacyDriver, _>(async move {
            assert_eq!(r.reply(&a, b"hello").await.unwrap(), Take::Echo);
            assert_eq!(r.reply(&b, &[7u8; 5000]).await.unwrap(), Take::Echo);
            assert_eq!(r.reply(&a, b"hello").await.unwrap(), Take::Echo);
            assert_eq!(r.slow_path(), 0);
            assert!(matches!(
                r.reply(&a, b"hello").await,
                Err(SessionError::Eof)
            ));
        });
    }

    #[test]
    fn differing_bytes_are_decoded_to_name_the_error_or_accept_a_valid_echo() {
        let key = Key::reference_default();
        let sid = ByteStr::from_static("s1");
        let sent = frame(&key, FrameType::Message, OCTET_STREAM, &sid, b"hello");
        // Valid, same content, another content type: accepted on the slow path.
        let other = frame(
            &key,
            FrameType::Message,
            ByteStr::from_static("text/plain"),
            &sid,
            b"hello",
        );
        let wrong = frame(&key, FrameType::Message, OCTET_STREAM, &sid, b"HELLO");
        let mut corrupt = sent.to_vec();
        *corrupt.last_mut().unwrap() ^= 0x55;
        let error = frame(&key, FrameType::Error, OCTET_STREAM, &sid, b"nope");
        let mut r = reader(vec![
            other.to_vec(),
            wrong.to_vec(),
            corrupt,
            error.to_vec(),
        ]);
        monoio::start::<monoio::LegacyDriver, _>(async move {
            assert_eq!(r.reply(&sent, b"hello").await.unwrap(), Take::Echo);
            assert_eq!(r.slow_path(), 1);
            assert_eq!(r.reply(&sent, b"hello").await.unwrap(), Take::Mismatch);
            let e = r.reply(&sent, b"hello").await.unwrap_err();
            assert_eq!(e.kind(), "content_crc_mismatch");
            let e = r.reply(&sent, b"hello").await.unwrap_err();
            assert_eq!(e.kind(), "server_error");
        });
    }

    fn chunk_wire(key: &Key, sid: &ByteStr, id: &str, content: &[u8]) -> Vec<u8> {
        sockchat_proto::split(
            key,
            Some(sid.clone()),
            Some(OCTET_STREAM),
            ByteStr::from(id),
            bytes::Bytes::copy_from_slice(content),
            1000,
        )
        .unwrap()
        .flat_map(|f| [f.head.to_vec(), f.content.to_vec()].concat())
        .collect()
    }

    #[test]
    fn chunked_echoes_are_compared_whole_and_reassembled_only_when_they_differ() {
        let key = Key::reference_default();
        let sid = ByteStr::from_static("s1");
        let content: Vec<u8> = (0..3500u32).map(|i| (i % 251) as u8).collect();
        let sent = chunk_wire(&key, &sid, "m1", &content);
        // The same content under another message id: other bytes, the same message.
        let other = chunk_wire(&key, &sid, "m2", &content);
        let mut wrong_content = content.clone();
        wrong_content[3000] ^= 1;
        let wrong = chunk_wire(&key, &sid, "m1", &wrong_content);
        let mut stream = sent.clone();
        stream.extend_from_slice(&other);
        stream.extend_from_slice(&wrong);
        let chunks: Vec<Vec<u8>> = stream.chunks(700).map(<[u8]>::to_vec).collect();
        let mut r = reader(chunks).with_chunks(ChunkLimits {
            max_message_len: 4000,
            max_partial: 1,
        });
        monoio::start::<monoio::LegacyDriver, _>(async move {
            assert_eq!(r.reply(&sent, &content).await.unwrap(), Take::Echo);
            assert_eq!(r.slow_path(), 0, "byte-equal: no decoding");
            assert_eq!(r.reply(&sent, &content).await.unwrap(), Take::Echo);
            assert_eq!(r.slow_path(), 1, "reassembled, then compared by content");
            assert_eq!(r.reply(&sent, &content).await.unwrap(), Take::Mismatch);
            assert_eq!(r.buffered(), 0);
        });
    }
}
