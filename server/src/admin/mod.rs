//! `--admin ADDR`: a small HTTP/1.1 endpoint for operators and orchestrators, served by
//! `tiny_http` on threads of its own. It never touches a core: it reads the per-core
//! counters (relaxed atomics each core writes alone) and sums them per scrape, and it
//! asks for a drain through the same path as SIGUSR2.
//!
//! * `GET /metrics`: Prometheus text (OpenMetrics 1.0, see [`metrics`]).
//! * `GET /healthz`: 200 while the process runs.
//! * `GET /readyz`: 200 while accepting; 503 from the moment a drain or shutdown starts
//!   (and while starting).
//! * `POST /drain`: starts a lame-duck drain (202), as SIGUSR2 does.
//!
//! It has no authentication: bind it to loopback or a private network.

pub mod metrics;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use tiny_http::{Header, Method, Request, Response};

use crate::server::{Phase, Shared};

/// The bound admin listener, before its thread starts.
#[derive(Debug)]
pub(crate) struct Admin {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Admin {
    /// Binds `addr` (before the cores start, so that a bad address fails start-up).
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Admin> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        Ok(Admin { listener, addr })
    }

    /// The address with its real port.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The running admin endpoint.
pub(crate) struct AdminThread {
    server: Arc<tiny_http::Server>,
    thread: JoinHandle<()>,
}

impl std::fmt::Debug for AdminThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminThread").finish_non_exhaustive()
    }
}

impl AdminThread {
    /// Stops serving and joins the thread.
    pub(crate) fn stop(self) {
        self.server.unblock();
        let _ = self.thread.join();
    }
}

/// Starts serving on its own thread.
pub(crate) fn spawn(admin: Admin, shared: Arc<Shared>) -> io::Result<AdminThread> {
    let server = tiny_http::Server::from_listener(admin.listener, None)
        .map(Arc::new)
        .map_err(io::Error::other)?;
    let s2 = server.clone();
    tracing::info!(addr = %admin.addr, "admin endpoint");
    let thread = thread::Builder::new()
        .name("sockchat-admin".into())
        .spawn(move || {
            for request in s2.incoming_requests() {
                serve(request, &shared);
            }
        })?;
    Ok(AdminThread { server, thread })
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid static header")
}

fn text(status: u16, body: &str) -> Response<io::Cursor<Vec<u8>>> {
    Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

fn serve(request: Request, shared: &Arc<Shared>) {
    let path = request.url().split('?').next().unwrap_or("").to_string();
    let method = request.method().clone();
    let response = match (method, path.as_str()) {
        (Method::Get, "/metrics") => match metrics::render(shared) {
            Ok(body) => Response::from_string(body)
                .with_header(header("Content-Type", metrics::CONTENT_TYPE)),
            Err(_) => text(500, "cannot encode metrics\n"),
        },
        (Method::Get, "/healthz") => text(200, "ok\n"),
        (Method::Get, "/readyz") => match shared.phase() {
            Phase::Ready => text(200, "ready\n"),
            Phase::Starting => text(503, "starting\n"),
            Phase::Draining => text(503, "draining\n"),
            Phase::Stopping => text(503, "stopping\n"),
        },
        (Method::Post, "/drain") => {
            let started = shared.request_drain();
            if started {
                tracing::info!("drain requested through the admin endpoint");
                text(202, "draining\n")
            } else {
                text(409, "not serving (starting, draining or stopping)\n")
            }
        }
        (_, "/metrics" | "/healthz" | "/readyz" | "/drain") => text(405, "method not allowed\n"),
        _ => text(
            404,
            "not found: try /metrics, /healthz, /readyz, POST /drain\n",
        ),
    };
    let _ = request.respond(response);
}
