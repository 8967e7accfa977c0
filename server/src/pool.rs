//! Per-core pool of read buffers.
//!
//! monoio 0.2.4 has no registered (fixed) buffers and no provided-buffer rings, so reads
//! use owned buffers passed to the kernel and handed back on completion. An idle session
//! holds none: it waits for readability without a buffer, takes one from this pool for
//! the read, and gives it back as soon as its deframer holds no partial frame. Buffers
//! are allocated up front; the pool only grows past that under load, and keeps at most
//! `max_free` spare ones.
//!
//! It also keeps a few large buffers: those large frames were received into in place
//! (`direct_recv.rs`), for the next large frame on the core. The server has glibc map
//! every buffer of 128 KiB or more on its own and unmap it when freed (`alloc.rs`), so
//! without them each large frame faulted in a fresh mapping page by page: a fifth of the
//! server's CPU time in the 1 MiB echo (perf: 250 page faults per frame). At most
//! [`LARGE_KEPT`] buffers and [`LARGE_KEPT_BYTES`] bytes are kept; they go back to the
//! kernel whenever a session of the core ends (the large frames may have been its own:
//! what a closed session held must not stay resident). The buffers of chunked messages
//! come from the same store ([`LargeBuffers`] as the sessions' [`MessageBuffers`]): a
//! fresh 1 MiB message buffer was 18% of the server's CPU time in the chunked 1 MiB
//! echo (page faults, zeroing and unmapping, perf).

use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::BytesMut;
use sockchat_proto::MessageBuffers;

/// Most large buffers kept per core.
pub const LARGE_KEPT: usize = 16;
/// Most bytes of large buffers kept per core.
pub const LARGE_KEPT_BYTES: usize = 16 << 20;

/// A pool of equally sized receive buffers, for one core (not `Sync`).
#[derive(Debug)]
pub struct BufPool {
    free: RefCell<Vec<BytesMut>>,
    buf_size: usize,
    max_free: usize,
    large: Arc<LargeBuffers>,
}

impl BufPool {
    /// A pool of `prealloc` buffers of `buf_size` bytes, keeping at most `max_free` spare.
    pub fn new(buf_size: usize, prealloc: usize, max_free: usize) -> Self {
        let free = (0..prealloc.min(max_free))
            .map(|_| BytesMut::with_capacity(buf_size))
            .collect();
        Self {
            free: RefCell::new(free),
            buf_size,
            max_free,
            large: Arc::default(),
        }
    }

    /// Size of the buffers handed out.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Spare buffers held.
    pub fn available(&self) -> usize {
        self.free.borrow().len()
    }

    /// An empty buffer with room for at least half a pool buffer.
    pub fn get(&self) -> BytesMut {
        let popped = self.free.borrow_mut().pop();
        match popped {
            Some(mut b) => {
                // Frames split off this buffer earlier may have been dropped since: take
                // the whole allocation back without allocating if so.
                if b.capacity() < self.buf_size {
                    let _ = b.try_reclaim(self.buf_size);
                }
                b
            }
            None => BytesMut::with_capacity(self.buf_size),
        }
    }

    /// Returns a buffer. Its bytes are discarded. Buffers that shrank below half the
    /// pool size (their start is shared with frames still in use) or grew far past it
    /// (a large frame was read into them) are freed instead of kept.
    pub fn put(&self, mut buf: BytesMut) {
        buf.clear();
        let cap = buf.capacity();
        if cap < self.buf_size / 2 || cap > self.buf_size * 4 {
            return;
        }
        let mut free = self.free.borrow_mut();
        if free.len() < self.max_free {
            free.push(buf);
        }
    }

    /// The core's large buffers, also handed to its sessions for chunked messages
    /// ([`MessageBuffers`]).
    pub fn large(&self) -> &Arc<LargeBuffers> {
        &self.large
    }

    /// See [`LargeBuffers::put`].
    pub fn put_large(&self, buf: BytesMut, size: usize) {
        self.large.put(buf, size);
    }

    /// See [`LargeBuffers::take`].
    pub fn take_large(&self, len: usize) -> Option<BytesMut> {
        self.large.take(len)
    }

    /// Large buffers kept.
    pub fn large_kept(&self) -> usize {
        self.large.kept()
    }

    /// Gives every kept large buffer back (when a session ends).
    pub fn release_large(&self) {
        self.large.release();
    }
}

/// The large buffers a core keeps: those large frames were received into in place, and
/// those of chunked messages (through [`MessageBuffers`]). `Sync` because the sessions'
/// configuration, which hands it to their reassemblers, is; only its core uses it, so
/// the lock is never contended.
#[derive(Debug, Default)]
pub struct LargeBuffers {
    inner: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    /// Kept buffers (oldest first): a frame or message split off one may still share
    /// it ([`LargeBuffers::take`]).
    bufs: Vec<KeptBuf>,
    bytes: usize,
}

#[derive(Debug)]
struct KeptBuf {
    buf: BytesMut,
    /// Capacity of the whole allocation.
    size: usize,
    /// `(address, n)`: the `n` bytes at `address` in this allocation are known to be
    /// initialised (a message's buffer was filled when handed out; `n` is 0 when
    /// unknown). An address, not a pointer, so that the store stays `Send`.
    init: (usize, usize),
}

impl LargeBuffers {
    fn lock(&self) -> MutexGuard<'_, Kept> {
        // Nothing in here panics while holding the lock; a poisoned one is still sound.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps a large buffer whose whole allocation is `size` bytes (a large frame was
    /// split off it and may still be in use), dropping the oldest kept ones past the
    /// bounds. Its bytes are discarded.
    pub fn put(&self, buf: BytesMut, size: usize) {
        self.keep(buf, size, (0, 0));
    }

    fn keep(&self, mut buf: BytesMut, size: usize, init: (usize, usize)) {
        buf.clear();
        if size > LARGE_KEPT_BYTES {
            return;
        }
        let mut k = self.lock();
        let mut bytes = k.bytes + size;
        while k.bufs.len() >= LARGE_KEPT || bytes > LARGE_KEPT_BYTES {
            bytes -= k.bufs.remove(0).size;
        }
        k.bufs.push(KeptBuf { buf, size, init });
        k.bytes = bytes;
    }

    /// A kept large buffer, empty, with room for `len` bytes but not more than twice
    /// that (so a small frame does not hold a huge buffer): one nothing shares any more.
    pub fn take(&self, len: usize) -> Option<BytesMut> {
        self.take_with_init(len).map(|(b, _)| b)
    }

    /// Like [`take`](Self::take), with what is known to be initialised in it.
    fn take_with_init(&self, len: usize) -> Option<(BytesMut, (usize, usize))> {
        let mut k = self.lock();
        let i = k.bufs.iter_mut().rposition(|kb| {
            (len..=len.saturating_mul(2)).contains(&kb.size) && kb.buf.try_reclaim(len)
        })?;
        let kb = k.bufs.remove(i);
        k.bytes -= kb.size;
        Some((kb.buf, kb.init))
    }

    /// Large buffers kept.
    pub fn kept(&self) -> usize {
        self.lock().bufs.len()
    }

    /// Gives every kept buffer back to the allocator (those still shared are freed by
    /// whoever holds them last).
    pub fn release(&self) {
        let mut k = self.lock();
        k.bufs.clear();
        k.bytes = 0;
    }
}

impl MessageBuffers for LargeBuffers {
    /// A kept buffer when one fits, else a fresh zeroed one (lazily mapped); the
    /// allocation is kept again at once, shared with the message, and comes back for
    /// the next message once this one's bytes are all dropped (sent, for an echo).
    ///
    /// A kept buffer is handed out with its old bytes where they are known to be
    /// initialised (the reassembler overwrites every byte before the message is seen):
    /// zeroing a reused 1 MiB buffer was 3.3% of the server's CPU time in the chunked
    /// 1 MiB echo (perf).
    fn take(&self, len: usize) -> BytesMut {
        let mut b = match self.take_with_init(len) {
            Some((mut b, (at, n))) if at == b.as_ptr() as usize && n >= len => {
                // SAFETY: `b` is empty, not shared (`try_reclaim` succeeded) and has room
                // for `len` bytes; the `n >= len` bytes at its start were initialised when
                // its allocation was last handed out from this address (below: resized
                // or zeroed to the message's length), and heap bytes once written stay
                // initialised.
                unsafe { b.set_len(len) };
                b
            }
            Some((mut b, _)) => {
                b.resize(len, 0);
                b
            }
            None => BytesMut::zeroed(len),
        };
        let size = b.capacity();
        let at = b.as_ptr() as usize;
        let message = b.split_to(len);
        self.keep(b, size, (at, len));
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preallocates_and_recycles() {
        let p = BufPool::new(1024, 4, 8);
        assert_eq!(p.available(), 4);
        let a = p.get();
        assert!(a.capacity() >= 1024);
        assert_eq!(p.available(), 3);
        let ptr = a.as_ptr();
        p.put(a);
        assert_eq!(p.available(), 4);
        let b = p.get();
        assert_eq!(b.as_ptr(), ptr, "the same allocation comes back");
        assert!(b.is_empty());
    }

    #[test]
    fn reclaims_after_split_frames_are_dropped() {
        let p = BufPool::new(1024, 0, 8);
        let mut b = p.get();
        b.extend_from_slice(&[1u8; 100]);
        let frame = b.split_to(100).freeze();
        p.put(b);
        drop(frame);
        let b = p.get();
        assert!(b.capacity() >= 1024, "capacity {}", b.capacity());
    }

    #[test]
    fn bounded_and_drops_odd_sizes() {
        let p = BufPool::new(1024, 0, 2);
        for _ in 0..5 {
            p.put(BytesMut::with_capacity(1024));
        }
        assert_eq!(p.available(), 2);
        let p = BufPool::new(1024, 0, 8);
        p.put(BytesMut::with_capacity(100));
        p.put(BytesMut::with_capacity(1 << 20));
        assert_eq!(p.available(), 0);
    }

    #[test]
    fn large_buffers_come_back_once_their_frame_is_dropped() {
        let p = BufPool::new(1024, 0, 8);
        let mut b = BytesMut::with_capacity(100_000);
        let size = b.capacity();
        b.extend_from_slice(&[7u8; 100_000]);
        let ptr = b.as_ptr();
        let frame = b.split_to(100_000).freeze();
        p.put_large(b, size);
        assert_eq!(p.large_kept(), 1);
        assert!(
            p.take_large(90_000).is_none(),
            "still shared with the frame"
        );
        assert!(
            p.take_large(40_000).is_none(),
            "more than twice what is needed"
        );
        drop(frame);
        let b = p.take_large(90_000).expect("reclaimed");
        assert!(b.is_empty() && b.capacity() >= 90_000);
        assert_eq!(b.as_ptr(), ptr, "the same allocation, not a new one");
        assert_eq!(p.large_kept(), 0);
    }

    #[test]
    fn large_buffers_are_bounded() {
        let p = BufPool::new(1024, 0, 8);
        for _ in 0..LARGE_KEPT + 3 {
            p.put_large(BytesMut::with_capacity(1000), 1000);
        }
        assert_eq!(p.large_kept(), LARGE_KEPT);
        p.put_large(BytesMut::new(), LARGE_KEPT_BYTES - 100);
        assert_eq!(p.large_kept(), 1, "the bytes bound drops the older ones");
        p.put_large(BytesMut::new(), LARGE_KEPT_BYTES + 1);
        assert_eq!(p.large_kept(), 1, "too large to keep");
        p.release_large();
        assert_eq!(p.large_kept(), 0);
    }

    #[test]
    fn message_buffers_are_reused_once_their_message_is_dropped() {
        let p = BufPool::new(1024, 0, 8);
        let large: &dyn MessageBuffers = &**p.large();
        let mut m = large.take(300_000);
        assert_eq!(m.len(), 300_000);
        assert!(m.iter().all(|&b| b == 0), "a fresh buffer is zeroed");
        m.fill(9);
        let ptr = m.as_ptr();
        let m = m.freeze();
        assert_eq!(p.large_kept(), 1, "kept at once, shared with the message");
        let other = large.take(300_000);
        assert_ne!(other.as_ptr(), ptr, "not while the message is in use");
        drop(other);
        let part = m.slice(1000..2000);
        drop(m);
        let busy = large.take(300_000);
        assert_ne!(busy.as_ptr(), ptr, "a slice still holds it");
        drop((busy, part));
        p.release_large();
        let again = large.take(300_000);
        let ptr = again.as_ptr();
        drop(again);
        let reused = large.take(300_000);
        assert_eq!(reused.as_ptr(), ptr, "the same allocation comes back");
        assert_eq!(reused.len(), 300_000);
        let smaller = {
            drop(reused);
            large.take(200_000)
        };
        assert_eq!(
            smaller.len(),
            200_000,
            "a kept buffer serves a smaller message"
        );
        drop(smaller);
        assert_eq!(
            large.take(700_000).len(),
            700_000,
            "and a larger one gets a new one"
        );
    }

    #[test]
    fn empty_pool_allocates() {
        let p = BufPool::new(512, 0, 0);
        assert!(p.get().capacity() >= 512);
        p.put(BytesMut::with_capacity(512));
        assert_eq!(p.available(), 0);
    }
}
