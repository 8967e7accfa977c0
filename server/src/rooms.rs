//! Routing by room membership.
//!
//! * [`RoomDirectory`] (shared by the cores and the cluster thread): which cores have
//!   members of each room. A message crosses to another core only if that core is listed
//!   for its room, and a clustered node holds a broker subscription exactly while some
//!   core is listed (the core that adds the first entry or removes the last one tells the
//!   cluster thread, under the directory's lock, so subscribe/unsubscribe keep their order).
//! * [`CoreRooms`] (one per core, single-threaded): the local members of each room, and
//!   the joins waiting for the broker to confirm the node's subscription.
//!
//! The session's own membership (what it may send to, the per-session limit) is a rule of
//! the protocol and lives in `sockchat_proto::rooms`; this module only mirrors it for
//! routing.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Mutex, MutexGuard, PoisonError};

use sockchat_proto::RoomName;

use crate::cluster::ClusterHandle;
use crate::conn::Conn;

/// Which cores have members of which room, for the whole process.
#[derive(Debug, Default)]
pub(crate) struct RoomDirectory {
    rooms: Mutex<HashMap<RoomName, Listing>>,
}

#[derive(Debug, Default)]
struct Listing {
    /// Cores with at least one member, ascending.
    cores: Vec<u16>,
    /// Clustered: the broker confirmed this node's subscription (a message published
    /// after that reaches this node).
    confirmed: bool,
}

/// What a core learns when it lists itself for a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listed {
    /// Joins are in effect now (single node, or the subscription is already confirmed).
    InEffect,
    /// The cluster thread will confirm the subscription to this core.
    AwaitConfirm,
}

impl RoomDirectory {
    fn lock(&self) -> MutexGuard<'_, HashMap<RoomName, Listing>> {
        // The map stays consistent across a panic elsewhere (every update is one call).
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Core `core` has its first member of `room`.
    pub(crate) fn add_core(
        &self,
        room: &RoomName,
        core: usize,
        cluster: Option<&ClusterHandle>,
    ) -> Listed {
        let core = core as u16;
        let mut map = self.lock();
        let listing = map.entry(room.clone()).or_default();
        let first = listing.cores.is_empty();
        if let Err(at) = listing.cores.binary_search(&core) {
            listing.cores.insert(at, core);
        }
        match cluster {
            None => Listed::InEffect,
            Some(c) => {
                if first {
                    c.subscribe(room);
                }
                if listing.confirmed {
                    Listed::InEffect
                } else {
                    c.await_confirm(room, core as usize);
                    Listed::AwaitConfirm
                }
            }
        }
    }

    /// Core `core` lost its last member of `room`.
    pub(crate) fn remove_core(
        &self,
        room: &RoomName,
        core: usize,
        cluster: Option<&ClusterHandle>,
    ) {
        let core = core as u16;
        let mut map = self.lock();
        let Some(listing) = map.get_mut(room) else {
            return;
        };
        if let Ok(at) = listing.cores.binary_search(&core) {
            listing.cores.remove(at);
        }
        if listing.cores.is_empty() {
            map.remove(room);
            if let Some(c) = cluster {
                c.unsubscribe(room);
            }
        }
    }

    /// The cluster thread confirmed the node's subscription to `room`; false if no core
    /// wants it any more.
    pub(crate) fn confirm(&self, room: &RoomName) -> bool {
        match self.lock().get_mut(room) {
            Some(l) => {
                l.confirmed = true;
                true
            }
            None => false,
        }
    }

    /// Calls `f` with each core that has members of `room`.
    pub(crate) fn for_each_core(&self, room: &RoomName, mut f: impl FnMut(usize)) {
        if let Some(l) = self.lock().get(room) {
            for &c in &l.cores {
                f(usize::from(c));
            }
        }
    }

    /// Every room some core has members of.
    #[cfg(test)]
    pub(crate) fn rooms(&self) -> Vec<RoomName> {
        self.lock().keys().cloned().collect()
    }
}

/// One core's members per room.
#[derive(Debug, Default)]
pub(crate) struct CoreRooms {
    rooms: RefCell<HashMap<RoomName, Members>>,
}

#[derive(Debug, Default)]
struct Members {
    conns: HashMap<u64, Rc<Conn>>,
    /// Sessions whose join waits for the broker to confirm the subscription.
    waiting: Vec<Rc<Conn>>,
    in_effect: bool,
}

/// What [`CoreRooms::join`] asks the caller to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JoinOutcome {
    /// Answer the join now.
    Answer,
    /// The answer waits for [`CoreRooms::confirmed`].
    Wait,
}

impl CoreRooms {
    /// Adds `conn` to `room` on core `core`. `answer`: the session asked (an implicit
    /// lobby membership is never answered).
    pub(crate) fn join(
        &self,
        room: &RoomName,
        conn: &Rc<Conn>,
        answer: bool,
        core: usize,
        directory: &RoomDirectory,
        cluster: Option<&ClusterHandle>,
    ) -> JoinOutcome {
        let mut rooms = self.rooms.borrow_mut();
        let members = match rooms.entry(room.clone()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let in_effect = directory.add_core(room, core, cluster) == Listed::InEffect;
                e.insert(Members {
                    in_effect,
                    ..Members::default()
                })
            }
        };
        members.conns.insert(conn.id, conn.clone());
        if members.in_effect {
            JoinOutcome::Answer
        } else {
            if answer {
                members.waiting.push(conn.clone());
            }
            JoinOutcome::Wait
        }
    }

    /// Removes `conn` from `room`.
    pub(crate) fn leave(
        &self,
        room: &RoomName,
        conn_id: u64,
        core: usize,
        directory: &RoomDirectory,
        cluster: Option<&ClusterHandle>,
    ) {
        let mut rooms = self.rooms.borrow_mut();
        let Some(members) = rooms.get_mut(room) else {
            return;
        };
        members.conns.remove(&conn_id);
        members.waiting.retain(|c| c.id != conn_id);
        if members.conns.is_empty() {
            rooms.remove(room);
            directory.remove_core(room, core, cluster);
        }
    }

    /// The broker confirmed the subscription to `room`: the joins waiting for it are in
    /// effect; returns those sessions.
    pub(crate) fn confirmed(&self, room: &RoomName) -> Vec<Rc<Conn>> {
        match self.rooms.borrow_mut().get_mut(room) {
            Some(m) => {
                m.in_effect = true;
                std::mem::take(&mut m.waiting)
            }
            None => Vec::new(),
        }
    }

    /// Calls `f` with each local member of `room`. `f` must not join or leave rooms
    /// (delivering only queues bytes and wakes sessions; a session closed meanwhile
    /// leaves its rooms later, from its own task).
    pub(crate) fn for_each_member(&self, room: &RoomName, mut f: impl FnMut(&Rc<Conn>)) {
        if let Some(m) = self.rooms.borrow().get(room) {
            for c in m.conns.values() {
                f(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(n: &str) -> RoomName {
        RoomName::parse(n).unwrap()
    }

    #[test]
    fn directory_lists_cores_while_they_have_members() {
        let d = RoomDirectory::default();
        let r = room("a");
        assert_eq!(d.add_core(&r, 1, None), Listed::InEffect);
        assert_eq!(d.add_core(&r, 0, None), Listed::InEffect);
        let mut seen = Vec::new();
        d.for_each_core(&r, |c| seen.push(c));
        assert_eq!(seen, vec![0, 1]);
        d.remove_core(&r, 1, None);
        d.remove_core(&r, 0, None);
        assert!(d.rooms().is_empty());
        let mut none = 0;
        d.for_each_core(&r, |_| none += 1);
        assert_eq!(none, 0, "no core: nothing crosses");
    }
}
