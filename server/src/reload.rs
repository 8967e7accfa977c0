//! SIGHUP: which settings a running server takes from a re-read configuration.
//!
//! Keys, limits and timeouts change in place: new sessions get them at once, the
//! accept-time limits (`--max-sessions`, `--max-sessions-per-peer`) and the memory
//! budget apply from the next connection, and established sessions go on with the
//! settings they started with (and keep answering with their key). What is bound or
//! sized at start (listeners, cores, the admin endpoint, queues, the data rings, the
//! broker link) needs a restart: the old value stays and the caller logs the names
//! returned.

use crate::config::ServerConfig;

/// `new` with every restart-only setting taken back from `old`, and the names of those
/// that differed.
pub(crate) fn merge(
    old: &ServerConfig,
    mut new: ServerConfig,
) -> (ServerConfig, Vec<&'static str>) {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($($field:ident => $name:literal),* $(,)?) => {$(
            if new.$field != old.$field {
                kept.push($name);
                new.$field = old.$field.clone();
            }
        )*};
    }
    keep!(
        tcp => "tcp",
        unix => "unix",
        unix_mode => "unix_mode",
        line_mode => "line_mode",
        cores => "cores",
        admin => "admin",
        proxy_protocol => "proxy_protocol",
        stats_interval => "stats_interval",
        fanout_queue_len => "fanout_queue_len",
        fanout_queue_bytes => "fanout_queue_bytes",
        cluster => "cluster",
        ring_buffers => "ring_buffers",
        ring_buffer_size => "ring_buffer_size",
    );
    // Follows `mode` (the caller names a changed mode): the handler and the room routing
    // are chosen at start.
    new.rooms = old.rooms;
    (new, kept)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use sockchat_proto::Key;

    use super::*;

    #[test]
    fn restart_only_settings_are_kept_and_named() {
        let mut old = ServerConfig::new(Arc::new(Key::new(b"a")), false);
        old.tcp.push("127.0.0.1:1".parse().unwrap());
        old.cores = 2;
        let mut new = old.clone();
        new.tcp = vec!["127.0.0.1:2".parse().unwrap()];
        new.cores = 4;
        new.session_timeout = Duration::from_secs(99);
        new.max_sessions_per_peer = Some(3);
        new.max_rooms_per_session = 5;
        new.cluster = Some(crate::cluster::ClusterConfig {
            urls: vec!["nats://127.0.0.1:4222".into()],
            node_name: "n1".into(),
            confirm_timeout: Duration::from_secs(2),
        });
        let (merged, kept) = merge(&old, new);
        assert_eq!(kept, vec!["tcp", "cores", "cluster"]);
        assert_eq!(merged.cluster, None);
        assert_eq!(merged.max_rooms_per_session, 5);
        assert_eq!(merged.tcp, old.tcp);
        assert_eq!(merged.cores, 2);
        assert_eq!(merged.session_timeout, Duration::from_secs(99));
        assert_eq!(merged.max_sessions_per_peer, Some(3));
    }
}
