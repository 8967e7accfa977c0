//! [`Session`]: the one interface every session state machine is driven through.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{CloseReason, Event, Message, SendError};
use crate::header::ByteStr;

/// How a driver (a server connection task, a client loop, an in-memory test pair) runs a
/// session, whatever its role or wire format: [`ServerSession`](super::ServerSession),
/// [`ClientSession`](super::ClientSession) and [`LineSession`](super::LineSession) all
/// implement it, so a driver holding either kind of server session can forward through
/// `&mut dyn Session` instead of restating every method.
///
/// The loop, as in quinn-proto:
/// 1. append bytes read from the peer to the receive buffer
///    ([`take_buffer`](Self::take_buffer) / [`put_buffer`](Self::put_buffer), or a
///    framed session's `deframer_mut()`), then call [`handle_input`](Session::handle_input);
///    at end of input call [`handle_eof`](Self::handle_eof);
/// 2. when the clock reaches [`poll_timeout`](Self::poll_timeout), call
///    [`handle_timeout`](Self::handle_timeout);
/// 3. after any call above (and after [`send_message`](Self::send_message) or
///    [`close`](Self::close)), drain [`poll_event`](Self::poll_event) and
///    [`poll_transmit`](Session::poll_transmit), and re-read `poll_timeout`.
///
/// Nothing here reads a clock: every `now` is the caller's, so a pair can run on a
/// simulated clock.
pub trait Session: std::fmt::Debug {
    /// True from [`Event::Established`] until the session closes: only then are
    /// messages accepted by [`send_message`](Self::send_message).
    fn is_established(&self) -> bool;

    /// True once the session has ended (an [`Event::Closed`] was emitted). A closed
    /// session ignores input and timeouts; what `poll_transmit` still holds (its goodbye)
    /// should be written before the transport is closed.
    fn is_closed(&self) -> bool;

    /// Processes every complete frame (or line) buffered. Events pile up until drained
    /// with [`poll_event`](Self::poll_event).
    fn handle_input(&mut self, now: Instant);

    /// Like [`handle_input`](Session::handle_input), but stops after the first frame (or
    /// line) that produced an [`Event`] and returns true: more input may be buffered, so
    /// call it again after draining the events. Returns false once every buffered
    /// frame was handled. A driver that answers messages as they come keeps its replies
    /// in the order of the requests this way (an echo before the `pong` of a ping sent
    /// after the message).
    #[must_use = "true means input may remain: drain events and call again"]
    fn handle_input_until_event(&mut self, now: Instant) -> bool;

    /// The peer closed its side (a read returned 0): ends the session as
    /// [`CloseReason::PeerClosed`], or as an invalid frame if one was cut short.
    fn handle_eof(&mut self);

    /// Fires whatever timer is due at `now`: the handshake or silence timeout (closing
    /// the session), or a client's heartbeat. Calling it early does nothing, so a driver
    /// may call it on any wake-up.
    fn handle_timeout(&mut self, now: Instant);

    /// When [`handle_timeout`](Self::handle_timeout) must next be called: call it once
    /// `now >= ` the returned instant. `None` means no timer is armed (the session is
    /// closed). The value may change after any call that takes `&mut self`
    /// (input, a timeout, a send, a close), so read it again after each of them rather
    /// than caching it.
    #[must_use = "a timer that is never armed never fires"]
    fn poll_timeout(&self) -> Option<Instant>;

    /// The next event, oldest first; `None` when there is none left.
    #[must_use = "events carry messages and the close reason"]
    fn poll_event(&mut self) -> Option<Event>;

    /// Moves all bytes ready to be written, in order, to `out` (appended after what `out`
    /// holds). The session keeps no copy: what the caller fails to write is lost.
    fn poll_transmit(&mut self, out: &mut Vec<Bytes>);

    /// Bytes queued for the peer and not yet taken by
    /// [`poll_transmit`](Session::poll_transmit): what a driver compares to its send queue
    /// limit.
    #[must_use]
    fn queued_bytes(&self) -> usize;

    /// Queues an application message for the peer. Framed sessions send one frame, or
    /// chunks when it is larger than a frame and the peer asked for them; a line session
    /// sends one line (content that is not UTF-8 has no line form and is skipped).
    fn send_message(
        &mut self,
        content_type: Option<ByteStr>,
        content: Bytes,
    ) -> Result<(), SendError>;

    /// Sends a message received on this session back to its sender. Sessions that can
    /// reuse the received bytes (a framed server session) do so; the default re-sends it
    /// through [`send_message`](Self::send_message).
    fn echo(&mut self, message: Message) -> Result<(), SendError> {
        self.send_message(message.content_type, message.content)
    }

    /// Ends the session for `reason`; the peer is told as
    /// [`CloseReason::notice`] says (after what is already queued), an
    /// [`Event::Closed`] is emitted and input is ignored from then on. Closing twice
    /// keeps the first reason.
    fn close(&mut self, reason: CloseReason);

    /// Frees the spare capacity of an idle session's queues, so a session waiting for
    /// input holds as little memory as possible. Cheap: call it before waiting.
    fn shrink_idle(&mut self);

    /// Takes the receive buffer so a read can fill its spare capacity without a copy;
    /// give it back with [`put_buffer`](Self::put_buffer) before the next `handle_input`.
    #[must_use = "the taken buffer holds buffered input: give it back with put_buffer"]
    fn take_buffer(&mut self) -> BytesMut;

    /// Returns the buffer taken with [`take_buffer`](Self::take_buffer), with newly read
    /// bytes appended after what it held.
    fn put_buffer(&mut self, buf: BytesMut);

    /// True when no partial frame (or line) is buffered: the receive buffer may then be
    /// returned to a pool while the session waits.
    #[must_use]
    fn is_input_idle(&self) -> bool;

    /// The total length of the frame being received, when its fixed header has arrived
    /// (the buffer is then already sized for all of it, so a read should fill it even if
    /// little room is left). `None` between frames and for line sessions.
    #[must_use]
    fn pending_frame_len(&self) -> Option<usize>;
}
