//! The Sequencer actor: the single ordering point of the rooms hashed to it.
//!
//! Each room has exactly one sequencer, which owns its member list (in join
//! order, with each member's name and thread) and decides the order of its
//! events: every member of a room sees that room's events in the order this
//! actor handled them. Rooms are spread over sequencers by a hash of their
//! name, one sequencer per thread, so different rooms use different cores.
//!
//! A broadcast leaves as one [`Deliver`] per thread that has members, carrying
//! one [`SharedEvent`] that is rendered at most once per wire format; the
//! thread's [`Dispatcher`] hands it to its local members.
//!
//! # The sequencer boundary
//!
//! Sessions and the registry reach a sequencer only through the messages of
//! this module — [`Join`], [`Confirm`], [`Leave`], [`Publish`], [`Rename`],
//! [`Members`] and [`StopAnnouncing`] — held as recipients in a
//! [`SequencerRef`]. What a sequencer promises in return is:
//!
//! - for each room, one total order of its events, delivered to every thread
//!   that has members as [`Deliver`] messages in that order;
//! - an answer to every request that carries a [`Requester`], sent through
//!   the requester's own thread's dispatcher *after* the events the request
//!   caused, so a session reads its own `JOIN` before its `WHO`;
//! - every change of a room's member count reported to the room index.
//!
//! A networked implementation (a Redis stream or NATS subject per room) can
//! stand behind the same recipients: it numbers a room's events in the
//! engine and delivers what comes back to the local dispatchers in that order.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;

use actix::prelude::*;

use super::dispatcher::{Deliver, Dispatcher};
use super::room_index::{RoomIndex, RoomSize};
use crate::event::SharedEvent;
use crate::handle::{RequestId, SessionId};
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

/// Take a seat in `room`. Without `reserve`, the member is announced at once
/// (`announce` to every member including it) and answered
/// [`Answer::Joined`]; with it, the seat is only held (counted against the
/// capacity, not announced) until a [`Confirm`], so a session moving rooms can
/// leave its old room first and still be refused by a full room before
/// leaving.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Join {
    pub room: RoomName,
    pub from: Requester,
    pub name: Arc<str>,
    pub announce: Option<SharedEvent>,
    pub reserve: bool,
}

/// Turn a held seat into membership, announcing it.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Confirm {
    pub room: RoomName,
    pub from: Requester,
    pub announce: Option<SharedEvent>,
}

/// Leave `room`. A voluntary leave (`ended` is `None`) is announced to every
/// member including the leaver; a session that ended is removed first and
/// the rest are told, unless the server is shutting down. Leaving a room
/// one is not in is answered all the same.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Leave {
    pub room: RoomName,
    pub id: SessionId,
    pub thread: usize,
    pub request: Option<RequestId>,
    pub announce: Option<SharedEvent>,
    pub ended: Option<DisconnectReason>,
}

/// Broadcast `event` to every member of `room`, if `from` (when given) is one.
/// Answers how many members it was sent to.
#[derive(Message)]
#[rtype(result = "usize")]
pub(crate) struct Publish {
    pub room: RoomName,
    pub from: Option<Requester>,
    pub event: SharedEvent,
}

/// A member's name changed: keep it for `WHO`, and announce it.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Rename {
    pub room: RoomName,
    pub from: Requester,
    pub old: Arc<str>,
    pub name: Arc<str>,
    pub announce: Option<SharedEvent>,
}

/// Answer with the members of `room`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Members {
    pub room: RoomName,
    pub from: Requester,
}

/// The server is shutting down: sessions that end from now on are removed
/// without a `QUIT` announcement (they were all sent `SHUTDOWN`).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopAnnouncing;

/// The recipients a sequencer is reached through: the sequencer boundary
/// (see the module docs).
#[derive(Clone)]
pub(crate) struct SequencerRef {
    pub join: Recipient<Join>,
    pub confirm: Recipient<Confirm>,
    pub leave: Recipient<Leave>,
    pub publish: Recipient<Publish>,
    pub rename: Recipient<Rename>,
    pub members: Recipient<Members>,
    pub stop_announcing: Recipient<StopAnnouncing>,
}

impl SequencerRef {
    pub(crate) fn of(sequencer: &Addr<Sequencer>) -> Self {
        SequencerRef {
            join: sequencer.clone().recipient(),
            confirm: sequencer.clone().recipient(),
            leave: sequencer.clone().recipient(),
            publish: sequencer.clone().recipient(),
            rename: sequencer.clone().recipient(),
            members: sequencer.clone().recipient(),
            stop_announcing: sequencer.clone().recipient(),
        }
    }
}

/// Which of `shards` sequencers owns `room`: a fixed hash of the name, so
/// every thread agrees without asking.
pub(crate) fn shard_of(room: &str, shards: usize) -> usize {
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(room);
    (hash % shards.max(1) as u64) as usize
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
}

/// The sequencer of the rooms hashed to one shard. See the module docs.
pub struct Sequencer {
    capacity: usize,
    dispatchers: Arc<[Addr<Dispatcher>]>,
    index: Addr<RoomIndex>,
    rooms: HashMap<RoomName, Room>,
    /// Set for good once shutdown starts.
    shutting_down: bool,
}

impl Sequencer {
    pub(crate) fn new(
        capacity: usize,
        dispatchers: Arc<[Addr<Dispatcher>]>,
        index: Addr<RoomIndex>,
    ) -> Self {
        Sequencer {
            capacity,
            dispatchers,
            index,
            rooms: HashMap::new(),
            shutting_down: false,
        }
    }

    /// Sends one step of `room`'s sequence to every thread that has members
    /// (counted after `add`, before `remove`), plus the threads that `add`,
    /// `remove` or `answer` concern.
    fn sequence(&self, room: &RoomName, step: Step) {
        let Some(state) = self.rooms.get(room) else {
            return self.answer_only(step);
        };
        for (thread, dispatcher) in self.dispatchers.iter().enumerate() {
            let concerned = |who: Option<(SessionId, usize)>| who.is_some_and(|(_, t)| t == thread);
            let answer = step.answer.as_ref().filter(|(r, _)| r.thread == thread);
            let has_members = state.per_thread.get(thread).is_some_and(|&n| n > 0);
            if !(has_members || concerned(step.add) || concerned(step.remove) || answer.is_some()) {
                continue;
            }
            dispatcher.do_send(Deliver {
                room: Some(room.clone()),
                add: step.add.filter(|&(_, t)| t == thread).map(|(id, _)| id),
                event: step.event.clone(),
                remove: step.remove.filter(|&(_, t)| t == thread).map(|(id, _)| id),
                answer: answer.map(|(r, response)| (r.id, r.request, response.clone())),
            });
        }
    }

    fn answer_only(&self, step: Step) {
        if let Some((requester, response)) = step.answer {
            self.answer(requester, response);
        }
    }

    fn answer(&self, requester: Requester, response: Response) {
        if let Some(dispatcher) = self.dispatchers.get(requester.thread) {
            dispatcher.do_send(Deliver {
                answer: Some((requester.id, requester.request, response)),
                ..Deliver::default()
            });
        }
    }

    fn report_size(&self, room: &RoomName) {
        let members = self.rooms.get(room).map_or(0, Room::announced);
        self.index.do_send(RoomSize {
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
}

/// One step of a room's sequence; see [`Deliver`] for the order it is
/// applied in.
#[derive(Default)]
struct Step {
    add: Option<(SessionId, usize)>,
    event: Option<SharedEvent>,
    remove: Option<(SessionId, usize)>,
    answer: Option<(Requester, Response)>,
}

impl Actor for Sequencer {
    type Context = Context<Self>;
}

impl Handler<Join> for Sequencer {
    type Result = ();

    fn handle(&mut self, join: Join, _: &mut Context<Self>) {
        let Join {
            room,
            from,
            name,
            announce,
            reserve,
        } = join;
        let state = self.rooms.entry(room.clone()).or_default();
        if state.position(from.id).is_some() {
            // Already seated: joining again changes nothing.
            let members = state.names();
            let answer = Answer::Joined { room, members };
            return self.answer(from, answer.into());
        }
        if state.members.len() >= self.capacity {
            let capacity = self.capacity;
            self.drop_if_empty(&room);
            return self.answer(from, Answer::RoomFull { room, capacity }.into());
        }
        state.members.push(Member {
            id: from.id,
            thread: from.thread,
            name,
            reserved: reserve,
        });
        if reserve {
            return self.answer(from, Response::Reserved);
        }
        self.announce_join(room, from, announce);
    }
}

impl Sequencer {
    fn announce_join(&mut self, room: RoomName, from: Requester, announce: Option<SharedEvent>) {
        self.count(&room, from.thread, 1);
        self.report_size(&room);
        let members = self.rooms.get(&room).map(Room::names).unwrap_or_default();
        let answer = Answer::Joined {
            room: room.clone(),
            members,
        };
        self.sequence(
            &room,
            Step {
                add: Some((from.id, from.thread)),
                event: announce,
                answer: Some((from, answer.into())),
                ..Step::default()
            },
        );
    }
}

impl Handler<Confirm> for Sequencer {
    type Result = ();

    fn handle(&mut self, confirm: Confirm, _: &mut Context<Self>) {
        let Confirm {
            room,
            from,
            announce,
        } = confirm;
        let Some(member) = self
            .rooms
            .get_mut(&room)
            .and_then(|state| state.members.iter_mut().find(|m| m.id == from.id))
        else {
            return;
        };
        if !member.reserved {
            return;
        }
        member.reserved = false;
        // A member moves to the end of the join order when it is announced.
        if let Some(state) = self.rooms.get_mut(&room)
            && let Some(at) = state.position(from.id)
        {
            let member = state.members.remove(at);
            state.members.push(member);
        }
        self.announce_join(room, from, announce);
    }
}

impl Handler<Leave> for Sequencer {
    type Result = ();

    fn handle(&mut self, leave: Leave, _: &mut Context<Self>) {
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
        let answer = requester.map(|r| (r, Answer::Left { room: room.clone() }.into()));
        let removed = self.rooms.get_mut(&room).and_then(|state| {
            let at = state.position(id)?;
            Some(state.members.remove(at))
        });
        let Some(member) = removed else {
            return self.answer_only(Step {
                answer,
                ..Step::default()
            });
        };
        if member.reserved {
            self.drop_if_empty(&room);
            return self.answer_only(Step {
                answer,
                ..Step::default()
            });
        }
        self.report_size(&room);
        let step = match ended {
            // The leaver hears its own LEAVE, then is removed.
            None => {
                let step = Step {
                    event: announce,
                    remove: Some((id, member.thread)),
                    answer,
                    ..Step::default()
                };
                self.sequence(&room, step);
                None
            }
            // A session that ended is gone; the rest are told why.
            Some(reason) => {
                let quiet = self.shutting_down || reason == DisconnectReason::Shutdown;
                Some(Step {
                    remove: Some((id, member.thread)),
                    event: announce.filter(|_| !quiet),
                    answer,
                    ..Step::default()
                })
            }
        };
        self.count(&room, member.thread, -1);
        if let Some(step) = step {
            self.sequence(&room, step);
        }
        self.drop_if_empty(&room);
    }
}

impl Handler<Publish> for Sequencer {
    type Result = usize;

    fn handle(&mut self, Publish { room, from, event }: Publish, _: &mut Context<Self>) -> usize {
        let is_member = |state: &Room, id| {
            let at = state.position(id);
            at.is_some_and(|at| !state.members[at].reserved)
        };
        let allowed = match from {
            Some(from) => self
                .rooms
                .get(&room)
                .is_some_and(|state| is_member(state, from.id)),
            None => true,
        };
        let answer = from.map(|from| (from, Response::Published));
        if !allowed {
            self.answer_only(Step {
                answer,
                ..Step::default()
            });
            return 0;
        }
        self.sequence(
            &room,
            Step {
                event: Some(event),
                answer,
                ..Step::default()
            },
        );
        self.rooms.get(&room).map_or(0, Room::announced)
    }
}

impl Handler<Rename> for Sequencer {
    type Result = ();

    fn handle(&mut self, rename: Rename, _: &mut Context<Self>) {
        let Rename {
            room,
            from,
            old,
            name,
            announce,
        } = rename;
        let member = self
            .rooms
            .get_mut(&room)
            .and_then(|state| state.members.iter_mut().find(|m| m.id == from.id));
        let answer = Answer::Renamed {
            old,
            new: name.clone(),
            room: Some(room.clone()),
        };
        let Some(member) = member else {
            return self.answer(from, answer.into());
        };
        member.name = name;
        self.sequence(
            &room,
            Step {
                event: announce,
                answer: Some((from, answer.into())),
                ..Step::default()
            },
        );
    }
}

impl Handler<Members> for Sequencer {
    type Result = ();

    fn handle(&mut self, Members { room, from }: Members, _: &mut Context<Self>) {
        let members = self.rooms.get(&room).map(Room::names).unwrap_or_default();
        self.answer(from, Answer::Members { room, members }.into());
    }
}

impl Handler<StopAnnouncing> for Sequencer {
    type Result = ();

    fn handle(&mut self, _: StopAnnouncing, _: &mut Context<Self>) {
        self.shutting_down = true;
    }
}
