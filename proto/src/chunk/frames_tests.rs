//! The chunk frames a reassembled message keeps for an echo ([`Reassembled::frames`]).

use super::*;
use crate::codec::decode_frame;
use crate::frame::Limits;

/// `content` split into chunks of `max_chunk` by the splitter, on the wire.
fn wire_chunks(content: &Bytes, max_chunk: usize) -> Vec<Bytes> {
    split(
        &Key::reference_default(),
        Some(ByteStr::from("sid-1")),
        Some(ByteStr::from("application/octet-stream")),
        ByteStr::from("m-1"),
        content.clone(),
        max_chunk,
    )
    .unwrap()
    .map(|f| {
        let mut w = BytesMut::from(&f.head[..]);
        w.extend_from_slice(&f.content);
        w.freeze()
    })
    .collect()
}

/// Pushes every wire chunk (decoded and verified) with its head; the message.
fn push_all(r: &mut Reassembler, wires: &[Bytes]) -> Reassembled {
    let mut done = None;
    for w in wires {
        let f = decode_frame(&Key::reference_default(), &Limits::default(), w.clone()).unwrap();
        let head = &f.raw[..f.raw.len() - f.content.len()];
        let info = f.header.chunk.as_ref().unwrap();
        let out = r
            .push_frame(info, f.header.content_type.as_ref(), head, &f.content, None)
            .unwrap();
        assert!(done.is_none(), "complete before the last chunk");
        done = out;
    }
    done.expect("complete after the last chunk")
}

fn on_the_wire(frames: &[EncodedFrame]) -> Vec<u8> {
    let mut v = Vec::new();
    for f in frames {
        v.extend_from_slice(&f.head);
        v.extend_from_slice(&f.content);
    }
    v
}

#[test]
fn the_frames_are_the_chunks_as_received_in_arrival_order() {
    let content = Bytes::from((0..300_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    let mut wires = wire_chunks(&content, 64 * 1024);
    assert_eq!(wires.len(), 5);
    wires.swap(0, 3);
    wires.swap(1, 4);
    let mut r = Reassembler::new(ChunkLimits::default());
    let m = push_all(&mut r, &wires);
    assert!(m.content == content);
    let frames = m.frames.expect("heads kept");
    assert_eq!(on_the_wire(&frames), wires.concat());
    // The contents are the message's own bytes, not copies.
    for f in &frames {
        let range = m.content.as_ptr() as usize..m.content.as_ptr() as usize + m.content.len();
        assert!(range.contains(&(f.content.as_ptr() as usize)));
    }
    assert_eq!(r.reserved_bytes(), 0);
}

#[test]
fn heads_are_counted_while_the_message_is_open() {
    let content = Bytes::from(vec![3u8; 200_000]);
    let wires = wire_chunks(&content, 100_000);
    let f = decode_frame(
        &Key::reference_default(),
        &Limits::default(),
        wires[0].clone(),
    )
    .unwrap();
    let head = &f.raw[..f.raw.len() - f.content.len()];
    let mut r = Reassembler::new(ChunkLimits::default());
    let info = f.header.chunk.as_ref().unwrap();
    let out = r
        .push_frame(info, f.header.content_type.as_ref(), head, &f.content, None)
        .unwrap();
    assert!(out.is_none());
    assert_eq!(r.reserved_bytes(), 200_000);
    assert_eq!(r.heads_bytes(), head.len() as u64);
    r.clear();
    assert_eq!((r.reserved_bytes(), r.heads_bytes()), (0, 0));
}

/// Tiny chunks: their heads would outweigh the message, so none are kept (and none
/// stay reserved); the message still comes whole.
#[test]
fn heads_larger_than_a_32nd_of_the_message_are_given_up() {
    let content = Bytes::from(vec![9u8; 200_000]);
    let wires = wire_chunks(&content, 1000);
    let mut r = Reassembler::new(ChunkLimits::default());
    let m = push_all(&mut r, &wires);
    assert!(m.frames.is_none());
    assert!(m.content == content);
    assert_eq!((r.reserved_bytes(), r.heads_bytes()), (0, 0));
}

#[test]
fn a_single_chunk_message_keeps_its_frame() {
    let content = Bytes::from(vec![1u8; 5000]);
    let wires = wire_chunks(&content, 10_000);
    assert_eq!(wires.len(), 1);
    let mut r = Reassembler::new(ChunkLimits::default());
    let m = push_all(&mut r, &wires);
    assert_eq!(on_the_wire(&m.frames.unwrap()), wires[0][..]);
}

/// Chunks pushed without their heads (a client's reassembler) keep none.
#[test]
fn push_keeps_no_frames() {
    let content = Bytes::from(vec![2u8; 10_000]);
    let mut r = Reassembler::new(ChunkLimits::default());
    let mut done = None;
    for w in wire_chunks(&content, 4000) {
        let f = decode_frame(&Key::reference_default(), &Limits::default(), w).unwrap();
        done = r
            .push(
                f.header.chunk.as_ref().unwrap(),
                f.header.content_type.as_ref(),
                &f.content,
            )
            .unwrap();
    }
    assert!(done.unwrap().frames.is_none());
}
