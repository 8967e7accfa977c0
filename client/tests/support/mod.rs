//! What the CLI tests share: the client binary pointed at a server. Everything else
//! comes from `sockchat_testkit`; the in-test echo server is `support/double.rs`.

use std::process::{Command, Stdio};

use sockchat_client::Addr;

/// The client binary, pointed at `addr`, with fast retries for tests.
pub fn client(addr: &Addr) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockchat-client"));
    match addr {
        Addr::Tcp(a) => cmd.args(["--tcp", a]),
        Addr::Unix(p) => cmd.arg("--unix").arg(p),
    };
    cmd.stdin(Stdio::null());
    cmd
}

/// Bytes as text, for assertions and messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
