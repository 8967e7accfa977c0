//! Sans-IO session state machines.
//!
//! [`ServerSession`], [`ClientSession`] and [`LineSession`] are driven the same way, through
//! the [`Session`] trait (the quinn-proto pattern): append received bytes to the receive
//! buffer and call `handle_input(now)`; call `handle_timeout(now)` when `poll_timeout()`
//! passes; drain `poll_event()` and `poll_transmit(..)`. Every rule of a session (handshake,
//! heartbeats, timeouts, which notice each [`CloseReason`] sends) lives here; nothing here
//! reads a clock or touches a socket, so a pair can be run in memory on a simulated clock.

mod client;
mod common;
mod delivery;
mod driver;
mod in_place;
mod line;
mod outbox;
mod reason;
mod rooms;
mod server;

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

pub use crate::deframer::SMALL_FRAME;
pub use client::{ClientSession, HandshakeFault};
pub use delivery::DeliveryTemplate;
pub use driver::Session;
pub use line::LineSession;
pub use outbox::Outbox;
pub use reason::{CloseReason, Notice, Side, Violation};
pub use server::ServerSession;

use crate::chunk::{ChunkLimits, MessageBuffers};
use crate::codec::{EncodeError, EncodedFrame};
use crate::frame::Limits;
use crate::header::{self, ByteStr};
use crate::rooms::{RoomError, RoomName, DEFAULT_MAX_ROOMS, FEATURE_ROOMS};

/// `features` name of the chunk extension.
pub const FEATURE_CHUNK: &str = "chunk";

/// Capabilities negotiated through `features` in `session_ack`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Features {
    /// Chunked messages (`chunk` frames) may be sent to this peer.
    pub chunk: bool,
    /// Rooms: `join`/`leave` frames, `room` on messages, `room` and `from` on deliveries.
    pub rooms: bool,
}

impl Features {
    /// Every feature this crate implements.
    pub const ALL: Features = Features {
        chunk: true,
        rooms: true,
    };
    /// None: what a reference peer gets.
    pub const NONE: Features = Features {
        chunk: false,
        rooms: false,
    };
    /// Chunks only (what an echo server offers: rooms need chat).
    pub const CHUNK: Features = Features {
        chunk: true,
        rooms: false,
    };

    /// The wire names of the enabled features.
    pub fn names(&self) -> Vec<ByteStr> {
        let mut v = Vec::new();
        if self.chunk {
            v.push(ByteStr::from_static(FEATURE_CHUNK));
        }
        if self.rooms {
            v.push(ByteStr::from_static(FEATURE_ROOMS));
        }
        v
    }

    /// Features named in `names` (unknown names ignored), limited to those in `self`.
    pub fn grant(&self, names: &[ByteStr]) -> Features {
        Features {
            chunk: self.chunk && names.iter().any(|n| n == FEATURE_CHUNK),
            rooms: self.rooms && names.iter().any(|n| n == FEATURE_ROOMS),
        }
    }

    /// True when no feature is enabled.
    pub fn is_empty(&self) -> bool {
        !self.chunk && !self.rooms
    }
}

/// Timers and limits of a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Frame size limits.
    pub limits: Limits,
    /// How long the server waits for `session_ack` (and the client for `session_init`).
    pub handshake_timeout: Duration,
    /// Silence after which a session is closed (reference: 10 s × 3 retries).
    pub session_timeout: Duration,
    /// How often a client pings (reference: 5 s).
    pub heartbeat_interval: Duration,
    /// Limits of the chunk extension on receive.
    pub chunk: ChunkLimits,
    /// Largest chunk this side sends.
    pub max_chunk: usize,
    /// Server: the features it offers. Client: the features it asks for.
    pub features: Features,
    /// Server, rooms extension: most rooms one session may be a member of at once
    /// (the lobby counts).
    pub max_rooms: usize,
    /// Server: time a chunked message has to complete once its first chunk arrived;
    /// after it the session is closed with [`CloseReason::MessageTimeout`]. `None`: no
    /// limit (only `chunk.max_partial` bounds partial messages).
    pub message_timeout: Option<Duration>,
    /// Server: where the buffers of chunked messages come from (a fresh allocation each
    /// when `None`; see [`MessageBuffers`](crate::chunk::MessageBuffers)).
    pub message_buffers: Option<Arc<dyn MessageBuffers>>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            handshake_timeout: Duration::from_secs(5),
            session_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            chunk: ChunkLimits::default(),
            max_chunk: 1024 * 1024,
            features: Features::ALL,
            max_rooms: DEFAULT_MAX_ROOMS,
            message_timeout: None,
            message_buffers: None,
        }
    }
}

/// An application message, whole (reassembled if it came in chunks).
#[derive(Debug, Clone)]
pub struct Message {
    /// The sender's `content_type`.
    pub content_type: Option<ByteStr>,
    /// The content.
    pub content: Bytes,
    /// The verified frame exactly as received, when the message came in one `message`
    /// frame. It carries this session's id, so it can be sent back to the same peer
    /// as is ([`Session::echo`] on a [`ServerSession`]), without re-encoding or re-signing.
    pub frame: Option<Bytes>,
    /// The verified chunk frames exactly as received, when the message came in chunks
    /// on a server session (each chunk carries this session's id): like
    /// [`frame`](Self::frame), sent back to the same peer as they are by
    /// [`Session::echo`], without re-encoding or re-signing. Their contents are slices
    /// of [`content`](Self::content). `None` when the chunks' headers were too large to
    /// keep beside the message ([`Reassembler::push_frame`](crate::chunk::Reassembler::push_frame)).
    pub chunks: Option<Vec<EncodedFrame>>,
    /// Rooms extension. Server side: the room the message goes to (the lobby when the
    /// sender named none or did not ask for rooms); the sender is known to be a member.
    /// Client side: the `room` of a delivered message, if it carried a valid one.
    pub room: Option<RoomName>,
    /// Rooms extension, client side: the sender's session id (`from`) of a delivered
    /// message.
    pub from: Option<ByteStr>,
}

/// What a session reports to its driver.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The handshake completed.
    Established {
        /// The session's id.
        session_id: ByteStr,
        /// Features in force for this session.
        features: Features,
    },
    /// A message from the peer.
    Message(Message),
    /// Client side: the answer to our ping, with the round trip time.
    Pong {
        /// Time from sending the ping to receiving this pong.
        rtt: Duration,
    },
    /// The peer sent an `error` frame with this text.
    PeerError(ByteStr),
    /// Rooms. Server side: the peer joined this room (its membership is recorded); call
    /// [`ServerSession::confirm_join`] once the join is in effect everywhere, which sends
    /// the answer. Client side: the server's answer, the join is in effect.
    Joined(RoomName),
    /// Rooms. Server side: the peer left this room; the answer is already queued (the
    /// driver handles this event before it writes). Client side: the server's answer.
    Left(RoomName),
    /// Server side, rooms: a request was refused with an `error` frame naming why; the
    /// session stays open (an application refusal, not a protocol violation).
    Refused(RoomError),
    /// The session ended. Send what `poll_transmit` still holds, then close.
    Closed(CloseReason),
}

/// Why a message could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The session is closed or not yet established.
    #[error("session is not open")]
    NotOpen,
    /// Larger than one frame and the peer did not ask for chunks, or larger than the
    /// chunked-message limit.
    #[error("message of {len} bytes is larger than the {limit} bytes the peer accepts")]
    TooLarge {
        /// Message length.
        len: usize,
        /// What the peer accepts.
        limit: u64,
    },
    /// A room other than the lobby, and the server did not grant the rooms feature.
    #[error("the server did not grant the rooms feature")]
    NoRooms,
    /// The frame could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// The content of a `disconnect` frame, exactly as the reference writes it:
/// `{"message": "Disconnecting", "reason": R}`.
pub fn disconnect_content(reason: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(48 + reason.len());
    out.put_slice(b"{\"message\": \"Disconnecting\", \"reason\": ");
    header::write_json_str(&mut out, reason);
    out.put_u8(b'}');
    out.freeze()
}

/// The `reason` of a `disconnect` frame's content; the whole content as text when it
/// is not the expected JSON (a lenient reading: the session ends either way).
pub fn disconnect_reason(content: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        reason: Option<String>,
    }
    match serde_json::from_slice::<Body>(content) {
        Ok(Body { reason: Some(r) }) => r,
        _ => String::from_utf8_lossy(&content[..content.len().min(256)]).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disconnect_content_matches_the_reference() {
        // Content of the reference vector `disconnect_server_shutdown`.
        assert_eq!(
            &disconnect_content("Server shutting down")[..],
            br#"{"message": "Disconnecting", "reason": "Server shutting down"}"#
        );
        assert_eq!(
            disconnect_reason(&disconnect_content("Client disconnecting")),
            "Client disconnecting"
        );
        assert_eq!(disconnect_reason(b"not json"), "not json");
    }

    #[test]
    fn features_grant_only_what_is_offered() {
        let asked = [ByteStr::from("chunk"), ByteStr::from("telepathy")];
        assert!(Features::ALL.grant(&asked).chunk);
        assert!(!Features::NONE.grant(&asked).chunk);
        assert!(!Features::ALL.grant(&[]).chunk);
    }
}
