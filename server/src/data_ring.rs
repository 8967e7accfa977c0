//! The core's data ring (`sockchat-uring`) wired to its sessions: every session has a
//! multishot buffer-select receive armed on it, so an idle session holds no buffer and
//! no poll; one task per core ([`run`]) waits on the ring's eventfd, drains the
//! completions, feeds each received buffer to its session and gives the buffer back at
//! once, sends what the session queued (`send.rs`), then submits everything the batch
//! queued (sends, re-arms, cancels, recycled buffers) in one `io_uring_enter`.
//!
//! Listeners accept on it too (multishot, `ring_accept.rs`). Sends go through it too:
//! everything ready for a session in one `sendmsg` whose parts the ring owns until the
//! final completion ([`CoreRing::send`]).
//!
//! A session's receive and send are cancelled, and their final completions awaited,
//! before its socket is closed or its token reused ([`end_io`]); at core shutdown every
//! operation is cancelled and awaited before the ring's buffers are freed
//! ([`CoreRing::shutdown`]).

use std::cell::{Cell, RefCell, RefMut};
use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sockchat_proto::frame::MAGIC;
use sockchat_proto::CloseReason;
use sockchat_uring::{Completion, DataRing, RingConfig, Token};

use crate::conn::{Conn, ConnState, WAKE_ABORT, WAKE_INPUT};
use crate::direct_recv;
use crate::rate_limit;
use crate::ring_accept;
use crate::send;
use crate::stats::CoreStats;
use crate::worker::Worker;

/// Most bytes read and discarded for a session that is closed (lingering).
pub(crate) const LINGER_BYTES: usize = 256 * 1024;
/// Rounds of drain-and-dispatch per wake-up before yielding to the other tasks.
const ROUNDS: usize = 16;
/// A session's receive ends after this many bytes and is armed again: it bounds what a
/// large frame can put into ring buffers (to be copied) before the session has seen its
/// header and switched to receiving it in place (`direct_recv.rs`); without a limit one
/// `io_uring_enter` filled 33 ring buffers. Re-arming once per 16 KiB costs little.
const RECV_LIMIT: u32 = 16 * 1024;

/// Where a session's receive is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvState {
    /// None in the kernel; may be armed.
    Off,
    /// Armed (in the kernel, or parked by the ring until buffers come back).
    Armed,
    /// Cancelled; its final completion has not come yet.
    Cancelling,
    /// The peer closed its side: never armed again.
    Eof,
    /// A single receive straight into the large frame's own buffer is in the kernel
    /// (`direct_recv.rs`).
    Direct,
}

/// One core's data ring and the sessions its tokens name.
pub(crate) struct CoreRing {
    ring: RefCell<DataRing>,
    /// Token → session (a token is reused only once nothing of it is in the kernel).
    slots: RefCell<Vec<Option<Rc<Conn>>>>,
    free: RefCell<Vec<u32>>,
    /// Work was queued for the kernel outside the ring task: submit soon.
    kicked: Cell<bool>,
    waker: Cell<Option<Waker>>,
    stopped: Cell<bool>,
}

impl std::fmt::Debug for CoreRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreRing")
            .field("ring", &self.ring)
            .finish_non_exhaustive()
    }
}

impl CoreRing {
    /// Sets up the ring: `buffers` × `buffer_size` provided buffers.
    pub(crate) fn new(buffers: u16, buffer_size: u32) -> io::Result<Self> {
        let ring = DataRing::new(RingConfig {
            buf_count: buffers,
            buf_size: buffer_size,
            // Re-arm starved receives once an eighth of the ring is back (at least one).
            rearm_free: (buffers / 8).max(1),
            ..RingConfig::default()
        })?;
        Ok(Self {
            ring: RefCell::new(ring),
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            kicked: Cell::new(false),
            waker: Cell::new(None),
            stopped: Cell::new(false),
        })
    }

    /// A token for a new session.
    pub(crate) fn token(&self) -> u32 {
        if let Some(t) = self.free.borrow_mut().pop() {
            return t;
        }
        let mut slots = self.slots.borrow_mut();
        slots.push(None);
        (slots.len() - 1) as u32
    }

    /// Names `conn` by its token.
    pub(crate) fn attach(&self, conn: &Rc<Conn>) {
        self.slots.borrow_mut()[conn.token as usize] = Some(conn.clone());
    }

    /// Forgets `conn`; its token is reused only if nothing of it is in the kernel (a
    /// session ends only after its receive's final completion, so it always is).
    pub(crate) fn detach(&self, conn: &Conn) {
        let t = conn.token;
        if let Some(s) = self.slots.borrow_mut().get_mut(t as usize) {
            *s = None;
        }
        if self.ring.borrow().is_idle(Token(t)) {
            self.free.borrow_mut().push(t);
        } else {
            // Never seen: a session ends only after its receive ended. Leaking the token
            // keeps a late completion from reaching a new session.
            tracing::warn!(token = t, "session ended with an operation in the kernel");
        }
    }

    /// Arms `conn`'s receive on `fd` (the conn's socket, open until it ended).
    pub(crate) fn start_recv(&self, conn: &Conn, fd: RawFd) {
        if conn.recv.get() != RecvState::Off {
            return;
        }
        // One buffer right after a large frame (the next may be large too), else up to
        // `RECV_LIMIT`.
        let limit = if conn.recv_one.get() { 1 } else { RECV_LIMIT };
        self.ring
            .borrow_mut()
            .recv_limited(Token(conn.token), fd, limit);
        conn.recv.set(RecvState::Armed);
        self.kick();
    }

    /// Cancels `conn`'s receive if one is armed (or its receive into its own buffer).
    pub(crate) fn stop_recv(&self, conn: &Conn) {
        if conn.recv.get() == RecvState::Direct {
            self.ring.borrow_mut().cancel_recv_into(Token(conn.token));
            conn.recv.set(RecvState::Cancelling);
            self.kick();
            return;
        }
        if conn.recv.get() != RecvState::Armed {
            return;
        }
        if self.ring.borrow_mut().cancel_recv(Token(conn.token)) {
            conn.recv.set(RecvState::Off);
        } else {
            conn.recv.set(RecvState::Cancelling);
            self.kick();
        }
    }

    /// Sends `parts` (at most [`MAX_IOV`](sockchat_uring::MAX_IOV); taken, the vector is
    /// left empty) on `conn`'s socket in one send; the ring holds them until the send's
    /// final completion, which `send::on_sent` handles.
    pub(crate) fn send(&self, conn: &Conn, parts: &mut Vec<Bytes>) {
        conn.send_pending.set(true);
        self.ring
            .borrow_mut()
            .send(Token(conn.token), conn.fd, parts);
        self.kick();
    }

    /// Receives once on `conn`'s socket into the spare capacity of `buf` (at most `max`
    /// bytes); the ring holds `buf` until the final completion, which
    /// `direct_recv::on_received` handles.
    pub(crate) fn recv_into(&self, conn: &Conn, buf: bytes::BytesMut, max: usize) {
        self.ring
            .borrow_mut()
            .recv_into(Token(conn.token), conn.fd, buf, max);
        self.kick();
    }

    /// Cancels `conn`'s send in flight, if any (its completion still comes).
    pub(crate) fn cancel_send(&self, conn: &Conn) {
        self.ring.borrow_mut().cancel_send(Token(conn.token));
        self.kick();
    }

    /// True from a send of `conn` until its completion has been handled
    /// (`send::on_sent`). Not the kernel's view: a completion drained from the ring but
    /// not yet dispatched still holds the parts that send did not send, and nothing
    /// queued later may go out before them.
    pub(crate) fn sending(&self, conn: &Conn) -> bool {
        conn.send_pending.get()
    }

    /// Arms a multishot accept on listener `fd` for `token`.
    pub(crate) fn accept(&self, token: u32, fd: RawFd) {
        self.ring.borrow_mut().accept(Token(token), fd);
        self.kick();
    }

    /// Cancels listener `token`'s accept (its final completion follows).
    pub(crate) fn cancel_accept(&self, token: u32) {
        self.ring.borrow_mut().cancel_accept(Token(token));
        self.kick();
    }

    /// Asks the ring task to submit soon (it batches every kick of one scheduler tick).
    pub(crate) fn kick(&self) {
        self.kicked.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Stops the ring task, cancels every operation and waits (bounded) for their final
    /// completions; the buffers are freed only if all came back (leaked otherwise).
    pub(crate) fn shutdown(&self) {
        self.stopped.set(true);
        self.kick();
        let mut ring = self.ring.borrow_mut();
        let all_back = ring.shutdown(Duration::from_secs(2), |r, c| {
            if let Completion::Data { buf, .. } = c {
                r.recycle(buf);
            }
        });
        if !all_back {
            tracing::warn!("data ring: operations still in the kernel at shutdown");
        }
    }
}

/// Waits until nothing of `conn` is in the kernel, cancelling its receive and its send
/// first: after this the socket may be closed and the token reused.
pub(crate) async fn end_io(core: &Worker, conn: &Conn) {
    // Nothing more is sent (a completion still to come only wakes us).
    conn.send_over.set(true);
    core.ring.stop_recv(conn);
    if core.ring.sending(conn) {
        core.ring.cancel_send(conn);
    }
    poll_fn(|cx| {
        let recv_over = matches!(conn.recv.get(), RecvState::Off | RecvState::Eof);
        if recv_over && !core.ring.sending(conn) {
            return Poll::Ready(());
        }
        conn.register_waker(cx.waker());
        Poll::Pending
    })
    .await;
    conn.unsent.borrow_mut().clear();
}

/// After our last frame: send FIN, then discard what the peer still sends until it
/// closes too (or `linger` passes, or [`LINGER_BYTES`] were discarded), so unread input
/// does not turn the close into a reset. Ends the receive.
pub(crate) async fn linger(core: &Worker, conn: &Conn, fd: RawFd, linger: Duration) {
    // SAFETY: `fd` is the session's socket, open until the session's task ends.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
    if conn.recv.get() == RecvState::Off {
        core.ring.start_recv(conn, fd);
    }
    let sleep = monoio::time::sleep(linger);
    let mut sleep = std::pin::pin!(sleep);
    poll_fn(|cx| match conn.recv.get() {
        RecvState::Off | RecvState::Eof => Poll::Ready(()),
        RecvState::Armed | RecvState::Cancelling | RecvState::Direct => {
            conn.register_waker(cx.waker());
            sleep.as_mut().poll(cx)
        }
    })
    .await;
    end_io(core, conn).await;
}

/// The core's ring task: until [`CoreRing::shutdown`], waits for the eventfd (or a
/// kick), then drains and dispatches completions and submits.
pub(crate) async fn run(core: Rc<Worker>) {
    let efd = core.ring.ring.borrow().eventfd();
    // monoio has no eventfd type; its UnixStream's `readable` is a POLL_ADD on the fd,
    // which works on any pollable fd.
    // SAFETY: `dup` returns a new fd (checked) that the std stream then owns.
    let poller = unsafe {
        let dup = libc::dup(efd);
        if dup < 0 {
            tracing::error!(error = %io::Error::last_os_error(), "data ring: cannot dup its eventfd");
            return;
        }
        std::os::unix::net::UnixStream::from_raw_fd(dup)
    };
    let poller = match monoio::net::UnixStream::from_std(poller) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "data ring: cannot poll its eventfd");
            return;
        }
    };
    let mut out = Vec::new();
    let mut readable: Option<Pin<Box<dyn Future<Output = io::Result<()>> + '_>>> = None;
    // Completions are handled only after the eventfd said so through monoio's own ring; a
    // kick (a send queued outside this task) only submits. So every round of the core
    // goes through monoio's park, where its timers and cross-thread wakes run. That is
    // also why input and output are handled here and do not wake the sessions' tasks
    // (send.rs): a run queue refilled by every batch would never empty under steady load,
    // and monoio parks only when it is empty.
    let mut event = true;
    while !core.ring.stopped.get() {
        core.ring.kicked.set(false);
        if event {
            pump(&core, &mut out);
        } else if let Err(e) = core.ring.ring.borrow_mut().submit() {
            tracing::debug!(error = %e, "data ring: submit");
        }
        if core.ring.ring.borrow_mut().work_pending() {
            // Completions the eventfd may not announce (more than one pump's worth, or
            // posted by this submit): announce them ourselves, through monoio's ring.
            signal(efd);
        }
        let ready = readable.get_or_insert_with(|| Box::pin(poller.readable(true)));
        event = poll_fn(|cx| {
            if core.ring.stopped.get() || core.ring.kicked.get() {
                return Poll::Ready(false);
            }
            core.ring.waker.set(Some(cx.waker().clone()));
            ready.as_mut().poll(cx).map(|_| true)
        })
        .await;
        if event {
            readable = None;
        }
    }
}

/// Makes the eventfd readable.
fn signal(efd: RawFd) {
    let one = 1u64;
    // SAFETY: an 8-byte write from a u64 to our non-blocking eventfd.
    unsafe { libc::write(efd, (&one as *const u64).cast(), 8) };
}

/// Submits, drains and dispatches until no completion is left (bounded), then submits
/// what the dispatch queued.
fn pump(core: &Rc<Worker>, out: &mut Vec<Completion>) {
    for _ in 0..ROUNDS {
        {
            let mut ring = core.ring.ring.borrow_mut();
            if let Err(e) = ring.submit() {
                tracing::debug!(error = %e, "data ring: submit");
            }
            ring.poll(out);
        }
        if out.is_empty() {
            // Drained. Clear the eventfd now, not when it woke us: the completions this
            // pump already handled (sends that completed while being submitted) signalled
            // it again, and each stale signal costs a round through monoio's park for
            // nothing. A completion that came after the poll is still seen: it is in the
            // queue (or pending as deferred work) below, or it signals again after this.
            let mut ring = core.ring.ring.borrow_mut();
            ring.clear_wake();
            if !ring.work_pending() {
                break;
            }
            continue;
        }
        for c in out.drain(..) {
            dispatch(core, c);
        }
    }
    let mut ring = core.ring.ring.borrow_mut();
    if let Err(e) = ring.submit() {
        tracing::debug!(error = %e, "data ring: submit");
    }
    let s = ring.stats();
    core.stats()
        .ring_enobufs
        .store(s.enobufs, std::sync::atomic::Ordering::Relaxed);
    core.stats()
        .ring_rearmed
        .store(s.rearmed, std::sync::atomic::Ordering::Relaxed);
}

fn conn_of(core: &Worker, token: Token) -> Option<Rc<Conn>> {
    core.ring
        .slots
        .borrow()
        .get(token.0 as usize)
        .and_then(Clone::clone)
}

fn dispatch(core: &Rc<Worker>, c: Completion) {
    match c {
        Completion::Data { token, buf } => {
            let Some(conn) = conn_of(core, token) else {
                core.ring.ring.borrow_mut().recycle(buf);
                return;
            };
            feed(core, &conn, buf);
        }
        Completion::RecvEnded { token, result } => {
            let Some(conn) = conn_of(core, token) else {
                return;
            };
            let was = conn.recv.replace(RecvState::Off);
            if was == RecvState::Cancelling
                && conn.direct_next.take()
                && direct_recv::start(core, &conn)
            {
                // Stopped to receive the rest of a large frame into its own buffer.
                return;
            }
            if was == RecvState::Armed {
                let mut st = conn.state.borrow_mut();
                match result {
                    Ok(()) => {
                        conn.recv.set(RecvState::Eof);
                        st.proto.handle_eof();
                    }
                    Err(e) => st.proto.close(CloseReason::Io(e.kind())),
                }
                core.process(&conn, &mut st);
            }
            conn.wake(WAKE_INPUT);
        }
        Completion::RecvLimit { token } => {
            let Some(conn) = conn_of(core, token) else {
                return;
            };
            match conn.recv.get() {
                RecvState::Armed => {
                    // Nothing to switch to: the next receive, not limited to one buffer.
                    conn.recv.set(RecvState::Off);
                    conn.recv_one.set(false);
                    core.ring.start_recv(&conn, conn.fd);
                }
                RecvState::Cancelling => {
                    conn.recv.set(RecvState::Off);
                    if conn.direct_next.take() && direct_recv::start(core, &conn) {
                        return;
                    }
                    conn.wake(WAKE_INPUT);
                }
                // Not this receive's state (its end was handled already).
                RecvState::Off | RecvState::Eof | RecvState::Direct => {}
            }
        }
        Completion::Received { token, result, buf } => {
            let Some(conn) = conn_of(core, token) else {
                return;
            };
            direct_recv::on_received(core, &conn, result, buf);
        }
        Completion::Sent {
            token,
            result,
            unsent,
        } => {
            let Some(conn) = conn_of(core, token) else {
                return;
            };
            conn.send_pending.set(false);
            send::on_sent(core, &conn, result, unsent);
        }
        Completion::Accepted {
            token,
            result,
            more,
        } => ring_accept::on_accepted(core, token.0, result, more),
    }
}

/// Hands received bytes to the session and the ring buffer back to the kernel: the
/// bytes are copied into the session's receive buffer (a pooled buffer, or the buffer
/// already sized for the large frame being received), then every complete frame is
/// handled, event by event so replies keep the order of the requests.
fn feed(core: &Worker, conn: &Conn, buf: sockchat_uring::RingBuf) {
    let n = buf.len();
    let mut st = conn.state.borrow_mut();
    if st.proto.is_closed() {
        // Closed (lingering): the session takes no more input. (A receive cancelled for
        // the rate limit still delivers what it had: that is kept, not dropped.)
        core.ring.ring.borrow_mut().recycle(buf);
        let discarded = conn.discarded.get() + n;
        conn.discarded.set(discarded);
        if discarded >= LINGER_BYTES {
            drop(st);
            core.ring.stop_recv(conn);
        }
        return;
    }
    // ops hook: what the session may reserve of the core's memory budget.
    core.grant_allowance(&mut st);
    let mut b = st.proto.take_buffer();
    if b.capacity() == 0 {
        b = core.pool.get();
    }
    {
        let mut ring = core.ring.ring.borrow_mut();
        b.extend_from_slice(ring.bytes(&buf));
        ring.recycle(buf);
    }
    let now = Instant::now();
    let first = st.info.bytes_in == 0;
    st.info.bytes_in += n as u64;
    core.count_bytes_in(n);
    CoreStats::add(&core.stats().bytes_copied, n as u64);
    if first && core.config().line_mode && b.first() != Some(&MAGIC[0]) {
        core.switch_to_line(&mut st, now);
    }
    st.proto.put_buffer(b);
    after_input(core, conn, st, now);
}

/// Handles the input the session now holds (every complete frame, event by event so
/// replies keep the order of the requests), sends the replies, and picks the next
/// receive: none while a rate limit pauses the session, straight into the frame's own
/// buffer when the rest of a large frame is due (`direct_recv.rs`), the ring's
/// otherwise.
pub(crate) fn after_input(core: &Worker, conn: &Conn, mut st: RefMut<'_, ConnState>, now: Instant) {
    // A rate limit that runs out leaves the rest buffered (ops hook) and stops reading.
    while rate_limit::paused_until(&st).is_none() && st.proto.handle_input_until_event(now) {
        core.process(conn, &mut st);
    }
    core.process(conn, &mut st);
    if st.proto.is_input_idle() {
        let b = st.proto.take_buffer();
        match conn.large_input.take() {
            0 => core.pool.put(b),
            size => core.pool.put_large(b, size as usize),
        }
    }
    // ops hook: charge what the session now holds to the core's memory budget.
    core.charge(conn, &st);
    let paused = rate_limit::paused_until(&st).is_some();
    let closed = st.proto.is_closed();
    let slow = st.close_reason == Some(CloseReason::SlowConsumer);
    let direct = !paused && !closed && direct_recv::wanted(&mut st);
    drop(st);
    if paused {
        core.ring.stop_recv(conn);
    } else if direct {
        direct_recv::switch(core, conn);
    } else if conn.recv.get() == RecvState::Off && !closed && !conn.send_over.get() {
        // After a receive into a frame's buffer: back to the ring's receive.
        core.ring.start_recv(conn, conn.fd);
    }
    // The replies go out now, from here: the session's task is woken only when there is
    // something for it to do (`send.rs` says why).
    send::flush(core, conn);
    if slow {
        conn.wake(WAKE_ABORT | WAKE_INPUT);
    } else if closed || paused {
        conn.wake(WAKE_INPUT);
    }
}
