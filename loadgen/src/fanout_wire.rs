//! Receiving fan-out deliveries cheaply, every one still verified.
//!
//! Every delivery a fan-out receiver gets carries the same header JSON: the same type,
//! content type, session id (the receiver's), room and sender. Only the content (sequence
//! number, send time) and with it the CRC and the MAC change. So once one delivery has
//! been decoded by proto's [`Deframer`] (the slow path: CRCs, HMAC, header parsed), a
//! later frame whose header JSON is byte for byte the same has the same parsed header,
//! and is verified without parsing it again (the fast path): the fixed header is parsed
//! by proto ([`FixedHeader::parse`]: magic, version, limits), the header CRC is the one
//! of the known JSON, the content's CRC is computed and the HMAC over header JSON and
//! content is checked in constant time by proto's [`Key::verify`]. That is every check
//! proto's decoder makes, in its order (header CRC, content CRC, HMAC, header), minus
//! the JSON parse: the room messages' extra header keys take proto's general
//! (serde_json) parser, the largest per-frame cost of the receiver after the HMAC.
//!
//! A frame that fails any fast-path check is not judged here: it is decoded by the
//! deframer like any other, which names the error (`content_crc_mismatch`,
//! `hmac_mismatch`, ...) or accepts a valid frame with another header (which then becomes
//! the known one). The caller checks the header it is given (session id, type, room) for
//! every frame either way.
//!
//! The fast path consumes frames with [`Deframer::skip_frame`] instead of splitting them
//! off, so the read buffer stays uniquely owned and is reused in place.

use std::sync::Arc;

use bytes::Bytes;
use monoio::io::AsyncReadRent;
use sockchat_proto::frame::{FrameType, FIXED_HEADER_LEN};
use sockchat_proto::{Decoded, Deframer, FixedHeader, Frame, Header, Key};

use crate::client::SessionError;
use crate::conn::read_append;

/// A header JSON seen on a verified frame, with its CRC and what it parses to.
#[derive(Debug)]
struct Known {
    json: Bytes,
    crc: u32,
    header: Header,
}

/// What [`FanoutReader::next`] found, before it is lent out.
enum Ready {
    /// A fast-path frame of `len` bytes at the front of the buffer, content from `content`.
    Fast { content: usize, len: usize },
    /// A frame the deframer decoded (held in `FanoutReader::frame`).
    Decoded,
}

/// Reads verified frames from a stream, taking frames whose header JSON repeats the
/// last decoded `message`'s without parsing the JSON again.
#[derive(Debug)]
pub struct FanoutReader<R> {
    r: R,
    deframer: Deframer,
    key: Arc<Key>,
    known: Option<Known>,
    /// The last frame decoded on the slow path (lent out by `next`).
    frame: Option<Frame>,
    /// Bytes of the fast-path frame lent out last, skipped at the next call.
    skip: usize,
    fast: u64,
    slow: u64,
}

impl<R: AsyncReadRent> FanoutReader<R> {
    /// Reads from `r`, verifying with `key`, continuing the `deframer`'s buffered bytes
    /// (the fast path checks the fixed header against the deframer's limits).
    pub fn new(r: R, deframer: Deframer, key: Arc<Key>) -> Self {
        Self {
            r,
            deframer,
            key,
            known: None,
            frame: None,
            skip: 0,
            fast: 0,
            slow: 0,
        }
    }

    /// Frames taken on the fast path and on the slow path so far.
    pub fn paths(&self) -> (u64, u64) {
        (self.fast, self.slow)
    }

    /// The stream (for the `disconnect` at the end).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.r
    }

    /// The next verified frame's header and content, and whether its header JSON repeats
    /// the known one (the last decoded `message`'s, byte for byte): such a frame was not
    /// parsed, its header is that one. After an error the stream is out of sync.
    pub async fn next(&mut self) -> Result<(&Header, &[u8], bool), SessionError> {
        if self.skip > 0 {
            self.deframer.skip_frame(std::mem::take(&mut self.skip));
        }
        self.frame = None;
        let ready = loop {
            if let Some((content, len)) = self.fast_frame() {
                break Ready::Fast { content, len };
            }
            match self.deframer.decode(&self.key)? {
                Decoded::Frame(f) => {
                    if f.header.kind == FrameType::Message {
                        self.known = Some(Known {
                            json: Bytes::copy_from_slice(f.header_json()),
                            crc: crc32fast::hash(f.header_json()),
                            header: f.header.clone(),
                        });
                    }
                    self.frame = Some(f);
                    break Ready::Decoded;
                }
                Decoded::NeedMore(_) => {
                    let mut buf = self.deframer.take_buffer();
                    rewind(&mut buf);
                    let (res, buf) = read_append(&mut self.r, buf).await;
                    self.deframer.put_buffer(buf);
                    match res {
                        Ok(0) => return Err(SessionError::Eof),
                        Ok(_) => {}
                        Err(e) => return Err(SessionError::Read(e)),
                    }
                }
            }
        };
        match ready {
            Ready::Fast { content, len } => {
                self.fast += 1;
                self.skip = len;
                let known = self.known.as_ref().expect("fast path needs a known header");
                Ok((
                    &known.header,
                    &self.deframer.buffered_bytes()[content..len],
                    true,
                ))
            }
            Ready::Decoded => {
                self.slow += 1;
                let f = self.frame.as_ref().expect("just decoded");
                Ok((&f.header, &f.content, false))
            }
        }
    }

    /// The frame at the front of the buffer if it is complete, carries the known header
    /// JSON and passes every check: (content offset, frame length).
    fn fast_frame(&self) -> Option<(usize, usize)> {
        let known = self.known.as_ref()?;
        let buf = self.deframer.buffered_bytes();
        let fixed = FixedHeader::parse(buf, self.deframer.limits()).ok()??;
        let len = fixed.frame_len();
        let json_end = FIXED_HEADER_LEN + fixed.header_len as usize;
        if buf.len() < len {
            return None;
        }
        let (json, content) = (&buf[FIXED_HEADER_LEN..json_end], &buf[json_end..len]);
        let ok = fixed.header_crc == known.crc
            && json == &known.json[..]
            && crc32fast::hash(content) == fixed.content_crc
            && self.key.verify(json, content, &fixed.mac);
        ok.then_some((json_end, len))
    }
}

/// Moves an empty buffer's start back to the front of its allocation (never
/// allocating), so each read lands in the same few cache lines instead of walking through
/// the whole buffer: a receiver gets one small frame per message, and with 1,000 of them
/// the lines a fresh offset touches are cold for the kernel's copy and for the check.
pub fn rewind(buf: &mut bytes::BytesMut) {
    if buf.is_empty() {
        // Asking for one byte more than the spare capacity makes `bytes` reclaim the
        // consumed front if it can do so without allocating (and refuse otherwise).
        let _ = buf.try_reclaim(buf.capacity() + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::encode;
    use sockchat_proto::header::{ByteStr, OCTET_STREAM};

    use crate::script_reader::Script;

    fn delivery(key: &Key, room: &str, content: &[u8]) -> Vec<u8> {
        let mut h = Header::new(
            FrameType::Message,
            Some(OCTET_STREAM),
            Some(ByteStr::from("s1")),
        );
        h.room = Some(ByteStr::from(room));
        h.from = Some(ByteStr::from("s0"));
        encode(key, &h, content).to_vec()
    }

    fn reader(chunks: Vec<Vec<u8>>) -> FanoutReader<Script> {
        FanoutReader::new(
            Script(chunks),
            Deframer::new(sockchat_proto::Limits::default()),
            Arc::new(Key::reference_default()),
        )
    }

    #[test]
    fn repeated_headers_take_the_fast_path_split_anywhere() {
        let key = Key::reference_default();
        let mut stream = Vec::new();
        for i in 0..5u8 {
            stream.extend(delivery(&key, "r0", &[i; 64]));
        }
        // A header that differs (another room): decoded, then the known one.
        stream.extend(delivery(&key, "r1", &[9; 64]));
        stream.extend(delivery(&key, "r1", &[10; 64]));
        let chunks = stream.chunks(37).map(<[u8]>::to_vec).collect();
        let mut r = reader(chunks);
        monoio::start::<monoio::LegacyDriver, _>(async move {
            for i in 0..5u8 {
                let (h, c, repeat) = r.next().await.unwrap();
                assert_eq!(h.room.as_deref(), Some("r0"));
                assert_eq!(h.session_id.as_deref(), Some("s1"));
                assert_eq!(c, &[i; 64]);
                assert_eq!(repeat, i > 0);
            }
            assert_eq!(r.paths(), (4, 1));
            let (h, c, repeat) = r.next().await.unwrap();
            assert_eq!((h.room.as_deref(), c), (Some("r1"), &[9u8; 64][..]));
            assert!(!repeat);
            let (h, c, repeat) = r.next().await.unwrap();
            assert_eq!((h.room.as_deref(), c), (Some("r1"), &[10u8; 64][..]));
            assert!(repeat);
            assert_eq!(r.paths(), (5, 2));
            assert!(matches!(r.next().await, Err(SessionError::Eof)));
        });
    }

    #[test]
    fn rewinding_reuses_the_front_of_an_empty_buffer_only() {
        let mut b = bytes::BytesMut::with_capacity(4096);
        b.extend_from_slice(&[1; 300]);
        let front = b.as_ptr();
        bytes::Buf::advance(&mut b, 200);
        rewind(&mut b);
        assert_eq!(b.len(), 100, "bytes still buffered are kept where they are");
        bytes::Buf::advance(&mut b, 100);
        rewind(&mut b);
        assert_eq!((b.as_ptr(), b.capacity()), (front, 4096));
    }

    #[test]
    fn corrupt_frames_after_a_known_header_are_named_by_the_decoder() {
        let key = Key::reference_default();
        let good = delivery(&key, "r0", &[1; 64]);
        let last = good.len() - 1;
        // Content byte flipped (content CRC), MAC byte flipped (HMAC), and a frame signed
        // with another key: each must fail, never pass as the known header's.
        let mut content = delivery(&key, "r0", &[2; 64]);
        content[last] ^= 1;
        let mut mac = delivery(&key, "r0", &[3; 64]);
        mac[40] ^= 1;
        let forged = delivery(&Key::new(b"other"), "r0", &[4; 64]);
        for (bad, kind) in [
            (content, "content_crc_mismatch"),
            (mac, "hmac_mismatch"),
            (forged, "hmac_mismatch"),
        ] {
            let mut r = reader(vec![good.clone(), bad]);
            let got = monoio::start::<monoio::LegacyDriver, _>(async move {
                r.next().await.unwrap();
                r.next().await.map(|_| ()).unwrap_err().kind()
            });
            assert_eq!(got, kind);
        }
    }
}
