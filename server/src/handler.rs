//! The extension point: a [`Handler`] decides what happens with sessions and their
//! messages, the Rust counterpart of the reference's handler base classes. [`Echo`] and
//! [`Chat`] are the two built in; `server/examples/custom_handler.rs` shows another.
//!
//! Handlers run on the core that owns the session, inside its event loop: they must not
//! block. Everything they do to sessions goes through [`SessionCtx`], which only queues
//! bytes; the server writes them.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use sockchat_proto::header::ByteStr;
use sockchat_proto::{CloseReason, Message, SendError};

use crate::conn::{ConnState, Proto};
use crate::worker::Worker;

/// How a session reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A TCP connection.
    Tcp,
    /// A Unix stream socket connection.
    Unix,
}

/// Who is on the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP peer's address.
    Tcp(SocketAddr),
    /// A Unix peer's credentials (`SO_PEERCRED`).
    Unix {
        /// Process id, when the kernel reports one.
        pid: Option<i32>,
        /// User id.
        uid: u32,
        /// Group id.
        gid: u32,
    },
    /// Not known (the lookup failed).
    Unknown,
}

/// What the server knows about one session. Lives on the session's core.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The session id (a UUIDv4, as the reference).
    pub id: ByteStr,
    /// TCP or Unix.
    pub transport: Transport,
    /// Peer address or credentials.
    pub peer: Peer,
    /// When the connection was accepted.
    pub connected_at: Instant,
    /// The core (runtime thread) that owns the session.
    pub core: usize,
    /// True for a line-mode session.
    pub line_mode: bool,
    /// Messages received.
    pub messages_in: u64,
    /// Messages queued to this session.
    pub messages_out: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
}

/// Reacts to sessions. One instance serves every core (hence `Send + Sync`); methods are
/// called on the session's own core and must not block.
pub trait Handler: Send + Sync + 'static {
    /// A session was established (framed: after the `session_ack`; line mode: at its
    /// first line).
    fn on_session_start(&self, session: &mut SessionCtx<'_>) {
        let _ = session;
    }

    /// A message arrived (whole: chunked messages are reassembled first).
    fn on_message(&self, session: &mut SessionCtx<'_>, message: Message);

    /// The session ended for `reason` (called once, after its last bytes were written
    /// or abandoned).
    fn on_session_end(&self, info: &SessionInfo, reason: &CloseReason) {
        let _ = (info, reason);
    }
}

/// What a handler can do with the session it was called for, and with the others.
#[derive(Debug)]
pub struct SessionCtx<'a> {
    pub(crate) core: &'a Worker,
    pub(crate) conn_id: u64,
    pub(crate) state: &'a mut ConnState,
}

/// Where a broadcast went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Sessions on this core it was queued to.
    pub local: usize,
    /// Other cores it was handed to (each delivers to all its sessions).
    pub cores: usize,
    /// Other cores that dropped it because their inbound queue was full.
    pub dropped_cores: usize,
}

impl SessionCtx<'_> {
    /// The session's details.
    pub fn info(&self) -> &SessionInfo {
        &self.state.info
    }

    /// True for a line-mode session.
    pub fn is_line_mode(&self) -> bool {
        matches!(self.state.proto, Proto::Line(_))
    }

    /// Sends a message to this session (framed: a `message` frame, or chunks if it asked
    /// for them; line mode: one line, if the content is UTF-8).
    pub fn reply(
        &mut self,
        content_type: Option<ByteStr>,
        content: Bytes,
    ) -> Result<(), SendError> {
        let r = self.state.proto.send_message(content_type, content);
        if r.is_ok() {
            self.state.info.messages_out += 1;
            self.core.count_message_out();
        }
        r
    }

    /// Sends `message` back to this session. A message that came in one frame goes back
    /// as the same verified bytes, without re-encoding.
    pub fn echo(&mut self, message: Message) -> Result<(), SendError> {
        let r = self.state.proto.echo(message);
        if r.is_ok() {
            self.state.info.messages_out += 1;
            self.core.count_message_out();
        }
        r
    }

    /// Sends a message to every other established session on every core. Sessions on
    /// this core get it at once; other cores get it through their bounded inbound queue.
    /// A recipient whose send queue passes `--send-queue-limit` is closed as a slow
    /// consumer.
    pub fn broadcast(&mut self, content_type: Option<ByteStr>, content: Bytes) -> Delivery {
        self.core.broadcast(self.conn_id, content_type, content)
    }

    /// Sends a message this session sent to the other members of its room (the room the
    /// session resolved: the lobby for reference clients), on every core and, when
    /// clustered, on every node. A message the cluster cannot carry is refused with an
    /// `error` frame naming the limit (the session stays open) and goes nowhere.
    pub fn send_to_room(&mut self, message: Message) -> Delivery {
        match self.core.send_to_room(self.conn_id, self.state, message) {
            Ok(d) => d,
            Err(e) => {
                match &mut self.state.proto {
                    Proto::Frame(s) => s.refuse(e),
                    Proto::Line(_) => {
                        // Line mode has no error frame to send: counted and logged.
                        tracing::debug!(session = %self.state.info.id, refusal = %e, "line message refused");
                        self.core.stats.count_room_refusal(&e);
                    }
                }
                Delivery::default()
            }
        }
    }

    /// Ends this session; the peer gets a `disconnect` naming `reason`.
    pub fn close(&mut self, reason: impl Into<String>) {
        self.state
            .proto
            .close(CloseReason::Application(reason.into()));
    }
}

/// Echo: each message goes back to its sender, with the sender's content type.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Handler for Echo {
    fn on_message(&self, session: &mut SessionCtx<'_>, message: Message) {
        if let Err(e) = session.echo(message) {
            tracing::debug!(session = %session.info().id, error = %e, "echo not sent");
        }
    }
}

/// Chat: each message goes to every other member of its room (the lobby unless the
/// session uses the rooms extension) on every core and every node, with the sender's
/// content type; the sender does not get its own message back.
#[derive(Debug, Clone, Copy, Default)]
pub struct Chat;

impl Handler for Chat {
    fn on_message(&self, session: &mut SessionCtx<'_>, message: Message) {
        session.send_to_room(message);
    }
}
