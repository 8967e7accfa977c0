//! The shared secrets from a key file, read the same way by the server, the client and
//! loadgen, so a file one of them accepts the others accept too.
//!
//! The file holds one key per line, so keys can rotate without dropping anyone: the first
//! line's key signs (the server's `session_init`, a client's `session_ack`), and the
//! server verifies a client's ack with any of them (see `sockchat_proto::KeyRing`).
//!
//! A text file (UTF-8 without control characters other than line endings and tabs) is
//! read one key per line, each line byte for byte less its line ending (`\n` or
//! `\r\n`), blank lines skipped. Any other file is one binary key, less one trailing
//! newline: the format of earlier versions, whose documentation suggested 32 random
//! bytes, which may well contain a newline byte that must not split the key. Rotation
//! needs text keys (e.g. `head -c 32 /dev/urandom | base64`). The file must not be
//! accessible by group or others. Key bytes are never logged, and the buffer read is
//! wiped.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sockchat_proto::{Key, KeyRing};

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

/// Reads a key file into a ring (the first key signs); see the module documentation for
/// the format. Refuses a file that group or others can access (a symlink is judged by its
/// target) and one that holds no key.
pub fn read_key_ring(path: &Path) -> Result<KeyRing, KeyFileError> {
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
    let keys: Vec<Arc<Key>> = if is_text(&bytes) {
        bytes
            .split(|b| *b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.is_empty())
            .map(|line| Arc::new(Key::new(line)))
            .collect()
    } else {
        let mut key: &[u8] = &bytes;
        if let Some(k) = key.strip_suffix(b"\n") {
            key = k.strip_suffix(b"\r").unwrap_or(k);
        }
        if key.is_empty() {
            Vec::new()
        } else {
            vec![Arc::new(Key::new(key))]
        }
    };
    // Do not leave the secrets lying around in freed memory longer than needed.
    bytes.iter_mut().for_each(|b| *b = 0);
    KeyRing::new(keys).map_err(|_| KeyFileError::Empty(path.to_path_buf()))
}

/// Reads a key file and returns the key that signs (its first): what a client or loadgen
/// uses. Same format and checks as [`read_key_ring`].
pub fn read_key_file(path: &Path) -> Result<Key, KeyFileError> {
    let ring = read_key_ring(path)?;
    Ok(Key::clone(ring.signing()))
}

/// True for UTF-8 text whose only control characters are line endings and tabs.
fn is_text(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|t| {
        t.chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
    })
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
        // A text file is one key per line: a blank line is no part of any key.
        fs::write(&p, b"sekrit\n\n").unwrap();
        assert!(same_key(&read_key_file(&p).unwrap(), &Key::new(b"sekrit")));
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

    fn file(content: &[u8], mode: u32) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keys");
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        (d, p)
    }

    fn same(a: &Key, b: &[u8]) -> bool {
        a.sign(b"h", b"c") == Key::new(b).sign(b"h", b"c")
    }

    #[test]
    fn one_key_per_line_first_signs() {
        let (_d, p) = file(b"new-key\r\nold-key\n\n", 0o600);
        let ring = read_key_ring(&p).unwrap();
        assert_eq!(ring.len(), 2);
        assert!(same(ring.signing(), b"new-key"));
        assert!(same(&ring.keys()[1], b"old-key"));
        let (_d, p) = file(b"only", 0o400);
        assert_eq!(read_key_ring(&p).unwrap().len(), 1);
    }

    #[test]
    fn a_binary_key_stays_one_key_even_with_newline_bytes() {
        let secret = b"\x01\xff\nab\x00\n\x9c";
        let mut content = secret.to_vec();
        content.push(b'\n');
        let (_d, p) = file(&content, 0o600);
        let ring = read_key_ring(&p).unwrap();
        assert_eq!(ring.len(), 1);
        assert!(same(ring.signing(), secret));
    }

    #[test]
    fn refused_files() {
        let (_d, p) = file(b"k\n", 0o640);
        let e = read_key_ring(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && !e.contains("k\n"), "{e}");
        let (_d, p) = file(b"\n\r\n", 0o600);
        assert!(matches!(read_key_ring(&p), Err(KeyFileError::Empty(_))));
        assert!(matches!(
            read_key_ring(Path::new("/nonexistent/keys")),
            Err(KeyFileError::Read { .. })
        ));
    }
}
