//! `/metrics`: the counters of every core, summed at scrape time, in the Prometheus /
//! OpenMetrics text format written by `prometheus-client`.
//!
//! The cores keep their own plain atomics (see `stats.rs`) rather than
//! `prometheus-client` metric objects, so the hot path stays one relaxed add on a
//! core-local cache line; a [`Collector`] reads and sums them for each scrape. There are
//! no per-session labels: sessions by transport and core, closes by reason.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use sockchat_proto::{CloseReason, RoomError};

use crate::cluster::{BrokerState, ClusterStats};
use crate::server::{Phase, Shared};
use crate::stats::Snapshot;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The exposition text for the server behind `shared`.
pub(crate) fn render(shared: &Arc<Shared>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("sockchat");
    registry.register(
        "build",
        "Version of the running sockchat-server",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry.register_collector(Box::new(CoreCounters(shared.clone())));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct CoreCounters(Arc<Shared>);

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for CoreCounters {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let shared = &self.0;
        let cores = shared.core_snapshots();
        let t = Snapshot::sum(&cores);
        let config = shared.config.load();

        let g = ConstGauge::new(0i64);
        {
            let mut sessions = enc.encode_descriptor(
                "sessions",
                "Sessions open now, by transport and core",
                None,
                g.metric_type(),
            )?;
            for (core, s) in cores.iter().enumerate() {
                let core = core.to_string();
                for (transport, n) in [
                    ("tcp", s.sessions_tcp),
                    ("unix", s.sessions - s.sessions_tcp),
                ] {
                    let labels = [("transport", transport), ("core", core.as_str())];
                    ConstGauge::new(n as i64).encode(sessions.encode_family(&labels)?)?;
                }
            }
        }

        counter(
            &mut enc,
            "sessions_accepted",
            "Connections accepted (refused ones included)",
            t.accepted,
        )?;
        counter(
            &mut enc,
            "messages_received",
            "Application messages received",
            t.messages_in,
        )?;
        counter(
            &mut enc,
            "messages_sent",
            "Application messages queued to peers (echoes and chat deliveries)",
            t.messages_out,
        )?;
        counter(
            &mut enc,
            "bytes_received",
            "Bytes read from peers",
            t.bytes_in,
        )?;
        counter(
            &mut enc,
            "bytes_sent",
            "Bytes written to peers",
            t.bytes_out,
        )?;

        let c = ConstCounter::new(0u64);
        {
            let mut closes = enc.encode_descriptor(
                "session_closes",
                "Sessions ended (and connections refused), by reason",
                None,
                c.metric_type(),
            )?;
            for (i, reason) in CloseReason::LABELS.iter().enumerate() {
                let labels = [("reason", *reason)];
                ConstCounter::new(t.closes[i]).encode(closes.encode_family(&labels)?)?;
            }
        }

        gauge(
            &mut enc,
            "send_queue_bytes",
            "Bytes queued to peers and not yet written",
            t.send_queue_bytes,
        )?;
        gauge(&mut enc, "memory_reserved_bytes", "Bytes held for partial frames, partial chunked messages and send queues (charged to --memory-budget)", t.memory_bytes)?;
        gauge(
            &mut enc,
            "memory_budget_bytes",
            "The --memory-budget in force",
            config.memory_budget,
        )?;
        gauge(
            &mut enc,
            "max_sessions",
            "The --max-sessions in force",
            config.max_sessions as u64,
        )?;
        counter(
            &mut enc,
            "bytes_copied",
            "Bytes copied in user space from the data ring's receive buffers into sessions (and from there into chunks' slots)",
            t.bytes_copied,
        )?;
        counter(
            &mut enc,
            "bytes_in_place",
            "Bytes received by the kernel straight into a large frame's own buffer or a chunk's slot of its message (not copied in user space)",
            t.bytes_in_place,
        )?;
        counter(
            &mut enc,
            "ring_enobufs",
            "Receives parked because the data ring had no free buffer (re-armed once buffers came back; nothing is lost)",
            t.ring_enobufs,
        )?;
        counter(
            &mut enc,
            "ring_rearmed",
            "Parked receives re-armed",
            t.ring_rearmed,
        )?;
        counter(
            &mut enc,
            "fanout_dropped",
            "Chat messages dropped because a core's inbound queue was full",
            t.fanout_dropped,
        )?;
        counter(
            &mut enc,
            "rate_limited",
            "Times a session's reading was paused by --max-messages-per-sec",
            t.rate_limited,
        )?;
        counter(
            &mut enc,
            "proxy_header_rejected",
            "Connections closed for a missing or invalid PROXY protocol header",
            t.proxy_rejected,
        )?;
        let c = ConstCounter::new(0u64);
        {
            let mut refusals = enc.encode_descriptor(
                "room_refusals",
                "Chat mode: room requests and room messages refused with an error frame (the session stays open), by reason",
                None,
                c.metric_type(),
            )?;
            for (i, reason) in RoomError::LABELS.iter().enumerate() {
                let labels = [("reason", *reason)];
                ConstCounter::new(t.room_refusals[i]).encode(refusals.encode_family(&labels)?)?;
            }
        }
        if let Some(cluster) = &shared.cluster {
            broker(&mut enc, &cluster.stats)?;
        }
        gauge(
            &mut enc,
            "ready",
            "1 while accepting; 0 while starting, draining or stopping",
            u64::from(shared.phase() == Phase::Ready),
        )?;
        Ok(())
    }
}

/// The NATS link of a clustered node (`--cluster`): its state as a state set (1 for the
/// current state) and its counters.
fn broker(enc: &mut DescriptorEncoder<'_>, s: &ClusterStats) -> Result<(), std::fmt::Error> {
    use std::sync::atomic::Ordering::Relaxed;
    let g = ConstGauge::new(0i64);
    {
        let mut state = enc.encode_descriptor(
            "broker_state",
            "The NATS broker link: 1 for its current state",
            None,
            g.metric_type(),
        )?;
        let now = s.state();
        for st in BrokerState::ALL {
            let labels = [("state", st.as_str())];
            ConstGauge::new(i64::from(st == now)).encode(state.encode_family(&labels)?)?;
        }
    }
    for (name, help, value) in [
        (
            "broker_published",
            "Room messages published to the broker",
            &s.published,
        ),
        (
            "broker_publish_dropped",
            "Room messages that could not go to the broker (link down, queue full, refused): dropped and counted",
            &s.publish_dropped,
        ),
        (
            "broker_received",
            "Room messages received from other nodes",
            &s.received,
        ),
        (
            "broker_self_echo",
            "Own publications that came back from the broker and were dropped",
            &s.self_echo,
        ),
        (
            "broker_decode_errors",
            "Payloads from the broker that did not decode",
            &s.decode_errors,
        ),
        (
            "broker_unconfirmed_joins",
            "Joins answered without the broker confirming the subscription",
            &s.unconfirmed_joins,
        ),
        (
            "broker_disconnects",
            "Losses of the broker connection",
            &s.disconnects,
        ),
        (
            "broker_reconnects",
            "Broker connections re-established after a loss",
            &s.reconnects,
        ),
    ] {
        counter(enc, name, help, value.load(Relaxed))?;
    }
    Ok(())
}
