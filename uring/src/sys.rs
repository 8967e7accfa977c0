//! Ring setup and submission shared by every ring built here.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use io_uring7::IoUring;

/// Ring setup flags, as measured in `bench-results/runtime.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// No flags.
    Plain,
    /// `COOP_TASKRUN | TASKRUN_FLAG`: no inter-processor interrupt per completion.
    Coop,
    /// Coop plus `SINGLE_ISSUER | DEFER_TASKRUN`: completion work runs only when the
    /// owning thread enters the ring asking for events (the ring must then only be used
    /// from the thread that created it).
    Defer,
}

/// Builds a ring of `entries` submission entries and `cq_entries` completion entries.
pub fn build(entries: u32, cq_entries: u32, setup: Setup) -> io::Result<IoUring> {
    let mut b = IoUring::builder();
    b.setup_cqsize(cq_entries);
    match setup {
        Setup::Plain => {}
        Setup::Coop => {
            b.setup_coop_taskrun().setup_taskrun_flag();
        }
        Setup::Defer => {
            b.setup_coop_taskrun()
                .setup_taskrun_flag()
                .setup_single_issuer()
                .setup_defer_taskrun();
        }
    }
    b.build(entries)
}

/// Hands pending submissions to the kernel. With `Setup::Defer` it asks for events too:
/// deferred completion work only runs in an enter that does.
pub fn submit(ring: &mut IoUring, setup: Setup) -> io::Result<usize> {
    if setup == Setup::Defer {
        let n = ring.submission().len() as u32;
        // SAFETY: io_uring_enter with no extra argument (no sigset, no timeout).
        unsafe {
            ring.submitter().enter::<libc::sigset_t>(
                n,
                0,
                io_uring7::EnterFlags::GETEVENTS.bits(),
                None,
            )
        }
    } else {
        ring.submit()
    }
}

/// A non-blocking eventfd (register it with the ring; poll it on monoio).
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
