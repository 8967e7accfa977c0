//! The library API against the in-test echo server, over TCP and Unix sockets.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sockchat_client::{
    connect_with_retry, Addr, Backoff, Client, ClientError, ClientOptions, CloseReason, Event, Key,
    KeyRing, TEXT_PLAIN,
};
use sockchat_testkit::echo_double::EchoDouble;
use sockchat_testkit::{pattern, wait_until};

const WAIT: Duration = Duration::from_secs(10);

fn next_message(c: &Client) -> sockchat_client::Message {
    loop {
        match c.next_event(WAIT).unwrap() {
            Some(Event::Message(m)) => return m,
            Some(Event::Pong { .. }) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

fn round_trip(addr: &Addr) {
    let c = Client::connect(addr, &ClientOptions::default()).unwrap();
    assert!(c.features().chunk, "the double grants chunks");
    assert_eq!(c.session_id().len(), 36);
    c.send(TEXT_PLAIN, Bytes::from_static(b"hello")).unwrap();
    c.send("image/jpeg", Bytes::from_static(b"\xff\xd8\xff"))
        .unwrap();
    let m = next_message(&c);
    assert_eq!(m.text(), Some("hello"));
    assert_eq!(m.content_type.as_deref(), Some(TEXT_PLAIN));
    let m = next_message(&c);
    assert_eq!(m.display().to_string(), "[binary: image/jpeg, 3 bytes]");
    c.ping().unwrap();
    match c.next_event(WAIT).unwrap() {
        Some(Event::Pong { rtt }) => assert!(rtt < WAIT),
        other => panic!("expected a pong, got {other:?}"),
    }
    c.disconnect("Client disconnecting").unwrap();
    assert!(matches!(
        c.send(TEXT_PLAIN, "late".into()),
        Err(ClientError::Closed(CloseReason::ClientDisconnect { .. }))
    ));
}

#[test]
fn round_trip_over_tcp() {
    let server = EchoDouble::tcp();
    round_trip(&server.addr);
}

#[test]
fn round_trip_over_unix() {
    let dir = tempfile::tempdir().unwrap();
    let server = EchoDouble::unix(dir.path().join("s.sock"));
    round_trip(&server.addr);
}

#[test]
fn a_20_mib_message_goes_as_chunks_and_comes_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let server = EchoDouble::unix(dir.path().join("s.sock"));
    let c = Client::connect(&server.addr, &ClientOptions::default()).unwrap();
    let data = Bytes::from(pattern(20 << 20, 7));
    c.send("application/octet-stream", data.clone()).unwrap();
    assert!(c.flush(WAIT).unwrap());
    let m = next_message(&c);
    assert_eq!(m.content.len(), data.len());
    assert!(m.content == data);
    c.disconnect("Client disconnecting").unwrap();
}

#[test]
fn without_chunks_a_large_message_is_refused_before_sending() {
    let server = EchoDouble::tcp();
    let opts = ClientOptions {
        chunk: false,
        ..ClientOptions::default()
    };
    let c = Client::connect(&server.addr, &opts).unwrap();
    assert!(!c.features().chunk);
    let e = c.send("application/octet-stream", Bytes::from(vec![1u8; 11 << 20]));
    assert!(matches!(e, Err(ClientError::Send(_))), "{e:?}");
    c.send(TEXT_PLAIN, "still fine".into()).unwrap();
    assert_eq!(next_message(&c).text(), Some("still fine"));
}

#[test]
fn heartbeats_flow_on_their_own() {
    let server = EchoDouble::tcp();
    let opts = ClientOptions {
        heartbeat_interval: Duration::from_millis(50),
        ..ClientOptions::default()
    };
    let c = Client::connect(&server.addr, &opts).unwrap();
    let mut pongs = 0;
    while pongs < 3 {
        match c.next_event(WAIT).unwrap() {
            Some(Event::Pong { .. }) => pongs += 1,
            other => panic!("expected pongs, got {other:?}"),
        }
    }
}

#[test]
fn server_shutdown_reaches_the_client_as_its_reason() {
    let mut server = EchoDouble::tcp();
    let c = Client::connect(&server.addr, &ClientOptions::default()).unwrap();
    server.shutdown();
    loop {
        match c.next_event(WAIT).unwrap() {
            Some(Event::Closed(r)) => {
                assert_eq!(r, CloseReason::ServerShutdown);
                assert_eq!(r.wire_reason(), "Server shutting down");
                break;
            }
            Some(Event::Pong { .. }) => {}
            other => panic!("expected the close, got {other:?}"),
        }
    }
    assert!(matches!(
        c.next_event(WAIT),
        Err(ClientError::Closed(CloseReason::ServerShutdown))
    ));
    assert!(sockchat_client::is_retryable(&CloseReason::ServerShutdown));
}

#[test]
fn connect_failures_are_typed_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.sock");
    let addr = Addr::Unix(path.clone());
    let e = Client::connect(&addr, &ClientOptions::default()).unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
    assert!(e.is_retryable());

    // The server appears while the client is backing off: once a retry has been
    // announced (so at least one connect failed).
    let announced = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = announced.clone();
    let starter = std::thread::spawn(move || {
        let backing_off = wait_until(WAIT, || seen.load(Ordering::SeqCst) >= 1);
        (backing_off, EchoDouble::unix(path))
    });
    let mut backoff = Backoff::with(Duration::from_millis(50), Duration::from_millis(100), 20);
    let mut retries = 0;
    let c = connect_with_retry(&addr, &ClientOptions::default(), &mut backoff, |_, _, _| {
        retries += 1;
        announced.store(retries, Ordering::SeqCst);
    })
    .unwrap();
    let (backing_off, _server) = starter.join().unwrap();
    assert!(backing_off, "no retry announced");
    assert!(retries >= 1);
    c.send(TEXT_PLAIN, "made it".into()).unwrap();
    assert_eq!(next_message(&c).text(), Some("made it"));
}

#[test]
fn a_wrong_key_fails_the_handshake_without_retry() {
    let server = EchoDouble::tcp();
    let opts = ClientOptions {
        keys: Arc::new(KeyRing::single(Arc::new(Key::new(b"not-the-key")))),
        ..ClientOptions::default()
    };
    let e = Client::connect(&server.addr, &opts).unwrap_err();
    assert!(matches!(e, ClientError::Handshake { .. }), "{e:?}");
    assert!(!e.is_retryable(), "{e}");
}
