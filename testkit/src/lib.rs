//! `sockchat-testkit`: what the sockchat crates' tests share, written once.
//!
//! * [`admin`]: the server's admin endpoint over HTTP, and `/metrics` parsed by the
//!   reference Prometheus parser.
//! * [`notify_socket`]: a `NOTIFY_SOCKET` listener, as systemd's, for sd_notify.
//! * [`proxy_header`]: PROXY protocol v1 and v2 headers to send ahead of frames.
//! * [`pair`]: a client and a server session wired together in memory on a simulated
//!   clock, for session rules without sockets.
//! * [`server`]: start the real `sockchat-server` binary in its own temp dir, wait for
//!   `ready`, stop it by PID; find or build the binary from another crate's tests.
//! * [`transport`]: TCP or Unix, and [`per_transport!`] to run a case over each.
//! * [`client`] and [`line_client`]: blocking clients that speak frames or lines, every
//!   read bounded by a deadline.
//! * [`frames`]: frames to send, valid (the encoder) and deliberately broken (any header
//!   JSON with correct CRCs and HMAC, chunk frames with any numbers), and the reference
//!   vectors.
//! * [`echo_double`]: an in-test echo server on the proto crate's `ServerSession`, for
//!   the client's tests, that can drop a connection, inject a message or restart.
//! * [`hostile`]: the hostile-client arena: a bystander session doing round trips on the
//!   same core while an offender works, and the server's counters at exit.
//! * [`rooms`]: the rooms extension from a test's side (join, leave, room messages and
//!   deliveries, refusals).
//! * [`nats`]: a real NATS broker (`nats-server`) on a free loopback port, for the
//!   cluster tests.
//! * [`process`] and [`pty`]: a CLI under test, run with a time limit, in the background,
//!   or on a pseudo-terminal.
//! * [`procfs`]: a process's memory and descriptors from `/proc`, a peer's unread bytes,
//!   and bounded waits on a condition.
//!
//! Every wait is bounded by a deadline, and every child process is stopped by its PID.

#![warn(missing_docs)]

pub mod admin;
pub mod client;
pub mod echo_double;
pub mod frames;
pub mod hostile;
pub mod line_client;
pub mod nats;
pub mod notify_socket;
pub mod pair;
pub mod process;
pub mod procfs;
pub mod proxy_header;
pub mod pty;
pub mod rooms;
pub mod server;
pub mod timing;
pub mod transport;

use std::time::Duration;

pub use client::{Client, Outcome, ReadError};
pub use frames::*;
pub use hostile::{
    parse_totals, Arena, Bystander, BystanderReport, Totals, ARENA_SLACK, BYSTANDER_MAX_LATENCY,
};
pub use line_client::LineClient;
pub use notify_socket::NotifySocket;
pub use procfs::{peer_has_read_all, proc_fds, proc_hwm, proc_rss, wait_peer_read_all, wait_until};
pub use server::{key_file_dir, server_binary, write_key_file, Memory, Server, ServerBuilder};
pub use sockchat_os::Stream;
pub use transport::{is_closed_error, Transport, TRANSPORTS};

/// Deadline for small request/response exchanges (generous: shared, noisy 2-core VM,
/// debug build).
pub const SHORT: Duration = Duration::from_secs(10);
/// Deadline for exchanges moving tens of MiB through a debug build.
pub const LONG: Duration = Duration::from_secs(120);
/// How long the server may take to print `ready`.
pub const STARTUP: Duration = Duration::from_secs(20);
/// How long the server may take to exit after SIGTERM.
pub const EXIT: Duration = Duration::from_secs(30);
