//! The data ring: operations keyed by a caller's [`Token`] (a session or listener slot),
//! completions drained in batches.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use io_uring7::{cqueue, opcode, squeue, types, IoUring};

use crate::bufring::BufRing;
use crate::sys::{self, Setup};

/// The caller's name for whatever an operation belongs to (e.g. a session slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(pub u32);

const RECV: u64 = 1 << 32;
const ACCEPT: u64 = 2 << 32;
const SEND: u64 = 3 << 32;
/// Completions of cancel requests themselves: nothing to report.
const CANCEL: u64 = 4 << 32;
const RECV_INTO: u64 = 5 << 32;
const KIND: u64 = 0xff << 32;
const BGID: u16 = 0;
/// Most iovecs in one sendmsg (Linux's IOV_MAX is 1024).
pub const MAX_IOV: usize = 1024;

/// Ring shape and setup flags.
#[derive(Debug, Clone, Copy)]
pub struct RingConfig {
    /// Provided buffers (a power of two, at most 32768).
    pub buf_count: u16,
    /// Bytes per provided buffer.
    pub buf_size: u32,
    /// Submission queue entries (completion queue: 4×).
    pub entries: u32,
    /// `SINGLE_ISSUER | DEFER_TASKRUN` (the ring must then only be used from the thread
    /// that created it).
    pub defer_taskrun: bool,
    /// Free buffers needed before receives that found the ring empty are re-armed.
    pub rearm_free: u16,
}

impl RingConfig {
    fn setup(&self) -> Setup {
        if self.defer_taskrun {
            Setup::Defer
        } else {
            Setup::Plain
        }
    }
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            buf_count: 4096,
            buf_size: 4096,
            entries: 1024,
            defer_taskrun: true,
            rearm_free: 64,
        }
    }
}

/// A received buffer, lent by the ring until [`DataRing::recycle`]. Not `Clone`: one owner.
#[derive(Debug)]
#[must_use = "a ring buffer not recycled is lost to the ring"]
pub struct RingBuf {
    bid: u16,
    len: u32,
}

impl RingBuf {
    /// Bytes received into it.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Never true for a buffer handed out (an empty receive is end of stream).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What finished.
#[derive(Debug)]
pub enum Completion {
    /// Bytes received for `token`'s multishot receive.
    Data {
        /// Whose.
        token: Token,
        /// The bytes.
        buf: RingBuf,
    },
    /// `token`'s receive ended: the peer closed (`Ok(())`), an error, or a cancellation
    /// (`ErrorKind` from `ECANCELED`). Nothing of it is in flight any more.
    RecvEnded {
        /// Whose.
        token: Token,
        /// Why.
        result: io::Result<()>,
    },
    /// `token`'s receive ([`DataRing::recv_limited`]) ended after its last data, having
    /// received its byte limit. Nothing of it is in flight any more: arm the next.
    RecvLimit {
        /// Whose.
        token: Token,
    },
    /// `token`'s receive into its own buffer ([`DataRing::recv_into`]) finished:
    /// `result` bytes were appended to `buf` (0: the peer closed), or the error
    /// (`ECANCELED` when cancelled). Nothing of it is in flight any more.
    Received {
        /// Whose.
        token: Token,
        /// Bytes received, or the error.
        result: io::Result<usize>,
        /// The caller's buffer, with what was received appended.
        buf: BytesMut,
    },
    /// A connection accepted on `token`'s listener, or an accept error.
    Accepted {
        /// Which listener.
        token: Token,
        /// The new socket.
        result: io::Result<OwnedFd>,
        /// The multishot accept is still armed (if not, arm it again unless stopping).
        more: bool,
    },
    /// `token`'s send finished: `result` bytes went out; `unsent` holds what did not
    /// (send it again, in order).
    Sent {
        /// Whose.
        token: Token,
        /// Bytes sent, or the error.
        result: io::Result<usize>,
        /// The parts not (fully) sent, in order.
        unsent: Vec<Bytes>,
    },
}

/// Counters (cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Receives that found the buffer ring empty (ENOBUFS).
    pub enobufs: u64,
    /// Receives re-armed after buffers came back.
    pub rearmed: u64,
    /// Completions handled.
    pub completions: u64,
}

/// What a send in flight points to; boxed so its address is stable while it is in flight.
/// Reused from send to send through the ring's pool (emptied, capacity kept), so a send
/// allocates nothing: a chat fan-out makes one send per recipient, and its allocations
/// and frees were a tenth of the server's CPU per delivery. Pooled by the ring rather
/// than kept per slot, so an idle session holds none.
struct SendCtx {
    parts: Vec<Bytes>,
    iov: Vec<libc::iovec>,
    msg: libc::msghdr,
}

impl SendCtx {
    fn new() -> Box<Self> {
        Box::new(Self {
            parts: Vec::new(),
            iov: Vec::new(),
            // SAFETY: msghdr is plain data; all-zero is an empty header.
            msg: unsafe { std::mem::zeroed() },
        })
    }
}

/// Per-token state.
#[derive(Default)]
struct Slot {
    /// The fd a receive runs on, while one is wanted.
    recv_fd: Option<RawFd>,
    /// A receive is in the kernel.
    recv_armed: bool,
    /// The receive is waiting for buffers (not in the kernel).
    starved: bool,
    /// The receive was cancelled: do not re-arm.
    recv_cancelled: bool,
    /// The receive's byte limit (0: none), see [`DataRing::recv_limited`].
    recv_limit: u32,
    /// Batch ([`DataRing::poll`]) in which the receive's end completion was reported.
    recv_ended: u64,
    /// The send in the kernel, if any.
    send: Option<Box<SendCtx>>,
    accept_armed: bool,
}

/// One core's data ring.
pub struct DataRing {
    ring: IoUring,
    bufs: BufRing,
    eventfd: OwnedFd,
    slots: Vec<Slot>,
    starved: Vec<Token>,
    /// The buffers [`DataRing::recv_into`] receives into, by token (the kernel writes
    /// their spare capacity until the final completion). Beside the slots rather than in
    /// them: few sessions have one at a time, and every session has a slot (what an idle
    /// session costs).
    direct: HashMap<u32, BytesMut>,
    /// Send contexts not in use (at most one per submission queue entry). Boxed: a
    /// context moves between the pool and a slot, and its msghdr's address must not
    /// change while the kernel may read it.
    #[allow(clippy::vec_box)]
    send_pool: Vec<Box<SendCtx>>,
    /// Completions reported at the next [`poll`](DataRing::poll) (the ends of parked
    /// receives that were cancelled).
    pending: Vec<Completion>,
    /// Batches polled so far.
    batch: u64,
    /// The kernel refused a receive's byte limit (before 6.16?): receives run unlimited.
    no_limit: bool,
    in_flight: usize,
    config: RingConfig,
    stats: RingStats,
    shut: bool,
}

impl std::fmt::Debug for DataRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataRing")
            .field("in_flight", &self.in_flight)
            .field("buffers_out", &self.bufs.out())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl DataRing {
    /// Sets up the ring, registers its buffers and its eventfd.
    pub fn new(config: RingConfig) -> io::Result<Self> {
        let ring = sys::build(
            config.entries,
            config.entries.saturating_mul(4),
            config.setup(),
        )?;
        let eventfd = sys::eventfd()?;
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        let bufs = BufRing::new(&ring.submitter(), config.buf_count, config.buf_size, BGID)?;
        Ok(Self {
            ring,
            bufs,
            eventfd,
            slots: Vec::new(),
            starved: Vec::new(),
            direct: HashMap::new(),
            send_pool: Vec::new(),
            pending: Vec::new(),
            batch: 0,
            no_limit: false,
            in_flight: 0,
            config,
            stats: RingStats::default(),
            shut: false,
        })
    }

    /// The eventfd signalled when completions are ready (poll it for readability).
    pub fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Counters.
    pub fn stats(&self) -> RingStats {
        self.stats
    }

    /// Provided buffers the caller holds.
    pub fn buffers_out(&self) -> u32 {
        self.bufs.out()
    }

    /// The ring's configuration.
    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// Operations in the kernel (each awaits a final completion).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// True when nothing of `token` is in the kernel: its fd may be closed and its
    /// slot reused.
    pub fn is_idle(&self, token: Token) -> bool {
        !self.direct.contains_key(&token.0)
            && self
                .slots
                .get(token.0 as usize)
                .is_none_or(|s| !s.recv_armed && s.send.is_none() && !s.accept_armed && !s.starved)
    }

    fn slot(&mut self, token: Token) -> &mut Slot {
        let i = token.0 as usize;
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, Slot::default);
        }
        &mut self.slots[i]
    }

    fn push(&mut self, e: squeue::Entry) {
        loop {
            // SAFETY: every entry pushed here points only to memory the ring owns until
            // the entry's final completion (a slot's boxed `SendCtx`, the buffer ring), or
            // to nothing.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                break;
            }
            // The submission queue is full: hand it to the kernel and retry.
            let _ = self.submit();
        }
        self.in_flight += 1;
    }

    /// Starts a multishot buffer-select receive on `fd` for `token`. Data arrives as
    /// [`Completion::Data`] until [`Completion::RecvEnded`].
    pub fn recv(&mut self, token: Token, fd: RawFd) {
        self.recv_limited(token, fd, 0);
    }

    /// Like [`recv`](Self::recv), but the receive ends by itself once it has received
    /// `limit` bytes or more (0: never), with [`Completion::RecvLimit`] after its last
    /// data (kernel 6.16+; where the kernel refuses the limit, receives run unlimited).
    /// Each completion holds at most one buffer, so a limit of 1 receives exactly one
    /// buffer: the caller sees what came before the kernel receives more.
    pub fn recv_limited(&mut self, token: Token, fd: RawFd, limit: u32) {
        debug_assert!(!self.direct.contains_key(&token.0), "one receive per token");
        let s = self.slot(token);
        debug_assert!(!s.recv_armed && !s.starved, "one receive per token");
        s.recv_fd = Some(fd);
        s.recv_cancelled = false;
        s.recv_limit = limit;
        self.arm_recv(token);
    }

    fn arm_recv(&mut self, token: Token) {
        let no_limit = self.no_limit;
        let s = self.slot(token);
        let Some(fd) = s.recv_fd else { return };
        s.recv_armed = true;
        s.starved = false;
        let limit = if no_limit { 0 } else { s.recv_limit };
        let e = opcode::RecvMulti::new(types::Fd(fd), BGID)
            .build()
            .user_data(RECV | u64::from(token.0));
        self.push(with_total_limit(e, limit));
    }

    /// Stops `token`'s receive. Returns true if it is over at once (none was running, and
    /// none ended in the batch being handled): no completion of it follows. Otherwise
    /// its end ([`Completion::RecvEnded`], or [`Completion::RecvLimit`] if it reached its
    /// limit first) follows, after any data completions of it.
    pub fn cancel_recv(&mut self, token: Token) -> bool {
        let batch = self.batch;
        let s = self.slot(token);
        if s.recv_armed {
            if !s.recv_cancelled {
                s.recv_cancelled = true;
                let e = opcode::AsyncCancel::new(RECV | u64::from(token.0))
                    .build()
                    .user_data(CANCEL);
                self.push(e);
            }
            return false;
        }
        s.recv_cancelled = true;
        s.recv_fd = None;
        if std::mem::take(&mut s.starved) {
            // Parked, not in the kernel: it ends now, reported like a cancellation (its
            // data completions of this batch, if any, come first).
            s.recv_ended = batch;
            self.starved.retain(|t| *t != token);
            self.pending.push(Completion::RecvEnded {
                token,
                result: Err(io::Error::from_raw_os_error(libc::ECANCELED)),
            });
            return false;
        }
        s.recv_ended != batch
    }

    /// Starts a multishot accept on listener `fd` for `token`.
    pub fn accept(&mut self, token: Token, fd: RawFd) {
        self.slot(token).accept_armed = true;
        let e = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(ACCEPT | u64::from(token.0));
        self.push(e);
    }

    /// Stops `token`'s accept (a final [`Completion::Accepted`] with `more == false`).
    pub fn cancel_accept(&mut self, token: Token) {
        if self.slot(token).accept_armed {
            let e = opcode::AsyncCancel::new(ACCEPT | u64::from(token.0))
                .build()
                .user_data(CANCEL);
            self.push(e);
        }
    }

    /// True if `token` has a send in flight (one at a time per token keeps the order).
    pub fn sending(&self, token: Token) -> bool {
        self.slots
            .get(token.0 as usize)
            .is_some_and(|s| s.send.is_some())
    }

    /// Sends `parts` (at most [`MAX_IOV`] of them; taken, `parts` is left empty with its
    /// capacity) on `fd`: one `send` for one part, else one vectored `sendmsg`. The parts
    /// stay with the ring until [`Completion::Sent`] hands back what was not sent.
    pub fn send(&mut self, token: Token, fd: RawFd, parts: &mut Vec<Bytes>) {
        assert!(!self.sending(token), "one send per token at a time");
        debug_assert!(parts.len() <= MAX_IOV && !parts.is_empty());
        let mut ctx = self.send_pool.pop().unwrap_or_else(SendCtx::new);
        ctx.parts.append(parts);
        // Not MSG_DONTWAIT: on a full socket the send waits in the kernel (the session's
        // write-progress timeout watches it) instead of failing.
        let flags = libc::MSG_NOSIGNAL;
        let e = if let [one] = &ctx.parts[..] {
            // No msghdr or iovec for the kernel to copy in: the common case of a fan-out
            // delivery or a batch of small replies coalesced into one buffer.
            opcode::Send::new(types::Fd(fd), one.as_ptr(), one.len() as u32)
                .flags(flags)
                .build()
        } else {
            let SendCtx { parts, iov, msg } = &mut *ctx;
            iov.clear();
            iov.extend(parts.iter().map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            }));
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = iov.len() as _;
            opcode::SendMsg::new(types::Fd(fd), msg)
                .flags(flags as u32)
                .build()
        }
        .user_data(SEND | u64::from(token.0));
        self.slot(token).send = Some(ctx);
        self.push(e);
    }

    /// Cancels `token`'s send in flight, if any; its [`Completion::Sent`] follows (with
    /// `ECANCELED`, or with what it sent before the cancellation took).
    pub fn cancel_send(&mut self, token: Token) {
        if self.sending(token) {
            let e = opcode::AsyncCancel::new(SEND | u64::from(token.0))
                .build()
                .user_data(CANCEL);
            self.push(e);
        }
    }

    /// The bytes of a received buffer.
    pub fn bytes(&self, buf: &RingBuf) -> &[u8] {
        self.bufs.bytes(buf.bid, buf.len as usize)
    }

    /// Gives a received buffer back to the kernel (visible after the next
    /// [`submit`](Self::submit) or [`poll`](Self::poll)).
    pub fn recycle(&mut self, buf: RingBuf) {
        self.bufs.recycle(buf.bid);
    }

    /// Re-arms receives that found the ring empty, if at least `rearm_free` buffers are
    /// free again ([`submit`](Self::submit) calls it). Never spins: with too few free
    /// buffers it does nothing until some are recycled.
    pub fn rearm_starved(&mut self) {
        let free = u32::from(self.bufs.count()).saturating_sub(self.bufs.out());
        if self.starved.is_empty() || free < u32::from(self.config.rearm_free) {
            return;
        }
        for token in std::mem::take(&mut self.starved) {
            if self.slot(token).starved {
                self.stats.rearmed += 1;
                self.arm_recv(token);
            }
        }
    }

    /// Clears the eventfd (call before draining, so later completions signal it again).
    pub fn clear_wake(&self) {
        let mut v = 0u64;
        // SAFETY: an 8-byte read into a u64 from our non-blocking eventfd.
        unsafe { libc::read(self.eventfd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    /// Hands pending submissions to the kernel (and, with DEFER_TASKRUN, runs the
    /// deferred completion work). Receives parked on an empty ring are re-armed first if
    /// enough buffers came back.
    pub fn submit(&mut self) -> io::Result<usize> {
        self.rearm_starved();
        self.bufs.commit();
        sys::submit(&mut self.ring, self.config.setup())
    }

    /// True if completions may be ready without the eventfd saying so again: some are
    /// in the completion queue, the completion queue overflowed, or deferred completion
    /// work is pending (the kernel runs a bounded amount of it per `io_uring_enter` and
    /// signals the eventfd only when new work arrives to an empty list). The owner
    /// should then submit and poll again instead of waiting for the eventfd.
    pub fn work_pending(&mut self) -> bool {
        let (taskrun, overflow) = {
            let sq = self.ring.submission();
            (sq.taskrun(), sq.cq_overflow())
        };
        taskrun || overflow || !self.ring.completion().is_empty()
    }

    /// Appends every ready completion to `out`. ENOBUFS is handled here: the receive is
    /// parked (counted) and re-armed by [`rearm_starved`](Self::rearm_starved).
    pub fn poll(&mut self, out: &mut Vec<Completion>) {
        self.batch += 1;
        out.append(&mut self.pending);
        let cqes: Vec<(u64, i32, u32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result(), c.flags()))
            .collect();
        for (ud, res, flags) in cqes {
            let more = cqueue::more(flags);
            if !more {
                self.in_flight -= 1;
            }
            self.stats.completions += 1;
            self.on_cqe(ud, res, flags, more, out);
        }
    }

    fn on_cqe(&mut self, ud: u64, res: i32, flags: u32, more: bool, out: &mut Vec<Completion>) {
        let token = Token((ud & 0xffff_ffff) as u32);
        match ud & KIND {
            RECV => {
                if let Some(bid) = cqueue::buffer_select(flags) {
                    self.bufs.taken(bid);
                    let buf = RingBuf {
                        bid,
                        len: res.max(0) as u32,
                    };
                    if res > 0 {
                        out.push(Completion::Data { token, buf });
                    } else {
                        self.bufs.recycle(buf.bid);
                    }
                }
                if more {
                    return;
                }
                let (batch, no_limit) = (self.batch, self.no_limit);
                let s = self.slot(token);
                s.recv_armed = false;
                if res == -libc::ENOBUFS && !s.recv_cancelled {
                    // Nothing was lost: the bytes wait in the socket until re-armed.
                    s.starved = true;
                    self.starved.push(token);
                    self.stats.enobufs += 1;
                } else if res == -libc::EINVAL && s.recv_limit > 0 && !s.recv_cancelled {
                    // A kernel without receive limits: unlimited from now on (the
                    // caller still gets every byte, only later than it could).
                    self.no_limit = true;
                    self.arm_recv(token);
                } else if res > 0 && !s.recv_cancelled && s.recv_limit > 0 && !no_limit {
                    s.recv_fd = None;
                    s.recv_ended = batch;
                    out.push(Completion::RecvLimit { token });
                } else if res > 0 && !s.recv_cancelled {
                    // The kernel ended the multishot after data (e.g. a full CQ): re-arm.
                    self.arm_recv(token);
                } else {
                    s.recv_ended = batch;
                    s.recv_fd = None;
                    let result = match res {
                        r if r >= 0 => Ok(()),
                        r => Err(io::Error::from_raw_os_error(-r)),
                    };
                    out.push(Completion::RecvEnded { token, result });
                }
            }
            ACCEPT => {
                if !more {
                    self.slot(token).accept_armed = false;
                }
                let result = if res >= 0 {
                    // SAFETY: a successful accept completion carries a new fd we own.
                    Ok(unsafe { OwnedFd::from_raw_fd(res) })
                } else {
                    Err(io::Error::from_raw_os_error(-res))
                };
                out.push(Completion::Accepted {
                    token,
                    result,
                    more,
                });
            }
            RECV_INTO => self.on_received(token, res, out),
            SEND => {
                let Some(mut ctx) = self.slot(token).send.take() else {
                    return;
                };
                let parts = &mut ctx.parts;
                let result = if res >= 0 {
                    advance(parts, res as usize);
                    Ok(res as usize)
                } else {
                    Err(io::Error::from_raw_os_error(-res))
                };
                // Nearly always everything went: nothing to hand back, nothing allocated.
                let unsent = if parts.is_empty() {
                    Vec::new()
                } else {
                    std::mem::take(parts)
                };
                if self.send_pool.len() < self.config.entries as usize {
                    self.send_pool.push(ctx);
                }
                out.push(Completion::Sent {
                    token,
                    result,
                    unsent,
                });
            }
            _ => {}
        }
    }

    /// Cancels every operation and waits (at most `limit`) for their final completions,
    /// handing each to `on`. True if all came back: the ring's memory is then freed on
    /// drop; otherwise it is leaked rather than freed under the kernel.
    pub fn shutdown(&mut self, limit: Duration, mut on: impl FnMut(&mut Self, Completion)) -> bool {
        let e = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(CANCEL);
        self.push(e);
        for t in std::mem::take(&mut self.starved) {
            let s = self.slot(t);
            s.starved = false;
            s.recv_fd = None;
        }
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        while self.in_flight > 0 && Instant::now() < deadline {
            let ts = types::Timespec::new().nsec(10_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            self.poll(&mut out);
            for c in out.drain(..) {
                on(self, c);
            }
        }
        if self.in_flight == 0 {
            self.bufs.unregister(&self.ring.submitter());
            self.shut = true;
        }
        self.shut
    }
}

impl Drop for DataRing {
    fn drop(&mut self) {
        if self.in_flight > 0 {
            // Operations may still use the send contexts the slots own and the receive
            // buffers (and `BufRing`'s drop leaks its memory for the same reason): leak
            // them rather than free memory the kernel may still read or write.
            std::mem::forget(std::mem::take(&mut self.slots));
            std::mem::forget(std::mem::take(&mut self.direct));
        } else if !self.shut {
            self.bufs.unregister(&self.ring.submitter());
        }
    }
}

/// Sets a multishot receive's total byte limit: `sqe->optlen` (offset 44 of the 64-byte
/// SQE, shared with `file_index`), which the `io-uring` crate's `RecvMulti` does not set.
fn with_total_limit(e: squeue::Entry, limit: u32) -> squeue::Entry {
    const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);
    if limit == 0 {
        return e;
    }
    // SAFETY: `squeue::Entry` is `repr(C)` around the kernel's 64-byte `io_uring_sqe`
    // (checked above); every byte pattern is a valid SQE for Rust's purposes, and bytes
    // 44..48 are the `optlen` the kernel reads as a multishot receive's total limit.
    unsafe {
        let mut raw: [u8; 64] = std::mem::transmute(e);
        raw[44..48].copy_from_slice(&limit.to_ne_bytes());
        std::mem::transmute::<[u8; 64], squeue::Entry>(raw)
    }
}

#[path = "recv_into.rs"]
mod recv_into;

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

/// Drops the first `n` bytes of `parts`.
pub fn advance(parts: &mut Vec<Bytes>, mut n: usize) {
    let mut done = 0;
    for p in parts.iter_mut() {
        if n == 0 && !p.is_empty() {
            break;
        }
        let take = n.min(p.len());
        p.advance(take);
        n -= take;
        if p.is_empty() {
            done += 1;
        }
    }
    parts.drain(..done);
}
