//! One core: a monoio io_uring runtime on its own (pinned) thread, with its accept loops,
//! its connections, its timer task and its control task (cross-core chat messages and
//! shutdown).

use std::cell::{Cell, Ref, RefCell};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sockchat_proto::header::{ByteStr, Header, OCTET_STREAM};
use sockchat_proto::{
    encode_into, CloseReason, DeliveryTemplate, Event, FrameType, LineSession, ServerSession,
    Session, SessionConfig,
};

use crate::config::ServerConfig;
use crate::conn::{
    self, Conn, ConnState, ConnStream, Proto, WAKE_ABORT, WAKE_OUTPUT, WAKE_SHUTDOWN,
};
use crate::data_ring::{self, CoreRing};
use crate::drain;
use crate::fanout::{Broadcast, Inbox, Mailbox};
use crate::handler::{Delivery, Handler, Peer, SessionCtx, SessionInfo, Transport};
use crate::memory_budget::CoreBudget;
use crate::peer_limits::PeerKey;
use crate::pool::BufPool;
use crate::rate_limit::{self, RateState};
use crate::ring_accept::{self, Listener, Listeners};
use crate::rooms::CoreRooms;
use crate::send;
use crate::server::Shared;
use crate::stats::CoreStats;
use crate::timer::CoreTimers;

/// Size of the pooled read buffers.
const READ_BUF: usize = 16 * 1024;
/// Pooled buffers allocated per core at start.
const POOL_PREALLOC: usize = 64;
/// Most spare pooled buffers kept per core.
const POOL_MAX_FREE: usize = 256;
/// io_uring submission queue entries per core.
const RING_ENTRIES: u32 = 4096;

/// The listening sockets one core accepts from.
#[derive(Debug, Default)]
pub(crate) struct CoreListeners {
    pub(crate) tcp: Vec<std::net::TcpListener>,
    pub(crate) unix: Vec<std::os::unix::net::UnixListener>,
}

/// A core's state, shared by its tasks (single-threaded).
pub(crate) struct Worker {
    pub(crate) index: usize,
    /// Swapped as a whole by a SIGHUP reload (see `reload.rs`).
    config: RefCell<Arc<ServerConfig>>,
    session_config: RefCell<Arc<SessionConfig>>,
    handler: Arc<dyn Handler>,
    pub(crate) conns: RefCell<HashMap<u64, Rc<Conn>>>,
    pub(crate) rooms: CoreRooms,
    next_id: Cell<u64>,
    timers: CoreTimers,
    pub(crate) pool: BufPool,
    pub(crate) stats: Arc<CoreStats>,
    pub(crate) shared: Arc<Shared>,
    shutting_down: Cell<bool>,
    /// The listeners this core accepts from (on its data ring).
    pub(crate) listeners: Listeners,
    drained: Cell<Option<Waker>>,
    server_full: RefCell<Bytes>,
    /// This core's share of `--memory-budget`.
    pub(crate) budget: CoreBudget,
    /// Set once a drain started on this core.
    pub(crate) draining: Cell<bool>,
    /// Set once the drain told every session (see `drain.rs`).
    pub(crate) drain_done: Cell<bool>,
    /// Bytes queued to this core's sessions (the `send_queue_bytes` gauge).
    queue_bytes: Cell<u64>,
    /// The core's data ring: every session's receive runs on it.
    pub(crate) ring: CoreRing,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .field("sessions", &self.conns.borrow().len())
            .finish_non_exhaustive()
    }
}

/// Pins the calling thread to one CPU of those the process may use (round-robin).
fn pin_to_cpu(index: usize) {
    // SAFETY: cpu_set_t is plain data; the calls only read/write the set passed.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
            return;
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &allowed))
            .collect();
        if cpus.is_empty() {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus[index % cpus.len()], &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::debug!(core = index, "could not pin thread");
        }
    }
}

/// Runs core `index` until shutdown; called on the core's own thread. Reports on
/// `ready` once it accepts (or why it could not start).
pub(crate) fn run_core(
    index: usize,
    config: Arc<ServerConfig>,
    handler: Arc<dyn Handler>,
    shared: Arc<Shared>,
    listeners: CoreListeners,
    inbox: Inbox,
    ready: mpsc::Sender<(usize, io::Result<()>)>,
) -> io::Result<()> {
    pin_to_cpu(index);
    let built = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .with_entries(RING_ENTRIES)
        .build();
    let mut rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send((index, Err(io::Error::new(e.kind(), e.to_string()))));
            return Err(e);
        }
    };
    let ring = match CoreRing::new(config.ring_buffers, config.ring_buffer_size) {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send((index, Err(io::Error::new(e.kind(), e.to_string()))));
            return Err(e);
        }
    };
    rt.block_on(async move {
        let core = Rc::new(Worker::new(index, config, handler, shared, ring));
        let started = start_accepting(&core, listeners);
        let failed = started
            .as_ref()
            .err()
            .map(|e| io::Error::new(e.kind(), e.to_string()));
        let _ = ready.send((index, started));
        if let Some(e) = failed {
            return Err(e);
        }
        monoio::spawn(timer_task(core.clone()));
        monoio::spawn(data_ring::run(core.clone()));
        control(&core, &inbox).await;
        core.shut_down().await;
        core.ring.shutdown();
        Ok(())
    })
}

fn start_accepting(core: &Rc<Worker>, listeners: CoreListeners) -> io::Result<()> {
    for l in listeners.tcp {
        ring_accept::listen(core, Listener::Tcp(l))?;
    }
    for l in listeners.unix {
        ring_accept::listen(core, Listener::Unix(l))?;
    }
    Ok(())
}

impl Worker {
    fn new(
        index: usize,
        config: Arc<ServerConfig>,
        handler: Arc<dyn Handler>,
        shared: Arc<Shared>,
        ring: CoreRing,
    ) -> Self {
        let budget = CoreBudget::new(
            config.memory_budget,
            config.cores,
            shared.stats[index].memory_bytes.clone(),
        );
        Self {
            index,
            session_config: RefCell::new(Arc::new(config.session_config())),
            server_full: RefCell::new(reject_frame(&config, &CloseReason::ServerFull)),
            config: RefCell::new(config),
            handler,
            conns: RefCell::new(HashMap::new()),
            rooms: CoreRooms::default(),
            next_id: Cell::new(0),
            timers: CoreTimers::default(),
            pool: BufPool::new(READ_BUF, POOL_PREALLOC, POOL_MAX_FREE),
            stats: shared.stats[index].clone(),
            shared,
            shutting_down: Cell::new(false),
            listeners: Listeners::default(),
            drained: Cell::new(None),
            budget,
            draining: Cell::new(false),
            drain_done: Cell::new(false),
            queue_bytes: Cell::new(0),
            ring,
        }
    }

    /// The settings in force on this core.
    pub(crate) fn config(&self) -> Ref<'_, Arc<ServerConfig>> {
        self.config.borrow()
    }

    pub(crate) fn stats(&self) -> &CoreStats {
        &self.stats
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// Takes the configuration a SIGHUP reload stored: new sessions get it.
    fn apply_reload(&self) {
        let config = self.shared.config.load_full();
        self.budget.set_budget(config.memory_budget, config.cores);
        *self.session_config.borrow_mut() = Arc::new(config.session_config());
        *self.server_full.borrow_mut() = reject_frame(&config, &CloseReason::ServerFull);
        *self.config.borrow_mut() = config;
    }

    fn mailbox(&self) -> &Mailbox {
        &self.shared.mailboxes[self.index]
    }

    pub(crate) fn count_message_out(&self) {
        CoreStats::add(&self.stats.messages_out, 1);
    }

    pub(crate) fn count_bytes_in(&self, n: usize) {
        CoreStats::add(&self.stats.bytes_in, n as u64);
    }

    pub(crate) fn count_bytes_out(&self, n: usize) {
        CoreStats::add(&self.stats.bytes_out, n as u64);
    }

    pub(crate) fn schedule(&self, conn: &Conn, at: Instant) {
        self.timers.schedule(conn.id, &conn.timer_at, at);
    }

    /// Takes a new connection: a session, or "Server full" at the limit.
    pub(crate) fn admit<S: ConnStream>(
        self: &Rc<Self>,
        stream: S,
        transport: Transport,
        peer: Peer,
    ) {
        CoreStats::add(&self.stats.accepted, 1);
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
        };
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
        if now_empty && (self.shutting_down.get() || self.draining.get()) {
            if let Some(w) = self.drained.take() {
                w.wake();
            }
        }
    }

    fn on_timer(&self, id: u64, now: Instant) {
        let Some(conn) = self.conns.borrow().get(&id).cloned() else {
            return;
        };
        conn.timer_at.set(None);
        // A send waiting in the kernel for room: the peer must take our bytes within the
        // session timeout. Input keeps being handled meanwhile (the data ring reads while
        // a send waits), so the session's own timers run as well.
        let mut stall = None;
        if let Some(since) = conn.write_since.get() {
            let at = since + self.config().session_timeout;
            if at <= now {
                tracing::debug!(session = %conn.state.borrow().info.id, "write made no progress");
                conn.wake(WAKE_ABORT);
                return;
            }
            stall = Some(at);
        }
        let next = match conn.state.try_borrow_mut() {
            Ok(mut st) => {
                let was_closed = st.proto.is_closed();
                st.proto.handle_timeout(now);
                if !was_closed && st.proto.is_closed() {
                    drop(st);
                    conn.wake(WAKE_OUTPUT);
                    None
                } else {
                    st.proto.poll_timeout()
                }
            }
            Err(_) => None,
        };
        let next = match (next, stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(t) = next {
            self.schedule(&conn, t.max(now));
        }
    }

    /// Stops accepting, tells every session to disconnect, and waits until they are
    /// gone or the grace period ends.
    async fn shut_down(&self) {
        self.shutting_down.set(true);
        ring_accept::stop(self);
        let conns: Vec<Rc<Conn>> = self.conns.borrow().values().cloned().collect();
        tracing::debug!(core = self.index, sessions = conns.len(), "shutting down");
        for c in &conns {
            c.wake(WAKE_SHUTDOWN);
        }
        drop(conns);
        let deadline = Instant::now() + self.config().shutdown_grace;
        self.wait_empty(deadline).await;
        let left = self.conns.borrow().len();
        if left > 0 {
            tracing::warn!(
                core = self.index,
                sessions = left,
                "shutdown grace period over; closing remaining sessions"
            );
            for c in self.conns.borrow().values() {
                if let Ok(st) = c.state.try_borrow() {
                    self.stats.count_close(
                        st.close_reason
                            .as_ref()
                            .unwrap_or(&CloseReason::ServerShutdown),
                    );
                }
            }
        }
    }

    /// Cancels the listeners' accepts: each listener closes with its final completion.
    pub(crate) fn stop_accepting(&self) {
        ring_accept::stop(self);
    }

    /// The sessions open on this core now.
    pub(crate) fn conns_snapshot(&self) -> Vec<Rc<Conn>> {
        self.conns.borrow().values().cloned().collect()
    }

    /// Waits until this core holds no session (or `deadline` passes).
    pub(crate) async fn wait_empty(&self, deadline: Instant) {
        let sleep = monoio::time::sleep_until(monoio::time::Instant::from_std(deadline));
        let mut sleep = pin!(sleep);
        poll_fn(|cx| {
            if self.conns.borrow().is_empty() {
                return Poll::Ready(());
            }
            self.drained.set(Some(cx.waker().clone()));
            sleep.as_mut().poll(cx)
        })
        .await;
    }

    pub(crate) fn wake_control(&self) {
        self.mailbox().notify.notify();
    }
}

/// An `error` frame (no session id: the connection never got one) for a connection
/// refused before it became a session.
fn reject_frame(config: &ServerConfig, reason: &CloseReason) -> Bytes {
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

/// The core's one timer task: sleeps until the earliest deadline of any session.
async fn timer_task(core: Rc<Worker>) {
    let mut expired = Vec::new();
    loop {
        let next = core.timers.next();
        let until = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let sleep = monoio::time::sleep_until(monoio::time::Instant::from_std(until));
        let mut sleep = pin!(sleep);
        poll_fn(|cx| {
            if core.timers.park(next, cx.waker()) {
                return Poll::Ready(());
            }
            sleep.as_mut().poll(cx)
        })
        .await;
        let now = Instant::now();
        core.timers.pop_expired(now, &mut expired);
        for id in expired.drain(..) {
            core.on_timer(id, now);
        }
    }
}

/// Delivers chat messages from other cores, applies reloads and starts a drain, until
/// shutdown is requested or a drain has sent every session away.
async fn control(core: &Rc<Worker>, inbox: &Inbox) {
    let mailbox = core.mailbox();
    loop {
        poll_fn(|cx| mailbox.notify.poll_notified(cx)).await;
        CoreStats::add(&core.stats.alive, 1);
        while let Some(msg) = inbox.try_recv(mailbox) {
            core.deliver_room(&msg, None);
        }
        for room in mailbox.take_confirmed_rooms() {
            core.room_confirmed(&room);
        }
        if mailbox.notify.shutdown_requested() {
            return;
        }
        if mailbox.notify.take_reload() {
            core.apply_reload();
        }
        if mailbox.notify.drain_requested() && !core.draining.get() {
            core.draining.set(true);
            monoio::spawn(drain::run(core.clone()));
        }
        if core.draining.get() && drain::finished(core) {
            return;
        }
    }
}
