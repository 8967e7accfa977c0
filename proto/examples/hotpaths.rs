//! Drives one codec hot path a fixed number of times, for instruction counting under
//! callgrind (`ci/instructions.sh`). Only `measure` is counted (`--toggle-collect`), so
//! setup and process start-up do not blur the figure.
//!
//! Usage: `hotpaths CASE` where CASE is one of the names in `CASES` (`hotpaths --list`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use sockchat_proto::header::{ByteStr, TEXT_UTF8};
use sockchat_proto::session::{Event, Session, SessionConfig};
use sockchat_proto::{
    decode_frame, encode_into, split, FrameType, Header, Key, Limits, Reassembler, ServerSession,
};

const SID: &str = "3f2b8c1e-6d4a-4e8b-9c71-2a5d0e9f1b34";

/// (name, iterations, content size)
const CASES: [(&str, u32, usize); 6] = [
    ("encode_64", 1000, 64),
    ("decode_verify_64", 1000, 64),
    ("encode_64k", 50, 64 * 1024),
    ("decode_verify_64k", 50, 64 * 1024),
    ("reassemble_1m_16_chunks", 10, 1024 * 1024),
    ("server_session_echo_64", 1000, 64),
];

fn header() -> Header {
    Header::new(
        FrameType::Message,
        Some(TEXT_UTF8),
        Some(ByteStr::from(SID)),
    )
}

fn frame(key: &Key, size: usize) -> Bytes {
    let mut out = BytesMut::new();
    encode_into(key, &header(), &vec![b'x'; size], &mut out).expect("valid frame");
    out.freeze()
}

/// Everything a case needs, built before counting starts.
enum Prepared {
    Encode {
        content: Vec<u8>,
        out: BytesMut,
    },
    Decode {
        frame: Bytes,
    },
    Reassemble {
        chunks: Vec<sockchat_proto::Frame>,
    },
    Session {
        session: Box<ServerSession>,
        frame: Bytes,
        now: Instant,
    },
}

#[inline(never)]
fn measure(key: &Key, prepared: &mut Prepared, iterations: u32) -> usize {
    let mut sink = 0usize;
    for _ in 0..iterations {
        match prepared {
            Prepared::Encode { content, out } => {
                out.clear();
                encode_into(key, &header(), content, out).expect("encodes");
                sink += out.len();
            }
            Prepared::Decode { frame } => {
                let f = decode_frame(key, &Limits::default(), frame.clone()).expect("decodes");
                sink += f.content.len();
            }
            Prepared::Reassemble { chunks } => {
                let mut r = Reassembler::new(Default::default());
                for c in chunks.iter() {
                    let info = c.header.chunk.as_ref().expect("chunk info");
                    if let Some(m) = r
                        .push(info, c.header.content_type.as_ref(), &c.content)
                        .expect("valid")
                    {
                        sink += m.content.len();
                    }
                }
            }
            Prepared::Session {
                session,
                frame,
                now,
            } => {
                session.deframer_mut().extend_from_slice(frame);
                session.handle_input(*now);
                while let Some(e) = session.poll_event() {
                    if let Event::Message(m) = e {
                        session.echo(m).expect("open");
                    }
                }
                let mut out = Vec::new();
                session.poll_transmit(&mut out);
                sink += out.iter().map(Bytes::len).sum::<usize>();
            }
        }
    }
    black_box(sink)
}

fn prepare(key: &Key, name: &str, size: usize) -> Prepared {
    match name {
        n if n.starts_with("encode") => Prepared::Encode {
            content: vec![b'x'; size],
            out: BytesMut::new(),
        },
        n if n.starts_with("decode") => Prepared::Decode {
            frame: frame(key, size),
        },
        n if n.starts_with("reassemble") => {
            let content = Bytes::from(vec![b'y'; size]);
            let parts = split(
                key,
                Some(ByteStr::from(SID)),
                Some(TEXT_UTF8),
                ByteStr::from("m"),
                content,
                size / 16,
            )
            .expect("splits");
            let chunks = parts
                .map(|p| {
                    let wire = Bytes::from([&p.head[..], &p.content[..]].concat());
                    decode_frame(key, &Limits::default(), wire).expect("valid chunk")
                })
                .collect();
            Prepared::Reassemble { chunks }
        }
        _ => {
            let now = Instant::now();
            let key = Arc::new(key.clone());
            let mut session = ServerSession::new(
                ByteStr::from(SID),
                key.clone(),
                Arc::new(SessionConfig::default()),
                now,
            );
            let ack = Header::new(
                FrameType::SessionAck,
                Some(TEXT_UTF8),
                Some(ByteStr::from(SID)),
            );
            let mut buf = BytesMut::new();
            encode_into(&key, &ack, b"Session acknowledged", &mut buf).expect("ack");
            session.deframer_mut().extend_from_slice(&buf);
            session.handle_input(now);
            while session.poll_event().is_some() {}
            session.poll_transmit(&mut Vec::new());
            Prepared::Session {
                session: Box::new(session),
                frame: frame(&key, size),
                now,
            }
        }
    }
}

fn main() {
    let wanted = std::env::args().nth(1).unwrap_or_default();
    if wanted == "--list" {
        for (name, ..) in CASES {
            println!("{name}");
        }
        return;
    }
    let Some(&(name, iterations, size)) = CASES.iter().find(|c| c.0 == wanted) else {
        let names: Vec<&str> = CASES.iter().map(|c| c.0).collect();
        eprintln!("usage: hotpaths CASE   (one of: {})", names.join(", "));
        std::process::exit(2);
    };
    let key = Key::reference_default();
    let mut prepared = prepare(&key, name, size);
    let sink = measure(&key, &mut prepared, iterations);
    println!("{name}: {iterations} iterations ({sink})");
}
