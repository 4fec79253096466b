//! The words rooms are spoken of in: names, members, the answers a session
//! gets to its requests, and the room list.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::event::Wire;
use crate::handle::{SessionHandle, SessionId};

/// A room's name, shared rather than copied between the actors that know it.
pub type RoomName = Arc<str>;

/// Another session found by [`SessionContext::find_name`] or
/// [`SessionContext::find_session`](crate::SessionContext::find_session).
///
/// [`SessionContext::find_name`]: crate::SessionContext::find_name
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its id.
    pub id: SessionId,
    /// Its name, in its owner's spelling.
    pub name: Arc<str>,
    /// How to send it events.
    pub handle: SessionHandle,
}

/// Every room with its member count, sorted by name in byte order; one list
/// is shared by every requester until membership changes.
#[derive(Debug, Default)]
pub struct RoomList {
    /// Rooms and member counts.
    pub rooms: Vec<(RoomName, usize)>,
    /// The list as a protocol renders it, once per wire format per change.
    rendered: [OnceLock<Bytes>; 2],
}

impl RoomList {
    pub(crate) fn new(rooms: Vec<(RoomName, usize)>) -> Self {
        RoomList {
            rooms,
            rendered: Default::default(),
        }
    }

    /// The list rendered by `render` in `wire`: rendered once per wire format
    /// for every requester until the list changes, so a large `ROOMS` reply
    /// costs one allocation per change, not one per request.
    pub fn rendered(
        &self,
        wire: Wire,
        render: impl FnOnce(&[(RoomName, usize)]) -> Bytes,
    ) -> Bytes {
        let slot = match wire {
            Wire::Text => &self.rendered[0],
            Wire::Json => &self.rendered[1],
        };
        slot.get_or_init(|| render(&self.rooms)).clone()
    }
}

/// The answer to a request a session's protocol made through its
/// [`SessionContext`](crate::SessionContext). Answers reach the protocol in
/// the order the requests were made, and after every event the request caused
/// for this session (its own `JOIN`, `LEAVE` or `NICK` line comes first).
#[derive(Debug, Clone)]
pub enum Answer {
    /// The session is now a member of `room`.
    Joined {
        /// The room.
        room: RoomName,
        /// Every member's name in join order, the session's own last.
        members: Vec<Arc<str>>,
    },
    /// The room already has `capacity` members; nothing changed.
    RoomFull {
        /// The room.
        room: RoomName,
        /// Its capacity.
        capacity: usize,
    },
    /// The session has left `room`.
    Left {
        /// The room.
        room: RoomName,
    },
    /// The session's name changed from `old` to `new`; its room, if any,
    /// was sent the announcement.
    Renamed {
        /// The name before.
        old: Arc<str>,
        /// The name after.
        new: Arc<str>,
        /// The room that was told.
        room: Option<RoomName>,
    },
    /// Another session holds `name` (compared case-insensitively).
    NameTaken {
        /// The name asked for.
        name: Arc<str>,
    },
    /// The members of a room, in join order (none when it does not exist).
    Members {
        /// The room.
        room: RoomName,
        /// Their names.
        members: Vec<Arc<str>>,
    },
    /// Every room with its member count.
    Rooms(Arc<RoomList>),
    /// The session looked for, if it exists.
    Found(Option<Peer>),
    /// The request needs the cluster engine (`--cluster`), which cannot be
    /// reached now; nothing changed.
    Unavailable {
        /// The request was a broadcast to the session's room (it was not
        /// sent), rather than a request the protocol waits for.
        broadcast: bool,
    },
}

/// What a session's request may be answered with: an [`Answer`] for its
/// protocol, or a step the session takes care of itself.
#[derive(Debug, Clone)]
pub(crate) enum Response {
    Answer(Answer),
    /// A seat in the room is held; the session leaves its old room next.
    Reserved,
    /// The session's broadcast was sequenced (its own copy came first).
    Published,
    /// The name is the session's now; its room is told next.
    Claimed,
}

impl From<Answer> for Response {
    fn from(answer: Answer) -> Self {
        Response::Answer(answer)
    }
}
