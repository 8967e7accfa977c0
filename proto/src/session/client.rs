//! The client end of a session.

use std::sync::Arc;
use std::time::Instant;

use super::common::FramedCommon;
use super::reason::{Side, Violation};
use super::{disconnect_reason, CloseReason, Event, Features, Message, Session, SessionConfig};
use crate::codec::{Frame, Key};
use crate::deframer::Deframer;
use crate::frame::FrameType;
use crate::header::{ByteStr, Header, OCTET_STREAM};
use crate::keyring::KeyRing;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitInit {
        deadline: Instant,
    },
    /// Ack sent with `features`, followed by a ping: our server answers the ack first; a
    /// reference server ignores it and answers only the ping, which tells us it has none.
    AwaitFeatures {
        deadline: Instant,
    },
    Open,
}

/// What the server sent instead of a usable `session_init`, when a client's handshake
/// ended with [`CloseReason::HandshakeFailed`] (see [`ClientSession::handshake_fault`]).
///
/// The close reason, its label and the text the server is told are the same for all of
/// them; a driver that counts failures (a load generator) tells them apart with this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeFault {
    /// A frame of another type came first. Never [`FrameType::Error`]: an `error` is
    /// reported as [`Event::PeerError`] in any state and does not end the handshake.
    Unexpected(FrameType),
    /// `session_init` with a null `session_id`: there is no id to acknowledge.
    NoSessionId,
}

/// The client end of one session: answers `session_init`, optionally negotiates
/// features, pings every `heartbeat_interval`, measures pong round trips, sends and
/// receives messages (chunked when needed and granted). See the [module docs](super).
#[derive(Debug)]
pub struct ClientSession {
    pub(super) core: FramedCommon,
    state: State,
    last_seen: Instant,
    next_ping: Instant,
    ping_sent: Option<Instant>,
    fault: Option<HandshakeFault>,
}

impl ClientSession {
    /// A client waiting for the server's `session_init`. `config.features` are the
    /// features it will ask for.
    pub fn new(key: Arc<Key>, config: Arc<SessionConfig>, now: Instant) -> Self {
        let deadline = now + config.handshake_timeout;
        Self {
            core: FramedCommon::new(key, config, Side::Client),
            state: State::AwaitInit { deadline },
            last_seen: now,
            next_ping: now,
            ping_sent: None,
            fault: None,
        }
    }

    /// A new session holding several keys (a key rotation): the server's
    /// `session_init` may be signed with any of them, and the session then answers with,
    /// and only accepts, the key that verified it.
    pub fn with_keys(keys: Arc<KeyRing>, config: Arc<SessionConfig>, now: Instant) -> Self {
        let mut s = Self::new(keys.signing().clone(), config, now);
        s.core.set_ring(keys);
        s
    }

    /// The session id the server assigned, once `session_init` arrived.
    pub fn session_id(&self) -> Option<&ByteStr> {
        self.core.session_id.as_ref()
    }

    /// Features the server granted.
    pub fn features(&self) -> Features {
        self.core.features
    }

    /// Why the handshake failed, once the session closed with
    /// [`CloseReason::HandshakeFailed`]; `None` otherwise.
    pub fn handshake_fault(&self) -> Option<HandshakeFault> {
        self.fault
    }

    /// The receive buffer: append bytes read from the server, then call
    /// [`handle_input`](Session::handle_input).
    pub fn deframer_mut(&mut self) -> &mut Deframer {
        &mut self.core.deframer
    }

    /// Sends a heartbeat `ping` now and schedules the next one an interval later.
    pub fn ping(&mut self, now: Instant) {
        if self.core.closed || self.core.session_id.is_none() {
            return;
        }
        self.core
            .queue_control(FrameType::Heartbeat, OCTET_STREAM, b"ping");
        self.ping_sent = Some(now);
        self.next_ping = now + self.core.config.heartbeat_interval;
    }

    /// Ends the session with a `disconnect` carrying `reason` (the reference client says
    /// `Client disconnecting`).
    pub fn disconnect(&mut self, reason: &str) {
        self.core.close(CloseReason::ClientDisconnect {
            reason: reason.to_owned(),
        });
    }

    fn establish(&mut self, features: Features, now: Instant) {
        self.state = State::Open;
        self.core.features = features;
        self.next_ping = now + self.core.config.heartbeat_interval;
        let session_id = self.core.session_id.clone().expect("set by session_init");
        self.core.events.push_back(Event::Established {
            session_id,
            features,
        });
    }

    fn on_frame(&mut self, frame: Frame, now: Instant) {
        let kind = frame.header.kind;
        if kind == FrameType::Error {
            // The reference sends some errors with a null session id: report them all.
            let text = String::from_utf8_lossy(&frame.content).into_owned();
            self.core
                .events
                .push_back(Event::PeerError(ByteStr::from(text)));
            return;
        }
        match self.state {
            State::AwaitInit { .. } => self.on_init(frame, now),
            _ if frame.header.session_id.as_ref() != self.core.session_id.as_ref() => {
                self.core.close(CloseReason::ForeignSessionId);
            }
            State::AwaitFeatures { .. } => match kind {
                FrameType::SessionAck => {
                    let granted = self
                        .core
                        .config
                        .features
                        .grant(frame.header.features.as_deref().unwrap_or(&[]));
                    self.establish(granted, now);
                }
                _ => {
                    // A server without the extension: carry on without features and
                    // handle this frame (most likely the pong) normally.
                    self.establish(Features::NONE, now);
                    self.on_open_frame(frame, now);
                }
            },
            State::Open => self.on_open_frame(frame, now),
        }
    }

    fn on_init(&mut self, frame: Frame, now: Instant) {
        let id = match (frame.header.kind, frame.header.session_id) {
            (FrameType::SessionInit, Some(id)) => id,
            (FrameType::SessionInit, None) => {
                return self.fail_handshake(HandshakeFault::NoSessionId)
            }
            (kind, _) => return self.fail_handshake(HandshakeFault::Unexpected(kind)),
        };
        self.core.session_id = Some(id.clone());
        let mut ack = Header::new(FrameType::SessionAck, Some(OCTET_STREAM), Some(id));
        let wanted = self.core.config.features;
        if wanted.is_empty() {
            self.core.queue_control_with(ack, b"Session acknowledged");
            self.establish(Features::NONE, now);
        } else {
            ack.features = Some(wanted.names());
            self.core.queue_control_with(ack, b"Session acknowledged");
            self.ping(now);
            self.state = State::AwaitFeatures {
                deadline: now + self.core.config.handshake_timeout,
            };
        }
    }

    fn fail_handshake(&mut self, fault: HandshakeFault) {
        self.fault = Some(fault);
        self.core.close(CloseReason::HandshakeFailed);
    }

    fn on_open_frame(&mut self, frame: Frame, now: Instant) {
        match frame.header.kind {
            FrameType::Message => {
                let (room, from) = super::rooms::delivered_tags(&frame.header);
                let message = Message {
                    content_type: frame.header.content_type,
                    content: frame.content,
                    frame: Some(frame.raw),
                    chunks: None,
                    room,
                    from,
                };
                self.core.events.push_back(Event::Message(message));
            }
            FrameType::Heartbeat => {
                if &frame.content[..] == b"pong" {
                    if let Some(sent) = self.ping_sent.take() {
                        self.core.events.push_back(Event::Pong {
                            rtt: now.saturating_duration_since(sent),
                        });
                    }
                }
            }
            FrameType::Chunk => {
                if let Some(mut m) = self.core.on_chunk(&frame, now, false) {
                    (m.room, m.from) = super::rooms::delivered_tags(&frame.header);
                    self.core.events.push_back(Event::Message(m));
                }
            }
            FrameType::Join | FrameType::Leave => self.on_room_answer(&frame),
            FrameType::Disconnect => {
                let reason = disconnect_reason(&frame.content);
                let reason = if reason == "Server shutting down" {
                    CloseReason::ServerShutdown
                } else {
                    CloseReason::ServerDisconnect { reason }
                };
                // The server is going away: no answer.
                self.core.close_quietly(reason);
            }
            // A repeated ack (e.g. a features answer after we gave up waiting) is harmless.
            FrameType::SessionAck => {}
            FrameType::SessionInit => {
                self.core
                    .close(CloseReason::ProtocolViolation(Violation::InitInOpenSession));
            }
            // Reported in `on_frame` before the state dispatch.
            FrameType::Error => {}
        }
    }
}
impl Session for ClientSession {
    super::common::framed_session_methods!();

    fn handle_timeout(&mut self, now: Instant) {
        if self.core.closed {
            return;
        }
        match self.state {
            State::AwaitInit { deadline } | State::AwaitFeatures { deadline } => {
                if now >= deadline {
                    self.core.close(CloseReason::HandshakeTimeout);
                }
            }
            State::Open => {
                if now >= self.last_seen + self.core.config.session_timeout {
                    self.core.close(CloseReason::SessionTimeout);
                } else if now >= self.next_ping {
                    self.ping(now);
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.core.closed {
            return None;
        }
        Some(match self.state {
            State::AwaitInit { deadline } | State::AwaitFeatures { deadline } => deadline,
            State::Open => self
                .next_ping
                .min(self.last_seen + self.core.config.session_timeout),
        })
    }
}
