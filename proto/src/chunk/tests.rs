//! The reassembler and splitter: slots, limits, hostile chunk sequences.

use super::*;
use crate::codec::decode_frame;
use crate::frame::Limits;

/// Deterministic, position-dependent bytes, so a chunk placed in the wrong slot shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ (i as u8))
        .collect()
}

fn slots(total: usize, count: u32) -> Vec<Range<usize>> {
    let l = Layout::new(count, total as u64).unwrap();
    (0..count)
        .map(|i| {
            let s = l.slot(i);
            s.start as usize..s.end as usize
        })
        .collect()
}

fn ct() -> ByteStr {
    ByteStr::from("image/jpeg")
}

#[test]
fn in_order() {
    let data = pattern(10);
    let mut r = Reassembler::new(ChunkLimits::default());
    let s = slots(10, 4);
    assert_eq!(s, vec![0..3, 3..6, 6..9, 9..10]);
    for (i, range) in s.iter().enumerate().take(3) {
        let out = r
            .push(
                &ChunkInfo::new("m", i as u32, 4, 10),
                Some(&ct()),
                &data[range.clone()],
            )
            .unwrap();
        assert!(out.is_none());
        assert_eq!(r.reserved_bytes(), 10);
        assert_eq!(r.partial_count(), 1);
    }
    let done = r
        .push(&ChunkInfo::new("m", 3, 4, 10), Some(&ct()), &data[9..])
        .unwrap()
        .unwrap();
    assert_eq!(done.message_id, "m");
    assert_eq!(done.content_type, Some(ct()));
    assert_eq!(&done.content[..], &data[..]);
    assert_eq!(r.partial_count(), 0);
    assert_eq!(r.reserved_bytes(), 0);
}

#[test]
fn out_of_order_with_short_last_chunk() {
    let total = 1000;
    let data = pattern(total);
    let s = slots(total, 7); // chunk_len 143, last chunk 142 bytes
    assert_eq!(s[6].len(), 142);
    let mut r = Reassembler::new(ChunkLimits::default());
    let order = [6, 2, 0, 5, 3, 1, 4];
    for (n, &i) in order.iter().enumerate() {
        let out = r
            .push(
                &ChunkInfo::new("x", i, 7, total as u64),
                None,
                &data[s[i as usize].clone()],
            )
            .unwrap();
        if n + 1 < order.len() {
            assert!(out.is_none());
        } else {
            let m = out.unwrap();
            assert_eq!(m.content_type, None);
            assert_eq!(&m.content[..], &data[..]);
        }
    }
    assert_eq!(r.reserved_bytes(), 0);
}

#[test]
fn single_chunk_holds_no_state() {
    let mut r = Reassembler::new(ChunkLimits::default());
    let m = r
        .push(&ChunkInfo::new("one", 0, 1, 5), Some(&ct()), b"hello")
        .unwrap()
        .unwrap();
    assert_eq!(&m.content[..], b"hello");
    assert_eq!(m.message_id, "one");
    assert_eq!(r.partial_count(), 0);
    assert_eq!(r.reserved_bytes(), 0);
}

#[test]
fn interleaved_messages() {
    let (a, b) = (pattern(9), pattern(20));
    let mut r = Reassembler::new(ChunkLimits::default());
    assert!(r
        .push(&ChunkInfo::new("a", 0, 3, 9), None, &a[0..3])
        .unwrap()
        .is_none());
    assert!(r
        .push(&ChunkInfo::new("b", 1, 2, 20), None, &b[10..])
        .unwrap()
        .is_none());
    assert_eq!(r.reserved_bytes(), 29);
    assert!(r
        .push(&ChunkInfo::new("a", 2, 3, 9), None, &a[6..])
        .unwrap()
        .is_none());
    let mb = r
        .push(&ChunkInfo::new("b", 0, 2, 20), None, &b[..10])
        .unwrap()
        .unwrap();
    assert_eq!(&mb.content[..], &b[..]);
    assert_eq!(r.reserved_bytes(), 9);
    let ma = r
        .push(&ChunkInfo::new("a", 1, 3, 9), None, &a[3..6])
        .unwrap()
        .unwrap();
    assert_eq!(&ma.content[..], &a[..]);
    // A completed id may be reused for a new message.
    assert!(r
        .push(&ChunkInfo::new("a", 0, 2, 4), None, b"ab")
        .unwrap()
        .is_none());
}

#[test]
fn too_large_is_checked_before_reserving() {
    let limits = ChunkLimits {
        max_message_len: 100,
        max_partial: 4,
    };
    let mut r = Reassembler::new(limits);
    let e = r
        .push(&ChunkInfo::new("m", 0, 2, 101), None, &[0; 51])
        .unwrap_err();
    assert_eq!(
        e,
        ChunkError::TooLarge {
            total_len: 101,
            limit: 100
        }
    );
    assert_eq!(e.kind(), "too_large");
    // Even an absurd length with an absurd count is refused on the length first.
    let e = r
        .push(&ChunkInfo::new("m", 0, u32::MAX, u64::MAX), None, &[0; 1])
        .unwrap_err();
    assert_eq!(e.kind(), "too_large");
    assert_eq!(r.reserved_bytes(), 0);
    assert_eq!(r.partial_count(), 0);
    // Exactly at the limit is fine.
    assert!(r
        .push(&ChunkInfo::new("m", 0, 2, 100), None, &[0; 50])
        .unwrap()
        .is_none());
    assert_eq!(r.reserved_bytes(), 100);
}

#[test]
fn too_many_partial() {
    let mut r = Reassembler::new(ChunkLimits {
        max_message_len: 1 << 20,
        max_partial: 2,
    });
    r.push(&ChunkInfo::new("a", 0, 2, 2), None, b"a").unwrap();
    r.push(&ChunkInfo::new("b", 0, 2, 2), None, b"b").unwrap();
    let e = r
        .push(&ChunkInfo::new("c", 0, 2, 2), None, b"c")
        .unwrap_err();
    assert_eq!(e, ChunkError::TooManyPartial { limit: 2 });
    assert_eq!(e.kind(), "too_many_partial");
    assert_eq!(r.reserved_bytes(), 4);
    // Chunks of open messages still go through, and a single-chunk message needs no slot.
    assert!(r
        .push(&ChunkInfo::new("solo", 0, 1, 1), None, b"s")
        .unwrap()
        .is_some());
    assert!(r
        .push(&ChunkInfo::new("a", 1, 2, 2), None, b"A")
        .unwrap()
        .is_some());
    assert!(r
        .push(&ChunkInfo::new("c", 0, 2, 2), None, b"c")
        .unwrap()
        .is_none());
}

#[test]
fn bad_count() {
    let mut r = Reassembler::new(ChunkLimits::default());
    for (count, total) in [
        (0, 10),
        (1, 0),
        (0, 0),
        (11, 10),
        (6, 10),
        (u32::MAX, 1 << 20),
    ] {
        let e = r
            .push(&ChunkInfo::new("m", 0, count, total), None, b"x")
            .unwrap_err();
        assert_eq!(
            e,
            ChunkError::BadCount {
                count,
                total_len: total
            },
            "count {count} total {total}"
        );
        assert_eq!(e.kind(), "bad_count");
    }
    // 10 bytes as 5 chunks of 2 is fine; as 6 (chunk_len 2) the last would be empty.
    assert!(Layout::new(5, 10).is_ok());
    assert!(Layout::new(10, 10).is_ok());
    assert_eq!(r.reserved_bytes(), 0);
}

#[test]
fn layout_rule_holds_for_every_small_case() {
    for total in 1..=200u64 {
        for count in 1..=total as u32 + 2 {
            let chunk_len = total.div_ceil(u64::from(count));
            let nonempty = (u64::from(count) - 1) * chunk_len < total;
            match Layout::new(count, total) {
                Ok(l) => {
                    assert!(nonempty);
                    let mut at = 0;
                    for i in 0..count {
                        let s = l.slot(i);
                        assert_eq!(s.start, at);
                        assert!(s.end > s.start && s.end - s.start <= chunk_len);
                        at = s.end;
                    }
                    assert_eq!(at, total);
                }
                Err(_) => assert!(!nonempty || count == 0),
            }
        }
    }
}

#[test]
fn index_out_of_range() {
    let mut r = Reassembler::new(ChunkLimits::default());
    let e = r
        .push(&ChunkInfo::new("m", 4, 4, 10), None, b"x")
        .unwrap_err();
    assert_eq!(e, ChunkError::IndexOutOfRange { index: 4, count: 4 });
    assert_eq!(e.kind(), "index_out_of_range");
    r.push(&ChunkInfo::new("m", 0, 4, 10), None, b"abc")
        .unwrap();
    let e = r
        .push(&ChunkInfo::new("m", u32::MAX, 4, 10), None, b"x")
        .unwrap_err();
    assert_eq!(
        e,
        ChunkError::IndexOutOfRange {
            index: u32::MAX,
            count: 4
        }
    );
}

#[test]
fn duplicate() {
    let mut r = Reassembler::new(ChunkLimits::default());
    r.push(&ChunkInfo::new("m", 1, 3, 9), None, b"def").unwrap();
    let e = r
        .push(&ChunkInfo::new("m", 1, 3, 9), None, b"def")
        .unwrap_err();
    assert_eq!(e, ChunkError::Duplicate { index: 1 });
    assert_eq!(e.kind(), "duplicate");
    // The refused chunk changed nothing: the message still completes.
    r.push(&ChunkInfo::new("m", 0, 3, 9), None, b"abc").unwrap();
    let m = r
        .push(&ChunkInfo::new("m", 2, 3, 9), None, b"ghi")
        .unwrap()
        .unwrap();
    assert_eq!(&m.content[..], b"abcdefghi");
}

#[test]
fn duplicate_in_bitset_beyond_first_word() {
    let total = 300usize;
    let data = pattern(total);
    let mut r = Reassembler::new(ChunkLimits::default());
    for i in [0u32, 63, 64, 65, 128, 299] {
        let i_us = i as usize;
        r.push(
            &ChunkInfo::new("m", i, 300, 300),
            None,
            &data[i_us..i_us + 1],
        )
        .unwrap();
        let e = r
            .push(
                &ChunkInfo::new("m", i, 300, 300),
                None,
                &data[i_us..i_us + 1],
            )
            .unwrap_err();
        assert_eq!(e, ChunkError::Duplicate { index: i });
    }
}

#[test]
fn inconsistent() {
    let mut r = Reassembler::new(ChunkLimits::default());
    r.push(&ChunkInfo::new("m", 0, 3, 9), Some(&ct()), b"abc")
        .unwrap();
    for (count, total, c) in [
        (4, 9, Some(ct())),
        (3, 10, Some(ct())),
        (3, 9, None),
        (3, 9, Some(ByteStr::from("text/plain"))),
    ] {
        let e = r
            .push(&ChunkInfo::new("m", 1, count, total), c.as_ref(), b"def")
            .unwrap_err();
        assert_eq!(e, ChunkError::Inconsistent);
        assert_eq!(e.kind(), "inconsistent");
    }
    assert_eq!(r.reserved_bytes(), 9);
}

#[test]
fn wrong_length() {
    let mut r = Reassembler::new(ChunkLimits::default());
    // First chunk of a message: refused before anything is reserved.
    let e = r
        .push(&ChunkInfo::new("m", 0, 4, 10), None, b"abcd")
        .unwrap_err();
    assert_eq!(
        e,
        ChunkError::WrongLength {
            index: 0,
            expected: 3,
            got: 4
        }
    );
    assert_eq!(e.kind(), "wrong_length");
    assert_eq!(r.reserved_bytes(), 0);
    // Later chunks: overrun and underrun of the short last slot.
    r.push(&ChunkInfo::new("m", 0, 4, 10), None, b"abc")
        .unwrap();
    for bad in [&b"jk"[..], b""] {
        let e = r
            .push(&ChunkInfo::new("m", 3, 4, 10), None, bad)
            .unwrap_err();
        assert_eq!(
            e,
            ChunkError::WrongLength {
                index: 3,
                expected: 1,
                got: bad.len() as u64
            }
        );
    }
    let e = r
        .push(&ChunkInfo::new("m", 1, 4, 10), None, b"de")
        .unwrap_err();
    assert_eq!(e.kind(), "wrong_length");
}

#[test]
fn clear_releases_everything() {
    let mut r = Reassembler::new(ChunkLimits::default());
    r.push(&ChunkInfo::new("a", 0, 2, 1000), None, &[1; 500])
        .unwrap();
    r.push(&ChunkInfo::new("b", 0, 2, 2000), None, &[1; 1000])
        .unwrap();
    assert_eq!((r.partial_count(), r.reserved_bytes()), (2, 3000));
    r.clear();
    assert_eq!((r.partial_count(), r.reserved_bytes()), (0, 0));
    // A chunk of a cleared message starts over.
    assert!(r
        .push(&ChunkInfo::new("a", 1, 2, 1000), None, &[2; 500])
        .unwrap()
        .is_none());
}

#[test]
fn stored_strings_do_not_pin_the_frame() {
    let frame = Bytes::from(vec![b'x'; 4096]);
    let id = ByteStr::from_utf8(frame.slice(0..8)).unwrap();
    let ctype = ByteStr::from_utf8(frame.slice(8..16)).unwrap();
    let mut r = Reassembler::new(ChunkLimits::default());
    let chunk = ChunkInfo {
        message_id: id,
        index: 0,
        count: 2,
        total_len: 2,
    };
    r.push(&chunk, Some(&ctype), b"a").unwrap();
    let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
    let (k, p) = r.partial.iter().next().unwrap();
    assert!(!range.contains(&(k.as_bytes().as_ptr() as usize)));
    let stored = p.content_type.as_ref().unwrap();
    assert!(!range.contains(&(stored.as_bytes().as_ptr() as usize)));
}

#[test]
fn split_layout_and_errors() {
    let key = Key::reference_default();
    let id = ByteStr::from("m");
    let content = Bytes::from(pattern(10));
    let frames = split(&key, None, None, id.clone(), content.clone(), 3).unwrap();
    assert_eq!(frames.len(), 4);
    assert_eq!(frames.chunk_count(), 4);
    let lens: Vec<usize> = frames.map(|f| f.content.len()).collect();
    assert_eq!(lens, vec![3, 3, 3, 1]);
    // 10 bytes at max 4: count 3, chunk_len 4 -> 4, 4, 2.
    let lens: Vec<usize> = split(&key, None, None, id.clone(), content.clone(), 4)
        .unwrap()
        .map(|f| f.content.len())
        .collect();
    assert_eq!(lens, vec![4, 4, 2]);
    // One chunk when it fits.
    assert_eq!(
        split(&key, None, None, id.clone(), content.clone(), 10)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        split(&key, None, None, id.clone(), Bytes::new(), 3).unwrap_err(),
        EncodeError::EmptyContent
    );
    assert_eq!(
        split(&key, None, None, id.clone(), content.clone(), 0).unwrap_err(),
        EncodeError::ContentTooLarge(10)
    );
    let long_id = ByteStr::from("i".repeat(MAX_HEADER_LEN as usize));
    assert!(matches!(
        split(&key, None, None, long_id, content, 3).unwrap_err(),
        EncodeError::HeaderTooLarge(_)
    ));
}

#[test]
fn split_clamps_to_the_frame_limit() {
    let key = Key::reference_default();
    let total = MAX_CONTENT_LEN as usize + 1;
    let frames = split(
        &key,
        None,
        None,
        ByteStr::from("big"),
        Bytes::from(vec![7; total]),
        usize::MAX,
    )
    .unwrap();
    assert_eq!(frames.len(), 2);
    for f in frames {
        assert!(f.content.len() as u64 <= MAX_CONTENT_LEN);
    }
}

#[test]
fn split_frames_share_the_content() {
    let key = Key::reference_default();
    let content = Bytes::from(pattern(100));
    let base = content.as_ptr() as usize;
    for (i, f) in split(&key, None, None, ByteStr::from("m"), content.clone(), 30)
        .unwrap()
        .enumerate()
    {
        assert_eq!(f.content.as_ptr() as usize, base + i * 25);
    }
}

/// Encodes, decodes and verifies every frame, then reassembles, for a range of sizes
/// and chunk sizes, in forward and reverse order.
#[test]
fn split_push_round_trip() {
    let key = Key::reference_default();
    let limits = Limits::default();
    let session = ByteStr::from("3f1c6a0e-8d2b-4c55-9a77-0e6b1d2c4f10");
    let sizes = [
        1usize,
        2,
        3,
        7,
        64,
        1000,
        4097,
        65_537,
        1 << 20,
        (3 << 20) + 5,
    ];
    let max_chunks = [1usize, 3, 1000, 4096, 1 << 18, 1 << 20];
    for &size in &sizes {
        let data = Bytes::from(pattern(size));
        for &max_chunk in &max_chunks {
            // Keep the per-frame overhead of 1-byte chunks of big messages out of CI.
            if size / max_chunk > 5000 {
                continue;
            }
            for reverse in [false, true] {
                let mut r = Reassembler::new(ChunkLimits::default());
                let frames = split(
                    &key,
                    Some(session.clone()),
                    Some(ct()),
                    ByteStr::from("msg-1"),
                    data.clone(),
                    max_chunk,
                )
                .unwrap();
                let expected = size.div_ceil(max_chunk);
                assert_eq!(frames.len(), expected);
                let mut frames: Vec<EncodedFrame> = frames.collect();
                if reverse {
                    frames.reverse();
                }
                let n = frames.len();
                let mut done = None;
                for (k, f) in frames.into_iter().enumerate() {
                    assert!(f.content.len() <= max_chunk && !f.content.is_empty());
                    let mut wire = BytesMut::from(&f.head[..]);
                    wire.extend_from_slice(&f.content);
                    let frame = decode_frame(&key, &limits, wire.freeze()).unwrap();
                    assert_eq!(frame.header.kind, FrameType::Chunk);
                    assert_eq!(frame.header.session_id.as_ref(), Some(&session));
                    let ci = frame.header.chunk.as_ref().unwrap();
                    let out = r
                        .push(ci, frame.header.content_type.as_ref(), &frame.content)
                        .unwrap();
                    if k + 1 < n {
                        assert!(out.is_none());
                    } else {
                        done = out;
                    }
                }
                let m = done.expect("complete after the last chunk");
                assert_eq!(m.message_id, "msg-1");
                assert_eq!(m.content_type, Some(ct()));
                assert!(m.content == data, "size {size} max_chunk {max_chunk}");
                assert_eq!(r.reserved_bytes(), 0);
            }
        }
    }
}

#[test]
fn error_text_is_descriptive() {
    let e = ChunkError::WrongLength {
        index: 3,
        expected: 1,
        got: 2,
    };
    assert_eq!(e.to_string(), "chunk 3 has 2 bytes, its slot has 1");
}
