//! The core's one timer task and what a session's deadline does when it fires (the
//! session's own timeouts, a send stalled in the kernel). The deadline table itself is
//! `crate::timer`; this is the part that needs the core.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::Worker;
use crate::conn::{WAKE_ABORT, WAKE_OUTPUT};

impl Worker {
    fn on_timer(&self, id: u64, now: Instant) {
        let Some(conn) = self.conns.borrow().get(&id).cloned() else {
            return;
        };
        conn.timer_at.set(None);
        // A send waiting in the kernel for room: the peer must take our bytes within the
        // session timeout. Input keeps being handled meanwhile (the data ring reads while
        // a send waits), so the session's own timers run as well.
        let mut stall = None;
        if let Some(since) = conn.write_since.get() {
            let at = since + self.config().session_timeout;
            if at <= now {
                tracing::debug!(session = %conn.state.borrow().info.id, "write made no progress");
                conn.wake(WAKE_ABORT);
                return;
            }
            stall = Some(at);
        }
        let next = match conn.state.try_borrow_mut() {
            Ok(mut st) => {
                let was_closed = st.proto.is_closed();
                st.proto.handle_timeout(now);
                if !was_closed && st.proto.is_closed() {
                    drop(st);
                    conn.wake(WAKE_OUTPUT);
                    None
                } else {
                    st.proto.poll_timeout()
                }
            }
            Err(_) => None,
        };
        let next = match (next, stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(t) = next {
            self.schedule(&conn, t.max(now));
        }
    }
}

/// The core's one timer task: sleeps until the earliest deadline of any session.
pub(super) async fn timer_task(core: Rc<Worker>) {
    let mut expired = Vec::new();
    loop {
        let next = core.timers.next();
        let until = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let sleep = monoio::time::sleep_until(monoio::time::Instant::from_std(until));
        let mut sleep = pin!(sleep);
        poll_fn(|cx| {
            if core.timers.park(next, cx.waker()) {
                return Poll::Ready(());
            }
            sleep.as_mut().poll(cx)
        })
        .await;
        let now = Instant::now();
        core.timers.pop_expired(now, &mut expired);
        for id in expired.drain(..) {
            core.on_timer(id, now);
        }
    }
}
