//! The rooms extension between a `ClientSession` and a `ServerSession` in memory, on a
//! simulated clock: negotiation, join answered only when the driver confirms, leave,
//! refusals that keep the session open, the room a message resolves to, and deliveries
//! with `room`/`from` only for sessions that asked (`sockchat_testkit::pair::Pair`).

use bytes::Bytes;
use sockchat_proto::header::{ByteStr, TEXT_UTF8};
use sockchat_proto::session::Message;
use sockchat_proto::session::{Features, Session};
use sockchat_proto::{Event, RoomError, RoomName, SendError, SessionConfig};
use sockchat_testkit::pair::{message_events, picked, Pair};

/// An established pair: the server grants `server_features` with `max_rooms` per
/// session, the client asks for `client_features`; events cleared.
fn pair(server_features: Features, client_features: Features, max_rooms: usize) -> Pair {
    let server_cfg = SessionConfig {
        features: server_features,
        max_rooms,
        ..SessionConfig::default()
    };
    let client_cfg = SessionConfig {
        features: client_features,
        ..SessionConfig::default()
    };
    let mut p = Pair::new(server_cfg, client_cfg);
    p.pump();
    assert!(p.server.is_established() && p.client.is_established());
    p.server_events.clear();
    p.client_events.clear();
    p
}

fn room(n: &str) -> RoomName {
    RoomName::parse(n).unwrap()
}

fn joined(events: &[Event]) -> Vec<RoomName> {
    picked(events, |e| match e {
        Event::Joined(r) => Some(r.clone()),
        _ => None,
    })
}

/// The server delivers `m` to `to` from `from`; the message as the client received it.
fn delivered(p: &mut Pair, to: &RoomName, from: &str) -> Message {
    p.server
        .deliver(
            Some(TEXT_UTF8),
            Bytes::from_static(b"m"),
            to,
            &ByteStr::from(from),
        )
        .unwrap();
    p.pump();
    message_events(&p.client_events).into_iter().next().unwrap()
}

#[test]
fn a_join_is_answered_only_when_the_driver_confirms_it() {
    let mut p = pair(Features::ALL, Features::ALL, 64);
    assert!(p.client.features().rooms && p.server.features().rooms);
    p.client.join(&room("ops")).unwrap();
    p.pump();
    assert_eq!(joined(&p.server_events), vec![room("ops")]);
    assert!(p.server.is_member("ops"), "membership recorded at once");
    assert!(
        joined(&p.client_events).is_empty(),
        "no answer before the confirmation"
    );
    p.server.confirm_join(&room("ops"));
    p.pump();
    assert_eq!(joined(&p.client_events), vec![room("ops")]);

    // A message to the room resolves to it; one without a room to the lobby.
    p.client
        .send_to_room(&room("ops"), Some(TEXT_UTF8), Bytes::from_static(b"hi"))
        .unwrap();
    p.client
        .send_message(Some(TEXT_UTF8), Bytes::from_static(b"all"))
        .unwrap();
    p.pump();
    let rooms: Vec<_> = message_events(&p.server_events)
        .into_iter()
        .map(|m| m.room.unwrap())
        .collect();
    assert_eq!(rooms, vec![room("ops"), RoomName::lobby()]);

    // Leave: answered at once; a confirmation arriving late sends nothing.
    p.client.leave(&room("ops")).unwrap();
    p.pump();
    assert!(p
        .client_events
        .iter()
        .any(|e| matches!(e, Event::Left(r) if *r == room("ops"))));
    p.client_events.clear();
    p.server.confirm_join(&room("ops"));
    p.pump();
    assert!(p.client_events.is_empty(), "{:?}", p.client_events);
}

#[test]
fn refusals_keep_the_session_open() {
    let mut p = pair(Features::ALL, Features::ALL, 2);
    p.client
        .send_to_room(&room("nowhere"), Some(TEXT_UTF8), Bytes::from_static(b"x"))
        .unwrap();
    p.client.join(&room("a")).unwrap();
    p.client.join(&room("b")).unwrap();
    p.pump();
    let refused = picked(&p.server_events, |e| match e {
        Event::Refused(r) => Some(r.clone()),
        _ => None,
    });
    assert_eq!(
        refused,
        vec![
            RoomError::NotMember(room("nowhere")),
            RoomError::TooManyRooms { limit: 2 }
        ]
    );
    let errors = picked(&p.client_events, |e| match e {
        Event::PeerError(t) => Some(t.to_string()),
        _ => None,
    });
    assert_eq!(
        errors,
        vec![
            "Not a member of room nowhere".to_string(),
            "Too many rooms: at most 2 memberships per session".to_string()
        ]
    );
    assert!(p.server.is_established() && p.client.is_established());
}

#[test]
fn deliveries_carry_room_and_from_only_for_sessions_that_asked() {
    let mut p = pair(Features::ALL, Features::ALL, 64);
    let m = delivered(&mut p, &room("ops"), "sender-1");
    assert_eq!(m.room, Some(room("ops")));
    assert_eq!(m.from.as_deref(), Some("sender-1"));

    // A reference-style client: the plain three-key frame, no room, no from.
    let mut r = pair(Features::ALL, Features::NONE, 64);
    let m = delivered(&mut r, &RoomName::lobby(), "s");
    assert_eq!((m.room, m.from), (None, None));
    let raw = m.frame.unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("\"room\""));
    // And it cannot ask to join.
    assert_eq!(r.client.join(&room("x")), Err(SendError::NoRooms));
}

#[test]
fn an_echo_server_does_not_grant_rooms() {
    let p = pair(Features::CHUNK, Features::ALL, 64);
    assert!(!p.client.features().rooms);
    assert!(p.client.features().chunk);
}
