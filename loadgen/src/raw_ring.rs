//! `raw-server --engine ring`: monoio for the thread, its timers and its wake-ups, plus a
//! per-thread data ring of our own on the `io-uring` crate: multishot accept, multishot
//! buffer-select receive from a provided-buffer ring, and each received buffer sent back
//! straight from the ring (no copy), one `sendmsg` per connection for all that is queued
//! (a plain `send` when that is one buffer).
//! With `fanout`, a received buffer is queued to every *other* connection instead (the
//! raw floor of a chat room's fan-out: the same bytes to each member, one `sendmsg` per
//! member); a buffer goes back to the ring once every connection it was queued to has
//! sent it (or closed).
//! The data ring signals a registered eventfd; one monoio task waits on it (a poll on
//! monoio's ring) and then drains the data ring's completions and submits, so a batch of
//! completions costs one wake-up however many sessions it serves.
//!
//! Lifetimes: a connection slot (its fd, its iovecs) is freed only when neither a
//! receive nor a send of it is in the kernel; at stop every operation is cancelled and
//! its final completion awaited before the buffers are freed.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring7::{cqueue, opcode, squeue, types, IoUring};
pub use sockchat_uring::eventfd;

use sockchat_uring::{BufRing, Setup};

use crate::runner::RingMode;

const ACCEPT: u64 = 1 << 56;
const RECV: u64 = 2 << 56;
const SEND: u64 = 3 << 56;
const CANCEL: u64 = 4 << 56;
const KIND: u64 = 0xff << 56;
const BGID: u16 = 0;
/// Most iovecs in one sendmsg.
const MAX_IOV: usize = 64;

/// Buffer ring shape of the prototype (the server takes these from flags).
pub const BUF_COUNT: u16 = 4096;
/// Bytes per ring buffer.
pub const BUF_SIZE: u32 = 4096;

/// One connection's state.
struct Slot {
    fd: OwnedFd,
    /// Received buffers not yet sent back: (bid, offset, len).
    queue: VecDeque<(u16, u32, u32)>,
    /// The iovecs and header of the sendmsg in flight (boxed: stable while in flight;
    /// taken from the driver's spares only while a send is in flight).
    send: Option<Box<SendCtx>>,
    /// Queue entries covered by the send in flight.
    sending: usize,
    recv_armed: bool,
    /// The peer closed or an error happened: free once nothing is in flight.
    done: bool,
}

/// What a sendmsg in flight points to.
struct SendCtx {
    iov: [libc::iovec; MAX_IOV],
    msg: libc::msghdr,
}

fn new_send_ctx() -> Box<SendCtx> {
    // SAFETY: iovec and msghdr are plain data; all-zero is a valid empty value.
    Box::new(unsafe { std::mem::zeroed() })
}

/// The per-thread data ring and its connections.
pub struct Driver {
    ring: IoUring,
    bufs: BufRing,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    listeners: Vec<RawFd>,
    accept_armed: Vec<bool>,
    /// Connections whose receive ended with ENOBUFS, re-armed once buffers return.
    starved: Vec<u32>,
    /// Per buffer id: the send queues holding it (recycled when it drops to 0).
    refs: Vec<u32>,
    /// Forward what a connection sends to every other connection instead of echoing it.
    fanout: bool,
    // Boxed: a context's address must not change while a send points into it.
    #[allow(clippy::vec_box)]
    spare_sends: Vec<Box<SendCtx>>,
    /// ENOBUFS completions seen.
    pub enobufs: u64,
    in_flight: usize,
    setup: Setup,
    /// The listeners are TCP (accepted sockets get TCP_NODELAY).
    tcp: bool,
    stopping: bool,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

/// Sets up a data ring for `listeners` (non-blocking listening sockets) whose
/// completions signal `eventfd`; `fanout` forwards every connection's bytes to all the
/// others instead of echoing them.
pub fn driver(
    mode: RingMode,
    listeners: Vec<RawFd>,
    tcp: bool,
    eventfd: RawFd,
    fanout: bool,
) -> io::Result<Driver> {
    let setup = match mode {
        RingMode::Plain => Setup::Plain,
        RingMode::Coop => Setup::Coop,
        RingMode::Defer => Setup::Defer,
    };
    let ring = sockchat_uring::build(1024, 8192, setup)?;
    ring.submitter().register_eventfd(eventfd)?;
    let bufs = BufRing::new(&ring.submitter(), BUF_COUNT, BUF_SIZE, BGID)?;
    let n = listeners.len();
    let mut d = Driver {
        ring,
        bufs,
        slots: Vec::new(),
        free: Vec::new(),
        listeners,
        accept_armed: vec![false; n],
        starved: Vec::new(),
        refs: vec![0; usize::from(BUF_COUNT)],
        fanout,
        spare_sends: Vec::new(),
        enobufs: 0,
        in_flight: 0,
        setup,
        tcp,
        stopping: false,
    };
    for i in 0..n {
        d.arm_accept(i);
    }
    d.submit()?;
    Ok(d)
}

impl Driver {
    fn push(&mut self, e: squeue::Entry) {
        // SAFETY: for every entry built here, the pointers an entry carries (iovecs and
        // msghdr of a slot) stay valid until its final completion: slots are freed only
        // with nothing in flight, and the boxes do not move when `slots` grows.
        unsafe {
            while self.ring.submission().push(&e).is_err() {
                let _ = self.ring.submit();
            }
        }
        self.in_flight += 1;
    }

    fn arm_accept(&mut self, i: usize) {
        let e = opcode::AcceptMulti::new(types::Fd(self.listeners[i]))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(ACCEPT | i as u64);
        self.push(e);
        self.accept_armed[i] = true;
    }

    fn arm_recv(&mut self, idx: u32) {
        let Some(s) = self.slots[idx as usize].as_mut().filter(|s| !s.done) else {
            return;
        };
        s.recv_armed = true;
        let e = opcode::RecvMulti::new(types::Fd(s.fd.as_raw_fd()), BGID)
            .build()
            .user_data(RECV | idx as u64);
        self.push(e);
    }

    fn start_send(&mut self, idx: u32) {
        let Some(s) = self.slots[idx as usize].as_mut() else {
            return;
        };
        if s.sending > 0 || s.queue.is_empty() || s.done {
            return;
        }
        let n = s.queue.len().min(MAX_IOV);
        let mut ctx = self.spare_sends.pop().unwrap_or_else(new_send_ctx);
        for (i, &(bid, off, len)) in s.queue.iter().take(n).enumerate() {
            let b = self.bufs.bytes(bid, (off + len) as usize);
            ctx.iov[i] = libc::iovec {
                iov_base: b[off as usize..].as_ptr() as *mut libc::c_void,
                iov_len: len as usize,
            };
        }
        // SAFETY: msghdr is plain data; zeroed is a valid empty header.
        ctx.msg = unsafe { std::mem::zeroed() };
        ctx.msg.msg_iov = ctx.iov.as_mut_ptr();
        ctx.msg.msg_iovlen = n as _;
        s.sending = n;
        let fd = types::Fd(s.fd.as_raw_fd());
        // One part (a fan-out member's usual case): a plain send, no msghdr for the
        // kernel to copy in, as sockchat-server's data ring sends one part.
        let flags = libc::MSG_NOSIGNAL;
        let e = if n == 1 {
            let one = ctx.iov[0];
            opcode::Send::new(fd, one.iov_base as *const u8, one.iov_len as u32)
                .flags(flags)
                .build()
        } else {
            opcode::SendMsg::new(fd, &ctx.msg)
                .flags(flags as u32)
                .build()
        }
        .user_data(SEND | idx as u64);
        s.send = Some(ctx);
        self.push(e);
    }

    fn add_conn(&mut self, fd: OwnedFd) {
        let slot = Slot {
            fd,
            queue: VecDeque::new(),
            send: None,
            sending: 0,
            recv_armed: false,
            done: false,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        self.arm_recv(idx);
    }

    /// Queues `len` received bytes of buffer `bid` from connection `from`: back to it
    /// (echo), or to every other open connection (fan-out).
    fn forward(&mut self, from: u32, bid: u16, len: u32) {
        let queued = if self.fanout {
            let mut queued = 0;
            for idx in (0..self.slots.len() as u32).filter(|&i| i != from) {
                queued += u32::from(self.enqueue(idx, bid, len));
            }
            queued
        } else {
            u32::from(self.enqueue(from, bid, len))
        };
        self.refs[usize::from(bid)] = queued;
        if queued == 0 {
            self.bufs.recycle(bid);
        }
    }

    /// Queues a buffer's bytes to connection `idx` and starts its send; false if it is
    /// not open.
    fn enqueue(&mut self, idx: u32, bid: u16, len: u32) -> bool {
        let Some(s) = self.slots[idx as usize].as_mut().filter(|s| !s.done) else {
            return false;
        };
        s.queue.push_back((bid, 0, len));
        self.start_send(idx);
        true
    }

    /// Frees the slot if nothing of it is in flight any more.
    fn maybe_free(&mut self, idx: u32) {
        let Some(s) = self.slots[idx as usize].as_ref() else {
            return;
        };
        if s.done && !s.recv_armed && s.sending == 0 {
            let s = self.slots[idx as usize].take().expect("checked");
            for (bid, _, _) in s.queue {
                release(&mut self.refs, &mut self.bufs, bid);
            }
            self.free.push(idx);
        }
    }

    fn close(&mut self, idx: u32) {
        let Some(s) = self.slots[idx as usize].as_mut() else {
            return;
        };
        if !s.done {
            s.done = true;
            if s.recv_armed {
                let e = opcode::AsyncCancel::new(RECV | idx as u64)
                    .build()
                    .user_data(CANCEL);
                self.push(e);
            }
        }
        self.maybe_free(idx);
    }

    fn on_cqe(&mut self, ud: u64, res: i32, flags: u32) {
        let idx = (ud & 0xffff_ffff) as u32;
        match ud & KIND {
            ACCEPT => {
                if !cqueue::more(flags) {
                    self.accept_armed[idx as usize] = false;
                }
                if res >= 0 {
                    // SAFETY: a successful accept completion carries a new fd we own.
                    let fd = unsafe { OwnedFd::from_raw_fd(res) };
                    if self.stopping {
                        return;
                    }
                    let one: libc::c_int = 1;
                    if self.tcp {
                        // SAFETY: valid fd and option pointer/length.
                        unsafe {
                            libc::setsockopt(
                                fd.as_raw_fd(),
                                libc::IPPROTO_TCP,
                                libc::TCP_NODELAY,
                                (&one as *const libc::c_int).cast(),
                                std::mem::size_of::<libc::c_int>() as _,
                            );
                        }
                    }
                    self.add_conn(fd);
                }
                if !self.accept_armed[idx as usize] && !self.stopping {
                    self.arm_accept(idx as usize);
                }
            }
            RECV => {
                let more = cqueue::more(flags);
                let bid = cqueue::buffer_select(flags);
                if let Some(b) = bid {
                    self.bufs.taken(b);
                }
                let Some(s) = self.slots[idx as usize].as_mut() else {
                    return;
                };
                if !more {
                    s.recv_armed = false;
                }
                match (res, bid) {
                    (n, Some(b)) if n > 0 => {
                        if s.done {
                            self.bufs.recycle(b);
                        } else {
                            self.forward(idx, b, n as u32);
                        }
                    }
                    (n, _) if n == -libc::ENOBUFS => {
                        self.enobufs += 1;
                        if !s.done {
                            self.starved.push(idx);
                        }
                    }
                    (_, b) => {
                        if let Some(b) = b {
                            self.bufs.recycle(b);
                        }
                        // EOF, an error, or a cancellation: the connection ends.
                        if !more {
                            self.close(idx);
                        }
                    }
                }
                if !more && !self.slots[idx as usize].as_ref().is_some_and(|s| s.done) {
                    // Ended without error (e.g. the kernel stopped the multishot): re-arm,
                    // unless it waits for buffers.
                    if !self.starved.contains(&idx) {
                        self.arm_recv(idx);
                    }
                }
                self.maybe_free(idx);
            }
            SEND => {
                let Some(s) = self.slots[idx as usize].as_mut() else {
                    return;
                };
                let n = std::mem::take(&mut s.sending);
                if let Some(ctx) = s.send.take() {
                    self.spare_sends.push(ctx);
                }
                if res < 0 {
                    s.done = true;
                    self.close(idx);
                    return;
                }
                let mut sent = res as u32;
                for _ in 0..n {
                    let Some(front) = s.queue.front_mut() else {
                        break;
                    };
                    if sent >= front.2 {
                        sent -= front.2;
                        let (b, _, _) = s.queue.pop_front().expect("front");
                        release(&mut self.refs, &mut self.bufs, b);
                    } else {
                        front.1 += sent;
                        front.2 -= sent;
                        break;
                    }
                }
                if s.done {
                    self.maybe_free(idx);
                } else {
                    self.start_send(idx);
                }
            }
            _ => {}
        }
    }

    /// Handles every completion ready, re-arms starved receives once buffers came back,
    /// and submits. Returns the completions handled.
    pub fn run_once(&mut self) -> usize {
        let mut handled = 0;
        loop {
            let batch: Vec<(u64, i32, u32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags()))
                .collect();
            if batch.is_empty() {
                break;
            }
            for (ud, res, flags) in batch {
                if !cqueue::more(flags) {
                    self.in_flight -= 1;
                }
                handled += 1;
                self.on_cqe(ud, res, flags);
            }
        }
        self.bufs.commit();
        if !self.starved.is_empty() && self.bufs.out() < u32::from(self.bufs.count()) / 2 {
            for idx in std::mem::take(&mut self.starved) {
                self.arm_recv(idx);
            }
        }
        let _ = self.submit();
        handled
    }

    fn submit(&mut self) -> io::Result<usize> {
        sockchat_uring::submit(&mut self.ring, self.setup)
    }

    /// Cancels everything in flight and waits (at most `limit`) for the final
    /// completions. True if all came back (the buffers may then be freed).
    pub fn stop(&mut self, limit: Duration) -> bool {
        self.stopping = true;
        let e = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(CANCEL);
        self.push(e);
        let deadline = Instant::now() + limit;
        while self.in_flight > 0 && Instant::now() < deadline {
            let _ = self.ring.submit_and_wait(1);
            self.run_once();
            for i in 0..self.slots.len() {
                self.close(i as u32);
            }
        }
        if self.in_flight == 0 {
            self.bufs.unregister(&self.ring.submitter());
            true
        } else {
            false
        }
    }
}

/// One send queue is done with buffer `bid`: the last one gives it back to the ring.
fn release(refs: &mut [u32], bufs: &mut BufRing, bid: u16) {
    let r = &mut refs[usize::from(bid)];
    *r = r.saturating_sub(1);
    if *r == 0 {
        bufs.recycle(bid);
    }
}

/// Runs one worker's loop on monoio until `stop` is set.
pub async fn run(mut d: Driver, eventfd: OwnedFd, stop: Arc<AtomicBool>) {
    let efd = eventfd.as_raw_fd();
    // monoio has no eventfd type; its UnixStream's `readable` is just a POLL_ADD on the
    // fd, which works on any pollable fd. The fd stays owned by `eventfd`.
    // SAFETY: a dup of the eventfd, owned by the std stream from here on.
    let poller = unsafe {
        let dup = libc::dup(efd);
        std::os::unix::net::UnixStream::from_raw_fd(dup)
    };
    let Ok(poller) = monoio::net::UnixStream::from_std(poller) else {
        return;
    };
    loop {
        // Reset the counter first: completions posted after this signal it again.
        let mut v = 0u64;
        // SAFETY: an 8-byte read into a u64 from a non-blocking eventfd.
        unsafe { libc::read(efd, (&mut v as *mut u64).cast(), 8) };
        d.run_once();
        if stop.load(Ordering::Acquire) {
            break;
        }
        let wait = poller.readable(true);
        let tick = monoio::time::sleep(crate::raw_server::STOP_CHECK);
        monoio::select! {
            _ = wait => {},
            _ = tick => {},
        }
    }
    if !d.stop(Duration::from_secs(2)) {
        // Something never completed: keep the ring and its buffers alive (leak) rather
        // than free memory the kernel may still write.
        std::mem::forget(d);
    }
}
