//! The protocol side of a load session: reading verified frames, the handshake, and the
//! frames a session sends, built with `sockchat-proto`'s codec directly (no client
//! library in between, so the cost per message is the codec's and nothing else).

use std::io;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use sockchat_proto::frame::FrameType;
use sockchat_proto::header::{APPLICATION_JSON, OCTET_STREAM};
use sockchat_proto::{encode_into, ByteStr, DecodeError, Decoded, Deframer, Frame, Header, Key};
use thiserror::Error;

use crate::conn::{read_append, Conn, Target};

/// Content of the client's `disconnect` frame, as the reference client sends it.
pub const DISCONNECT_CONTENT: &[u8] =
    br#"{"message": "Disconnecting", "reason": "Client disconnecting"}"#;

/// Why a session failed. [`kind`](SessionError::kind) is the name errors are counted
/// under in reports.
#[derive(Debug, Error)]
pub enum SessionError {
    /// Connecting failed.
    #[error("connect: {0}")]
    Connect(io::Error),
    /// Reading failed.
    #[error("read: {0}")]
    Read(io::Error),
    /// Writing failed.
    #[error("write: {0}")]
    Write(io::Error),
    /// The server closed the connection while a reply was expected.
    #[error("connection closed by the server")]
    Eof,
    /// A received frame failed verification (magic, lengths, CRCs, HMAC, JSON).
    #[error("invalid frame: {0}")]
    Decode(#[from] DecodeError),
    /// No reply in time.
    #[error("timed out")]
    Timeout,
    /// A frame of a type that makes no sense here.
    #[error("unexpected {0} frame")]
    Unexpected(FrameType),
    /// `session_init` without a session id.
    #[error("session_init without session_id")]
    NoSessionId,
    /// A frame carrying another session's id.
    #[error("frame for another session")]
    SessionIdMismatch,
    /// The server sent an `error` frame.
    #[error("server error: {0}")]
    ServerError(String),
    /// The server sent `disconnect`.
    #[error("server disconnected: {0}")]
    ServerDisconnect(String),
    /// A reply that verified but does not carry what was sent.
    #[error("echo differs from what was sent")]
    EchoMismatch,
    /// The server did not close the connection after the client's `disconnect`.
    #[error("no close after disconnect")]
    NoClose,
    /// A feature asked for was not granted.
    #[error("feature not granted: {0}")]
    FeatureRefused(&'static str),
}

impl SessionError {
    /// Stable name for error counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Read(_) => "read",
            Self::Write(_) => "write",
            Self::Eof => "eof",
            Self::Decode(e) => e.kind(),
            Self::Timeout => "timeout",
            Self::Unexpected(_) => "unexpected_frame",
            Self::NoSessionId => "no_session_id",
            Self::SessionIdMismatch => "session_id_mismatch",
            Self::ServerError(_) => "server_error",
            Self::ServerDisconnect(_) => "server_disconnect",
            Self::EchoMismatch => "echo_mismatch",
            Self::NoClose => "no_close",
            Self::FeatureRefused(_) => "feature_refused",
        }
    }
}

/// Reads verified frames from a stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    r: R,
    deframer: Deframer,
    key: Rc<Key>,
}

impl<R: AsyncReadRent> FrameReader<R> {
    /// Reads from `r`, verifying with `key`, continuing the `deframer`'s buffered bytes.
    pub fn with_deframer(r: R, deframer: Deframer, key: Rc<Key>) -> Self {
        Self { r, deframer, key }
    }

    /// The next verified frame. After an error the stream is out of sync.
    pub async fn next(&mut self) -> Result<Frame, SessionError> {
        loop {
            if let Decoded::Frame(f) = self.deframer.decode(&self.key)? {
                return Ok(f);
            }
            let buf = self.deframer.take_buffer();
            let (res, buf) = read_append(&mut self.r, buf).await;
            self.deframer.put_buffer(buf);
            match res {
                Ok(0) => return Err(SessionError::Eof),
                Ok(_) => {}
                Err(e) => return Err(SessionError::Read(e)),
            }
        }
    }

    /// The stream, for writing before a split.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.r
    }

    /// The stream and the deframer with any bytes it buffered.
    pub fn into_parts(self) -> (R, Deframer) {
        (self.r, self.deframer)
    }
}

/// Encodes one frame into a new buffer (for frames that are built once, or rarely).
pub fn encode(key: &Key, header: &Header, content: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(64 + 160 + content.len());
    encode_into(key, header, content, &mut out).expect("loadgen frames respect the limits");
    out.freeze()
}

/// A frame of `kind` on session `sid`.
pub fn frame(key: &Key, kind: FrameType, ct: ByteStr, sid: &ByteStr, content: &[u8]) -> Bytes {
    encode(
        key,
        &Header::new(kind, Some(ct), Some(sid.clone())),
        content,
    )
}

/// The `heartbeat` `ping` of session `sid`.
pub fn ping(key: &Key, sid: &ByteStr) -> Bytes {
    frame(key, FrameType::Heartbeat, OCTET_STREAM, sid, b"ping")
}

/// The client's `disconnect` of session `sid`.
pub fn disconnect(key: &Key, sid: &ByteStr) -> Bytes {
    frame(
        key,
        FrameType::Disconnect,
        APPLICATION_JSON,
        sid,
        DISCONNECT_CONTENT,
    )
}

/// Writes a whole buffer.
pub async fn write<W: AsyncWriteRent>(w: &mut W, b: Bytes) -> Result<(), SessionError> {
    let (res, _) = w.write_all(b).await;
    res.map(|_| ()).map_err(SessionError::Write)
}

/// Checks a frame belongs to `sid` and is not an `error` or `disconnect` from the
/// server; returns it for the caller's type-specific checks.
pub fn check_session(frame: &Frame, sid: &ByteStr) -> Result<(), SessionError> {
    match frame.header.kind {
        FrameType::Error => {
            return Err(SessionError::ServerError(
                String::from_utf8_lossy(&frame.content).into_owned(),
            ))
        }
        FrameType::Disconnect => {
            return Err(SessionError::ServerDisconnect(
                String::from_utf8_lossy(&frame.content).into_owned(),
            ))
        }
        _ => {}
    }
    if frame.header.session_id.as_ref() != Some(sid) {
        return Err(SessionError::SessionIdMismatch);
    }
    Ok(())
}

/// True when `f` is this session's `pong`.
pub fn is_pong(f: &Frame) -> bool {
    f.header.kind == FrameType::Heartbeat && &f.content[..] == b"pong"
}

/// An established session.
#[derive(Debug)]
pub struct Established {
    /// Reader over the connection (also used to write until the connection is split).
    pub reader: FrameReader<Conn>,
    /// The id the server assigned.
    pub session_id: ByteStr,
    /// Features the server granted (empty unless some were asked for).
    pub granted: Vec<ByteStr>,
}

/// Connects and performs the handshake: `session_init` in, `session_ack` out, and, when
/// `features` is not empty, the server's `session_ack` answer listing what it granted.
pub async fn handshake(
    target: &Target,
    key: Rc<Key>,
    features: &[&'static str],
) -> Result<Established, SessionError> {
    let conn = Conn::connect(target).await.map_err(SessionError::Connect)?;
    let mut reader = FrameReader::with_deframer(conn, Deframer::default(), key.clone());
    let init = reader.next().await?;
    if init.header.kind != FrameType::SessionInit {
        return Err(SessionError::Unexpected(init.header.kind));
    }
    let sid = init
        .header
        .session_id
        .clone()
        .ok_or(SessionError::NoSessionId)?;
    let mut ack = Header::new(FrameType::SessionAck, Some(OCTET_STREAM), Some(sid.clone()));
    if !features.is_empty() {
        ack.features = Some(features.iter().map(|f| ByteStr::from_static(f)).collect());
    }
    write(
        reader.get_mut(),
        encode(&key, &ack, b"Session acknowledged"),
    )
    .await?;
    let mut granted = Vec::new();
    if !features.is_empty() {
        let answer = reader.next().await?;
        check_session(&answer, &sid)?;
        if answer.header.kind != FrameType::SessionAck {
            return Err(SessionError::Unexpected(answer.header.kind));
        }
        granted = answer.header.features.unwrap_or_default();
        for f in features {
            if !granted.iter().any(|g| g == f) {
                return Err(SessionError::FeatureRefused(f));
            }
        }
    }
    Ok(Established {
        reader,
        session_id: sid,
        granted,
    })
}
