//! The rooms extension (`"features": ["rooms"]`): room names, a session's memberships,
//! and the application refusals a session answers with an `error` frame while staying
//! open.
//!
//! Every session starts in [`LOBBY`]. A session granted `rooms` may `join` and `leave`
//! rooms and address a `message` to one with the header key `room`; a session that did
//! not ask stays in the lobby, so reference clients chat with each other as before.
//! The session state machines apply these rules; the server only routes.

use crate::header::ByteStr;

/// `features` name of the rooms extension.
pub const FEATURE_ROOMS: &str = "rooms";
/// The room every session starts in, and where messages without `room` go.
pub const LOBBY: &str = "lobby";
/// Longest room name, in characters (all ASCII, so also bytes).
pub const MAX_ROOM_NAME_LEN: usize = 64;
/// Default of `--max-rooms-per-session`.
pub const DEFAULT_MAX_ROOMS: usize = 64;

/// A valid room name: 1–64 characters from `[A-Za-z0-9_-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(ByteStr);

impl RoomName {
    /// Checks `name` against the naming rule.
    pub fn parse(name: &str) -> Result<Self, RoomError> {
        Self::check(name)?;
        Ok(Self(ByteStr::from(name)))
    }

    /// Like [`parse`](Self::parse), sharing the buffer of `name` (e.g. a header value).
    pub fn from_byte_str(name: ByteStr) -> Result<Self, RoomError> {
        Self::check(&name)?;
        Ok(Self(name))
    }

    /// The lobby.
    pub const fn lobby() -> Self {
        Self(ByteStr::from_static(LOBBY))
    }

    /// True for the lobby.
    pub fn is_lobby(&self) -> bool {
        self.0 == LOBBY
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The name as a shared string (for headers).
    pub fn as_byte_str(&self) -> &ByteStr {
        &self.0
    }

    fn check(name: &str) -> Result<(), RoomError> {
        let ok = (1..=MAX_ROOM_NAME_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(())
        } else {
            Err(RoomError::BadName(excerpt(name)))
        }
    }
}

impl std::fmt::Debug for RoomName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for RoomName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::ops::Deref for RoomName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// A room request the server refuses with an `error` frame; the session stays open.
/// Its [`Display`](std::fmt::Display) text is the `error` frame's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// Not 1–64 characters from `[A-Za-z0-9_-]` (the name, cut to a short excerpt).
    #[error("Invalid room name {0:?}: 1-64 characters from [A-Za-z0-9_-]")]
    BadName(String),
    /// A `join`/`leave` whose `room` header and content differ, or lack one of them.
    #[error("Invalid room request: the room header and the content must name the same room")]
    Mismatch,
    /// A message to a room the sender has not joined.
    #[error("Not a member of room {0}")]
    NotMember(RoomName),
    /// A join beyond `--max-rooms-per-session`.
    #[error("Too many rooms: at most {limit} memberships per session")]
    TooManyRooms {
        /// The limit in force.
        limit: usize,
    },
    /// Refused by the server for a reason of its own (e.g. a message larger than the
    /// cluster broker carries); the text names it.
    #[error("{0}")]
    Refused(String),
}

impl RoomError {
    /// Stable snake_case labels, one per variant, in [`index`](Self::index) order.
    pub const LABELS: [&'static str; 5] = [
        "bad_room_name",
        "room_mismatch",
        "not_member",
        "too_many_rooms",
        "refused",
    ];

    /// Position of this error's label in [`LABELS`](Self::LABELS), for counter arrays.
    pub fn index(&self) -> usize {
        match self {
            Self::BadName(_) => 0,
            Self::Mismatch => 1,
            Self::NotMember(_) => 2,
            Self::TooManyRooms { .. } => 3,
            Self::Refused(_) => 4,
        }
    }

    /// The stable label used in metrics and logs.
    pub fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }
}

/// A name from a peer, cut so that an `error` frame never reflects much of it.
fn excerpt(name: &str) -> String {
    let mut out: String = name.chars().take(MAX_ROOM_NAME_LEN + 1).collect();
    if out.len() < name.len() {
        out.push('…');
    }
    out
}

/// The rooms one session is a member of. Starts with the lobby only, without
/// allocating: most sessions never join anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// `None`: the lobby only (the common case, no allocation). A session holds at most
    /// `--max-rooms-per-session` rooms, so a linear scan is cheaper than hashing. Boxed so
    /// every idle session pays one pointer here, not a `Vec`'s three words.
    #[allow(clippy::box_collection)]
    rooms: Option<Box<Vec<RoomName>>>,
}

impl Membership {
    /// A new session's: the lobby.
    pub fn new() -> Self {
        Self::default()
    }

    fn list(&mut self) -> &mut Vec<RoomName> {
        self.rooms
            .get_or_insert_with(|| Box::new(vec![RoomName::lobby()]))
    }

    /// True when the session is in `room`.
    pub fn contains(&self, room: &str) -> bool {
        match &self.rooms {
            None => room == LOBBY,
            Some(list) => list.iter().any(|r| r.as_str() == room),
        }
    }

    /// Number of memberships.
    pub fn len(&self) -> usize {
        self.rooms.as_ref().map_or(1, |l| l.len())
    }

    /// True when the session is in no room at all (it left the lobby too).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `room`; `Ok(true)` if it is new, `Ok(false)` if already a member.
    pub fn join(&mut self, room: &RoomName, limit: usize) -> Result<bool, RoomError> {
        if self.contains(room) {
            return Ok(false);
        }
        if self.len() >= limit {
            return Err(RoomError::TooManyRooms { limit });
        }
        self.list().push(room.clone());
        Ok(true)
    }

    /// Removes `room`; true if the session was a member.
    pub fn leave(&mut self, room: &RoomName) -> bool {
        if !self.contains(room) {
            return false;
        }
        self.list().retain(|r| r != room);
        true
    }

    /// The rooms, in join order (the lobby first while it is held).
    pub fn rooms(&self) -> Vec<RoomName> {
        match &self.rooms {
            None => vec![RoomName::lobby()],
            Some(list) => list.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for good in ["a", "lobby", "Room_1-b", &"x".repeat(64)] {
            assert!(RoomName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "é", "a.b", "a/b", "\n", &"x".repeat(65)] {
            assert!(
                matches!(RoomName::parse(bad), Err(RoomError::BadName(_))),
                "{bad:?}"
            );
        }
        // The refusal text never carries a long name back whole.
        let e = RoomName::parse(&"y".repeat(10_000))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 200, "{e}");
        assert!(RoomName::lobby().is_lobby());
    }

    #[test]
    fn membership_starts_in_the_lobby_and_keeps_the_limit() {
        let mut m = Membership::new();
        assert!(m.contains(LOBBY));
        assert_eq!(m.len(), 1);
        let a = RoomName::parse("a").unwrap();
        let b = RoomName::parse("b").unwrap();
        assert_eq!(m.join(&a, 2), Ok(true));
        assert_eq!(m.join(&a, 2), Ok(false), "joining twice is not an error");
        assert_eq!(m.join(&b, 2), Err(RoomError::TooManyRooms { limit: 2 }));
        assert!(m.leave(&RoomName::lobby()));
        assert!(!m.contains(LOBBY));
        assert_eq!(m.join(&b, 2), Ok(true));
        assert_eq!(m.rooms(), vec![a.clone(), b.clone()]);
        assert!(m.leave(&a) && m.leave(&b));
        assert!(!m.leave(&b));
        assert!(m.is_empty());
    }

    #[test]
    fn labels_match_indexes() {
        let all = [
            RoomError::BadName(String::new()),
            RoomError::Mismatch,
            RoomError::NotMember(RoomName::lobby()),
            RoomError::TooManyRooms { limit: 1 },
            RoomError::Refused(String::new()),
        ];
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
    }
}
