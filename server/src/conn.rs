//! One connection: its state (shared with its core, so chat deliveries and timers can
//! reach it) and the task that drives its socket.
//!
//! The driver is one small task per connection that loops over: handle wake-up flags →
//! hand events to the handler → write everything queued in one write (or writev) → wait
//! for a wake-up. Input does not go through this task: the session's multishot
//! buffer-select receive on the core's data ring (`data_ring.rs`) delivers it, and the
//! ring task feeds it to the session and wakes this task with [`WAKE_INPUT`]. So an idle
//! session holds no buffer and no poll, only a receive request in the kernel.
//!
//! Other tasks never touch the socket: they change the state (queue bytes, close the
//! session) and wake the driver through [`Conn::wake`]. Before the socket is closed the
//! receive is cancelled and its final completion awaited.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::{TcpStream, UnixStream};
use sockchat_proto::{CloseReason, LineSession, ServerSession, Session};
use sockchat_uring::MAX_IOV;

use crate::data_ring::{self, RecvState, LINGER_BYTES};
use crate::handler::SessionInfo;
use crate::rate_limit::{self, RateState};
use crate::worker::Worker;

/// Wake-up reasons, set by other tasks.
pub(crate) const WAKE_OUTPUT: u8 = 1;
pub(crate) const WAKE_SHUTDOWN: u8 = 2;
/// Abandon the connection now (slow consumer, or a write stalled for the timeout).
pub(crate) const WAKE_ABORT: u8 = 4;
/// ops hook: lame-duck drain, `disconnect` "Server draining" (see `drain.rs`).
pub(crate) const WAKE_DRAIN: u8 = 8;
/// The ring task fed input to the session (replies may be queued, or it closed).
pub(crate) const WAKE_INPUT: u8 = 16;

/// Longest time a closing connection waits for the peer's FIN after our last frame.
const LINGER: Duration = Duration::from_secs(1);

/// A framed or line-mode session. Framed is the common case and stays inline; the rare
/// line session is boxed so it costs framed sessions nothing.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Proto {
    Frame(ServerSession),
    Line(Box<LineSession>),
}

/// Every driving call goes through [`Session`]: the enum only picks the session, so it
/// adds nothing to the API (and a framed session needs no box or vtable of its own).
impl std::ops::Deref for Proto {
    type Target = dyn Session;

    fn deref(&self) -> &Self::Target {
        match self {
            Proto::Frame(s) => s,
            Proto::Line(l) => &**l,
        }
    }
}

impl std::ops::DerefMut for Proto {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Proto::Frame(s) => s,
            Proto::Line(l) => &mut **l,
        }
    }
}

/// A connection's state, owned by its core.
#[derive(Debug)]
pub(crate) struct ConnState {
    pub(crate) proto: Proto,
    pub(crate) info: SessionInfo,
    /// Set when the session reported `Event::Closed`.
    pub(crate) close_reason: Option<CloseReason>,
    /// Counted against `--max-sessions-per-peer` (given back when it ends).
    pub(crate) peer_counted: bool,
    /// `--max-messages-per-sec` (boxed: nothing for sessions without a rate).
    pub(crate) rate: Option<Box<RateState>>,
}

/// A connection as its core sees it.
pub(crate) struct Conn {
    pub(crate) id: u64,
    /// The name of this session's operations on the core's data ring.
    pub(crate) token: u32,
    /// Where its receive is.
    pub(crate) recv: Cell<RecvState>,
    /// Bytes received after it closed, and discarded (the linger limit).
    pub(crate) discarded: Cell<usize>,
    /// The outcome of its send on the data ring, once the final completion came: bytes
    /// sent (or the error) and the parts not sent.
    #[allow(clippy::type_complexity)]
    pub(crate) sent: Cell<Option<Box<(io::Result<usize>, Vec<Bytes>)>>>,
    pub(crate) state: RefCell<ConnState>,
    flags: Cell<u8>,
    waker: Cell<Option<Waker>>,
    /// Deadline registered in the core's timers (see `timer.rs`).
    pub(crate) timer_at: Cell<Option<Instant>>,
    /// Bytes handed to the write in flight (they count against the send queue limit).
    pub(crate) inflight: Cell<usize>,
    /// When the write in flight started or last made progress.
    pub(crate) write_since: Cell<Option<Instant>>,
    /// (send queue, held input) bytes charged to the core's memory budget.
    pub(crate) charged: Cell<(u64, u64)>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("flags", &self.flags.get())
            .finish_non_exhaustive()
    }
}

impl Conn {
    pub(crate) fn new(id: u64, token: u32, state: ConnState) -> Self {
        Self {
            id,
            token,
            recv: Cell::new(RecvState::Off),
            discarded: Cell::new(0),
            sent: Cell::new(None),
            state: RefCell::new(state),
            flags: Cell::new(0),
            waker: Cell::new(None),
            timer_at: Cell::new(None),
            inflight: Cell::new(0),
            write_since: Cell::new(None),
            charged: Cell::new((0, 0)),
        }
    }

    /// Sets `flag` and wakes the driver.
    pub(crate) fn wake(&self, flag: u8) {
        self.flags.set(self.flags.get() | flag);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn register(&self, waker: &Waker) {
        match self.waker.take() {
            Some(w) if w.will_wake(waker) => self.waker.set(Some(w)),
            _ => self.waker.set(Some(waker.clone())),
        }
    }

    fn has_flag(&self, flag: u8) -> bool {
        self.flags.get() & flag != 0
    }

    pub(crate) fn has_wake_flags(&self) -> bool {
        self.flags.get() != 0
    }

    pub(crate) fn register_waker(&self, waker: &Waker) {
        self.register(waker);
    }
}

/// A stream the driver can run on (its bytes move on the core's data ring; monoio's
/// own operations only serve connections refused before they became sessions).
pub(crate) trait ConnStream: AsyncReadRent + AsyncWriteRent + AsRawFd + 'static {}

impl ConnStream for TcpStream {}

impl ConnStream for UnixStream {}

/// Runs one connection to its end, then unregisters it from its core.
pub(crate) async fn drive<S: ConnStream>(core: Rc<Worker>, conn: Rc<Conn>, mut stream: S) {
    run(&core, &conn, &mut stream).await;
    // The final completions of its receive and send are in before the socket closes.
    data_ring::end_io(&core, &conn).await;
    drop(stream);
    core.finish(&conn);
}

/// The task's future stays small (it is what an idle session costs): everything that
/// holds buffers or several I/O operations (writing, lingering) runs in a boxed
/// sub-future allocated only while it runs.
async fn run<S: ConnStream>(core: &Worker, conn: &Conn, stream: &mut S) {
    let fd = stream.as_raw_fd();
    loop {
        let flags = conn.flags.replace(0);
        if flags & WAKE_ABORT != 0 {
            let mut st = conn.state.borrow_mut();
            st.proto.close(CloseReason::SlowConsumer);
            core.process(conn, &mut st);
            return;
        }
        if flags & WAKE_SHUTDOWN != 0 {
            conn.state
                .borrow_mut()
                .proto
                .close(CloseReason::ServerShutdown);
        }
        if flags & WAKE_DRAIN != 0 {
            conn.state
                .borrow_mut()
                .proto
                .close(CloseReason::ServerDraining);
        }
        core.process(conn, &mut conn.state.borrow_mut());

        let queued = conn.state.borrow().proto.queued_bytes() > 0;
        if queued {
            if let Err(reason) = Box::pin(flush(core, conn, &*stream)).await {
                let mut st = conn.state.borrow_mut();
                st.proto.close(reason);
                core.process(conn, &mut st);
                return;
            }
        }
        if conn.state.borrow().proto.is_closed() {
            let linger = {
                let st = conn.state.borrow();
                st.close_reason.as_ref().is_some_and(CloseReason::lingers)
            };
            if linger {
                Box::pin(data_ring::linger(core, conn, fd, LINGER)).await;
            }
            return;
        }

        // ops hook: --max-messages-per-sec stops reading until the bucket refills (the
        // ring task cancelled the receive when the bucket ran out).
        let paused = rate_limit::paused_until(&conn.state.borrow());
        if let Some(until) = paused {
            Box::pin(rate_limit::pause(core, conn, until)).await;
            continue;
        }
        if conn.recv.get() == RecvState::Off {
            core.ring.start_recv(conn, fd);
        }
        conn.state.borrow_mut().proto.shrink_idle();
        poll_fn(|cx| {
            if conn.flags.get() != 0 {
                return Poll::Ready(());
            }
            conn.register(cx.waker());
            Poll::Pending
        })
        .await;
    }
}

/// Writes everything queued: all ready frames in one `sendmsg` (writev) on the data
/// ring, submitted with the core's other ring work, again for what a partial send left.
/// While a send waits in the kernel for room, input keeps being handled (the ring task
/// feeds it), so a client that sends without reading keeps getting its input handled and
/// its queue grows until the send queue limit closes it as a slow consumer (the ring task
/// then wakes this task with [`WAKE_ABORT`]); a send with no progress for the session
/// timeout closes it too (`Worker::on_timer`). An error is the reason to close with.
async fn flush<S: ConnStream>(core: &Worker, conn: &Conn, stream: &S) -> Result<(), CloseReason> {
    let fd = stream.as_raw_fd();
    let mut pending: Vec<Bytes> = Vec::new();
    let mut stall_timer = false;
    let result = loop {
        if pending.is_empty() {
            conn.state.borrow_mut().proto.poll_transmit(&mut pending);
            pending.retain(|p| !p.is_empty());
            if pending.is_empty() {
                break Ok(());
            }
        }
        let rest = if pending.len() > MAX_IOV {
            pending.split_off(MAX_IOV)
        } else {
            Vec::new()
        };
        let parts = std::mem::replace(&mut pending, rest);
        conn.inflight
            .set(parts.iter().chain(&pending).map(Bytes::len).sum());
        if conn.write_since.get().is_none() {
            conn.write_since.set(Some(Instant::now()));
        }
        core.ring.send(conn, fd, parts);
        let done = poll_fn(|cx| {
            if let Some(done) = conn.sent.take() {
                return Poll::Ready(Some(done));
            }
            if conn.has_flag(WAKE_ABORT) {
                return Poll::Ready(None);
            }
            conn.register(cx.waker());
            Poll::Pending
        })
        .await;
        // Aborted: the send is cancelled and awaited by `end_io` before the socket closes.
        let Some(done) = done else {
            break Err(CloseReason::SlowConsumer);
        };
        let (res, mut unsent) = *done;
        unsent.append(&mut pending);
        pending = unsent;
        match res {
            Ok(n) => {
                core.count_bytes_out(n);
                conn.state.borrow_mut().info.bytes_out += n as u64;
                if pending.is_empty() {
                    conn.write_since.set(None);
                } else {
                    // A partial send: the socket is full. The send that follows waits in
                    // the kernel for room; no progress for the session timeout closes.
                    let now = Instant::now();
                    if n > 0 {
                        conn.write_since.set(Some(now));
                    }
                    if !stall_timer {
                        stall_timer = true;
                        let since = conn.write_since.get().unwrap_or(now);
                        core.schedule(conn, since + core.config().session_timeout);
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => break Err(CloseReason::Io(e.kind())),
        }
    };
    conn.inflight.set(0);
    conn.write_since.set(None);
    // ops hook: the send queue shrank (memory budget, send_queue_bytes gauge).
    core.charge(conn, &conn.state.borrow());
    result
}

/// After the last frame to a connection refused before it became a session (it has no
/// receive on the data ring): send FIN, then read and discard until the peer closes too
/// (or `LINGER` passes), so unread input does not turn the close into a reset.
pub(crate) async fn linger<S: ConnStream>(core: &Worker, stream: &mut S) {
    let _ = stream.shutdown().await;
    let deadline = Instant::now() + LINGER;
    let mut buf = core.pool.get();
    let mut total = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || total >= LINGER_BYTES {
            break;
        }
        buf.clear();
        match monoio::time::timeout(left, stream.read(buf)).await {
            Ok((Ok(n), b)) if n > 0 => {
                total += n;
                buf = b;
            }
            Ok((_, b)) => {
                buf = b;
                break;
            }
            // The buffer stays with the cancelled read until the kernel lets go of it.
            Err(_) => return,
        }
    }
    core.pool.put(buf);
}
