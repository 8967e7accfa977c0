//! Lame-duck drain (SIGUSR2 or `POST /drain` on the admin endpoint).
//!
//! `/readyz` turns 503 as the drain is requested (see `Shared::request_drain`); then each
//! core closes its listeners and sends its sessions `disconnect` "Server draining" one
//! after the other, spread evenly over `--drain-period`, so that clients reconnect
//! elsewhere gradually instead of all at once. Once every session was told, the core
//! stops as in a graceful shutdown (waiting up to `--shutdown-grace` for the last ones),
//! and the process exits 0.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::conn::WAKE_DRAIN;
use crate::worker::Worker;

/// When the `i`th of `n` sessions is told, `period` after `start` for the whole lot.
pub(crate) fn slot(start: Instant, period: Duration, i: usize, n: usize) -> Instant {
    if n == 0 {
        return start;
    }
    start + period.mul_f64(i as f64 / n as f64)
}

/// The drain of one core; runs as a task on that core.
pub(crate) async fn run(core: Rc<Worker>) {
    core.stop_accepting();
    let period = core.config().drain_period;
    let conns = core.conns_snapshot();
    let n = conns.len();
    tracing::info!(core = core.index, sessions = n, period = ?period, "draining");
    let start = Instant::now();
    for (i, conn) in conns.iter().enumerate() {
        let at = slot(start, period, i, n);
        monoio::time::sleep_until(monoio::time::Instant::from_std(at)).await;
        conn.wake(WAKE_DRAIN);
    }
    drop(conns);
    let grace = core.config().shutdown_grace;
    core.wait_empty(Instant::now() + grace).await;
    core.drain_done.set(true);
    core.wake_control();
}

/// True once this core's drain has told every session.
pub(crate) fn finished(core: &Worker) -> bool {
    core.drain_done.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_spread_over_the_period() {
        let t0 = Instant::now();
        let p = Duration::from_secs(10);
        assert_eq!(slot(t0, p, 0, 4), t0);
        assert_eq!(slot(t0, p, 1, 4), t0 + Duration::from_millis(2500));
        assert_eq!(slot(t0, p, 3, 4), t0 + Duration::from_millis(7500));
        assert_eq!(slot(t0, p, 0, 0), t0);
    }
}
