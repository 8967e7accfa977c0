//! The opt-in line mode codec: newline-terminated UTF-8 lines, for `nc`, telnet and
//! line-protocol clients.
//!
//! Line mode carries no HMAC, so a listener only speaks it when the operator turns it on,
//! and only for a connection whose first byte is not the frame magic's 0x89 (that choice
//! is the caller's). A line ends at `\n`; one trailing `\r` before it is dropped so telnet's
//! CRLF works. A line that is not UTF-8 is reported as [`Line::InvalidUtf8`] (the server
//! answers `invalid`) and decoding carries on with the next line.

use bytes::{BufMut, BytesMut};
use thiserror::Error;

use crate::header::ByteStr;

/// One decoded line, without its terminator.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// A UTF-8 line; shares the receive buffer's memory.
    Text(ByteStr),
    /// The line was not UTF-8. It has been consumed; the next line decodes normally.
    InvalidUtf8,
}

/// Why the line stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LineError {
    /// `limit` bytes arrived without a `\n`. The stream cannot be resynchronised cheaply
    /// (the rest of the line may be arbitrarily long), so the connection should be closed.
    #[error("line too long (limit {limit} bytes)")]
    TooLong {
        /// Limit in force, counting the `\n`.
        limit: usize,
    },
}

/// Splits a byte stream into lines.
///
/// The caller appends received bytes with [`buffer_mut`](Self::buffer_mut) or
/// [`extend_from_slice`](Self::extend_from_slice) and calls [`decode`](Self::decode) until
/// it returns `Ok(None)`. Calling `decode` after every read keeps the buffer within
/// `max_line` plus one read: an over-long line is refused as soon as `max_line` bytes are
/// buffered without a newline, instead of waiting for one that may never come.
#[derive(Debug)]
pub struct LineCodec {
    buf: BytesMut,
    max_line: usize,
    /// Bytes at the front of `buf` already searched for `\n` without finding one, so a
    /// line arriving in many small reads is scanned once in total, not once per read.
    scanned: usize,
}

impl LineCodec {
    /// A codec accepting lines of at most `max_line` bytes, counting the `\n` (and any
    /// `\r` before it).
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_line,
            scanned: 0,
        }
    }

    /// The receive buffer; append received bytes to it (only append: bytes already there
    /// may have been scanned).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends received bytes (for callers that read into their own buffer).
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Decodes the next line: `Ok(None)` when more bytes are needed.
    ///
    /// A line (with its `\n`) longer than `max_line` is [`LineError::TooLong`], reported as
    /// soon as `max_line` bytes are buffered without a newline; the error repeats on
    /// every later call, since the stream is out of sync.
    pub fn decode(&mut self) -> Result<Option<Line>, LineError> {
        // Never look past the limit: a newline beyond it ends a line that is too long anyway.
        let window = self.buf.len().min(self.max_line);
        // `scanned` can only exceed the buffer if the caller shrank it; start over then.
        let from = if self.scanned <= window {
            self.scanned
        } else {
            0
        };
        match self.buf[from..window].iter().position(|&b| b == b'\n') {
            Some(at) => {
                let end = from + at;
                self.scanned = 0;
                let mut line = self.buf.split_to(end + 1).freeze();
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                Ok(Some(match ByteStr::from_utf8(line) {
                    Ok(text) => Line::Text(text),
                    Err(_) => Line::InvalidUtf8,
                }))
            }
            None if window >= self.max_line => Err(LineError::TooLong {
                limit: self.max_line,
            }),
            None => {
                self.scanned = window;
                Ok(None)
            }
        }
    }

    /// True when no partial line is held, so the buffer can go back to a pool.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty()
    }

    /// Appends `line` and a `\n` to `out`.
    ///
    /// `line` is written as is: a `\n` inside it splits it into several lines on the
    /// peer's side, and a trailing `\r` is dropped by a receiver that strips CRLF. Callers
    /// relaying text from framed peers decide how to present such content.
    pub fn encode(line: &str, out: &mut BytesMut) {
        out.reserve(line.len() + 1);
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Option<Line> {
        Some(Line::Text(ByteStr::from(s)))
    }

    #[test]
    fn lf_and_crlf() {
        let mut c = LineCodec::new(64);
        c.extend_from_slice(b"ping\r\nhello world\n\r\n\n");
        assert_eq!(c.decode().unwrap(), text("ping"));
        assert_eq!(c.decode().unwrap(), text("hello world"));
        assert_eq!(c.decode().unwrap(), text(""));
        assert_eq!(c.decode().unwrap(), text(""));
        assert_eq!(c.decode().unwrap(), None);
        assert!(c.is_idle());
    }

    #[test]
    fn only_one_trailing_cr_is_stripped_and_inner_cr_kept() {
        let mut c = LineCodec::new(64);
        c.extend_from_slice(b"a\rb\r\r\n");
        assert_eq!(c.decode().unwrap(), text("a\rb\r"));
    }

    #[test]
    fn lines_split_across_reads() {
        let mut c = LineCodec::new(64);
        for piece in [&b"hel"[..], b"lo", b"\r", b"\nwor", b"ld"] {
            c.buffer_mut().extend_from_slice(piece);
            if piece == b"\nwor" {
                assert_eq!(c.decode().unwrap(), text("hello"));
            }
            assert_eq!(c.decode().unwrap(), None);
        }
        assert!(!c.is_idle());
        c.extend_from_slice(b"\n");
        assert_eq!(c.decode().unwrap(), text("world"));
        assert!(c.is_idle());
    }

    #[test]
    fn multibyte_utf8_split_across_reads() {
        let mut c = LineCodec::new(64);
        let s = "héllo 你好\n".as_bytes();
        for b in s {
            c.extend_from_slice(std::slice::from_ref(b));
            let got = c.decode().unwrap();
            if *b == b'\n' {
                assert_eq!(got, text("héllo 你好"));
            } else {
                assert_eq!(got, None);
            }
        }
    }

    #[test]
    fn over_long_line_without_newline_is_refused_at_the_limit() {
        let mut c = LineCodec::new(8);
        c.extend_from_slice(b"1234567");
        assert_eq!(c.decode().unwrap(), None);
        c.extend_from_slice(b"8");
        assert_eq!(c.decode(), Err(LineError::TooLong { limit: 8 }));
        // Sticky: the stream is out of sync.
        c.extend_from_slice(b"\n");
        assert_eq!(c.decode(), Err(LineError::TooLong { limit: 8 }));
    }

    #[test]
    fn limit_counts_the_newline() {
        let mut c = LineCodec::new(8);
        c.extend_from_slice(b"1234567\n");
        assert_eq!(c.decode().unwrap(), text("1234567"));
        // A newline beyond the limit in one big read: still too long.
        c.extend_from_slice(b"123456789\n");
        assert_eq!(c.decode(), Err(LineError::TooLong { limit: 8 }));
    }

    #[test]
    fn zero_limit_refuses_everything_without_panicking() {
        let mut c = LineCodec::new(0);
        assert_eq!(c.decode(), Err(LineError::TooLong { limit: 0 }));
        c.extend_from_slice(b"\n");
        assert_eq!(c.decode(), Err(LineError::TooLong { limit: 0 }));
    }

    #[test]
    fn invalid_utf8_then_a_valid_line() {
        let mut c = LineCodec::new(64);
        c.extend_from_slice(b"\xff\xfe bad\r\nping\n");
        assert_eq!(c.decode().unwrap(), Some(Line::InvalidUtf8));
        assert_eq!(c.decode().unwrap(), text("ping"));
        assert!(c.is_idle());
    }

    #[test]
    fn slow_long_line_scans_each_byte_once() {
        let mut c = LineCodec::new(1 << 20);
        for _ in 0..100_000 {
            c.extend_from_slice(b"x");
            assert_eq!(c.decode().unwrap(), None);
        }
        assert_eq!(c.scanned, 100_000);
        c.extend_from_slice(b"\n");
        match c.decode().unwrap() {
            Some(Line::Text(t)) => assert_eq!(t.len(), 100_000),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(c.scanned, 0);
    }

    #[test]
    fn shrunk_buffer_does_not_panic() {
        let mut c = LineCodec::new(64);
        c.extend_from_slice(b"abcdef");
        assert_eq!(c.decode().unwrap(), None);
        c.buffer_mut().clear();
        c.extend_from_slice(b"a\n");
        assert_eq!(c.decode().unwrap(), text("a"));
    }

    #[test]
    fn encode_appends_newline() {
        let mut out = BytesMut::from(&b"x\n"[..]);
        LineCodec::encode("pong", &mut out);
        assert_eq!(&out[..], b"x\npong\n");
        let mut c = LineCodec::new(64);
        c.extend_from_slice(&out);
        assert_eq!(c.decode().unwrap(), text("x"));
        assert_eq!(c.decode().unwrap(), text("pong"));
    }
}
