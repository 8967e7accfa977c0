//! One stream type over TCP and Unix sockets, so every scenario is written once and runs
//! on either transport.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use monoio::net::{TcpStream, UnixStream};
use monoio::BufResult;
use serde::{Deserialize, Serialize};

/// Where the load goes: a TCP address or a Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// A TCP listener.
    Tcp(SocketAddr),
    /// A Unix stream socket path.
    Unix(PathBuf),
}

impl Target {
    /// `"tcp"` or `"unix"`, for reports.
    pub fn transport(&self) -> &'static str {
        match self {
            Target::Tcp(_) => "tcp",
            Target::Unix(_) => "unix",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(a) => write!(f, "tcp:{a}"),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl std::str::FromStr for Target {
    type Err = String;

    /// The [`Display`](fmt::Display) form back: `unix:PATH` or `tcp:ADDR`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("unix", p)) if !p.is_empty() => Ok(Target::Unix(p.into())),
            Some(("tcp", a)) => a
                .parse()
                .map(Target::Tcp)
                .map_err(|e| format!("{s:?}: {e}")),
            _ => Err(format!("{s:?}: expected unix:PATH or tcp:ADDR")),
        }
    }
}

/// A connected stream. An enum rather than a generic so the scenarios compile once; the
/// match per operation costs nothing next to a syscall.
#[derive(Debug)]
pub enum Conn {
    /// TCP (with `TCP_NODELAY`: the scenarios measure latency of small frames).
    Tcp(TcpStream),
    /// Unix stream socket.
    Unix(UnixStream),
}

impl Conn {
    /// Connects to `target`.
    pub async fn connect(target: &Target) -> io::Result<Conn> {
        match target {
            Target::Tcp(addr) => {
                let s = match addr {
                    SocketAddr::V4(v4) if v4.ip().is_loopback() => {
                        connect_spread_source(*v4).await?
                    }
                    _ => TcpStream::connect_addr(*addr).await?,
                };
                s.set_nodelay(true)?;
                Ok(Conn::Tcp(s))
            }
            Target::Unix(path) => Ok(Conn::Unix(UnixStream::connect(path).await?)),
        }
    }
}

/// Source addresses client sockets to a loopback target are spread over (all of 127/8 is
/// local on `lo`).
///
/// Why: for one (source address, destination) pair Linux hands `connect()` the even
/// ephemeral ports first (14,116 of 32768–60999); once they are taken, every further
/// connect scans the whole range, and a heartbeat run stalled at ~14,100 TCP sessions.
/// Rotating over 8 source addresses gives each its own port space for the 4-tuple.
pub const LOOPBACK_SOURCES: std::ops::RangeInclusive<u8> = 2..=9;

/// Next source address index, shared by all threads (rotation only; no ordering needed).
static NEXT_SOURCE: AtomicUsize = AtomicUsize::new(0);

/// Connects to an IPv4 loopback `dst` from the next 127.0.0.x of [`LOOPBACK_SOURCES`]:
/// bound with `IP_BIND_ADDRESS_NO_PORT` and port 0, so the kernel picks the port at
/// `connect()` time against the full 4-tuple (a plain `bind` to port 0 would pick one
/// unique per source address and exhaust the range the same way).
async fn connect_spread_source(dst: SocketAddrV4) -> io::Result<TcpStream> {
    let n = LOOPBACK_SOURCES.len();
    let i = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % n;
    let src = Ipv4Addr::new(127, 0, 0, LOOPBACK_SOURCES.start() + i as u8);

    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket owned by nobody else; the std stream now owns it and
    // closes it on every error path below.
    let std_stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };

    let one: libc::c_int = 1;
    // SAFETY: `one` outlives the call and the length matches its type.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            std::ptr::addr_of!(one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }

    let sin = |a: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;

    let local = sin(src, 0);
    // SAFETY: `local` is a valid sockaddr_in of length `len` for the call's duration.
    let rc = unsafe { libc::bind(fd, std::ptr::addr_of!(local).cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }

    let remote = sin(*dst.ip(), dst.port());
    // SAFETY: as for bind.
    let rc = unsafe { libc::connect(fd, std::ptr::addr_of!(remote).cast(), len) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }

    let stream = TcpStream::from_std(std_stream)?;
    // Non-relaxed: io_uring PollAdd(POLLOUT) or, on the epoll driver, a real poll; it
    // completes on connection or on error (POLLERR/POLLHUP). The caller's connect
    // timeout bounds the wait.
    stream.writable(false).await?;
    if let Some(e) = sock_error(&stream)? {
        return Err(e);
    }
    Ok(stream)
}

/// `SO_ERROR` of a monoio stream (the fd is borrowed, not closed).
fn sock_error(stream: &TcpStream) -> io::Result<Option<io::Error>> {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd stays open (owned by `stream`); ManuallyDrop never closes it.
    let std_stream = std::mem::ManuallyDrop::new(unsafe {
        std::net::TcpStream::from_raw_fd(stream.as_raw_fd())
    });
    std_stream.take_error()
}

impl AsyncReadRent for Conn {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Tcp(s) => s.read(buf).await,
            Conn::Unix(s) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Tcp(s) => s.readv(buf).await,
            Conn::Unix(s) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for Conn {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Tcp(s) => s.write(buf).await,
            Conn::Unix(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Conn::Tcp(s) => s.writev(buf).await,
            Conn::Unix(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush().await,
            Conn::Unix(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.shutdown().await,
            Conn::Unix(s) => s.shutdown().await,
        }
    }
}

impl std::os::fd::AsRawFd for Conn {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Conn::Tcp(s) => s.as_raw_fd(),
            Conn::Unix(s) => s.as_raw_fd(),
        }
    }
}

// SAFETY: both inner streams are `Split` in monoio (reads and writes are independent
// operations on one fd); the enum adds no shared state.
unsafe impl Split for Conn {}

/// Spare capacity below which a read buffer is grown before reading. Small, because an
/// idle session should not pin much memory (thousands of heartbeat sessions).
const MIN_SPARE: usize = 1024;
/// How much a read buffer grows by at a time.
const GROW: usize = 16 * 1024;

/// Reads once from `r`, appending after the bytes `buf` already holds (monoio reads into
/// a `BytesMut` from its start, so the spare capacity is lent as a slice).
pub async fn read_append<R: AsyncReadRent>(
    r: &mut R,
    mut buf: BytesMut,
) -> (io::Result<usize>, BytesMut) {
    if buf.capacity() - buf.len() < MIN_SPARE {
        buf.reserve(GROW);
    }
    let (len, cap) = (buf.len(), buf.capacity());
    let (res, slice) = r.read(buf.slice_mut(len..cap)).await;
    (res, slice.into_inner())
}
