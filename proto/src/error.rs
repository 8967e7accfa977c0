//! Typed decode errors.
//!
//! Every way a frame can be refused has its own variant, so callers can count them and
//! answer the peer with an `error` frame whose text names the failure
//! ([`DecodeError::wire_message`]).

use thiserror::Error;

/// Why a frame was refused.
///
/// Variants follow the check order of the protocol: magic, version, lengths, header CRC,
/// content CRC, HMAC, JSON, type. None of them carries secret material, so the
/// [`Display`](std::fmt::Display) text is safe to send back to the peer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The first eight bytes are not the protocol magic.
    #[error("bad magic number")]
    BadMagic,
    /// The version field is not 1.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    /// `header_len` is above the configured limit.
    #[error("header too large: {len} bytes (limit {limit})")]
    HeaderTooLarge {
        /// Length announced by the peer.
        len: u32,
        /// Limit in force.
        limit: u32,
    },
    /// `content_len` is above the configured limit.
    #[error("content too large: {len} bytes (limit {limit})")]
    ContentTooLarge {
        /// Length announced by the peer.
        len: u64,
        /// Limit in force.
        limit: u64,
    },
    /// `content_len` is zero; the reference never sends an empty content.
    #[error("empty content")]
    EmptyContent,
    /// The header JSON does not match its CRC-32.
    #[error("header CRC mismatch")]
    HeaderCrcMismatch,
    /// The content does not match its CRC-32.
    #[error("content CRC mismatch")]
    ContentCrcMismatch,
    /// The HMAC does not verify with this side's key.
    #[error("HMAC verification failed")]
    HmacMismatch,
    /// The header is not a JSON object of the expected shape.
    #[error("invalid header JSON: {0}")]
    BadHeaderJson(String),
    /// The header's `type` is not one this implementation knows.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// The stream ended inside a frame.
    #[error("truncated frame: {missing} more bytes expected")]
    Truncated {
        /// Bytes still missing when the input ended.
        missing: usize,
    },
    /// Receiving this frame would reserve more than the deframer's allowance (see
    /// [`Deframer::set_allowance`](crate::Deframer::set_allowance)); nothing was
    /// reserved. Sessions report it as [`CloseReason::MemoryBudget`](crate::CloseReason).
    #[error("frame of {frame_len} bytes over the memory allowance")]
    OverAllowance {
        /// Length of the frame.
        frame_len: usize,
    },
}

impl DecodeError {
    /// A short, stable, machine-friendly name (matches the `error` names of the
    /// reference vectors), for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadMagic => "bad_magic",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::HeaderTooLarge { .. } => "header_too_large",
            Self::ContentTooLarge { .. } => "content_too_large",
            Self::EmptyContent => "empty_content",
            Self::HeaderCrcMismatch => "header_crc_mismatch",
            Self::ContentCrcMismatch => "content_crc_mismatch",
            Self::HmacMismatch => "hmac_mismatch",
            Self::BadHeaderJson(_) => "bad_header_json",
            Self::UnknownType(_) => "unknown_type",
            Self::Truncated { .. } => "truncated",
            Self::OverAllowance { .. } => "over_allowance",
        }
    }

    /// Text for an `error` frame sent to the peer. It never echoes more than a short,
    /// sanitised excerpt of what the peer sent.
    pub fn wire_message(&self) -> String {
        format!("Invalid frame: {self}")
    }
}
