//! Multishot accept on the core's data ring: one accept request per listener (the
//! core's own SO_REUSEPORT TCP socket, its clone of the shared Unix socket) keeps
//! delivering connections; each is admitted as before ("Server full", per-peer limits,
//! PROXY protocol). Stopping (drain, shutdown) cancels the requests; a listener is
//! closed once its request's final completion came.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use monoio::net::{TcpStream, UnixStream};

use crate::handler::{Peer, Transport};
use crate::proxy_protocol;
use crate::worker::Worker;

/// A listening socket of this core.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl Listener {
    fn fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }
}

#[derive(Debug)]
struct Slot {
    token: u32,
    /// `None` once closed.
    listener: Option<Listener>,
    armed: bool,
}

/// The core's listeners, by ring token.
#[derive(Debug, Default)]
pub(crate) struct Listeners {
    slots: RefCell<Vec<Slot>>,
}

impl Listeners {
    fn find<R>(&self, token: u32, f: impl FnOnce(&mut Slot) -> R) -> Option<R> {
        self.slots
            .borrow_mut()
            .iter_mut()
            .find(|s| s.token == token)
            .map(f)
    }
}

/// Starts accepting on `listener`.
pub(crate) fn listen(core: &Worker, listener: Listener) -> io::Result<()> {
    match &listener {
        Listener::Tcp(l) => l.set_nonblocking(true)?,
        Listener::Unix(l) => l.set_nonblocking(true)?,
    }
    let token = core.ring.token();
    core.listeners.slots.borrow_mut().push(Slot {
        token,
        listener: Some(listener),
        armed: false,
    });
    arm(core, token);
    Ok(())
}

fn arm(core: &Worker, token: u32) {
    if core.is_shutting_down() || core.draining.get() {
        return;
    }
    let fd = core.listeners.find(token, |s| {
        let fd = s.listener.as_ref().filter(|_| !s.armed).map(Listener::fd);
        s.armed |= fd.is_some();
        fd
    });
    if let Some(Some(fd)) = fd {
        core.ring.accept(token, fd);
    }
}

/// Stops accepting: cancels every listener's request; each listener closes when its
/// final completion comes (at once if none is in the kernel).
pub(crate) fn stop(core: &Worker) {
    let mut slots = core.listeners.slots.borrow_mut();
    for s in slots.iter_mut() {
        if s.armed {
            core.ring.cancel_accept(s.token);
        } else {
            s.listener = None;
        }
    }
}

/// A completion of listener `token`'s accept.
pub(crate) fn on_accepted(core: &Rc<Worker>, token: u32, result: io::Result<OwnedFd>, more: bool) {
    let stopping = core.is_shutting_down() || core.draining.get();
    let transport = core.listeners.find(token, |s| {
        if !more {
            s.armed = false;
            if stopping {
                s.listener = None;
            }
        }
        match s.listener {
            Some(Listener::Tcp(_)) => Some(Transport::Tcp),
            Some(Listener::Unix(_)) => Some(Transport::Unix),
            None => None,
        }
    });
    let Some(Some(transport)) = transport else {
        return;
    };
    match result {
        Ok(fd) if !stopping => admit(core, transport, fd),
        // Stopping: the connection is closed unanswered, as a closed listener would.
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => {}
        Err(e) => {
            let pressure = matches!(
                e.raw_os_error(),
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
            );
            if pressure {
                tracing::warn!(core = core.index, error = %e, "accept failed; backing off");
            } else {
                tracing::debug!(core = core.index, error = %e, "accept failed");
            }
            if !more {
                // Re-armed after a pause, not at once: out of descriptors, an immediate
                // re-arm would fail again right away.
                let core = core.clone();
                monoio::spawn(async move {
                    monoio::time::sleep(Duration::from_millis(50)).await;
                    arm(&core, token);
                });
            }
            return;
        }
    }
    if !more {
        arm(core, token);
    }
}

fn admit(core: &Rc<Worker>, transport: Transport, fd: OwnedFd) {
    match transport {
        Transport::Tcp => {
            let std = std::net::TcpStream::from(fd);
            let addr = match std.peer_addr() {
                Ok(a) => a,
                // Reset before we looked: nothing to serve.
                Err(_) => return,
            };
            let _ = std.set_nodelay(true);
            let Ok(stream) = TcpStream::from_std(std) else {
                return;
            };
            if core.config().proxy_protocol {
                // ops hook: the session starts once the PROXY header is read.
                monoio::spawn(proxy_protocol::accept(core.clone(), stream, addr));
                return;
            }
            core.admit::<TcpStream>(stream, Transport::Tcp, Peer::Tcp(addr));
        }
        Transport::Unix => {
            let std = std::os::unix::net::UnixStream::from(fd);
            let Ok(stream) = UnixStream::from_std(std) else {
                return;
            };
            let peer = match stream.peer_cred() {
                Ok(c) => Peer::Unix {
                    pid: c.pid(),
                    uid: c.uid(),
                    gid: c.gid(),
                },
                Err(_) => Peer::Unknown,
            };
            core.admit::<UnixStream>(stream, Transport::Unix, peer);
        }
    }
}
