//! `sockchat-server`: see `--help`.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::Context;
use sockchat_server::cli::{self, Cli, LoadError, LogFormat};
use sockchat_server::{notify, shutdown, Chat, Echo, Handler, Mode, Server, ShutdownHandle};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

type FilterHandle = reload::Handle<EnvFilter, Registry>;

/// The filter: `--log-level` (or `log_level` in the config file), else RUST_LOG, else
/// info.
fn filter_for(cli: &Cli) -> Result<EnvFilter, String> {
    match &cli.log_level {
        Some(f) => EnvFilter::try_new(f).map_err(|e| format!("invalid --log-level {f:?}: {e}")),
        None => Ok(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))),
    }
}

fn init_logging(cli: &Cli) -> Result<FilterHandle, String> {
    let (filter, handle) = reload::Layer::new(filter_for(cli)?);
    // Colours only for a person at a terminal: a log file or journald gets plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = match cli.log_format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    tracing_subscriber::registry().with(filter).with(fmt).init();
    Ok(handle)
}

/// SIGHUP: re-reads the command line's config file and key file; applies what can
/// change while running, logs what needs a restart, keeps everything on any error.
fn reload(argv: &[OsString], first: &Cli, handle: &ShutdownHandle, filter: &FilterHandle) {
    notify::reloading();
    let loaded = cli::load(argv).map_err(anyhow::Error::from).and_then(|c| {
        Ok((
            c.to_config()?,
            filter_for(&c).map_err(anyhow::Error::msg)?,
            c,
        ))
    });
    match loaded {
        Ok((config, new_filter, c)) => {
            let mut restart = handle.reload(config);
            if c.mode() != first.mode() {
                restart.push("mode");
            }
            if c.log_format != first.log_format {
                restart.push("log_format");
            }
            if let Err(e) = filter.reload(new_filter) {
                tracing::warn!(error = %e, "could not change the log filter");
            }
            let config = handle.config();
            tracing::info!(
                keys = config.keys.len(),
                max_sessions = config.max_sessions,
                max_sessions_per_peer = ?config.max_sessions_per_peer,
                memory_budget = config.memory_budget,
                "reloaded settings and key file"
            );
            if !restart.is_empty() {
                tracing::warn!(
                    settings = %restart.join(", "),
                    "changed settings need a restart to take effect; kept the running values"
                );
            }
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reload failed; keeping the previous settings");
        }
    }
    notify::ready("serving");
}

fn run(argv: Vec<OsString>, cli: Cli, filter: FilterHandle) -> anyhow::Result<()> {
    let config = cli.to_config()?;
    if config.default_key {
        tracing::warn!(
            "no --key-file (or SOCKCHAT_KEY_FILE): using the reference default key; \
             anyone can forge frames with it"
        );
    }
    tracing::info!(
        mode = ?cli.mode(),
        cores = config.cores,
        max_sessions = config.max_sessions,
        handshake_timeout = ?config.handshake_timeout,
        session_timeout = ?config.session_timeout,
        send_queue_limit = config.send_queue_limit,
        memory_budget = config.memory_budget,
        ring_buffers = config.ring_buffers,
        ring_buffer_size = config.ring_buffer_size,
        ring_bytes_per_core = u64::from(config.ring_buffers) * u64::from(config.ring_buffer_size),
        "starting"
    );
    let handler: Arc<dyn Handler> = match cli.mode() {
        Mode::Echo => Arc::new(Echo),
        Mode::Chat => Arc::new(Chat),
    };
    let bound = Server::with_handler(config, handler).bind()?;
    let handle = bound.shutdown_handle();
    let h2 = handle.clone();
    shutdown::spawn_signal_thread_with(handle.clone(), move || reload(&argv, &cli, &h2, &filter))
        .context("cannot start the signal thread")?;
    notify::spawn_watchdog(handle).context("cannot start the watchdog thread")?;
    let admin = bound.admin_addr();
    bound.run(|addrs| {
        let mut out = std::io::stdout().lock();
        for a in addrs {
            let _ = writeln!(out, "listening {a}");
        }
        if let Some(a) = admin {
            let _ = writeln!(out, "listening admin {a}");
        }
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    })?;
    Ok(())
}

fn main() {
    // Before any thread exists, so that every thread inherits the mask.
    if let Err(e) = shutdown::block_signals() {
        eprintln!("error: cannot block signals: {e}");
        std::process::exit(1);
    }
    // Also before any thread exists: large buffers go back to the kernel when freed.
    if !sockchat_server::alloc::release_large_buffers() {
        eprintln!("warning: the allocator refused a fixed mmap threshold");
    }
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = match cli::load(&argv) {
        Ok(c) => c,
        Err(LoadError::Usage(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if cli.check_config {
        match cli
            .to_config()
            .map_err(|e| e.to_string())
            .and_then(|_| filter_for(&cli))
        {
            Ok(_) => {
                println!("configuration is valid");
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
    }
    let filter = match init_logging(&cli) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = run(argv, cli, filter) {
        // One line, whatever the log format.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
