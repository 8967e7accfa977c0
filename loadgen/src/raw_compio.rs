//! `raw-server --engine compio`: the same echo on compio 0.19: multishot accept
//! (`incoming()`), a multishot buffer-select receive from the runtime's provided-buffer
//! pool (`read_multi`), each received buffer written back as it is (no copy).
//!
//! compio's traps, handled here: dropping a `JoinHandle` cancels the task (so every
//! connection task is `detach`ed); ENOBUFS (an empty pool) ends the multishot and comes
//! out as an error item — the stream re-arms on the next poll, so we back off first.

use std::collections::HashSet;
use std::io;
use std::num::NonZeroU16;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use compio::io::{AsyncReadMulti, AsyncWrite, AsyncWriteExt};
use compio::BufResult;
use futures_util::future::{select, Either};
use futures_util::StreamExt;

use crate::raw_ring::{BUF_COUNT, BUF_SIZE};
use crate::runner::RingMode;

/// A listener handed to a compio worker.
#[derive(Debug)]
pub enum StdListener {
    /// TCP (SO_REUSEPORT, one per worker).
    Tcp(std::net::TcpListener),
    /// Unix (a clone of the one listening socket).
    Unix(std::os::unix::net::UnixListener),
}

/// Builds the worker's runtime with `ring`'s setup flags and the buffer pool.
fn runtime(ring: RingMode, cpu: Option<usize>) -> io::Result<compio::runtime::Runtime> {
    let mut pb = compio::driver::ProactorBuilder::new();
    pb.capacity(1024)
        .buffer_pool_size(NonZeroU16::new(BUF_COUNT).expect("non-zero"))
        .buffer_pool_buffer_len(BUF_SIZE as usize);
    match ring {
        RingMode::Plain => {}
        RingMode::Coop => {
            pb.coop_taskrun(true).taskrun_flag(true);
        }
        RingMode::Defer => {
            pb.coop_taskrun(true)
                .taskrun_flag(true)
                .single_issuer(true)
                .defer_taskrun(true);
        }
    }
    let mut rb = compio::runtime::RuntimeBuilder::new();
    rb.with_proactor(pb);
    if let Some(cpu) = cpu {
        rb.thread_affinity(HashSet::from([cpu]));
    }
    rb.build()
}

/// Runs one worker until `stop` is set.
pub fn run_worker(
    listener: StdListener,
    ring: RingMode,
    cpu: Option<usize>,
    stop: Arc<AtomicBool>,
) {
    let rt = match runtime(ring, cpu) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raw-server (compio): runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        match listener {
            StdListener::Tcp(l) => match compio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    let inc = l.incoming();
                    accept_loop(inc, &stop, |s: compio::net::TcpStream| {
                        let _ = s.set_nodelay(true);
                        compio::runtime::spawn(async move { echo(&s).await }).detach();
                    })
                    .await
                }
                Err(e) => eprintln!("raw-server (compio): {e}"),
            },
            StdListener::Unix(l) => match compio::net::UnixListener::from_std(l) {
                Ok(l) => {
                    let inc = l.incoming();
                    accept_loop(inc, &stop, |s: compio::net::UnixStream| {
                        compio::runtime::spawn(async move { echo(&s).await }).detach();
                    })
                    .await
                }
                Err(e) => eprintln!("raw-server (compio): {e}"),
            },
        }
    });
}

async fn accept_loop<S, T>(inc: S, stop: &AtomicBool, mut spawn: impl FnMut(T))
where
    S: futures_util::Stream<Item = io::Result<T>>,
{
    let mut inc = pin!(inc);
    loop {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let tick = pin!(compio::time::sleep(crate::raw_server::STOP_CHECK));
        match select(inc.next(), tick).await {
            Either::Left((Some(Ok(s)), _)) => spawn(s),
            Either::Left((Some(Err(_)), _)) => {
                // EMFILE and the like: back off instead of spinning.
                compio::time::sleep(Duration::from_millis(5)).await;
            }
            Either::Left((None, _)) => return,
            Either::Right(_) => {}
        }
    }
}

/// Echoes until the peer closes.
async fn echo<'a, S>(s: &'a S)
where
    &'a S: AsyncReadMulti + AsyncWrite,
    <&'a S as compio::io::AsyncReadManaged>::Buffer: compio::buf::IoBuf,
{
    let mut r = s;
    let mut w = s;
    let mut stream = pin!(r.read_multi(0));
    while let Some(item) = stream.next().await {
        match item {
            Ok(buf) => {
                let BufResult(res, _) = w.write_all(buf).await;
                if res.is_err() {
                    return;
                }
            }
            // The pool is empty (ENOBUFS): the next poll re-arms; wait for buffers to
            // come back first instead of spinning.
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {
                compio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(_) => return,
        }
    }
}
