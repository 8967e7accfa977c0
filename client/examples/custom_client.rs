//! A custom client built on the library: the Rust counterpart of subclassing the
//! reference's `BaseAsyncClient` and overriding `process_message`.
//!
//! It sends a JSON status and a small binary blob, handles each echo by content type,
//! measures one heartbeat round trip, and leaves with a `disconnect`.
//!
//! ```sh
//! cargo run -p sockchat-server &            # TCP 127.0.0.1:9999, Unix /tmp/chat.sock
//! cargo run -p sockchat-client --example custom_client             # TCP default
//! cargo run -p sockchat-client --example custom_client -- /tmp/chat.sock
//! ```

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use sockchat_client::{Addr, Client, ClientError, ClientOptions, Event, Message};

/// The custom part: what to do with each message. The library does the protocol
/// (handshake, heartbeats, chunking, verification).
struct StatusClient {
    client: Client,
    pending: usize,
}

impl StatusClient {
    fn connect(addr: &Addr) -> Result<Self, ClientError> {
        let options = ClientOptions {
            heartbeat_interval: Duration::from_secs(2),
            ..ClientOptions::default()
        };
        let client = Client::connect(addr, &options)?;
        println!("connected: session {}", client.session_id());
        Ok(Self { client, pending: 0 })
    }

    fn send(&mut self, content_type: &str, content: impl Into<Bytes>) -> Result<(), ClientError> {
        self.client.send(content_type, content.into())?;
        self.pending += 1;
        Ok(())
    }

    fn process_message(&mut self, m: Message) {
        self.pending -= 1;
        match m.content_type.as_deref() {
            Some("application/json") => println!("json echo: {}", m.display()),
            _ => println!("other echo: {}", m.display()),
        }
    }

    /// Handles events until every message is echoed (or the session ends).
    fn run(&mut self) -> Result<(), ClientError> {
        self.client.ping()?;
        let mut pong_seen = false;
        while self.pending > 0 || !pong_seen {
            match self.client.next_event(Duration::from_secs(10))? {
                Some(Event::Message(m)) => self.process_message(m),
                Some(Event::Pong { rtt }) => {
                    pong_seen = true;
                    println!("heartbeat round trip: {rtt:?}");
                }
                Some(Event::PeerError(e)) => eprintln!("server error: {e}"),
                Some(Event::Closed(reason)) => return Err(ClientError::Closed(reason)),
                Some(_) => {}
                None => eprintln!("still waiting for {} echo(es)", self.pending),
            }
        }
        Ok(())
    }
}

fn main() -> Result<(), ClientError> {
    let addr = match std::env::args().nth(1) {
        Some(a) if a.contains('/') => Addr::Unix(PathBuf::from(a)),
        Some(a) => Addr::Tcp(a),
        None => Addr::default(),
    };
    let mut c = StatusClient::connect(&addr)?;
    c.send("application/json", r#"{"status": "ok", "load": 0.25}"#)?;
    c.send(
        "image/png",
        Bytes::from_static(b"\x89PNG\r\n\x1a\n fake image"),
    )?;
    c.run()?;
    c.client.disconnect(sockchat_client::CLIENT_DISCONNECTING)
}
