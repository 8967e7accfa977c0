//! A connection's way into this core's session table and out of it: admission (the
//! session limit, "Server full", `--max-sessions-per-peer`), the refusal sent to a
//! connection turned away, the switch to line mode before a first frame, and `finish`,
//! which gives back everything `admit` took (counts, the peer's slot, budget charges).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sockchat_proto::header::{ByteStr, Header, OCTET_STREAM};
use sockchat_proto::{
    encode_into, CloseReason, Event, FrameType, LineSession, ServerSession, Session,
};

use super::Worker;
use crate::config::ServerConfig;
use crate::conn::{self, Conn, ConnState, ConnStream, Proto};
use crate::handler::{Peer, SessionInfo, Transport};
use crate::peer_limits::PeerKey;
use crate::rate_limit::RateState;
use crate::stats::CoreStats;

impl Worker {
    /// Takes a new connection: a session, or "Server full" at the limit.
    pub(crate) fn admit<S: ConnStream>(
        self: &Rc<Self>,
        stream: S,
        transport: Transport,
        peer: Peer,
    ) {
        CoreStats::add(&self.stats.accepted, 1);
        // A reload the control task has not applied yet is applied now: once the server
        // said READY=1 after a SIGHUP, every new session gets the new settings and keys
        // (the control task may not have run since the request).
        if self.mailbox().notify.take_reload() {
            self.apply_reload();
        }
        let config = self.config.borrow().clone();
        let before = self.shared.sessions.fetch_add(1, Ordering::AcqRel);
        if before >= config.max_sessions {
            self.shared.sessions.fetch_sub(1, Ordering::AcqRel);
            self.stats.count_close(&CloseReason::ServerFull);
            tracing::debug!(?peer, "refused: server full");
            let frame = self.server_full.borrow().clone();
            monoio::spawn(reject(self.clone(), stream, frame));
            return;
        }
        // ops hook: --max-sessions-per-peer (peer_limits.rs).
        let peer_counted = match (config.max_sessions_per_peer, PeerKey::of(&peer)) {
            (Some(limit), Some(key)) => {
                if !self.shared.peers.try_acquire(key, limit) {
                    self.shared.sessions.fetch_sub(1, Ordering::AcqRel);
                    let reason = CloseReason::PeerLimit {
                        limit: limit as u64,
                    };
                    self.stats.count_close(&reason);
                    tracing::debug!(?peer, limit, "refused: per-peer session limit");
                    let frame = reject_frame(&config, &reason);
                    monoio::spawn(reject(self.clone(), stream, frame));
                    return;
                }
                true
            }
            _ => false,
        };
        CoreStats::add(&self.stats.sessions, 1);
        if transport == Transport::Tcp {
            CoreStats::add(&self.stats.sessions_tcp, 1);
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let now = Instant::now();
        let sid = ByteStr::from(uuid::Uuid::new_v4().hyphenated().to_string());
        let session = ServerSession::with_keys(
            sid.clone(),
            config.keys.clone(),
            self.session_config.borrow().clone(),
            now,
        );
        let deadline = session.poll_timeout();
        let info = SessionInfo {
            id: sid,
            transport,
            peer,
            connected_at: now,
            core: self.index,
            line_mode: false,
            messages_in: 0,
            messages_out: 0,
            bytes_in: 0,
            bytes_out: 0,
        };
        let conn = Rc::new(Conn::new(
            id,
            self.ring.token(),
            stream.as_raw_fd(),
            ConnState {
                proto: Proto::Frame(session),
                info,
                close_reason: None,
                peer_counted,
                rate: RateState::for_config(self),
            },
        ));
        if let Some(t) = deadline {
            self.schedule(&conn, t);
        }
        tracing::trace!(session = %conn.state.borrow().info.id, ?peer, "accepted");
        self.conns.borrow_mut().insert(id, conn.clone());
        self.ring.attach(&conn);
        let task = conn::drive(self.clone(), conn, stream);
        if id == 0 {
            tracing::debug!(
                core = self.index,
                task_future_bytes = std::mem::size_of_val(&task),
                conn_bytes = std::mem::size_of::<Conn>(),
                session_bytes = std::mem::size_of::<ServerSession>(),
                event_bytes = std::mem::size_of::<Event>(),
                info_bytes = std::mem::size_of::<SessionInfo>(),
                stream_bytes = std::mem::size_of::<S>(),
                "per-connection sizes"
            );
        }
        monoio::spawn(task);
    }

    /// Replaces a framed session that has not spoken yet by a line-mode one.
    pub(crate) fn switch_to_line(&self, st: &mut ConnState, now: Instant) {
        let config = self.config();
        let max_line = usize::try_from(config.max_frame).unwrap_or(usize::MAX);
        st.proto = Proto::Line(Box::new(LineSession::new(
            st.info.id.clone(),
            max_line,
            config.session_timeout,
            now,
        )));
        st.info.line_mode = true;
    }

    /// A session ended and its socket is closed: forget it.
    pub(crate) fn finish(&self, conn: &Rc<Conn>) {
        let now_empty = {
            let mut conns = self.conns.borrow_mut();
            conns.remove(&conn.id);
            conns.is_empty()
        };
        self.timers.cancel(conn.id, &conn.timer_at);
        self.ring.detach(conn);
        self.shared.sessions.fetch_sub(1, Ordering::AcqRel);
        self.stats.sessions.fetch_sub(1, Ordering::Relaxed);
        let st = conn.state.borrow();
        self.room_session_end(conn, &st);
        if st.info.transport == Transport::Tcp {
            self.stats.sessions_tcp.fetch_sub(1, Ordering::Relaxed);
        }
        let (queue, input) = conn.charged.take();
        self.budget.recharge(queue + input, 0);
        let total = self.queue_bytes.get().saturating_sub(queue);
        self.queue_bytes.set(total);
        self.stats.send_queue_bytes.store(total, Ordering::Relaxed);
        if st.peer_counted {
            if let Some(key) = PeerKey::of(&st.info.peer) {
                self.shared.peers.release(key);
            }
        }
        let reason = st.close_reason.clone().unwrap_or(CloseReason::PeerClosed);
        self.stats.count_close(&reason);
        tracing::debug!(
            session = %st.info.id,
            reason = %reason,
            messages_in = st.info.messages_in,
            bytes_in = st.info.bytes_in,
            bytes_out = st.info.bytes_out,
            "session closed"
        );
        self.handler.on_session_end(&st.info, &reason);
        // The large receive buffers kept for the next large frame (pool.rs) go back to
        // the kernel when a session ends: the large frames may have been its own.
        self.pool.release_large();
        if now_empty && (self.shutting_down.get() || self.draining.get()) {
            if let Some(w) = self.drained.take() {
                w.wake();
            }
        }
    }
}

/// An `error` frame (no session id: the connection never got one) for a connection
/// refused before it became a session.
pub(super) fn reject_frame(config: &ServerConfig, reason: &CloseReason) -> Bytes {
    let mut out = BytesMut::new();
    let header = Header::new(FrameType::Error, Some(OCTET_STREAM), None);
    // A short, non-empty content: encoding cannot fail.
    let _ = encode_into(
        config.keys.signing(),
        &header,
        reason.wire_reason().as_bytes(),
        &mut out,
    );
    out.freeze()
}

/// Tells a connection why it is refused ("Server full", the per-peer limit) and closes
/// it.
async fn reject<S: ConnStream>(core: Rc<Worker>, mut stream: S, frame: Bytes) {
    let len = frame.len();
    if let Ok((Ok(n), _)) = monoio::time::timeout(Duration::from_secs(1), stream.write(frame)).await
    {
        if n == len {
            core.count_bytes_out(n);
            conn::linger(&core, &mut stream).await;
        }
    }
}
