//! A custom [`Handler`] built on the library: text messages are answered in upper case,
//! `/whoami` answers with what the server knows about the session, `/quit` closes it,
//! and `/all TEXT` sends TEXT to every other session on every core. Sessions are
//! counted as they start and end.
//!
//! ```sh
//! cargo run --release -p sockchat-server --example custom_handler -- --unix /tmp/upper.sock
//! ```
//! It takes the same command line as `sockchat-server` (`--mode` is ignored).

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use sockchat_proto::header::TEXT_UTF8;
use sockchat_proto::{CloseReason, Message};
use sockchat_server::cli::Cli;
use sockchat_server::{shutdown, Handler, Server, SessionCtx, SessionInfo};

#[derive(Debug, Default)]
struct Upper {
    started: AtomicU64,
    ended: AtomicU64,
}

impl Handler for Upper {
    fn on_session_start(&self, session: &mut SessionCtx<'_>) {
        self.started.fetch_add(1, Ordering::Relaxed);
        tracing::info!(session = %session.info().id, peer = ?session.info().peer, "hello");
    }

    fn on_message(&self, session: &mut SessionCtx<'_>, message: Message) {
        let Ok(text) = std::str::from_utf8(&message.content) else {
            // Binary content: plain echo, as the same verified bytes.
            let _ = session.echo(message);
            return;
        };
        let reply = match text.trim() {
            "/whoami" => {
                let i = session.info();
                format!(
                    "session {} on core {} via {:?} from {:?}, {} messages so far",
                    i.id, i.core, i.transport, i.peer, i.messages_in
                )
            }
            "/quit" => {
                session.close("Goodbye");
                return;
            }
            t if t.starts_with("/all ") => {
                let d =
                    session.broadcast(Some(TEXT_UTF8), Bytes::copy_from_slice(&t.as_bytes()[5..]));
                format!(
                    "sent to {} sessions here and {} other cores",
                    d.local, d.cores
                )
            }
            _ => text.to_uppercase(),
        };
        let _ = session.reply(message.content_type.or(Some(TEXT_UTF8)), Bytes::from(reply));
    }

    fn on_session_end(&self, info: &SessionInfo, reason: &CloseReason) {
        self.ended.fetch_add(1, Ordering::Relaxed);
        tracing::info!(session = %info.id, %reason, "bye");
    }
}

fn main() -> anyhow::Result<()> {
    shutdown::block_signals()?;
    let cli = Cli::parse_args();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let bound = Server::new(cli.to_config()?, Upper::default()).bind()?;
    shutdown::spawn_signal_thread(bound.shutdown_handle())?;
    let totals = bound.run(|addrs| {
        for a in addrs {
            println!("listening {a}");
        }
        println!("ready");
    })?;
    eprintln!("served {} messages", totals.messages_in);
    Ok(())
}
