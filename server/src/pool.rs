//! Per-core pool of read buffers.
//!
//! monoio 0.2.4 has no registered (fixed) buffers and no provided-buffer rings, so reads
//! use owned buffers passed to the kernel and handed back on completion. An idle session
//! holds none: it waits for readability without a buffer, takes one from this pool for
//! the read, and gives it back as soon as its deframer holds no partial frame. Buffers
//! are allocated up front; the pool only grows past that under load, and keeps at most
//! `max_free` spare ones.

use std::cell::RefCell;

use bytes::BytesMut;

/// A pool of equally sized receive buffers, for one core (not `Sync`).
#[derive(Debug)]
pub struct BufPool {
    free: RefCell<Vec<BytesMut>>,
    buf_size: usize,
    max_free: usize,
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
    fn empty_pool_allocates() {
        let p = BufPool::new(512, 0, 0);
        assert!(p.get().capacity() >= 512);
        p.put(BytesMut::with_capacity(512));
        assert_eq!(p.available(), 0);
    }
}
