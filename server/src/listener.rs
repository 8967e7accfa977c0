//! Binding the listening sockets, before any runtime starts.
//!
//! * TCP: one socket per core with `SO_REUSEPORT`, so the kernel spreads connections
//!   over the cores. Core 0's is bound first; with port 0 the others are bound to the
//!   port it got.
//! * Unix: Linux refuses `SO_REUSEPORT` on `AF_UNIX`, so each path is bound once and the
//!   same listening socket (one `dup` per core) is accepted from on every core. The file
//!   gets its mode with `fchmod`-equivalent `chmod` after `bind` and *before* `listen`:
//!   until `listen` nobody can connect, so there is no window with looser permissions.
//!   An existing socket file with a live server behind it is an error; a stale one (a
//!   connect is refused) is replaced.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::worker::CoreListeners;

/// Listen backlog.
const BACKLOG: i32 = 4096;

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// Binding a TCP address failed.
    #[error("cannot listen on tcp {addr}: {source}")]
    Tcp {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// Binding a Unix path failed.
    #[error("cannot listen on unix {path}: {source}")]
    Unix {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The socket file has a live server behind it.
    #[error("unix socket {0} is already in use: a live server is listening on it")]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
}

/// A bound listener, as announced on stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address (with the real port).
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "tcp {a}"),
            ListenAddr::Unix(p) => write!(f, "unix {}", p.display()),
        }
    }
}

/// A Unix socket file this process created, removed on drop if it is still ours.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file if it is still the one we bound (not replaced by someone else).
    pub(crate) fn remove(&self) {
        if let Ok(m) = fs::symlink_metadata(&self.path) {
            if m.dev() == self.dev && m.ino() == self.ino {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// Everything bound: per-core listeners, what to announce, files to remove at exit.
#[derive(Debug)]
pub(crate) struct Bound {
    pub(crate) per_core: Vec<CoreListeners>,
    pub(crate) addrs: Vec<ListenAddr>,
    pub(crate) files: Vec<SocketFile>,
}

fn tcp_socket(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_cloexec(true)?;
    s.bind(&SockAddr::from(addr))?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// Checks `path` before binding: absent → fine; a stale socket → removed; a live one
/// or a non-socket → error.
fn clear_stale(path: &Path) -> Result<(), ListenError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ListenError::Unix {
                path: path.into(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ListenError::NotASocket(path.into()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(ListenError::InUse(path.into())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing stale socket file");
            match fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(ListenError::Unix {
                    path: path.into(),
                    source,
                }),
            }
        }
        Err(source) => Err(ListenError::Unix {
            path: path.into(),
            source,
        }),
    }
}

fn unix_socket(
    path: &Path,
    mode: u32,
) -> Result<(std::os::unix::net::UnixListener, SocketFile), ListenError> {
    clear_stale(path)?;
    let err = |source| ListenError::Unix {
        path: path.into(),
        source,
    };
    let s = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(err)?;
    s.set_cloexec(true).map_err(err)?;
    s.bind(&SockAddr::unix(path).map_err(err)?).map_err(err)?;
    let meta = fs::symlink_metadata(path).map_err(err)?;
    let file = SocketFile {
        path: path.into(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    // Before listen(): nobody can connect until the mode is in force.
    if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(mode)) {
        file.remove();
        return Err(err(e));
    }
    if let Err(e) = s.listen(BACKLOG) {
        file.remove();
        return Err(err(e));
    }
    Ok((s.into(), file))
}

/// Binds every listener for `cores` cores. On error, socket files already created are
/// removed.
pub(crate) fn bind_all(
    tcp: &[SocketAddr],
    unix: &[PathBuf],
    unix_mode: u32,
    cores: usize,
) -> Result<Bound, ListenError> {
    let mut bound = Bound {
        per_core: (0..cores).map(|_| CoreListeners::default()).collect(),
        addrs: Vec::new(),
        files: Vec::new(),
    };
    let result = bind_into(&mut bound, tcp, unix, unix_mode, cores);
    if let Err(e) = result {
        for f in &bound.files {
            f.remove();
        }
        return Err(e);
    }
    Ok(bound)
}

fn bind_into(
    bound: &mut Bound,
    tcp: &[SocketAddr],
    unix: &[PathBuf],
    unix_mode: u32,
    cores: usize,
) -> Result<(), ListenError> {
    for &addr in tcp {
        let err = |source| ListenError::Tcp { addr, source };
        let first = tcp_socket(addr).map_err(err)?;
        let real = first.local_addr().map_err(err)?;
        bound.per_core[0].tcp.push(first);
        for core in bound.per_core.iter_mut().skip(1) {
            core.tcp.push(tcp_socket(real).map_err(err)?);
        }
        bound.addrs.push(ListenAddr::Tcp(real));
    }
    for path in unix {
        let (l, file) = unix_socket(path, unix_mode)?;
        bound.files.push(file);
        let err = |source| ListenError::Unix {
            path: path.clone(),
            source,
        };
        for core in bound.per_core.iter_mut().skip(1) {
            core.unix.push(l.try_clone().map_err(err)?);
        }
        bound.per_core[0].unix.push(l);
        bound.addrs.push(ListenAddr::Unix(path.clone()));
    }
    debug_assert!(bound.per_core.len() == cores);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sockchat-listen-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn tcp_port_zero_is_shared_by_all_cores() {
        let b = bind_all(&["127.0.0.1:0".parse().unwrap()], &[], 0o660, 3).unwrap();
        let ListenAddr::Tcp(a) = b.addrs[0].clone() else {
            panic!()
        };
        assert_ne!(a.port(), 0);
        for c in &b.per_core {
            assert_eq!(c.tcp[0].local_addr().unwrap(), a);
        }
    }

    #[test]
    fn unix_mode_live_and_stale() {
        let d = tmp("unix");
        let p = d.join("s.sock");
        let b = bind_all(&[], std::slice::from_ref(&p), 0o600, 2).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(b.per_core[1].unix.len(), 1);
        // Live: refused.
        let e = bind_all(&[], std::slice::from_ref(&p), 0o600, 1).unwrap_err();
        assert!(e.to_string().contains("already in use"), "{e}");
        // Stale: replaced.
        drop(b);
        let b = bind_all(&[], std::slice::from_ref(&p), 0o660, 1).unwrap();
        b.files[0].remove();
        assert!(!p.exists());
        // Not a socket: refused, untouched.
        fs::write(&p, b"x").unwrap();
        assert!(matches!(
            bind_all(&[], std::slice::from_ref(&p), 0o660, 1),
            Err(ListenError::NotASocket(_))
        ));
        assert!(p.exists());
        fs::remove_dir_all(&d).unwrap();
    }
}
