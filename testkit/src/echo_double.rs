//! An in-test echo server: std threads and the proto crate's `ServerSession`. It lets
//! the client's tests run without the real server (and without building it), and can misbehave on purpose (drop
//! a connection on the n-th message, shut down with `Server shutting down`, restart on
//! the same address).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sockchat_os::{Addr, Stream};
use sockchat_proto::header::{ByteStr, TEXT_UTF8};
use sockchat_proto::{CloseReason, Event, Key, ServerSession, Session, SessionConfig};

#[derive(Debug)]
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Stream> {
        Ok(match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                Stream::Unix(s)
            }
        })
    }
}

/// What the double records and how it misbehaves; shared by every generation.
#[derive(Debug, Default)]
pub struct Shared {
    /// Every message content received, in order, over all connections.
    pub received: Mutex<Vec<Bytes>>,
    /// Drop the connection without echoing when the message count reaches this.
    pub drop_on_message: Mutex<Option<usize>>,
    /// Connections accepted, over all generations.
    pub connections: AtomicUsize,
    /// A message the server sends on its own (as a chat server would), once.
    pub inject: Mutex<Option<Bytes>>,
}

/// The echo server double. Stops (with `Server shutting down`) when dropped.
#[derive(Debug)]
pub struct EchoDouble {
    /// Where it listens (the TCP port is the one the kernel picked).
    pub addr: Addr,
    /// Its records and switches.
    pub shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl EchoDouble {
    /// Listens on `127.0.0.1:0`.
    pub fn tcp() -> Self {
        Self::start(Addr::Tcp("127.0.0.1:0".into()), Arc::default())
    }

    /// Listens on `path` (a socket in a temporary directory).
    pub fn unix(path: PathBuf) -> Self {
        Self::start(Addr::Unix(path), Arc::default())
    }

    fn start(addr: Addr, shared: Arc<Shared>) -> Self {
        let (listener, addr) = match addr {
            Addr::Tcp(a) => {
                let l = TcpListener::bind(a.as_str()).expect("bind tcp");
                let a = l.local_addr().unwrap().to_string();
                (Listener::Tcp(l), Addr::Tcp(a))
            }
            Addr::Unix(p) => (
                Listener::Unix(UnixListener::bind(&p).expect("bind unix")),
                Addr::Unix(p),
            ),
        };
        match &listener {
            Listener::Tcp(l) => l.set_nonblocking(true).unwrap(),
            Listener::Unix(l) => l.set_nonblocking(true).unwrap(),
        }
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (stop, shared, threads2) = (stop.clone(), shared.clone(), threads.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok(s) => {
                            shared.connections.fetch_add(1, Ordering::SeqCst);
                            let (stop, shared) = (stop.clone(), shared.clone());
                            let t = std::thread::spawn(move || serve(s, &stop, &shared));
                            threads2.lock().unwrap().push(t);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            // Non-blocking accept polled, so `stop` is seen in time.
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                }
            })
        };
        threads.lock().unwrap().push(accept);
        EchoDouble {
            addr,
            shared,
            stop,
            threads,
        }
    }

    /// Graceful shutdown: every session gets `disconnect` "Server shutting down", then
    /// the listener closes and a Unix socket file is removed.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap());
        for t in threads {
            t.join().expect("double thread panicked");
        }
        if let Addr::Unix(p) = &self.addr {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Listens again on the same address (after [`shutdown`](Self::shutdown)), with
    /// the same records.
    pub fn start_again(&mut self) {
        let fresh = Self::start(self.addr.clone(), self.shared.clone());
        self.stop = fresh.stop.clone();
        self.threads = fresh.threads.clone();
        // `fresh` shares everything with `self` now; its Drop would stop it.
        std::mem::forget(fresh);
    }

    /// Every message content received so far, in order.
    pub fn received(&self) -> Vec<Bytes> {
        self.shared.received.lock().unwrap().clone()
    }
}

impl Drop for EchoDouble {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(mut stream: Stream, stop: &AtomicBool, shared: &Shared) {
    static NEXT_ID: AtomicUsize = AtomicUsize::new(1);
    let id = format!(
        "00000000-0000-4000-8000-{:012}",
        NEXT_ID.fetch_add(1, Ordering::SeqCst)
    );
    let key = Arc::new(Key::reference_default());
    let config = Arc::new(SessionConfig::default());
    let mut session = ServerSession::new(ByteStr::from(id), key, config, Instant::now());
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    loop {
        let mut closed = false;
        while let Some(e) = session.poll_event() {
            match e {
                Event::Message(m) => {
                    let n = {
                        let mut r = shared.received.lock().unwrap();
                        r.push(m.content.clone());
                        r.len()
                    };
                    if *shared.drop_on_message.lock().unwrap() == Some(n) {
                        // Lose the connection and this echo: no disconnect, no reply.
                        let _ = stream.shutdown(Shutdown::Both);
                        return;
                    }
                    session.echo(m).expect("echo");
                }
                Event::Closed(_) => closed = true,
                _ => {}
            }
        }
        session.poll_transmit(&mut out);
        for b in out.drain(..) {
            if stream.write_all(&b).is_err() {
                return;
            }
        }
        if closed {
            let _ = stream.shutdown(Shutdown::Write);
            // Drain briefly so the client's last bytes do not turn into a reset.
            let end = Instant::now() + Duration::from_millis(200);
            while Instant::now() < end {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
            return;
        }
        if stop.load(Ordering::SeqCst) {
            session.close(CloseReason::ServerShutdown);
            continue;
        }
        if session.is_established() {
            if let Some(m) = shared.inject.lock().unwrap().take() {
                session.send_message(Some(TEXT_UTF8), m).expect("inject");
                continue;
            }
        }
        let now = Instant::now();
        match stream.read(&mut buf) {
            Ok(0) => session.handle_eof(),
            Ok(n) => {
                session.deframer_mut().extend_from_slice(&buf[..n]);
                session.handle_input(now);
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                session.handle_timeout(now)
            }
            Err(_) => session.handle_eof(),
        }
    }
}
