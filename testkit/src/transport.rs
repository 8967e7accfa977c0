//! The two transports every server case runs over, and how a closed or timed-out socket
//! shows in an `io::Error`.

use std::io;

/// Which listener a client connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The TCP listener.
    Tcp,
    /// The Unix socket.
    Unix,
}

/// Both transports, for tests that run the same case over each.
pub const TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::Unix];

/// Generates `mod NAME { #[test] fn tcp(); #[test] fn unix(); }` calling `NAME(Transport)`,
/// so each case is reported per transport (`handshake::tcp`, `handshake::unix`).
#[macro_export]
macro_rules! per_transport {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn tcp() {
                    super::$name($crate::transport::Transport::Tcp)
                }
                #[test]
                fn unix() {
                    super::$name($crate::transport::Transport::Unix)
                }
            }
        )*
    };
}

/// True for the errors a read or write gets once the peer has closed.
pub fn is_closed_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

/// True for the error a read gets when its timeout expires.
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
