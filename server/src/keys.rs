//! The key file: one key per line, so keys can rotate without dropping anyone.
//!
//! The first line's key signs new sessions' `session_init`; every line's key verifies a
//! client's `session_ack`, and each session then answers with the key its ack was
//! signed with (see `sockchat_proto::KeyRing`). SIGHUP re-reads the file: sessions keep
//! the key they started with, new ones get the new ring, and a key taken out is refused
//! from then on.
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
use std::path::Path;
use std::sync::Arc;

use sockchat_proto::{Key, KeyRing};

use sockchat_os::KeyFileError;

/// Reads a key file into a ring (first line signs).
pub fn load_key_ring(path: &Path) -> Result<KeyRing, KeyFileError> {
    let read_err = |source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(read_err)?;
    let mode = meta.permissions().mode() & 0o777;
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

    fn file(content: &[u8], mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
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
        let ring = load_key_ring(&p).unwrap();
        assert_eq!(ring.len(), 2);
        assert!(same(ring.signing(), b"new-key"));
        assert!(same(&ring.keys()[1], b"old-key"));
        let (_d, p) = file(b"only", 0o400);
        assert_eq!(load_key_ring(&p).unwrap().len(), 1);
    }

    #[test]
    fn a_binary_key_stays_one_key_even_with_newline_bytes() {
        let secret = b"\x01\xff\nab\x00\n\x9c";
        let mut content = secret.to_vec();
        content.push(b'\n');
        let (_d, p) = file(&content, 0o600);
        let ring = load_key_ring(&p).unwrap();
        assert_eq!(ring.len(), 1);
        assert!(same(ring.signing(), secret));
    }

    #[test]
    fn refused_files() {
        let (_d, p) = file(b"k\n", 0o640);
        let e = load_key_ring(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && !e.contains("k\n"), "{e}");
        let (_d, p) = file(b"\n\r\n", 0o600);
        assert!(matches!(
            load_key_ring(&p),
            Err(KeyFileError::Empty(_))
        ));
        assert!(matches!(
            load_key_ring(Path::new("/nonexistent/keys")),
            Err(KeyFileError::Read { .. })
        ));
    }
}
