//! What `/proc` says about a process (memory, descriptors), what the kernel says about a
//! socket (bytes its peer has not read yet), and bounded waits on conditions built from
//! them.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::thread;
use std::time::{Duration, Instant};

use sockchat_os::Stream;

/// `VmRSS` of any process, in bytes (0 once it is gone).
pub fn proc_rss(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:").unwrap_or(0) * 1024
}

/// `VmHWM` (peak RSS) of any process, in bytes (0 once it is gone).
pub fn proc_hwm(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:").unwrap_or(0) * 1024
}

/// A `kB` field of `/proc/PID/status`; `None` if the process or the field is gone.
pub(crate) fn status_kib(pid: u32, name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        })
}

/// Open file descriptors of a process (0 once it is gone).
pub fn proc_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Waits (bounded) until `cond` holds; returns whether it did.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        // Poll interval: `cond` is the event waited on.
        thread::sleep(Duration::from_millis(20));
    }
}

/// True once the peer process has read every byte written on `s` so far: nothing waits in
/// our send queue or, for TCP, in the peer socket's receive queue. This is how a test
/// knows the server has consumed a partial line or frame before it sends the rest.
///
/// Unix stream sockets: `SIOCOUTQ` counts the memory of sent buffers the receiver has not
/// consumed yet, so zero means all read. TCP (loopback): `SIOCOUTQ` counts unacknowledged
/// bytes, and the peer socket's receive queue comes from the kernel's sock_diag.
pub fn peer_has_read_all(s: &Stream) -> io::Result<bool> {
    Ok(unread(s)?.is_none())
}

/// Where bytes written on `s` still wait, if anywhere: `(our send queue, the peer's receive
/// queue)`; the peer's is `None` for Unix sockets (ours covers it) and when its socket is
/// not listed.
fn unread(s: &Stream) -> io::Result<Option<(i32, Option<u64>)>> {
    let mut outq: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one c_int to the pointer, which is valid for the call; the
    // descriptor belongs to `s`, which outlives the call.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut outq) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let peer = match s {
        Stream::Unix(_) => Some(0),
        Stream::Tcp(t) => tcp_rx_queue(t.peer_addr()?, t.local_addr()?)?,
    };
    Ok(match (outq, peer) {
        (0, Some(0)) => None,
        (ours, peer) => Some((ours, peer)),
    })
}

/// Waits (bounded) until the peer has read every byte written on `s`
/// ([`peer_has_read_all`]); returns whether it did. Polls every 100 µs, since a server
/// that is keeping up reads within microseconds and tests call this once per byte.
pub fn wait_peer_read_all(s: &Stream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = unread(s).expect("socket queue lengths");
        let Some((ours, peer)) = left else {
            return true;
        };
        if Instant::now() >= deadline {
            eprintln!(
                "unread after {timeout:?}: {ours} in our send queue, peer's receive queue {peer:?}"
            );
            return false;
        }
        thread::sleep(Duration::from_micros(100));
    }
}

/// The receive queue (bytes not yet read by its owner) of the TCP socket bound to `local`
/// and connected to `remote`; `None` if there is no such socket.
///
/// Asked of the kernel through `NETLINK_SOCK_DIAG` (what `ss` uses), which looks up the
/// one socket by its address pair: `/proc/net/tcp` lists every socket on the machine and
/// took tens of milliseconds a read here, too slow to ask once per byte written. No crate
/// in the workspace speaks sock_diag, and a request is one fixed 72-byte message.
fn tcp_rx_queue(local: SocketAddr, remote: SocketAddr) -> io::Result<Option<u64>> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_ERROR: u16 = 2;
    let (family, src, dst) = match (local, remote) {
        (SocketAddr::V4(l), SocketAddr::V4(r)) => {
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src[..4].copy_from_slice(&l.ip().octets());
            dst[..4].copy_from_slice(&r.ip().octets());
            (libc::AF_INET, src, dst)
        }
        (SocketAddr::V6(l), SocketAddr::V6(r)) => {
            (libc::AF_INET6, l.ip().octets(), r.ip().octets())
        }
        _ => return Ok(None),
    };
    // struct nlmsghdr (16 bytes) + struct inet_diag_req_v2 (56 bytes): family, protocol,
    // extensions, pad, states, then inet_diag_sockid (ports and addresses in network
    // order, interface, cookie "none").
    let mut req = Vec::with_capacity(72);
    req.extend_from_slice(&72u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    req.extend_from_slice(&[family as u8, libc::IPPROTO_TCP as u8, 0, 0]);
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // any state
    req.extend_from_slice(&local.port().to_be_bytes());
    req.extend_from_slice(&remote.port().to_be_bytes());
    req.extend_from_slice(&src);
    req.extend_from_slice(&dst);
    req.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // INET_DIAG_NOCOOKIE
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    debug_assert_eq!(req.len(), 72);

    // SAFETY: plain socket(2); the result is checked, then owned by `fd`.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero sockaddr_nl is valid; family set below, pid 0 is the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `req` and `kernel` are valid for the lengths passed, for the call.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            std::ptr::addr_of!(kernel).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut reply = [0u8; 512];
    // SAFETY: `reply` is valid for writes of its length, for the call.
    let n = unsafe { libc::recv(fd.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let reply = &reply[..n as usize];
    let u16_at = |i: usize| u16::from_ne_bytes([reply[i], reply[i + 1]]);
    let u32_at = |i: usize| u32::from_ne_bytes(reply[i..i + 4].try_into().unwrap());
    if reply.len() < 16 || u16_at(4) == NLMSG_ERROR {
        // ENOENT: no such socket (it closed).
        return Ok(None);
    }
    // struct inet_diag_msg after the header: family, state, timer, retrans, sockid (48),
    // expires, then rqueue.
    const RQUEUE: usize = 16 + 4 + 48 + 4;
    if u16_at(4) != SOCK_DIAG_BY_FAMILY || reply.len() < RQUEUE + 4 {
        return Err(io::Error::other("unexpected sock_diag reply"));
    }
    Ok(Some(u64::from(u32_at(RQUEUE))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// The peer reading is the event; polling it is bounded.
    fn read_all_soon(s: &Stream) -> bool {
        wait_until(Duration::from_secs(10), || peer_has_read_all(s).unwrap())
    }

    #[test]
    fn unread_bytes_are_seen_until_the_peer_reads_them() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = Stream::Tcp(std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap());
        let mut s = l.accept().unwrap().0;
        let (u1, mut u2) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut u = Stream::Unix(u1);
        c.write_all(b"abc").unwrap();
        u.write_all(b"abc").unwrap();
        // Nobody has read yet: both report unread bytes, whether or not the TCP ack has
        // come back (before it, the bytes are in our send queue; after, in the peer's
        // receive queue).
        assert!(!peer_has_read_all(&c).unwrap());
        assert!(!peer_has_read_all(&u).unwrap());
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).unwrap();
        u2.read_exact(&mut buf).unwrap();
        assert!(read_all_soon(&c));
        assert!(read_all_soon(&u));
        assert!(wait_peer_read_all(&c, Duration::from_secs(10)));
    }
}
