//! A `NOTIFY_SOCKET` bound by the test, as systemd's would be: the server's sd_notify
//! datagrams (`READY=1`, `RELOADING=1`, `WATCHDOG=1`, `STOPPING=1`), read with a deadline.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Server, SHORT};

/// A `NOTIFY_SOCKET` bound by the test, as systemd's would be.
#[derive(Debug)]
pub struct NotifySocket {
    /// The socket's path, for the server's `NOTIFY_SOCKET`.
    pub path: PathBuf,
    sock: UnixDatagram,
    /// Every datagram read so far, in order.
    pub seen: Vec<String>,
}

impl NotifySocket {
    /// Binds `notify.sock` in `dir`.
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket {
            path,
            sock,
            seen: Vec::new(),
        }
    }

    /// Waits for a datagram holding the line `want` (e.g. `READY=1`); every datagram
    /// read on the way is kept in `seen`.
    pub fn expect(&mut self, want: &str, timeout: Duration) -> String {
        self.expect_from(0, want, timeout)
    }

    /// Like [`expect`](Self::expect), for a datagram at index `from` of `seen` or later.
    pub fn expect_from(&mut self, from: usize, want: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        loop {
            let found = self
                .seen
                .iter()
                .skip(from)
                .find(|d| d.lines().any(|l| l == want));
            if let Some(d) = found {
                return d.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {want:?} on NOTIFY_SOCKET within {timeout:?}; got {:?}",
                self.seen
            );
            self.sock.set_read_timeout(Some(left)).unwrap();
            match self.sock.recv(&mut buf) {
                Ok(n) => self
                    .seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("notify socket: {e}"),
            }
        }
    }

    /// Sends `server` SIGHUP and waits for its reload to finish: the `READY=1` after the
    /// `RELOADING=1` it sends for this signal.
    pub fn reload(&mut self, server: &mut Server) {
        let before = self.seen.len();
        server.signal(libc::SIGHUP);
        self.expect_from(before, "RELOADING=1", SHORT);
        let at = self.seen.len() - 1;
        self.expect_from(at + 1, "READY=1", SHORT);
    }

    /// Index in `seen` of the first datagram with line `want`.
    pub fn position(&self, want: &str) -> Option<usize> {
        self.seen.iter().position(|d| d.lines().any(|l| l == want))
    }
}
