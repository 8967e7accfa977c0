//! `sockchat-client`: interactive, file and send modes over TCP or a Unix socket.
//!
//! Exit status: 0 when every message sent was echoed back; 1 with a one-line reason on
//! stderr otherwise; 130 after Ctrl+C (force quit); 2 for usage errors.

mod file_mode;
mod interactive;
mod rooms;
mod send_file;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use sockchat_client::{
    connect_with_retry, Addr, Backoff, Client, ClientError, ClientOptions, CloseReason, Key,
    KeyRing,
};

/// Client for a sockchat (Async Socket Chat) server.
#[derive(Debug, Parser)]
#[command(name = "sockchat-client", version)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,

    /// Server TCP address (default 127.0.0.1:9999).
    #[arg(long, global = true, value_name = "ADDR", conflicts_with = "unix")]
    tcp: Option<String>,

    /// Server Unix socket path.
    #[arg(long, global = true, value_name = "PATH")]
    unix: Option<PathBuf>,

    /// File holding the shared HMAC keys, read as the server reads it: one key per line
    /// of a text file, all of them accepted on the server's `session_init` (a key
    /// rotation); a binary file is one key less one trailing newline. Without it the
    /// reference default `default-key` is used.
    #[arg(long, global = true, env = "SOCKCHAT_KEY_FILE", value_name = "PATH")]
    key_file: Option<PathBuf>,

    /// Retries after a failed connect or a dropped connection (exponential backoff
    /// with jitter, 100 ms doubling up to 5 s).
    #[arg(long, global = true, default_value_t = 5, value_name = "N")]
    retries: u32,

    /// Heartbeat interval, e.g. `5`, `2.5s`, `500ms`.
    #[arg(long, global = true, default_value = "5", value_parser = parse_duration)]
    heartbeat: Duration,

    /// How long to wait for an echo before giving up.
    #[arg(long, global = true, default_value = "30", value_parser = parse_duration)]
    echo_timeout: Duration,

    /// The server does not echo messages back (e.g. `sockchat-server --mode chat`):
    /// interactive mode then neither tracks nor waits for echoes. File mode and `--send`
    /// exist to verify echoes and refuse it.
    #[arg(long, global = true)]
    no_echo: bool,

    /// Chat servers: join this room at start and send to it (interactive: the room the
    /// typed lines go to until `/room`). File mode and `--send` then need `--no-echo`
    /// (a chat server sends no echo).
    #[arg(long, global = true, value_name = "ROOM")]
    room: Option<String>,

    /// Send this file's bytes as one message and verify the echo.
    #[arg(long, value_name = "FILE")]
    send: Option<PathBuf>,

    /// Content type for `--send` (default: guessed from the file extension).
    #[arg(long, value_name = "TYPE", requires = "send")]
    content_type: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Type messages at a `> ` prompt; `exit` or Ctrl+D leaves, Ctrl+C force quits.
    Interactive,
    /// Send each non-blank line of a file (up to a line `exit`) and wait for every echo.
    File {
        /// The messages, one per line.
        messages: PathBuf,
        /// Pause between two messages, e.g. `0.5`, `200ms`.
        #[arg(long, default_value = "0", value_parser = parse_duration)]
        interval: Duration,
    },
}

/// Parses `1.5`, `1.5s` or `250ms`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 5, 2.5s or 500ms)"))?;
    Duration::try_from_secs_f64(v * scale).map_err(|e| format!("{s:?}: {e}"))
}

/// What every mode needs to (re)connect.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub addr: Addr,
    pub options: ClientOptions,
    pub retries: u32,
    pub echo_timeout: Duration,
    pub no_echo: bool,
    pub room: Option<String>,
}

impl Settings {
    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::new(self.retries)
    }

    /// Connects, printing each retry on stderr through `log`.
    pub(crate) fn connect(
        &self,
        backoff: &mut Backoff,
        log: &mut dyn FnMut(String),
    ) -> anyhow::Result<Client> {
        connect_with_retry(&self.addr, &self.options, backoff, |e, n, d| {
            log(format!(
                "{e}; retry {n}/{} in {} ms",
                self.retries,
                d.as_millis()
            ))
        })
        .map_err(|e| give_up(e, backoff))
    }
}

fn give_up(e: ClientError, backoff: &Backoff) -> anyhow::Error {
    if e.is_retryable() && backoff.used() > 0 {
        anyhow::anyhow!("{e} (gave up after {} retries)", backoff.used())
    } else {
        e.into()
    }
}

/// How the end of a session reads to a person: the server's own reason when it gave
/// one (`server disconnected: Server shutting down`).
pub(crate) fn describe_close(reason: &CloseReason) -> String {
    match reason {
        CloseReason::ServerShutdown | CloseReason::ServerDisconnect { .. } => {
            format!("server disconnected: {}", reason.wire_reason())
        }
        other => format!("connection lost: {}", other.wire_reason()),
    }
}

/// After the session ended for `reason`: waits the backoff delay and returns `Ok` if a
/// reconnect should follow, or the error to exit with.
pub(crate) fn after_close(
    reason: &CloseReason,
    backoff: &mut Backoff,
    log: &mut dyn FnMut(String),
) -> anyhow::Result<()> {
    let what = describe_close(reason);
    if !sockchat_client::is_retryable(reason) {
        bail!("{what}");
    }
    match backoff.next_delay() {
        Some(d) => {
            log(format!(
                "{what}; retry {}/{} in {} ms",
                backoff.used(),
                backoff.max_retries,
                d.as_millis()
            ));
            std::thread::sleep(d);
            Ok(())
        }
        None if backoff.max_retries == 0 => bail!("{what}"),
        None => bail!("{what} (gave up after {} retries)", backoff.used()),
    }
}

/// Loads every key of the file as the server does ([`sockchat_os::read_key_ring`]): one
/// key per line of a text file (the first signs until the server's `session_init` shows
/// which key it uses), the file not readable by group or others. Holding the whole ring
/// is what lets a client connect at any point of a key rotation (README, "Key rotation").
fn load_keys(path: Option<&PathBuf>) -> anyhow::Result<KeyRing> {
    match path {
        Some(path) => Ok(sockchat_os::read_key_ring(path)?),
        None => Ok(KeyRing::single(Arc::new(Key::reference_default()))),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let addr = match (&cli.tcp, &cli.unix) {
        (_, Some(p)) => Addr::Unix(p.clone()),
        (Some(a), None) => Addr::Tcp(a.clone()),
        (None, None) => Addr::default(),
    };
    if cli.heartbeat.is_zero() {
        bail!("--heartbeat must be above zero");
    }
    let options = ClientOptions {
        keys: Arc::new(load_keys(cli.key_file.as_ref())?),
        heartbeat_interval: cli.heartbeat,
        ..ClientOptions::default()
    };
    let settings = Settings {
        addr,
        options,
        retries: cli.retries,
        echo_timeout: cli.echo_timeout,
        no_echo: cli.no_echo,
        room: cli.room.clone(),
    };
    let interactive = matches!((&cli.mode, &cli.send), (Some(Mode::Interactive), None));
    if cli.no_echo && !interactive && cli.room.is_none() {
        bail!("--no-echo applies to interactive mode only: file mode and --send verify echoes");
    }
    if cli.room.is_some() && !interactive && !cli.no_echo {
        bail!("--room with file mode or --send needs --no-echo: a chat server sends no echo");
    }
    match (cli.mode, cli.send) {
        (Some(_), Some(_)) => bail!("--send is a mode of its own: drop the subcommand"),
        (None, Some(file)) if settings.no_echo => {
            let data =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let ct = cli
                .content_type
                .as_deref()
                .unwrap_or_else(|| send_file::guess_content_type(&file));
            rooms::send_to_room(
                &settings,
                vec![(ct.to_string(), data.into())],
                Duration::ZERO,
            )
        }
        (None, Some(file)) => send_file::run(&settings, &file, cli.content_type.as_deref()),
        (Some(Mode::File { messages, interval }), None) if settings.no_echo => {
            let text = std::fs::read_to_string(&messages)
                .with_context(|| format!("reading messages file {}", messages.display()))?;
            let lines = file_mode::parse_lines(&text)
                .into_iter()
                .map(|l| (sockchat_client::TEXT_PLAIN.to_string(), l))
                .collect();
            rooms::send_to_room(&settings, lines, interval)
        }
        (Some(Mode::Interactive), None) => interactive::run(&settings),
        (Some(Mode::File { messages, interval }), None) => {
            file_mode::run(&settings, &messages, interval)
        }
        (None, None) => bail!(
            "nothing to do: give `interactive`, `file MESSAGES.txt` or `--send FILE` (see --help)"
        ),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the causes joined, as `a: b: c`.
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("sockchat-client: {line}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2.5s").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn addresses_and_modes_parse_in_the_issue_forms() {
        let c = Cli::try_parse_from(["c", "file", "m.txt", "--unix", "/tmp/s"]).unwrap();
        assert!(matches!(c.mode, Some(Mode::File { .. })));
        assert_eq!(c.unix, Some(PathBuf::from("/tmp/s")));
        let c = Cli::try_parse_from(["c", "interactive", "--tcp", "127.0.0.1:1"]).unwrap();
        assert_eq!(c.tcp.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(c.retries, 5);
        let c = Cli::try_parse_from(["c", "--send", "f.bin", "--content-type", "image/png"]);
        assert!(c.is_ok());
        assert!(Cli::try_parse_from(["c", "interactive", "--tcp", "a:1", "--unix", "p"]).is_err());
    }

    #[test]
    fn key_file_drops_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, "secret\n").unwrap();
        let set_mode = |m| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        set_mode(0o644);
        assert!(load_keys(Some(&p)).is_err(), "readable by others");
        set_mode(0o600);
        let k = load_keys(Some(&p)).unwrap();
        let want = Key::new(b"secret");
        assert_eq!(k.len(), 1);
        assert_eq!(k.signing().sign(b"h", b"c"), want.sign(b"h", b"c"));
        std::fs::write(&p, "\n").unwrap();
        assert!(load_keys(Some(&p)).is_err());
    }

    #[test]
    fn key_file_loads_every_key_first_signing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, "key-two\nkey-one\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let ring = load_keys(Some(&p)).unwrap();
        let signs = |k: &Key| k.sign(b"h", b"c");
        let got: Vec<_> = ring.keys().iter().map(|k| signs(k)).collect();
        let want = [signs(&Key::new(b"key-two")), signs(&Key::new(b"key-one"))];
        assert_eq!(got, want);
    }
}
