//! Chat delivery by room, on one core: membership events from the sessions, messages to
//! a room's members on this core, on the other cores that have members (through their
//! bounded inboxes) and on other nodes (through the cluster thread).

use std::rc::Rc;
use std::sync::Arc;

use sockchat_proto::{DeliveryTemplate, Event, Message, RoomError, RoomName};

use crate::cluster::payload;
use crate::conn::{Conn, ConnState, Proto};
use crate::fanout::Broadcast;
use crate::handler::Delivery;
use crate::rooms::JoinOutcome;
use crate::send;
use crate::stats::CoreStats;
use crate::worker::Worker;

impl Worker {
    fn rc(&self, conn: &Conn) -> Option<Rc<Conn>> {
        self.conns.borrow().get(&conn.id).cloned()
    }

    /// A session was established: in chat mode it is a member of the lobby.
    pub(crate) fn room_session_start(&self, conn: &Conn) {
        if !self.config().rooms {
            return;
        }
        if let Some(rc) = self.rc(conn) {
            // The lobby needs no answer: nobody asked.
            let _ = self.rooms.join(
                &RoomName::lobby(),
                &rc,
                false,
                self.index,
                &self.shared.directory,
                self.shared.cluster.as_ref(),
            );
        }
    }

    /// `Joined`, `Left` and `Refused` events of a session.
    pub(crate) fn room_event(&self, conn: &Conn, st: &mut ConnState, ev: Event) {
        let cluster = self.shared.cluster.as_ref();
        match ev {
            Event::Joined(room) => {
                let Some(rc) = self.rc(conn) else { return };
                let outcome = self.rooms.join(
                    &room,
                    &rc,
                    true,
                    self.index,
                    &self.shared.directory,
                    cluster,
                );
                if outcome == JoinOutcome::Answer {
                    if let Proto::Frame(s) = &mut st.proto {
                        s.confirm_join(&room);
                    }
                }
            }
            Event::Left(room) => {
                self.rooms
                    .leave(&room, conn.id, self.index, &self.shared.directory, cluster);
            }
            Event::Refused(e) => {
                tracing::debug!(session = %st.info.id, refusal = %e, "room request refused");
                self.stats.count_room_refusal(&e);
            }
            _ => {}
        }
    }

    /// The broker holds the node's subscription to `room`: answer the joins waiting.
    pub(crate) fn room_confirmed(&self, room: &RoomName) {
        for conn in self.rooms.confirmed(room) {
            let Ok(mut st) = conn.state.try_borrow_mut() else {
                continue;
            };
            if let Proto::Frame(s) = &mut st.proto {
                s.confirm_join(room);
            }
            drop(st);
            send::flush(self, &conn);
        }
    }

    /// A session ended: it leaves every room it was in.
    pub(crate) fn room_session_end(&self, conn: &Conn, st: &ConnState) {
        if !self.config().rooms {
            return;
        }
        let rooms = match &st.proto {
            Proto::Frame(s) if s.features().rooms => s.rooms(),
            _ => vec![RoomName::lobby()],
        };
        for room in rooms {
            self.rooms.leave(
                &room,
                conn.id,
                self.index,
                &self.shared.directory,
                self.shared.cluster.as_ref(),
            );
        }
    }

    /// A message from session `from_conn` (a member of its room) to the other members of
    /// the room, here, on the other cores with members, and on other nodes. Refused with
    /// an `error` frame when the node is clustered and the message is larger than the
    /// broker carries.
    pub(crate) fn send_to_room(
        &self,
        from_conn: u64,
        st: &mut ConnState,
        message: Message,
    ) -> Result<Delivery, RoomError> {
        let room = message.room.unwrap_or_else(RoomName::lobby);
        let from = st.info.id.clone();
        if let Some(cluster) = &self.shared.cluster {
            let ct = message.content_type.as_deref();
            let len =
                payload::overhead(&cluster.node_name, &room, &from, ct) + message.content.len();
            let max = cluster.stats.max_payload();
            if len > max {
                return Err(RoomError::Refused(format!(
                    "Message too large for the cluster: {len} bytes with the room envelope, \
                     the broker's max_payload is {max} bytes"
                )));
            }
            match payload::encode_message(&cluster.node_name, &room, &from, ct, &message.content) {
                Ok(p) => {
                    cluster.publish(&room, p);
                }
                Err(e) => {
                    return Err(RoomError::Refused(format!(
                        "Cannot send to the cluster: {e}"
                    )))
                }
            }
        }
        let msg = Broadcast {
            content_type: message.content_type,
            content: message.content,
            room: Some(room),
            from: Some(from),
        };
        let mut d = Delivery {
            local: self.deliver_room(&msg, Some(from_conn)),
            ..Delivery::default()
        };
        if self.shared.mailboxes.len() > 1 {
            let room = msg.room.clone().unwrap_or_else(RoomName::lobby);
            let msg = Arc::new(msg);
            self.shared.directory.for_each_core(&room, |core| {
                if core == self.index {
                    return;
                }
                if self.shared.mailboxes[core].offer(&msg) {
                    d.cores += 1;
                } else {
                    d.dropped_cores += 1;
                }
            });
        }
        Ok(d)
    }

    /// Delivers `msg` to this core's members of its room (all sessions when it has
    /// none), except `skip`; returns how many got it. The frame parts every recipient
    /// shares are prepared once (`DeliveryTemplate`); each recipient's frame is then
    /// signed for its session id.
    pub(crate) fn deliver_room(&self, msg: &Broadcast, skip: Option<u64>) -> usize {
        let tags = msg.room.clone().zip(msg.from.clone());
        let mut template =
            DeliveryTemplate::new(msg.content_type.clone(), msg.content.clone(), tags);
        let mut n = 0;
        match &msg.room {
            Some(room) => self.rooms.for_each_member(room, |conn| {
                if Some(conn.id) != skip && self.deliver(conn, &mut template) {
                    n += 1;
                }
            }),
            None => {
                for (id, c) in self.conns.borrow().iter() {
                    if Some(*id) != skip && self.deliver(c, &mut template) {
                        n += 1;
                    }
                }
            }
        }
        n
    }
}

impl CoreStats {
    /// Counts a refused room request (an application refusal; the session stays open).
    pub fn count_room_refusal(&self, e: &RoomError) {
        CoreStats::add(&self.room_refusals[e.index()], 1);
    }
}
