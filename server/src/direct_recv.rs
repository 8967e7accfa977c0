//! Large frames received in place (issue 10, point 4). Small frames arrive through the
//! core's provided-buffer ring and are copied once into the session's receive buffer.
//! Once a frame's fixed header is in, the deframer has reserved the whole frame's buffer
//! (limits and the memory budget checked first); if at least [`MIN_DIRECT`] bytes of it
//! are still due, the session's ring receive is stopped and the rest is received with
//! single receives straight into that buffer's spare capacity, each bounded by what the
//! frame still needs, so the next frame's bytes go back through the ring.
//!
//! What is copied is only what reached ring buffers before the session saw the header.
//! The ring receive is limited so that this stays small: right after a large frame it
//! takes one buffer (so a run of large frames copies at most one ring buffer each),
//! otherwise `data_ring::RECV_LIMIT` bytes.
//!
//! A large `chunk` frame goes one step further: its content is received straight into
//! its slot in the message's buffer (`ServerSession::receive_chunk_in_place`), so a
//! chunked message is not copied from frame buffers into the message either. The
//! session checks the chunk's head first (only a chunk it would accept is received this
//! way) and its CRC and HMAC once the slot comes back; the part of the content that had
//! reached ring buffers is copied into the slot (counted in `bytes_copied`).
//!
//! The buffer belongs to the ring while a receive is in the kernel
//! ([`sockchat_uring::DataRing::recv_into`]); cancelling it (the session ending) hands it
//! back with whatever it received. Meanwhile its capacity stays charged to the memory
//! budget (`Conn::lent_input`).

use std::cell::RefMut;
use std::io;
use std::time::Instant;

use bytes::BytesMut;
use sockchat_proto::deframer::SMALL_FRAME;
use sockchat_proto::CloseReason;

use crate::conn::{Conn, ConnState, Proto, WAKE_INPUT};
use crate::data_ring::{self, RecvState};
use crate::stats::CoreStats;
use crate::worker::Worker;

/// Least rest of a frame worth a receive of its own (four default ring buffers): below
/// it, stopping and re-arming the ring receive costs more than the copies saved.
const MIN_DIRECT: usize = 16 * 1024;

/// True when the session holds the start of a frame whose rest (at least
/// [`MIN_DIRECT`] bytes) fits its buffer's reserved capacity: receive it in place.
pub(crate) fn wanted(st: &mut ConnState) -> bool {
    let Some(len) = st.proto.pending_frame_len() else {
        return false;
    };
    let b = st.proto.take_buffer();
    let fits = len.saturating_sub(b.len()) >= MIN_DIRECT && b.capacity() >= len;
    st.proto.put_buffer(b);
    fits
}

/// Moves `conn` from its ring receive to receiving in place: at once if no receive is
/// running, else once the stopped receive has ended (its data, already in this batch,
/// is fed first; the ring task then calls [`start`]).
pub(crate) fn switch(core: &Worker, conn: &Conn) {
    match conn.recv.get() {
        RecvState::Off => {}
        RecvState::Armed => {
            core.ring.stop_recv(conn);
            if conn.recv.get() != RecvState::Off {
                conn.direct_next.set(true);
                return;
            }
        }
        RecvState::Cancelling => {
            conn.direct_next.set(true);
            return;
        }
        RecvState::Eof | RecvState::Direct => return,
    }
    if !start(core, conn) {
        core.ring.start_recv(conn, conn.fd);
    }
}

/// Starts a receive into the session's buffer for the rest of its pending frame. False
/// (nothing started) when the session is ending or closed, or no longer needs one.
pub(crate) fn start(core: &Worker, conn: &Conn) -> bool {
    if conn.send_over.get() || conn.recv.get() != RecvState::Off {
        return false;
    }
    let mut st = conn.state.borrow_mut();
    if st.proto.is_closed() {
        return false;
    }
    let Some(len) = st.proto.pending_frame_len() else {
        return false;
    };
    if let Proto::Frame(session) = &mut st.proto {
        if let Some(slot) = session.receive_chunk_in_place(Instant::now()) {
            start_slot(core, conn, st, slot);
            return true;
        }
    }
    let mut b = st.proto.take_buffer();
    let need = len.saturating_sub(b.len());
    if need == 0 || b.capacity() < len {
        st.proto.put_buffer(b);
        return false;
    }
    drop(st);
    if conn.large_input.get() == 0 {
        // The deframer's fresh reservation is untouched past what was copied into it:
        // use a large buffer the core kept instead, whose pages are already in (pool.rs).
        if let Some(mut kept) = core.pool.take_large(len) {
            kept.extend_from_slice(&b);
            b = kept;
        }
        // u32 keeps an idle session's `Conn` small; a frame buffer is far below 4 GiB
        // (saturated otherwise: too large to keep).
        conn.large_input
            .set(u32::try_from(b.capacity()).unwrap_or(u32::MAX));
    }
    // Charged like the session's own large-frame buffer (`Worker::charge`).
    let cap = b.capacity();
    let lent = if cap > SMALL_FRAME { cap } else { 0 };
    conn.lent_input.set(u32::try_from(lent).unwrap_or(u32::MAX));
    core.ring.recv_into(conn, b, need);
    conn.recv.set(RecvState::Direct);
    conn.recv_one.set(true);
    true
}

/// Receives the rest of a chunk's content into its slot in the message's buffer (lent
/// by the session, holding what the session had buffered of it). The session's receive
/// buffer, now empty, goes back to the pool meanwhile.
fn start_slot(core: &Worker, conn: &Conn, mut st: RefMut<'_, ConnState>, slot: BytesMut) {
    // Those bytes were copied from a ring buffer already; now once more.
    CoreStats::add(&core.stats().bytes_copied, slot.len() as u64);
    let b = st.proto.take_buffer();
    match conn.large_input.take() {
        0 => core.pool.put(b),
        size => core.pool.put_large(b, size as usize),
    }
    // ops hook: the message's buffer is charged as the session's reassembly bytes.
    core.charge(conn, &st);
    drop(st);
    let need = slot.capacity() - slot.len();
    conn.in_slot.set(true);
    core.ring.recv_into(conn, slot, need);
    conn.recv.set(RecvState::Direct);
    conn.recv_one.set(true);
}

/// The final completion of `conn`'s receive into its buffer: `buf` (the session's
/// buffer, with what was received appended) goes back to the session and is handled
/// like any input; then the next receive is picked (`data_ring::after_input`).
pub(crate) fn on_received(core: &Worker, conn: &Conn, result: io::Result<usize>, buf: BytesMut) {
    if conn.in_slot.get() {
        on_slot_received(core, conn, result, buf);
        return;
    }
    let was = conn.recv.replace(RecvState::Off);
    conn.lent_input.set(0);
    let mut st = conn.state.borrow_mut();
    st.proto.put_buffer(buf);
    if conn.send_over.get() {
        // The session is ending (`data_ring::end_io` waits for this).
        drop(st);
        conn.wake(0);
        return;
    }
    match result {
        Ok(0) => {
            conn.recv.set(RecvState::Eof);
            st.proto.handle_eof();
            core.process(conn, &mut st);
            drop(st);
            conn.wake(WAKE_INPUT);
        }
        Ok(n) => {
            st.info.bytes_in += n as u64;
            core.count_bytes_in(n);
            CoreStats::add(&core.stats().bytes_in_place, n as u64);
            data_ring::after_input(core, conn, st, Instant::now());
        }
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) && was == RecvState::Cancelling => {
            drop(st);
            conn.wake(WAKE_INPUT);
        }
        Err(e) => {
            st.proto.close(CloseReason::Io(e.kind()));
            core.process(conn, &mut st);
            drop(st);
            conn.wake(WAKE_INPUT);
        }
    }
}

/// The final completion of a receive into a chunk's slot: the slot goes back to the
/// session, which asks for the rest if some is still due (received into the slot
/// again) or handles the frame (`ServerSession::chunk_in_place_received`).
fn on_slot_received(core: &Worker, conn: &Conn, result: io::Result<usize>, slot: BytesMut) {
    let was = conn.recv.replace(RecvState::Off);
    let mut st = conn.state.borrow_mut();
    if conn.send_over.get() {
        // The session is ending (`data_ring::end_io` waits for this); the slot goes
        // with its message.
        conn.in_slot.set(false);
        drop(st);
        conn.wake(0);
        return;
    }
    let now = Instant::now();
    if !matches!(st.proto, Proto::Frame(_)) {
        // Only framed sessions lend slots, and a session never changes kind after its
        // first bytes.
        conn.in_slot.set(false);
        drop(st);
        conn.wake(WAKE_INPUT);
        return;
    }
    let n = match result {
        Ok(0) => {
            conn.in_slot.set(false);
            conn.recv.set(RecvState::Eof);
            if let Proto::Frame(session) = &mut st.proto {
                session.chunk_in_place_eof(slot);
            }
            core.process(conn, &mut st);
            drop(st);
            conn.wake(WAKE_INPUT);
            return;
        }
        Ok(n) => n,
        // A receive cancelled while the session goes on keeps what it received.
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) && was == RecvState::Cancelling => 0,
        Err(e) => {
            conn.in_slot.set(false);
            st.proto.close(CloseReason::Io(e.kind()));
            core.process(conn, &mut st);
            drop(st);
            conn.wake(WAKE_INPUT);
            return;
        }
    };
    st.info.bytes_in += n as u64;
    core.count_bytes_in(n);
    CoreStats::add(&core.stats().bytes_in_place, n as u64);
    let more = match &mut st.proto {
        Proto::Frame(session) => session.chunk_in_place_received(slot, now),
        Proto::Line(_) => None,
    };
    match more {
        Some((slot, missing)) => {
            drop(st);
            core.ring.recv_into(conn, slot, missing);
            conn.recv.set(RecvState::Direct);
        }
        None => {
            conn.in_slot.set(false);
            data_ring::after_input(core, conn, st, now);
        }
    }
}
