//! A per-core io_uring data ring beside monoio's (the choice and its measurements:
//! `bench-results/runtime.md`): a registered provided-buffer ring, multishot accept,
//! multishot buffer-select receive, vectored sends, explicit cancellation, and an eventfd
//! that wakes the core's monoio task when completions are ready. The server's sessions
//! and loadgen's `raw-server --engine ring` both run on it.
//!
//! monoio 0.2.4 keeps its ring private and has none of these operations, so this is
//! written on the `io-uring` crate. The rules that keep it sound:
//! * whatever an operation points to (a send's iovecs, header and `Bytes`) is owned by
//!   the ring until the operation's final completion, and handed back in it;
//! * a received buffer belongs to the caller ([`RingBuf`]) until it is given back with
//!   [`DataRing::recycle`]; the kernel does not touch it meanwhile;
//! * shutting down cancels every operation and waits for each final completion before
//!   the buffer memory is freed (and leaks it rather than free it if one never comes).

mod bufring;
mod ring;
mod sys;

pub use bufring::BufRing;
pub use ring::{advance, Completion, DataRing, RingBuf, RingConfig, RingStats, Token, MAX_IOV};
pub use sys::{build, eventfd, submit, Setup};
