//! Sends through the core's data ring, driven from wherever output appears: the ring task
//! after it fed a session its input, a chat delivery from another session or core, the
//! session's own task (closing, shutdown). Everything queued for a session goes out in
//! one vectored `sendmsg` on the ring, submitted with the core's other ring work; the
//! send's completion ([`on_sent`], called by the ring task) sends what a partial send left
//! and whatever was queued meanwhile. So under steady load no session task is woken at
//! all: monoio's run queue empties every round and its park (timers, cross-thread wakes)
//! keeps running. The session's task is woken only when the session closed or its send
//! failed.
//!
//! One send per session at a time keeps the order. While a send waits in the kernel for
//! room, input keeps being handled (the ring task feeds it), so a client that sends
//! without reading keeps its input handled and its queue grows until the send queue limit
//! closes it as a slow consumer; a send with no progress for the session timeout closes it
//! too (`Worker::on_timer`).

use std::io;
use std::time::Instant;

use bytes::Bytes;
use sockchat_proto::CloseReason;
use sockchat_uring::MAX_IOV;

use crate::conn::{Conn, WAKE_INPUT};
use crate::worker::Worker;

/// Hands everything queued for `conn` to the ring, unless a send of it is already in
/// flight (its completion continues) or the session can send no more. Never blocks.
pub(crate) fn flush(core: &Worker, conn: &Conn) {
    if conn.send_over.get() || core.ring.sending(conn) {
        return;
    }
    let mut held = conn.unsent.borrow_mut();
    // The core's scratch vector when nothing was held back: a send then allocates no
    // vector (the ring takes the parts into a pooled one).
    let mut scratch = core.send_scratch.borrow_mut();
    let pending: &mut Vec<Bytes> = if held.is_empty() {
        // Output appears while the session's state is borrowed only inside `process`,
        // whose caller flushes afterwards.
        let Ok(mut st) = conn.state.try_borrow_mut() else {
            return;
        };
        scratch.clear();
        st.proto.poll_transmit(&mut scratch);
        scratch.retain(|p| !p.is_empty());
        if scratch.is_empty() {
            conn.inflight.set(0);
            conn.write_since.set(None);
            // An idle session keeps no output buffers (what an idle session costs).
            st.proto.shrink_idle();
            // ops hook: the send queue shrank (memory budget, send_queue_bytes gauge).
            core.charge(conn, &st);
            return;
        }
        &mut scratch
    } else {
        &mut held
    };
    let total = pending.iter().map(Bytes::len).sum();
    let rest = if pending.len() > MAX_IOV {
        pending.split_off(MAX_IOV)
    } else {
        Vec::new()
    };
    conn.inflight.set(total);
    if conn.write_since.get().is_none() {
        conn.write_since.set(Some(Instant::now()));
    }
    core.ring.send(conn, pending);
    drop(scratch);
    *held = rest;
}

/// True when nothing of `conn`'s output waits: none queued in the session, none held
/// back, no send in flight (or no more can be sent).
pub(crate) fn is_idle(core: &Worker, conn: &Conn) -> bool {
    if conn.send_over.get() {
        return true;
    }
    !core.ring.sending(conn)
        && conn.unsent.borrow().is_empty()
        && conn
            .state
            .try_borrow()
            .is_ok_and(|st| st.proto.queued_bytes() == 0)
}

/// The final completion of `conn`'s send: `result` is what it sent (or the error),
/// `unsent` the parts it did not send. Continues with those and whatever was queued
/// meanwhile; on an error the session closes with it.
pub(crate) fn on_sent(core: &Worker, conn: &Conn, result: io::Result<usize>, unsent: Vec<Bytes>) {
    if conn.send_over.get() {
        // Cancelled at the session's end (`data_ring::end_io` waits for this).
        conn.wake(0);
        return;
    }
    if !unsent.is_empty() {
        let mut held = conn.unsent.borrow_mut();
        let rest = std::mem::replace(&mut *held, unsent);
        held.extend(rest);
    }
    match result {
        Ok(n) => {
            core.count_bytes_out(n);
            if let Ok(mut st) = conn.state.try_borrow_mut() {
                st.info.bytes_out += n as u64;
            }
            if !conn.unsent.borrow().is_empty() {
                // A partial send: the socket is full. The send that follows waits in the
                // kernel for room; no progress for the session timeout closes.
                let now = Instant::now();
                if n > 0 {
                    conn.write_since.set(Some(now));
                }
                let since = conn.write_since.get().unwrap_or(now);
                core.schedule(conn, since + core.config().session_timeout);
            }
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) => {}
        Err(e) => {
            fail(core, conn, CloseReason::Io(e.kind()));
            return;
        }
    }
    flush(core, conn);
    if is_idle(core, conn) && conn.state.try_borrow().is_ok_and(|st| st.proto.is_closed()) {
        // The last frames are out: the session's task lingers or ends it.
        conn.wake(0);
    }
}

/// The socket failed: nothing more is sent, the session closes with `reason` (its task
/// ends it without lingering).
fn fail(core: &Worker, conn: &Conn, reason: CloseReason) {
    conn.send_over.set(true);
    conn.unsent.borrow_mut().clear();
    conn.inflight.set(0);
    conn.write_since.set(None);
    if let Ok(mut st) = conn.state.try_borrow_mut() {
        st.proto.close(reason);
        core.process(conn, &mut st);
        core.charge(conn, &st);
    }
    conn.wake(WAKE_INPUT);
}
