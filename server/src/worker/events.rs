//! A session's traffic once admitted: its events handed to the handler, messages
//! delivered to it (locally and, for a broadcast, through the other cores' inboxes), the
//! send-queue limit that closes a slow consumer, and the memory-budget hooks that charge
//! what a session holds to this core's share.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use sockchat_proto::header::ByteStr;
use sockchat_proto::{CloseReason, DeliveryTemplate, Event, Session};

use super::Worker;
use crate::conn::{Conn, ConnState, Proto, WAKE_ABORT, WAKE_OUTPUT};
use crate::fanout::Broadcast;
use crate::handler::{Delivery, SessionCtx};
use crate::rate_limit;
use crate::send;
use crate::stats::CoreStats;

impl Worker {
    /// Hands the session's events to the handler; enforces the send queue limit; keeps
    /// the session's deadline registered.
    pub(crate) fn process(&self, conn: &Conn, st: &mut ConnState) {
        while let Some(ev) = st.proto.poll_event() {
            match ev {
                Event::Established { .. } => {
                    let mut ctx = SessionCtx {
                        core: self,
                        conn_id: conn.id,
                        state: st,
                    };
                    self.handler.on_session_start(&mut ctx);
                    self.room_session_start(conn);
                }
                ev @ (Event::Joined(_) | Event::Left(_) | Event::Refused(_)) => {
                    self.room_event(conn, st, ev);
                }
                Event::Message(m) => {
                    st.info.messages_in += 1;
                    if self.over_queue_limit(conn, st) {
                        // Still more to answer while the earlier answers sit unread.
                        st.proto.close(CloseReason::SlowConsumer);
                        continue;
                    }
                    CoreStats::add(&self.stats.messages_in, 1);
                    rate_limit::on_message(st, &self.stats);
                    let mut ctx = SessionCtx {
                        core: self,
                        conn_id: conn.id,
                        state: st,
                    };
                    self.handler.on_message(&mut ctx, m);
                }
                Event::PeerError(text) => {
                    tracing::debug!(session = %st.info.id, error = %text, "peer sent an error");
                }
                Event::Closed(reason) => {
                    tracing::debug!(session = %st.info.id, reason = %reason, "session closing");
                    st.close_reason.get_or_insert(reason);
                }
                _ => {}
            }
        }
        if let Some(t) = st.proto.poll_timeout() {
            self.schedule(conn, t);
        }
    }

    /// True when more than `--send-queue-limit` bytes already wait for this session (in
    /// its queue or in the write in flight). Checked *before* queueing another message,
    /// so one message larger than the limit (a 10 MiB frame, a 50 MiB chunked message)
    /// still goes out; memory per session stays below the limit plus one message.
    fn over_queue_limit(&self, conn: &Conn, st: &ConnState) -> bool {
        st.proto.queued_bytes() + conn.inflight.get() > self.config().send_queue_limit
    }

    /// Queues a message to one session of this core (not the sender).
    pub(crate) fn deliver(&self, conn: &Conn, msg: &mut DeliveryTemplate) -> bool {
        let Ok(mut st) = conn.state.try_borrow_mut() else {
            return false;
        };
        if st.proto.is_closed() {
            return false;
        }
        if self.over_queue_limit(conn, &st) {
            st.proto.close(CloseReason::SlowConsumer);
            drop(st);
            conn.wake(WAKE_OUTPUT | WAKE_ABORT);
            return false;
        }
        // Not yet established (framed, mid-handshake) or closed: `NotOpen`, not sent.
        let sent = match &mut st.proto {
            Proto::Frame(s) => s.deliver_prepared(msg).is_ok(),
            Proto::Line(l) => l
                .send_message(msg.content_type().cloned(), msg.content().clone())
                .is_ok(),
        };
        if !sent {
            return false;
        }
        st.info.messages_out += 1;
        self.count_message_out();
        self.charge(conn, &st);
        drop(st);
        send::flush(self, conn);
        true
    }

    /// ops hook (memory_budget.rs): before a framed session is fed input, it may
    /// reserve what is left of this core's share of the budget.
    pub(crate) fn grant_allowance(&self, st: &mut ConnState) {
        if let Proto::Frame(s) = &mut st.proto {
            s.set_memory_allowance(self.budget.available());
        }
    }

    /// ops hook (memory_budget.rs): charges what the session holds now (its send queue
    /// and write in flight, its partial messages and large-frame buffer) to this core's
    /// share, and keeps the send-queue gauge.
    pub(crate) fn charge(&self, conn: &Conn, st: &ConnState) {
        let queue = (st.proto.queued_bytes() + conn.inflight.get()) as u64;
        let input = match &st.proto {
            Proto::Frame(s) => s.held_input_bytes(),
            Proto::Line(_) => 0,
        } + u64::from(conn.lent_input.get());
        let (before_queue, before_input) = conn.charged.replace((queue, input));
        self.budget
            .recharge(before_queue + before_input, queue + input);
        if before_queue != queue {
            let total = (self.queue_bytes.get() + queue).saturating_sub(before_queue);
            self.queue_bytes.set(total);
            self.stats.send_queue_bytes.store(total, Ordering::Relaxed);
        }
    }

    /// Chat fan-out from session `from`: this core's sessions at once, the other cores
    /// through their inboxes.
    pub(crate) fn broadcast(
        &self,
        from: u64,
        content_type: Option<ByteStr>,
        content: Bytes,
    ) -> Delivery {
        let msg = Broadcast {
            content_type,
            content,
            room: None,
            from: None,
        };
        let mut d = Delivery {
            local: self.deliver_room(&msg, Some(from)),
            ..Delivery::default()
        };
        if self.shared.mailboxes.len() > 1 {
            let msg = Arc::new(msg);
            for (i, mb) in self.shared.mailboxes.iter().enumerate() {
                if i == self.index {
                    continue;
                }
                if mb.offer(&msg) {
                    d.cores += 1;
                } else {
                    d.dropped_cores += 1;
                }
            }
            if d.dropped_cores > 0 {
                tracing::debug!(
                    dropped = d.dropped_cores,
                    "chat message dropped for cores with a full inbound queue"
                );
            }
        }
        d
    }
}
