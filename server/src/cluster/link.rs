//! The cluster thread: the `async-nats` client on a current-thread tokio runtime.
//!
//! Join confirmation: a NATS client learns nothing when the server has processed a SUB
//! (`flush` only empties the socket buffer). So after subscribing to a room the node
//! publishes a small probe on the room's own subject; the server handles one
//! connection's operations in order, so when the probe comes back through the new
//! subscription, every message published afterwards by anyone reaches this node. That is
//! why NATS echo stays on: the node's own publications come back too and are dropped by
//! origin (counted as `self_echo`). While the broker is unreachable a join is answered at
//! once (local delivery only; counted as `unconfirmed_joins`), as it is when no probe
//! comes back within the confirm timeout.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Event, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use sockchat_proto::RoomName;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::payload::{self, Payload};
use super::{BrokerState, ClusterConfig, ClusterStats, Control};
use crate::fanout::{Broadcast, Mailbox};
use crate::rooms::RoomDirectory;

/// Backoff between reconnect attempts: 50 ms doubling to at most 2 s.
fn backoff(attempts: usize) -> Duration {
    let exp = u32::try_from(attempts.min(6)).unwrap_or(6);
    Duration::from_millis(50 * 2u64.pow(exp)).min(Duration::from_secs(2))
}

/// Everything the link needs, moved onto its thread.
pub(super) struct Link {
    config: ClusterConfig,
    stats: Arc<ClusterStats>,
    directory: Arc<RoomDirectory>,
    mailboxes: Arc<Vec<Mailbox>>,
}

/// One room's subscription.
struct RoomSub {
    task: JoinHandle<()>,
    nonce: u64,
    /// When the last probe went out.
    probe_at: Option<Instant>,
    /// The probe came back: the broker holds the subscription.
    held: bool,
    /// Cores to tell once it holds (or once waiting is pointless: broker down, timeout).
    waiting: Vec<usize>,
}

/// What the per-room tasks tell the main loop.
enum Back {
    Probe(RoomName, u64),
}

impl Link {
    pub(super) fn new(
        config: ClusterConfig,
        stats: Arc<ClusterStats>,
        directory: Arc<RoomDirectory>,
        mailboxes: Arc<Vec<Mailbox>>,
    ) -> Self {
        Self {
            config,
            stats,
            directory,
            mailboxes,
        }
    }

    /// Runs until [`Control::Shutdown`] (or until every core's handle is gone).
    pub(super) fn run(
        self,
        control: mpsc::UnboundedReceiver<Control>,
        publish: mpsc::Receiver<(RoomName, Bytes)>,
    ) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cluster runtime failed to start; no cross-node delivery");
                return;
            }
        };
        let this = Arc::new(self);
        rt.block_on(this.clone().main(control, publish));
    }

    async fn connect(self: &Arc<Self>) -> Option<Client> {
        let stats = self.stats.clone();
        let opts = ConnectOptions::new()
            .name(format!("sockchat-{}", self.config.node_name))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(backoff)
            .connection_timeout(Duration::from_secs(2))
            .event_callback(move |ev| {
                let stats = stats.clone();
                async move {
                    match ev {
                        Event::Connected => {
                            if stats.state() == BrokerState::Disconnected {
                                ClusterStats::bump(&stats.reconnects);
                            }
                            stats.set_state(BrokerState::Connected);
                            tracing::info!("broker connected");
                        }
                        Event::Disconnected => {
                            stats.set_state(BrokerState::Disconnected);
                            ClusterStats::bump(&stats.disconnects);
                            tracing::warn!("broker connection lost; reconnecting");
                        }
                        other => tracing::debug!(event = %other, "broker event"),
                    }
                }
            });
        match opts.connect(self.config.urls.clone()).await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "cannot use the --cluster addresses; no cross-node delivery");
                None
            }
        }
    }

    async fn main(
        self: Arc<Self>,
        mut control: mpsc::UnboundedReceiver<Control>,
        mut publish: mpsc::Receiver<(RoomName, Bytes)>,
    ) {
        let Some(client) = self.connect().await else {
            // Without a client every join is answered locally and every publication is
            // dropped (counted), so the node still serves.
            self.stats.set_state(BrokerState::Disconnected);
            while let Some(c) = control.recv().await {
                match c {
                    Control::AwaitConfirm(room, core) => self.confirm_core(&room, core, false),
                    Control::Shutdown => return,
                    Control::Subscribe(_) | Control::Unsubscribe(_) => {}
                }
            }
            return;
        };
        let (back_tx, mut back_rx) = mpsc::unbounded_channel::<Back>();
        let mut subs: HashMap<RoomName, RoomSub> = HashMap::new();
        let mut next_nonce: u64 = 1;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut max_payload_known = false;
        loop {
            if !max_payload_known {
                if let Some(info) = client.try_server_info() {
                    self.stats.max_payload.store(info.max_payload, Relaxed);
                    max_payload_known = info.max_payload > 0;
                }
            }
            tokio::select! {
                biased;
                c = control.recv() => match c {
                    None | Some(Control::Shutdown) => break,
                    Some(Control::Subscribe(room)) => {
                        if subs.contains_key(&room) {
                            continue;
                        }
                        match client.subscribe(payload::subject(&room)).await {
                            Ok(sub) => {
                                let task = tokio::spawn(self.clone().receive(room.clone(), sub, back_tx.clone()));
                                let mut s = RoomSub { task, nonce: next_nonce, probe_at: None, held: false, waiting: Vec::new() };
                                next_nonce += 1 << 20;
                                self.probe(&client, &room, &mut s).await;
                                subs.insert(room, s);
                            }
                            Err(e) => {
                                tracing::warn!(%room, error = %e, "subscribe failed");
                                // Nothing to wait for: joins are answered locally.
                            }
                        }
                    }
                    Some(Control::Unsubscribe(room)) => {
                        if let Some(s) = subs.remove(&room) {
                            // Dropping the subscriber (with its task) sends the UNSUB.
                            s.task.abort();
                            for core in s.waiting {
                                self.confirm_core(&room, core, false);
                            }
                        }
                    }
                    Some(Control::AwaitConfirm(room, core)) => match subs.get_mut(&room) {
                        Some(s) if s.held => self.confirm_core(&room, core, true),
                        Some(s) if self.stats.state() == BrokerState::Connected => s.waiting.push(core),
                        _ => self.confirm_core(&room, core, false),
                    },
                },
                Some(Back::Probe(room, nonce)) = back_rx.recv() => {
                    if let Some(s) = subs.get_mut(&room) {
                        if s.nonce == nonce && !s.held {
                            s.held = true;
                            self.directory.confirm(&room);
                            for core in s.waiting.drain(..) {
                                self.confirm_core(&room, core, true);
                            }
                        }
                    }
                }
                Some((room, bytes)) = publish.recv() => {
                    if self.stats.state() != BrokerState::Connected {
                        ClusterStats::bump(&self.stats.publish_dropped);
                        continue;
                    }
                    match client.publish(payload::subject(&room), bytes).await {
                        Ok(()) => ClusterStats::bump(&self.stats.published),
                        Err(e) => {
                            ClusterStats::bump(&self.stats.publish_dropped);
                            tracing::debug!(error = %e, "publish failed");
                        }
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    let connected = self.stats.state() == BrokerState::Connected;
                    for (room, s) in subs.iter_mut().filter(|(_, s)| !s.held) {
                        let overdue = s
                            .probe_at
                            .is_none_or(|at| now >= at + self.config.confirm_timeout);
                        if !connected || overdue {
                            // Nobody waits for a broker that is not answering.
                            for core in s.waiting.drain(..) {
                                self.confirm_core(room, core, false);
                            }
                        }
                        if connected && overdue {
                            // Not probed yet (the link was down), or the probe was lost.
                            self.probe(&client, room, s).await;
                        }
                    }
                }
            }
        }
        for (_, s) in subs.drain() {
            s.task.abort();
        }
        let _ = client.drain().await;
    }

    /// Publishes the probe of a subscription (not while the broker is down: the
    /// periodic check sends it once the link is back).
    async fn probe(&self, client: &Client, room: &RoomName, s: &mut RoomSub) {
        if self.stats.state() != BrokerState::Connected {
            return;
        }
        s.nonce += 1;
        if let Ok(p) = payload::encode_probe(&self.config.node_name, room, s.nonce) {
            s.probe_at = Some(Instant::now());
            if client.publish(payload::subject(room), p).await.is_err() {
                s.probe_at = None;
            }
        }
    }

    fn confirm_core(&self, room: &RoomName, core: usize, by_broker: bool) {
        if !by_broker {
            ClusterStats::bump(&self.stats.unconfirmed_joins);
        }
        if let Some(m) = self.mailboxes.get(core) {
            m.confirm_room(room.clone());
        }
    }

    /// One room's subscription: hands messages from other nodes to the cores with
    /// members, and probes of this node back to the main loop.
    async fn receive(
        self: Arc<Self>,
        room: RoomName,
        mut sub: Subscriber,
        back: mpsc::UnboundedSender<Back>,
    ) {
        while let Some(msg) = sub.next().await {
            match payload::decode(msg.payload) {
                Ok(Payload::Probe {
                    origin,
                    room: r,
                    nonce,
                }) => {
                    if *origin == *self.config.node_name && r == room {
                        let _ = back.send(Back::Probe(r, nonce));
                    }
                }
                Ok(Payload::Message {
                    origin,
                    room: r,
                    from,
                    content_type,
                    content,
                }) => {
                    if *origin == *self.config.node_name {
                        ClusterStats::bump(&self.stats.self_echo);
                        continue;
                    }
                    if r != room {
                        ClusterStats::bump(&self.stats.decode_errors);
                        continue;
                    }
                    ClusterStats::bump(&self.stats.received);
                    let m = Arc::new(Broadcast {
                        content_type,
                        content,
                        room: Some(r),
                        from: Some(from),
                    });
                    self.directory.for_each_core(&room, |core| {
                        if let Some(mb) = self.mailboxes.get(core) {
                            mb.offer(&m);
                        }
                    });
                }
                Err(e) => {
                    ClusterStats::bump(&self.stats.decode_errors);
                    tracing::debug!(%room, error = %e, "payload from the broker not understood");
                }
            }
        }
    }
}
