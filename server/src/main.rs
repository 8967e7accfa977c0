//! `sockchat-server`: see `--help`.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use sockchat_server::cli::{Cli, LogFormat};
use sockchat_server::{shutdown, Chat, Echo, Handler, Mode, Server};
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
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
        "starting"
    );
    let handler: Arc<dyn Handler> = match cli.mode() {
        Mode::Echo => Arc::new(Echo),
        Mode::Chat => Arc::new(Chat),
    };
    let bound = Server::with_handler(config, handler).bind()?;
    shutdown::spawn_signal_thread(bound.shutdown_handle())
        .context("cannot start the signal thread")?;
    bound.run(|addrs| {
        let mut out = std::io::stdout().lock();
        for a in addrs {
            let _ = writeln!(out, "listening {a}");
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
    let cli = Cli::parse_args();
    init_logging(cli.log_format);
    if let Err(e) = run(&cli) {
        // One line, whatever the log format.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
