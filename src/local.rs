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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use actix::prelude::*;

use crate::actors::dispatcher::{Deliver, Dispatcher, LocalSessions, TakeCrossings};
use crate::actors::room_index::RoomIndex;
use crate::actors::sequencer::{RoomRequest, RoomShard};
use crate::event::SharedEvent;
use crate::handle::SessionHandle;
use crate::metrics::{Metrics, ThreadCounters};

/// One thread's shared state. See the module docs.
pub(crate) struct Local {
    /// This thread's index among the registry's threads.
    pub(crate) thread: usize,
    pub(crate) sessions: RefCell<LocalSessions>,
    pub(crate) rooms: RefCell<RoomShard>,
    /// The way into every thread, for room traffic to other threads.
    links: Arc<[Link]>,
    index: Addr<RoomIndex>,
    /// Set by the registry, at once for every thread, when shutdown begins.
    shutting_down: Arc<AtomicBool>,
    /// The server's counters; this thread writes its own block of them.
    pub(crate) metrics: Arc<Metrics>,
}

impl Local {
    pub(crate) fn new(
        thread: usize,
        room_capacity: usize,
        (links, index, shutting_down, metrics): (
            Arc<[Link]>,
            Addr<RoomIndex>,
            Arc<AtomicBool>,
            Arc<Metrics>,
        ),
    ) -> Self {
        Local {
            thread,
            sessions: RefCell::default(),
            rooms: RefCell::new(RoomShard::new(room_capacity)),
            links,
            index,
            shutting_down,
            metrics,
        }
    }

    /// This thread's hot counters.
    pub(crate) fn counters(&self) -> &ThreadCounters {
        self.metrics.thread(self.thread)
    }

    /// Whether the server's shutdown has begun.
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    pub(crate) fn threads(&self) -> usize {
        self.links.len()
    }

    pub(crate) fn index(&self) -> &Addr<RoomIndex> {
        &self.index
    }

    /// Applies a step for `thread`'s members: here at once, or through
    /// that thread's dispatcher.
    pub(crate) fn deliver(&self, thread: usize, deliver: Deliver) {
        if thread == self.thread {
            self.sessions.borrow_mut().apply(deliver);
        } else if let Some(link) = self.links.get(thread) {
            link.send(Crossing::Deliver(deliver));
        }
    }

    /// Sends `event` to the session behind `handle`, which runs on `thread`:
    /// through that thread's link, behind the room traffic this thread's
    /// sessions caused there before; at once on this thread, where that
    /// traffic is already applied.
    pub(crate) fn send_to(&self, thread: usize, handle: &SessionHandle, event: SharedEvent) {
        match self.links.get(thread) {
            Some(link) if thread != self.thread => {
                link.send(Crossing::ToSession(handle.clone(), event));
            }
            _ => handle.send_shared(event),
        }
    }

    /// Applies what other threads sent this one, in the order they sent it.
    pub(crate) fn take_crossings(&self) {
        let Some(link) = self.links.get(self.thread) else {
            return;
        };
        for crossing in link.take() {
            match crossing {
                Crossing::Request(request) => {
                    self.sequence(request);
                }
                Crossing::Deliver(deliver) => self.sessions.borrow_mut().apply(deliver),
                Crossing::ToSession(handle, event) => handle.send_shared(event),
            }
        }
    }

    /// Carries out a request about a room of this thread's shard.
    pub(crate) fn sequence(&self, request: RoomRequest) -> usize {
        self.rooms.borrow_mut().handle(request, self)
    }
}

/// Room traffic from one thread to another.
pub(crate) enum Crossing {
    /// For a room sequenced on the receiving thread.
    Request(RoomRequest),
    /// For the receiving thread's members of a room.
    Deliver(Deliver),
    /// For one session of the receiving thread.
    ToSession(SessionHandle, SharedEvent),
}

/// The way into one thread for room traffic from the others: a queue that
/// wakes the thread's dispatcher once per batch, not once per request, so a
/// busy thread takes many crossings per wake-up and no crossing allocates a
/// message of its own. One queue per thread keeps each sender's order.
pub(crate) struct Link {
    dispatcher: Addr<Dispatcher>,
    queue: Mutex<Vec<Crossing>>,
    /// A `TakeCrossings` is on its way; crossings meanwhile ride along.
    notified: AtomicBool,
}

impl Link {
    pub(crate) fn new(dispatcher: Addr<Dispatcher>) -> Self {
        Link {
            dispatcher,
            queue: Mutex::default(),
            notified: AtomicBool::new(false),
        }
    }

    /// Queues `crossing` for the thread, waking its dispatcher if needed.
    pub(crate) fn send(&self, crossing: Crossing) {
        // A push or a take cannot be interrupted half-way, so a poisoned lock
        // still guards a whole queue.
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.push(crossing);
        if !self.notified.swap(true, Ordering::AcqRel) {
            self.dispatcher.do_send(TakeCrossings);
        }
    }

    /// How many crossings wait for the thread.
    pub(crate) fn depth(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Takes every queued crossing. The flag is cleared first, so a crossing
    /// queued after the take wakes the thread anew.
    fn take(&self) -> Vec<Crossing> {
        self.notified.store(false, Ordering::Release);
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *queue)
    }
}
