//! The protocol side of a load session: the handshake, driven by `sockchat-proto`'s
//! [`ClientSession`] (the one place the client's handshake, feature negotiation and
//! `disconnect` body are written), then reading verified frames with proto's
//! [`Deframer`] and sending frames built with its codec directly: once established, no
//! session state machine sits between a scenario and the wire, so the cost per message
//! is the codec's and nothing else.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use sockchat_proto::frame::FrameType;
use sockchat_proto::header::{APPLICATION_JSON, OCTET_STREAM};
use sockchat_proto::session::{disconnect_content, HandshakeFault, Violation};
use sockchat_proto::{
    encode_into, ByteStr, ChunkError, ClientSession, CloseReason, DecodeError, Decoded, Deframer,
    Event, Features, Frame, Header, Key, Session, SessionConfig,
};
use thiserror::Error;

use crate::conn::{read_append, Conn, Target};

/// The reason in the client's `disconnect`, as the reference client gives it.
pub const DISCONNECT_REASON: &str = "Client disconnecting";

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
    /// A chunk the reassembler refused.
    #[error("chunk: {0}")]
    Chunk(ChunkError),
    /// A reply that verified but does not carry what was sent.
    #[error("echo differs from what was sent")]
    EchoMismatch,
    /// The server did not close the connection after the client's `disconnect`.
    #[error("no close after disconnect")]
    NoClose,
    /// A feature asked for was not granted.
    #[error("feature not granted: {0}")]
    FeatureRefused(&'static str),
    /// The session state machine ended the handshake for a reason none of the above
    /// names (counted under the reason's own label).
    #[error("handshake ended: {0}")]
    Closed(CloseReason),
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
            Self::Chunk(e) => e.kind(),
            Self::EchoMismatch => "echo_mismatch",
            Self::NoClose => "no_close",
            Self::FeatureRefused(_) => "feature_refused",
            Self::Closed(reason) => reason.label(),
        }
    }
}

/// Reads verified frames from a stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    r: R,
    deframer: Deframer,
    key: Arc<Key>,
}

impl<R: AsyncReadRent> FrameReader<R> {
    /// Reads from `r`, verifying with `key`, continuing the `deframer`'s buffered bytes.
    pub fn with_deframer(r: R, deframer: Deframer, key: Arc<Key>) -> Self {
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

/// The client's `disconnect` of session `sid`, with the body [`ClientSession::disconnect`]
/// sends (proto's [`disconnect_content`]): built here because the session state machine
/// is no longer around when a scenario ends.
pub fn disconnect(key: &Key, sid: &ByteStr) -> Bytes {
    frame(
        key,
        FrameType::Disconnect,
        APPLICATION_JSON,
        sid,
        &disconnect_content(DISCONNECT_REASON),
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
    check_header(&frame.header, &frame.content, sid)
}

/// [`check_session`] of a frame given as its header and content.
pub fn check_header(header: &Header, content: &[u8], sid: &ByteStr) -> Result<(), SessionError> {
    match header.kind {
        FrameType::Error => {
            return Err(SessionError::ServerError(
                String::from_utf8_lossy(content).into_owned(),
            ))
        }
        FrameType::Disconnect => {
            return Err(SessionError::ServerDisconnect(
                String::from_utf8_lossy(content).into_owned(),
            ))
        }
        _ => {}
    }
    if header.session_id.as_ref() != Some(sid) {
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
    /// Reader over the connection (also used to write until the connection is split),
    /// holding whatever the server sent after the handshake.
    pub reader: FrameReader<Conn>,
    /// The id the server assigned.
    pub session_id: ByteStr,
    /// Features the server granted (none unless some were asked for).
    pub features: Features,
}

/// Connects and performs the handshake with a [`ClientSession`]: `session_init` in,
/// `session_ack` out, and, when `features` is not empty, the server's `session_ack`
/// answer listing what it granted. Asking for features makes the session ping after its
/// ack (a server without the extension answers only the ping); the pong is awaited here,
/// so the scenario's reader starts at the first frame after the handshake.
///
/// Not bounded in time: the caller wraps it in its connect timeout.
pub async fn handshake(
    target: &Target,
    key: Arc<Key>,
    features: &[&'static str],
) -> Result<Established, SessionError> {
    let names: Vec<ByteStr> = features.iter().map(|f| ByteStr::from_static(f)).collect();
    // Names proto does not implement are not asked for, and so are refused below.
    let wanted = Features::ALL.grant(&names);
    let config = SessionConfig {
        features: wanted,
        ..SessionConfig::default()
    };
    let limits = config.limits;
    let mut conn = Conn::connect(target).await.map_err(SessionError::Connect)?;
    let mut session = ClientSession::new(key.clone(), Arc::new(config), Instant::now());
    let mut granted = None;
    // The session pings after its ack only when it asks for features.
    let mut pong = wanted.is_empty();
    let mut out = Vec::new();
    loop {
        // One frame (and its events) at a time, so nothing after the handshake is taken
        // from the buffer the scenario's reader continues.
        while granted.is_none() || !pong {
            let more = session.handle_input_until_event(Instant::now());
            while let Some(event) = session.poll_event() {
                match event {
                    Event::Established { features, .. } => granted = Some(features),
                    Event::Pong { .. } => pong = true,
                    Event::PeerError(text) => {
                        return Err(match session.session_id() {
                            // Instead of `session_init`.
                            None => SessionError::Unexpected(FrameType::Error),
                            Some(_) => SessionError::ServerError(text.to_string()),
                        });
                    }
                    Event::Message(_) => return Err(SessionError::Unexpected(FrameType::Message)),
                    // The session queued its notice (an `error`); like any failed
                    // handshake here, the connection is just dropped.
                    Event::Closed(reason) => {
                        return Err(handshake_error(reason, session.handshake_fault()))
                    }
                    // Events a client's handshake does not produce.
                    _ => {}
                }
            }
            if !more {
                break;
            }
        }
        session.poll_transmit(&mut out);
        for b in out.drain(..) {
            write(&mut conn, b).await?;
        }
        if let (Some(got), true) = (granted, pong) {
            let names = got.names();
            if let Some(&f) = features.iter().find(|&&f| !names.iter().any(|n| n == f)) {
                return Err(SessionError::FeatureRefused(f));
            }
            let session_id = session.session_id().cloned().expect("established");
            let mut deframer = Deframer::new(limits);
            deframer.put_buffer(session.take_buffer());
            return Ok(Established {
                reader: FrameReader::with_deframer(conn, deframer, key),
                session_id,
                features: got,
            });
        }
        let (res, buf) = read_append(&mut conn, session.take_buffer()).await;
        session.put_buffer(buf);
        match res {
            Ok(0) => return Err(SessionError::Eof),
            Ok(_) => {}
            Err(e) => return Err(SessionError::Read(e)),
        }
    }
}

/// What a handshake that ended for `reason` counts as (`fault` says why, for
/// [`CloseReason::HandshakeFailed`]): the labels loadgen counted before the handshake
/// moved to proto, so reports compare across the change.
fn handshake_error(reason: CloseReason, fault: Option<HandshakeFault>) -> SessionError {
    match reason {
        CloseReason::HandshakeFailed => match fault {
            Some(HandshakeFault::NoSessionId) => SessionError::NoSessionId,
            Some(HandshakeFault::Unexpected(kind)) => SessionError::Unexpected(kind),
            // Faults proto may add: counted under the reason's label.
            _ => SessionError::Closed(CloseReason::HandshakeFailed),
        },
        // Frames after the ack that only an open session could be sent.
        CloseReason::ProtocolViolation(Violation::InitInOpenSession) => {
            SessionError::Unexpected(FrameType::SessionInit)
        }
        CloseReason::ProtocolViolation(
            Violation::ChunkWithoutFeature | Violation::ChunkWithoutInfo,
        ) => SessionError::Unexpected(FrameType::Chunk),
        CloseReason::ForeignSessionId => SessionError::SessionIdMismatch,
        CloseReason::ServerDisconnect { reason } => SessionError::ServerDisconnect(reason),
        r @ CloseReason::ServerShutdown => SessionError::ServerDisconnect(r.wire_reason()),
        CloseReason::InvalidFrame(e) => SessionError::Decode(e),
        // Reasons a client's handshake does not end with today: proto's own label.
        other => SessionError::Closed(other),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    use super::*;

    const SID: &str = "3f2b8c1e-6d4a-4e8b-9c71-2a5d0e9f1b34";

    /// One frame as a server would send it.
    fn server_frame(kind: FrameType, sid: Option<&str>, features: Option<&[&str]>) -> Vec<u8> {
        let mut h = Header::new(kind, Some(OCTET_STREAM), sid.map(ByteStr::from));
        h.features = features.map(|f| f.iter().map(|&n| ByteStr::from(n)).collect());
        let content: &[u8] = match kind {
            FrameType::Heartbeat => b"pong",
            FrameType::Error => b"Server full",
            _ => b"x",
        };
        encode(&Key::reference_default(), &h, content).to_vec()
    }

    /// Runs [`handshake`] against a server that writes `script` on accept and closes its
    /// side; returns the features granted and the frame read after the handshake.
    fn handshake_with(
        script: Vec<u8>,
        features: &[&'static str],
    ) -> Result<(Features, Option<Frame>), SessionError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(&script).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let _ = s.read_to_end(&mut Vec::new());
        });
        let target = Target::Unix(path);
        let res = monoio::start::<monoio::LegacyDriver, _>(async move {
            let key = Arc::new(Key::reference_default());
            let mut est = handshake(&target, key, features).await?;
            // What the server sent after the handshake is the reader's.
            let next = est.reader.next().await.ok();
            Ok((est.features, next))
        });
        server.join().unwrap();
        res
    }

    #[test]
    fn a_granted_feature_completes_after_the_pong_and_later_frames_stay_buffered() {
        let mut script = server_frame(FrameType::SessionInit, Some(SID), None);
        script.extend(server_frame(
            FrameType::SessionAck,
            Some(SID),
            Some(&["chunk"]),
        ));
        script.extend(server_frame(FrameType::Heartbeat, Some(SID), None));
        script.extend(server_frame(FrameType::Message, Some(SID), None));
        let (features, next) = handshake_with(script, &["chunk"]).unwrap();
        assert!(features.chunk);
        assert_eq!(next.map(|f| f.header.kind), Some(FrameType::Message));
    }

    #[test]
    fn without_features_the_handshake_ends_at_session_init() {
        let mut script = server_frame(FrameType::SessionInit, Some(SID), None);
        script.extend(server_frame(FrameType::Message, Some(SID), None));
        let (features, next) = handshake_with(script, &[]).unwrap();
        assert_eq!(features, Features::NONE);
        assert_eq!(next.map(|f| f.header.kind), Some(FrameType::Message));
    }

    #[test]
    fn failed_handshakes_keep_loadgen_s_error_labels() {
        let kind = |script: Vec<u8>, features: &[&'static str]| {
            handshake_with(script, features).unwrap_err().kind()
        };
        assert_eq!(
            kind(server_frame(FrameType::SessionInit, None, None), &[]),
            "no_session_id"
        );
        assert_eq!(
            kind(server_frame(FrameType::Error, None, None), &[]),
            "unexpected_frame"
        );
        assert_eq!(
            kind(server_frame(FrameType::Disconnect, Some(SID), None), &[]),
            "unexpected_frame"
        );
        assert_eq!(kind(Vec::new(), &[]), "eof");
        let mut refused = server_frame(FrameType::SessionInit, Some(SID), None);
        refused.extend(server_frame(FrameType::SessionAck, Some(SID), Some(&[])));
        refused.extend(server_frame(FrameType::Heartbeat, Some(SID), None));
        assert_eq!(kind(refused, &["chunk"]), "feature_refused");
        let mut foreign = server_frame(FrameType::SessionInit, Some(SID), None);
        foreign.extend(server_frame(
            FrameType::SessionAck,
            Some("other"),
            Some(&[]),
        ));
        assert_eq!(kind(foreign, &["chunk"]), "session_id_mismatch");
        let mut error = server_frame(FrameType::SessionInit, Some(SID), None);
        error.extend(server_frame(FrameType::Error, Some(SID), None));
        assert_eq!(kind(error, &["chunk"]), "server_error");
    }
}
