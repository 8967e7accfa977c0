//! [`CloseReason`]: every way a session ends.

use crate::chunk::ChunkError;
use crate::error::DecodeError;

/// Every way a session ends, on either side. Servers count closes by
/// [`label`](Self::label) and log them; the text a peer is told is
/// [`wire_reason`](Self::wire_reason).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent (server side) or chose to send (client side) `disconnect`.
    ClientDisconnect {
        /// The reason the client gave.
        reason: String,
    },
    /// The server is shutting down (`Server shutting down`).
    ServerShutdown,
    /// Client side: the server sent `disconnect` with this reason.
    ServerDisconnect {
        /// The reason the server gave.
        reason: String,
    },
    /// No handshake within the handshake timeout.
    HandshakeTimeout,
    /// The first frame was not a valid `session_ack` (or `session_init` for a client).
    HandshakeFailed,
    /// A frame carried another session's id.
    ForeignSessionId,
    /// Nothing received for the session timeout.
    SessionTimeout,
    /// A frame failed to decode.
    InvalidFrame(DecodeError),
    /// The chunk extension was misused.
    Chunk(ChunkError),
    /// A valid frame that makes no sense here (e.g. a second handshake).
    ProtocolViolation(&'static str),
    /// Line mode: a line longer than the limit.
    LineTooLong,
    /// The connection ended without a `disconnect`.
    PeerClosed,
    /// The transport failed.
    Io(std::io::ErrorKind),
    /// The peer did not read fast enough and its send queue passed the limit.
    SlowConsumer,
    /// The server was at its session limit.
    ServerFull,
    /// The application closed the session.
    Application(String),
}

impl CloseReason {
    /// Stable snake_case labels, one per variant, in [`index`](Self::index) order.
    pub const LABELS: [&'static str; 16] = [
        "client_disconnect",
        "server_shutdown",
        "server_disconnect",
        "handshake_timeout",
        "handshake_failed",
        "foreign_session_id",
        "session_timeout",
        "invalid_frame",
        "chunk_violation",
        "protocol_violation",
        "line_too_long",
        "peer_closed",
        "io_error",
        "slow_consumer",
        "server_full",
        "application",
    ];

    /// Position of this reason's label in [`LABELS`](Self::LABELS), for counter arrays.
    pub fn index(&self) -> usize {
        match self {
            Self::ClientDisconnect { .. } => 0,
            Self::ServerShutdown => 1,
            Self::ServerDisconnect { .. } => 2,
            Self::HandshakeTimeout => 3,
            Self::HandshakeFailed => 4,
            Self::ForeignSessionId => 5,
            Self::SessionTimeout => 6,
            Self::InvalidFrame(_) => 7,
            Self::Chunk(_) => 8,
            Self::ProtocolViolation(_) => 9,
            Self::LineTooLong => 10,
            Self::PeerClosed => 11,
            Self::Io(_) => 12,
            Self::SlowConsumer => 13,
            Self::ServerFull => 14,
            Self::Application(_) => 15,
        }
    }

    /// The stable label used in metrics and logs.
    pub fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }

    /// Human-readable text for the peer (a `disconnect` reason or an `error` text).
    pub fn wire_reason(&self) -> String {
        match self {
            Self::ClientDisconnect { reason } | Self::ServerDisconnect { reason } => reason.clone(),
            Self::ServerShutdown => "Server shutting down".into(),
            Self::HandshakeTimeout => "Handshake timeout".into(),
            Self::HandshakeFailed => "Invalid session acknowledgment".into(),
            Self::ForeignSessionId => "Invalid session id".into(),
            Self::SessionTimeout => "Session timeout".into(),
            Self::InvalidFrame(e) => e.wire_message(),
            Self::Chunk(e) => format!("Invalid chunk: {e}"),
            Self::ProtocolViolation(what) => format!("Protocol violation: {what}"),
            Self::LineTooLong => "Line too long".into(),
            Self::PeerClosed => "Connection closed".into(),
            Self::Io(kind) => format!("I/O error: {kind}"),
            Self::SlowConsumer => "Slow consumer: send queue limit exceeded".into(),
            Self::ServerFull => "Server full".into(),
            Self::Application(reason) => reason.clone(),
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.label(), self.wire_reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_indexes() {
        let all = [
            CloseReason::ClientDisconnect {
                reason: String::new(),
            },
            CloseReason::ServerShutdown,
            CloseReason::ServerDisconnect {
                reason: String::new(),
            },
            CloseReason::HandshakeTimeout,
            CloseReason::HandshakeFailed,
            CloseReason::ForeignSessionId,
            CloseReason::SessionTimeout,
            CloseReason::InvalidFrame(DecodeError::BadMagic),
            CloseReason::Chunk(ChunkError::Duplicate { index: 0 }),
            CloseReason::ProtocolViolation("x"),
            CloseReason::LineTooLong,
            CloseReason::PeerClosed,
            CloseReason::Io(std::io::ErrorKind::BrokenPipe),
            CloseReason::SlowConsumer,
            CloseReason::ServerFull,
            CloseReason::Application(String::new()),
        ];
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
