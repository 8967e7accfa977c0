//! A protocol double for what the real server cannot be made to do: corrupt a frame, or
//! answer with echoes that are valid but not byte-identical to what was sent.
//!
//! It sends `session_init`, checks the ack, echoes messages, answers pings and honours
//! `disconnect`. With `corrupt_nth = Some(n)` it flips the last content byte of the n-th
//! echo (counted over all connections) after encoding, so the client must catch a CRC
//! mismatch. With `foreign_header` its echoes carry an extra (ignorable) header key, so
//! they verify only on loadgen's decoding slow path.
//!
//! Std threads; dropping the double stops them: the acceptor is woken by a connection of
//! its own, every served stream is shut down, and all threads are joined.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::BytesMut;
use loadgen::conn::Target;
use sockchat_os::Stream;
use sockchat_proto::frame::FrameType;
use sockchat_proto::header::OCTET_STREAM;
use sockchat_proto::{encode_into, ByteStr, Decoded, Deframer, Frame, Header, Key};

/// Behaviour switches of the double.
#[derive(Debug, Clone, Default)]
pub(crate) struct DoubleOpts {
    /// Flip a byte in the n-th echoed frame (1-based, over all connections).
    pub corrupt_nth: Option<u64>,
    /// Echo with an extra `features` key in the header JSON (valid, other bytes).
    pub foreign_header: bool,
    /// Echo at most this many messages per second over all connections (a server with
    /// a fixed capacity): each echo waits for its slot, 1/capacity after the previous.
    pub capacity: Option<f64>,
}

struct Shared {
    opts: DoubleOpts,
    key: Key,
    echoed: AtomicU64,
    /// The next free echo slot under `capacity`.
    next_slot: Mutex<Option<std::time::Instant>>,
    next_id: AtomicU64,
    stop: AtomicBool,
    /// A clone of every served stream (to shut them down) and its thread.
    served: Mutex<Vec<(Stream, JoinHandle<()>)>>,
}

/// A running double; stopped on drop. The Unix socket lives in a temp dir.
pub(crate) struct Double {
    /// Where it listens.
    pub target: Target,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Double {
    /// Starts a double on `transport` ("tcp" or "unix").
    pub(crate) fn start(transport: &str, opts: DoubleOpts) -> Double {
        let shared = Arc::new(Shared {
            opts,
            key: Key::reference_default(),
            echoed: AtomicU64::new(0),
            next_slot: Mutex::new(None),
            next_id: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            served: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let (target, acceptor, dir) = match transport {
            "tcp" => {
                let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
                let target = Target::Tcp(l.local_addr().unwrap());
                let t = std::thread::spawn(move || {
                    for s in l.incoming().flatten() {
                        let _ = s.set_nodelay(true);
                        if !accepted(&sh, Stream::Tcp(s)) {
                            break;
                        }
                    }
                });
                (target, t, None)
            }
            "unix" => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("double.sock");
                let l = UnixListener::bind(&path).expect("bind unix");
                let t = std::thread::spawn(move || {
                    for s in l.incoming().flatten() {
                        if !accepted(&sh, Stream::Unix(s)) {
                            break;
                        }
                    }
                });
                (Target::Unix(path), t, Some(dir))
            }
            other => panic!("unknown transport {other}"),
        };
        Double {
            target,
            shared,
            acceptor: Some(acceptor),
            _dir: dir,
        }
    }
}

/// Serves a new connection on its own thread; `false` once the double is stopping.
fn accepted(sh: &Arc<Shared>, s: Stream) -> bool {
    if sh.stop.load(Ordering::Acquire) {
        return false;
    }
    let Ok(clone) = s.try_clone() else {
        return true;
    };
    let sh2 = sh.clone();
    let t = std::thread::spawn(move || serve(s, sh2));
    sh.served.lock().unwrap().push((clone, t));
    true
}

impl Drop for Double {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Wake the blocking accept with a connection of our own.
        let _ = match &self.target {
            Target::Tcp(a) => TcpStream::connect(a).map(drop),
            Target::Unix(p) => UnixStream::connect(p).map(drop),
        };
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        let served = std::mem::take(&mut *self.shared.served.lock().unwrap());
        for (s, _) in &served {
            let _ = s.shutdown(Shutdown::Both);
        }
        for (_, t) in served {
            let _ = t.join();
        }
    }
}

fn send(w: &mut Stream, key: &Key, h: &Header, content: &[u8], corrupt: bool) -> bool {
    let mut out = BytesMut::new();
    encode_into(key, h, content, &mut out).expect("encodable");
    if corrupt {
        let last = out.len() - 1;
        out[last] ^= 0x55;
    }
    w.write_all(&out).is_ok()
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

fn serve(mut s: Stream, sh: Arc<Shared>) {
    let key = &sh.key;
    let n = sh.next_id.fetch_add(1, Ordering::Relaxed);
    let sid = ByteStr::from(format!("00000000-0000-4000-8000-{n:012}"));
    let hdr = |kind, ct: ByteStr| Header::new(kind, Some(ct), Some(sid.clone()));
    let init = hdr(FrameType::SessionInit, OCTET_STREAM);
    if !send(&mut s, key, &init, b"Session established", false) {
        return;
    }
    let mut d = Deframer::default();
    let Some(ack) = next_frame(&mut s, &mut d, key) else {
        return;
    };
    if ack.header.kind != FrameType::SessionAck || ack.header.session_id.as_ref() != Some(&sid) {
        return;
    }
    while let Some(f) = next_frame(&mut s, &mut d, key) {
        if f.header.session_id.as_ref() != Some(&sid) {
            break;
        }
        match f.header.kind {
            FrameType::Heartbeat => {
                let pong = hdr(FrameType::Heartbeat, OCTET_STREAM);
                if !send(&mut s, key, &pong, b"pong", false) {
                    break;
                }
            }
            FrameType::Message => {
                if let Some(cap) = sh.opts.capacity {
                    wait_for_slot(&sh, cap);
                }
                let nth = sh.echoed.fetch_add(1, Ordering::Relaxed) + 1;
                let corrupt = sh.opts.corrupt_nth == Some(nth);
                let ct = f.header.content_type.clone().unwrap_or(OCTET_STREAM);
                let mut h = hdr(FrameType::Message, ct);
                if sh.opts.foreign_header {
                    h.features = Some(Vec::new());
                }
                if !send(&mut s, key, &h, &f.content, corrupt) {
                    break;
                }
            }
            _ => break,
        }
    }
    let _ = s.shutdown(Shutdown::Both);
}

/// Takes the next echo slot (1/capacity after the previous one, never in the past) and
/// sleeps until it.
fn wait_for_slot(sh: &Shared, capacity: f64) {
    let now = std::time::Instant::now();
    let slot = {
        let mut next = sh.next_slot.lock().unwrap();
        let slot = next.map_or(now, |n| n.max(now));
        *next = Some(slot + std::time::Duration::from_secs_f64(1.0 / capacity));
        slot
    };
    std::thread::sleep(slot.saturating_duration_since(now));
}
