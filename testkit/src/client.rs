//! A blocking client that speaks frames: handshake, echo, ping, and reads bounded by a
//! deadline that tell an orderly close, a reset, a timeout and undecodable bytes apart.

use std::io::{self, Read, Write};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sockchat_os::Stream;
use sockchat_proto::{
    ByteStr, DecodeError, Decoded, Deframer, Frame, FrameType, Header, Key, Limits,
};

use crate::frames::{assert_uuid_v4, build_frame, build_frame_with, describe, OCTET};
use crate::transport::{is_closed_error, is_timeout, Transport};
use crate::SHORT;

/// Why [`Client::read_frame`] returned no frame.
#[derive(Debug)]
pub enum ReadError {
    /// Orderly end of stream with no partial frame buffered.
    Eof,
    /// The stream ended inside a frame.
    EofInFrame(usize),
    /// The connection was reset or aborted (the server closed with unread input).
    Reset(io::Error),
    /// Nothing complete arrived before the deadline.
    Timeout,
    /// The bytes received are not a valid frame.
    Decode(DecodeError),
    /// Any other I/O error.
    Io(io::Error),
}

impl ReadError {
    /// True when the connection is closed (orderly or by reset).
    pub fn is_closed(&self) -> bool {
        matches!(self, ReadError::Eof | ReadError::Reset(_))
    }
}

/// One read from `stream` that gives up at `deadline`: `Some(0)` is the end of the stream,
/// `None` an interrupted read to try again.
pub(crate) fn read_before(
    stream: &mut Stream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<Option<usize>, ReadError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ReadError::Timeout);
    }
    stream.set_read_timeout(Some(left)).map_err(ReadError::Io)?;
    match stream.read(buf) {
        Ok(n) => Ok(Some(n)),
        Err(e) if is_timeout(&e) => Err(ReadError::Timeout),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
        Err(e) if is_closed_error(&e) => Err(ReadError::Reset(e)),
        Err(e) => Err(ReadError::Io(e)),
    }
}

/// A framed-protocol client over a blocking socket.
#[derive(Debug)]
pub struct Client {
    /// The connected socket; tests write raw bytes to it directly.
    pub stream: Stream,
    /// Which transport `stream` is, for messages and for connecting a second client alike.
    pub transport: Transport,
    /// The key that signs what this client sends and verifies what it reads.
    pub key: Key,
    deframer: Deframer,
    scratch: Vec<u8>,
    /// The id from `session_init` (empty before the handshake).
    pub session_id: String,
}

impl Client {
    /// A client on `stream` that has not read `session_init` yet.
    pub fn new(stream: Stream, transport: Transport, key: Key) -> Client {
        Client {
            stream,
            transport,
            key,
            deframer: Deframer::new(Limits::default()),
            scratch: vec![0; 256 * 1024],
            session_id: String::new(),
        }
    }

    /// Reads one frame, waiting at most `timeout`.
    pub fn read_frame(&mut self, timeout: Duration) -> Result<Frame, ReadError> {
        let deadline = Instant::now() + timeout;
        // Bounded: each turn either returns or reads at least one byte before the
        // deadline; at most `timeout` in total.
        loop {
            match self.deframer.decode(&self.key) {
                Ok(Decoded::Frame(f)) => return Ok(f),
                Ok(Decoded::NeedMore(_)) => {}
                Err(e) => return Err(ReadError::Decode(e)),
            }
            match read_before(&mut self.stream, &mut self.scratch, deadline)? {
                Some(0) => {
                    return Err(if self.deframer.buffered() == 0 {
                        ReadError::Eof
                    } else {
                        ReadError::EofInFrame(self.deframer.buffered())
                    })
                }
                Some(n) => self.deframer.extend_from_slice(&self.scratch[..n]),
                None => {}
            }
        }
    }

    /// Reads one frame or panics with context.
    pub fn expect_frame(&mut self, timeout: Duration) -> Frame {
        match self.read_frame(timeout) {
            Ok(f) => f,
            Err(e) => panic!(
                "[{:?} {}] expected a frame, got {e:?}",
                self.transport, self.session_id
            ),
        }
    }

    /// Reads one frame of type `kind` or panics, showing what came instead.
    pub fn expect_kind(&mut self, kind: FrameType, timeout: Duration) -> Frame {
        let f = self.expect_frame(timeout);
        assert_eq!(
            f.header.kind,
            kind,
            "[{:?}] expected a {kind} frame, got {} with content {:?}",
            self.transport,
            f.header.kind,
            String::from_utf8_lossy(&f.content[..f.content.len().min(200)])
        );
        f
    }

    /// Reads `session_init`, checks it and answers `session_ack` (no features).
    pub fn handshake(&mut self) -> Frame {
        let init = self.read_init();
        let ack = self.ack_frame(None);
        self.send(&ack);
        init
    }

    /// Reads and checks `session_init`; records the session id.
    pub fn read_init(&mut self) -> Frame {
        let init = self.expect_kind(FrameType::SessionInit, SHORT);
        let sid = init
            .header
            .session_id
            .as_ref()
            .expect("session_init carries a session id")
            .to_string();
        assert_uuid_v4(&sid);
        assert_eq!(&init.content[..], b"Session established");
        assert_eq!(init.header.content_type.as_deref(), Some(OCTET));
        self.session_id = sid;
        init
    }

    /// A `session_ack` for this session, asking for `features` when given.
    pub fn ack_frame(&self, features: Option<&[&str]>) -> Vec<u8> {
        let mut h = Header::new(
            FrameType::SessionAck,
            Some(ByteStr::from(OCTET)),
            Some(ByteStr::from(self.session_id.as_str())),
        );
        h.features = features.map(|f| f.iter().map(|s| ByteStr::from(*s)).collect());
        build_frame_with(&self.key, &h, b"Session acknowledged")
    }

    /// Completes the handshake asking for the chunk extension; checks the server grants it.
    pub fn handshake_chunk(&mut self) {
        let (answer, granted) = self.handshake_asking(&["chunk"]);
        assert_eq!(
            answer.header.session_id.as_deref(),
            Some(self.session_id.as_str())
        );
        assert_eq!(granted, vec!["chunk".to_string()], "features granted");
    }

    /// Completes the handshake asking for the features `asked`: the server's answering
    /// `session_ack` and the features it granted (none when it names none).
    pub fn handshake_asking(&mut self, asked: &[&str]) -> (Frame, Vec<String>) {
        self.read_init();
        let ack = self.ack_frame(Some(asked));
        self.send(&ack);
        let answer = self.expect_kind(FrameType::SessionAck, SHORT);
        let granted = answer
            .header
            .features
            .as_ref()
            .map(|f| f.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        (answer, granted)
    }

    /// A frame of this session.
    pub fn frame(&self, kind: FrameType, content_type: Option<&str>, content: &[u8]) -> Vec<u8> {
        build_frame(
            &self.key,
            kind,
            content_type,
            Some(&self.session_id),
            content,
        )
    }

    /// Writes all of `bytes`.
    pub fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.stream.write_all(bytes) {
            panic!("[{:?}] write of {} bytes: {e}", self.transport, bytes.len());
        }
    }

    /// Writes `bytes`, returning the error instead of panicking.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a message and checks the echo is byte-for-byte the frame sent.
    pub fn echo(&mut self, content_type: Option<&str>, content: &[u8]) {
        let f = self.frame(FrameType::Message, content_type, content);
        self.send(&f);
        let back = self.expect_kind(FrameType::Message, SHORT);
        assert!(
            back.raw[..] == f[..],
            "[{:?}] echo differs from the frame sent: got {} content {:?}",
            self.transport,
            back.header.kind,
            String::from_utf8_lossy(&back.content[..back.content.len().min(100)])
        );
    }

    /// Sends `heartbeat` `ping`, expects `pong` as the next frame.
    pub fn ping(&mut self) {
        let f = self.frame(FrameType::Heartbeat, Some(OCTET), b"ping");
        self.send(&f);
        let pong = self.expect_kind(FrameType::Heartbeat, SHORT);
        assert_eq!(&pong.content[..], b"pong");
        assert_eq!(
            pong.header.session_id.as_deref(),
            Some(self.session_id.as_str())
        );
    }

    /// Reads until the server closes, within `timeout`; returns the frames received
    /// before the close. Panics on a timeout or undecodable bytes.
    pub fn expect_closed(&mut self, timeout: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        // Bounded by the deadline (each read waits at most what is left of it).
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left) {
                Ok(f) => frames.push(f),
                Err(e) if e.is_closed() => return frames,
                Err(e) => panic!(
                    "[{:?}] expected the server to close, got {e:?} after {} frames: {:?}",
                    self.transport,
                    frames.len(),
                    describe(&frames)
                ),
            }
        }
    }

    /// Expects one `error` frame whose text contains `needle` (case-insensitive), then the
    /// close. Returns the error text.
    pub fn expect_error_and_close(&mut self, needle: &str) -> String {
        let frames = self.expect_closed(SHORT);
        let err = frames
            .iter()
            .find(|f| f.header.kind == FrameType::Error)
            .unwrap_or_else(|| {
                panic!(
                    "[{:?}] expected an error frame containing {needle:?} before the close, got {:?}",
                    self.transport,
                    describe(&frames)
                )
            });
        let text = String::from_utf8_lossy(&err.content).into_owned();
        assert!(
            text.to_lowercase().contains(&needle.to_lowercase()),
            "[{:?}] error text {text:?} does not contain {needle:?}",
            self.transport
        );
        assert_eq!(
            frames.last().map(|f| f.header.kind),
            Some(FrameType::Error),
            "[{:?}] the error must be the last frame before the close: {:?}",
            self.transport,
            describe(&frames)
        );
        text
    }

    /// Asserts nothing arrives for `d` (the connection stays open and quiet). A bounded
    /// wait for something *not* to happen is the only way to show it did not.
    pub fn expect_silence(&mut self, d: Duration) {
        match self.read_frame(d) {
            Err(ReadError::Timeout) => {}
            other => panic!(
                "[{:?}] expected silence, got {:?}",
                self.transport,
                other.map(|f| describe(&[f]))
            ),
        }
    }

    /// Starts a thread writing `data` on a clone of the stream (so the caller can read
    /// concurrently and neither side's buffers can deadlock the exchange).
    pub fn spawn_writer(&self, data: Vec<u8>) -> JoinHandle<io::Result<()>> {
        let mut w = self.stream.try_clone().expect("clone stream");
        thread::spawn(move || w.write_all(&data))
    }
}

/// How a hostile connection ended.
#[derive(Debug)]
pub struct Outcome {
    /// Frames received (after `session_init`, if the caller read it) up to the close.
    pub frames: Vec<Frame>,
    /// Time from the call to the close.
    pub elapsed: Duration,
}

impl Outcome {
    /// The text of the last `error` or `disconnect` frame.
    pub fn notice(&self) -> Option<(FrameType, String)> {
        self.frames
            .iter()
            .rev()
            .find(|f| matches!(f.header.kind, FrameType::Error | FrameType::Disconnect))
            .map(|f| {
                (
                    f.header.kind,
                    String::from_utf8_lossy(&f.content).into_owned(),
                )
            })
    }
}

impl Client {
    /// Reads until the server closes (within `within`), tolerating a reset or a frame cut
    /// short by the close; panics on a timeout.
    pub fn read_until_closed(&mut self, within: Duration) -> Outcome {
        let start = Instant::now();
        let deadline = start + within;
        let mut frames = Vec::new();
        // Bounded by the deadline.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left) {
                Ok(f) => frames.push(f),
                Err(e) if e.is_closed() || matches!(e, ReadError::EofInFrame(_)) => {
                    return Outcome {
                        frames,
                        elapsed: start.elapsed(),
                    }
                }
                Err(e) => panic!(
                    "[{:?}] expected a close within {within:?}, got {e:?} after {:?}",
                    self.transport,
                    describe(&frames)
                ),
            }
        }
    }

    /// Expects a notice of `kind` (an `error` or a `disconnect`) whose text contains
    /// `needle` (case-insensitive) as the last frame, then the close, within `within`.
    pub fn expect_notice_within(
        &mut self,
        kind: FrameType,
        needle: &str,
        within: Duration,
    ) -> Outcome {
        let out = self.read_until_closed(within);
        let last = out.frames.last().unwrap_or_else(|| {
            panic!(
                "[{:?}] closed without a {kind} frame (wanted {needle:?})",
                self.transport
            )
        });
        let text = String::from_utf8_lossy(&last.content).into_owned();
        assert!(
            last.header.kind == kind && text.to_lowercase().contains(&needle.to_lowercase()),
            "[{:?}] expected a last {kind} frame containing {needle:?}, got {:?}",
            self.transport,
            describe(&out.frames)
        );
        out
    }
}
