//! Where a server listens ([`Addr`]) and the blocking stream that reaches it ([`Stream`]),
//! over TCP or a Unix socket: the client library speaks through them, and the tests'
//! clients and protocol doubles use them so each is written once for both transports.
//! (loadgen's own connections are monoio streams, `loadgen::conn::Conn`.)

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// The reference clients' default TCP address.
pub const DEFAULT_TCP: &str = "127.0.0.1:9999";

/// A server address: TCP `host:port` or a Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// `host:port`; resolved at every connect, so a name that moves is followed.
    Tcp(String),
    /// Path of a Unix stream socket.
    Unix(PathBuf),
}

impl Default for Addr {
    fn default() -> Self {
        Addr::Tcp(DEFAULT_TCP.to_owned())
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(a) => write!(f, "tcp {a}"),
            Addr::Unix(p) => write!(f, "unix {}", p.display()),
        }
    }
}

impl Addr {
    /// Opens a connection, bounding a TCP connect by `timeout` (a Unix connect never
    /// blocks for long: it succeeds or is refused at once).
    pub fn connect(&self, timeout: Duration) -> io::Result<Stream> {
        match self {
            Addr::Tcp(a) => {
                let addrs: Vec<SocketAddr> = a.to_socket_addrs()?.collect();
                let mut last = io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{a} resolved to no address"),
                );
                for sa in addrs {
                    match TcpStream::connect_timeout(&sa, timeout) {
                        Ok(s) => {
                            // Frames are written whole; Nagle would only delay small ones.
                            s.set_nodelay(true)?;
                            return Ok(Stream::Tcp(s));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
            Addr::Unix(p) => Ok(Stream::Unix(UnixStream::connect(p)?)),
        }
    }
}

/// A connected stream of either kind, used blocking.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix stream socket.
    Unix(UnixStream),
}

impl Stream {
    /// Another handle to the same socket (for reader and writer threads).
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    /// Sets the read timeout (`None` blocks).
    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(d),
            Stream::Unix(s) => s.set_read_timeout(d),
        }
    }

    /// Sets the write timeout (`None` blocks).
    pub fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(d),
            Stream::Unix(s) => s.set_write_timeout(d),
        }
    }

    /// Shuts down one or both directions; also wakes a thread blocked reading.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_reference_tcp_address() {
        assert_eq!(Addr::default(), Addr::Tcp("127.0.0.1:9999".into()));
        assert_eq!(Addr::default().to_string(), "tcp 127.0.0.1:9999");
    }

    #[test]
    fn connect_to_a_missing_unix_socket_fails_at_once() {
        let dir = std::env::temp_dir().join("sockchat-client-no-such-dir-xyz");
        let e = Addr::Unix(dir.join("s.sock"))
            .connect(Duration::from_millis(100))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn both_kinds_read_write_and_shut_down() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Stream::Unix(a), Stream::Unix(b));
        a.write_all(b"over unix").unwrap();
        let mut got = [0u8; 9];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"over unix");

        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = Stream::Tcp(TcpStream::connect(l.local_addr().unwrap()).unwrap());
        let mut s = Stream::Tcp(l.accept().unwrap().0);
        let mut c2 = c.try_clone().unwrap();
        c2.write_all(b"tcp").unwrap();
        let mut got = [0u8; 3];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"tcp");
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(s.read(&mut got).unwrap(), 0, "EOF after shutdown");
        s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        assert_ne!(s.as_raw_fd(), c.as_raw_fd());
    }
}
