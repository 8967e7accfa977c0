//! How the server asks glibc's allocator to hand large buffers back to the kernel.
//!
//! A session may hold a large frame's buffer (up to 10 MiB) or a chunked message's (up
//! to `--max-message`) for a while; when it is freed, that memory should leave the
//! process. glibc's default does not ensure it: its mmap threshold is *dynamic*, raised
//! to the size of the largest mmapped block freed so far (up to 32 MiB), and its trim
//! threshold to twice that. After the first 4 MiB message is freed, the next one comes
//! from a worker thread's arena heap, and freeing it leaves the pages resident in that
//! heap's free top (below the raised trim threshold). `malloc_trim(0)` does not help:
//! it only trims the top of the main arena, and the workers allocate in their own.
//!
//! `hostile_chunks::chunked_message_that_never_finishes` showed it: the server's own
//! allocations (`mallinfo2().uordblks`) stayed at 1.25 MiB after every round's close,
//! while the worker's arena heap grew to 6 MiB, 4.9 MiB of it free and up to 5 MiB of
//! that resident, a little more each round as the layout shifted; with the threshold
//! fixed (`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072`) the residual after each
//! close fell from 3.7–4.7 MiB to under 0.1 MiB.
//!
//! So the server fixes the threshold at glibc's own default. Setting it turns the
//! dynamic adjustment off: every block of 128 KiB or more (a large frame's buffer, a
//! chunked message, a chunk frame) is its own mapping, unmapped when freed, and the
//! trim threshold stays at its 128 KiB default. The price is that such buffers are
//! faulted in afresh each time (bench-results/runtime.md has the measurement).

/// Blocks of this size or more are mapped on their own and unmapped when freed
/// (glibc's default, fixed so that it no longer rises).
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`] (see the module doc). Call it
/// once at start, before the worker threads exist. Returns false when the allocator
/// refused the setting; a no-op returning true where the C library is not glibc.
pub fn release_large_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes the allocator's parameters (under its own lock);
        // the value is a valid threshold (at most HEAP_MAX_SIZE / 2).
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        true
    }
}
