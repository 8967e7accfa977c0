//! Signals: SIGINT, SIGTERM, SIGHUP and SIGUSR2 are blocked in every thread and taken by
//! one thread with `sigwait`.
//!
//! * SIGINT / SIGTERM: graceful shutdown; a second SIGINT exits at once (after removing
//!   the Unix socket files).
//! * SIGUSR2: lame-duck drain (see [`ShutdownHandle::drain`]).
//! * SIGHUP: the reload action given to [`spawn_signal_thread_with`] (the binary re-reads
//!   its config and key files).

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
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        set
    }
}

/// Blocks SIGINT, SIGTERM, SIGHUP and SIGUSR2 in the calling thread and every thread it
/// spawns later. Call first thing in `main`, before any thread exists.
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

/// Starts the thread that waits for the signals (they must be blocked already); SIGHUP
/// has nothing to reload.
pub fn spawn_signal_thread(handle: ShutdownHandle) -> io::Result<JoinHandle<()>> {
    spawn_signal_thread_with(handle, || {
        tracing::info!("SIGHUP: nothing to reload in this program");
    })
}

/// Starts the thread that waits for the signals; `on_reload` runs on it for each SIGHUP.
pub fn spawn_signal_thread_with(
    handle: ShutdownHandle,
    on_reload: impl Fn() + Send + 'static,
) -> io::Result<JoinHandle<()>> {
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
                match sig {
                    libc::SIGHUP => on_reload(),
                    libc::SIGUSR2 => {
                        if handle.drain() {
                            tracing::info!(signal = "SIGUSR2", "draining");
                        } else {
                            tracing::info!(signal = "SIGUSR2", "not serving: no drain");
                        }
                    }
                    _ => on_stop(&handle, sig),
                }
            }
        })
}

fn on_stop(handle: &ShutdownHandle, sig: libc::c_int) {
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
