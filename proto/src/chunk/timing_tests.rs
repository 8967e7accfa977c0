//! Open messages and their age (the message timeout's input).

use std::time::{Duration, Instant};

use super::*;

#[test]
fn open_messages_and_their_age() {
    let t0 = Instant::now();
    let mut r = Reassembler::new(ChunkLimits::default());
    assert_eq!(r.oldest_open(), None);
    assert!(!r.is_open(&ByteStr::from("a")));
    r.push_at(&ChunkInfo::new("a", 0, 2, 4), None, b"ab", Some(t0))
        .unwrap();
    let t1 = t0 + Duration::from_secs(1);
    r.push_at(&ChunkInfo::new("b", 0, 2, 4), None, b"ab", Some(t1))
        .unwrap();
    assert!(r.is_open(&ByteStr::from("a")));
    assert_eq!(r.oldest_open(), Some(t0));
    let done = r
        .push_at(&ChunkInfo::new("a", 1, 2, 4), None, b"cd", Some(t1))
        .unwrap();
    assert_eq!(&done.unwrap().content[..], b"abcd");
    assert_eq!(r.oldest_open(), Some(t1));
    // push (no time) opens messages that no timeout applies to.
    r.clear();
    r.push(&ChunkInfo::new("c", 0, 2, 4), None, b"ab").unwrap();
    assert_eq!(r.oldest_open(), None);
}
