//! The Dispatcher actor: one per thread, it knows which of *its* sessions are
//! in which room.
//!
//! A room's sequencer sends one `Deliver` per thread that has members, not
//! one per member; the dispatcher hands the shared event to its local members
//! without crossing a thread again. Membership changes ride on the same
//! messages as the events, so a member sees exactly the events sequenced
//! between its join and its leave. A room sequenced on this very thread
//! applies its steps to the thread's `LocalSessions` directly, without a
//! message. The dispatcher also starts the thread's sessions, which register
//! with it: that is how the registry finds a session by id (it lives on
//! thread `id % threads`) and how shutdown reaches every session.

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use actix::prelude::*;
use foldhash::HashMap;

use crate::event::SharedEvent;
use crate::handle::{Control, RequestId, SessionHandle, SessionId};
use crate::local::Local;
use crate::room::{Answer, Peer, Response, RoomName};

/// One step of a room's sequence for this thread's members, applied in this
/// order: `add` joins the local member list, `event` reaches every local
/// member, `remove` leaves the list, and `answer` goes to the session that
/// made the request.
#[derive(Debug, Default)]
pub(crate) struct Deliver {
    pub room: Option<RoomName>,
    pub add: Option<SessionId>,
    pub event: Option<SharedEvent>,
    pub remove: Option<SessionId>,
    pub answer: Option<(SessionId, RequestId, Response)>,
    /// For a step that crosses threads: its answer, given by whichever
    /// thread applies the step last.
    pub applied: Option<Arc<Applied>>,
}

/// One room step sent to several threads, and its answer, which the last
/// thread to apply the step hands to the requester. A session's request
/// credit thus comes back only once every member's thread has the
/// request's events: a sender can never run ahead of the slowest thread by
/// more than its credit, so room traffic does not pile up between threads.
#[derive(Debug)]
pub(crate) struct Applied {
    requester: SessionId,
    /// Threads yet to apply the step.
    remaining: AtomicUsize,
    answer: Mutex<PendingAnswer>,
}

/// The answer of an [`Applied`] step, until the last thread hands it over.
#[derive(Debug)]
struct PendingAnswer {
    /// The requester, once its thread has applied the step (it is gone if
    /// its thread finds no such session).
    requester: Option<SessionHandle>,
    answer: Option<(RequestId, Response)>,
}

impl Applied {
    pub(crate) fn new(
        threads: usize,
        requester: SessionId,
        request: RequestId,
        response: Response,
    ) -> Self {
        Applied {
            requester,
            remaining: AtomicUsize::new(threads),
            answer: Mutex::new(PendingAnswer {
                requester: None,
                answer: Some((request, response)),
            }),
        }
    }

    /// One thread has applied the step; `requester` is the requester's
    /// handle if it lives on that thread.
    fn arrive(&self, requester: Option<&SessionHandle>) {
        let mut pending = self.answer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = requester {
            pending.requester = Some(handle.clone());
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1
            && let (Some(handle), Some((request, response))) =
                (pending.requester.take(), pending.answer.take())
        {
            handle.answer(request, response);
        }
    }
}

/// Take the room traffic other threads queued for this one (see
/// `Link`).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TakeCrossings;

/// Start a session on this thread: the closure builds it with the thread's
/// shared state.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StartSession(pub Box<dyn FnOnce(Rc<Local>) + Send>);

/// An event for every session of this thread.
#[derive(Message)]
#[rtype(result = "usize")]
pub(crate) struct DeliverAll(pub SharedEvent);

/// Something for one session of this thread; answers whether it exists.
#[derive(Message)]
#[rtype(result = "bool")]
pub(crate) enum ToSession {
    Event(SessionId, SharedEvent),
    Close(SessionId, crate::DisconnectReason, Option<SharedEvent>),
    Control(SessionId, Control),
}

/// Close every session of this thread for `reason` (a cluster node that
/// was declared dead: `node-down`).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct CloseAll(pub crate::DisconnectReason);

/// Look a session of this thread up by id and answer `requester`'s request.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct FindSession {
    pub id: SessionId,
    pub requester: SessionHandle,
    pub request: RequestId,
}

/// This thread's sessions, for [`crate::Registry::list_sessions`].
#[derive(Message)]
#[rtype(result = "Vec<SessionInfo>")]
pub(crate) struct ListLocal;

/// Send every session `SHUTDOWN` (through its protocol), and every session
/// that registers from now on too.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ShutdownSessions;

/// What the registry reports about one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's id.
    pub id: SessionId,
    /// Its name (the lobby: its nick), as its owner typed it.
    pub nick: String,
    /// Its room, if it is in one.
    pub room: Option<String>,
}

/// One thread's sessions and which rooms they are in.
#[derive(Default)]
pub(crate) struct LocalSessions {
    /// Every live session of this thread (its name and room live with its
    /// inbox: this table holds 24 bytes a session).
    sessions: HashMap<SessionId, SessionHandle>,
    /// Room → this thread's members of it. Order within a thread does not
    /// matter: every member gets each event before the next one.
    rooms: HashMap<RoomName, Vec<SessionHandle>>,
    /// Set for good once shutdown starts: late sessions are shut down too.
    shutting_down: bool,
}

impl LocalSessions {
    /// A session of this thread started.
    pub(crate) fn register(&mut self, handle: SessionHandle) {
        if self.shutting_down {
            handle.shutdown();
        }
        self.sessions.insert(handle.id(), handle);
    }

    /// A session ended.
    pub(crate) fn unregister(&mut self, id: SessionId) {
        self.sessions.remove(&id);
    }

    /// Applies one step of a room's sequence (see `Deliver`).
    pub(crate) fn apply(&mut self, deliver: Deliver) {
        let Deliver {
            room,
            add,
            event,
            remove,
            mut answer,
            applied,
        } = deliver;
        if let Some(room) = room {
            if let Some(id) = add
                && let Some(handle) = self.sessions.get(&id)
            {
                let handle = handle.clone();
                self.rooms.entry(room.clone()).or_default().push(handle);
            }
            if let (Some(event), Some(members)) = (event, self.rooms.get(&room)) {
                // Many receivers here share a copy of their own: see
                // `SharedEvent::for_thread`.
                let event = if members.len() >= THREAD_COPY_MEMBERS {
                    event.for_thread()
                } else {
                    event
                };
                for member in members {
                    match answer.take_if(|(id, ..)| *id == member.id()) {
                        Some((_, request, response)) => {
                            member.send_and_answer(event.clone(), request, response);
                        }
                        None => member.send_shared(event.clone()),
                    }
                }
            }
            if let Some(id) = remove
                && let Some(members) = self.rooms.get_mut(&room)
            {
                members.retain(|member| member.id() != id);
                if members.is_empty() {
                    self.rooms.remove(&room);
                }
            }
        }
        if let Some((id, request, response)) = answer
            && let Some(handle) = self.sessions.get(&id)
        {
            handle.answer(request, response);
        }
        if let Some(applied) = applied {
            applied.arrive(self.sessions.get(&applied.requester));
        }
    }
}

/// Receivers of one event on one thread from which they share a copy of
/// their own rather than the event every thread shares.
const THREAD_COPY_MEMBERS: usize = 8;

/// One thread's dispatcher actor: the mailbox of its `LocalSessions` for
/// other threads. See the module docs.
pub struct Dispatcher {
    local: Rc<Local>,
}

impl Dispatcher {
    pub(crate) fn new(local: Rc<Local>) -> Self {
        Dispatcher { local }
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;
}

impl Handler<StartSession> for Dispatcher {
    type Result = ();

    fn handle(&mut self, StartSession(start): StartSession, _: &mut Context<Self>) {
        start(self.local.clone());
    }
}

impl Handler<TakeCrossings> for Dispatcher {
    type Result = ();

    fn handle(&mut self, _: TakeCrossings, _: &mut Context<Self>) {
        self.local.take_crossings();
    }
}

impl Handler<DeliverAll> for Dispatcher {
    type Result = usize;

    fn handle(&mut self, DeliverAll(event): DeliverAll, _: &mut Context<Self>) -> usize {
        let local = self.local.sessions.borrow();
        for handle in local.sessions.values() {
            handle.send_shared(event.clone());
        }
        local.sessions.len()
    }
}

impl Handler<ToSession> for Dispatcher {
    type Result = bool;

    fn handle(&mut self, message: ToSession, _: &mut Context<Self>) -> bool {
        let id = match &message {
            ToSession::Event(id, _) | ToSession::Close(id, ..) | ToSession::Control(id, _) => *id,
        };
        let local = self.local.sessions.borrow();
        let Some(handle) = local.sessions.get(&id) else {
            return false;
        };
        match message {
            ToSession::Event(_, event) => handle.send_shared(event),
            ToSession::Close(_, reason, farewell) => handle.close(reason, farewell),
            ToSession::Control(_, control) => handle.control(control),
        }
        true
    }
}

impl Handler<CloseAll> for Dispatcher {
    type Result = ();

    fn handle(&mut self, CloseAll(reason): CloseAll, _: &mut Context<Self>) {
        let local = self.local.sessions.borrow();
        for handle in local.sessions.values() {
            handle.close(reason, None);
        }
    }
}

impl Handler<FindSession> for Dispatcher {
    type Result = ();

    fn handle(&mut self, find: FindSession, _: &mut Context<Self>) {
        let local = self.local.sessions.borrow();
        let peer = local.sessions.get(&find.id).map(|handle| Peer {
            id: find.id,
            name: handle.presence().0,
            handle: handle.clone(),
        });
        find.requester
            .answer(find.request, Answer::Found(peer).into());
    }
}

impl Handler<ListLocal> for Dispatcher {
    type Result = MessageResult<ListLocal>;

    fn handle(&mut self, _: ListLocal, _: &mut Context<Self>) -> Self::Result {
        let local = self.local.sessions.borrow();
        let sessions = local.sessions.iter().map(|(&id, handle)| {
            let (name, room) = handle.presence();
            SessionInfo {
                id,
                nick: name.to_string(),
                room: room.as_deref().map(str::to_owned),
            }
        });
        MessageResult(sessions.collect())
    }
}

impl Handler<ShutdownSessions> for Dispatcher {
    type Result = ();

    fn handle(&mut self, _: ShutdownSessions, _: &mut Context<Self>) {
        let mut local = self.local.sessions.borrow_mut();
        local.shutting_down = true;
        for handle in local.sessions.values() {
            handle.shutdown();
        }
    }
}
