//! `fanout --raw`: the fan-out without the protocol, against `loadgen raw-server
//! --fanout` (which forwards every byte a connection sends to every other connection).
//! Connection 0 writes one fixed-size payload per message (`--size` bytes: sequence
//! number, send time, then the run's fixed pattern); every other connection reads the
//! stream in payload-sized pieces, compares each one's pattern byte for byte and records
//! it with the framed fan-out's bookkeeping ([`super::delivered`]).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use monoio::io::AsyncWriteRentExt;

use super::{delivered, expected, stamp, Deliveries, Params};
use crate::conn::read_append;
use crate::fanout_wire::rewind;
use crate::runner::ThreadCtx;
use crate::scenarios::raw::connect;

/// The fan-out's setup histogram (its connect time, for a raw connection).
const SETUP_HIST: usize = 2;
/// Payload bytes past the sequence number and send time (the fixed pattern).
const STAMP: usize = 16;

/// Connection 0: one payload per message at the scheduled times.
pub(super) async fn sender(ctx: Rc<ThreadCtx>, p: Arc<Params>, i: usize) {
    let Some(mut conn) = connect(&ctx, i, SETUP_HIST).await else {
        return;
    };
    let mut payload = p.pad.to_vec();
    let w = ctx.wait_go().await;
    for seq in 0..expected(p.rate, &w) {
        stamp(&ctx, &p, &w, 0, seq, &mut payload).await;
        let (res, _) = conn.write_all(Bytes::copy_from_slice(&payload)).await;
        if res.is_err() {
            ctx.error("write");
            break;
        }
    }
}

/// Every other connection: reads the forwarded payloads until all arrived or the
/// window and drain are over.
pub(super) async fn receiver(
    ctx: Rc<ThreadCtx>,
    p: Arc<Params>,
    local: Rc<RefCell<Deliveries>>,
    i: usize,
) {
    let Some(mut conn) = connect(&ctx, i, SETUP_HIST).await else {
        return;
    };
    p.log.receivers.lock().expect("not poisoned")[0] += 1;
    let (pad, size) = (&p.pad, p.size);
    let w = ctx.wait_go().await;
    let want = expected(p.rate, &w);
    let deadline = w.end + ctx.cfg().drain;
    // One deadline for the loop, as the framed receiver; what is missing when it passes
    // is counted as incomplete fan-outs.
    let _ = monoio::time::timeout_at(deadline.into(), async {
        let mut buf = BytesMut::with_capacity(size.max(4096));
        let mut got = 0u64;
        while got < want {
            rewind(&mut buf);
            let (res, b) = read_append(&mut conn, buf).await;
            buf = b;
            match res {
                Ok(0) => {
                    ctx.error("eof");
                    return;
                }
                Ok(_) => {}
                Err(_) => {
                    ctx.error("read");
                    return;
                }
            }
            let now = Instant::now();
            while buf.len() >= size {
                if buf[STAMP..size] != pad[STAMP..] {
                    // Payload boundaries are lost: nothing after this can be trusted.
                    ctx.error("fanout_bad_content");
                    return;
                }
                got += 1;
                delivered(&ctx, &local, 0, &buf[..size], now);
                buf.advance(size);
            }
        }
    })
    .await;
}
