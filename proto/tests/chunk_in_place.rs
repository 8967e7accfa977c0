//! Large chunks received straight into their message's buffer
//! (`ServerSession::receive_chunk_in_place`), on an in-memory pair: the same message, the
//! same echo and the same errors as the usual path.

use bytes::{Bytes, BytesMut};
use sockchat_proto::header::ByteStr;
use sockchat_proto::session::Session;
use sockchat_proto::{split, ChunkError, CloseReason, DecodeError, FrameType, Key, ServerSession};
use sockchat_testkit::pair::{closed, message_events, Pair, SESSION_ID as SID};

/// `content` as chunk frames of at most `max_chunk` content bytes, signed with `key`, for
/// session `sid`.
fn chunks(key: &Key, sid: &str, id: &str, content: &Bytes, max_chunk: usize) -> Vec<Bytes> {
    split(
        key,
        Some(ByteStr::from(sid)),
        Some(ByteStr::from("application/octet-stream")),
        ByteStr::from(id),
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

fn pattern(len: usize) -> Bytes {
    (0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>().into()
}

/// Feeds the first `first` bytes of `wire` as input, then asks for the chunk's slot.
fn start(p: &mut Pair, wire: &[u8], first: usize) -> Option<BytesMut> {
    p.server.deframer_mut().extend_from_slice(&wire[..first]);
    p.server.handle_input(p.now);
    p.server.receive_chunk_in_place(p.now)
}

/// Receives the rest of `wire` (after `first` bytes) into `slot` in pieces of `step`
/// bytes, checking what the session says is still missing after each.
fn finish(p: &mut Pair, wire: &[u8], first: usize, mut slot: BytesMut, step: usize) {
    let mut at = first;
    loop {
        let n = step.min(wire.len() - at);
        assert!(slot.capacity() - slot.len() >= n, "the slot has room");
        slot.extend_from_slice(&wire[at..at + n]);
        at += n;
        match p.server.chunk_in_place_received(slot, p.now) {
            Some((s, missing)) => {
                assert_eq!(missing, wire.len() - at, "missing after {at} bytes");
                slot = s;
            }
            None => {
                assert_eq!(at, wire.len(), "handled only once complete");
                break;
            }
        }
    }
    p.drain_events();
}

fn transmitted(s: &mut ServerSession) -> Vec<u8> {
    let mut out = Vec::new();
    s.poll_transmit(&mut out);
    out.concat()
}

#[test]
fn chunks_received_in_place_make_the_same_message_and_echo_the_same_bytes() {
    let mut p = Pair::established();
    let content = pattern(300_000);
    let key = Key::reference_default();
    let wires = chunks(&key, SID, "m-1", &content, 64 * 1024);
    assert_eq!(wires.len(), 5);
    // Arrival order 3, 0, 4, 1, 2: chunks 3, 4 and 2 in place, 0 and 1 as usual.
    let order = [3, 0, 4, 1, 2];
    let mut slots = Vec::new();
    for (n, &i) in order.iter().enumerate() {
        let w = &wires[i];
        if i == 0 || i == 1 {
            p.server.deframer_mut().extend_from_slice(w);
            p.server.handle_input(p.now);
            p.drain_events();
            continue;
        }
        // The head and 1,000 bytes of content first (what a ring buffer would hold).
        let head = w.len() - 60_000;
        let slot = start(&mut p, w, head + 1000).expect("a chunk of this session");
        assert_eq!(slot.len(), 1000, "the buffered content moved to the slot");
        assert!(p.server.is_input_idle(), "the deframer holds nothing more");
        slots.push((i, slot.as_ptr() as usize));
        finish(&mut p, w, head + 1000, slot, 16 * 1024);
        let done = n == order.len() - 1;
        assert_eq!(message_events(&p.server_events).len(), usize::from(done));
    }
    let mut got = message_events(&p.server_events);
    let m = got.pop().expect("the message");
    assert!(m.content == content);
    for (i, at) in slots {
        let place = m.content.as_ptr() as usize + i * 60_000;
        assert_eq!(
            at, place,
            "chunk {i} was received into its place in the message"
        );
    }
    assert_eq!(p.server.reassembly_bytes(), 0);
    p.server.echo(m).unwrap();
    let echoed = transmitted(&mut p.server);
    let sent: Vec<u8> = order.iter().flat_map(|&i| wires[i].to_vec()).collect();
    assert!(
        echoed == sent,
        "the chunk frames exactly as they came, in that order"
    );
    assert!(closed(&p.server_events).is_empty());
}

#[test]
fn corrupted_content_received_in_place_closes_as_an_invalid_frame() {
    let content = pattern(200_000);
    let key = Key::reference_default();
    let wires = chunks(&key, SID, "m", &content, 100_000);
    let mut p = Pair::established();
    let mut bad = wires[0].to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let slot = start(&mut p, &bad, 5000).expect("the head is fine");
    finish(&mut p, &bad, 5000, slot, 1 << 20);
    assert!(matches!(
        closed(&p.server_events)[..],
        [CloseReason::InvalidFrame(DecodeError::ContentCrcMismatch)]
    ));
    assert!(message_events(&p.server_events).is_empty());
    assert_eq!(
        p.server.reassembly_bytes(),
        0,
        "the message went with the session"
    );

    // Valid CRCs under another key: the HMAC is what refuses it.
    let forged = chunks(&Key::new(b"not-the-key"), SID, "m", &content, 100_000);
    let mut p = Pair::established();
    let slot = start(&mut p, &forged[1], 5000).expect("the head is fine");
    finish(&mut p, &forged[1], 5000, slot, 1 << 20);
    assert!(matches!(
        closed(&p.server_events)[..],
        [CloseReason::InvalidFrame(DecodeError::HmacMismatch)]
    ));
}

#[test]
fn the_end_of_input_while_a_slot_is_out_is_a_truncated_frame() {
    let content = pattern(200_000);
    let wires = chunks(&Key::reference_default(), SID, "m", &content, 100_000);
    let mut p = Pair::established();
    let mut slot = start(&mut p, &wires[0], 5000).expect("a chunk");
    slot.extend_from_slice(&wires[0][5000..6000]);
    p.server.chunk_in_place_eof(slot);
    p.drain_events();
    let missing = wires[0].len() - 6000;
    assert!(
        matches!(
            closed(&p.server_events)[..],
            [CloseReason::InvalidFrame(DecodeError::Truncated { missing: m })] if m == missing
        ),
        "{:?}",
        closed(&p.server_events)
    );
}

#[test]
fn frames_that_are_not_acceptable_chunks_are_left_to_the_usual_path_and_its_errors() {
    let content = pattern(200_000);
    let key = Key::reference_default();

    // Another session's chunk: refused as usual once complete.
    let foreign = chunks(&key, "someone-else", "m", &content, 100_000);
    let mut p = Pair::established();
    assert!(start(&mut p, &foreign[0], 5000).is_none());
    p.inject_to_server(&foreign[0][5000..]);
    assert_eq!(
        closed(&p.server_events),
        vec![CloseReason::ForeignSessionId]
    );

    // A chunk the reassembler refuses (a duplicate): nothing lent, the usual error.
    let wires = chunks(&key, SID, "m", &content, 100_000);
    let mut p = Pair::established();
    let slot = start(&mut p, &wires[0], 5000).expect("first time");
    finish(&mut p, &wires[0], 5000, slot, 1 << 20);
    assert!(start(&mut p, &wires[0], 5000).is_none(), "a duplicate");
    p.inject_to_server(&wires[0][5000..]);
    assert!(matches!(
        closed(&p.server_events)[..],
        [CloseReason::Chunk(ChunkError::Duplicate { index: 0 })]
    ));

    // Not a chunk; a head not yet all in; a frame all buffered: nothing lent.
    let mut p = Pair::established();
    let mut msg = BytesMut::new();
    let h = sockchat_proto::Header::new(FrameType::Message, None, Some(ByteStr::from(SID)));
    sockchat_proto::encode_into(&key, &h, &content, &mut msg).unwrap();
    assert!(start(&mut p, &msg, 5000).is_none());
    p.inject_to_server(&msg[5000..]);
    assert_eq!(message_events(&p.server_events).len(), 1);
    let mut p = Pair::established();
    assert!(
        start(&mut p, &wires[1], 70).is_none(),
        "the head JSON is not all in"
    );
    p.inject_to_server(&wires[1][70..]);
    let mut p = Pair::established();
    p.server.deframer_mut().extend_from_slice(&wires[1]);
    assert!(
        p.server.receive_chunk_in_place(p.now).is_none(),
        "all buffered"
    );
    p.server.handle_input(p.now);
    p.drain_events();
    assert!(closed(&p.server_events).is_empty());
}
