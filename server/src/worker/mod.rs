//! One core: a monoio io_uring runtime on its own (pinned) thread, with its accept loops,
//! its connections, its timer task and its control task (cross-core chat messages and
//! shutdown).
//!
//! This file holds the core's state (`Worker`) and its small accessors; the rest is split
//! by what a reader comes looking for:
//! * [`lifecycle`]: the core's start (pinning, runtime, listeners), its control task
//!   (cross-core messages, reloads, drain) and its shutdown;
//! * [`admit`]: a connection's way into the session table ("Server full", per-peer
//!   limits) and out of it (`finish`);
//! * [`events`]: a session's events handed to the handler, deliveries and broadcast,
//!   the send-queue limit and the memory-budget hooks;
//! * [`timers`]: the core's timer task and what a session deadline does when it fires.

mod admit;
mod events;
mod lifecycle;
mod timers;

use std::cell::{Cell, Ref, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;
use sockchat_proto::{CloseReason, SessionConfig};

use crate::config::ServerConfig;
use crate::conn::Conn;
use crate::data_ring::CoreRing;
use crate::fanout::Mailbox;
use crate::handler::Handler;
use crate::memory_budget::CoreBudget;
use crate::pool::BufPool;
use crate::ring_accept::Listeners;
use crate::rooms::CoreRooms;
use crate::server::Shared;
use crate::stats::CoreStats;
use crate::timer::CoreTimers;

use admit::reject_frame;
pub(crate) use lifecycle::{run_core, CoreListeners};

/// Size of the pooled read buffers.
const READ_BUF: usize = 16 * 1024;
/// Pooled buffers allocated per core at start.
const POOL_PREALLOC: usize = 64;
/// Most spare pooled buffers kept per core.
const POOL_MAX_FREE: usize = 256;

/// The sessions' configuration on a core: the server's, with the core's large buffers
/// as the source of chunked messages' buffers (pool.rs).
fn session_config(config: &ServerConfig, pool: &BufPool) -> SessionConfig {
    let mut c = config.session_config();
    c.message_buffers = Some(pool.large().clone());
    c
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
    /// Where `send::flush` collects a session's output before the ring takes it.
    pub(crate) send_scratch: RefCell<Vec<Bytes>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .field("sessions", &self.conns.borrow().len())
            .finish_non_exhaustive()
    }
}

impl Worker {
    fn new(
        index: usize,
        config: Arc<ServerConfig>,
        handler: Arc<dyn Handler>,
        shared: Arc<Shared>,
        ring: CoreRing,
    ) -> Self {
        let pool = BufPool::new(READ_BUF, POOL_PREALLOC, POOL_MAX_FREE);
        let budget = CoreBudget::new(
            config.memory_budget,
            config.cores,
            shared.stats[index].memory_bytes.clone(),
        );
        Self {
            index,
            session_config: RefCell::new(Arc::new(session_config(&config, &pool))),
            server_full: RefCell::new(reject_frame(&config, &CloseReason::ServerFull)),
            config: RefCell::new(config),
            handler,
            conns: RefCell::new(HashMap::new()),
            rooms: CoreRooms::default(),
            next_id: Cell::new(0),
            timers: CoreTimers::default(),
            pool,
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
            send_scratch: RefCell::new(Vec::new()),
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

    /// The sessions open on this core now.
    pub(crate) fn conns_snapshot(&self) -> Vec<Rc<Conn>> {
        self.conns.borrow().values().cloned().collect()
    }

    pub(crate) fn wake_control(&self) {
        self.mailbox().notify.notify();
    }
}
