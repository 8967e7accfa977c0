//! [`CloseReason`]: every way a session ends, and what each one implies.
//!
//! The variants, their labels, their count and their indexes come from one list (the
//! `close_reasons!` invocation below), so a new reason cannot be added without a label;
//! every policy ([`notice`](CloseReason::notice), [`lingers`](CloseReason::lingers),
//! [`discards_queue`](CloseReason::discards_queue)) is an exhaustive `match`, so it
//! cannot be added without deciding what the peer is told either.

use crate::chunk::ChunkError;
use crate::error::DecodeError;

/// Declares [`CloseReason`] with one stable label per variant, and derives from that
/// single list [`CloseReason::LABELS`], [`CloseReason::COUNT`], [`CloseReason::index`]
/// and [`CloseReason::label`]: the label table and the index can no longer drift apart.
macro_rules! close_reasons {
    ($(
        $(#[$doc:meta])*
        $variant:ident $(($($tuple:ty),*))? $({ $($(#[$fdoc:meta])* $field:ident: $fty:ty),* $(,)? })?
            => $label:literal,
    )*) => {
        /// Every way a session ends, on either side. Servers count closes by
        /// [`label`](Self::label) and log them; the text a peer is told is
        /// [`wire_reason`](Self::wire_reason), in the form [`notice`](Self::notice) says.
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum CloseReason {
            $(
                $(#[$doc])*
                $variant $(($($tuple),*))? $({ $($(#[$fdoc])* $field: $fty),* })?,
            )*
        }

        impl CloseReason {
            /// Stable snake_case labels, one per variant, in [`index`](Self::index) order:
            /// the names of counters and log fields, so they never change.
            pub const LABELS: [&'static str; Self::COUNT] = [$($label),*];

            /// How many reasons there are: the length of a per-reason counter array.
            pub const COUNT: usize = [$($label),*].len();

            /// Position of this reason's label in [`LABELS`](Self::LABELS), so counters
            /// can be a plain array instead of a map.
            pub fn index(&self) -> usize {
                // Declaration order, numbered by the compiler rather than by hand.
                #[allow(non_camel_case_types, clippy::enum_variant_names, dead_code)]
                enum Position { $($variant),* }
                match self {
                    $(Self::$variant { .. } => Position::$variant as usize,)*
                }
            }

            /// The stable label used in metrics and logs.
            pub fn label(&self) -> &'static str {
                match self {
                    $(Self::$variant { .. } => $label,)*
                }
            }
        }
    };
}

close_reasons! {
    /// The client sent (server side) or chose to send (client side) `disconnect`.
    ClientDisconnect {
        /// The reason the client gave.
        reason: String,
    } => "client_disconnect",
    /// The server is shutting down (`Server shutting down`).
    ServerShutdown => "server_shutdown",
    /// Client side: the server sent `disconnect` with this reason.
    ServerDisconnect {
        /// The reason the server gave.
        reason: String,
    } => "server_disconnect",
    /// No handshake within the handshake timeout.
    HandshakeTimeout => "handshake_timeout",
    /// The first frame was not a valid `session_ack` (or `session_init` for a client).
    HandshakeFailed => "handshake_failed",
    /// A frame carried another session's id.
    ForeignSessionId => "foreign_session_id",
    /// Nothing received for the session timeout.
    SessionTimeout => "session_timeout",
    /// A frame failed to decode.
    InvalidFrame(DecodeError) => "invalid_frame",
    /// The chunk extension was misused.
    Chunk(ChunkError) => "chunk_violation",
    /// A valid frame that makes no sense in the session's state.
    ProtocolViolation(Violation) => "protocol_violation",
    /// Line mode: a line longer than the limit.
    LineTooLong => "line_too_long",
    /// The connection ended without a `disconnect`.
    PeerClosed => "peer_closed",
    /// The transport failed.
    Io(std::io::ErrorKind) => "io_error",
    /// The peer did not read fast enough and its send queue passed the limit.
    SlowConsumer => "slow_consumer",
    /// The server was at its session limit.
    ServerFull => "server_full",
    /// The application closed the session.
    Application(String) => "application",
    /// The server is draining (lame duck): the client should reconnect elsewhere
    /// (`Server draining`).
    ServerDraining => "server_draining",
    /// The peer (an address or a user) already holds as many sessions as the server
    /// allows one peer.
    PeerLimit {
        /// The per-peer limit in force.
        limit: u64,
    } => "peer_limit",
    /// A large frame or a new chunked message would have passed the server's memory
    /// budget.
    MemoryBudget => "memory_budget",
    /// A chunked message did not complete within the message timeout.
    MessageTimeout => "message_timeout",
}

/// A well-formed frame that the session's state does not allow. Named (rather than free
/// text) so a driver or test can tell them apart and the peer's text stays fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A `chunk` frame on a session that did not negotiate the chunk feature.
    #[error("chunk frames need the chunk feature")]
    ChunkWithoutFeature,
    /// A `chunk` frame whose header lacks the chunk fields. `Header::parse` rejects these
    /// first, so this is a second line of defence rather than an expected path.
    #[error("chunk without chunk info")]
    ChunkWithoutInfo,
    /// Server side: `session_init` or `session_ack` after the handshake completed.
    #[error("handshake frame in an open session")]
    HandshakeInOpenSession,
    /// Client side: a second `session_init` after the handshake completed.
    #[error("session_init in an open session")]
    InitInOpenSession,
    /// Server side: `join` or `leave` from a session that did not negotiate rooms.
    #[error("join and leave need the rooms feature")]
    RoomsWithoutFeature,
    /// Client side: a `join`/`leave` answer that does not name a valid room.
    #[error("join/leave answer without a valid room")]
    BadRoomAnswer,
}

/// Which end of a session a policy is decided for: the same reason is told to the peer
/// differently by a server and a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The accepting end, which sends `session_init`.
    Server,
    /// The connecting end, which answers with `session_ack`.
    Client,
}

/// What the peer is told when a session ends for a given reason (framed sessions send
/// it as a frame, line sessions as a `disconnect: …` or `error: …` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A `disconnect` naming the reason: an orderly end the peer did nothing wrong in.
    Disconnect,
    /// An `error` with the reason's text: the peer broke a rule.
    Error,
    /// Nothing: the peer ended it, cannot read, or must not be written to any more.
    None,
}

/// Where the peer stands when a session ends, which decides how the transport is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerState {
    /// It may still be sending while our last frame is on its way.
    MaySend,
    /// It ended the session, or the transport is gone.
    Gone,
    /// It does not read what we send.
    NotReading,
}

impl CloseReason {
    /// What the peer is told when this side (`side`) ends the session for this reason.
    /// A client announces its own `disconnect`; a server does not answer one it received.
    pub fn notice(&self, side: Side) -> Notice {
        match self {
            Self::ServerShutdown
            | Self::ServerDraining
            | Self::HandshakeTimeout
            | Self::SessionTimeout
            | Self::Application(_) => Notice::Disconnect,
            Self::ClientDisconnect { .. } => match side {
                Side::Client => Notice::Disconnect,
                Side::Server => Notice::None,
            },
            Self::InvalidFrame(_)
            | Self::HandshakeFailed
            | Self::ForeignSessionId
            | Self::Chunk(_)
            | Self::ProtocolViolation(_)
            | Self::ServerFull
            | Self::LineTooLong
            | Self::PeerLimit { .. }
            | Self::MemoryBudget
            | Self::MessageTimeout => Notice::Error,
            Self::ServerDisconnect { .. } | Self::PeerClosed | Self::Io(_) | Self::SlowConsumer => {
                Notice::None
            }
        }
    }

    /// True when the peer may still be sending while our last frame is on its way, so a
    /// driver should wait briefly for the peer's FIN before closing: closing a socket with
    /// unread input turns into a reset that can destroy that last frame. False when the
    /// peer already ended the session, the transport is gone, or the peer is not reading.
    pub fn lingers(&self) -> bool {
        match self.peer_state() {
            PeerState::MaySend => true,
            PeerState::Gone | PeerState::NotReading => false,
        }
    }

    /// True when what is still queued for the peer should be dropped: a peer that does
    /// not read would only make the backlog grow in memory.
    pub fn discards_queue(&self) -> bool {
        match self.peer_state() {
            PeerState::NotReading => true,
            PeerState::MaySend | PeerState::Gone => false,
        }
    }

    /// Where the peer stands when the session ends for this reason: the one list that
    /// [`lingers`](Self::lingers) and [`discards_queue`](Self::discards_queue) read.
    fn peer_state(&self) -> PeerState {
        match self {
            Self::PeerClosed | Self::ClientDisconnect { .. } | Self::Io(_) => PeerState::Gone,
            Self::SlowConsumer => PeerState::NotReading,
            Self::ServerShutdown
            | Self::ServerDisconnect { .. }
            | Self::HandshakeTimeout
            | Self::HandshakeFailed
            | Self::ForeignSessionId
            | Self::SessionTimeout
            | Self::InvalidFrame(_)
            | Self::Chunk(_)
            | Self::ProtocolViolation(_)
            | Self::LineTooLong
            | Self::ServerFull
            | Self::Application(_)
            | Self::ServerDraining
            | Self::PeerLimit { .. }
            | Self::MemoryBudget
            | Self::MessageTimeout => PeerState::MaySend,
        }
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
            Self::ServerDraining => "Server draining".into(),
            Self::PeerLimit { limit } => {
                format!("Too many sessions from this peer (max_sessions_per_peer = {limit})")
            }
            Self::MemoryBudget => "Server memory budget exceeded (memory_budget)".into(),
            Self::MessageTimeout => {
                "Chunked message not completed in time (message_timeout)".into()
            }
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

    fn all() -> [CloseReason; CloseReason::COUNT] {
        [
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
            CloseReason::ProtocolViolation(Violation::ChunkWithoutInfo),
            CloseReason::LineTooLong,
            CloseReason::PeerClosed,
            CloseReason::Io(std::io::ErrorKind::BrokenPipe),
            CloseReason::SlowConsumer,
            CloseReason::ServerFull,
            CloseReason::Application(String::new()),
            CloseReason::ServerDraining,
            CloseReason::PeerLimit { limit: 1 },
            CloseReason::MemoryBudget,
            CloseReason::MessageTimeout,
        ]
    }

    #[test]
    fn labels_match_indexes() {
        for (i, r) in all().iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(CloseReason::LABELS[i], r.label());
        }
    }

    /// The labels are the names of counters in stats output and logs: renaming one
    /// breaks dashboards, so they are pinned here.
    #[test]
    fn labels_are_stable() {
        assert_eq!(
            CloseReason::LABELS,
            [
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
                "server_draining",
                "peer_limit",
                "memory_budget",
                "message_timeout",
            ]
        );
    }

    #[test]
    fn linger_only_when_we_initiated_with_a_notice() {
        // Moved from the server's connection driver, assertions unchanged.
        assert!(CloseReason::SessionTimeout.lingers());
        assert!(CloseReason::InvalidFrame(DecodeError::BadMagic).lingers());
        assert!(!CloseReason::PeerClosed.lingers());
        assert!(!CloseReason::SlowConsumer.lingers());
    }

    #[test]
    fn violations_keep_their_wire_text() {
        for (v, want) in [
            (
                Violation::ChunkWithoutFeature,
                "Protocol violation: chunk frames need the chunk feature",
            ),
            (
                Violation::ChunkWithoutInfo,
                "Protocol violation: chunk without chunk info",
            ),
            (
                Violation::HandshakeInOpenSession,
                "Protocol violation: handshake frame in an open session",
            ),
            (
                Violation::InitInOpenSession,
                "Protocol violation: session_init in an open session",
            ),
        ] {
            assert_eq!(CloseReason::ProtocolViolation(v).wire_reason(), want);
        }
    }

    #[test]
    fn only_a_client_announces_its_own_disconnect() {
        let r = CloseReason::ClientDisconnect {
            reason: "bye".into(),
        };
        assert_eq!(r.notice(Side::Client), Notice::Disconnect);
        assert_eq!(r.notice(Side::Server), Notice::None);
        assert_eq!(CloseReason::LineTooLong.notice(Side::Server), Notice::Error);
        assert_eq!(CloseReason::SlowConsumer.notice(Side::Server), Notice::None);
        assert!(CloseReason::SlowConsumer.discards_queue());
        assert!(!CloseReason::SlowConsumer.lingers());
        assert!(CloseReason::SessionTimeout.lingers());
    }
}
