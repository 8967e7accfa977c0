//! Server configuration: the validated, typed form of the command line, plus the helpers
//! that turn operator input (byte sizes, durations, the session count the open-file limit allows) into it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sockchat_proto::chunk::ChunkLimits;
use sockchat_proto::frame::{Limits, MAX_CONTENT_LEN, MAX_HEADER_LEN};
use sockchat_proto::rooms::DEFAULT_MAX_ROOMS;
use sockchat_proto::{Features, Key, KeyRing, SessionConfig};

use crate::cluster::ClusterConfig;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The key file was refused (unreadable, too open, or empty).
    #[error(transparent)]
    KeyFile(#[from] sockchat_os::KeyFileError),
    /// A non-loopback TCP address with the publicly known default key.
    #[error(
        "refusing to listen on non-loopback address {0} with the reference default key \
         (anyone can forge frames with it): give --key-file, or --insecure-default-key"
    )]
    InsecureDefaultKey(SocketAddr),
    /// A value is out of range.
    #[error("invalid value for {flag}: {reason}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// What the server does with messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Each message goes back to its sender.
    #[default]
    Echo,
    /// Each message goes to every other session on every core.
    Chat,
}

/// Everything the server needs to run, validated.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// TCP addresses to listen on.
    pub tcp: Vec<SocketAddr>,
    /// Unix socket paths to listen on.
    pub unix: Vec<PathBuf>,
    /// Permission bits given to the Unix socket files.
    pub unix_mode: u32,
    /// Speak line mode to connections whose first byte is not 0x89.
    pub line_mode: bool,
    /// Number of runtimes (threads).
    pub cores: usize,
    /// The shared keys: the first signs new sessions, every one verifies a client's ack.
    pub keys: Arc<KeyRing>,
    /// True when `key` is the reference default.
    pub default_key: bool,
    /// Time allowed for the `session_ack`.
    pub handshake_timeout: Duration,
    /// Silence after which a session is closed.
    pub session_timeout: Duration,
    /// Most sessions at once, across all cores.
    pub max_sessions: usize,
    /// Largest frame content accepted (also the line-mode line limit).
    pub max_frame: u64,
    /// Largest chunked message accepted.
    pub max_message: u64,
    /// Bytes queued to one session before it is closed as a slow consumer.
    pub send_queue_limit: usize,
    /// Time allowed for the `disconnect` frames to go out at shutdown.
    pub shutdown_grace: Duration,
    /// Period of the stats log line; `None`: off.
    pub stats_interval: Option<Duration>,
    /// Capacity, in messages, of each core's inbound chat queue.
    pub fanout_queue_len: usize,
    /// Capacity, in content bytes, of each core's inbound chat queue.
    pub fanout_queue_bytes: usize,
    /// Chat mode: offer the rooms extension and route messages by room membership.
    pub rooms: bool,
    /// Most rooms one session may be a member of (the lobby counts).
    pub max_rooms_per_session: usize,
    /// Chat across nodes through a NATS broker (chat mode only).
    pub cluster: Option<ClusterConfig>,
    /// Address of the admin HTTP endpoint; `None`: off.
    pub admin: Option<SocketAddr>,
    /// Most sessions at once from one peer (TCP: IP address; Unix: uid); `None`: off.
    pub max_sessions_per_peer: Option<usize>,
    /// Per-session message rate; `None`: off.
    pub rate_limit: Option<RateLimit>,
    /// TCP listeners expect a PROXY protocol header first.
    pub proxy_protocol: bool,
    /// Bytes for partial frames, partial chunked messages and send queues, all cores
    /// together.
    pub memory_budget: u64,
    /// Time a chunked message has to complete.
    pub message_timeout: Duration,
    /// Time over which a drain disconnects the sessions.
    pub drain_period: Duration,
    /// Provided buffers in each core's data ring.
    pub ring_buffers: u16,
    /// Bytes per provided buffer.
    pub ring_buffer_size: u32,
}

/// `--max-messages-per-sec` and its burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages per second, sustained.
    pub per_sec: u32,
    /// Messages accepted at once after a quiet spell.
    pub burst: u32,
}

impl ServerConfig {
    /// A configuration with the documented defaults and one key, listening nowhere yet.
    pub fn new(key: Arc<Key>, default_key: bool) -> Self {
        Self::with_keys(Arc::new(KeyRing::single(key)), default_key)
    }

    /// Same, with several keys (the first signs new sessions).
    pub fn with_keys(keys: Arc<KeyRing>, default_key: bool) -> Self {
        Self {
            tcp: Vec::new(),
            unix: Vec::new(),
            unix_mode: 0o660,
            line_mode: false,
            cores: available_cores(),
            keys,
            default_key,
            handshake_timeout: Duration::from_secs(5),
            session_timeout: Duration::from_secs(30),
            max_sessions: default_max_sessions(),
            max_frame: MAX_CONTENT_LEN,
            max_message: ChunkLimits::default().max_message_len,
            send_queue_limit: 8 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(5),
            stats_interval: None,
            fanout_queue_len: 4096,
            fanout_queue_bytes: 64 * 1024 * 1024,
            rooms: false,
            max_rooms_per_session: DEFAULT_MAX_ROOMS,
            cluster: None,
            admin: None,
            max_sessions_per_peer: None,
            rate_limit: None,
            proxy_protocol: false,
            memory_budget: crate::memory_budget::default_budget(),
            message_timeout: Duration::from_secs(60),
            drain_period: Duration::from_secs(30),
            ring_buffers: 4096,
            ring_buffer_size: 4096,
        }
    }

    /// Checks ranges and the default-key rule.
    pub fn validate(&self, insecure_default_key: bool) -> Result<(), ConfigError> {
        let invalid = |flag, reason: &str| ConfigError::Invalid {
            flag,
            reason: reason.to_string(),
        };
        if self.cores == 0 {
            return Err(invalid("--cores", "must be at least 1"));
        }
        if self.cores > 1024 {
            return Err(invalid("--cores", "at most 1024"));
        }
        if self.max_frame == 0 || self.max_frame > MAX_CONTENT_LEN {
            return Err(ConfigError::Invalid {
                flag: "--max-frame",
                reason: format!("must be between 1 and {MAX_CONTENT_LEN} (the protocol limit)"),
            });
        }
        if self.max_sessions == 0 {
            return Err(invalid("--max-sessions", "must be at least 1"));
        }
        if self.send_queue_limit == 0 {
            return Err(invalid("--send-queue-limit", "must be at least 1"));
        }
        if self.handshake_timeout.is_zero() || self.session_timeout.is_zero() {
            return Err(invalid("timeouts", "must be greater than zero"));
        }
        if self.max_sessions_per_peer == Some(0) {
            return Err(invalid("--max-sessions-per-peer", "must be at least 1"));
        }
        if let Some(r) = self.rate_limit {
            if r.per_sec == 0 || r.burst == 0 {
                return Err(invalid(
                    "--max-messages-per-sec/--messages-burst",
                    "must be at least 1",
                ));
            }
        }
        if !self.ring_buffers.is_power_of_two() || self.ring_buffers > 32768 {
            return Err(invalid(
                "--ring-buffers",
                "must be a power of two between 1 and 32768",
            ));
        }
        if !(512..=1024 * 1024).contains(&self.ring_buffer_size) {
            return Err(invalid(
                "--ring-buffer-size",
                "must be between 512 B and 1 MiB",
            ));
        }
        if self.memory_budget == 0 {
            return Err(invalid("--memory-budget", "must be at least 1"));
        }
        if self.message_timeout.is_zero() {
            return Err(invalid("--message-timeout", "must be greater than zero"));
        }
        if self.unix_mode > 0o777 {
            return Err(invalid("--unix-mode", "permission bits only (at most 777)"));
        }
        if self.max_rooms_per_session == 0 {
            return Err(invalid("--max-rooms-per-session", "must be at least 1"));
        }
        if let Some(c) = &self.cluster {
            if !self.rooms {
                return Err(invalid("--cluster", "needs --mode chat"));
            }
            let name_ok = (1..=64).contains(&c.node_name.len())
                && c.node_name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !name_ok {
                return Err(invalid(
                    "--node-name",
                    "1-64 characters from [A-Za-z0-9_.-]",
                ));
            }
            if c.urls.is_empty() {
                return Err(invalid("--cluster", "at least one nats://HOST:PORT"));
            }
        }
        if self.tcp.is_empty() && self.unix.is_empty() {
            return Err(invalid("--tcp/--unix", "nothing to listen on"));
        }
        if self.default_key && !insecure_default_key {
            if let Some(addr) = self.tcp.iter().find(|a| !a.ip().is_loopback()) {
                return Err(ConfigError::InsecureDefaultKey(*addr));
            }
        }
        Ok(())
    }

    /// The per-session settings handed to every `ServerSession`.
    pub fn session_config(&self) -> SessionConfig {
        SessionConfig {
            limits: Limits::new(MAX_HEADER_LEN, self.max_frame),
            handshake_timeout: self.handshake_timeout,
            session_timeout: self.session_timeout,
            chunk: ChunkLimits {
                max_message_len: self.max_message,
                ..ChunkLimits::default()
            },
            features: if self.rooms {
                Features::ALL
            } else {
                Features::CHUNK
            },
            max_rooms: self.max_rooms_per_session,
            message_timeout: Some(self.message_timeout),
            ..SessionConfig::default()
        }
    }
}

/// Number of CPUs this process may run on.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// File descriptors kept free for listeners, eventfds, the io_uring rings, logs and
/// key files, per process plus per core.
pub const FD_HEADROOM: u64 = 64;

/// Default `--max-sessions`: the open-file limit (raised to the hard limit) minus
/// headroom for listeners, per-core rings and eventfds, and the process itself.
pub fn default_max_sessions() -> usize {
    // 1024 (the usual default soft limit) if the limit cannot even be read.
    let nofile = sockchat_os::raise_nofile_limit().unwrap_or(1024);
    max_sessions_for(nofile, available_cores())
}

/// `nofile - headroom`, at least 1.
pub fn max_sessions_for(nofile: u64, cores: usize) -> usize {
    let headroom = FD_HEADROOM + 4 * cores as u64;
    nofile.saturating_sub(headroom).max(1) as usize
}

/// Parses a byte size: a plain integer, or one with a `K`, `M` or `G` suffix (powers of
/// 1024; `KiB`/`MiB`/`GiB` and a trailing `B` are accepted too).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(format!("{s:?} is not a byte size (e.g. 8388608, 8M, 64K)"));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a byte size"))?;
    let mult: u64 = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        other => return Err(format!("unknown size suffix {other:?} (use K, M or G)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses a duration in humantime form (`250ms`, `5s`, `1m`); a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| e.to_string());
    }
    humantime::parse_duration(t).map_err(|e| format!("{s:?}: {e} (e.g. 250ms, 5s, 1m)"))
}

/// Parses octal permission bits (`660`, `0660`, `0o660`).
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let t = t.strip_prefix("0o").unwrap_or(t);
    let m = u32::from_str_radix(t, 8).map_err(|_| format!("{s:?} is not an octal mode"))?;
    if m > 0o777 {
        return Err(format!("{s:?}: permission bits only (at most 777)"));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("8388608"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_bytes("8M"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_bytes("64k"), Ok(64 * 1024));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("10B"), Ok(10));
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("M").is_err());
        assert!(parse_bytes("5X").is_err());
        assert!(parse_bytes("99999999999999999999G").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert_eq!(parse_mode("0o700"), Ok(0o700));
        assert!(parse_mode("8").is_err());
        assert!(parse_mode("1777").is_err());
    }

    #[test]
    fn max_sessions_leaves_headroom() {
        assert_eq!(max_sessions_for(20_000, 2), 20_000 - 64 - 8);
        assert_eq!(max_sessions_for(10, 2), 1);
    }

    fn cfg() -> ServerConfig {
        let mut c = ServerConfig::new(Arc::new(Key::reference_default()), true);
        c.cores = 2;
        c.max_sessions = 100;
        c
    }

    #[test]
    fn default_key_refused_off_loopback() {
        let mut c = cfg();
        c.tcp.push("127.0.0.1:9999".parse().unwrap());
        assert!(c.validate(false).is_ok());
        c.tcp.push("0.0.0.0:9999".parse().unwrap());
        assert!(matches!(
            c.validate(false),
            Err(ConfigError::InsecureDefaultKey(_))
        ));
        assert!(c.validate(true).is_ok());
        c.default_key = false;
        assert!(c.validate(false).is_ok());
    }

    #[test]
    fn limits_checked() {
        let mut c = cfg();
        c.unix.push("/tmp/x.sock".into());
        c.max_frame = MAX_CONTENT_LEN + 1;
        assert!(c.validate(false).is_err());
        c.max_frame = 1024;
        assert!(c.validate(false).is_ok());
        assert_eq!(c.session_config().limits.max_content_len(), 1024);
        c.cores = 0;
        assert!(c.validate(false).is_err());
    }
}
