//! What `/proc` says about a process (memory, descriptors) and a socket (bytes its peer
//! has not read yet), and bounded waits on conditions built from them.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
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
        thread::sleep(Duration::from_millis(20));
    }
}

/// True once the peer process has read every byte written on `s` so far: nothing waits in
/// our send queue or, for TCP, in the peer socket's receive queue. This is how a test
/// knows the server has consumed a partial line or frame before it sends the rest.
///
/// Unix stream sockets: `SIOCOUTQ` counts the memory of sent buffers the receiver has not
/// consumed yet, so zero means all read. TCP (loopback): `SIOCOUTQ` counts unacknowledged
/// bytes, and the peer's receive queue is its `rx_queue` in `/proc/net/tcp{,6}`.
pub fn peer_has_read_all(s: &Stream) -> io::Result<bool> {
    let mut outq: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one c_int to the pointer, which is valid for the call; the
    // descriptor belongs to `s`, which outlives the call.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut outq) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if outq != 0 {
        return Ok(false);
    }
    match s {
        Stream::Unix(_) => Ok(true),
        Stream::Tcp(t) => {
            let peer_rx = tcp_rx_queue(t.peer_addr()?, t.local_addr()?)?;
            Ok(peer_rx == Some(0))
        }
    }
}

/// The `rx_queue` of the TCP socket bound to `local` and connected to `remote`, from
/// `/proc/net/tcp` or `/proc/net/tcp6`; `None` if there is no such socket.
fn tcp_rx_queue(local: SocketAddr, remote: SocketAddr) -> io::Result<Option<u64>> {
    let (file, want_local, want_remote) = match (local, remote) {
        (SocketAddr::V4(l), SocketAddr::V4(r)) => ("/proc/net/tcp", hex_v4(&l), hex_v4(&r)),
        (SocketAddr::V6(l), SocketAddr::V6(r)) => ("/proc/net/tcp6", hex_v6(&l), hex_v6(&r)),
        _ => return Ok(None),
    };
    let table = std::fs::read_to_string(file)?;
    // Columns: sl local_address rem_address st tx_queue:rx_queue ...
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() > 4 && cols[1] == want_local && cols[2] == want_remote {
            let rx = cols[4].split_once(':').map(|(_, rx)| rx).unwrap_or("");
            return Ok(u64::from_str_radix(rx, 16).ok());
        }
    }
    Ok(None)
}

/// The kernel prints an address as the raw 32-bit words in host order, then the port.
fn hex_v4(a: &std::net::SocketAddrV4) -> String {
    format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(a.ip().octets()),
        a.port()
    )
}

fn hex_v6(a: &std::net::SocketAddrV6) -> String {
    let o = a.ip().octets();
    let words: String = o
        .chunks(4)
        .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
        .collect();
    format!("{words}:{:04X}", a.port())
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
    }
}
