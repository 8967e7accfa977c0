//! The shared secret from a key file, read the same way by the server, the client and
//! loadgen, so a file one of them accepts the others accept too.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sockchat_proto::Key;

/// Why a key file was refused. The messages name the file, never its content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The key file is readable by group or others.
    #[error(
        "key file {path} is accessible by group or others (mode {mode:o}); \
         run `chmod 600 {path}`"
    )]
    Mode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file is empty.
    #[error("key file {0} is empty")]
    Empty(PathBuf),
}

/// Reads a key file: refuses one that group or others can access (a symlink is judged by
/// its target), drops one trailing newline (`\n` or `\r\n`), refuses an empty key. The
/// key bytes are never logged, and are zeroed once keyed.
pub fn read_key_file(path: &Path) -> Result<Key, KeyFileError> {
    let read_err = |source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mode = fs::metadata(path).map_err(read_err)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Mode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut bytes = fs::read(path).map_err(read_err)?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(KeyFileError::Empty(path.to_path_buf()));
    }
    let key = Key::new(&bytes);
    // Do not leave the secret lying around in freed memory longer than needed.
    bytes.iter_mut().for_each(|b| *b = 0);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_key(a: &Key, b: &Key) -> bool {
        a.sign(b"h", b"c") == b.sign(b"h", b"c")
    }

    #[test]
    fn mode_and_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        fs::write(&p, b"sekrit\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_key_file(&p).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(
            err.contains("group or others") && err.contains("644"),
            "{err}"
        );
        assert!(!err.contains("sekrit"));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        let k = read_key_file(&p).unwrap();
        assert!(same_key(&k, &Key::new(b"sekrit")));
        fs::write(&p, b"sekrit\r\n").unwrap();
        assert!(same_key(&read_key_file(&p).unwrap(), &Key::new(b"sekrit")));
        // Only one newline is dropped: the rest is part of the secret.
        fs::write(&p, b"sekrit\n\n").unwrap();
        assert!(same_key(
            &read_key_file(&p).unwrap(),
            &Key::new(b"sekrit\n")
        ));
        fs::write(&p, b"\n").unwrap();
        assert!(matches!(read_key_file(&p), Err(KeyFileError::Empty(_))));
        assert!(matches!(
            read_key_file(&dir.path().join("missing")),
            Err(KeyFileError::Read { .. })
        ));
    }

    #[test]
    fn a_symlink_is_judged_by_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        fs::write(&p, b"sekrit").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(matches!(
            read_key_file(&link),
            Err(KeyFileError::Mode { mode: 0o644, .. })
        ));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(same_key(
            &read_key_file(&link).unwrap(),
            &Key::new(b"sekrit")
        ));
    }
}
