//! Signals: SIGINT and SIGTERM are blocked in every thread and taken by one thread with
//! `sigwait`, which starts the graceful shutdown; a second SIGINT exits at once (after
//! removing the Unix socket files).

use std::io;
use std::thread::{self, JoinHandle};

use crate::server::ShutdownHandle;

/// Exit status of the immediate exit on a second SIGINT.
pub const EXIT_SECOND_SIGINT: i32 = 130;

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread and every thread it spawns later.
/// Call first thing in `main`, before any thread exists.
pub fn block_signals() -> io::Result<()> {
    let set = signal_set();
    // SAFETY: valid set; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Starts the thread that waits for the signals (they must be blocked already).
pub fn spawn_signal_thread(handle: ShutdownHandle) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("sockchat-signals".into())
        .spawn(move || {
            let set = signal_set();
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: valid set and output pointer.
                let rc = unsafe { libc::sigwait(&set, &mut sig) };
                if rc != 0 {
                    tracing::error!(error = %io::Error::from_raw_os_error(rc), "sigwait failed");
                    return;
                }
                let name = if sig == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                if !handle.is_shutting_down() {
                    tracing::info!(
                        signal = name,
                        "shutting down (SIGINT again to exit at once)"
                    );
                    handle.shutdown();
                } else if sig == libc::SIGINT {
                    tracing::warn!("second SIGINT: exiting now");
                    handle.remove_socket_files();
                    std::process::exit(EXIT_SECOND_SIGINT);
                } else {
                    tracing::info!(signal = name, "already shutting down");
                }
            }
        })
}
