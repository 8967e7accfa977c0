//! [`Client`]: one session over a blocking socket, driven by a reader and a writer thread.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sockchat_proto::header::ByteStr;
use sockchat_proto::session::{
    ClientSession, Event as ProtoEvent, Features, Session, SessionConfig,
};
use sockchat_proto::{CloseReason, Key, KeyRing, RoomName};

use crate::{ClientError, Event, Message};
use sockchat_os::stream::{Addr, Stream};

/// How a [`Client`] connects and behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The shared HMAC keys (the reference default is the one key `default-key`). With
    /// several (a key rotation), the server's `session_init` may be signed with any of
    /// them, and the session answers with, and then only accepts, the one that verified
    /// it; the first key is used before that.
    pub keys: Arc<KeyRing>,
    /// How often to send a heartbeat `ping` (reference: 5 s).
    pub heartbeat_interval: Duration,
    /// Bound on the TCP connect and on the handshake.
    pub handshake_timeout: Duration,
    /// Silence from the server after which the session is given up (reference: 30 s).
    pub session_timeout: Duration,
    /// Ask for the chunk extension, so messages above 10 MiB can be sent and received.
    /// On by default; a reference server ignores the request and the client then sends
    /// only what fits in one frame.
    pub chunk: bool,
    /// Largest chunk to send.
    pub max_chunk: usize,
    /// After our `disconnect`, how long to wait for the server to close its side before
    /// dropping the socket (so the server reads the `disconnect` instead of a reset).
    pub linger: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        let base = SessionConfig::default();
        Self {
            keys: Arc::new(KeyRing::single(Arc::new(Key::reference_default()))),
            heartbeat_interval: base.heartbeat_interval,
            handshake_timeout: base.handshake_timeout,
            session_timeout: base.session_timeout,
            chunk: true,
            max_chunk: base.max_chunk,
            linger: Duration::from_secs(2),
        }
    }
}

impl ClientOptions {
    fn session_config(&self) -> SessionConfig {
        SessionConfig {
            handshake_timeout: self.handshake_timeout,
            session_timeout: self.session_timeout,
            heartbeat_interval: self.heartbeat_interval,
            max_chunk: self.max_chunk,
            features: if self.chunk {
                Features::ALL
            } else {
                Features::NONE
            },
            ..SessionConfig::default()
        }
    }
}

enum WriterCmd {
    Data(Vec<Bytes>),
    /// Everything queued before this is written: half-close our side.
    Finish,
}

/// The session and everything that must change together with it. Every mutation of
/// the session is followed by [`LockedSession::pump`] under the same lock, so bytes reach the
/// writer and events reach the application in the order the session produced them.
struct LockedSession {
    session: ClientSession,
    to_writer: Sender<WriterCmd>,
    events: Sender<Event>,
    /// Our own record of the end: set by the session's `Closed` or by a transport error.
    closed: Option<CloseReason>,
    finish_sent: bool,
    queued_bytes: u64,
}

impl LockedSession {
    fn pump(&mut self) {
        let mut out = Vec::new();
        self.session.poll_transmit(&mut out);
        if !out.is_empty() && !self.finish_sent {
            self.queued_bytes += out.iter().map(|b| b.len() as u64).sum::<u64>();
            let _ = self.to_writer.send(WriterCmd::Data(out));
        }
        while let Some(e) = self.session.poll_event() {
            let e = match e {
                ProtoEvent::Message(m) => Event::Message(Message::from_proto(m)),
                ProtoEvent::Joined(room) => Event::Joined(room.as_str().to_owned()),
                ProtoEvent::Left(room) => Event::Left(room.as_str().to_owned()),
                ProtoEvent::Pong { rtt } => Event::Pong { rtt },
                ProtoEvent::PeerError(text) => Event::PeerError(text.as_str().to_owned()),
                ProtoEvent::Closed(reason) => {
                    if self.closed.is_some() {
                        continue;
                    }
                    self.closed = Some(reason.clone());
                    Event::Closed(reason)
                }
                _ => continue,
            };
            let _ = self.events.send(e);
        }
        if self.closed.is_some() && !self.finish_sent {
            self.finish_sent = true;
            let _ = self.to_writer.send(WriterCmd::Finish);
        }
    }

    /// The transport failed under the session: report it once as the end.
    fn fail(&mut self, reason: CloseReason) {
        if self.closed.is_none() {
            self.closed = Some(reason.clone());
            let _ = self.events.send(Event::Closed(reason));
        }
        if !self.finish_sent {
            self.finish_sent = true;
            let _ = self.to_writer.send(WriterCmd::Finish);
        }
    }
}

/// Write progress, for [`Client::flush`].
#[derive(Default)]
struct Progress {
    written: u64,
    done: bool,
}

struct Shared {
    core: Mutex<LockedSession>,
    progress: Mutex<Progress>,
    progress_cv: Condvar,
    linger: Duration,
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, LockedSession> {
        // A panic in another thread must not turn every later call into a panic.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connected, established session.
///
/// Methods take `&self`, so one thread can send while another waits for events (share
/// the client in an `Arc`). Dropping it without [`disconnect`](Self::disconnect) closes
/// the socket without telling the server.
pub struct Client {
    shared: Arc<Shared>,
    events: Mutex<Receiver<Event>>,
    /// Set once the `Closed` event was handed out, so later calls can say why.
    end_seen: Mutex<Option<CloseReason>>,
    stream: Stream,
    threads: Mutex<Vec<JoinHandle<()>>>,
    session_id: String,
    features: Features,
    addr: Addr,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("session_id", &self.session_id)
            .field("features", &self.features)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `addr` and completes the handshake (including the feature
    /// negotiation) within `options.handshake_timeout`.
    pub fn connect(addr: &Addr, options: &ClientOptions) -> Result<Client, ClientError> {
        let stream =
            addr.connect(options.handshake_timeout)
                .map_err(|source| ClientError::Connect {
                    addr: addr.clone(),
                    source,
                })?;
        let config = Arc::new(options.session_config());
        let mut session = ClientSession::with_keys(options.keys.clone(), config, Instant::now());
        let early = handshake(&stream, &mut session)?;

        let (to_writer, writer_rx) = mpsc::channel();
        let (events_tx, events_rx) = mpsc::channel();
        for e in early {
            let _ = events_tx.send(e);
        }
        let session_id = session
            .session_id()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let features = session.features();
        let shared = Arc::new(Shared {
            core: Mutex::new(LockedSession {
                session,
                to_writer,
                events: events_tx,
                closed: None,
                finish_sent: false,
                queued_bytes: 0,
            }),
            progress: Mutex::new(Progress::default()),
            progress_cv: Condvar::new(),
            linger: options.linger,
        });
        let io = |e| ClientError::Io(e);
        let reader = {
            let (shared, stream) = (shared.clone(), stream.try_clone().map_err(io)?);
            std::thread::Builder::new()
                .name("sockchat-reader".into())
                .spawn(move || reader_loop(&shared, stream))
                .map_err(io)?
        };
        let writer = {
            let (shared, stream) = (shared.clone(), stream.try_clone().map_err(io)?);
            std::thread::Builder::new()
                .name("sockchat-writer".into())
                .spawn(move || writer_loop(&shared, stream, writer_rx))
                .map_err(io)?
        };
        // Bytes the handshake left queued (none in practice) go out through the writer.
        shared.core().pump();
        Ok(Client {
            shared,
            events: Mutex::new(events_rx),
            end_seen: Mutex::new(None),
            stream,
            threads: Mutex::new(vec![reader, writer]),
            session_id,
            features,
            addr: addr.clone(),
        })
    }

    /// The session id the server assigned.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Features the server granted (`chunk` when it accepts chunked messages).
    pub fn features(&self) -> Features {
        self.features
    }

    /// The address this client connected to.
    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.core().closed.clone()
    }

    /// Queues a message (chunked when larger than a frame and the server granted
    /// chunks). Returns once it is queued; [`flush`](Self::flush) waits until written.
    pub fn send(&self, content_type: &str, content: Bytes) -> Result<(), ClientError> {
        let mut core = self.shared.core();
        if let Some(r) = &core.closed {
            return Err(ClientError::Closed(r.clone()));
        }
        core.session
            .send_message(Some(ByteStr::from(content_type.to_owned())), content)?;
        core.pump();
        Ok(())
    }

    /// Asks to join `room` (needs the rooms feature, granted by a chat server); the
    /// answer arrives as [`Event::Joined`].
    pub fn join(&self, room: &str) -> Result<(), ClientError> {
        let room = RoomName::parse(room)?;
        self.with_session(|s| s.join(&room))
    }

    /// Asks to leave `room`; the answer arrives as [`Event::Left`].
    pub fn leave(&self, room: &str) -> Result<(), ClientError> {
        let room = RoomName::parse(room)?;
        self.with_session(|s| s.leave(&room))
    }

    /// Queues a message to `room` (the lobby: a plain message, as the reference sends).
    pub fn send_to(
        &self,
        room: &str,
        content_type: &str,
        content: Bytes,
    ) -> Result<(), ClientError> {
        let room = RoomName::parse(room)?;
        let ct = Some(ByteStr::from(content_type.to_owned()));
        self.with_session(|s| s.send_to_room(&room, ct, content))
    }

    fn with_session(
        &self,
        f: impl FnOnce(&mut sockchat_proto::ClientSession) -> Result<(), sockchat_proto::SendError>,
    ) -> Result<(), ClientError> {
        let mut core = self.shared.core();
        if let Some(r) = &core.closed {
            return Err(ClientError::Closed(r.clone()));
        }
        f(&mut core.session)?;
        core.pump();
        Ok(())
    }

    /// Sends a heartbeat `ping` now; its answer arrives as [`Event::Pong`].
    pub fn ping(&self) -> Result<(), ClientError> {
        let mut core = self.shared.core();
        if let Some(r) = &core.closed {
            return Err(ClientError::Closed(r.clone()));
        }
        core.session.ping(Instant::now());
        core.pump();
        Ok(())
    }

    /// Waits up to `timeout` until everything queued so far has been written to the
    /// socket. `Ok(false)` on timeout.
    pub fn flush(&self, timeout: Duration) -> Result<bool, ClientError> {
        let target = self.shared.core().queued_bytes;
        let deadline = Instant::now() + timeout;
        let mut p = self
            .shared
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        while p.written < target {
            if p.done {
                let reason = self.close_reason().unwrap_or(CloseReason::PeerClosed);
                return Err(ClientError::Closed(reason));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            p = self
                .shared
                .progress_cv
                .wait_timeout(p, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(true)
    }

    /// The next event, waiting up to `timeout`; `Ok(None)` on timeout. After the
    /// [`Event::Closed`] has been returned, further calls fail with
    /// [`ClientError::Closed`].
    pub fn next_event(&self, timeout: Duration) -> Result<Option<Event>, ClientError> {
        if let Some(r) = self
            .end_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(ClientError::Closed(r));
        }
        let rx = self.events.lock().unwrap_or_else(|p| p.into_inner());
        match rx.recv_timeout(timeout) {
            Ok(e) => {
                if let Event::Closed(r) = &e {
                    *self.end_seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(r.clone());
                }
                Ok(Some(e))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            // The sender lives in `LockedSession`, which lives as long as `self`.
            Err(RecvTimeoutError::Disconnected) => Err(ClientError::Closed(
                self.close_reason().unwrap_or(CloseReason::PeerClosed),
            )),
        }
    }

    /// Ends the session with a `disconnect` carrying `reason`, waits (up to the linger
    /// time) for the server to close, and releases the socket. Events not yet taken are
    /// dropped. Succeeds if the session had already ended.
    pub fn disconnect(&self, reason: &str) -> Result<(), ClientError> {
        {
            let mut core = self.shared.core();
            if core.closed.is_none() {
                core.session.disconnect(reason);
                core.pump();
            }
        }
        self.join_threads();
        Ok(())
    }

    fn join_threads(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Wakes both threads; they end on their own and hold nothing of ours after.
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Runs the handshake on the caller's thread: nothing else uses the socket yet.
/// Returns the events that arrived right behind it (e.g. the first pong).
fn handshake(stream: &Stream, session: &mut ClientSession) -> Result<Vec<Event>, ClientError> {
    let mut stream_r = stream.try_clone().map_err(ClientError::Io)?;
    let mut stream_w = stream.try_clone().map_err(ClientError::Io)?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut peer_error = None;
    let mut early = Vec::new();
    let mut established = false;
    let mut out = Vec::new();
    loop {
        session.poll_transmit(&mut out);
        for b in out.drain(..) {
            stream_w.write_all(&b).map_err(ClientError::Io)?;
        }
        while let Some(e) = session.poll_event() {
            match e {
                ProtoEvent::Established { .. } => established = true,
                ProtoEvent::PeerError(t) => peer_error = Some(t.as_str().to_owned()),
                ProtoEvent::Closed(reason) => {
                    return Err(ClientError::Handshake { reason, peer_error })
                }
                ProtoEvent::Pong { rtt } => early.push(Event::Pong { rtt }),
                ProtoEvent::Message(m) => early.push(Event::Message(Message::from_proto(m))),
                _ => {}
            }
        }
        if established {
            return Ok(early);
        }
        let now = Instant::now();
        let deadline = session.poll_timeout().unwrap_or(now);
        if now >= deadline {
            session.handle_timeout(now);
            continue;
        }
        stream_r
            .set_read_timeout(Some(deadline - now))
            .map_err(ClientError::Io)?;
        match stream_r.read(&mut buf) {
            Ok(0) => session.handle_eof(),
            Ok(n) => {
                session.deframer_mut().extend_from_slice(&buf[..n]);
                session.handle_input(Instant::now());
            }
            Err(e) if is_timeout(&e) => session.handle_timeout(Instant::now()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ClientError::Io(e)),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads and feeds the session; the read timeout is the session's next timer, so the
/// same loop sends heartbeats and notices silence. After the session ends it keeps
/// reading (and discarding) until the server closes or the linger time passes.
fn reader_loop(shared: &Shared, mut stream: Stream) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut linger_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let wake = {
            let core = shared.core();
            if core.closed.is_some() {
                *linger_until.get_or_insert(now + shared.linger)
            } else {
                core.session.poll_timeout().unwrap_or(now)
            }
        };
        if linger_until.is_some_and(|t| now >= t) {
            break;
        }
        let wait = wake
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        if stream.set_read_timeout(Some(wait)).is_err() {
            break;
        }
        let result = stream.read(&mut buf);
        let now = Instant::now();
        let mut core = shared.core();
        if core.closed.is_some() {
            match result {
                Ok(0) => break,
                Err(e) if !is_timeout(&e) && e.kind() != io::ErrorKind::Interrupted => break,
                _ => continue,
            }
        }
        match result {
            Ok(0) => core.session.handle_eof(),
            Ok(n) => {
                core.session.deframer_mut().extend_from_slice(&buf[..n]);
                core.session.handle_input(now);
                core.session.handle_timeout(now);
            }
            Err(e) if is_timeout(&e) => core.session.handle_timeout(now),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => core.fail(CloseReason::Io(e.kind())),
        }
        core.pump();
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Writes what the session queued, in order. A separate thread, so a large write never
/// stops the reader from draining the server's echoes (two full socket buffers facing
/// each other would deadlock a single-threaded blocking client).
fn writer_loop(shared: &Shared, mut stream: Stream, rx: Receiver<WriterCmd>) {
    let mut failed = None;
    for cmd in rx.iter() {
        match cmd {
            WriterCmd::Data(parts) => {
                for p in &parts {
                    if let Err(e) = stream.write_all(p) {
                        failed = Some(e.kind());
                        break;
                    }
                }
                if failed.is_some() {
                    break;
                }
                let n: u64 = parts.iter().map(|b| b.len() as u64).sum();
                shared
                    .progress
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .written += n;
                shared.progress_cv.notify_all();
            }
            WriterCmd::Finish => {
                let _ = stream.shutdown(Shutdown::Write);
                break;
            }
        }
    }
    if let Some(kind) = failed {
        shared.core().fail(CloseReason::Io(kind));
        // Wake the reader, which may be waiting for a server that is gone.
        let _ = stream.shutdown(Shutdown::Both);
    }
    shared
        .progress
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .done = true;
    shared.progress_cv.notify_all();
}
