//! `sockchat-os`: the operating-system pieces the sockchat binaries (server, client,
//! loadgen) and their tests share, kept out of `sockchat-proto`, which does no I/O.
//!
//! * [`key_file`]: reading the shared secrets from a file, with one set of rules for every
//!   binary (owner-only permissions, one key per line for rotation, not empty).
//! * [`fd_limit`]: raising the open-file soft limit to the hard one.
//! * [`stream`]: a server address and the blocking stream to it, over TCP or a Unix
//!   socket, for the client and tests.

pub mod fd_limit;
pub mod key_file;
pub mod stream;

pub use fd_limit::raise_nofile_limit;
pub use key_file::{read_key_file, read_key_ring, KeyFileError};
pub use stream::{Addr, Stream};
