//! One connection: its state (shared with its core, so chat deliveries and timers can
//! reach it) and the task that drives its socket.
//!
//! Neither input nor output goes through the connection's own task: the session's
//! multishot buffer-select receive on the core's data ring (`data_ring.rs`) delivers its
//! input, which the ring task feeds to the session, and whatever that (or a chat delivery)
//! queues is sent on the ring at once (`send.rs`). So an idle session holds no buffer and
//! no poll, only a receive request in the kernel, and a busy one costs no task wake-up.
//!
//! The task handles what is rare: wake-up flags set by other tasks (shutdown, drain,
//! abort), a rate-limit pause, and the session's end (its last frames out, lingering for
//! the peer's FIN). Before the socket is closed its receive and send are cancelled and
//! their final completions awaited.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::{TcpStream, UnixStream};
use sockchat_proto::{CloseReason, LineSession, ServerSession, Session};

use crate::data_ring::{self, RecvState, LINGER_BYTES};
use crate::handler::SessionInfo;
use crate::rate_limit::{self, RateState};
use crate::send;
use crate::worker::Worker;

/// Wake-up reasons, set by other tasks.
pub(crate) const WAKE_OUTPUT: u8 = 1;
pub(crate) const WAKE_SHUTDOWN: u8 = 2;
/// Abandon the connection now (slow consumer, or a write stalled for the timeout).
pub(crate) const WAKE_ABORT: u8 = 4;
/// ops hook: lame-duck drain, `disconnect` "Server draining" (see `drain.rs`).
pub(crate) const WAKE_DRAIN: u8 = 8;
/// The ring task changed the session: it closed, its send failed, its receive ended or
/// its rate limit paused it.
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
    /// Its socket (open until the session's task ended and its operations are over).
    pub(crate) fd: RawFd,
    /// Where its receive is.
    pub(crate) recv: Cell<RecvState>,
    /// Bytes received after it closed, and discarded (the linger limit).
    pub(crate) discarded: Cell<usize>,
    /// Output taken from the session but not yet sent (what a partial send left, or
    /// parts beyond one sendmsg's iovec limit), sent before anything queued later.
    pub(crate) unsent: RefCell<Vec<Bytes>>,
    /// A send is in flight: from its submission until its completion was handled.
    pub(crate) send_pending: Cell<bool>,
    /// No more is sent: the socket failed, or the session is ending (`send.rs`).
    pub(crate) send_over: Cell<bool>,
    /// Receive into the large frame's own buffer once the receive being stopped has
    /// ended (`direct_recv.rs`).
    pub(crate) direct_next: Cell<bool>,
    /// The next receive takes one ring buffer only: a large frame was just received in
    /// place, and the next frame may be large too (`direct_recv.rs`).
    pub(crate) recv_one: Cell<bool>,
    /// The receive into the session's own memory is into a chunk's slot in its
    /// message's buffer, not into its receive buffer (`direct_recv.rs`).
    pub(crate) in_slot: Cell<bool>,
    /// The session's receive buffer while the ring holds it for a receive into it, as
    /// charged to the memory budget (`direct_recv.rs`).
    pub(crate) lent_input: Cell<u32>,
    /// The session's receive buffer is a large one a frame was received into in place,
    /// of this many bytes: kept for the next large frame once its input is idle
    /// (`BufPool::put_large`); 0 otherwise.
    pub(crate) large_input: Cell<u32>,
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
    pub(crate) fn new(id: u64, token: u32, fd: RawFd, state: ConnState) -> Self {
        Self {
            id,
            token,
            fd,
            recv: Cell::new(RecvState::Off),
            discarded: Cell::new(0),
            unsent: RefCell::new(Vec::new()),
            send_pending: Cell::new(false),
            send_over: Cell::new(false),
            direct_next: Cell::new(false),
            recv_one: Cell::new(false),
            in_slot: Cell::new(false),
            lent_input: Cell::new(0),
            large_input: Cell::new(0),
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
pub(crate) async fn drive<S: ConnStream>(core: Rc<Worker>, conn: Rc<Conn>, stream: S) {
    run(&core, &conn, stream.as_raw_fd()).await;
    // The final completions of its receive and send are in before the socket closes.
    data_ring::end_io(&core, &conn).await;
    drop(stream);
    core.finish(&conn);
}

/// The task's future stays small (it is what an idle session costs): lingering and the
/// rate-limit pause run in boxed sub-futures allocated only while they run.
async fn run(core: &Worker, conn: &Conn, fd: RawFd) {
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
        send::flush(core, conn);

        if conn.state.borrow().proto.is_closed() {
            // Our last frames go out first (a stalled peer is aborted by the write
            // progress timeout, a failed socket ends the wait at once).
            let aborted = poll_fn(|cx| {
                if conn.has_flag(WAKE_ABORT) {
                    return Poll::Ready(true);
                }
                if send::is_idle(core, conn) {
                    return Poll::Ready(false);
                }
                conn.register(cx.waker());
                Poll::Pending
            })
            .await;
            let linger = !aborted && !conn.send_over.get() && {
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
