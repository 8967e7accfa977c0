//! The command line (`clap`), and its conversion into a [`ServerConfig`].

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use sockchat_proto::rooms::DEFAULT_MAX_ROOMS;
use sockchat_proto::{Key, KeyRing};

use crate::cluster::ClusterConfig;

use crate::config::{
    self, available_cores, parse_bytes, parse_duration, parse_mode, ConfigError, Mode, RateLimit,
    ServerConfig,
};
use crate::config_file::{self, ConfigFileError};
use crate::memory_budget;

/// Default TCP address (the reference's).
pub const DEFAULT_TCP: &str = "127.0.0.1:9999";
/// Default Unix socket path (the reference's).
pub const DEFAULT_UNIX: &str = "/tmp/chat.sock";

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Answer each message to its sender.
    Echo,
    /// Deliver each message to every other session on every core.
    Chat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// sockchat-server: a thread-per-core io_uring server for the sockchat protocol.
///
/// With no arguments it listens on TCP 127.0.0.1:9999 and Unix /tmp/chat.sock, in echo
/// mode, on all cores. After binding it prints one `listening tcp ADDR` or
/// `listening unix PATH` line per listener and then `ready` on stdout; logs go to stderr
/// (filter with RUST_LOG, e.g. RUST_LOG=debug). Durations take forms like 250ms, 5s, 1m;
/// byte sizes a number of bytes, optionally with a K, M or G suffix (powers of 1024).
#[derive(Debug, Parser)]
#[command(name = "sockchat-server", version, about, long_about)]
pub struct Cli {
    /// TCP address to listen on (repeatable). Giving --tcp or --unix replaces both
    /// defaults (127.0.0.1:9999 and /tmp/chat.sock). Port 0 picks a free port; the real
    /// one is printed.
    #[arg(long = "tcp", value_name = "ADDR")]
    pub tcp: Vec<SocketAddr>,

    /// Unix socket path to listen on (repeatable). A stale socket file is replaced; one
    /// with a live server behind it is an error.
    #[arg(long = "unix", value_name = "PATH")]
    pub unix: Vec<PathBuf>,

    /// Permission bits of the Unix socket files, in octal.
    #[arg(long, value_name = "OCTAL", default_value = "660", value_parser = parse_mode)]
    pub unix_mode: u32,

    /// Line mode: a connection whose first byte is not 0x89 speaks newline-terminated
    /// UTF-8 lines (no HMAC: only turn this on for trusted clients).
    #[arg(long)]
    pub line_mode: bool,

    /// File holding the shared HMAC keys, one per line (must not be accessible by group
    /// or others): the first signs new sessions, every one is accepted from clients, and
    /// a session answers with the key its client used; re-read on SIGHUP. Without it
    /// the reference default key is used, with a warning, and only on loopback/Unix
    /// listeners.
    #[arg(long, value_name = "PATH", env = "SOCKCHAT_KEY_FILE")]
    pub key_file: Option<PathBuf>,

    /// Allow the reference default key on a non-loopback TCP address (anyone can forge
    /// frames with it).
    #[arg(long)]
    pub insecure_default_key: bool,

    /// echo: each message goes back to its sender; chat: each message goes to every
    /// other session on every core.
    #[arg(long, value_enum, default_value_t = ModeArg::Echo)]
    pub mode: ModeArg,

    /// Number of io_uring runtimes (threads), pinned round-robin to the available CPUs.
    /// [default: all available CPUs]
    #[arg(long, value_name = "N")]
    pub cores: Option<usize>,

    /// Time a new connection has to send its session_ack.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Silence after which a session is closed with a `disconnect`.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub session_timeout: Duration,

    /// Most sessions at once across all cores; further connections get an `error` frame
    /// "Server full". [default: open-file limit minus headroom]
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,

    /// Largest frame content accepted, in bytes (at most the protocol's 10 MiB); also the
    /// longest line in line mode.
    #[arg(long, value_name = "BYTES", default_value = "10M", value_parser = parse_bytes)]
    pub max_frame: u64,

    /// Largest chunked message accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_bytes)]
    pub max_message: u64,

    /// Bytes queued to one session (not yet written) before it is closed as a slow
    /// consumer.
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_bytes)]
    pub send_queue_limit: u64,

    /// On SIGINT/SIGTERM, time allowed for the final `disconnect` frames to be written.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Log one line per interval with sessions, messages/s, bytes/s and closes by reason.
    /// [default: off]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub stats_interval: Option<Duration>,

    /// Chat mode: messages each core's inbound cross-core queue holds; when it is full,
    /// further messages for that core are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub fanout_queue_len: usize,

    /// Chat mode: most rooms one session may be a member of at once (the lobby counts);
    /// a join beyond it gets an `error` frame and the session stays open.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ROOMS)]
    pub max_rooms_per_session: usize,

    /// Chat mode: a NATS broker to share rooms with other nodes through, as
    /// nats://HOST:PORT (repeatable: tried in order, then in turn on reconnect). The node
    /// starts and serves locally even while no broker answers.
    #[arg(long = "cluster", value_name = "URL")]
    pub cluster: Vec<String>,

    /// This node's name in the cluster (the origin of what it publishes; unique per
    /// node). [default: HOSTNAME-PID]
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,

    /// Provided buffers in each core's data ring (a power of two, at most 32768). Every
    /// session's receive takes a buffer from it only while data arrives; the ring is
    /// allocated at start (count × size per core).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub ring_buffers: u16,

    /// Bytes per provided buffer of the data ring (512 B to 1 MiB).
    #[arg(long, value_name = "BYTES", default_value = "4K", value_parser = parse_bytes)]
    pub ring_buffer_size: u64,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, in RUST_LOG syntax (e.g. info, debug, sockchat_server=trace); reloaded
    /// on SIGHUP. [default: RUST_LOG if set, else info]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// TOML file of settings: every long flag is a key with `-` written `_` (e.g.
    /// `max_sessions_per_peer = 100`, `unix = ["/run/chat.sock"]`). Flags on the command
    /// line (and SOCKCHAT_KEY_FILE) win over the file. Re-read on SIGHUP.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Validate the configuration (flags, config file, key file) and exit: 0 when it is
    /// valid, 1 with the reason when it is not.
    #[arg(long)]
    pub check_config: bool,

    /// Serve the admin HTTP endpoint here: GET /metrics (Prometheus text), /healthz,
    /// /readyz, and POST /drain. Unauthenticated: keep it on loopback or a private
    /// network. [default: off]
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,

    /// Most sessions at once from one peer: a TCP peer is its IP address (the PROXY
    /// protocol's source address with --proxy-protocol), a Unix peer its uid. Further
    /// connections get an `error` frame naming the limit. [default: off]
    #[arg(long, value_name = "N")]
    pub max_sessions_per_peer: Option<usize>,

    /// Most messages per second one session may send (token bucket); above it the server
    /// stops reading that session until tokens return, so TCP pushes back on the sender.
    /// [default: off]
    #[arg(long, value_name = "N")]
    pub max_messages_per_sec: Option<u32>,

    /// Burst of the --max-messages-per-sec token bucket (messages accepted at once after
    /// a quiet spell). [default: the per-second rate]
    #[arg(long, value_name = "N")]
    pub messages_burst: Option<u32>,

    /// TCP listeners expect a PROXY protocol (v1 or v2) header from a trusted load
    /// balancer first; its source address is used for per-peer limits and logs. A
    /// connection without a valid header is closed.
    #[arg(long)]
    pub proxy_protocol: bool,

    /// Memory, across all cores, for partial frames, partial chunked messages and send
    /// queues; a large frame or new chunked message that would pass it is refused with an
    /// `error` frame. Each core gets an equal share. [default: a quarter of physical
    /// memory]
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub memory_budget: Option<u64>,

    /// Time a chunked message has to complete once its first chunk arrived; after it,
    /// the session gets an `error` frame and is closed.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub message_timeout: Duration,

    /// On SIGUSR2 (or POST /drain): time over which sessions are sent `disconnect`
    /// "Server draining", spread evenly, before the process exits 0.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub drain_period: Duration,
}

/// The command with its help text completed by values only known at run time (the
/// derived `--max-sessions` and `--cores` defaults).
pub fn command() -> clap::Command {
    let max = config::default_max_sessions();
    let cores = available_cores();
    Cli::command()
        .mut_arg("max_sessions", |a| {
            a.help(format!(
                "Most sessions at once across all cores; further connections get an `error` \
                 frame \"Server full\" [default here: {max}, the open-file limit minus headroom]"
            ))
        })
        .mut_arg("cores", |a| {
            a.help(format!(
                "Number of io_uring runtimes (threads), pinned round-robin to the available \
                 CPUs [default here: {cores}, the available CPUs]"
            ))
        })
}

/// Why the command line and config file could not be turned into a [`Cli`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The command line itself (including `--help` and `--version`, which clap reports
    /// as errors to print and exit with).
    #[error(transparent)]
    Usage(#[from] clap::Error),
    /// The config file.
    #[error(transparent)]
    File(#[from] ConfigFileError),
}

/// Parses `argv` (program name first) and the `--config` file it names, if any; the
/// command line wins over the file. Called at start and again on SIGHUP.
pub fn load(argv: &[OsString]) -> Result<Cli, LoadError> {
    let cmd = command();
    let m = cmd.clone().try_get_matches_from(argv)?;
    let Some(path) = m.get_one::<PathBuf>("config").cloned() else {
        return Ok(Cli::from_arg_matches(&m)?);
    };
    let table = config_file::read(&path)?;
    let from_file = config_file::to_args(&cmd, &m, &table, &path)?;
    let mut all: Vec<OsString> = argv.iter().take(1).cloned().collect();
    all.extend(from_file);
    all.extend(argv.iter().skip(1).cloned());
    let m = cmd
        .try_get_matches_from(all)
        .map_err(|e| ConfigFileError::Flag {
            path: path.clone(),
            message: e.kind().to_string() + ": " + e.to_string().lines().next().unwrap_or(""),
        })?;
    Ok(Cli::from_arg_matches(&m)?)
}

impl Cli {
    /// Parses the process arguments (exits with usage on error, as clap does).
    pub fn parse_args() -> Self {
        Self::from_matches(command().get_matches())
    }

    /// Parses `args` (the first one is the program name).
    pub fn try_parse_from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let m = command().try_get_matches_from(args)?;
        Cli::from_arg_matches(&m)
    }

    fn from_matches(m: ArgMatches) -> Self {
        match Cli::from_arg_matches(&m) {
            Ok(c) => c,
            Err(e) => e.exit(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        match self.mode {
            ModeArg::Echo => Mode::Echo,
            ModeArg::Chat => Mode::Chat,
        }
    }

    /// Loads the key and builds the validated configuration.
    pub fn to_config(&self) -> Result<ServerConfig, ConfigError> {
        let (keys, default_key) = match &self.key_file {
            Some(p) => (sockchat_os::read_key_ring(p)?, false),
            None => (KeyRing::single(Arc::new(Key::reference_default())), true),
        };
        let mut c = ServerConfig::with_keys(Arc::new(keys), default_key);
        if self.tcp.is_empty() && self.unix.is_empty() {
            c.tcp
                .push(DEFAULT_TCP.parse().expect("valid default address"));
            c.unix.push(PathBuf::from(DEFAULT_UNIX));
        } else {
            c.tcp.clone_from(&self.tcp);
            c.unix.clone_from(&self.unix);
        }
        c.unix_mode = self.unix_mode;
        c.line_mode = self.line_mode;
        if let Some(n) = self.cores {
            c.cores = n;
        }
        c.handshake_timeout = self.handshake_timeout;
        c.session_timeout = self.session_timeout;
        if let Some(n) = self.max_sessions {
            c.max_sessions = n;
        }
        c.max_frame = self.max_frame;
        c.max_message = self.max_message;
        c.send_queue_limit = usize::try_from(self.send_queue_limit).unwrap_or(usize::MAX);
        c.shutdown_grace = self.shutdown_grace;
        c.stats_interval = self.stats_interval.filter(|d| !d.is_zero());
        c.fanout_queue_len = self.fanout_queue_len.max(1);
        c.ring_buffers = self.ring_buffers;
        c.ring_buffer_size = u32::try_from(self.ring_buffer_size).unwrap_or(u32::MAX);
        c.fanout_queue_bytes = c.send_queue_limit.saturating_mul(8);
        c.rooms = self.mode() == Mode::Chat;
        c.max_rooms_per_session = self.max_rooms_per_session;
        if !self.cluster.is_empty() {
            c.cluster = Some(ClusterConfig {
                urls: self.cluster.clone(),
                node_name: self.node_name.clone().unwrap_or_else(default_node_name),
                confirm_timeout: Duration::from_secs(2),
            });
        }
        c.admin = self.admin;
        c.max_sessions_per_peer = self.max_sessions_per_peer;
        c.rate_limit = self.max_messages_per_sec.map(|per_sec| RateLimit {
            per_sec,
            burst: self.messages_burst.unwrap_or(per_sec),
        });
        c.proxy_protocol = self.proxy_protocol;
        c.memory_budget = self
            .memory_budget
            .unwrap_or_else(memory_budget::default_budget);
        c.message_timeout = self.message_timeout;
        c.drain_period = self.drain_period;
        c.validate(self.insecure_default_key)?;
        Ok(c)
    }
}

/// `HOSTNAME-PID`, with characters outside `[A-Za-z0-9_.-]` replaced by `_`.
fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    format!(
        "{}-{}",
        if host.is_empty() { "node" } else { &host },
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let mut v = vec!["sockchat-server"];
        v.extend_from_slice(args);
        Cli::try_parse_from_args(v).unwrap()
    }

    #[test]
    fn rooms_and_cluster_flags_are_config_file_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(
            &path,
            "mode = \"chat\"\nmax_rooms_per_session = 8\nnode_name = \"chat-1\"\n\
             cluster = [\"nats://127.0.0.1:4222\", \"nats://127.0.0.1:4223\"]\n",
        )
        .unwrap();
        let argv: Vec<OsString> = ["sockchat-server", "--config"]
            .iter()
            .map(OsString::from)
            .chain([path.into_os_string()])
            .collect();
        let c = load(&argv).unwrap().to_config().unwrap();
        assert!(c.rooms);
        assert_eq!(c.max_rooms_per_session, 8);
        let cluster = c.cluster.expect("cluster from the file");
        assert_eq!(
            cluster.urls,
            ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]
        );
        assert_eq!(cluster.node_name, "chat-1");
    }

    #[test]
    fn defaults_are_the_references() {
        let c = parse(&[]).to_config().unwrap();
        assert_eq!(c.tcp, vec!["127.0.0.1:9999".parse().unwrap()]);
        assert_eq!(c.unix, vec![PathBuf::from("/tmp/chat.sock")]);
        assert!(c.default_key);
        assert_eq!(c.unix_mode, 0o660);
        assert_eq!(c.handshake_timeout, Duration::from_secs(5));
        assert_eq!(c.session_timeout, Duration::from_secs(30));
        assert_eq!(c.max_frame, 10 * 1024 * 1024);
        assert_eq!(c.max_message, 64 * 1024 * 1024);
        assert_eq!(c.send_queue_limit, 8 * 1024 * 1024);
        assert_eq!(c.shutdown_grace, Duration::from_secs(5));
        assert_eq!(c.stats_interval, None);
        assert_eq!(parse(&[]).mode(), Mode::Echo);
    }

    #[test]
    fn listeners_replace_defaults() {
        let c = parse(&["--unix", "/tmp/a.sock", "--unix", "/tmp/b.sock"])
            .to_config()
            .unwrap();
        assert!(c.tcp.is_empty());
        assert_eq!(c.unix.len(), 2);
        let c = parse(&["--tcp", "127.0.0.1:0"]).to_config().unwrap();
        assert!(c.unix.is_empty());
    }

    #[test]
    fn flags_parse() {
        let cli = parse(&[
            "--cores",
            "8",
            "--mode",
            "chat",
            "--line-mode",
            "--handshake-timeout",
            "250ms",
            "--session-timeout",
            "1m",
            "--max-sessions",
            "10",
            "--send-queue-limit",
            "64K",
            "--shutdown-grace",
            "1s",
            "--unix-mode",
            "600",
            "--log-format",
            "json",
            "--stats-interval",
            "2s",
            "--tcp",
            "127.0.0.1:0",
        ]);
        assert_eq!(cli.mode(), Mode::Chat);
        assert_eq!(cli.log_format, LogFormat::Json);
        let c = cli.to_config().unwrap();
        assert_eq!(c.cores, 8);
        assert!(c.line_mode);
        assert_eq!(c.handshake_timeout, Duration::from_millis(250));
        assert_eq!(c.session_timeout, Duration::from_secs(60));
        assert_eq!(c.max_sessions, 10);
        assert_eq!(c.send_queue_limit, 64 * 1024);
        assert_eq!(c.unix_mode, 0o600);
        assert_eq!(c.stats_interval, Some(Duration::from_secs(2)));
    }

    #[test]
    fn default_key_off_loopback_is_refused() {
        let e = parse(&["--tcp", "0.0.0.0:0"]).to_config().unwrap_err();
        assert!(matches!(e, ConfigError::InsecureDefaultKey(_)));
        assert!(parse(&["--tcp", "0.0.0.0:0", "--insecure-default-key"])
            .to_config()
            .is_ok());
    }

    #[test]
    fn help_documents_every_flag() {
        let help = command().render_long_help().to_string();
        for flag in [
            "--tcp",
            "--unix",
            "--unix-mode",
            "--line-mode",
            "--key-file",
            "--insecure-default-key",
            "--mode",
            "--cores",
            "--handshake-timeout",
            "--session-timeout",
            "--max-sessions",
            "--max-frame",
            "--max-message",
            "--send-queue-limit",
            "--shutdown-grace",
            "--stats-interval",
            "--log-format",
            "--max-rooms-per-session",
            "--cluster",
            "--node-name",
        ] {
            assert!(help.contains(flag), "--help lacks {flag}");
        }
        assert!(help.contains("default here"));
        assert!(!help.contains("default-key\""));
    }
}
