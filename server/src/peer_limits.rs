//! `--max-sessions-per-peer`: how many sessions each peer holds, across all cores.
//!
//! A peer is a TCP client's IP address (the one a PROXY header names, with
//! `--proxy-protocol`) or a Unix client's uid from its peer credentials. Counts are
//! taken on accept and given back when the session ends: never per message. The map is
//! sharded by peer so that cores accepting from different peers rarely meet on a lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;

use crate::handler::Peer;

const SHARDS: usize = 64;

/// What the limit counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PeerKey {
    /// A TCP client's address (IPv4-mapped IPv6 addresses count as IPv4).
    Ip(IpAddr),
    /// A Unix client's user.
    Uid(u32),
}

impl PeerKey {
    /// The key of `peer`; `None` when the peer is not known (not limited).
    pub(crate) fn of(peer: &Peer) -> Option<PeerKey> {
        match peer {
            Peer::Tcp(a) => Some(PeerKey::Ip(a.ip().to_canonical())),
            Peer::Unix { uid, .. } => Some(PeerKey::Uid(*uid)),
            Peer::Unknown => None,
        }
    }
}

/// Sessions per peer, all cores together.
#[derive(Debug)]
pub(crate) struct PeerLimits {
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<PeerKey, usize>>>,
}

impl Default for PeerLimits {
    fn default() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl PeerLimits {
    fn shard(&self, key: &PeerKey) -> std::sync::MutexGuard<'_, HashMap<PeerKey, usize>> {
        let m = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one more session for `key` unless it already holds `limit`; true if counted.
    pub(crate) fn try_acquire(&self, key: PeerKey, limit: usize) -> bool {
        let mut shard = self.shard(&key);
        let n = shard.entry(key).or_insert(0);
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    /// Gives back one session of `key`.
    pub(crate) fn release(&self, key: PeerKey) {
        let mut shard = self.shard(&key);
        if let Some(n) = shard.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                shard.remove(&key);
            }
        }
    }

    /// Sessions `key` holds now.
    #[cfg(test)]
    fn count(&self, key: PeerKey) -> usize {
        self.shard(&key).get(&key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_peer() {
        let l = PeerLimits::default();
        let a = PeerKey::of(&Peer::Tcp("10.0.0.1:5000".parse().unwrap())).unwrap();
        let a2 = PeerKey::of(&Peer::Tcp("[::ffff:10.0.0.1]:6000".parse().unwrap())).unwrap();
        let b = PeerKey::Uid(1000);
        assert_eq!(a, a2, "IPv4-mapped addresses are the same peer");
        assert!(l.try_acquire(a, 2));
        assert!(l.try_acquire(a2, 2));
        assert!(!l.try_acquire(a, 2));
        assert!(l.try_acquire(b, 2));
        l.release(a);
        assert!(l.try_acquire(a, 2));
        l.release(a);
        l.release(a);
        assert_eq!(l.count(a), 0);
        assert_eq!(PeerKey::of(&Peer::Unknown), None);
    }
}
