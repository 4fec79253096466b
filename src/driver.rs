//! A session's protocol and what drives it: the [`Protocol`] trait an
//! application implements, the [`SessionContext`] its handlers act through,
//! and the engine that TCP sessions and UDP peers share.
//!
//! Everything that concerns one session only happens here, on the session's
//! own thread: parsing, validation, replies, errors, echoing. What concerns
//! others goes out as a request — to the room's sequencer, the name
//! directory, the room index — and comes back as an [`Answer`]. The engine
//! keeps the session's own order: answers reach the protocol in the order
//! the requests were made, and anything the protocol writes while earlier
//! requests are unanswered is written after their answers. While a request
//! that changes the session's state (a join, a rename, a lookup) is
//! unanswered, the session reads no further input, so each line is handled
//! with the state that the lines before it left; it never stops writing and
//! never blocks its thread.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use log::debug;

use crate::actors::directory::{Claim, FindName, Release};
use crate::actors::dispatcher::FindSession;
use crate::actors::room_index::ListFor;
use crate::actors::sequencer::{
    Confirm, Join, Leave, Members, Publish, Rename, Requester, RoomRequest,
};
use crate::event::{Event, SharedEvent, Wire};
use crate::handle::{Control, Delivery, RequestId, SessionHandle, SessionId};
use crate::local::Local;
use crate::metrics::Transport;
use crate::outbound::Outbound;
use crate::reason::DisconnectReason;
use crate::registry::Registry;
use crate::room::{Answer, Peer, Response, RoomName};

/// How many of a session's requests may be unanswered (room broadcasts in
/// flight, mostly) before it stops reading: a session cannot flood a room's
/// sequencer faster than the sequencer answers it.
pub const REQUEST_CREDIT: usize = 32;

/// Per-session protocol state and its handlers, called by the session on its
/// own thread. Echo, greeter and the text and JSON lobby are protocols; an
/// application writes its own (a game's commands) and gets rooms, presence,
/// limits, bounded output and exactly-once cleanup from the session.
///
/// Every handler but [`Protocol::frame`] has a default. None may panic on
/// input: a bad frame is answered, not fatal.
pub trait Protocol: Sized + Unpin + 'static {
    /// The session has started; e.g. greet the peer.
    fn opened(&mut self, cx: &mut SessionContext<'_>) {
        let _ = cx;
    }

    /// A complete inbound frame: a chunk, a line without its terminator, or a
    /// length-prefixed payload, as the session's framing cuts them.
    fn frame(&mut self, cx: &mut SessionContext<'_>, frame: Bytes);

    /// An inbound line over the framing's maximum was discarded.
    fn oversized(&mut self, cx: &mut SessionContext<'_>) {
        let _ = cx;
    }

    /// An inbound frame over the rate limit was discarded.
    fn rate_limited(&mut self, cx: &mut SessionContext<'_>) {
        let _ = cx;
    }

    /// The peer has been silent for another heartbeat period; `count`
    /// numbers the heartbeats since the session started (1, 2, …).
    fn heartbeat(&mut self, cx: &mut SessionContext<'_>, count: u64) {
        let _ = (cx, count);
    }

    /// The peer has been silent for the idle timeout. Unless the handler
    /// closes the session itself (e.g. with a farewell), it closes as
    /// [`DisconnectReason::IdleTimeout`].
    fn idle(&mut self, cx: &mut SessionContext<'_>) {
        cx.close(DisconnectReason::IdleTimeout, None);
    }

    /// The peer closed its sending side. By default the session closes once
    /// everything owed is written.
    fn input_closed(&mut self, cx: &mut SessionContext<'_>) {
        cx.close(DisconnectReason::Closed, None);
    }

    /// The answer to one of this protocol's requests, in request order.
    fn answer(&mut self, cx: &mut SessionContext<'_>, answer: Answer) {
        let _ = (cx, answer);
    }

    /// An event from the rest of the server (the session's room, a private
    /// message, the embedding program). By default it is written to the peer
    /// at once, in the session's wire format; a protocol may look at it first
    /// ([`SharedEvent::downcast_ref`]) to react, or write something else.
    fn deliver(&mut self, cx: &mut SessionContext<'_>, event: SharedEvent) {
        cx.forward(&event);
    }

    /// An embedding program's request (see [`Registry::join`]); by default
    /// refused (the channel is dropped).
    fn control(&mut self, cx: &mut SessionContext<'_>, control: Control) {
        let _ = (cx, control);
    }

    /// The server is shutting down: say good-bye. By default the session
    /// closes as [`DisconnectReason::Shutdown`] with no farewell.
    fn shutdown(&mut self, cx: &mut SessionContext<'_>) {
        cx.close(DisconnectReason::Shutdown, None);
    }

    /// What the rest of `room` is told when this session ends for `reason`
    /// (the lobby: `QUIT <room> <nick> <reason>`); nothing by default.
    /// Called once for the room the session is in (and once for a room it
    /// was still joining, which is told only if it had seated the session),
    /// before the room is told: also the place to clean up what the protocol
    /// keeps per room.
    fn quit_event(
        &mut self,
        room: &RoomName,
        name: &Arc<str>,
        reason: DisconnectReason,
    ) -> Option<SharedEvent> {
        let _ = (room, name, reason);
        None
    }

    /// The session has ended and the registry is forgetting it; called once,
    /// last.
    fn closed(&mut self, session: ClosedSession<'_>) {
        let _ = session;
    }
}

/// What a protocol learns about its session's end.
#[derive(Debug, Clone, Copy)]
pub struct ClosedSession<'a> {
    /// The session.
    pub id: SessionId,
    /// Its name when it ended.
    pub name: &'a Arc<str>,
    /// Its room when it ended.
    pub room: Option<&'a RoomName>,
    /// Why it ended.
    pub reason: DisconnectReason,
    /// Its wire format.
    pub wire: Wire,
}

/// What a [`Protocol`] handler acts through: its own peer, its room, names,
/// and the rest of the server.
pub struct SessionContext<'a> {
    driver: &'a mut Driver,
}

/// What the engine does with the next response to a request.
#[derive(Debug)]
enum Step {
    /// The answer goes to the protocol.
    Plain,
    /// A broadcast: its acknowledgement only keeps the order.
    Publish,
    /// A seat in `room` is held; leave `old` next.
    Reserve {
        room: RoomName,
        old: RoomName,
        join: Option<SharedEvent>,
        leave: Option<SharedEvent>,
    },
    /// The old room is left; confirm the seat in `room` next.
    SwitchLeave {
        room: RoomName,
        join: Option<SharedEvent>,
    },
    /// Joined, or refused.
    Join,
    /// Left.
    Leave,
    /// The name is claimed; announce it in the room next.
    Claim {
        name: Arc<str>,
        announce: Option<SharedEvent>,
    },
    /// The room is told the new name.
    Rename,
}

/// A change of the session's room or name, or a broadcast to its room:
/// made in order, each once the one before is answered.
#[derive(Debug)]
enum Change {
    Join {
        room: RoomName,
        join: Option<SharedEvent>,
        leave: Option<SharedEvent>,
    },
    Leave {
        announce: Option<SharedEvent>,
    },
    Publish {
        event: SharedEvent,
    },
    Rename {
        name: Arc<str>,
        announce: Option<SharedEvent>,
    },
}

#[derive(Debug)]
enum Slot {
    Waiting(RequestId, Step),
    Answer(Answer),
    /// Nothing for the protocol: the request only kept its place in order.
    Done,
    /// Bytes the protocol wrote while earlier requests were unanswered.
    Output(Bytes),
    Close(DisconnectReason, Option<Bytes>),
}

impl Slot {
    /// Whether input waits for this slot: a request other than a broadcast
    /// is unanswered, or its answer is not handed to the protocol yet.
    fn is_barrier(&self) -> bool {
        match self {
            Slot::Waiting(_, step) => !matches!(step, Step::Publish),
            Slot::Answer(_) => true,
            Slot::Done | Slot::Output(_) | Slot::Close(..) => false,
        }
    }
}

/// The parts of a session's state that most sessions never use.
#[derive(Default)]
struct Rare {
    /// The name held in the directory, once the protocol claimed one.
    claimed: Option<Arc<str>>,
    /// The room of a join in flight: cleaned up too if the session ends.
    joining: Option<RoomName>,
    /// Embedding programs' requests wait while a request is unanswered.
    controls: Vec<Control>,
    /// Changes made while an earlier one was unanswered, in order.
    changes: VecDeque<Change>,
    /// Set when the protocol's close has come in order: the session closes.
    close: Option<(DisconnectReason, Option<Bytes>)>,
}

/// A session's state apart from its protocol: what the engine and the
/// [`SessionContext`] share.
pub(crate) struct Driver {
    id: SessionId,
    peer: SocketAddr,
    wire: Wire,
    thread: usize,
    registry: Registry,
    /// The state this session's thread shares: its dispatcher's table, and
    /// the rooms sequenced here.
    local: Rc<Local>,
    /// The session's own handle: answers from the directory and the room
    /// index come back through it.
    handle: SessionHandle,
    name: Arc<str>,
    room: Option<RoomName>,
    next_request: RequestId,
    /// Requests in order, and what was written behind them.
    slots: VecDeque<Slot>,
    /// Bytes for the peer, in order, until the socket takes them.
    out: Outbound,
    /// What most sessions never need, allocated on first use: every session
    /// pays for the size of this struct.
    rare: Option<Box<Rare>>,
    /// The protocol asked to close, for this reason: no more input is read.
    closing: Option<DisconnectReason>,
    /// How the peer is reached, for the metrics.
    transport: Transport,
}

impl Driver {
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    fn request(&mut self, step: Step) -> RequestId {
        self.next_request += 1;
        self.slots.push_back(Slot::Waiting(self.next_request, step));
        self.next_request
    }

    fn requester(&self, request: RequestId) -> Requester {
        Requester {
            id: self.id,
            thread: self.thread,
            request,
        }
    }

    fn write(&mut self, bytes: Bytes) {
        if self.closing.is_some() && self.slots.is_empty() {
            return;
        }
        if self.slots.is_empty() {
            self.push_out(bytes);
        } else {
            self.slots.push_back(Slot::Output(bytes));
        }
    }

    /// Queues `bytes` for the peer now, counted in the metrics.
    fn push_out(&mut self, bytes: Bytes) {
        self.local.counters().frame_out(bytes.len());
        self.out.push(bytes);
    }

    fn publish_presence(&self) {
        self.handle
            .set_presence(self.name.clone(), self.room.clone());
    }

    fn sequence(&self, request: RoomRequest) {
        self.registry.sequence(&self.local, request);
    }

    /// Moves a request on by one step on `response`: either the next message
    /// goes out (and the slot waits again) or the slot is settled.
    fn advance(&mut self, request: RequestId, step: Step, response: Response) -> Slot {
        match (step, response) {
            // A broadcast the cluster could not take is the protocol's to tell.
            (Step::Publish, Response::Answer(answer @ Answer::Unavailable { .. })) => {
                Slot::Answer(answer)
            }
            (Step::Publish, _) => Slot::Done,
            (
                Step::Reserve {
                    room,
                    old,
                    join,
                    leave,
                },
                Response::Reserved,
            ) => {
                self.sequence(RoomRequest::Leave(Leave {
                    room: old,
                    id: self.id,
                    thread: self.thread,
                    request: Some(request),
                    announce: leave,
                    ended: None,
                }));
                Slot::Waiting(request, Step::SwitchLeave { room, join })
            }
            (Step::SwitchLeave { room, join }, Response::Answer(Answer::Left { .. })) => {
                self.room = None;
                self.sequence(RoomRequest::Confirm(Confirm {
                    room,
                    from: self.requester(request),
                    announce: join,
                }));
                Slot::Waiting(request, Step::Join)
            }
            (Step::Claim { name, announce }, Response::Claimed) => {
                let old = std::mem::replace(&mut self.name, name.clone());
                if let Some(released) = self.rare().claimed.replace(name.clone())
                    && !released.eq_ignore_ascii_case(&name)
                {
                    self.registry.release(Release {
                        name: released,
                        owner: self.id,
                    });
                }
                self.publish_presence();
                match self.room.clone() {
                    Some(room) => {
                        self.sequence(RoomRequest::Rename(Rename {
                            room,
                            from: self.requester(request),
                            old,
                            name,
                            announce,
                        }));
                        Slot::Waiting(request, Step::Rename)
                    }
                    None => Slot::Answer(Answer::Renamed {
                        old,
                        new: name,
                        room: None,
                    }),
                }
            }
            (_, Response::Answer(answer)) => {
                match &answer {
                    Answer::Joined { room, .. } => {
                        self.room = Some(room.clone());
                        self.rare().joining = None;
                        self.publish_presence();
                    }
                    Answer::RoomFull { .. } => self.rare().joining = None,
                    Answer::Left { room } if self.room.as_ref() == Some(room) => {
                        self.room = None;
                        self.publish_presence();
                    }
                    _ => {}
                }
                Slot::Answer(answer)
            }
            (step, response) => {
                debug!("session {}: {response:?} does not answer {step:?}", self.id);
                Slot::Done
            }
        }
    }

    /// Whether a join, leave or rename is unanswered: the session's room and
    /// name are about to change.
    fn changing(&self) -> bool {
        self.slots.iter().any(|slot| {
            matches!(
                slot,
                Slot::Waiting(_, step) if !matches!(step, Step::Publish | Step::Plain)
            )
        })
    }

    /// Makes `change` now, or once the change before it is answered.
    fn change(&mut self, change: Change) {
        let waiting = self
            .rare
            .as_ref()
            .is_some_and(|rare| !rare.changes.is_empty());
        if waiting || self.changing() {
            return self.rare().changes.push_back(change);
        }
        self.change_now(change);
    }

    fn change_now(&mut self, change: Change) {
        match change {
            Change::Join { room, join, leave } => self.join_now(room, join, leave),
            Change::Leave { announce } => self.leave_now(announce),
            Change::Publish { event } => self.publish_now(event),
            Change::Rename { name, announce } => self.rename_now(name, announce),
        }
    }

    /// Makes the changes that waited, in order, as far as none is unanswered.
    fn make_waiting_changes(&mut self) {
        while !self.changing() {
            let Some(change) = self.rare.as_mut().and_then(|rare| rare.changes.pop_front()) else {
                return;
            };
            self.change_now(change);
        }
    }

    fn join_now(&mut self, room: RoomName, join: Option<SharedEvent>, leave: Option<SharedEvent>) {
        self.rare().joining = Some(room.clone());
        let (step, reserve) = match self.room.clone() {
            Some(old) if old != room => (
                Step::Reserve {
                    room: room.clone(),
                    old,
                    join: join.clone(),
                    leave,
                },
                true,
            ),
            _ => (Step::Join, false),
        };
        let request = self.request(step);
        self.sequence(RoomRequest::Join(Join {
            room,
            from: self.requester(request),
            name: self.name.clone(),
            announce: join.filter(|_| !reserve),
            reserve,
        }));
    }

    fn leave_now(&mut self, announce: Option<SharedEvent>) {
        let Some(room) = self.room.clone() else {
            return;
        };
        let request = self.request(Step::Leave);
        self.sequence(RoomRequest::Leave(Leave {
            room,
            id: self.id,
            thread: self.thread,
            request: Some(request),
            announce,
            ended: None,
        }));
    }

    fn publish_now(&mut self, event: SharedEvent) {
        let Some(room) = self.room.clone() else {
            return;
        };
        let request = self.request(Step::Publish);
        self.sequence(RoomRequest::Publish(Publish {
            room,
            from: Some(self.requester(request)),
            event,
        }));
    }

    fn rename_now(&mut self, name: Arc<str>, announce: Option<SharedEvent>) {
        let request = self.request(Step::Claim {
            name: name.clone(),
            announce,
        });
        self.registry.claim(Claim {
            name,
            owner: self.handle.clone(),
            request,
        });
    }

    /// Whether the session should stop reading for now.
    fn input_paused(&self) -> bool {
        self.closing.is_some()
            || self.slots.len() >= REQUEST_CREDIT
            || self.slots.iter().any(Slot::is_barrier)
    }
}

impl SessionContext<'_> {
    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.driver.id
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.driver.peer
    }

    /// The session's wire format (set by its listener).
    pub fn wire(&self) -> Wire {
        self.driver.wire
    }

    /// The session's name (the lobby: its nick).
    pub fn name(&self) -> &Arc<str> {
        &self.driver.name
    }

    /// The room the session is in.
    pub fn room(&self) -> Option<&RoomName> {
        self.driver.room.as_ref()
    }

    /// The session's own handle, e.g. to hand to an application's actor.
    pub fn handle(&self) -> &SessionHandle {
        &self.driver.handle
    }

    /// The registry the session belongs to.
    pub fn registry(&self) -> &Registry {
        &self.driver.registry
    }

    /// Sets the session's name without claiming it in the directory: for a
    /// name nobody else can hold (the lobby's `guest<id>`).
    pub fn set_name(&mut self, name: impl Into<Arc<str>>) {
        self.driver.name = name.into();
        self.driver.publish_presence();
    }

    /// Writes `bytes` to the peer as they are, after every answer owed for
    /// earlier requests.
    pub fn send_bytes(&mut self, bytes: Bytes) {
        self.driver.write(bytes);
    }

    /// Writes `event` to the peer in the session's wire format, after
    /// every answer owed for earlier requests.
    pub fn send(&mut self, event: &impl Event) {
        let bytes = event.render(self.driver.wire);
        self.driver.write(bytes);
    }

    /// Writes an event the session received to the peer at once, in the
    /// session's wire format: room events keep the room's order, not the
    /// order of the session's own requests (see [`Protocol::deliver`]).
    pub fn forward(&mut self, event: &SharedEvent) {
        // Once closing, the farewell stays the last thing the peer reads.
        if self.driver.closing.is_none() {
            let bytes = event.bytes(self.driver.wire);
            self.driver.push_out(bytes);
        }
    }

    /// Ends the session for `reason`, in order: after everything owed for
    /// earlier requests, `farewell` (when the reason flushes output) is the
    /// last thing written. Input stops at once, so nothing the peer sent
    /// after this is carried out.
    pub fn close(&mut self, reason: DisconnectReason, farewell: Option<Bytes>) {
        let driver = &mut *self.driver;
        if driver.closing.is_some() {
            return;
        }
        driver.closing = Some(reason);
        if driver.slots.is_empty() {
            driver.rare().close = Some((reason, farewell));
        } else {
            driver.slots.push_back(Slot::Close(reason, farewell));
        }
    }

    /// Joins `room`, leaving the current room first (announced there with
    /// `leave`); `join` is announced to every member including this one.
    /// Answered [`Answer::Joined`] or [`Answer::RoomFull`] (then nothing
    /// changed, the current room included). Made while another join, leave
    /// or rename is unanswered, it waits for that answer (so does a
    /// [`publish`](Self::publish)): each acts on the room the one before left.
    pub fn join(&mut self, room: &str, join: Option<SharedEvent>, leave: Option<SharedEvent>) {
        let room = Arc::from(room);
        self.driver.change(Change::Join { room, join, leave });
    }

    /// Leaves the current room, announcing `announce` to every member
    /// including this one. Answered [`Answer::Left`]; nothing happens
    /// outside a room.
    pub fn leave(&mut self, announce: Option<SharedEvent>) {
        self.driver.change(Change::Leave { announce });
    }

    /// Broadcasts `event` to every member of the current room, this session
    /// included, in the room's one order. Nothing happens outside a room.
    pub fn publish(&mut self, event: SharedEvent) {
        self.driver.change(Change::Publish { event });
    }

    /// Takes `name` (unique, compared case-insensitively), giving up the
    /// session's previous one; in a room, `announce` is sent to every member.
    /// Answered [`Answer::Renamed`] or [`Answer::NameTaken`].
    pub fn rename(&mut self, name: &str, announce: Option<SharedEvent>) {
        let name = Arc::from(name);
        self.driver.change(Change::Rename { name, announce });
    }

    /// Sends `event` to another session, in its wire format, after
    /// everything this session published before (a private message never
    /// overtakes the sender's room line, whichever threads they cross).
    pub fn send_to(&mut self, peer: &Peer, event: SharedEvent) {
        let driver = &*self.driver;
        let thread = driver.registry.thread_of(peer.id);
        driver.local.send_to(thread, &peer.handle, event);
    }

    /// Asks for the members of `room`. Answered [`Answer::Members`].
    pub fn who(&mut self, room: &str) {
        let driver = &mut *self.driver;
        let room: RoomName = Arc::from(room);
        let request = driver.request(Step::Plain);
        driver.sequence(RoomRequest::Members(Members {
            room,
            from: driver.requester(request),
        }));
    }

    /// Asks for every room. Answered [`Answer::Rooms`].
    pub fn rooms(&mut self) {
        let driver = &mut *self.driver;
        let request = driver.request(Step::Plain);
        driver.registry.list_for(ListFor {
            requester: driver.handle.clone(),
            request,
        });
    }

    /// Looks for the session holding the claimed `name`. Answered
    /// [`Answer::Found`].
    pub fn find_name(&mut self, name: &str) {
        let driver = &mut *self.driver;
        let name: Arc<str> = Arc::from(name);
        let request = driver.request(Step::Plain);
        driver.registry.find_name(FindName {
            name,
            requester: driver.handle.clone(),
            request,
        });
    }

    /// Looks for the session `id`. Answered [`Answer::Found`].
    pub fn find_session(&mut self, id: SessionId) {
        let driver = &mut *self.driver;
        let request = driver.request(Step::Plain);
        let thread = driver.registry.thread_of(id);
        driver.registry.dispatcher(thread).do_send(FindSession {
            id,
            requester: driver.handle.clone(),
            request,
        });
    }
}

/// A protocol and its driver: what a session actor (TCP or UDP) runs. The
/// actor feeds it what happened and writes what it produced.
pub(crate) struct Engine<P> {
    protocol: P,
    driver: Driver,
}

impl<P: Protocol> Engine<P> {
    pub(crate) fn new(
        protocol: P,
        handle: SessionHandle,
        peer: SocketAddr,
        wire: Wire,
        (registry, local): (Registry, Rc<Local>),
    ) -> Self {
        let id = handle.id();
        let transport = match wire {
            Wire::Text => Transport::TcpText,
            Wire::Json => Transport::TcpJson,
        };
        Engine {
            protocol,
            driver: Driver {
                id,
                peer,
                wire,
                thread: local.thread,
                registry,
                local,
                handle,
                name: Arc::from(""),
                room: None,
                next_request: 0,
                slots: VecDeque::new(),
                out: Outbound::default(),
                rare: None,
                closing: None,
                transport,
            },
        }
    }

    /// The same engine, counted in the metrics as a session of `transport`
    /// (by default TCP, of the text or JSON wire).
    pub(crate) fn with_transport(mut self, transport: Transport) -> Self {
        self.driver.transport = transport;
        self
    }

    fn cx(&mut self) -> (&mut P, SessionContext<'_>) {
        (
            &mut self.protocol,
            SessionContext {
                driver: &mut self.driver,
            },
        )
    }

    /// Registers with the thread's dispatcher, then lets the protocol start.
    pub(crate) fn opened(&mut self) {
        let driver = &self.driver;
        let mut sessions = driver.local.sessions.borrow_mut();
        sessions.register(driver.handle.clone());
        drop(sessions);
        driver.local.metrics.opened(driver.transport);
        let (protocol, mut cx) = self.cx();
        protocol.opened(&mut cx);
    }

    pub(crate) fn frame(&mut self, frame: Bytes) {
        self.driver.local.counters().frame_in(frame.len());
        let (protocol, mut cx) = self.cx();
        protocol.frame(&mut cx, frame);
    }

    pub(crate) fn oversized(&mut self) {
        let (protocol, mut cx) = self.cx();
        protocol.oversized(&mut cx);
    }

    pub(crate) fn rate_limited(&mut self) {
        let (protocol, mut cx) = self.cx();
        protocol.rate_limited(&mut cx);
    }

    pub(crate) fn heartbeat(&mut self, count: u64) {
        let (protocol, mut cx) = self.cx();
        protocol.heartbeat(&mut cx, count);
    }

    pub(crate) fn idle(&mut self) {
        let (protocol, mut cx) = self.cx();
        protocol.idle(&mut cx);
        cx.close(DisconnectReason::IdleTimeout, None);
    }

    pub(crate) fn input_closed(&mut self) {
        let (protocol, mut cx) = self.cx();
        protocol.input_closed(&mut cx);
    }

    /// Handles what the inbox held, in order.
    pub(crate) fn deliver(&mut self, deliveries: impl IntoIterator<Item = Delivery>) {
        for delivery in deliveries {
            match delivery {
                Delivery::Event(event) => {
                    let (protocol, mut cx) = self.cx();
                    protocol.deliver(&mut cx, event);
                }
                Delivery::Answer(answer) => {
                    let (request, response) = *answer;
                    self.settle(request, response);
                }
                Delivery::Close { reason, farewell } => {
                    let farewell = farewell.map(|event| event.bytes(self.driver.wire));
                    let (_, mut cx) = self.cx();
                    cx.close(reason, farewell);
                }
                Delivery::Shutdown => {
                    let (protocol, mut cx) = self.cx();
                    protocol.shutdown(&mut cx);
                    cx.close(DisconnectReason::Shutdown, None);
                }
                Delivery::Control(control) => self.driver.rare().controls.push(*control),
            }
        }
        self.run_controls();
    }

    fn settle(&mut self, request: RequestId, response: Response) {
        let driver = &mut self.driver;
        let Some(at) = driver
            .slots
            .iter()
            .position(|slot| matches!(slot, Slot::Waiting(r, _) if *r == request))
        else {
            return debug!("session {}: unexpected answer {response:?}", driver.id);
        };
        let Slot::Waiting(_, step) = std::mem::replace(&mut driver.slots[at], Slot::Done) else {
            return;
        };
        driver.slots[at] = driver.advance(request, step, response);
        self.settle_in_order();
    }

    /// Hands settled slots at the front to the protocol, in request order,
    /// then makes the changes that waited for them.
    fn settle_in_order(&mut self) {
        self.hand_over_in_order();
        self.driver.make_waiting_changes();
    }

    fn hand_over_in_order(&mut self) {
        loop {
            let driver = &mut self.driver;
            if matches!(driver.slots.front(), None | Some(Slot::Waiting(..))) {
                return;
            }
            match driver.slots.pop_front() {
                Some(Slot::Answer(answer)) => {
                    let (protocol, mut cx) = self.cx();
                    protocol.answer(&mut cx, answer);
                }
                Some(Slot::Output(bytes)) => driver.push_out(bytes),
                Some(Slot::Close(reason, farewell)) => {
                    // Requests made after the close stay: the end releases
                    // what they were claiming.
                    driver.rare().close = Some((reason, farewell));
                    return;
                }
                Some(Slot::Done | Slot::Waiting(..)) | None => {}
            }
        }
    }

    pub(crate) fn run_controls(&mut self) {
        while !self.driver.slots.iter().any(Slot::is_barrier) && self.driver.closing.is_none() {
            let Some(rare) = self
                .driver
                .rare
                .as_mut()
                .filter(|rare| !rare.controls.is_empty())
            else {
                return;
            };
            let control = rare.controls.remove(0);
            let (protocol, mut cx) = self.cx();
            protocol.control(&mut cx, control);
        }
    }

    /// Notes in the metrics how many frames wait for the peer (when the
    /// transport could not write them all).
    pub(crate) fn note_queued(&self) {
        self.note_queued_frames(self.driver.out.len());
    }

    /// Notes in the metrics that `frames` frames wait for the peer.
    pub(crate) fn note_queued_frames(&self, frames: usize) {
        self.driver.local.counters().queued(frames);
    }

    /// Queues `bytes` for the peer at once (a farewell), counted in the
    /// metrics.
    pub(crate) fn push_out(&mut self, bytes: Bytes) {
        self.driver.push_out(bytes);
    }

    /// What the session owes its peer, in order.
    pub(crate) fn outbound(&mut self) -> &mut Outbound {
        &mut self.driver.out
    }

    /// The close the protocol asked for, once everything before it is owed.
    pub(crate) fn take_close(&mut self) -> Option<(DisconnectReason, Option<Bytes>)> {
        self.driver.rare.as_mut()?.close.take()
    }

    /// The session's id.
    pub(crate) fn id(&self) -> SessionId {
        self.driver.id
    }

    /// The peer's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.driver.peer
    }

    /// Whether the protocol asked to close (input is over).
    pub(crate) fn is_closing(&self) -> bool {
        self.driver.closing.is_some()
    }

    /// Why the protocol asked to close, while the close waits for the
    /// answers owed before it.
    pub(crate) fn closing_reason(&self) -> Option<DisconnectReason> {
        self.driver.closing
    }

    /// Whether the session should read no input for now.
    pub(crate) fn input_paused(&self) -> bool {
        self.driver.input_paused()
    }

    /// The session has ended: it leaves its room (the rest are told why),
    /// gives up its name and unregisters, exactly once, whatever ended it.
    pub(crate) fn closed(&mut self, reason: DisconnectReason) {
        let driver = &mut self.driver;
        let joining = driver.rare.as_mut().and_then(|rare| rare.joining.take());
        let rooms = [driver.room.clone(), joining];
        for room in rooms.into_iter().flatten() {
            let announce = self.protocol.quit_event(&room, &driver.name, reason);
            driver.sequence(RoomRequest::Leave(Leave {
                room,
                id: driver.id,
                thread: driver.thread,
                request: None,
                announce,
                ended: Some(reason),
            }));
        }
        // The name held, and any claimed but not answered yet: a Release
        // follows its Claim into the same shard, so it is never overtaken.
        let in_flight = driver.slots.iter().filter_map(|slot| match slot {
            Slot::Waiting(_, Step::Claim { name, .. }) => Some(name.clone()),
            _ => None,
        });
        let held = driver.rare.as_mut().and_then(|rare| rare.claimed.take());
        for name in held.into_iter().chain(in_flight.collect::<Vec<_>>()) {
            driver.registry.release(Release {
                name,
                owner: driver.id,
            });
        }
        driver.local.sessions.borrow_mut().unregister(driver.id);
        driver.local.metrics.closed(driver.transport, reason);
        let closed = ClosedSession {
            id: driver.id,
            name: &driver.name,
            room: driver.room.as_ref(),
            reason,
            wire: driver.wire,
        };
        self.protocol.closed(closed);
    }
}
