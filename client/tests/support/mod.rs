//! What the CLI tests share: the client binary pointed at a server (only this crate's
//! tests know its path). Everything else comes from `sockchat_testkit`.

use std::process::{Command, Stdio};

use sockchat_client::Addr;

/// The client binary, pointed at `addr`, with fast retries for tests.
pub(crate) fn client(addr: &Addr) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockchat-client"));
    match addr {
        Addr::Tcp(a) => cmd.args(["--tcp", a]),
        Addr::Unix(p) => cmd.arg("--unix").arg(p),
    };
    cmd.stdin(Stdio::null());
    cmd
}
