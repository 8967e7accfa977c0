//! Tests whose assertions depend on timing (a rate found against a server of known
//! capacity) run alone within their test binary: the binary's other tests, which start
//! servers and load generators of their own, wait meanwhile instead of sharing the
//! machine's cores with the measurement. The lock is per test binary (each links its own
//! copy of this crate); tests in other binaries run before or after, never beside.

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

static LOCK: RwLock<()> = RwLock::new(());

/// Held for the whole of a test that may run beside the binary's others.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    // A test that panicked while holding the lock poisons it; the lock guards no data.
    LOCK.read().unwrap_or_else(PoisonError::into_inner)
}

/// Held for the whole of a timing-dependent test: no [`shared`] test runs meanwhile.
pub fn alone() -> RwLockWriteGuard<'static, ()> {
    LOCK.write().unwrap_or_else(PoisonError::into_inner)
}
