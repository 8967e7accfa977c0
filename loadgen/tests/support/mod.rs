//! Test support: a small protocol server double (std threads, `sockchat-proto` codec)
//! and helpers to run loadgen scenarios against it or against a real server.
//!
//! The double sends `session_init`, checks the ack, grants the `chunk` feature when
//! asked, echoes messages (reassembling chunks), answers pings, honours `disconnect`,
//! and in chat mode delivers each message to every other session instead. With
//! `corrupt_nth = Some(n)` it flips one content byte of the n-th echoed frame (counted
//! over all connections) after encoding, so the client must catch a CRC mismatch.
//!
//! To run the scenario tests against a real server instead, set `LOADGEN_TEST_TCP=ADDR`
//! and/or `LOADGEN_TEST_UNIX=PATH` (the double is then used only by the tests that need
//! its special behaviour: corruption and chat mode when not provided).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use clap::Parser;
use loadgen::cli::Cli;
use loadgen::conn::Target;
use loadgen::report::Report;
use sockchat_proto::frame::FrameType;
use sockchat_proto::header::OCTET_STREAM;
use sockchat_proto::{
    encode_into, ByteStr, ChunkLimits, Decoded, Deframer, Frame, Header, Key, Reassembler,
};

/// Behaviour switches of the double.
#[derive(Debug, Clone, Default)]
pub struct DoubleOpts {
    /// Flip a byte in the n-th echoed frame (1-based, over all connections).
    pub corrupt_nth: Option<u64>,
    /// Chat mode: deliver messages to every other session instead of echoing.
    pub chat: bool,
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(b),
            Stream::Unix(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(b),
            Stream::Unix(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A chat-mode peer: id, session id, writer.
type Peer = (u64, ByteStr, Arc<Mutex<Stream>>);

struct Shared {
    opts: DoubleOpts,
    key: Key,
    echoed: AtomicU64,
    next_id: AtomicU64,
    /// Chat mode: every live session's id and writer.
    sessions: Mutex<Vec<Peer>>,
}

/// A running double. Its threads live until the test process exits; the Unix socket
/// lives in a temp dir removed on drop.
pub struct Double {
    /// Where it listens.
    pub target: Target,
    _dir: Option<tempfile::TempDir>,
}

impl Double {
    /// Starts a double on `transport` ("tcp" or "unix").
    pub fn start(transport: &str, opts: DoubleOpts) -> Double {
        let shared = Arc::new(Shared {
            opts,
            key: Key::reference_default(),
            echoed: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            sessions: Mutex::new(Vec::new()),
        });
        match transport {
            "tcp" => {
                let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
                let target = Target::Tcp(l.local_addr().unwrap());
                std::thread::spawn(move || {
                    for s in l.incoming().flatten() {
                        let _ = s.set_nodelay(true);
                        let sh = shared.clone();
                        std::thread::spawn(move || serve(Stream::Tcp(s), sh));
                    }
                });
                Double { target, _dir: None }
            }
            "unix" => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("double.sock");
                let l = UnixListener::bind(&path).expect("bind unix");
                std::thread::spawn(move || {
                    for s in l.incoming().flatten() {
                        let sh = shared.clone();
                        std::thread::spawn(move || serve(Stream::Unix(s), sh));
                    }
                });
                Double {
                    target: Target::Unix(path),
                    _dir: Some(dir),
                }
            }
            other => panic!("unknown transport {other}"),
        }
    }
}

fn send(w: &Mutex<Stream>, key: &Key, h: &Header, content: &[u8], corrupt: bool) -> bool {
    let mut out = BytesMut::new();
    encode_into(key, h, content, &mut out).expect("encodable");
    if corrupt {
        let last = out.len() - 1;
        out[last] ^= 0x55;
    }
    w.lock().unwrap().write_all(&out).is_ok()
}

fn next_frame(r: &mut Stream, d: &mut Deframer, key: &Key) -> Option<Frame> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match d.decode(key) {
            Ok(Decoded::Frame(f)) => return Some(f),
            Ok(Decoded::NeedMore(_)) => {}
            Err(_) => return None,
        }
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => d.extend_from_slice(&buf[..n]),
        }
    }
}

fn serve(stream: Stream, sh: Arc<Shared>) {
    let key = &sh.key;
    let mut r = stream.try_clone().expect("clone");
    let w = Arc::new(Mutex::new(stream));
    let n = sh.next_id.fetch_add(1, Ordering::Relaxed);
    let sid = ByteStr::from(format!("00000000-0000-4000-8000-{n:012}"));
    let hdr = |kind, ct: ByteStr| Header::new(kind, Some(ct), Some(sid.clone()));
    if !send(
        &w,
        key,
        &hdr(FrameType::SessionInit, OCTET_STREAM),
        b"Session established",
        false,
    ) {
        return;
    }
    let mut d = Deframer::default();
    let Some(ack) = next_frame(&mut r, &mut d, key) else {
        return;
    };
    if ack.header.kind != FrameType::SessionAck || ack.header.session_id.as_ref() != Some(&sid) {
        return;
    }
    if let Some(f) = &ack.header.features {
        let mut answer = hdr(FrameType::SessionAck, OCTET_STREAM);
        answer.features = Some(f.iter().filter(|x| *x == "chunk").cloned().collect());
        send(&w, key, &answer, b"Session acknowledged", false);
    }
    if sh.opts.chat {
        sh.sessions
            .lock()
            .unwrap()
            .push((n, sid.clone(), w.clone()));
    }
    let mut reasm = Reassembler::new(ChunkLimits {
        max_message_len: 64 << 20,
        max_partial: 4,
    });
    while let Some(f) = next_frame(&mut r, &mut d, key) {
        if f.header.session_id.as_ref() != Some(&sid) {
            break;
        }
        let (ct, content) = match f.header.kind {
            FrameType::Heartbeat => {
                send(
                    &w,
                    key,
                    &hdr(FrameType::Heartbeat, OCTET_STREAM),
                    b"pong",
                    false,
                );
                continue;
            }
            FrameType::Disconnect => break,
            FrameType::Message => (f.header.content_type.clone(), f.content.clone()),
            FrameType::Chunk => {
                let info = f.header.chunk.clone().unwrap();
                match reasm.push(&info, f.header.content_type.as_ref(), &f.content) {
                    Ok(Some(m)) => (m.content_type, m.content),
                    Ok(None) => continue,
                    Err(_) => break,
                }
            }
            _ => break,
        };
        let ct = ct.unwrap_or(OCTET_STREAM);
        if sh.opts.chat {
            let peers: Vec<_> = sh.sessions.lock().unwrap().clone();
            for (id, psid, pw) in peers {
                if id != n {
                    let h = Header::new(FrameType::Message, Some(ct.clone()), Some(psid));
                    send(&pw, key, &h, &content, false);
                }
            }
            continue;
        }
        let nth = sh.echoed.fetch_add(1, Ordering::Relaxed) + 1;
        let corrupt = sh.opts.corrupt_nth == Some(nth);
        if !send(&w, key, &hdr(FrameType::Message, ct), &content, corrupt) {
            break;
        }
    }
    if sh.opts.chat {
        sh.sessions.lock().unwrap().retain(|s| s.0 != n);
    }
    w.lock().unwrap().shutdown();
}

/// Where the scenario tests send load: a real server from the environment, or a fresh
/// double.
pub fn target(transport: &str) -> (Target, Option<Double>) {
    let var = match transport {
        "tcp" => "LOADGEN_TEST_TCP",
        _ => "LOADGEN_TEST_UNIX",
    };
    match std::env::var(var) {
        Ok(v) if transport == "tcp" => (Target::Tcp(v.parse().expect("LOADGEN_TEST_TCP")), None),
        Ok(v) => (Target::Unix(PathBuf::from(v)), None),
        Err(_) => {
            let d = Double::start(transport, DoubleOpts::default());
            (d.target.clone(), Some(d))
        }
    }
}

/// `--tcp ADDR` or `--unix PATH`.
pub fn target_args(t: &Target) -> Vec<String> {
    match t {
        Target::Tcp(a) => vec!["--tcp".into(), a.to_string()],
        Target::Unix(p) => vec!["--unix".into(), p.display().to_string()],
    }
}

/// Runs `loadgen SCENARIO ARGS... --quiet` in-process, short, and returns its report.
pub fn run(scenario: &str, t: &Target, args: &[&str]) -> Report {
    let mut argv: Vec<String> = vec!["loadgen".into(), scenario.into()];
    argv.extend(target_args(t));
    argv.extend(
        [
            "--quiet",
            "--threads",
            "2",
            "--warmup",
            "0.3",
            "--duration",
            "1.2",
            "--drain",
            "2",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    argv.extend(args.iter().map(|s| s.to_string()));
    let cli = Cli::try_parse_from(&argv).expect("valid arguments");
    loadgen::run_load(&cli.command)
        .expect("scenario runs")
        .expect("a load scenario")
}

/// The assertions every clean run must pass.
pub fn assert_clean(r: &Report) {
    let x = &r.results;
    assert_eq!(
        x.sessions_established,
        x.sessions_requested,
        "sessions established: {}",
        r.summary()
    );
    assert_eq!(x.errors_total, 0, "errors: {:?}\n{}", x.errors, r.summary());
    assert!(x.ok, "{}", r.summary());
    assert!(
        x.messages > 0 && x.messages_per_sec > 0.0,
        "{}",
        r.summary()
    );
    assert!(
        x.latency_us.count > 0 && x.latency_us.p50 > 0.0,
        "{}",
        r.summary()
    );
    for (name, h) in &x.histograms {
        let h = loadgen::histogram::decode(h).unwrap_or_else(|e| panic!("{name}: {e}"));
        if name == &x.latency_name {
            assert_eq!(h.len(), x.latency_us.count);
        }
    }
    assert!(r.cpu.loadgen_cpu_ns_per_msg.is_some(), "{:?}", r.cpu);
    assert!(!r.timeline.is_empty());
}

/// Give a just-started double a moment (its accept thread is already listening; this
/// only avoids counting thread start-up in the first handshake).
pub fn settle() {
    std::thread::sleep(Duration::from_millis(20));
}
