//! A per-core io_uring data ring beside monoio's (the choice and its measurements:
//! `bench-results/runtime.md`): a registered provided-buffer ring, multishot accept,
//! multishot buffer-select receive, vectored sends, explicit cancellation, and an eventfd
//! that wakes the core's monoio task when completions are ready.
//!
//! monoio 0.2.4 keeps its ring private and has none of these operations, so this is
//! written on the `io-uring` crate. The rules that keep it sound:
//! * whatever an operation points to (a send's iovecs, header and `Bytes`) is owned by
//!   the ring until the operation's final completion, and handed back in it;
//! * a received buffer belongs to the caller ([`RingBuf`]) until it is given back with
//!   [`DataRing::recycle`]; the kernel does not touch it meanwhile;
//! * shutting down cancels every operation and waits for each final completion before
//!   the buffer memory is freed (and leaks it rather than free it if one never comes).
//!
//! Not wired into the server's sessions yet: see `bench-results/runtime.md`.

mod bufring;
mod ring;

pub use ring::{Completion, DataRing, RingBuf, RingConfig, RingStats, Token};
