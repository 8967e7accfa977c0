//! A blocking client that speaks line mode (newline-terminated lines), skipping the one
//! `session_init` frame a server may send before it sees the first byte.

use std::io::Write;
use std::time::{Duration, Instant};

use sockchat_os::Stream;
use sockchat_proto::frame::FIXED_HEADER_LEN;
use sockchat_proto::FrameType;

use crate::client::{read_before, ReadError};
use crate::frames::decode_one;
use crate::transport::Transport;
use crate::SHORT;

/// A client speaking newline-terminated lines.
#[derive(Debug)]
pub struct LineClient {
    /// The connected socket; tests write raw bytes to it directly.
    pub stream: Stream,
    /// Which transport `stream` is, for messages.
    pub transport: Transport,
    buf: Vec<u8>,
    /// A leading frame (e.g. `session_init` sent before the server saw our first byte)
    /// is skipped once.
    skipped_frame: bool,
}

impl LineClient {
    /// A line client on a raw connection.
    pub fn new(stream: Stream, transport: Transport) -> Self {
        Self {
            stream,
            transport,
            buf: Vec::new(),
            skipped_frame: false,
        }
    }

    /// Writes all of `bytes` (any bytes: lines, partial lines, invalid UTF-8).
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("[{:?}] line write: {e}", self.transport));
    }

    fn fill(&mut self, deadline: Instant) -> Result<(), ReadError> {
        let mut tmp = [0u8; 4096];
        match read_before(&mut self.stream, &mut tmp, deadline)? {
            Some(0) => Err(ReadError::Eof),
            Some(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Skips one leading binary frame if the server sent one before deciding the
    /// connection speaks lines (the protocol leaves that to the server).
    fn skip_leading_frame(&mut self, deadline: Instant) -> Result<(), ReadError> {
        if self.skipped_frame {
            return Ok(());
        }
        while self.buf.is_empty() {
            self.fill(deadline)?;
        }
        self.skipped_frame = true;
        if self.buf[0] != 0x89 {
            return Ok(());
        }
        while self.buf.len() < FIXED_HEADER_LEN {
            self.fill(deadline)?;
        }
        let header_len = u32::from_be_bytes(self.buf[12..16].try_into().unwrap()) as usize;
        let content_len = u64::from_be_bytes(self.buf[20..28].try_into().unwrap()) as usize;
        let total = FIXED_HEADER_LEN + header_len + content_len;
        assert!(total < 1 << 20, "leading frame too large: {total}");
        while self.buf.len() < total {
            self.fill(deadline)?;
        }
        let frame = decode_one(&self.buf[..total]);
        assert_eq!(
            frame.header.kind,
            FrameType::SessionInit,
            "[{:?}] only a session_init may precede the lines",
            self.transport
        );
        self.buf.drain(..total);
        Ok(())
    }

    /// Reads one line (with its `\n`).
    pub fn read_line(&mut self, timeout: Duration) -> Result<Vec<u8>, ReadError> {
        let deadline = Instant::now() + timeout;
        self.skip_leading_frame(deadline)?;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(self.buf.drain(..=i).collect());
            }
            self.fill(deadline)?;
        }
    }

    /// Reads one line and asserts it is `want` (with its `\n`).
    pub fn expect_line(&mut self, want: &[u8]) {
        match self.read_line(SHORT) {
            Ok(l) => assert_eq!(
                String::from_utf8_lossy(&l),
                String::from_utf8_lossy(want),
                "[{:?}] line",
                self.transport
            ),
            Err(e) => panic!(
                "[{:?}] expected line {:?}, got {e:?}",
                self.transport,
                String::from_utf8_lossy(want)
            ),
        }
    }

    /// Expects the server to close with nothing more to say (within `timeout`).
    pub fn expect_closed(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let _ = self.skip_leading_frame(deadline);
        loop {
            match self.fill(deadline) {
                Ok(()) => {}
                Err(e) if e.is_closed() => break,
                Err(e) => panic!("[{:?}] expected a close, got {e:?}", self.transport),
            }
        }
        assert!(
            self.buf.is_empty(),
            "[{:?}] unexpected bytes before the close: {:?}",
            self.transport,
            String::from_utf8_lossy(&self.buf)
        );
    }
}
