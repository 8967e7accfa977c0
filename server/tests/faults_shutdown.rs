//! Shutdown under load: 2,000 sessions (1,000 TCP, 1,000 Unix, on two cores) echoing
//! with several messages in flight each; SIGTERM.
//!
//! "Accepted = echoed", defined precisely: after SIGTERM the server answers everything it
//! has read and then sends `disconnect`; messages still in a socket buffer it had not
//! read may go unanswered. So the test asserts, per session, that
//! - the echoes are a prefix of what it sent, in order, none missing in the middle;
//! - `disconnect` `Server shutting down` arrives, after the last echo, then the close;
//! - at most the messages in flight (the window) are unanswered;
//!
//! and, from both sides, with the server's own totals (its `server stopped` log line):
//! - messages the server received = messages it queued back (`messages_in` =
//!   `messages_out`), and = the echoes the clients received;
//! - every session is counted as closed by `server_shutdown`;
//!
//! and the socket file is removed and the exit status is 0 within the grace period.
//!
//! The clients are 4 threads, each multiplexing 500 non-blocking sockets with poll(2).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sockchat_proto::{Decoded, Deframer, FrameType, Key, Limits};
use sockchat_testkit::*;

const SESSIONS: usize = 2000;
const THREADS: usize = 4;
/// Messages each session keeps in flight.
const WINDOW: u64 = 4;
const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Phase {
    Open,
    /// `disconnect` received; reading until the server's FIN.
    Disconnected,
    Closed,
}

struct Session {
    idx: usize,
    stream: Stream,
    sid: String,
    deframer: Deframer,
    out: Vec<u8>,
    sent: u64,
    echoed: u64,
    phase: Phase,
    errors: Vec<String>,
}

impl Session {
    fn content(&self, seq: u64) -> Vec<u8> {
        format!("session {} message {seq}", self.idx).into_bytes()
    }

    fn fill(&mut self, key: &Key, sending: bool) {
        while self.phase == Phase::Open && sending && self.sent - self.echoed < WINDOW {
            let c = self.content(self.sent);
            self.out.extend(build_frame(
                key,
                FrameType::Message,
                Some(TEXT_UTF8),
                Some(&self.sid),
                &c,
            ));
            self.sent += 1;
        }
    }

    fn write(&mut self) {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // The server may stop reading and close once it has said goodbye;
                    // what matters is what it answered (checked on the read side).
                    if self.phase == Phase::Open {
                        self.errors.push(format!("write before disconnect: {e}"));
                    }
                    self.out.clear();
                    return;
                }
            }
        }
    }

    fn read(&mut self, key: &Key, buf: &mut [u8]) {
        loop {
            match self.stream.read(buf) {
                Ok(0) => {
                    if self.phase != Phase::Disconnected {
                        self.errors
                            .push(format!("closed without a disconnect ({:?})", self.phase));
                    }
                    self.phase = Phase::Closed;
                    return;
                }
                Ok(n) => {
                    self.deframer.extend_from_slice(&buf[..n]);
                    self.decode(key);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.errors
                        .push(format!("read error in {:?}: {e}", self.phase));
                    self.phase = Phase::Closed;
                    return;
                }
            }
        }
    }

    fn decode(&mut self, key: &Key) {
        loop {
            let f = match self.deframer.decode(key) {
                Ok(Decoded::Frame(f)) => f,
                Ok(Decoded::NeedMore(_)) => return,
                Err(e) => {
                    self.errors.push(format!("undecodable bytes: {e}"));
                    self.phase = Phase::Closed;
                    return;
                }
            };
            match (self.phase, f.header.kind) {
                (Phase::Open, FrameType::Message) => {
                    let want = self.content(self.echoed);
                    if f.content[..] != want[..] {
                        self.errors.push(format!(
                            "echo {} out of order: got {:?}",
                            self.echoed,
                            String::from_utf8_lossy(&f.content)
                        ));
                    }
                    self.echoed += 1;
                }
                (Phase::Open, FrameType::Disconnect) => {
                    if f.content[..] != SHUTDOWN_CONTENT[..] {
                        self.errors.push(format!(
                            "disconnect reason {:?}",
                            String::from_utf8_lossy(&f.content)
                        ));
                    }
                    self.phase = Phase::Disconnected;
                    self.out.clear();
                }
                (phase, kind) => self.errors.push(format!(
                    "{kind} frame in phase {phase:?} ({:?})",
                    String::from_utf8_lossy(&f.content[..f.content.len().min(80)])
                )),
            }
        }
    }
}

/// One client thread: drives its sessions with poll(2) until all are closed or the
/// deadline passes. `warm` counts the sessions that have had a whole window echoed (so
/// they are in steady state, a window in flight).
fn drive(
    mut sessions: Vec<Session>,
    sending: Arc<AtomicBool>,
    warm: Arc<AtomicUsize>,
    deadline: Instant,
) -> Vec<Session> {
    let key = Key::reference_default();
    let mut buf = vec![0u8; 64 * 1024];
    // Bounded by the deadline.
    while Instant::now() < deadline && sessions.iter().any(|s| s.phase != Phase::Closed) {
        let go = sending.load(Ordering::Relaxed);
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(sessions.len());
        let mut idx = Vec::with_capacity(sessions.len());
        for (i, s) in sessions.iter_mut().enumerate() {
            if s.phase == Phase::Closed {
                continue;
            }
            s.fill(&key, go);
            let fd = match &s.stream {
                Stream::Tcp(t) => t.as_raw_fd(),
                Stream::Unix(u) => u.as_raw_fd(),
            };
            let mut events = libc::POLLIN;
            if !s.out.is_empty() {
                events |= libc::POLLOUT;
            }
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
            idx.push(i);
        }
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 10) };
        if n <= 0 {
            continue;
        }
        for (p, &i) in fds.iter().zip(&idx) {
            let s = &mut sessions[i];
            if p.revents & libc::POLLOUT != 0 {
                s.write();
            }
            if p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                let before = s.echoed;
                s.read(&key, &mut buf);
                if before < WINDOW && s.echoed >= WINDOW {
                    warm.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    sessions
}

fn connect(server: &Server, t: Transport, idx: usize) -> Session {
    let mut c = server.connect(t);
    c.handshake();
    match &c.stream {
        Stream::Tcp(s) => s.set_nonblocking(true).unwrap(),
        Stream::Unix(s) => s.set_nonblocking(true).unwrap(),
    }
    let sid = c.session_id.clone();
    let stream = c.stream;
    Session {
        idx,
        stream,
        sid,
        deframer: Deframer::new(Limits::default()),
        out: Vec::new(),
        sent: 0,
        echoed: 0,
        phase: Phase::Open,
        errors: Vec::new(),
    }
}

#[test]
fn shutdown_under_load_2000_sessions() {
    let mut server = Server::builder()
        .cores(2)
        .args(["--log-format", "json"])
        .args(["--shutdown-grace", "10s"])
        .start();
    let sock = server.unix.clone().expect("unix path");
    let started = Instant::now();
    let sessions: Vec<Session> = (0..SESSIONS)
        .map(|i| {
            let t = if i % 2 == 0 {
                Transport::Tcp
            } else {
                Transport::Unix
            };
            connect(&server, t, i)
        })
        .collect();
    eprintln!("{SESSIONS} sessions established in {:?}", started.elapsed());

    let sending = Arc::new(AtomicBool::new(true));
    let warm = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + GRACE + LONG;
    let per = SESSIONS.div_ceil(THREADS);
    let mut sessions = sessions.into_iter();
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let mine: Vec<Session> = sessions.by_ref().take(per).collect();
            let (sending, warm) = (sending.clone(), warm.clone());
            thread::spawn(move || drive(mine, sending, warm, deadline))
        })
        .collect();

    // Load until every session has had a whole window echoed, then SIGTERM with every
    // session's next window in flight.
    assert!(
        wait_until(LONG, || warm.load(Ordering::Relaxed) == SESSIONS),
        "only {} of {SESSIONS} sessions had a window echoed",
        warm.load(Ordering::Relaxed)
    );
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(GRACE + SHORT).unwrap_or_else(|| {
        panic!(
            "server did not exit after SIGTERM\n{}",
            server.diagnostics()
        )
    });
    let exit_after = signalled.elapsed();
    sending.store(false, Ordering::Relaxed);
    let sessions: Vec<Session> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect();

    eprintln!("server exited with {status} {exit_after:?} after SIGTERM");
    assert!(
        status.success(),
        "exit status {status}\n{}",
        server.diagnostics()
    );
    assert!(
        exit_after < GRACE,
        "exit took {exit_after:?} (grace {GRACE:?})"
    );
    assert!(!sock.exists(), "socket file not removed");

    let mut failures = Vec::new();
    let (mut sent, mut echoed, mut unanswered_max) = (0u64, 0u64, 0u64);
    for s in &sessions {
        sent += s.sent;
        echoed += s.echoed;
        unanswered_max = unanswered_max.max(s.sent - s.echoed);
        if !s.errors.is_empty() {
            failures.push(format!("session {}: {:?}", s.idx, s.errors));
        } else if s.phase != Phase::Closed {
            failures.push(format!(
                "session {}: still {:?} at the deadline",
                s.idx, s.phase
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {SESSIONS} sessions failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(unanswered_max <= WINDOW, "{unanswered_max} unanswered");
    assert!(
        echoed >= SESSIONS as u64,
        "too little load before the signal: {echoed} echoes"
    );

    let totals = parse_totals(&server.stderr())
        .unwrap_or_else(|| panic!("no shutdown totals\n{}", server.diagnostics()));
    eprintln!(
        "clients: sent {sent}, echoed {echoed} (unanswered at most {unanswered_max} per session); \
         server: {totals:?}"
    );
    assert_eq!(
        totals.get("messages_in"),
        totals.get("messages_out"),
        "server side: accepted != echoed"
    );
    assert_eq!(
        totals.get("messages_in"),
        echoed,
        "the server accepted {} messages, the clients got {echoed} echoes",
        totals.get("messages_in")
    );
    assert_eq!(
        totals.closes("server_shutdown"),
        SESSIONS as u64,
        "{totals:?}"
    );
}
