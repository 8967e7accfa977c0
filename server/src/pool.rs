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
//! what a closed session held must not stay resident).

use std::cell::{Cell, RefCell};

use bytes::BytesMut;

/// Most large buffers kept per core.
pub const LARGE_KEPT: usize = 8;
/// Most bytes of large buffers kept per core.
pub const LARGE_KEPT_BYTES: usize = 16 << 20;

/// A pool of equally sized receive buffers, for one core (not `Sync`).
#[derive(Debug)]
pub struct BufPool {
    free: RefCell<Vec<BytesMut>>,
    buf_size: usize,
    max_free: usize,
    /// Large buffers kept (oldest first), each with the capacity it had when kept: a
    /// frame split off it may still share it ([`take_large`](Self::take_large)).
    large: RefCell<Vec<(BytesMut, usize)>>,
    large_bytes: Cell<usize>,
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
            large: RefCell::new(Vec::new()),
            large_bytes: Cell::new(0),
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

    /// Keeps a large buffer whose whole allocation is `size` bytes (a large frame was
    /// received into it; the frame, split off it, may still be in use), dropping the
    /// oldest kept ones past the bounds. Its bytes are discarded.
    pub fn put_large(&self, mut buf: BytesMut, size: usize) {
        buf.clear();
        if size > LARGE_KEPT_BYTES {
            return;
        }
        let mut large = self.large.borrow_mut();
        let mut bytes = self.large_bytes.get() + size;
        while large.len() >= LARGE_KEPT || bytes > LARGE_KEPT_BYTES {
            let (_, s) = large.remove(0);
            bytes -= s;
        }
        large.push((buf, size));
        self.large_bytes.set(bytes);
    }

    /// A kept large buffer, empty, with room for `len` bytes but not more than twice
    /// that (so a small frame does not hold a huge buffer): one no frame shares any more.
    pub fn take_large(&self, len: usize) -> Option<BytesMut> {
        let mut large = self.large.borrow_mut();
        let i = large.iter_mut().rposition(|(b, size)| {
            (len..=len.saturating_mul(2)).contains(size) && b.try_reclaim(len)
        })?;
        let (b, size) = large.remove(i);
        self.large_bytes.set(self.large_bytes.get() - size);
        Some(b)
    }

    /// Large buffers kept.
    pub fn large_kept(&self) -> usize {
        self.large.borrow().len()
    }

    /// Gives every kept large buffer back (when a session ends).
    pub fn release_large(&self) {
        self.large.borrow_mut().clear();
        self.large_bytes.set(0);
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
    fn empty_pool_allocates() {
        let p = BufPool::new(512, 0, 0);
        assert!(p.get().capacity() >= 512);
        p.put(BytesMut::with_capacity(512));
        assert_eq!(p.available(), 0);
    }
}
