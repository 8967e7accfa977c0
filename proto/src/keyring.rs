//! [`KeyRing`]: several shared keys at once, so keys can rotate without dropping anyone.
//!
//! The first key signs what a session sends before it knows its peer's key (the
//! server's `session_init`); every key verifies the peer's first frame; from then on
//! the session answers with, and only accepts, the key that frame was signed with.

use std::sync::Arc;

use crate::codec::Key;

/// One or more keys; the first signs new sessions.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: Vec<Arc<Key>>,
}

/// A key ring needs at least one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a key ring needs at least one key")]
pub struct EmptyKeyRing;

impl KeyRing {
    /// A ring of `keys`, the first one signing.
    pub fn new(keys: Vec<Arc<Key>>) -> Result<Self, EmptyKeyRing> {
        if keys.is_empty() {
            return Err(EmptyKeyRing);
        }
        Ok(Self { keys })
    }

    /// A ring of one key.
    pub fn single(key: Arc<Key>) -> Self {
        Self { keys: vec![key] }
    }

    /// The key that signs new sessions.
    pub fn signing(&self) -> &Arc<Key> {
        &self.keys[0]
    }

    /// Every key, the signing one first.
    pub fn keys(&self) -> &[Arc<Key>] {
        &self.keys
    }

    /// How many keys (at least 1).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a ring has at least one key.
    pub fn is_empty(&self) -> bool {
        false
    }
}
