//! `sockchat-client`: a blocking client library for the sockchat protocol, and the
//! `sockchat-client` CLI built on it (interactive, file and send modes).
//!
//! The library is the Rust counterpart of the reference's `BaseAsyncClient`: connect
//! over TCP or a Unix socket ([`Client::connect`]), [`send`](Client::send) messages, take
//! [`next_event`](Client::next_event)s, and [`disconnect`](Client::disconnect). The
//! protocol itself (frames, handshake, heartbeats, chunking) lives in the sans-IO
//! [`sockchat_proto::ClientSession`]; this crate only moves its bytes.
//!
//! # Why blocking sockets and two threads
//!
//! A CLI client holds one connection, so an async runtime would buy nothing but
//! weight. Each [`Client`] uses plain `std` sockets and two threads:
//!
//! * the **reader** reads with a timeout equal to the session's next timer
//!   (`poll_timeout`), so the same loop feeds received bytes and fires heartbeats and
//!   the silence timeout, with no timer thread;
//! * the **writer** writes what the session queued. Reading and writing on separate
//!   threads means a large send (a 20 MiB file) never stops the client from draining
//!   the server's echoes: a single blocking thread writing while the server's replies
//!   fill both socket buffers would deadlock.
//!
//! The session sits behind one mutex; every change to it hands the resulting bytes to
//! the writer and the resulting events to the application's channel under that lock,
//! so both keep the session's order.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use sockchat_client::{Addr, Client, ClientOptions, Event};
//!
//! let client = Client::connect(&Addr::default(), &ClientOptions::default())?;
//! client.send("text/plain; charset=utf-8", "hello".into())?;
//! while let Some(event) = client.next_event(Duration::from_secs(5))? {
//!     if let Event::Message(m) = event {
//!         println!("{}", m.display());
//!         break;
//!     }
//! }
//! client.disconnect("Client disconnecting")?;
//! # Ok::<(), sockchat_client::ClientError>(())
//! ```

mod client;
pub mod retry;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

pub use client::{Client, ClientOptions};
pub use retry::{connect_with_retry, is_retryable, Backoff};
pub use sockchat_os::stream::{Addr, Stream, DEFAULT_TCP};
pub use sockchat_proto::{CloseReason, Key, KeyRing};

/// The content type of typed and file-mode lines, as the reference client sends them.
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// The reason the reference client gives when it leaves.
pub const CLIENT_DISCONNECTING: &str = "Client disconnecting";

/// What can go wrong with a [`Client`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket could not be connected.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where we tried.
        addr: Addr,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Connected, but the handshake did not complete.
    #[error("handshake failed: {}{}", reason.wire_reason(), peer_error.as_ref().map(|e| format!(" (server said: {e})")).unwrap_or_default())]
    Handshake {
        /// How the session ended.
        reason: CloseReason,
        /// An `error` frame the server sent first, e.g. `Server full`.
        peer_error: Option<String>,
    },
    /// The session has ended.
    #[error("session closed: {}", .0.wire_reason())]
    Closed(CloseReason),
    /// The message cannot be sent (too large for this server, or empty).
    #[error(transparent)]
    Send(#[from] sockchat_proto::SendError),
    /// A room name that breaks the naming rule.
    #[error(transparent)]
    Room(#[from] sockchat_proto::RoomError),
    /// A socket operation failed.
    #[error("I/O error: {0}")]
    Io(#[source] std::io::Error),
}

/// A message from the server, reassembled if it came in chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The `content_type` the sender gave.
    pub content_type: Option<String>,
    /// The content.
    pub content: Bytes,
    /// Rooms extension: the room it was sent to (`None` from a server without rooms).
    pub room: Option<String>,
    /// Rooms extension: the sender's session id.
    pub from: Option<String>,
}

impl Message {
    pub(crate) fn from_proto(m: sockchat_proto::Message) -> Self {
        Self {
            content_type: m.content_type.map(|c| c.as_str().to_owned()),
            content: m.content,
            room: m.room.map(|r| r.as_str().to_owned()),
            from: m.from.map(|f| f.as_str().to_owned()),
        }
    }

    /// The content as text, when it is meant and valid as text: valid UTF-8 with a
    /// `text/*` or JSON content type (or none, as a lenient reading of old peers).
    pub fn text(&self) -> Option<&str> {
        let texty = match self.content_type.as_deref() {
            None => true,
            Some(ct) => {
                let ct = ct.trim().to_ascii_lowercase();
                ct.starts_with("text/") || ct.contains("json")
            }
        };
        texty.then(|| std::str::from_utf8(&self.content).ok())?
    }

    /// How a person should see it: the text itself, or a one-line summary such as
    /// `[binary: image/jpeg, 16 bytes]` (raw bytes would garble a terminal).
    pub fn display(&self) -> Display<'_> {
        Display(self)
    }
}

/// See [`Message::display`].
#[derive(Debug)]
pub struct Display<'a>(&'a Message);

impl fmt::Display for Display<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.text() {
            Some(t) => f.write_str(t),
            None => write!(
                f,
                "[binary: {}, {} bytes]",
                self.0
                    .content_type
                    .as_deref()
                    .unwrap_or("application/octet-stream"),
                self.0.content.len()
            ),
        }
    }
}

/// What a [`Client`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message from the server (the echo, with the echo server).
    Message(Message),
    /// The answer to a heartbeat, with its round trip time.
    Pong {
        /// Time from ping to pong.
        rtt: Duration,
    },
    /// The server sent an `error` frame with this text (a refused room request leaves
    /// the session open).
    PeerError(String),
    /// Rooms: the server confirmed the join of this room.
    Joined(String),
    /// Rooms: the server confirmed leaving this room.
    Left(String),
    /// The session ended: by the server (`ServerShutdown` is `Server shutting down`),
    /// by a transport failure, a timeout, or our own `disconnect`.
    Closed(CloseReason),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ct: Option<&str>, content: &'static [u8]) -> Message {
        Message {
            content_type: ct.map(str::to_owned),
            content: Bytes::from_static(content),
            room: None,
            from: None,
        }
    }

    #[test]
    fn text_prints_as_text_and_binary_as_a_summary() {
        assert_eq!(msg(Some(TEXT_PLAIN), b"hi").display().to_string(), "hi");
        assert_eq!(
            msg(Some("application/json"), b"{}").display().to_string(),
            "{}"
        );
        assert_eq!(msg(None, b"plain").display().to_string(), "plain");
        assert_eq!(
            msg(Some("image/jpeg"), b"\xff\xd8\xff\xe0abcdefghijkl")
                .display()
                .to_string(),
            "[binary: image/jpeg, 16 bytes]"
        );
        // Text type but not UTF-8: still a summary.
        assert_eq!(
            msg(Some("text/plain"), b"\xff\xfe").display().to_string(),
            "[binary: text/plain, 2 bytes]"
        );
        assert_eq!(
            msg(None, b"\xff").display().to_string(),
            "[binary: application/octet-stream, 1 bytes]"
        );
    }
}
