//! `--proxy-protocol`: a TCP connection from a trusted load balancer starts with a PROXY
//! protocol header (v1 text or v2 binary, parsed by the `ppp` crate) naming the real
//! client; that address is the session's peer for per-peer limits and logs. A
//! connection whose first bytes are not a valid header within the handshake timeout is
//! closed (and counted) before it becomes a session.
//!
//! The header is read without ever consuming a byte past it: bytes are peeked, and only
//! what is known to be header is taken off the socket, so whatever the client sent after
//! the header stays in the socket for the session.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpStream;
use ppp::{v1, v2, HeaderResult, PartialResult};

use crate::handler::{Peer, Transport};
use crate::stats::CoreStats;
use crate::worker::Worker;

/// Longest header accepted: a v1 header is at most 107 bytes; a v2 header is 16 bytes
/// plus addresses and TLVs, which load balancers keep to a few hundred bytes.
const MAX_HEADER: usize = 4096;

/// What the bytes received so far are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A header may still follow: every byte so far belongs to it.
    Incomplete,
    /// A complete header of `len` bytes. `source` is the client it names; `None` for
    /// `LOCAL` (v2) or `UNKNOWN` (v1) headers, e.g. the balancer's own health checks, which
    /// keep the connection's own address.
    Header {
        /// Header length in bytes.
        len: usize,
        /// The client address it names.
        source: Option<SocketAddr>,
    },
    /// Not a PROXY protocol header.
    Invalid(String),
}

/// Parses the start of a connection.
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    if buf.len() > MAX_HEADER {
        return Parsed::Invalid("header too long".into());
    }
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return Parsed::Incomplete;
    }
    match result {
        HeaderResult::V1(Ok(h)) => Parsed::Header {
            len: h.header.len(),
            source: match h.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => None,
            },
        },
        HeaderResult::V2(Ok(h)) => Parsed::Header {
            len: h.len(),
            source: match (h.command, h.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                _ => None,
            },
        },
        HeaderResult::V1(Err(e)) => Parsed::Invalid(format!("PROXY v1: {e}")),
        HeaderResult::V2(Err(e)) => Parsed::Invalid(format!("PROXY v2: {e}")),
    }
}

/// `recv` without blocking; `peek` leaves the bytes in the socket.
fn recv(fd: i32, buf: &mut [u8], peek: bool) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | if peek { libc::MSG_PEEK } else { 0 };
    // SAFETY: `buf` is writable memory of `buf.len()` bytes; recv writes at most that many.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Reads the header: the client address it names (or `addr` when it names none).
async fn read_header(stream: &TcpStream, addr: SocketAddr) -> Result<SocketAddr, String> {
    let fd = stream.as_raw_fd();
    let mut have: Vec<u8> = Vec::new();
    let mut peeked = vec![0u8; MAX_HEADER];
    loop {
        stream
            .readable(true)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let room = MAX_HEADER + 1 - have.len();
        let n = match recv(fd, &mut peeked[..room.min(MAX_HEADER)], true) {
            Ok(0) => return Err("closed before a PROXY header".into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read: {e}")),
        };
        let mut all = have.clone();
        all.extend_from_slice(&peeked[..n]);
        match parse(&all) {
            Parsed::Header { len, source } => {
                // Take exactly the rest of the header off the socket.
                let rest = len - have.len();
                let taken = recv(fd, &mut peeked[..rest], false).map_err(|e| e.to_string())?;
                if taken != rest {
                    return Err("header shrank while reading it".into());
                }
                return Ok(source.unwrap_or(addr));
            }
            Parsed::Incomplete => {
                // Every byte seen is header: take them, so the socket is not readable
                // again until more arrives.
                let taken = recv(fd, &mut peeked[..n], false).map_err(|e| e.to_string())?;
                have.extend_from_slice(&peeked[..taken]);
            }
            Parsed::Invalid(why) => return Err(why),
        }
    }
}

/// Reads the PROXY header of a new TCP connection, then hands it to the core as a
/// session from the address the header names. Runs as its own task, so a slow balancer
/// holds up no other connection; bounded by the handshake timeout.
pub(crate) async fn accept(core: Rc<Worker>, stream: TcpStream, addr: SocketAddr) {
    let timeout: Duration = core.config().handshake_timeout;
    let peer = match monoio::time::timeout(timeout, read_header(&stream, addr)).await {
        Ok(Ok(source)) => source,
        Ok(Err(why)) => {
            CoreStats::add(&core.stats().proxy_rejected, 1);
            tracing::debug!(%addr, reason = %why, "closed: no valid PROXY protocol header");
            return;
        }
        Err(_) => {
            CoreStats::add(&core.stats().proxy_rejected, 1);
            tracing::debug!(%addr, "closed: no PROXY protocol header in time");
            return;
        }
    };
    if core.is_shutting_down() {
        return;
    }
    core.admit(stream, Transport::Tcp, Peer::Tcp(peer));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_headers() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 9999\r\n";
        let mut buf = h.to_vec();
        buf.extend_from_slice(b"\x89PNG");
        assert_eq!(
            parse(&buf),
            Parsed::Header {
                len: h.len(),
                source: Some("192.0.2.7:40000".parse().unwrap())
            }
        );
        assert_eq!(parse(&h[..10]), Parsed::Incomplete);
        assert_eq!(parse(b""), Parsed::Incomplete);
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                len: 15,
                source: None
            }
        );
        let six = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        assert_eq!(
            parse(six),
            Parsed::Header {
                len: six.len(),
                source: Some("[2001:db8::1]:1".parse().unwrap())
            }
        );
    }

    #[test]
    fn v2_headers() {
        let src: SocketAddr = "203.0.113.9:5555".parse().unwrap();
        let dst: SocketAddr = "198.51.100.1:9999".parse().unwrap();
        let h = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap();
        assert_eq!(
            parse(&h),
            Parsed::Header {
                len: h.len(),
                source: Some(src)
            }
        );
        assert_eq!(parse(&h[..20]), Parsed::Incomplete);
        let local = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap();
        assert!(matches!(parse(&local), Parsed::Header { source: None, .. }));
    }

    #[test]
    fn not_a_header() {
        for bad in [
            &b"\x89PNG\x0e\x0b\x1b\x0b"[..],
            b"GET / HTTP/1.1\r\n",
            b"PROXY TCP4 999.0.0.1 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n\n",
        ] {
            assert!(
                matches!(parse(bad), Parsed::Invalid(_)),
                "{bad:?}: {:?}",
                parse(bad)
            );
        }
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend(std::iter::repeat_n(b'1', 200));
        assert!(matches!(parse(&long), Parsed::Invalid(_)));
    }
}
