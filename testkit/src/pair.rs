//! The in-memory pair harness: a `ClientSession` and a `ServerSession` wired together on
//! a simulated clock, bytes delivered both ways until both are quiet. It is how session
//! rules are tested without sockets or time passing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sockchat_proto::header::ByteStr;
use sockchat_proto::session::Message;
use sockchat_proto::session::Session;
use sockchat_proto::{ClientSession, CloseReason, Event, Key, ServerSession, SessionConfig};

/// The server session's id.
pub const SESSION_ID: &str = "3f2b8c1e-6d4a-4e8b-9c71-2a5d0e9f1b34";

/// A client and a server session wired together in memory. Every instant is simulated:
/// the clock is read once, in [`Pair::new`], and only [`Pair::advance`] moves it.
#[derive(Debug)]
pub struct Pair {
    /// The simulated clock.
    pub now: Instant,
    /// The server side, with session id [`SESSION_ID`].
    pub server: ServerSession,
    /// The client side.
    pub client: ClientSession,
    /// Events the server reported, in order.
    pub server_events: Vec<Event>,
    /// Events the client reported, in order.
    pub client_events: Vec<Event>,
    /// Bytes written by the client, kept so tests can inspect or tamper with them.
    pub wire_to_server: Vec<Bytes>,
}

impl Pair {
    /// Both sessions at their start (nothing exchanged yet).
    pub fn new(server_cfg: SessionConfig, client_cfg: SessionConfig) -> Self {
        let key = Arc::new(Key::reference_default());
        let now = Instant::now(); // the only clock read: every later instant is simulated
        Self {
            now,
            server: ServerSession::new(
                ByteStr::from(SESSION_ID),
                key.clone(),
                Arc::new(server_cfg),
                now,
            ),
            client: ClientSession::new(key, Arc::new(client_cfg), now),
            server_events: Vec::new(),
            client_events: Vec::new(),
            wire_to_server: Vec::new(),
        }
    }

    /// A pair with default configurations, handshake done, events cleared.
    pub fn established() -> Self {
        let mut p = Self::new(SessionConfig::default(), SessionConfig::default());
        p.pump();
        assert!(p.server.is_established() && p.client.is_established());
        p.server_events.clear();
        p.client_events.clear();
        p
    }

    /// Delivers bytes both ways until neither side has anything to send.
    pub fn pump(&mut self) {
        for _ in 0..100 {
            let mut out = Vec::new();
            self.server.poll_transmit(&mut out);
            let to_client = !out.is_empty();
            for b in out.drain(..) {
                self.client.deframer_mut().extend_from_slice(&b);
            }
            self.client.handle_input(self.now);
            self.client.poll_transmit(&mut out);
            let to_server = !out.is_empty();
            for b in out.drain(..) {
                self.server.deframer_mut().extend_from_slice(&b);
                self.wire_to_server.push(b);
            }
            self.server.handle_input(self.now);
            self.drain_events();
            if !to_client && !to_server {
                return;
            }
        }
        panic!("sessions kept talking for 100 rounds");
    }

    /// Moves both sides' pending events into `server_events` / `client_events`.
    pub fn drain_events(&mut self) {
        while let Some(e) = self.server.poll_event() {
            self.server_events.push(e);
        }
        while let Some(e) = self.client.poll_event() {
            self.client_events.push(e);
        }
    }

    /// Advances the simulated clock, firing both sides' timers in order.
    pub fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            let next = [self.server.poll_timeout(), self.client.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.server.handle_timeout(self.now);
                    self.client.handle_timeout(self.now);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = end;
        self.pump();
    }

    /// Feeds raw bytes to the server as if the client had sent them.
    pub fn inject_to_server(&mut self, bytes: &[u8]) {
        self.server.deframer_mut().extend_from_slice(bytes);
        self.server.handle_input(self.now);
        self.pump();
    }
}

/// What `pick` takes from each of `events` it applies to, in order.
pub fn picked<T>(events: &[Event], pick: impl FnMut(&Event) -> Option<T>) -> Vec<T> {
    events.iter().filter_map(pick).collect()
}

/// The close reasons among `events`.
pub fn closed(events: &[Event]) -> Vec<CloseReason> {
    picked(events, |e| match e {
        Event::Closed(r) => Some(r.clone()),
        _ => None,
    })
}

/// The messages among `events`, whole.
pub fn message_events(events: &[Event]) -> Vec<Message> {
    picked(events, |e| match e {
        Event::Message(m) => Some(m.clone()),
        _ => None,
    })
}

/// The contents of the messages among `events`.
pub fn messages(events: &[Event]) -> Vec<Bytes> {
    message_events(events)
        .into_iter()
        .map(|m| m.content)
        .collect()
}

impl Pair {
    /// Advances the clock for the server only, firing its timers, and delivers what it
    /// sends (the client's own timers do not run).
    pub fn advance_server_only(&mut self, by: Duration) {
        self.now += by;
        self.server.handle_timeout(self.now);
        let mut out = Vec::new();
        self.server.poll_transmit(&mut out);
        for b in out {
            self.client.deframer_mut().extend_from_slice(&b);
        }
        self.client.handle_input(self.now);
        self.drain_events();
    }
}
