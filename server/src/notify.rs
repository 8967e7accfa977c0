//! systemd's notification protocol (`sd_notify`, through the `sd-notify` crate):
//! `READY=1` once every listener accepts, `RELOADING=1` … `READY=1` around a SIGHUP
//! reload, `STOPPING=1` when a drain or shutdown starts, and `WATCHDOG=1` at half the
//! `WATCHDOG_USEC` period while every core's runtime still answers.
//!
//! Without `NOTIFY_SOCKET` every call is a no-op, so the server behaves the same outside
//! systemd.

use std::io;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use sd_notify::NotifyState;

use crate::server::ShutdownHandle;

fn send(states: &[NotifyState<'_>]) {
    // Never unset NOTIFY_SOCKET: we notify again later (reload, stop).
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// `READY=1` with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` (with `MONOTONIC_USEC`, which systemd ≥ 253 requires for
/// `Type=notify-reload`).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// `STOPPING=1` with a status line.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// The watchdog period asked for by the service manager, if any.
///
/// Read by hand rather than with `sd_notify::watchdog_enabled`, which requires
/// `WATCHDOG_PID`: sd_watchdog_enabled(3) enables the watchdog when `WATCHDOG_PID` is
/// absent, and only a present, different PID means "not for this process".
pub fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// Starts the watchdog thread when `WATCHDOG_USEC` asks for one: every half period it
/// pokes every core and sends `WATCHDOG=1` only if each core answered the previous poke,
/// so a wedged runtime makes systemd restart the service. Stops when the server shuts
/// down.
pub fn spawn_watchdog(handle: ShutdownHandle) -> io::Result<Option<JoinHandle<()>>> {
    let Some(period) = watchdog_period() else {
        return Ok(None);
    };
    let every = period / 2;
    tracing::info!(period = ?period, "systemd watchdog enabled");
    thread::Builder::new()
        .name("sockchat-watchdog".into())
        .spawn(move || {
            let mut last = handle.core_liveness();
            handle.poke_cores();
            while !handle.wait_stopped(every) {
                let now = handle.core_liveness();
                let stuck: Vec<usize> = now
                    .iter()
                    .zip(&last)
                    .enumerate()
                    .filter(|(_, (n, l))| n <= l)
                    .map(|(i, _)| i)
                    .collect();
                if stuck.is_empty() {
                    send(&[NotifyState::Watchdog]);
                } else {
                    tracing::error!(?stuck, "cores did not answer: withholding WATCHDOG=1");
                }
                last = now;
                handle.poke_cores();
            }
        })
        .map(Some)
}
