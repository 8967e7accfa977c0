//! Cross-core plumbing: each core's bounded inbox of chat messages, and the notification
//! that wakes a core's runtime from another thread (chat messages, shutdown).
//!
//! A sender never blocks: when a core's inbox is full (by message count or by content
//! bytes), the message is dropped for that core and counted in its `fanout_dropped`
//! (reported in the stats line and the shutdown summary). Contents are shared `Bytes`;
//! each receiving core encodes one frame per recipient (the session id is in the MAC'd
//! header), without copying the content.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use sockchat_proto::header::ByteStr;
use sockchat_proto::RoomName;

use crate::stats::CoreStats;

/// A chat message on its way to other cores.
#[derive(Debug)]
pub(crate) struct Broadcast {
    pub(crate) content_type: Option<ByteStr>,
    pub(crate) content: Bytes,
    /// The room: the core delivers to its members of it. `None`: to every session (the
    /// handler API's `broadcast`).
    pub(crate) room: Option<RoomName>,
    /// The sender's session id (the `from` key of rooms deliveries).
    pub(crate) from: Option<ByteStr>,
}

/// Wakes one core's control task from any thread.
#[derive(Debug, Default)]
pub(crate) struct CoreNotify {
    pending: AtomicBool,
    shutdown: AtomicBool,
    drain: AtomicBool,
    reload: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl CoreNotify {
    pub(crate) fn notify(&self) {
        self.pending.store(true, Ordering::Release);
        let w = match self.waker.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(w) = w {
            w.wake();
        }
    }

    pub(crate) fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
        self.notify();
    }

    pub(crate) fn shutdown_requested(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    pub(crate) fn request_drain(&self) {
        self.drain.store(true, Ordering::Release);
        self.notify();
    }

    pub(crate) fn drain_requested(&self) -> bool {
        self.drain.load(Ordering::Acquire)
    }

    pub(crate) fn request_reload(&self) {
        self.reload.store(true, Ordering::Release);
        self.notify();
    }

    /// True once per reload request.
    pub(crate) fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::AcqRel)
    }

    /// Ready once `notify` was called since the last ready.
    pub(crate) fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.pending.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        match self.waker.lock() {
            Ok(mut g) => *g = Some(cx.waker().clone()),
            Err(p) => *p.into_inner() = Some(cx.waker().clone()),
        }
        // A notify between the swap and storing the waker found no waker: look again.
        if self.pending.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// The sending side of one core's inbox, shared by all cores.
#[derive(Debug)]
pub(crate) struct Mailbox {
    tx: SyncSender<Arc<Broadcast>>,
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    pub(crate) notify: CoreNotify,
    stats: Arc<CoreStats>,
    /// Rooms whose broker subscription the cluster thread confirmed (few: one per room
    /// per core, so a plain locked list).
    confirmed_rooms: Mutex<Vec<RoomName>>,
}

/// The receiving side, owned by the core.
#[derive(Debug)]
pub(crate) struct Inbox {
    rx: Receiver<Arc<Broadcast>>,
}

/// One mailbox per core, plus the inboxes to hand to each core's thread.
pub(crate) fn mailboxes(
    stats: &[Arc<CoreStats>],
    max_len: usize,
    max_bytes: usize,
) -> (Arc<Vec<Mailbox>>, Vec<Inbox>) {
    let mut boxes = Vec::with_capacity(stats.len());
    let mut inboxes = Vec::with_capacity(stats.len());
    for s in stats {
        let (tx, rx) = sync_channel(max_len.max(1));
        boxes.push(Mailbox {
            tx,
            queued_bytes: AtomicUsize::new(0),
            max_bytes,
            notify: CoreNotify::default(),
            stats: s.clone(),
            confirmed_rooms: Mutex::new(Vec::new()),
        });
        inboxes.push(Inbox { rx });
    }
    (Arc::new(boxes), inboxes)
}

impl Mailbox {
    /// Queues `msg` for this core without blocking; false (and counted) if it is full.
    pub(crate) fn offer(&self, msg: &Arc<Broadcast>) -> bool {
        let len = msg.content.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before.saturating_add(len) > self.max_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            CoreStats::add(&self.stats.fanout_dropped, 1);
            return false;
        }
        match self.tx.try_send(msg.clone()) {
            Ok(()) => {
                self.notify.notify();
                true
            }
            Err(TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                CoreStats::add(&self.stats.fanout_dropped, 1);
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                // That core has stopped (shutdown): nobody to deliver to.
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                false
            }
        }
    }
}

impl Mailbox {
    /// Tells this core that the node's subscription to `room` holds.
    pub(crate) fn confirm_room(&self, room: RoomName) {
        match self.confirmed_rooms.lock() {
            Ok(mut g) => g.push(room),
            Err(p) => p.into_inner().push(room),
        }
        self.notify.notify();
    }

    /// The rooms confirmed since the last call.
    pub(crate) fn take_confirmed_rooms(&self) -> Vec<RoomName> {
        match self.confirmed_rooms.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }
}

impl Inbox {
    /// The next queued message, accounting its bytes as taken off `mailbox`.
    pub(crate) fn try_recv(&self, mailbox: &Mailbox) -> Option<Arc<Broadcast>> {
        let m = self.rx.try_recv().ok()?;
        mailbox
            .queued_bytes
            .fetch_sub(m.content.len(), Ordering::AcqRel);
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn msg(n: usize) -> Arc<Broadcast> {
        Arc::new(Broadcast {
            content_type: None,
            content: Bytes::from(vec![b'x'; n]),
            room: None,
            from: None,
        })
    }

    #[test]
    fn bounded_by_count_and_bytes_never_blocks() {
        let stats = vec![Arc::new(CoreStats::default())];
        let (boxes, inboxes) = mailboxes(&stats, 2, 100);
        assert!(boxes[0].offer(&msg(10)));
        assert!(boxes[0].offer(&msg(10)));
        assert!(!boxes[0].offer(&msg(10)), "full by count");
        assert!(inboxes[0].try_recv(&boxes[0]).is_some());
        assert!(!boxes[0].offer(&msg(95)), "full by bytes");
        assert!(boxes[0].offer(&msg(90)));
        assert_eq!(stats[0].fanout_dropped.load(Relaxed), 2);
        assert!(inboxes[0].try_recv(&boxes[0]).is_some());
        assert!(inboxes[0].try_recv(&boxes[0]).is_some());
        assert!(inboxes[0].try_recv(&boxes[0]).is_none());
        assert_eq!(boxes[0].queued_bytes.load(Relaxed), 0);
    }

    #[test]
    fn notify_before_poll_is_not_lost() {
        struct Flag(AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Relaxed);
            }
        }
        let n = CoreNotify::default();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        n.notify();
        assert!(n.poll_notified(&mut cx).is_ready());
        assert!(n.poll_notified(&mut cx).is_pending());
        n.request_shutdown();
        assert!(flag.0.load(Relaxed), "the registered waker was woken");
        assert!(n.shutdown_requested());
        assert!(n.poll_notified(&mut cx).is_ready());
    }
}
