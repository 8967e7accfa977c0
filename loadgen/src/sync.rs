//! Single-thread async primitives for tasks on one monoio runtime. monoio 0.2.4 ships
//! none, and these never cross threads, so they are `Rc`/`Cell` based: no atomics on the
//! per-message path.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::{Poll, Waker};

/// A one-way gate: tasks wait until it is opened, once. Used to hold every session of a
/// thread until the whole run has finished its setup.
#[derive(Debug, Default)]
pub struct Gate {
    open: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Gate {
    /// Opens the gate and wakes every waiter.
    pub fn open(&self) {
        self.open.set(true);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// True once opened.
    pub fn is_open(&self) -> bool {
        self.open.get()
    }

    /// Waits until the gate is open.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.open.get() {
                Poll::Ready(())
            } else {
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// A counting semaphore with a single waiter: the reader of a closed-loop session grants
/// one credit per reply and the writer spends one per message.
#[derive(Debug, Default)]
pub struct Credits {
    count: Cell<u64>,
    closed: Cell<bool>,
    waiter: RefCell<Option<Waker>>,
}

impl Credits {
    /// Credits starting at `n`.
    pub fn new(n: u64) -> Self {
        Self {
            count: Cell::new(n),
            ..Self::default()
        }
    }

    /// Adds one credit.
    pub fn grant(&self) {
        self.grant_n(1);
    }

    /// Adds `n` credits (one wake-up for all of them).
    pub fn grant_n(&self, n: u64) {
        self.count.set(self.count.get() + n);
        self.wake();
    }

    /// Wakes the waiter for good: [`acquire`](Self::acquire) then returns `false`.
    pub fn close(&self) {
        self.closed.set(true);
        self.wake();
    }

    fn wake(&self) {
        if let Some(w) = self.waiter.borrow_mut().take() {
            w.wake();
        }
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Takes one credit, waiting for it; `false` once closed.
    pub async fn acquire(&self) -> bool {
        poll_fn(|cx| {
            if self.closed.get() {
                return Poll::Ready(false);
            }
            let n = self.count.get();
            if n > 0 {
                self.count.set(n - 1);
                Poll::Ready(true)
            } else {
                *self.waiter.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

impl Credits {
    /// Takes every available credit, waiting for at least one; 0 once closed. Lets a
    /// writer send all the messages that are due in one write.
    pub async fn acquire_all(&self) -> u64 {
        poll_fn(|cx| {
            if self.closed.get() {
                return Poll::Ready(0);
            }
            let n = self.count.replace(0);
            if n > 0 {
                Poll::Ready(n)
            } else {
                *self.waiter.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// Polls two futures concurrently until both are done. Used to submit a session's write
/// and its read in the same io_uring submission (one `io_uring_enter` per round trip
/// instead of two).
pub async fn join2<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut ra, mut rb) = (None, None);
    poll_fn(|cx| {
        if ra.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        match (ra.take(), rb.take()) {
            (Some(x), Some(y)) => Poll::Ready((x, y)),
            (x, y) => {
                (ra, rb) = (x, y);
                Poll::Pending
            }
        }
    })
    .await
}
