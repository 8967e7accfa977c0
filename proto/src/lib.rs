//! `sockchat-proto`: the sockchat wire protocol without I/O.
//!
//! This crate encodes and decodes frames of the protocol spoken by the Python "Async
//! Socket Chat" reference (a 64-byte binary header with CRC-32 and HMAC-SHA256, a JSON
//! header, then the content), byte for byte, and drives sessions as state machines fed
//! with bytes and the current time. It performs no I/O and never reads a clock: the
//! caller passes `now` in, which is what makes sessions testable on a simulated clock.
//!
//! * [`frame`]: the fixed header, message types, limits.
//! * [`header`]: the header JSON, parsed zero-copy and written exactly as Python's
//!   `json.dumps` does.
//! * [`codec`]: keys, encoding (into a buffer or as parts for a vectored write),
//!   verification.
//! * [`deframer`]: the streaming deframer with "need more bytes" vs "invalid".
//! * [`chunk`]: the chunk extension (splitter and reassembler).
//! * [`rooms`]: the rooms extension (room names, memberships, refusals).
//! * [`session`]: the [`Session`] driving interface, `ServerSession`, `ClientSession`,
//!   `LineSession`, and the `CloseReason` enum.
//! * [`line`](mod@line): the opt-in line mode codec.
//! * `fuzzing` (feature `fuzzing`): the fuzz targets' bodies.
//! * [`keyring`]: several keys at once, for key rotation.
//! * [`rate`]: the per-session message rate rule.

#![warn(missing_docs)]

pub mod chunk;
pub mod codec;
pub mod deframer;
pub mod error;
pub mod frame;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod header;
pub mod keyring;
pub mod line;
pub mod rate;
pub mod rooms;
pub mod session;

pub use chunk::{
    split, ChunkError, ChunkFrames, ChunkLimits, MessageBuffers, Reassembled, Reassembler,
};
pub use codec::{
    decode_frame, encode_into, encode_parts, encode_unchecked, EncodeError, EncodedFrame, Frame,
    Key,
};
pub use deframer::{Decoded, Deframer};
pub use error::DecodeError;
pub use frame::{FixedHeader, FrameType, Limits};
pub use header::{ByteStr, ChunkInfo, Header};
pub use keyring::{EmptyKeyRing, KeyRing};
pub use line::{Line, LineCodec, LineError};
pub use rate::TokenBucket;
pub use rooms::{Membership, RoomError, RoomName};
pub use session::{
    ClientSession, CloseReason, DeliveryTemplate, Event, Features, LineSession, Message, SendError,
    ServerSession, Session, SessionConfig, Violation,
};
