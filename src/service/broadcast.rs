//! Broadcast rooms: a message from a member goes to every other member of
//! its room (or to every member, with `broadcast_to_sender`).
//!
//! Frames are encoded once, into the room's batch: the bytes of every frame
//! broadcast in the room during one loop iteration, back to back. At the
//! end of the iteration the loop writes the batch to each member with one
//! vectored write, skipping the member's own frames, so that a member gets
//! at most one write system call per iteration however many messages were
//! sent to it, and no member costs an allocation or a copy. Only a member
//! whose socket will not take it all has the rest queued, by reference.
//!
//! Rooms hold connection keys, never sockets.

use crate::proto::{frame, MessageKind};
use slab::Slab;
use std::collections::HashMap;

pub type RoomId = usize;

/// Longest room name, in bytes of UTF-8.
pub const MAX_ROOM_NAME: usize = 128;

/// A member of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub conn: usize,
    /// Asked for presence notices (`?presence=1`), under this name.
    pub presence: Option<Box<str>>,
}

/// A frame in a room's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Where it ends in the batch (it starts where the previous one ends).
    pub end: usize,
    /// Who sent it (`None`: published over HTTP, or a presence notice).
    pub sender: Option<usize>,
    /// A presence notice: only for members that asked for them, so plain
    /// broadcast clients see exactly the messages members sent.
    pub presence: bool,
}

#[derive(Debug)]
pub struct Room {
    pub name: Box<str>,
    /// In no particular order.
    pub members: Vec<Member>,
    /// This iteration's frames, encoded once, back to back.
    pub batch: Vec<u8>,
    pub frames: Vec<Frame>,
}

#[derive(Debug, Default)]
pub struct Rooms {
    rooms: Slab<Room>,
    by_name: HashMap<Box<str>, RoomId>,
    /// Rooms with a batch waiting to be written.
    dirty: Vec<RoomId>,
}

impl Rooms {
    /// Adds connection `conn` to room `name`, creating the room. With
    /// `presence`, the member gets join/leave notices (its own join first).
    pub fn join(&mut self, name: &str, conn: usize, presence: Option<&str>) -> RoomId {
        let id = match self.by_name.get(name) {
            Some(&id) => id,
            None => {
                let id = self.rooms.insert(Room {
                    name: name.into(),
                    members: Vec::new(),
                    batch: Vec::new(),
                    frames: Vec::new(),
                });
                self.by_name.insert(name.into(), id);
                id
            }
        };
        self.rooms[id].members.push(Member {
            conn,
            presence: presence.map(Into::into),
        });
        self.notify(id, "join", presence);
        id
    }

    /// Removes connection `conn` from `room` (a no-op if it is not there);
    /// the room goes when empty. O(members): leaving is rare next to
    /// delivering, and this keeps the member list a plain vector.
    pub fn leave(&mut self, room: RoomId, conn: usize) {
        let Some(r) = self.rooms.get_mut(room) else { return };
        let Some(i) = r.members.iter().position(|m| m.conn == conn) else {
            return;
        };
        let gone = r.members.swap_remove(i);
        if r.members.is_empty() {
            let r = self.rooms.remove(room);
            self.by_name.remove(&r.name);
        } else {
            self.notify(room, "leave", gone.presence.as_deref());
        }
    }

    /// Queues a presence notice for the members that asked for them:
    /// `{"type":"presence","event":"join","name":"Alice","members":3}`
    /// (`name` is null for members that gave none).
    fn notify(&mut self, room: RoomId, event: &str, name: Option<&str>) {
        let r = &mut self.rooms[room];
        if r.members.iter().all(|m| m.presence.is_none()) {
            return;
        }
        // serde_json escapes the name (or writes null).
        let name = serde_json::to_string(&name).expect("a string serialises");
        let notice = format!(
            r#"{{"type":"presence","event":"{event}","name":{name},"members":{}}}"#,
            r.members.len()
        );
        if r.batch.is_empty() {
            self.dirty.push(room);
        }
        frame::write(&mut r.batch, MessageKind::Text.opcode(), notice.as_bytes(), None);
        r.frames.push(Frame {
            end: r.batch.len(),
            sender: None,
            presence: true,
        });
    }

    pub fn find(&self, name: &str) -> Option<RoomId> {
        self.by_name.get(name).copied()
    }

    #[cfg(test)]
    pub fn get(&self, room: RoomId) -> Option<&Room> {
        self.rooms.get(room)
    }

    pub fn get_mut(&mut self, room: RoomId) -> Option<&mut Room> {
        self.rooms.get_mut(room)
    }

    /// Number of rooms.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Encodes a message once into the room's batch. Returns the number of
    /// recipients.
    pub fn publish(
        &mut self,
        room: RoomId,
        sender: Option<usize>,
        to_sender: bool,
        kind: MessageKind,
        payload: &[u8],
    ) -> usize {
        let r = &mut self.rooms[room];
        let recipients = r.members.len() - usize::from(sender.is_some() && !to_sender);
        if recipients == 0 {
            return 0;
        }
        if r.batch.is_empty() {
            self.dirty.push(room);
        }
        frame::write(&mut r.batch, kind.opcode(), payload, None);
        r.frames.push(Frame {
            end: r.batch.len(),
            sender,
            presence: false,
        });
        recipients
    }

    /// Takes the list of rooms with batches to write (the caller hands the
    /// emptied vector back with [`Rooms::restore_dirty`] to keep its memory).
    pub fn take_dirty(&mut self) -> Vec<RoomId> {
        std::mem::take(&mut self.dirty)
    }

    pub fn restore_dirty(&mut self, mut v: Vec<RoomId>) {
        v.clear();
        if self.dirty.is_empty() {
            self.dirty = v;
        }
    }
}

/// Parses the room of a `/broadcast` path: `/broadcast` is the room
/// `default`; `/broadcast/{room}` is `{room}` percent-decoded, which must be
/// 1 to 128 bytes of UTF-8.
pub fn room_name(path: &str) -> Option<Result<String, &'static str>> {
    let rest = path.strip_prefix("/broadcast")?;
    if rest.is_empty() {
        return Some(Ok("default".to_string()));
    }
    let raw = rest.strip_prefix('/')?;
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8();
    Some(match decoded {
        Err(_) => Err("room name is not UTF-8"),
        Ok(n) if n.is_empty() => Err("empty room name"),
        Ok(n) if n.len() > MAX_ROOM_NAME => Err("room name longer than 128 bytes"),
        Ok(n) => Ok(n.into_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert_eq!(room_name("/broadcast"), Some(Ok("default".into())));
        assert_eq!(room_name("/broadcast/lobby"), Some(Ok("lobby".into())));
        assert_eq!(
            room_name("/broadcast/caf%C3%A9%20au%20lait"),
            Some(Ok("café au lait".into()))
        );
        assert_eq!(room_name("/broadcast/"), Some(Err("empty room name")));
        assert_eq!(room_name("/broadcast/%FF"), Some(Err("room name is not UTF-8")));
        assert_eq!(
            room_name(&format!("/broadcast/{}", "a".repeat(128))),
            Some(Ok("a".repeat(128)))
        );
        assert!(matches!(
            room_name(&format!("/broadcast/{}", "a".repeat(129))),
            Some(Err(_))
        ));
        assert_eq!(room_name("/broadcasting"), None);
        assert_eq!(room_name("/echo"), None);
    }

    #[test]
    fn rooms_come_and_go() {
        let mut rooms = Rooms::default();
        let a = rooms.join("a", 10, None);
        assert_eq!(rooms.join("a", 11, None), a);
        let b = rooms.join("b", 12, None);
        assert_ne!(a, b);
        rooms.leave(a, 10);
        rooms.leave(a, 10); // twice is harmless
        assert_eq!(
            rooms.get(a).unwrap().members,
            [Member {
                conn: 11,
                presence: None
            }]
        );
        rooms.leave(a, 11);
        assert!(rooms.find("a").is_none());
        rooms.leave(a, 11); // so is leaving a room that is gone
        assert_eq!(rooms.len(), 1);
    }

    #[test]
    fn publish_encodes_once_and_counts_recipients() {
        let mut rooms = Rooms::default();
        let r = rooms.join("r", 1, None);
        rooms.join("r", 2, None);
        rooms.join("r", 3, None);
        assert_eq!(rooms.publish(r, Some(1), false, MessageKind::Text, b"hi"), 2);
        assert_eq!(rooms.publish(r, Some(1), true, MessageKind::Text, b"hi"), 3);
        assert_eq!(rooms.publish(r, None, false, MessageKind::Binary, b"x"), 3);
        let room = rooms.get(r).unwrap();
        assert_eq!(room.batch, b"\x81\x02hi\x81\x02hi\x82\x01x");
        let ends: Vec<(usize, Option<usize>)> = room.frames.iter().map(|f| (f.end, f.sender)).collect();
        assert_eq!(ends, [(4, Some(1)), (8, Some(1)), (11, None)]);
        assert!(room.frames.iter().all(|f| !f.presence));
        assert_eq!(rooms.take_dirty(), [r]);
    }

    #[test]
    fn presence_notices_only_when_someone_asked() {
        let mut rooms = Rooms::default();
        let r = rooms.join("r", 1, None);
        rooms.join("r", 2, None);
        assert!(rooms.get(r).unwrap().batch.is_empty(), "nobody asked: no notices");
        rooms.join("r", 3, Some("Zoë \"z\""));
        rooms.leave(r, 1);
        let room = rooms.get(r).unwrap();
        assert!(room.frames.iter().all(|f| f.presence && f.sender.is_none()));
        let text = String::from_utf8_lossy(&room.batch).into_owned();
        assert!(
            text.contains(r#"{"type":"presence","event":"join","name":"Zoë \"z\"","members":3}"#),
            "{text}"
        );
        assert!(
            text.contains(r#"{"type":"presence","event":"leave","name":null,"members":2}"#),
            "{text}"
        );
    }
}
