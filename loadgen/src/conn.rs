//! One stream type over TCP and Unix sockets, so every scenario is written once and runs
//! on either transport.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

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
                let s = TcpStream::connect_addr(*addr).await?;
                s.set_nodelay(true)?;
                Ok(Conn::Tcp(s))
            }
            Target::Unix(path) => Ok(Conn::Unix(UnixStream::connect(path).await?)),
        }
    }
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
