//! Receiving echoes by comparing bytes.
//!
//! An echo server answers a `message` with a `message` carrying the same content on the
//! same session. sockchat-server encodes it with the same codec, so the reply is,
//! byte for byte, the frame loadgen sent, and byte equality with a frame loadgen encoded
//! itself (valid magic, CRCs and HMAC by construction) is full verification: magic,
//! version, lengths, CRCs, HMAC, header JSON, type, session id and content all match.
//! So the per-reply cost is one `memcmp` of the frame, with no CRC or HMAC computed.
//!
//! Only when the bytes differ is the frame decoded and verified like any other, to
//! name the error (`content_crc_mismatch`, `hmac_mismatch`, `server_error`, ...) or to
//! accept an echo that is valid but encoded differently (a server that writes its
//! header JSON another way); those are counted in [`EchoReader::slow_path`].
//!
//! Reads go into one buffer per session that holds many frames: every frame a read
//! brought is checked before the next read.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use sockchat_proto::codec::verify;
use sockchat_proto::frame::FrameType;
use sockchat_proto::{ByteStr, FixedHeader, Key, Limits};

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
    buf: Vec<u8>,
    head: usize,
    /// Bytes the frame being received needs in the buffer (from `head`).
    want: usize,
    key: Rc<Key>,
    sid: ByteStr,
    limits: Limits,
    slow_path: u64,
}

impl<R: AsyncReadRent> EchoReader<R> {
    /// Reads from `r`, starting with the bytes `pending` a previous reader buffered;
    /// `capacity` is the initial buffer size (e.g. the bytes of `depth` replies).
    pub fn new(r: R, pending: BytesMut, capacity: usize, key: Rc<Key>, sid: ByteStr) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(pending.len() + MIN_SPARE));
        buf.extend_from_slice(&pending);
        Self {
            r,
            buf,
            head: 0,
            want: 0,
            key,
            sid,
            limits: Limits::default(),
            slow_path: 0,
        }
    }

    /// Replies accepted only after a full decode (valid, but not byte-identical to the
    /// frame sent).
    pub fn slow_path(&self) -> u64 {
        self.slow_path
    }

    /// Bytes received and not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.head
    }

    fn consume(&mut self, n: usize) {
        self.head += n;
        self.want = 0;
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        }
    }

    /// Checks the buffered bytes for the echo of `sent` (a frame this session encoded,
    /// whose content is `content`).
    pub fn take(&mut self, sent: &[u8], content: &[u8]) -> Result<Take, SessionError> {
        let avail = &self.buf[self.head..];
        let n = sent.len();
        if avail.len() >= n {
            if avail[..n] == *sent {
                self.consume(n);
                return Ok(Take::Echo);
            }
        } else if *avail == sent[..avail.len()] {
            // So far identical; the fixed header (and with it the length) may not be
            // complete yet, but if it matches, the frame is `n` bytes long.
            self.want = n;
            return Ok(Take::Need);
        }
        self.decode(content)
    }

    /// The slow path: decode and verify the frame at the head of the buffer.
    fn decode(&mut self, content: &[u8]) -> Result<Take, SessionError> {
        let avail = &self.buf[self.head..];
        let Some(fixed) = FixedHeader::parse(avail, &self.limits)? else {
            self.want = sockchat_proto::frame::FIXED_HEADER_LEN;
            return Ok(Take::Need);
        };
        let len = fixed.frame_len();
        if avail.len() < len {
            self.want = len;
            return Ok(Take::Need);
        }
        let raw = Bytes::copy_from_slice(&avail[..len]);
        self.consume(len);
        let frame = verify(&self.key, &fixed, raw)?;
        check_session(&frame, &self.sid)?;
        if frame.header.kind != FrameType::Message {
            return Err(SessionError::Unexpected(frame.header.kind));
        }
        self.slow_path += 1;
        Ok(if frame.content[..] == *content {
            Take::Echo
        } else {
            Take::Mismatch
        })
    }

    /// Reads once, appending to the buffered bytes (room is made for the frame being
    /// received). End of stream is [`SessionError::Eof`].
    pub async fn fill(&mut self) -> Result<usize, SessionError> {
        let need = self.want.max(self.buffered() + MIN_SPARE);
        if self.buf.capacity() - self.head < need {
            if self.head > 0 {
                self.buf.copy_within(self.head.., 0);
                self.buf.truncate(self.buf.len() - self.head);
                self.head = 0;
            }
            if self.buf.capacity() < need {
                self.buf.reserve(need - self.buf.len());
            }
        }
        let buf = std::mem::take(&mut self.buf);
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = self.r.read(buf.slice_mut(len..cap)).await;
        self.buf = slice.into_inner();
        match res {
            Ok(0) => Err(SessionError::Eof),
            Ok(n) => Ok(n),
            Err(e) => Err(SessionError::Read(e)),
        }
    }

    /// The stream and the bytes received but not consumed, for another reader to go on
    /// with (the default suite reads pongs after its echo phase).
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.r, BytesMut::from(&self.buf[self.head..]))
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

    struct Script(Vec<Vec<u8>>);

    impl AsyncReadRent for Script {
        async fn read<T: IoBufMut>(&mut self, mut buf: T) -> monoio::BufResult<usize, T> {
            if self.0.is_empty() {
                return (Ok(0), buf);
            }
            let chunk = self.0.remove(0);
            let n = chunk.len().min(buf.bytes_total());
            // SAFETY: `n` bytes fit in the buffer's writable region.
            unsafe {
                std::ptr::copy_nonoverlapping(chunk.as_ptr(), buf.write_ptr(), n);
                buf.set_init(n);
            }
            (Ok(n), buf)
        }

        async fn readv<T: monoio::buf::IoVecBufMut>(
            &mut self,
            buf: T,
        ) -> monoio::BufResult<usize, T> {
            (Ok(0), buf)
        }
    }

    fn reader(chunks: Vec<Vec<u8>>) -> EchoReader<Script> {
        let key = Rc::new(Key::reference_default());
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
}
