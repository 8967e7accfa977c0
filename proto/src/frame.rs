//! The fixed 64-byte frame header, message types and limits.

use crate::error::DecodeError;

/// The eight magic bytes every frame starts with.
pub const MAGIC: [u8; 8] = [0x89, 0x50, 0x4E, 0x47, 0x0E, 0x0B, 0x1B, 0x0B];
/// The only protocol version this crate speaks.
pub const VERSION: u16 = 1;
/// Size of the fixed binary header.
pub const FIXED_HEADER_LEN: usize = 64;
/// Protocol maximum for the header JSON.
pub const MAX_HEADER_LEN: u32 = 65_536;
/// Protocol maximum for one frame's content (10 MiB).
pub const MAX_CONTENT_LEN: u64 = 10 * 1024 * 1024;
/// Length of the HMAC-SHA256 tag.
pub const MAC_LEN: usize = 32;

/// Size limits enforced by a decoder, checked from the fixed header before any memory
/// is reserved. They can only be lowered below the protocol maxima.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_header_len: u32,
    max_content_len: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_len: MAX_HEADER_LEN,
            max_content_len: MAX_CONTENT_LEN,
        }
    }
}

impl Limits {
    /// Limits with the given maxima, each clamped to the protocol maximum.
    pub fn new(max_header_len: u32, max_content_len: u64) -> Self {
        Self {
            max_header_len: max_header_len.min(MAX_HEADER_LEN),
            max_content_len: max_content_len.min(MAX_CONTENT_LEN),
        }
    }

    /// Largest accepted header JSON.
    pub fn max_header_len(&self) -> u32 {
        self.max_header_len
    }

    /// Largest accepted frame content.
    pub fn max_content_len(&self) -> u64 {
        self.max_content_len
    }

    /// Largest whole frame these limits admit.
    pub fn max_frame_len(&self) -> usize {
        FIXED_HEADER_LEN + self.max_header_len as usize + self.max_content_len as usize
    }
}

/// The message type named in the header JSON's `type` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameType {
    /// Server → client: the first frame, carrying the new session id.
    SessionInit,
    /// Client → server: acknowledges `session_init` (and may ask for features); the
    /// server answers an ack that asked for features with an ack listing those granted.
    SessionAck,
    /// `ping` / `pong`.
    Heartbeat,
    /// Application payload.
    Message,
    /// Extension: one piece of a chunked message.
    Chunk,
    /// Text describing an error.
    Error,
    /// End of session, with a JSON reason.
    Disconnect,
    /// Rooms extension: join the room named in `room` (and the content); the server's
    /// answer is a `join` frame naming the same room.
    Join,
    /// Rooms extension: leave a room; answered like `join`.
    Leave,
}

impl FrameType {
    /// All types, in wire-name order.
    pub const ALL: [FrameType; 9] = [
        Self::SessionInit,
        Self::SessionAck,
        Self::Heartbeat,
        Self::Message,
        Self::Chunk,
        Self::Error,
        Self::Disconnect,
        Self::Join,
        Self::Leave,
    ];

    /// The name used in the header JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionInit => "session_init",
            Self::SessionAck => "session_ack",
            Self::Heartbeat => "heartbeat",
            Self::Message => "message",
            Self::Chunk => "chunk",
            Self::Error => "error",
            Self::Disconnect => "disconnect",
            Self::Join => "join",
            Self::Leave => "leave",
        }
    }

    /// Parses a wire name.
    pub fn from_wire(name: &str) -> Option<Self> {
        Self::from_wire_bytes(name.as_bytes())
    }

    /// Parses a wire name given as bytes (no UTF-8 check needed: names are ASCII).
    pub fn from_wire_bytes(name: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().as_bytes() == name)
    }
}

impl std::fmt::Display for FrameType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The decoded fixed header (`!8sHHIIQI32s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// Always 0 in version 1; kept so a re-encode is exact.
    pub msg_type: u16,
    /// Length of the header JSON.
    pub header_len: u32,
    /// CRC-32 of the header JSON.
    pub header_crc: u32,
    /// Length of the content.
    pub content_len: u64,
    /// CRC-32 of the content.
    pub content_crc: u32,
    /// HMAC-SHA256 over header JSON and content.
    pub mac: [u8; MAC_LEN],
}

impl FixedHeader {
    /// Parses and checks the fixed header: magic, version, then both lengths against
    /// `limits`. Returns `Ok(None)` when fewer than 64 bytes are available, unless the
    /// bytes present already prove the frame invalid (a wrong magic is reported as soon
    /// as its first differing byte is seen, so garbage is refused without waiting).
    pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<Self>, DecodeError> {
        let seen = buf.len().min(MAGIC.len());
        if buf[..seen] != MAGIC[..seen] {
            return Err(DecodeError::BadMagic);
        }
        if buf.len() < FIXED_HEADER_LEN {
            return Ok(None);
        }
        let version = u16::from_be_bytes([buf[8], buf[9]]);
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let be32 = |at: usize| u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
        let header_len = be32(12);
        let content_len = u64::from_be_bytes(buf[20..28].try_into().expect("8 bytes"));
        if header_len > limits.max_header_len {
            return Err(DecodeError::HeaderTooLarge {
                len: header_len,
                limit: limits.max_header_len,
            });
        }
        if content_len > limits.max_content_len {
            return Err(DecodeError::ContentTooLarge {
                len: content_len,
                limit: limits.max_content_len,
            });
        }
        if content_len == 0 {
            return Err(DecodeError::EmptyContent);
        }
        Ok(Some(Self {
            msg_type: u16::from_be_bytes([buf[10], buf[11]]),
            header_len,
            header_crc: be32(16),
            content_len,
            content_crc: be32(28),
            mac: buf[32..64].try_into().expect("32 bytes"),
        }))
    }

    /// Length of the whole frame this header announces. Limits were checked in
    /// [`parse`](Self::parse), so this cannot overflow.
    pub fn frame_len(&self) -> usize {
        FIXED_HEADER_LEN + self.header_len as usize + self.content_len as usize
    }

    /// Writes the 64 bytes of this header.
    pub fn write(&self, out: &mut [u8; FIXED_HEADER_LEN]) {
        out[..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&VERSION.to_be_bytes());
        out[10..12].copy_from_slice(&self.msg_type.to_be_bytes());
        out[12..16].copy_from_slice(&self.header_len.to_be_bytes());
        out[16..20].copy_from_slice(&self.header_crc.to_be_bytes());
        out[20..28].copy_from_slice(&self.content_len.to_be_bytes());
        out[28..32].copy_from_slice(&self.content_crc.to_be_bytes());
        out[32..64].copy_from_slice(&self.mac);
    }
}
