//! Line-mode sessions: a connection whose first byte is not 0x89 speaks
//! newline-terminated UTF-8 lines (a server opts in per listener).
//!
//! * `ping` → `pong`; `disconnect` ends the session; a line that is not UTF-8 → `invalid`;
//!   any other line is a message (content type `text/plain; charset=utf-8`).
//! * A line longer than the limit (counting its `\n`) ends the session with
//!   `error: Line too long`.
//! * Silence for the session timeout ends it with `disconnect: Session timeout`; shutdown
//!   with `disconnect: Server shutting down`. Which closes send a line, and which kind,
//!   is the framed policy ([`CloseReason::notice`]) written as a line instead of a frame.
//! * Messages sent to a line session (echo replies, chat deliveries) are written as one
//!   line; `\r` and `\n` inside are replaced by spaces so one message stays one line.
//!   Content that is not UTF-8 (e.g. an image from a framed client) is not delivered to
//!   line sessions.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::reason::{Notice, Side};
use super::{CloseReason, Event, Features, Message, SendError, Session};
use crate::header::{ByteStr, TEXT_UTF8};
use crate::line::{Line, LineCodec};

/// The server end of one line-mode session, sans I/O. Driven through [`Session`] like
/// a framed [`ServerSession`](super::ServerSession), so a connection driver treats both
/// alike.
#[derive(Debug)]
pub struct LineSession {
    codec: LineCodec,
    out: BytesMut,
    events: VecDeque<Event>,
    last_seen: Instant,
    timeout: Duration,
    closed: bool,
}

impl LineSession {
    /// A session with id `session_id` (there is no handshake, so it reports
    /// [`Event::Established`] at once). Lines longer than `max_line` bytes, counting the
    /// `\n`, end it; so does silence for `timeout`.
    pub fn new(session_id: ByteStr, max_line: usize, timeout: Duration, now: Instant) -> Self {
        let mut events = VecDeque::new();
        events.push_back(Event::Established {
            session_id,
            features: Features::NONE,
        });
        Self {
            codec: LineCodec::new(max_line),
            out: BytesMut::new(),
            events,
            last_seen: now,
            timeout,
            closed: false,
        }
    }

    /// Queues `content` as one line, if it is UTF-8 (see the module docs).
    fn send_text(&mut self, content: &[u8]) -> Result<(), SendError> {
        if self.closed {
            return Err(SendError::NotOpen);
        }
        let Ok(text) = std::str::from_utf8(content) else {
            // Binary content has no line form; it is skipped, not an error of the session.
            return Ok(());
        };
        if text.contains(['\n', '\r']) {
            LineCodec::encode(&text.replace(['\n', '\r'], " "), &mut self.out);
        } else {
            LineCodec::encode(text, &mut self.out);
        }
        Ok(())
    }
}

impl Session for LineSession {
    fn is_established(&self) -> bool {
        !self.closed
    }

    fn is_closed(&self) -> bool {
        self.closed
    }

    fn handle_input(&mut self, now: Instant) {
        let mut held = VecDeque::new();
        while self.handle_input_until_event(now) {
            held.append(&mut self.events);
        }
        held.append(&mut self.events);
        self.events = held;
    }

    fn handle_input_until_event(&mut self, now: Instant) -> bool {
        while !self.closed {
            if !self.events.is_empty() {
                return true;
            }
            match self.codec.decode() {
                Ok(Some(Line::Text(text))) => {
                    self.last_seen = now;
                    match text.as_str() {
                        "ping" => LineCodec::encode("pong", &mut self.out),
                        "disconnect" => self.close(CloseReason::ClientDisconnect {
                            reason: "disconnect".into(),
                        }),
                        _ => self.events.push_back(Event::Message(Message {
                            content_type: Some(TEXT_UTF8),
                            content: text.as_bytes().clone(),
                            frame: None,
                            chunks: None,
                            room: None,
                            from: None,
                        })),
                    }
                }
                Ok(Some(Line::InvalidUtf8)) => {
                    self.last_seen = now;
                    LineCodec::encode("invalid", &mut self.out);
                }
                Ok(None) => return false,
                Err(_) => self.close(CloseReason::LineTooLong),
            }
        }
        !self.events.is_empty()
    }

    fn handle_eof(&mut self) {
        self.close(CloseReason::PeerClosed);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if !self.closed && now >= self.last_seen + self.timeout {
            self.close(CloseReason::SessionTimeout);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (!self.closed).then(|| self.last_seen + self.timeout)
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn poll_transmit(&mut self, out: &mut Vec<Bytes>) {
        if !self.out.is_empty() {
            out.push(self.out.split().freeze());
        }
    }

    fn queued_bytes(&self) -> usize {
        self.out.len()
    }

    /// Sends the content as one line; a line has no content type, so it is dropped.
    fn send_message(
        &mut self,
        _content_type: Option<ByteStr>,
        content: Bytes,
    ) -> Result<(), SendError> {
        self.send_text(&content)
    }

    fn close(&mut self, reason: CloseReason) {
        if self.closed {
            return;
        }
        // The framed policy, one line instead of one frame. A server never answers a
        // client's own `disconnect`, so the side is always the server's.
        match reason.notice(Side::Server) {
            Notice::Disconnect => LineCodec::encode(
                &format!("disconnect: {}", reason.wire_reason()),
                &mut self.out,
            ),
            Notice::Error => {
                LineCodec::encode(&format!("error: {}", reason.wire_reason()), &mut self.out)
            }
            Notice::None => {}
        }
        if reason.discards_queue() {
            self.out = BytesMut::new();
        }
        self.closed = true;
        self.codec = LineCodec::new(0);
        self.events.push_back(Event::Closed(reason));
    }

    fn shrink_idle(&mut self) {
        if self.events.is_empty() && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        if self.out.is_empty() && self.out.capacity() > 0 {
            self.out = BytesMut::new();
        }
    }

    fn take_buffer(&mut self) -> BytesMut {
        std::mem::take(self.codec.buffer_mut())
    }

    fn put_buffer(&mut self, buf: BytesMut) {
        *self.codec.buffer_mut() = buf;
    }

    fn is_input_idle(&self) -> bool {
        self.codec.is_idle()
    }

    fn pending_frame_len(&self) -> Option<usize> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> (LineSession, Instant) {
        let now = Instant::now();
        let mut s = LineSession::new(ByteStr::from("id"), 16, Duration::from_secs(30), now);
        assert!(matches!(s.poll_event(), Some(Event::Established { .. })));
        (s, now)
    }

    fn written(s: &mut LineSession) -> Vec<u8> {
        let mut out = Vec::new();
        s.poll_transmit(&mut out);
        out.concat()
    }

    #[test]
    fn ping_message_invalid_disconnect() {
        let (mut s, now) = session();
        let mut b = s.take_buffer();
        b.extend_from_slice(b"ping\r\nhello\n\xff\nnext");
        s.put_buffer(b);
        s.handle_input(now);
        assert_eq!(written(&mut s), b"pong\ninvalid\n");
        match s.poll_event() {
            Some(Event::Message(m)) => assert_eq!(&m.content[..], b"hello"),
            other => panic!("{other:?}"),
        }
        assert!(!s.is_input_idle());
        let mut b = s.take_buffer();
        b.extend_from_slice(b"\ndisconnect\n");
        s.put_buffer(b);
        s.handle_input(now);
        assert!(matches!(s.poll_event(), Some(Event::Message(_))));
        assert!(matches!(
            s.poll_event(),
            Some(Event::Closed(CloseReason::ClientDisconnect { .. }))
        ));
        assert!(s.is_closed());
    }

    #[test]
    fn too_long_and_timeout() {
        let (mut s, now) = session();
        s.put_buffer(BytesMut::from(&b"0123456789abcdefXYZ"[..]));
        s.handle_input(now);
        assert!(s.is_closed());
        assert_eq!(written(&mut s), b"error: Line too long\n");
        assert!(matches!(
            s.poll_event(),
            Some(Event::Closed(CloseReason::LineTooLong))
        ));

        let (mut s, now) = session();
        assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(30)));
        s.handle_timeout(now + Duration::from_secs(29));
        assert!(!s.is_closed());
        s.handle_timeout(now + Duration::from_secs(30));
        assert_eq!(written(&mut s), b"disconnect: Session timeout\n");
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn send_text_keeps_one_line_and_skips_binary() {
        let (mut s, _) = session();
        s.send_text(b"a\nb").unwrap();
        s.send_text(&[0xff, 0x00]).unwrap();
        assert_eq!(written(&mut s), b"a b\n");
        s.close(CloseReason::ServerShutdown);
        assert_eq!(written(&mut s), b"disconnect: Server shutting down\n");
        assert_eq!(s.send_text(b"x"), Err(SendError::NotOpen));
    }
}
