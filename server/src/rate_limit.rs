//! `--max-messages-per-sec`: the server side of the per-session message rate.
//!
//! The rule (a GCRA token bucket) is `sockchat_proto::TokenBucket`; here is what the
//! server does about it. Each message handled takes a token; when the bucket is empty
//! the connection *stops reading* until a token is back: frames already buffered wait in
//! the session's receive buffer (at most one read's worth), new bytes wait in the
//! kernel, and once the socket buffers are full TCP slows the sender down. Nothing is
//! buffered or dropped on the sender's behalf, and no other session notices.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::Instant;

use sockchat_proto::TokenBucket;

use crate::conn::{Conn, ConnState};
use crate::stats::CoreStats;
use crate::worker::Worker;

/// A session's bucket and whether its reading is paused.
#[derive(Debug)]
pub(crate) struct RateState {
    bucket: TokenBucket,
    paused_until: Option<Instant>,
}

impl RateState {
    /// The state for a new session, when a rate is configured.
    pub(crate) fn for_config(core: &Worker) -> Option<Box<RateState>> {
        core.config().rate_limit.map(|r| {
            Box::new(RateState {
                bucket: TokenBucket::new(r.per_sec, r.burst),
                paused_until: None,
            })
        })
    }
}

/// A message was handled: takes its token, and pauses reading if the bucket is empty.
pub(crate) fn on_message(st: &mut ConnState, stats: &CoreStats) {
    if let Some(r) = st.rate.as_mut() {
        if let Some(until) = r.bucket.take(Instant::now()) {
            if r.paused_until.is_none() {
                CoreStats::add(&stats.rate_limited, 1);
            }
            r.paused_until = Some(until);
        }
    }
}

/// When reading is paused until.
pub(crate) fn paused_until(st: &ConnState) -> Option<Instant> {
    st.rate.as_ref().and_then(|r| r.paused_until)
}

/// Waits until the bucket has a token again (or another task wakes the connection),
/// then handles the input that was left buffered when it paused.
pub(crate) async fn pause(core: &Worker, conn: &Conn, until: Instant) {
    let sleep = monoio::time::sleep_until(monoio::time::Instant::from_std(until));
    let mut sleep = pin!(sleep);
    let resumed = poll_fn(|cx| {
        if conn.has_wake_flags() {
            return Poll::Ready(false);
        }
        conn.register_waker(cx.waker());
        sleep.as_mut().poll(cx).map(|()| true)
    })
    .await;
    if !resumed {
        return;
    }
    let mut st = conn.state.borrow_mut();
    if let Some(r) = st.rate.as_mut() {
        r.paused_until = None;
    }
    let now = Instant::now();
    while paused_until(&st).is_none() && st.proto.handle_input_until_event(now) {
        core.process(conn, &mut st);
    }
}
