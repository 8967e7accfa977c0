//! The core's life: start (pinning, io_uring runtime, data ring, listeners), the control
//! task that runs it (cross-core messages, reloads, drain) and shutdown with its grace
//! period. Kept apart from the session code because it runs once per core, not per
//! connection.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::task::Poll;
use std::time::Instant;

use sockchat_proto::CloseReason;

use super::admit::reject_frame;
use super::timers::timer_task;
use super::Worker;
use crate::config::ServerConfig;
use crate::conn::{Conn, WAKE_SHUTDOWN};
use crate::data_ring::{self, CoreRing};
use crate::drain;
use crate::fanout::Inbox;
use crate::handler::Handler;
use crate::ring_accept::{self, Listener};
use crate::server::Shared;
use crate::stats::CoreStats;

/// io_uring submission queue entries per core.
const RING_ENTRIES: u32 = 4096;

/// The listening sockets one core accepts from.
#[derive(Debug, Default)]
pub(crate) struct CoreListeners {
    pub(crate) tcp: Vec<std::net::TcpListener>,
    pub(crate) unix: Vec<std::os::unix::net::UnixListener>,
}

/// Pins the calling thread to one CPU of those the process may use (round-robin).
fn pin_to_cpu(index: usize) {
    // SAFETY: cpu_set_t is plain data; the calls only read/write the set passed.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
            return;
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &allowed))
            .collect();
        if cpus.is_empty() {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus[index % cpus.len()], &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::debug!(core = index, "could not pin thread");
        }
    }
}

/// Runs core `index` until shutdown; called on the core's own thread. Reports on
/// `ready` once it accepts (or why it could not start).
pub(crate) fn run_core(
    index: usize,
    config: Arc<ServerConfig>,
    handler: Arc<dyn Handler>,
    shared: Arc<Shared>,
    listeners: CoreListeners,
    inbox: Inbox,
    ready: mpsc::Sender<(usize, io::Result<()>)>,
) -> io::Result<()> {
    pin_to_cpu(index);
    let built = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .with_entries(RING_ENTRIES)
        .build();
    let mut rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send((index, Err(io::Error::new(e.kind(), e.to_string()))));
            return Err(e);
        }
    };
    let ring = match CoreRing::new(config.ring_buffers, config.ring_buffer_size) {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send((index, Err(io::Error::new(e.kind(), e.to_string()))));
            return Err(e);
        }
    };
    rt.block_on(async move {
        let core = Rc::new(Worker::new(index, config, handler, shared, ring));
        let started = start_accepting(&core, listeners);
        let failed = started
            .as_ref()
            .err()
            .map(|e| io::Error::new(e.kind(), e.to_string()));
        let _ = ready.send((index, started));
        if let Some(e) = failed {
            return Err(e);
        }
        monoio::spawn(timer_task(core.clone()));
        monoio::spawn(data_ring::run(core.clone()));
        control(&core, &inbox).await;
        core.shut_down().await;
        core.ring.shutdown();
        Ok(())
    })
}

fn start_accepting(core: &Rc<Worker>, listeners: CoreListeners) -> io::Result<()> {
    for l in listeners.tcp {
        ring_accept::listen(core, Listener::Tcp(l))?;
    }
    for l in listeners.unix {
        ring_accept::listen(core, Listener::Unix(l))?;
    }
    Ok(())
}

impl Worker {
    /// Takes the configuration a SIGHUP reload stored: new sessions get it.
    pub(super) fn apply_reload(&self) {
        let config = self.shared.config.load_full();
        self.budget.set_budget(config.memory_budget, config.cores);
        *self.session_config.borrow_mut() = Arc::new(super::session_config(&config, &self.pool));
        *self.server_full.borrow_mut() = reject_frame(&config, &CloseReason::ServerFull);
        *self.config.borrow_mut() = config;
    }

    /// Stops accepting, tells every session to disconnect, and waits until they are
    /// gone or the grace period ends.
    async fn shut_down(&self) {
        self.shutting_down.set(true);
        ring_accept::stop(self);
        let conns: Vec<Rc<Conn>> = self.conns.borrow().values().cloned().collect();
        tracing::debug!(core = self.index, sessions = conns.len(), "shutting down");
        for c in &conns {
            c.wake(WAKE_SHUTDOWN);
        }
        drop(conns);
        let deadline = Instant::now() + self.config().shutdown_grace;
        self.wait_empty(deadline).await;
        let left = self.conns.borrow().len();
        if left > 0 {
            tracing::warn!(
                core = self.index,
                sessions = left,
                "shutdown grace period over; closing remaining sessions"
            );
            for c in self.conns.borrow().values() {
                if let Ok(st) = c.state.try_borrow() {
                    self.stats.count_close(
                        st.close_reason
                            .as_ref()
                            .unwrap_or(&CloseReason::ServerShutdown),
                    );
                }
            }
        }
    }

    /// Cancels the listeners' accepts: each listener closes with its final completion.
    pub(crate) fn stop_accepting(&self) {
        ring_accept::stop(self);
    }

    /// Waits until this core holds no session (or `deadline` passes).
    pub(crate) async fn wait_empty(&self, deadline: Instant) {
        let sleep = monoio::time::sleep_until(monoio::time::Instant::from_std(deadline));
        let mut sleep = pin!(sleep);
        poll_fn(|cx| {
            if self.conns.borrow().is_empty() {
                return Poll::Ready(());
            }
            self.drained.set(Some(cx.waker().clone()));
            sleep.as_mut().poll(cx)
        })
        .await;
    }
}

/// Delivers chat messages from other cores, applies reloads and starts a drain, until
/// shutdown is requested or a drain has sent every session away.
async fn control(core: &Rc<Worker>, inbox: &Inbox) {
    let mailbox = core.mailbox();
    loop {
        poll_fn(|cx| mailbox.notify.poll_notified(cx)).await;
        CoreStats::add(&core.stats.alive, 1);
        while let Some(msg) = inbox.try_recv(mailbox) {
            core.deliver_room(&msg, None);
        }
        for room in mailbox.take_confirmed_rooms() {
            core.room_confirmed(&room);
        }
        if mailbox.notify.shutdown_requested() {
            return;
        }
        if mailbox.notify.take_reload() {
            core.apply_reload();
        }
        if mailbox.notify.drain_requested() && !core.draining.get() {
            core.draining.set(true);
            monoio::spawn(drain::run(core.clone()));
        }
        if core.draining.get() && drain::finished(core) {
            return;
        }
    }
}
