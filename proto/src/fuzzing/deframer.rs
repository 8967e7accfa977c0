//! Body of the fuzz target `deframer`: the one-shot decoder, the streaming deframer and the header
//! JSON parser on arbitrary input.
//!
//! Input layout: byte 0 selects the mode, byte 1 shapes the pieces the stream is fed in
//! (and, in `signed` mode, where the header JSON ends); the rest is the payload.
//!
//! * raw mode (bit 0 of byte 0 clear): the payload is the byte stream itself.
//! * signed mode (bit 0 set): the payload is split into header JSON and content, wrapped in
//!   a fixed header with correct CRCs and HMAC, and followed by the payload again. Random
//!   bytes almost never pass CRC-32 and HMAC, so without this mode the JSON parser and
//!   type checks behind them would be out of the fuzzer's reach.
//!
//! Each stream is decoded with the reference default key, once with the protocol limits
//! and once with small ones (bit 1 of byte 0 selects the vectors' custom key instead).

use bytes::{Bytes, BytesMut};

use crate::{
    decode_frame, encode_into, encode_unchecked, Decoded, Deframer, EncodeError, Frame, Header,
    Key, Limits,
};

/// The key of the reference vectors' `custom_key` case, so those seeds verify.
const CUSTOM_KEY: &[u8] = b"a-custom-secret-\x00\xff-key";

/// A frame that came out of a decoder must be self-consistent: its raw bytes decode
/// one-shot to the same frame, and its header re-encodes to a frame that decodes to the
/// same header and content.
fn check_frame(key: &Key, f: &Frame) {
    let again = decode_frame(key, &Limits::default(), f.raw.clone()).expect("raw re-decodes");
    assert_eq!(again.header, f.header);
    assert_eq!(again.content, f.content);
    let mut out = BytesMut::new();
    match encode_into(key, &f.header, &f.content, &mut out) {
        Ok(()) => {}
        // `\uXXXX` escapes can make the rewritten JSON longer than a received one that was
        // just under the 64 KiB limit; that is a legitimate refusal.
        Err(EncodeError::HeaderTooLarge(_)) => return,
        Err(e) => panic!("decoded frame does not re-encode: {e}"),
    }
    let round = decode_frame(key, &Limits::default(), out.freeze()).expect("re-encoded decodes");
    assert_eq!(round.header, f.header);
    assert_eq!(round.content, f.content);
}

fn deframe(key: &Key, limits: Limits, stream: &[u8], shape: u8) {
    let mut d = Deframer::new(limits);
    let mut at = 0;
    let mut state = u32::from(shape).wrapping_mul(2_654_435_761) | 1;
    let max_piece = 1 + usize::from(shape) * 8;
    while at < stream.len() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let end = (at + 1 + state as usize % max_piece).min(stream.len());
        d.extend_from_slice(&stream[at..end]);
        at = end;
        loop {
            match d.decode(key) {
                Ok(Decoded::Frame(f)) => check_frame(key, &f),
                Ok(Decoded::NeedMore(n)) => {
                    assert!(n > 0);
                    break;
                }
                // The stream is out of sync after an error; a real caller closes it.
                Err(_) => return,
            }
        }
    }
    let _ = d.finish();
}

/// Runs one input (see the module docs for its layout). Panics on a finding.
pub fn deframer(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let (mode, shape, payload) = (data[0], data[1], &data[2..]);
    let key = if mode & 2 == 0 {
        Key::reference_default()
    } else {
        Key::new(CUSTOM_KEY)
    };
    let stream: Vec<u8> = if mode & 1 == 0 {
        payload.to_vec()
    } else {
        let split = usize::from(shape).min(payload.len());
        let (json, content) = payload.split_at(split);
        let mut s = encode_unchecked(&key, json, content);
        s.extend_from_slice(payload);
        s
    };

    if let Ok(h) = Header::parse(&Bytes::copy_from_slice(payload)) {
        // Whatever the parser accepts, the writer writes back to an equal header.
        assert_eq!(Header::parse(&h.to_json()).expect("written JSON parses"), h);
    }

    let buf = Bytes::from(stream);
    for limits in [Limits::default(), Limits::new(128, 256)] {
        if let Ok(f) = decode_frame(&key, &limits, buf.clone()) {
            check_frame(&key, &f);
        }
        deframe(&key, limits, &buf, shape);
    }
}
