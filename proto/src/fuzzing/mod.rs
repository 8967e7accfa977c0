//! Fuzz target bodies (feature `fuzzing`), each taking the raw input as `&[u8]`.
//!
//! The cargo-fuzz crate (`fuzz/`) is built with its own flags and toolchain switches, so
//! nothing in CI would notice if its targets stopped compiling. Their bodies live here
//! instead, and the targets are one-line calls; the `fuzz_seeds` test runs each body over
//! seed inputs (`cargo test -p sockchat-proto --features fuzzing`), so CI compiles and
//! exercises them.

mod deframer;
mod session;

pub use deframer::deframer;
pub use session::session;
