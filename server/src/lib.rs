//! `sockchat-server`: a thread-per-core io_uring (monoio) server for the sockchat wire
//! protocol, a drop-in replacement for the Python reference server.
//!
//! * One monoio runtime per core, each on its own pinned thread; TCP listeners per core
//!   with `SO_REUSEPORT`, Unix listeners bound once and accepted from on every core.
//! * Each connection is one small task driving a sans-IO
//!   [`ServerSession`](sockchat_proto::ServerSession); idle sessions hold no read buffer
//!   (they wait for readability, then read into a per-core pooled buffer).
//! * Deadlines live in one ordered set per core, served by one timer task per core.
//! * What happens to messages is a [`Handler`]: [`Echo`] and [`Chat`] are built in.
//!
//! ```no_run
//! use sockchat_server::{Echo, Server, ServerConfig};
//! use sockchat_proto::Key;
//! use std::sync::Arc;
//!
//! let mut config = ServerConfig::new(Arc::new(Key::new(b"secret")), false);
//! config.tcp.push("127.0.0.1:9999".parse().unwrap());
//! let bound = Server::new(config, Echo).bind()?;
//! bound.run(|addrs| for a in addrs { println!("listening {a}") })?;
//! # Ok::<(), sockchat_server::ServerError>(())
//! ```

pub mod admin;
pub mod alloc;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod config_file;
pub mod handler;
pub mod listener;
pub mod memory_budget;
pub mod notify;
pub mod pool;
pub mod server;
pub mod shutdown;
pub mod stats;
pub mod timer;

mod chat;
mod conn;
mod data_ring;
mod direct_recv;
mod drain;
mod fanout;
mod peer_limits;
mod proxy_protocol;
mod rate_limit;
mod reload;
mod ring_accept;
mod rooms;
mod send;
mod worker;

pub use cluster::{BrokerState, ClusterConfig, ClusterStats};
pub use config::{ConfigError, Mode, ServerConfig};
pub use handler::{Chat, Delivery, Echo, Handler, Peer, SessionCtx, SessionInfo, Transport};
pub use listener::{ListenAddr, ListenError};
pub use server::{BoundServer, Phase, Server, ServerError, ShutdownHandle};
pub use stats::Snapshot;
