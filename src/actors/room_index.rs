//! The RoomIndex actor: every room with its member count, for `ROOMS`.
//!
//! Sequencers report each change of a room's member count; the index keeps
//! the rooms sorted by name and shares one [`RoomList`] with every requester
//! until the next change, so a protocol renders a large list once per change,
//! not once per request. A sequencer reports a change before it answers the
//! request that caused it, so a session that has seen its own `JOIN` finds
//! the room here.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;

use crate::handle::{RequestId, SessionHandle};
use crate::room::{Answer, RoomList, RoomName};

/// `room` now has `members` members (0: it no longer exists).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RoomSize {
    pub room: RoomName,
    pub members: usize,
}

/// Answer `requester`'s request with the room list.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ListFor {
    pub requester: SessionHandle,
    pub request: RequestId,
}

/// The room list, for the registry.
#[derive(Message)]
#[rtype(result = "Arc<RoomList>")]
pub(crate) struct Snapshot;

/// See the module docs.
#[derive(Default)]
pub struct RoomIndex {
    /// Sorted by byte order for free.
    rooms: BTreeMap<RoomName, usize>,
    /// The list as of the last change, built on first request.
    list: Option<Arc<RoomList>>,
}

impl RoomIndex {
    fn list(&mut self) -> Arc<RoomList> {
        let rooms = &self.rooms;
        self.list
            .get_or_insert_with(|| {
                let rooms = rooms.iter().map(|(room, &n)| (room.clone(), n));
                Arc::new(RoomList::new(rooms.collect()))
            })
            .clone()
    }
}

impl Actor for RoomIndex {
    type Context = Context<Self>;
}

impl Handler<RoomSize> for RoomIndex {
    type Result = ();

    fn handle(&mut self, RoomSize { room, members }: RoomSize, _: &mut Context<Self>) {
        let changed = if members == 0 {
            self.rooms.remove(&room).is_some()
        } else {
            self.rooms.insert(room, members) != Some(members)
        };
        if changed {
            self.list = None;
        }
    }
}

impl Handler<ListFor> for RoomIndex {
    type Result = ();

    fn handle(&mut self, ListFor { requester, request }: ListFor, _: &mut Context<Self>) {
        requester.answer(request, Answer::Rooms(self.list()).into());
    }
}

impl Handler<Snapshot> for RoomIndex {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.list())
    }
}
