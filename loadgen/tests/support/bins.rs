//! A bin dir holding the binaries `loadgen bench` and `loadgen probe` start (shared by
//! the tests that run those, included with `#[path]`: the rest of `support` is not theirs).

use std::path::{Path, PathBuf};

/// `DIR/bin` with `sockchat-server` and `loadgen` linked in.
pub(crate) fn bin_dir(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(
        sockchat_testkit::server_binary(),
        bin.join("sockchat-server"),
    )
    .unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_loadgen"), bin.join("loadgen")).unwrap();
    bin
}
