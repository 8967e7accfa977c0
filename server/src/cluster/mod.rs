//! Chat across server nodes through a NATS broker (core pub/sub).
//!
//! One side thread per process runs a current-thread tokio runtime with the `async-nats`
//! client (monoio and tokio cannot share a thread). The cores talk to it through two
//! channels that never block them: an unbounded one for the rare subscription changes
//! (one per room per node, bounded by the rooms in use) and a bounded one for
//! publications (full: the publication is dropped and counted). It hands room messages
//! from other nodes to the cores with members of the room through the cores' bounded
//! inboxes (full: dropped and counted there).
//!
//! Semantics: at most once across nodes (NATS core), in order per sender (one connection
//! per node, one publisher thread), and nothing crosses to a node without members of the
//! room (a node subscribes to a room's subject while it has members). A node publishes
//! each room message once; its own publications come back to it (NATS echo stays on, see
//! [`link`]) and are dropped by origin node name. Broker trouble: local delivery goes on,
//! publications that cannot go out are dropped and counted, the client reconnects with
//! backoff and re-subscribes every room.

mod link;
pub(crate) mod payload;

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use sockchat_proto::RoomName;
use tokio::sync::mpsc;

use crate::fanout::Mailbox;
use crate::rooms::RoomDirectory;

/// NATS's default `max_payload`, assumed until the broker's INFO says otherwise.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
/// Publications waiting for the cluster thread; beyond that they are dropped and counted.
const PUBLISH_QUEUE: usize = 16 * 1024;

/// `--cluster` and `--node-name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Broker URLs (`nats://HOST:PORT`), tried in order, then round-robin on reconnect.
    pub urls: Vec<String>,
    /// This node's name: the origin in every payload it publishes (unique per node).
    pub node_name: String,
    /// How long a join waits for the broker to confirm the node's new subscription
    /// before it is answered anyway (counted as `probe_timeouts`).
    pub confirm_timeout: Duration,
}

/// The broker link's state, as the stats line shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerState {
    /// Not connected yet.
    Connecting,
    /// Connected.
    Connected,
    /// Lost; reconnecting with backoff.
    Disconnected,
}

impl BrokerState {
    /// Every state, in the order of their metric labels.
    pub const ALL: [BrokerState; 3] = [
        BrokerState::Connecting,
        BrokerState::Connected,
        BrokerState::Disconnected,
    ];

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Connected,
            2 => Self::Disconnected,
            _ => Self::Connecting,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Self::Connecting => 0,
            Self::Connected => 1,
            Self::Disconnected => 2,
        }
    }

    /// Lower-case name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
        }
    }
}

/// Counters of the broker link (one writer each; relaxed).
#[derive(Debug, Default)]
pub struct ClusterStats {
    state: AtomicU8,
    max_payload: AtomicUsize,
    /// Room messages published to the broker.
    pub published: AtomicU64,
    /// Publications dropped: queue to the cluster thread full, broker not connected, or
    /// the client refused them.
    pub publish_dropped: AtomicU64,
    /// Room messages from other nodes received.
    pub received: AtomicU64,
    /// Own publications that came back and were dropped (no self-echo).
    pub self_echo: AtomicU64,
    /// Payloads from the broker that did not decode.
    pub decode_errors: AtomicU64,
    /// Joins answered without a broker confirmation (broker down, or no probe back in
    /// time).
    pub unconfirmed_joins: AtomicU64,
    /// Connections established after a loss.
    pub reconnects: AtomicU64,
    /// Connection losses.
    pub disconnects: AtomicU64,
}

impl ClusterStats {
    /// The broker link's state.
    pub fn state(&self) -> BrokerState {
        BrokerState::from_u8(self.state.load(Relaxed))
    }

    fn set_state(&self, s: BrokerState) {
        self.state.store(s.as_u8(), Relaxed);
    }

    /// The broker's `max_payload` (NATS's default until the broker said).
    pub fn max_payload(&self) -> usize {
        match self.max_payload.load(Relaxed) {
            0 => DEFAULT_MAX_PAYLOAD,
            n => n,
        }
    }

    /// `key=value` pairs for the stats line.
    pub fn text(&self) -> String {
        format!(
            "broker={} published={} publish_dropped={} received={} self_echo={} \
             decode_errors={} unconfirmed_joins={} disconnects={} reconnects={}",
            self.state().as_str(),
            self.published.load(Relaxed),
            self.publish_dropped.load(Relaxed),
            self.received.load(Relaxed),
            self.self_echo.load(Relaxed),
            self.decode_errors.load(Relaxed),
            self.unconfirmed_joins.load(Relaxed),
            self.disconnects.load(Relaxed),
            self.reconnects.load(Relaxed),
        )
    }
}

/// Requests from the cores.
#[derive(Debug)]
enum Control {
    /// The node has its first member of the room.
    Subscribe(RoomName),
    /// The node has no member of the room any more.
    Unsubscribe(RoomName),
    /// Tell core `.1` when the subscription to the room holds.
    AwaitConfirm(RoomName, usize),
    Shutdown,
}

/// What the cores hold to reach the cluster thread.
#[derive(Debug, Clone)]
pub(crate) struct ClusterHandle {
    control: mpsc::UnboundedSender<Control>,
    publish: mpsc::Sender<(RoomName, Bytes)>,
    pub(crate) stats: Arc<ClusterStats>,
    pub(crate) node_name: Arc<str>,
}

impl ClusterHandle {
    pub(crate) fn subscribe(&self, room: &RoomName) {
        let _ = self.control.send(Control::Subscribe(room.clone()));
    }

    pub(crate) fn unsubscribe(&self, room: &RoomName) {
        let _ = self.control.send(Control::Unsubscribe(room.clone()));
    }

    pub(crate) fn await_confirm(&self, room: &RoomName, core: usize) {
        let _ = self.control.send(Control::AwaitConfirm(room.clone(), core));
    }

    /// Queues an encoded payload for the broker; false (and counted) when it cannot go.
    pub(crate) fn publish(&self, room: &RoomName, payload: Bytes) -> bool {
        if self.stats.state() != BrokerState::Connected {
            ClusterStats::bump(&self.stats.publish_dropped);
            return false;
        }
        match self.publish.try_send((room.clone(), payload)) {
            Ok(()) => true,
            Err(_) => {
                ClusterStats::bump(&self.stats.publish_dropped);
                false
            }
        }
    }
}

impl ClusterStats {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }
}

/// The running cluster thread.
#[derive(Debug)]
pub(crate) struct Cluster {
    handle: ClusterHandle,
    thread: Option<thread::JoinHandle<()>>,
}

impl Cluster {
    /// Starts the cluster thread; it connects in the background (retrying), so a node
    /// starts and serves locally even while the broker is unreachable.
    pub(crate) fn start(
        config: ClusterConfig,
        directory: Arc<RoomDirectory>,
        mailboxes: Arc<Vec<Mailbox>>,
    ) -> std::io::Result<Self> {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (publish_tx, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let stats = Arc::new(ClusterStats::default());
        let handle = ClusterHandle {
            control: control_tx,
            publish: publish_tx,
            stats: stats.clone(),
            node_name: Arc::from(config.node_name.as_str()),
        };
        let link = link::Link::new(config, stats, directory, mailboxes);
        let thread = thread::Builder::new()
            .name("sockchat-cluster".into())
            .spawn(move || link.run(control_rx, publish_rx))?;
        Ok(Self {
            handle,
            thread: Some(thread),
        })
    }

    pub(crate) fn handle(&self) -> &ClusterHandle {
        &self.handle
    }

    /// Stops the thread (after the cores stopped) and waits for it.
    pub(crate) fn stop(&mut self) {
        let _ = self.handle.control.send(Control::Shutdown);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("cluster thread panicked");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
