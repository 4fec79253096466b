//! What the actors of one thread share: the thread's [`LocalSessions`] (the
//! dispatcher's table) and its [`RoomShard`] (the sequencer's rooms).
//!
//! Everything here runs on one thread, so it is shared by `Rc` and borrowed
//! for the length of one call, never across an `await`. A session whose room
//! is sequenced on its own thread, and a sequencer whose room has members on
//! its own thread, act on this state directly instead of sending a message
//! to their neighbour's mailbox: the order is the same (one thread applies
//! both, one call at a time), and a chat line in such a room costs no actor
//! message until its delivery wakes the members.

use std::cell::RefCell;
use std::sync::Arc;

use actix::prelude::*;

use crate::actors::dispatcher::{Deliver, Dispatcher, LocalSessions};
use crate::actors::room_index::RoomIndex;
use crate::actors::sequencer::{RoomRequest, RoomShard};

/// One thread's shared state. See the module docs.
pub(crate) struct Local {
    /// This thread's index among the registry's threads.
    pub(crate) thread: usize,
    pub(crate) sessions: RefCell<LocalSessions>,
    pub(crate) rooms: RefCell<RoomShard>,
    /// Every thread's dispatcher, for deliveries to other threads.
    dispatchers: Arc<[Addr<Dispatcher>]>,
    index: Addr<RoomIndex>,
}

impl Local {
    pub(crate) fn new(
        thread: usize,
        room_capacity: usize,
        dispatchers: Arc<[Addr<Dispatcher>]>,
        index: Addr<RoomIndex>,
    ) -> Self {
        Local {
            thread,
            sessions: RefCell::default(),
            rooms: RefCell::new(RoomShard::new(room_capacity)),
            dispatchers,
            index,
        }
    }

    pub(crate) fn threads(&self) -> usize {
        self.dispatchers.len()
    }

    pub(crate) fn index(&self) -> &Addr<RoomIndex> {
        &self.index
    }

    /// Applies a step for `thread`'s members: here at once, or through
    /// that thread's dispatcher.
    pub(crate) fn deliver(&self, thread: usize, deliver: Deliver) {
        if thread == self.thread {
            self.sessions.borrow_mut().apply(deliver);
        } else if let Some(dispatcher) = self.dispatchers.get(thread) {
            dispatcher.do_send(deliver);
        }
    }

    /// Carries out a request about a room of this thread's shard.
    pub(crate) fn sequence(&self, request: RoomRequest) -> usize {
        self.rooms.borrow_mut().handle(request, self)
    }
}
