//! The Sequencer actor: the single ordering point of the rooms hashed to it.
//!
//! Each room has exactly one sequencer, which owns its member list (in join
//! order, with each member's name and thread) and decides the order of its
//! events: every member of a room sees that room's events in the order this
//! actor handled them. Rooms are spread over sequencers by a hash of their
//! name, one sequencer per thread, so different rooms use different cores.
//!
//! A broadcast leaves as one `Deliver` per thread that has members, carrying
//! one [`SharedEvent`] that is rendered at most once per wire format; the
//! thread's [`Dispatcher`](super::dispatcher::Dispatcher) hands it to its local members.
//!
//! # The sequencer boundary
//!
//! Sessions and the registry reach a sequencer only through `RoomRequest`s
//! (join, confirm a held seat, leave, publish, rename, members): from another
//! thread through that thread's `Link`, from an
//! embedding program through the recipient in a `SequencerRef`. A session
//! whose room is sequenced on its own thread hands the request to the
//! thread's `RoomShard` directly instead of through the mailbox: the same
//! request, the same state, one actor message fewer. What a sequencer
//! promises in return is:
//!
//! - for each room, one total order of its events, delivered to every thread
//!   that has members as `Deliver` messages in that order;
//! - an answer to every request that carries a `Requester`, sent through
//!   the requester's own thread's dispatcher *after* the events the request
//!   caused, so a session reads its own `JOIN` before its `WHO`;
//! - every change of a room's member count reported to the room index.
//!
//! A networked implementation (a Redis stream or NATS subject per room) can
//! stand behind the same recipients: it numbers a room's events in the
//! engine and delivers what comes back to the local dispatchers in that order.

use std::hash::BuildHasher;
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use foldhash::HashMap;

use super::dispatcher::{Applied, Deliver};
use super::room_index::RoomSize;
use crate::event::SharedEvent;
use crate::handle::{RequestId, SessionId};
use crate::local::Local;
use crate::reason::DisconnectReason;
use crate::room::{Answer, Response, RoomName};

/// Who made a request, and where its answer goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Requester {
    pub id: SessionId,
    /// The session's thread: its answer travels through that dispatcher.
    pub thread: usize,
    pub request: RequestId,
}

/// A request about one room, to the sequencer that owns it. Answers how
/// many members a [`RoomRequest::Publish`] reached (0 for the others).
#[derive(Message)]
#[rtype(result = "usize")]
pub(crate) enum RoomRequest {
    Join(Join),
    Confirm(Confirm),
    Leave(Leave),
    Publish(Publish),
    Rename(Rename),
    Members(Members),
}

impl RoomRequest {
    /// The room the request is about: it decides the sequencer.
    pub(crate) fn room(&self) -> &RoomName {
        match self {
            RoomRequest::Join(Join { room, .. })
            | RoomRequest::Confirm(Confirm { room, .. })
            | RoomRequest::Leave(Leave { room, .. })
            | RoomRequest::Publish(Publish { room, .. })
            | RoomRequest::Rename(Rename { room, .. })
            | RoomRequest::Members(Members { room, .. }) => room,
        }
    }
}

/// Take a seat in `room`. Without `reserve`, the member is announced at once
/// (`announce` to every member including it) and answered
/// [`Answer::Joined`]; with it, the seat is only held (counted against the
/// capacity, not announced) until a [`Confirm`], so a session moving rooms can
/// leave its old room first and still be refused by a full room before
/// leaving.
pub(crate) struct Join {
    pub room: RoomName,
    pub from: Requester,
    pub name: Arc<str>,
    pub announce: Option<SharedEvent>,
    pub reserve: bool,
}

/// Turn a held seat into membership, announcing it.
pub(crate) struct Confirm {
    pub room: RoomName,
    pub from: Requester,
    pub announce: Option<SharedEvent>,
}

/// Leave `room`. A voluntary leave (`ended` is `None`) is announced to every
/// member including the leaver; a session that ended is removed first and
/// the rest are told, unless the server is shutting down. Leaving a room
/// one is not in is answered all the same.
pub(crate) struct Leave {
    pub room: RoomName,
    pub id: SessionId,
    pub thread: usize,
    pub request: Option<RequestId>,
    pub announce: Option<SharedEvent>,
    pub ended: Option<DisconnectReason>,
}

/// Broadcast `event` to every member of `room`, if `from` (when given) is one.
pub(crate) struct Publish {
    pub room: RoomName,
    pub from: Option<Requester>,
    pub event: SharedEvent,
}

/// A member's name changed: keep it for `WHO`, and announce it.
pub(crate) struct Rename {
    pub room: RoomName,
    pub from: Requester,
    pub old: Arc<str>,
    pub name: Arc<str>,
    pub announce: Option<SharedEvent>,
}

/// Answer with the members of `room`.
pub(crate) struct Members {
    pub room: RoomName,
    pub from: Requester,
}

/// The recipients a sequencer is reached through: the sequencer boundary
/// (see the module docs).
#[derive(Clone)]
pub(crate) struct SequencerRef {
    pub requests: Recipient<RoomRequest>,
}

impl SequencerRef {
    pub(crate) fn of(sequencer: &Addr<Sequencer>) -> Self {
        SequencerRef {
            requests: sequencer.clone().recipient(),
        }
    }
}

/// Which of `threads` threads sequences `room`: a fixed hash of its name
/// (foldhash with seed 0), so every thread agrees without asking, and the
/// same name lands on the same thread in every run.
pub fn room_thread(room: &str, threads: usize) -> usize {
    let hash = foldhash::fast::FixedState::with_seed(0).hash_one(room);
    (hash % threads.max(1) as u64) as usize
}

/// The sequencer actor of one thread: the mailbox of the thread's
/// `RoomShard` for requests from other threads.
pub struct Sequencer {
    local: Rc<Local>,
}

impl Sequencer {
    pub(crate) fn new(local: Rc<Local>) -> Self {
        Sequencer { local }
    }
}

impl Actor for Sequencer {
    type Context = Context<Self>;
}

impl Handler<RoomRequest> for Sequencer {
    type Result = usize;

    fn handle(&mut self, request: RoomRequest, _: &mut Context<Self>) -> usize {
        self.local.sequence(request)
    }
}

struct Member {
    id: SessionId,
    thread: usize,
    name: Arc<str>,
    /// Holds a seat but is not announced yet (see [`Join::reserve`]).
    reserved: bool,
}

#[derive(Default)]
struct Room {
    /// In join order.
    members: Vec<Member>,
    /// Announced members per thread: which dispatchers a broadcast goes to.
    per_thread: Vec<u32>,
}

impl Room {
    fn announced(&self) -> usize {
        self.members
            .iter()
            .filter(|member| !member.reserved)
            .count()
    }

    fn names(&self) -> Vec<Arc<str>> {
        let announced = self.members.iter().filter(|member| !member.reserved);
        announced.map(|member| member.name.clone()).collect()
    }

    fn position(&self, id: SessionId) -> Option<usize> {
        self.members.iter().position(|member| member.id == id)
    }

    fn is_announced(&self, id: SessionId) -> bool {
        self.position(id)
            .is_some_and(|at| !self.members[at].reserved)
    }
}

/// One step of a room's sequence; see `Deliver` for the order it is
/// applied in.
#[derive(Default)]
struct Step {
    add: Option<(SessionId, usize)>,
    event: Option<SharedEvent>,
    remove: Option<(SessionId, usize)>,
    answer: Option<(Requester, Response)>,
}

/// The rooms hashed to one thread: their members and their one order.
pub(crate) struct RoomShard {
    capacity: usize,
    rooms: HashMap<RoomName, Room>,
}

impl RoomShard {
    pub(crate) fn new(capacity: usize) -> Self {
        RoomShard {
            capacity,
            rooms: HashMap::default(),
        }
    }

    /// Carries out one request; `local` routes what it causes.
    pub(crate) fn handle(&mut self, request: RoomRequest, local: &Local) -> usize {
        match request {
            RoomRequest::Join(join) => self.join(join, local),
            RoomRequest::Confirm(confirm) => self.confirm(confirm, local),
            RoomRequest::Leave(leave) => self.leave(leave, local),
            RoomRequest::Publish(publish) => return self.publish(publish, local),
            RoomRequest::Rename(rename) => self.rename(rename, local),
            RoomRequest::Members(Members { room, from }) => {
                let members = self.rooms.get(&room).map(Room::names).unwrap_or_default();
                answer(local, from, Answer::Members { room, members }.into());
            }
        }
        0
    }

    /// Sends one step of `room`'s sequence to every thread that has members
    /// (counted after `add`, before `remove`), plus the threads that `add`,
    /// `remove` or `answer` concern.
    fn sequence(&self, room: &RoomName, step: Step, local: &Local) {
        match self.rooms.get(room) {
            Some(state) => sequence_in(room, state, step, local),
            None => {
                if let Some((requester, response)) = step.answer {
                    answer(local, requester, response);
                }
            }
        }
    }

    fn report_size(&self, room: &RoomName, local: &Local) {
        let members = self.rooms.get(room).map_or(0, Room::announced);
        local.index().do_send(RoomSize {
            room: room.clone(),
            members,
        });
    }

    fn count(&mut self, room: &RoomName, thread: usize, delta: i32) {
        let Some(state) = self.rooms.get_mut(room) else {
            return;
        };
        if state.per_thread.len() <= thread {
            state.per_thread.resize(thread + 1, 0);
        }
        let count = &mut state.per_thread[thread];
        *count = count.saturating_add_signed(delta);
    }

    fn drop_if_empty(&mut self, room: &RoomName) {
        if self
            .rooms
            .get(room)
            .is_some_and(|state| state.members.is_empty())
        {
            self.rooms.remove(room);
        }
    }

    fn join(&mut self, join: Join, local: &Local) {
        let Join {
            room,
            from,
            name,
            announce,
            reserve,
        } = join;
        let state = self.rooms.entry(room.clone()).or_default();
        if state.position(from.id).is_some() {
            // Already seated: joining again changes nothing. A session moving
            // here is told its seat is held, so it leaves its old room.
            let members = state.names();
            let response = match reserve {
                true => Response::Reserved,
                false => Answer::Joined { room, members }.into(),
            };
            return answer(local, from, response);
        }
        if state.members.len() >= self.capacity {
            let capacity = self.capacity;
            self.drop_if_empty(&room);
            return answer(local, from, Answer::RoomFull { room, capacity }.into());
        }
        state.members.push(Member {
            id: from.id,
            thread: from.thread,
            name,
            reserved: reserve,
        });
        if reserve {
            return answer(local, from, Response::Reserved);
        }
        self.announce_join(room, from, announce, local);
    }

    fn announce_join(
        &mut self,
        room: RoomName,
        from: Requester,
        announce: Option<SharedEvent>,
        local: &Local,
    ) {
        self.count(&room, from.thread, 1);
        self.report_size(&room, local);
        let members = self.rooms.get(&room).map(Room::names).unwrap_or_default();
        let joined = Answer::Joined {
            room: room.clone(),
            members,
        };
        let step = Step {
            add: Some((from.id, from.thread)),
            event: announce,
            answer: Some((from, joined.into())),
            ..Step::default()
        };
        self.sequence(&room, step, local);
    }

    fn confirm(&mut self, confirm: Confirm, local: &Local) {
        let Confirm {
            room,
            from,
            announce,
        } = confirm;
        // Every confirm is answered, so the session never waits for ever: a
        // seat already announced is Joined, a seat that is gone RoomFull.
        let capacity = self.capacity;
        let Some(state) = self.rooms.get_mut(&room) else {
            return answer(local, from, Answer::RoomFull { room, capacity }.into());
        };
        let Some(at) = state.position(from.id) else {
            return answer(local, from, Answer::RoomFull { room, capacity }.into());
        };
        if !state.members[at].reserved {
            let members = state.names();
            return answer(local, from, Answer::Joined { room, members }.into());
        }
        // A member takes its place in the join order when it is announced.
        let mut member = state.members.remove(at);
        member.reserved = false;
        state.members.push(member);
        self.announce_join(room, from, announce, local);
    }

    fn leave(&mut self, leave: Leave, local: &Local) {
        let Leave {
            room,
            id,
            thread,
            request,
            announce,
            ended,
        } = leave;
        let requester = request.map(|request| Requester {
            id,
            thread,
            request,
        });
        let left = requester.map(|r| (r, Answer::Left { room: room.clone() }.into()));
        let removed = self.rooms.get_mut(&room).and_then(|state| {
            let at = state.position(id)?;
            Some(state.members.remove(at))
        });
        let member = match removed {
            Some(member) if !member.reserved => member,
            _ => {
                self.drop_if_empty(&room);
                if let Some((requester, response)) = left {
                    answer(local, requester, response);
                }
                return;
            }
        };
        self.report_size(&room, local);
        match ended {
            // The leaver hears its own LEAVE, then is removed.
            None => {
                let step = Step {
                    event: announce,
                    remove: Some((id, member.thread)),
                    answer: left,
                    ..Step::default()
                };
                self.sequence(&room, step, local);
                self.count(&room, member.thread, -1);
            }
            // A session that ended is gone; the rest are told why.
            Some(reason) => {
                // Every session is told SHUTDOWN; none is told of another's
                // end once shutdown has begun.
                let quiet = local.shutting_down() || reason == DisconnectReason::Shutdown;
                self.count(&room, member.thread, -1);
                let step = Step {
                    remove: Some((id, member.thread)),
                    event: announce.filter(|_| !quiet),
                    answer: left,
                    ..Step::default()
                };
                self.sequence(&room, step, local);
            }
        }
        self.drop_if_empty(&room);
    }

    fn publish(&mut self, Publish { room, from, event }: Publish, local: &Local) -> usize {
        let published = from.map(|from| (from, Response::Published));
        let state = self.rooms.get(&room);
        let allowed =
            from.is_none_or(|from| state.is_some_and(|state| state.is_announced(from.id)));
        let Some(state) = state.filter(|_| allowed) else {
            if let Some((requester, response)) = published {
                answer(local, requester, response);
            }
            return 0;
        };
        let step = Step {
            event: Some(event),
            answer: published,
            ..Step::default()
        };
        sequence_in(&room, state, step, local);
        state.announced()
    }

    fn rename(&mut self, rename: Rename, local: &Local) {
        let Rename {
            room,
            from,
            old,
            name,
            announce,
        } = rename;
        let renamed = Answer::Renamed {
            old,
            new: name.clone(),
            room: Some(room.clone()),
        };
        let member = self
            .rooms
            .get_mut(&room)
            .and_then(|state| state.members.iter_mut().find(|m| m.id == from.id));
        let Some(member) = member else {
            return answer(local, from, renamed.into());
        };
        member.name = name;
        let step = Step {
            event: announce,
            answer: Some((from, renamed.into())),
            ..Step::default()
        };
        self.sequence(&room, step, local);
    }
}

/// Sends one step of `room`'s sequence to every thread that has members
/// (counted after `add`, before `remove`), plus the threads that `add`,
/// `remove` or `answer` concern.
fn sequence_in(room: &RoomName, state: &Room, step: Step, local: &Local) {
    // The requester's thread goes last: once a session holds the answer to
    // its request, every other thread already has the request's events
    // queued, so nothing the session sends next can overtake them.
    let requester_thread = step.answer.as_ref().map(|(r, _)| r.thread);
    let threads = (0..local.threads()).filter(|&t| Some(t) != requester_thread);
    let mut delivers = Vec::new();
    for thread in threads.chain(requester_thread) {
        let concerned = |who: Option<(SessionId, usize)>| who.is_some_and(|(_, t)| t == thread);
        let answer = step.answer.as_ref().filter(|(r, _)| r.thread == thread);
        let has_members = state.per_thread.get(thread).is_some_and(|&n| n > 0);
        if !(has_members || concerned(step.add) || concerned(step.remove) || answer.is_some()) {
            continue;
        }
        let deliver = Deliver {
            room: Some(room.clone()),
            add: step.add.filter(|&(_, t)| t == thread).map(|(id, _)| id),
            event: step.event.clone(),
            remove: step.remove.filter(|&(_, t)| t == thread).map(|(id, _)| id),
            answer: answer.map(|(r, response)| (r.id, r.request, response.clone())),
            applied: None,
        };
        delivers.push((thread, deliver));
    }
    // A publish's answer, which only returns the sender's credit, waits for
    // every thread (see `Applied`). Other answers travel with the step, on
    // the requester's thread, so they come right after the events the
    // request caused (own `JOIN`, then `WHO`).
    if delivers.len() > 1
        && let Some((requester, response @ Response::Published)) = step.answer
    {
        let applied = Arc::new(Applied::new(
            delivers.len(),
            requester.id,
            requester.request,
            response,
        ));
        for (_, deliver) in &mut delivers {
            deliver.answer = None;
            deliver.applied = Some(applied.clone());
        }
    }
    for (thread, deliver) in delivers {
        local.deliver(thread, deliver);
    }
}

/// Sends `response` to `requester` through its thread's dispatcher, so it
/// comes after whatever that dispatcher was sent before.
fn answer(local: &Local, requester: Requester, response: Response) {
    let deliver = Deliver {
        answer: Some((requester.id, requester.request, response)),
        ..Deliver::default()
    };
    local.deliver(requester.thread, deliver);
}
