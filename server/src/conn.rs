//! One connection: its state (shared with its core, so chat deliveries and timers can
//! reach it) and the task that drives its socket.
//!
//! The driver is one small task per connection that loops over: handle wake-up flags →
//! hand events to the handler → write everything queued in one write (or writev) → wait
//! for readability *without a buffer* → read into a pooled buffer (or straight into the
//! buffer of the large frame being received) → feed the sans-IO session. The buffer goes
//! back to the pool as soon as no partial frame is held, so an idle session owns no
//! read buffer.
//!
//! Other tasks never touch the socket: they change the state (queue bytes, close the
//! session) and wake the driver through [`Conn::wake`]. Waiting for readability is
//! abandoned on such a wake-up by dropping the poll future (monoio's `async-cancel`
//! feature then submits an `IORING_OP_ASYNC_CANCEL` for it).

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::{TcpStream, UnixStream};
use sockchat_proto::frame::MAGIC;
use sockchat_proto::{CloseReason, LineSession, ServerSession, Session};
use sockchat_uring::advance;

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

/// Read at least this much per read (unless finishing a frame whose size is known).
const MIN_READ: usize = 2048;
/// Longest time a closing connection waits for the peer's FIN after our last frame.
const LINGER: Duration = Duration::from_secs(1);
/// Most bytes read and discarded while lingering.
const LINGER_BYTES: usize = 256 * 1024;

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
    pub(crate) fn new(id: u64, state: ConnState) -> Self {
        Self {
            id,
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

/// A stream the driver can run on.
pub(crate) trait ConnStream: AsyncReadRent + AsyncWriteRent + AsRawFd + 'static {
    /// Waits until the socket is readable, holding no buffer.
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>>;
    /// Waits until the socket is writable.
    fn wait_writable(&self) -> impl Future<Output = io::Result<()>>;
}

impl ConnStream for TcpStream {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> {
        self.readable(true)
    }

    fn wait_writable(&self) -> impl Future<Output = io::Result<()>> {
        self.writable(true)
    }
}

impl ConnStream for UnixStream {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> {
        self.readable(true)
    }

    fn wait_writable(&self) -> impl Future<Output = io::Result<()>> {
        self.writable(true)
    }
}

/// Sends as much of `parts` as the socket takes now (one `sendmsg`, never blocking) and
/// drops what was sent. Returns the bytes sent.
fn send_now(fd: i32, parts: &mut Vec<Bytes>) -> io::Result<usize> {
    // IOV_MAX is 1024 on Linux; the rest goes in the next call.
    let iov: Vec<libc::iovec> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .take(1024)
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        })
        .collect();
    // SAFETY: msghdr is plain data; the iovecs point into `parts`, alive for the call.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len() as _;
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    advance(parts, n);
    Ok(n)
}

enum Wake {
    Readable(io::Result<()>),
    Flags,
}

/// Runs one connection to its end, then unregisters it from its core.
pub(crate) async fn drive<S: ConnStream>(core: Rc<Worker>, conn: Rc<Conn>, mut stream: S) {
    run(&core, &conn, &mut stream).await;
    drop(stream);
    core.finish(&conn);
}

/// The task's future stays small (it is what an idle session costs): everything that
/// holds buffers or several I/O operations (reading, writing, lingering) runs in a boxed
/// sub-future allocated only while it runs; only the wait for readability is inline.
async fn run<S: ConnStream>(core: &Worker, conn: &Conn, stream: &mut S) {
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
                Box::pin(self::linger(core, stream)).await;
            }
            return;
        }

        // ops hook: --max-messages-per-sec stops reading until the bucket refills.
        let paused = rate_limit::paused_until(&conn.state.borrow());
        if let Some(until) = paused {
            Box::pin(rate_limit::pause(core, conn, until)).await;
            continue;
        }
        conn.state.borrow_mut().proto.shrink_idle();
        let wake = {
            let fut = stream.wait_readable();
            let mut fut = pin!(fut);
            poll_fn(|cx| {
                if conn.flags.get() != 0 {
                    return Poll::Ready(Wake::Flags);
                }
                conn.register(cx.waker());
                fut.as_mut().poll(cx).map(Wake::Readable)
            })
            .await
        };
        match wake {
            Wake::Flags => {}
            Wake::Readable(Ok(())) => read(core, conn, stream),
            Wake::Readable(Err(e)) => conn
                .state
                .borrow_mut()
                .proto
                .close(CloseReason::Io(e.kind())),
        }
    }
}

/// Reads once (io_uring reported the socket readable) and feeds the session.
///
/// The read is a non-blocking `recv` into the spare capacity of the session's receive
/// buffer: a pooled buffer, or the buffer the deframer already sized for the whole large
/// frame being received (so large frames land in their final buffer, no copy). It runs
/// right when readiness is reported instead of as another io_uring operation: an
/// ownership-passing io_uring read would hold a pooled buffer for a whole ring round trip,
/// so with thousands of sessions ready at once (a heartbeat burst) thousands of buffers
/// would be out at once; this way one buffer serves them one after the other, and the
/// reply is queued one ring round trip earlier.
fn read<S: ConnStream>(core: &Worker, conn: &Conn, stream: &S) {
    let mut st = conn.state.borrow_mut();
    // ops hook: what the session may reserve of the core's memory budget.
    core.grant_allowance(&mut st);
    let mut buf = st.proto.take_buffer();
    if buf.capacity() == 0 {
        buf = core.pool.get();
    }
    let spare = buf.capacity() - buf.len();
    if spare == 0 || (spare < MIN_READ && st.proto.pending_frame_len().is_none()) {
        buf.reserve(core.pool.buf_size());
    }
    let res = {
        let dst = buf.spare_capacity_mut();
        // SAFETY: `dst` is writable memory of `dst.len()` bytes owned by `buf`; recv writes
        // at most that many bytes and reports how many.
        let n = unsafe {
            libc::recv(
                stream.as_raw_fd(),
                dst.as_mut_ptr().cast(),
                dst.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    };
    let now = Instant::now();
    match res {
        Ok(0) => {
            st.proto.put_buffer(buf);
            st.proto.handle_eof();
        }
        Ok(n) => {
            // SAFETY: the kernel initialised `n` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n) };
            let first = st.info.bytes_in == 0;
            st.info.bytes_in += n as u64;
            core.count_bytes_in(n);
            if first && core.config().line_mode && buf.first() != Some(&MAGIC[0]) {
                core.switch_to_line(&mut st, now);
            }
            st.proto.put_buffer(buf);
            // Event by event, so replies go out in the order of the requests; a rate
            // limit that runs out leaves the rest buffered (ops hook).
            while st.proto.handle_input_until_event(now) {
                core.process(conn, &mut st);
                if rate_limit::paused_until(&st).is_some() {
                    break;
                }
            }
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            // Readiness went stale (e.g. data arrived and was consumed): wait again.
            st.proto.put_buffer(buf);
        }
        Err(e) => {
            st.proto.put_buffer(buf);
            st.proto.close(CloseReason::Io(e.kind()));
        }
    }
    if st.proto.is_input_idle() {
        let buf = st.proto.take_buffer();
        core.pool.put(buf);
    }
    // ops hook: charge what the session now holds to the core's memory budget.
    core.charge(conn, &st);
}

/// What woke a blocked writer.
enum WriteWake {
    Writable(io::Result<()>),
    Readable(io::Result<()>),
    Abort,
}

/// Writes everything queued, all ready frames in one `sendmsg` (writev). When the socket
/// is full, waits for writability *while still reading*: a client that sends without
/// reading keeps getting its input handled, so its queue grows until the send queue
/// limit closes it as a slow consumer (and a write with no progress for the session
/// timeout closes it too). An error is the reason to close with.
async fn flush<S: ConnStream>(core: &Worker, conn: &Conn, stream: &S) -> Result<(), CloseReason> {
    let fd = stream.as_raw_fd();
    let mut pending: Vec<Bytes> = Vec::new();
    let mut read_open = true;
    let result = loop {
        if pending.is_empty() {
            conn.state.borrow_mut().proto.poll_transmit(&mut pending);
            if pending.is_empty() {
                break Ok(());
            }
        }
        match send_now(fd, &mut pending) {
            Ok(n) => {
                core.count_bytes_out(n);
                conn.state.borrow_mut().info.bytes_out += n as u64;
                if n > 0 && conn.write_since.get().is_some() {
                    conn.write_since.set(Some(Instant::now()));
                }
                if pending.is_empty() {
                    continue;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => break Err(CloseReason::Io(e.kind())),
        }
        // The socket is full: wait, still serving input.
        conn.inflight.set(pending.iter().map(Bytes::len).sum());
        if conn.write_since.get().is_none() {
            let now = Instant::now();
            conn.write_since.set(Some(now));
            core.schedule(conn, now + core.config().session_timeout);
        }
        read_open &= !conn.state.borrow().proto.is_closed();
        // ops hook: a rate-limited session is not read while it waits to write either.
        let read_now = read_open && rate_limit::paused_until(&conn.state.borrow()).is_none();
        let wake = {
            let w = stream.wait_writable();
            let mut w = pin!(w);
            let r = read_now.then(|| stream.wait_readable());
            let mut r = pin!(r);
            poll_fn(|cx| {
                if conn.has_flag(WAKE_ABORT) {
                    return Poll::Ready(WriteWake::Abort);
                }
                conn.register(cx.waker());
                if let Poll::Ready(res) = w.as_mut().poll(cx) {
                    return Poll::Ready(WriteWake::Writable(res));
                }
                match r.as_mut().as_pin_mut() {
                    Some(r) => r.poll(cx).map(WriteWake::Readable),
                    None => Poll::Pending,
                }
            })
            .await
        };
        match wake {
            WriteWake::Abort => break Err(CloseReason::SlowConsumer),
            WriteWake::Writable(Ok(())) => {}
            WriteWake::Readable(Ok(())) => {
                read(core, conn, stream);
                let st = conn.state.borrow();
                if st.close_reason == Some(CloseReason::SlowConsumer) {
                    break Err(CloseReason::SlowConsumer);
                }
                if st.proto.is_closed() {
                    read_open = false;
                }
            }
            WriteWake::Writable(Err(e)) | WriteWake::Readable(Err(e)) => {
                break Err(CloseReason::Io(e.kind()))
            }
        }
    };
    conn.inflight.set(0);
    conn.write_since.set(None);
    // ops hook: the send queue shrank (memory budget, send_queue_bytes gauge).
    core.charge(conn, &conn.state.borrow());
    result
}

/// After our last frame: send FIN, then read and discard until the peer closes too (or
/// `LINGER` passes), so unread input does not turn the close into a reset.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_now_writes_all_parts_in_order() {
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut parts = vec![Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
        assert_eq!(send_now(a.as_raw_fd(), &mut parts).unwrap(), 11);
        assert!(parts.is_empty());
        let mut got = [0u8; 11];
        std::io::Read::read_exact(&mut b, &mut got).unwrap();
        assert_eq!(&got, b"hello world");
    }
}
