//! A provided-buffer ring (IORING_REGISTER_PBUF_RING): `count` buffers of `size` bytes
//! that the kernel picks from only when data arrives, so a pending buffer-select receive
//! holds no buffer.
//!
//! Hand-written on the `io-uring` crate, which exposes the registration and the entry
//! layout but no ring type of its own (monoio 0.2.4 has none at all).

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring7::types::BufRingEntry;
use io_uring7::Submitter;

const PAGE: usize = 4096;

/// A registered provided-buffer ring. Not `Send`: it belongs to its core's ring.
#[derive(Debug)]
pub struct BufRing {
    entries: NonNull<BufRingEntry>,
    entries_layout: Layout,
    mem: NonNull<u8>,
    mem_layout: Layout,
    count: u16,
    size: u32,
    bgid: u16,
    /// Our copy of the tail; published to the kernel by [`commit`](Self::commit).
    tail: u16,
    /// Buffers handed to the kernel and not yet returned by a completion.
    in_kernel: u32,
    registered: bool,
}

impl BufRing {
    /// Allocates `count` (a power of two, at most 32768) buffers of `size` bytes, and
    /// registers them as group `bgid` with the ring behind `submitter`. Every buffer
    /// starts in the ring.
    pub fn new(submitter: &Submitter<'_>, count: u16, size: u32, bgid: u16) -> io::Result<Self> {
        if !count.is_power_of_two() || count > 32768 || size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two up to 32768, size > 0",
            ));
        }
        let entries_layout =
            Layout::from_size_align(std::mem::size_of::<BufRingEntry>() * count as usize, PAGE)
                .map_err(io::Error::other)?;
        let mem_layout = Layout::from_size_align(size as usize * count as usize, PAGE)
            .map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size (count ≥ 1, size ≥ 1).
        let (entries, mem) = unsafe {
            (
                alloc::alloc_zeroed(entries_layout),
                alloc::alloc(mem_layout),
            )
        };
        let (Some(entries), Some(mem)) = (NonNull::new(entries.cast()), NonNull::new(mem)) else {
            alloc::handle_alloc_error(entries_layout);
        };
        // Touch every page now: the ring is a fixed cost paid at start, not memory that
        // appears to grow with the sessions as the kernel first writes into each buffer.
        // SAFETY: `mem` is a fresh allocation of `mem_layout.size()` bytes.
        unsafe { std::ptr::write_bytes(mem.as_ptr(), 0, mem_layout.size()) };
        let mut ring = Self {
            entries,
            entries_layout,
            mem,
            mem_layout,
            count,
            size,
            bgid,
            tail: 0,
            in_kernel: 0,
            registered: false,
        };
        // SAFETY: `entries` is page-aligned memory for `count` entries that lives until
        // `Drop`, which unregisters first (or the ring is gone by then: see `Drop`).
        unsafe {
            submitter.register_buf_ring_with_flags(entries.as_ptr() as u64, count, bgid, 0)?;
        }
        ring.registered = true;
        for bid in 0..count {
            ring.push(bid);
        }
        ring.commit();
        Ok(ring)
    }

    /// The buffer group id to put in buffer-select operations.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Bytes per buffer.
    pub fn buf_size(&self) -> u32 {
        self.size
    }

    /// Buffers in the ring.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Buffers the kernel gave to completions and that were not returned yet.
    pub fn out(&self) -> u32 {
        self.in_kernel
    }

    /// Records that a completion took buffer `bid` (call once per completion carrying one).
    pub fn taken(&mut self, bid: u16) {
        debug_assert!(bid < self.count);
        self.in_kernel += 1;
    }

    /// The first `len` bytes of buffer `bid`, as a completion filled them.
    pub fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.count && len <= self.size as usize);
        // SAFETY: in bounds (checked); the kernel wrote these bytes before posting the
        // completion that handed `bid` out, and it does not touch the buffer again until
        // it is pushed back.
        unsafe {
            std::slice::from_raw_parts(
                self.mem.as_ptr().add(bid as usize * self.size as usize),
                len,
            )
        }
    }

    /// Gives buffer `bid` back (visible to the kernel after [`commit`](Self::commit)).
    pub fn recycle(&mut self, bid: u16) {
        debug_assert!(self.in_kernel > 0);
        self.in_kernel = self.in_kernel.saturating_sub(1);
        self.push(bid);
    }

    fn push(&mut self, bid: u16) {
        let mask = self.count - 1;
        let idx = (self.tail & mask) as usize;
        // SAFETY: idx < count, so the entry is within the allocation; the kernel reads
        // only entries between its head and the published tail, and this one is past it.
        unsafe {
            let e = &mut *self.entries.as_ptr().add(idx);
            e.set_addr(self.mem.as_ptr().add(bid as usize * self.size as usize) as u64);
            e.set_len(self.size);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes every buffer pushed since the last commit.
    pub fn commit(&mut self) {
        // SAFETY: the tail field overlays the first entry's reserved field; the kernel
        // reads it with an acquire load, so a release store orders the entries before it.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// Unregisters the group (before the ring's other resources go away).
    pub fn unregister(&mut self, submitter: &Submitter<'_>) {
        if self.registered {
            let _ = submitter.unregister_buf_ring(self.bgid);
            self.registered = false;
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // Still registered means the owner did not unregister: the io_uring instance is
        // then being torn down with it and may still read the entries or write the
        // buffers, so leak the memory rather than free it under the kernel.
        if self.registered {
            return;
        }
        // SAFETY: allocated in `new` with these layouts, unregistered, not used again.
        unsafe {
            alloc::dealloc(self.entries.as_ptr().cast(), self.entries_layout);
            alloc::dealloc(self.mem.as_ptr(), self.mem_layout);
        }
    }
}
