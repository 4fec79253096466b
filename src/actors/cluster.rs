//! The Cluster actor: with `--cluster`, the networked sequencer of every
//! room, standing behind the same `RoomRequest` boundary as the per-thread
//! [`Sequencer`](super::sequencer::Sequencer)s.
//!
//! Each room request becomes one Lua script (see `crate::cluster::scripts`)
//! that changes the room in Redis, numbers the event and appends it to the
//! stream of each node that has members in the room, atomically. A reader
//! task follows this node's one stream (`XREAD`), which so holds exactly the
//! rooms this node is in, and the actor hands each entry, in stream order,
//! to the local threads that have members: one `Deliver` per thread, as the
//! local sequencers do. So a broadcast crosses the network once per node,
//! every node delivers a room's events in the one order Redis gave them, and
//! a node that reconnects resumes its stream where it stopped: nothing is
//! lost, repeated or reordered.
//!
//! A request's answer waits until the node has delivered the event the
//! request caused, so a session still reads its own `JOIN` before its `WHO`.
//! Names (claims, look-ups) and the room list live in Redis too.
//!
//! Liveness: the node heartbeats every second into a sorted set. A node
//! whose heartbeat is older than the timeout is reaped by exactly one
//! survivor (the script whose `ZREM` wins), which tells each of its members'
//! rooms `QUIT <room> <nick> node-down` once. A node that finds itself
//! reaped (it was paused, not dead) closes its sessions as `node-down`
//! rather than bring back zombies. While Redis cannot be reached, and until
//! a heartbeat confirms Redis still holds this node's data, requests are
//! answered `unavailable`; a Redis that lost its data (restarted without
//! persistence) is given this node's members and names again.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use foldhash::HashMap;
use futures::channel::oneshot;
use log::{debug, info, warn};
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Script, ServerErrorKind, Value};
use tokio::sync::mpsc;

use super::directory::{Claim, FindName, Release};
use super::dispatcher::{CloseAll, Deliver, Dispatcher, FindSession, ToSession};
use super::remote_peer::RemotePeer;
use super::room_index::{ListFor, Snapshot};
use super::sequencer::{Confirm, Join, Leave, Members, Publish, Rename, Requester, RoomRequest};
use crate::cluster::{
    ClusterConfig, ClusterHealth, HealthCell, Joined, RESPONSE_TIMEOUT, Wired, new_epoch, scripts,
};
use crate::event::{SharedEvent, Wire};
use crate::handle::{RequestId, SessionHandle, SessionId};
use crate::local::{Crossing, Link};
use crate::reason::DisconnectReason;
use crate::room::{Answer, Peer, Response, RoomList, RoomName};

/// Most scripts sent to Redis in one pipeline.
const MAX_BATCH: usize = 512;

/// Most stream entries read per room in one `XREAD`.
const READ_COUNT: usize = 1024;

/// How long one `XREAD` blocks waiting for entries, in milliseconds (the
/// reader checks between reads whether the node is still running).
const READ_BLOCK_MS: u64 = 1000;

/// The reader's back-off between reconnection attempts: from the first to
/// the last, doubling.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

/// What the engine starts with: the registered node and the ways into the
/// local threads.
pub(crate) struct Setup {
    pub joined: Joined,
    pub links: Arc<[Link]>,
    pub dispatchers: Arc<[Addr<Dispatcher>]>,
    pub capacity: usize,
    pub health: HealthCell,
}

/// One script call and what its result is for.
struct Op {
    cmd: Cmd,
    tag: Tag,
}

/// What to do with a script's result.
enum Tag {
    Join {
        room: RoomName,
        from: Requester,
    },
    Leave {
        room: RoomName,
        from: Option<Requester>,
    },
    Publish {
        room: RoomName,
        from: Option<Requester>,
        count: Option<oneshot::Sender<usize>>,
    },
    Rename {
        room: RoomName,
        from: Requester,
        renamed: Answer,
    },
    Members {
        room: RoomName,
        from: Requester,
    },
    Claim {
        owner: SessionHandle,
        request: RequestId,
        name: Arc<str>,
    },
    Find {
        requester: SessionHandle,
        request: RequestId,
        cluster: Addr<Cluster>,
    },
    Rooms {
        requester: Option<(SessionHandle, RequestId)>,
        snapshot: Option<oneshot::Sender<Arc<RoomList>>>,
    },
    /// Cleanup that must happen even after an outage: retried until done.
    Cleanup,
    Heartbeat,
    Reap(String),
    /// This node leaves the cluster (graceful shutdown).
    Depart(oneshot::Sender<()>),
    Register,
    Ignore,
}

/// This node leaves the cluster once every request sent before is done:
/// any member still seated is told `QUIT <room> <nick> shutdown`, and the
/// node is no longer counted alive. Answered when Redis has done it (or
/// failed to).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Depart;

/// `event` for session `id` of another node (a `/msg`), through that
/// node's direct stream.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Direct {
    pub node: Arc<str>,
    pub id: SessionId,
    pub event: SharedEvent,
}

/// Results of one pipeline, in the order the scripts were sent.
#[derive(Message)]
#[rtype(result = "()")]
struct Done(Vec<(Op, Result<Value, String>)>);

/// One entry of this node's stream: a room event (its room and sequence
/// number) or a direct line (no room).
type Read = (Option<(RoomName, u64)>, Entry);

/// Entries the reader took from this node's stream, in stream order.
#[derive(Message)]
#[rtype(result = "()")]
struct Entries(Vec<Read>);

/// One entry of this node's stream: a room event or a direct line.
#[derive(Debug, Default)]
struct Entry {
    kind: Bytes,
    add: Option<String>,
    remove: Option<String>,
    text: Option<Bytes>,
    json: Option<Bytes>,
}

/// The reader's connection broke: until a heartbeat has checked Redis's
/// data, what it reads next is held back.
#[derive(Message)]
#[rtype(result = "()")]
struct ReaderLost;

/// Where the reader is in this node's stream: the id of the last entry
/// read. Shared by the reader task and the actor (one thread): the actor
/// starts it again when Redis lost its data.
type Cursor = Rc<RefCell<String>>;

/// Where a node's stream starts.
const STREAM_START: &str = "0-0";

/// A room this node has members in.
#[derive(Default)]
struct Sub {
    /// The last sequence number delivered.
    last: u64,
    /// Local members in join order, with their threads.
    members: Vec<(SessionId, usize)>,
    per_thread: Vec<u32>,
    /// Answers held until the event with this sequence number is
    /// delivered, in order.
    waiting: VecDeque<(u64, Requester, Response)>,
    /// A local member's join event arrived before the reply to its join
    /// (the reader outran the writer): the room's entries wait here until
    /// the reply comes, so its `WHO` still follows its own `JOIN` at once.
    held: Option<(SessionId, VecDeque<(u64, Entry)>)>,
}

impl Sub {
    fn count(&mut self, thread: usize, delta: i32) {
        if self.per_thread.len() <= thread {
            self.per_thread.resize(thread + 1, 0);
        }
        let count = &mut self.per_thread[thread];
        *count = count.saturating_add_signed(delta);
    }
}

/// The cluster engine of one node. See the module docs.
pub struct Cluster {
    node: Arc<str>,
    config: ClusterConfig,
    epoch: String,
    capacity: usize,
    client: redis::Client,
    links: Arc<[Link]>,
    dispatchers: Arc<[Addr<Dispatcher>]>,
    health: HealthCell,
    ops: mpsc::UnboundedSender<Op>,
    /// Taken by `started`.
    start: Option<(ConnectionManager, mpsc::UnboundedReceiver<Op>)>,
    rooms: HashMap<RoomName, Sub>,
    cursor: Cursor,
    /// Until a heartbeat confirms that Redis still holds this node's data
    /// (after any failure), requests are answered `unavailable`.
    suspect: bool,
    heartbeat_in_flight: bool,
    /// The node left the cluster (graceful shutdown): no more heartbeats.
    departed: bool,
    /// Cleanups (leaves of ended sessions, name releases) that failed.
    retry: Vec<Cmd>,
    /// Names and claims of local sessions, to give a Redis that lost its
    /// data this node's state again.
    names: HashMap<SessionId, Arc<str>>,
    claims: HashMap<SessionId, Arc<str>>,
    /// Entries read while `suspect`: applied once a heartbeat confirms
    /// Redis's data, dropped (and read again) if Redis lost it.
    parked: Vec<Read>,
    /// Joins (and confirms) sent and not answered yet, per session.
    joins_in_flight: HashMap<SessionId, u32>,
}

impl Cluster {
    pub(crate) fn new(setup: Setup) -> Self {
        let Setup {
            joined,
            links,
            dispatchers,
            capacity,
            health,
        } = setup;
        let (ops, receiver) = mpsc::unbounded_channel();
        health.set(ClusterHealth::Connected);
        Cluster {
            node: Arc::from(joined.config.node_name.as_str()),
            config: joined.config,
            epoch: joined.epoch,
            capacity,
            client: joined.client,
            links,
            dispatchers,
            health,
            ops,
            start: Some((joined.commands, receiver)),
            rooms: HashMap::default(),
            cursor: Rc::new(RefCell::new(STREAM_START.to_owned())),
            suspect: false,
            heartbeat_in_flight: false,
            departed: false,
            retry: Vec::new(),
            names: HashMap::default(),
            claims: HashMap::default(),
            joins_in_flight: HashMap::default(),
            parked: Vec::new(),
        }
    }

    fn send(&self, cmd: Cmd, tag: Tag) {
        // The writer lives as long as the actor's context.
        let _ = self.ops.send(Op { cmd, tag });
    }

    fn thread_of(&self, id: SessionId) -> usize {
        (id.0 % self.links.len().max(1) as u64) as usize
    }

    fn member(&self, id: SessionId) -> String {
        format!("{}/{}", self.node, id.0)
    }

    /// The local session a `NODE/SESSION` member names, if it is ours.
    fn ours(&self, member: &str) -> Option<(SessionId, usize)> {
        let (node, sid) = member.rsplit_once('/')?;
        let id = SessionId(sid.parse().ok()?);
        (node == &*self.node).then(|| (id, self.thread_of(id)))
    }

    fn deliver(&self, thread: usize, deliver: Deliver) {
        if let Some(link) = self.links.get(thread) {
            link.send(Crossing::Deliver(deliver));
        }
    }

    fn answer(&self, requester: Requester, response: Response) {
        let deliver = Deliver {
            answer: Some((requester.id, requester.request, response)),
            ..Deliver::default()
        };
        self.deliver(requester.thread, deliver);
    }

    fn unavailable(&self, requester: Requester, broadcast: bool) {
        self.answer(requester, Answer::Unavailable { broadcast }.into());
    }

    /// Answers `response` once the room's event `seq` is delivered here
    /// (at once when it already is, or when `seq` is 0). With `follow`, a
    /// room this node does not follow yet is followed from `seq`.
    fn after(
        &mut self,
        room: RoomName,
        seq: u64,
        from: Requester,
        response: Response,
        follow: bool,
    ) {
        if seq == 0 {
            return self.answer(from, response);
        }
        if !self.rooms.contains_key(&room) {
            if !follow {
                return self.answer(from, response);
            }
            self.follow(room.clone(), seq - 1);
        }
        let Some(sub) = self.rooms.get_mut(&room) else {
            return;
        };
        if sub.last >= seq {
            return self.answer(from, response);
        }
        sub.waiting.push_back((seq, from, response));
    }

    /// The reply to a join of `id` in `room` arrived (and its answer is
    /// waiting or sent): entries held for it are applied now.
    fn join_replied(&mut self, room: &RoomName, id: SessionId) {
        if let Some(count) = self.joins_in_flight.get_mut(&id) {
            *count -= 1;
            if *count == 0 {
                self.joins_in_flight.remove(&id);
            }
        }
        let Some(sub) = self.rooms.get_mut(room) else {
            return;
        };
        if sub.held.as_ref().is_none_or(|(held, _)| *held != id) {
            return;
        }
        let Some((_, entries)) = sub.held.take() else {
            return;
        };
        for (seq, entry) in entries {
            self.apply(room, seq, entry);
        }
    }

    fn apply_all(&mut self, read: Vec<Read>) {
        for (room, entry) in read {
            match room {
                Some((room, seq)) => self.apply(&room, seq, entry),
                None => self.apply_direct(entry),
            }
        }
    }

    /// Starts delivering `room`'s events after `last`.
    fn follow(&mut self, room: RoomName, last: u64) {
        let sub = Sub {
            last,
            ..Sub::default()
        };
        self.rooms.insert(room, sub);
    }

    fn unfollow(&mut self, room: &RoomName) {
        self.rooms.remove(room);
    }

    /// Hands a direct line of this node's stream to its session.
    fn apply_direct(&mut self, entry: Entry) {
        let Some(id) = entry.add.and_then(|id| id.parse().ok()).map(SessionId) else {
            return;
        };
        let Some(text) = entry.text else {
            return;
        };
        let json = entry.json.unwrap_or_default();
        let event = SharedEvent::new(Wired { text, json });
        let thread = self.thread_of(id);
        self.dispatchers[thread].do_send(ToSession::Event(id, event));
    }

    /// Delivers one entry of `room`'s stream to the local members.
    fn apply(&mut self, room: &RoomName, seq: u64, entry: Entry) {
        let add = entry.add.as_deref().and_then(|m| self.ours(m));
        let remove = entry.remove.as_deref().and_then(|m| self.ours(m));
        let threads = self.links.len();
        if add.is_some() && !self.rooms.contains_key(room) {
            // A member of this node joins: its room is followed from here
            // (the reply to its join may come before or after this).
            self.follow(room.clone(), seq - 1);
        }
        let Some(sub) = self.rooms.get_mut(room) else {
            return;
        };
        if let Some((_, held)) = &mut sub.held {
            return held.push_back((seq, entry));
        }
        if seq <= sub.last {
            return;
        }
        if let Some((id, _)) = add
            && self.joins_in_flight.contains_key(&id)
        {
            sub.held = Some((id, VecDeque::from([(seq, entry)])));
            return;
        }
        if seq > sub.last + 1 {
            warn!(
                "cluster: room {room} skipped events {}..{} (this node fell behind its stream's cap)",
                sub.last + 1,
                seq - 1
            );
        }
        sub.last = seq;
        if &*entry.kind == b"q" && remove.is_some() {
            // A survivor reaped this node: it was paused, not dead.
            return self.declared_dead();
        }
        if let Some((id, thread)) = add
            && !sub.members.iter().any(|&(member, _)| member == id)
        {
            sub.members.push((id, thread));
            sub.count(thread, 1);
        }
        let event = entry.text.map(|text| {
            SharedEvent::new(Wired {
                text,
                json: entry.json.unwrap_or_default(),
            })
        });
        let mut due: Vec<(Requester, Response)> = Vec::new();
        while sub.waiting.front().is_some_and(|(at, ..)| *at <= seq) {
            if let Some((_, from, response)) = sub.waiting.pop_front() {
                due.push((from, response));
            }
        }
        // Threads whose sessions get answers go last: once a session holds
        // its answer, every other thread already has the event queued.
        let answered = |t: usize| due.iter().any(|(from, _)| from.thread == t);
        let order = (0..threads)
            .filter(|&t| !answered(t))
            .chain((0..threads).filter(|&t| answered(t)));
        let mut deliveries = Vec::new();
        for thread in order {
            let on = |who: Option<(SessionId, usize)>| who.filter(|&(_, t)| t == thread);
            let has_members = sub.per_thread.get(thread).is_some_and(|&n| n > 0);
            let mut answers = due
                .iter()
                .filter(|(from, _)| from.thread == thread)
                .map(|(from, response)| (from.id, from.request, response.clone()));
            let first = answers.next();
            if !(has_members || on(add).is_some() || on(remove).is_some() || first.is_some()) {
                continue;
            }
            deliveries.push((
                thread,
                Deliver {
                    room: Some(room.clone()),
                    add: on(add).map(|(id, _)| id),
                    event: event.clone(),
                    remove: on(remove).map(|(id, _)| id),
                    answer: first,
                    applied: None,
                },
            ));
            for answer in answers {
                let deliver = Deliver {
                    answer: Some(answer),
                    ..Deliver::default()
                };
                deliveries.push((thread, deliver));
            }
        }
        if let Some((id, thread)) = remove
            && let Some(at) = sub.members.iter().position(|&(member, _)| member == id)
        {
            sub.members.remove(at);
            sub.count(thread, -1);
        }
        let idle = sub.members.is_empty() && sub.waiting.is_empty();
        for (thread, deliver) in deliveries {
            self.deliver(thread, deliver);
        }
        if idle {
            self.unfollow(room);
        }
    }

    /// While Redis cannot be reached, a member's line still reaches this
    /// node's members of its room (in this node's order, unnumbered); the
    /// sender is then told `unavailable`: nobody on other nodes got it.
    fn publish_here(&mut self, room: &RoomName, from: Option<Requester>, event: SharedEvent) {
        let refused = Answer::Unavailable { broadcast: true };
        let Some(sub) = self.rooms.get(room) else {
            if let Some(from) = from {
                self.answer(from, refused.into());
            }
            return;
        };
        let member = |id| sub.members.iter().any(|&(m, _)| m == id);
        if from.is_some_and(|from| !member(from.id)) {
            if let Some(from) = from {
                self.answer(from, refused.into());
            }
            return;
        }
        let requester_thread = from.map(|from| from.thread);
        let threads = (0..self.links.len()).filter(|&t| Some(t) != requester_thread);
        let mut deliveries = Vec::new();
        for thread in threads.chain(requester_thread) {
            let answer = from
                .filter(|from| from.thread == thread)
                .map(|from| (from.id, from.request, refused.clone().into()));
            if sub.per_thread.get(thread).is_some_and(|&n| n > 0) || answer.is_some() {
                let deliver = Deliver {
                    room: Some(room.clone()),
                    event: Some(event.clone()),
                    answer,
                    ..Deliver::default()
                };
                deliveries.push((thread, deliver));
            }
        }
        for (thread, deliver) in deliveries {
            self.deliver(thread, deliver);
        }
    }

    /// This node was reaped while it could not heartbeat: its members and
    /// names are gone from the cluster, so its sessions end as `node-down`
    /// and it registers anew for new sessions.
    fn declared_dead(&mut self) {
        if self.departed {
            // Its own leftovers, reaped as it leaves: nothing to bring back.
            return;
        }
        warn!(
            "cluster: node {} was declared dead by the cluster; closing its sessions (node-down)",
            self.node
        );
        let rooms: Vec<(RoomName, Sub)> = self.rooms.drain().collect();
        for (room, sub) in rooms {
            for (id, thread) in sub.members {
                let deliver = Deliver {
                    room: Some(room.clone()),
                    remove: Some(id),
                    ..Deliver::default()
                };
                self.deliver(thread, deliver);
            }
            for (_, from, _) in sub.waiting {
                self.unavailable(from, false);
            }
        }
        self.names.clear();
        self.claims.clear();
        self.joins_in_flight.clear();
        self.parked.clear();
        self.retry.clear();
        for dispatcher in self.dispatchers.iter() {
            dispatcher.do_send(CloseAll(DisconnectReason::NodeDown));
        }
        // Unavailable until registered again and confirmed by a heartbeat.
        self.suspect = true;
        self.register(self.epoch.clone());
    }

    fn register(&self, epoch: String) {
        let mut cmd = eval(&scripts::REGISTER);
        cmd.arg(&*self.node).arg(epoch);
        self.send(cmd, Tag::Register);
    }

    /// Redis lost its data (restarted without persistence): register again
    /// and seat this node's members and names again, unannounced.
    fn reseed(&mut self) {
        warn!("cluster: redis lost its data; giving it this node's members and names again");
        self.register(new_epoch());
        for (room, sub) in &self.rooms {
            for (id, _) in &sub.members {
                let Some(name) = self.names.get(id) else {
                    continue;
                };
                let mut cmd = eval(&scripts::RESEAT);
                cmd.arg(&**room).arg(&*self.node).arg(id.0).arg(&**name);
                self.send(cmd, Tag::Ignore);
            }
        }
        for (id, name) in &self.claims {
            let mut cmd = eval(&scripts::CLAIM);
            cmd.arg(name.to_ascii_lowercase())
                .arg(&*self.node)
                .arg(id.0)
                .arg(&**name);
            self.send(cmd, Tag::Ignore);
        }
    }

    fn set_health(&mut self, health: ClusterHealth) {
        if self.health.set(health) {
            match health {
                ClusterHealth::Degraded => warn!(
                    "cluster: redis at {} cannot be reached; cross-node requests get ERR unavailable",
                    self.config.url
                ),
                _ => info!("cluster: redis at {} reachable again", self.config.url),
            }
        }
    }

    fn heartbeat(&mut self) {
        if self.heartbeat_in_flight || self.departed {
            return;
        }
        self.heartbeat_in_flight = true;
        let mut cmd = eval(&scripts::HEARTBEAT);
        cmd.arg(&*self.node)
            .arg(&self.epoch)
            .arg(self.config.timeout.as_millis() as u64);
        self.send(cmd, Tag::Heartbeat);
    }

    /// A request failed to reach Redis: hold requests until a heartbeat
    /// has checked that Redis still holds this node's data.
    fn failed(&mut self) {
        self.set_health(ClusterHealth::Degraded);
        self.suspect = true;
    }

    fn settle(&mut self, op: Op, result: Result<Value, String>) {
        let value = match result {
            Ok(value) => value,
            Err(error) => {
                debug!("cluster: request failed: {error}");
                return self.settle_failed(op);
            }
        };
        let words = array(&value);
        let status = words.first().and_then(text).unwrap_or_default();
        let seq = || words.get(1).and_then(int).unwrap_or(0) as u64;
        match op.tag {
            Tag::Join { room, from } => match status.as_str() {
                "joined" => {
                    let members = words.get(2).map(array).unwrap_or_default();
                    let members = members.iter().filter_map(text).map(Arc::from).collect();
                    let joined = Answer::Joined {
                        room: room.clone(),
                        members,
                    };
                    self.after(room.clone(), seq(), from, joined.into(), true);
                    self.join_replied(&room, from.id);
                }
                "reserved" => {
                    self.answer(from, Response::Reserved);
                    self.join_replied(&room, from.id);
                }
                "full" => {
                    let capacity = self.capacity;
                    self.join_replied(&room, from.id);
                    self.answer(from, Answer::RoomFull { room, capacity }.into());
                }
                _ => {
                    self.unavailable(from, false);
                    self.join_replied(&room, from.id);
                }
            },
            Tag::Leave { room, from } => {
                if let Some(from) = from {
                    let left = Answer::Left { room: room.clone() }.into();
                    self.after(room, seq(), from, left, false);
                }
            }
            Tag::Publish { room, from, count } => {
                let members = if status == "ok" {
                    words.get(2).and_then(int).unwrap_or(0) as usize
                } else {
                    0
                };
                if let Some(count) = count {
                    let _ = count.send(members);
                }
                if let Some(from) = from {
                    self.after(room, seq(), from, Response::Published, false);
                }
            }
            Tag::Rename {
                room,
                from,
                renamed,
            } => self.after(room, seq(), from, renamed.into(), false),
            Tag::Members { room, from } => {
                let members = words.iter().filter_map(text).map(Arc::from).collect();
                self.answer(from, Answer::Members { room, members }.into());
            }
            Tag::Claim {
                owner,
                request,
                name,
            } => match text(&value).as_deref() {
                Some("ok") => {
                    self.claims.insert(owner.id(), name);
                    owner.answer(request, Response::Claimed);
                }
                Some("taken") => owner.answer(request, Answer::NameTaken { name }.into()),
                _ => owner.answer(request, Answer::Unavailable { broadcast: false }.into()),
            },
            Tag::Find {
                requester,
                request,
                cluster,
            } => {
                let holder = text(&value);
                let parts = holder.as_deref().and_then(|holder| {
                    let (member, name) = holder.rsplit_once('/')?;
                    let (node, id) = member.rsplit_once('/')?;
                    Some((member, node, SessionId(id.parse().ok()?), name))
                });
                match parts {
                    None => requester.answer(request, Answer::Found(None).into()),
                    Some((member, node, id, name)) => match self.ours(member) {
                        Some((id, thread)) => self.dispatchers[thread].do_send(FindSession {
                            id,
                            requester,
                            request,
                        }),
                        None => {
                            let handle = RemotePeer::handle(Arc::from(node), id, cluster);
                            let peer = Peer {
                                id,
                                name: Arc::from(name),
                                handle,
                            };
                            requester.answer(request, Answer::Found(Some(peer)).into());
                        }
                    },
                }
            }
            Tag::Rooms {
                requester,
                snapshot,
            } => {
                let mut rooms: Vec<(RoomName, usize)> = words
                    .chunks(2)
                    .filter_map(|pair| {
                        let room = text(pair.first()?)?;
                        let count = int(pair.get(1)?)?;
                        Some((Arc::from(room), count as usize))
                    })
                    .collect();
                rooms.sort();
                let list = Arc::new(RoomList::new(rooms));
                if let Some((requester, request)) = requester {
                    requester.answer(request, Answer::Rooms(list.clone()).into());
                }
                if let Some(snapshot) = snapshot {
                    let _ = snapshot.send(list);
                }
            }
            Tag::Heartbeat => {
                self.heartbeat_in_flight = false;
                match status.as_str() {
                    "ok" => {
                        self.set_health(ClusterHealth::Connected);
                        self.suspect = false;
                        let parked = std::mem::take(&mut self.parked);
                        self.apply_all(parked);
                        for cmd in std::mem::take(&mut self.retry) {
                            self.send(cmd, Tag::Cleanup);
                        }
                        let dead = words.get(1).map(array).unwrap_or_default();
                        for node in dead.iter().filter_map(text) {
                            if node != *self.node {
                                let mut cmd = eval(&scripts::REAP);
                                cmd.arg(&node)
                                    .arg(DisconnectReason::NodeDown.word())
                                    .arg(self.config.timeout.as_millis() as u64)
                                    .arg("after-grace");
                                self.send(cmd, Tag::Reap(node));
                            }
                        }
                    }
                    "dead" => self.declared_dead(),
                    _ => self.reseed(),
                }
            }
            Tag::Reap(node) => {
                if let Some(told) = int(&value).filter(|&told| told >= 0) {
                    warn!(
                        "cluster: node {node} stopped heartbeating; {told} members told node-down"
                    );
                }
            }
            Tag::Register => {
                let Some(epoch) = words.first().and_then(text) else {
                    return;
                };
                if epoch != self.epoch {
                    // A new incarnation of Redis's data: every room's
                    // numbers start again at 1, and this node's stream anew.
                    self.epoch = epoch;
                    for sub in self.rooms.values_mut() {
                        sub.last = 0;
                        sub.held = None;
                    }
                    *self.cursor.borrow_mut() = STREAM_START.to_owned();
                    self.parked.clear();
                    for (_, sub) in self.rooms.iter_mut() {
                        let waiting: Vec<_> = sub.waiting.drain(..).collect();
                        for (_, from, response) in waiting {
                            let deliver = Deliver {
                                answer: Some((from.id, from.request, response)),
                                ..Deliver::default()
                            };
                            if let Some(link) = self.links.get(from.thread) {
                                link.send(Crossing::Deliver(deliver));
                            }
                        }
                    }
                }
                self.heartbeat_in_flight = false;
                self.heartbeat();
            }
            Tag::Depart(done) => {
                let _ = done.send(());
            }
            Tag::Cleanup | Tag::Ignore => {}
        }
    }

    fn settle_failed(&mut self, op: Op) {
        self.failed();
        match op.tag {
            Tag::Join { room, from } => {
                self.unavailable(from, false);
                self.join_replied(&room, from.id);
            }
            Tag::Rename { from, .. } | Tag::Members { from, .. } => self.unavailable(from, false),
            Tag::Leave { from, .. } => match from {
                Some(from) => self.unavailable(from, false),
                None => self.retry.push(op.cmd),
            },
            Tag::Publish { from, count, .. } => {
                if let Some(count) = count {
                    let _ = count.send(0);
                }
                if let Some(from) = from {
                    self.unavailable(from, true);
                }
            }
            Tag::Claim { owner, request, .. } => {
                owner.answer(request, Answer::Unavailable { broadcast: false }.into());
            }
            Tag::Find {
                requester, request, ..
            } => {
                requester.answer(request, Answer::Unavailable { broadcast: false }.into());
            }
            Tag::Rooms {
                requester,
                snapshot,
            } => {
                if let Some((requester, request)) = requester {
                    requester.answer(request, Answer::Unavailable { broadcast: false }.into());
                }
                drop(snapshot);
            }
            Tag::Cleanup => self.retry.push(op.cmd),
            Tag::Heartbeat => self.heartbeat_in_flight = false,
            Tag::Register => {
                // Tried again by the next heartbeat's verdict.
                self.heartbeat_in_flight = false;
            }
            Tag::Depart(done) => {
                let _ = done.send(());
            }
            Tag::Reap(_) | Tag::Ignore => {}
        }
    }

    /// Hands a room request to Redis, or answers it `unavailable`.
    fn request(&mut self, request: RoomRequest) -> Option<oneshot::Receiver<usize>> {
        let node = self.node.clone();
        match request {
            RoomRequest::Join(Join {
                room,
                from,
                name,
                announce,
                reserve,
            }) => {
                if self.suspect {
                    self.unavailable(from, false);
                    return None;
                }
                self.names.insert(from.id, name.clone());
                *self.joins_in_flight.entry(from.id).or_default() += 1;
                let (text, json) = rendered(announce.as_ref());
                let mut cmd = eval(&scripts::JOIN);
                cmd.arg(&*room)
                    .arg(&*node)
                    .arg(from.id.0)
                    .arg(&*name)
                    .arg(self.capacity)
                    .arg(if reserve { "1" } else { "0" })
                    .arg(&text[..])
                    .arg(&json[..]);
                self.send(cmd, Tag::Join { room, from });
            }
            RoomRequest::Confirm(Confirm {
                room,
                from,
                announce,
            }) => {
                if self.suspect {
                    self.unavailable(from, false);
                    return None;
                }
                *self.joins_in_flight.entry(from.id).or_default() += 1;
                let (text, json) = rendered(announce.as_ref());
                let mut cmd = eval(&scripts::CONFIRM);
                cmd.arg(&*room)
                    .arg(&*node)
                    .arg(from.id.0)
                    .arg(&text[..])
                    .arg(&json[..]);
                self.send(cmd, Tag::Join { room, from });
            }
            RoomRequest::Leave(Leave {
                room,
                id,
                thread,
                request,
                announce,
                ended,
            }) => {
                let from = request.map(|request| Requester {
                    id,
                    thread,
                    request,
                });
                // Other nodes' members stay: they are told of a shutdown too
                // (this node's own are closing and forward nothing more).
                let (text, json) = rendered(announce.as_ref());
                let mut cmd = eval(&scripts::LEAVE);
                cmd.arg(&*room)
                    .arg(&*node)
                    .arg(id.0)
                    .arg(&text[..])
                    .arg(&json[..]);
                if ended.is_some() {
                    self.names.remove(&id);
                    if self.suspect {
                        self.retry.push(cmd);
                        return None;
                    }
                } else if let (true, Some(from)) = (self.suspect, from) {
                    self.unavailable(from, false);
                    return None;
                }
                self.send(cmd, Tag::Leave { room, from });
            }
            RoomRequest::Publish(Publish { room, from, event }) => {
                let (count, receiver) = match from {
                    Some(_) => (None, None),
                    None => {
                        let (count, receiver) = oneshot::channel();
                        (Some(count), Some(receiver))
                    }
                };
                if self.suspect {
                    self.publish_here(&room, from, event);
                    return None;
                }
                let member = from.map(|from| self.member(from.id)).unwrap_or_default();
                let (text, json) = rendered(Some(&event));
                let mut cmd = eval(&scripts::PUBLISH);
                cmd.arg(&*room).arg(member).arg(&text[..]).arg(&json[..]);
                self.send(cmd, Tag::Publish { room, from, count });
                return receiver;
            }
            RoomRequest::Rename(Rename {
                room,
                from,
                old,
                name,
                announce,
            }) => {
                self.names.insert(from.id, name.clone());
                let renamed = Answer::Renamed {
                    old,
                    new: name.clone(),
                    room: Some(room.clone()),
                };
                if self.suspect {
                    // The name is claimed already: answer as renamed, untold.
                    self.answer(from, renamed.into());
                    return None;
                }
                let (text, json) = rendered(announce.as_ref());
                let mut cmd = eval(&scripts::RENAME);
                cmd.arg(&*room)
                    .arg(&*node)
                    .arg(from.id.0)
                    .arg(&*name)
                    .arg(&text[..])
                    .arg(&json[..]);
                self.send(
                    cmd,
                    Tag::Rename {
                        room,
                        from,
                        renamed,
                    },
                );
            }
            RoomRequest::Members(Members { room, from }) => {
                if self.suspect {
                    self.unavailable(from, false);
                    return None;
                }
                let mut cmd = eval(&scripts::MEMBERS);
                cmd.arg(&*room);
                self.send(cmd, Tag::Members { room, from });
            }
        }
        None
    }
}

/// `EVALSHA` of `script` with no keys; arguments follow.
fn eval(script: &Script) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(0);
    cmd
}

/// An event as it crosses the network: rendered in each wire format
/// (empty: no event).
fn rendered(event: Option<&SharedEvent>) -> (Bytes, Bytes) {
    match event {
        Some(event) => (event.bytes(Wire::Text), event.bytes(Wire::Json)),
        None => (Bytes::new(), Bytes::new()),
    }
}

fn array(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items.clone(),
        Value::Map(pairs) => pairs
            .iter()
            .flat_map(|(k, v)| [k.clone(), v.clone()])
            .collect(),
        _ => Vec::new(),
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        Value::Okay => Some("OK".to_owned()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

/// Reads an `XREAD` reply of one stream: its entries in order, with the
/// id of the last.
fn parse_entries(value: Value) -> (Vec<Read>, Option<String>) {
    let stream = match value {
        Value::Map(mut pairs) => pairs.pop().map(|(_, entries)| entries),
        Value::Array(mut streams) => streams.pop().and_then(|stream| match stream {
            Value::Array(mut parts) if parts.len() == 2 => parts.pop(),
            _ => None,
        }),
        _ => None,
    };
    let Some(Value::Array(items)) = stream else {
        return (Vec::new(), None);
    };
    let mut out = Vec::with_capacity(items.len());
    let mut last_id = None;
    for item in items {
        let Value::Array(mut parts) = item else {
            continue;
        };
        let (Some(fields), Some(id)) = (parts.pop(), parts.pop()) else {
            continue;
        };
        last_id = text(&id).or(last_id);
        let fields = match fields {
            Value::Array(fields) => fields,
            Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => continue,
        };
        let mut entry = Entry::default();
        let (mut room, mut seq) = (None, None);
        let mut fields = fields.into_iter();
        while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
            let Value::BulkString(name) = name else {
                continue;
            };
            match name.as_slice() {
                b"o" => room = text(&value).map(RoomName::from),
                b"s" => seq = int(&value).map(|seq| seq as u64),
                b"k" => entry.kind = into_bytes(value).unwrap_or_default(),
                b"a" => entry.add = text(&value),
                b"r" => entry.remove = text(&value),
                b"t" => entry.text = into_bytes(value),
                b"j" => entry.json = into_bytes(value),
                _ => {}
            }
        }
        out.push((room.zip(seq), entry));
    }
    (out, last_id)
}

fn into_bytes(value: Value) -> Option<Bytes> {
    match value {
        Value::BulkString(bytes) => Some(Bytes::from(bytes)),
        Value::SimpleString(text) => Some(Bytes::from(text)),
        _ => None,
    }
}

/// Sends scripts to Redis in order, as many per pipeline as are queued.
async fn write_loop(
    mut con: ConnectionManager,
    mut ops: mpsc::UnboundedReceiver<Op>,
    done: Addr<Cluster>,
) {
    let mut batch = Vec::new();
    while let Some(op) = ops.recv().await {
        batch.push(op);
        while batch.len() < MAX_BATCH {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let results = run_batch(&mut con, &batch).await;
        done.do_send(Done(batch.drain(..).zip(results).collect()));
    }
}

async fn run_batch(con: &mut ConnectionManager, batch: &[Op]) -> Vec<Result<Value, String>> {
    let mut results: Vec<Option<Result<Value, String>>> = vec![None; batch.len()];
    for attempt in 0..2 {
        let todo: Vec<usize> = (0..batch.len()).filter(|&i| results[i].is_none()).collect();
        if todo.is_empty() {
            break;
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for &i in &todo {
            pipe.add_command(batch[i].cmd.clone());
        }
        let values: Vec<Value> = match pipe.query_async(con).await {
            Ok(values) => values,
            Err(error) => {
                for &i in &todo {
                    results[i] = Some(Err(error.to_string()));
                }
                break;
            }
        };
        let mut missing = false;
        for (&i, value) in todo.iter().zip(values) {
            results[i] = match value {
                Value::ServerError(error)
                    if attempt == 0 && error.kind() == Some(ServerErrorKind::NoScript) =>
                {
                    // Redis restarted and forgot the scripts: the call never ran.
                    missing = true;
                    None
                }
                Value::ServerError(error) => Some(Err(error.to_string())),
                value => Some(Ok(value)),
            };
        }
        if missing {
            for script in scripts::all() {
                if let Err(error) = script.load_async(con).await {
                    debug!("cluster: cannot load scripts: {error}");
                }
            }
        }
    }
    results
        .into_iter()
        .map(|result| result.unwrap_or_else(|| Err("script missing".to_owned())))
        .collect()
}

/// Follows this node's stream from `cursor`, reconnecting with back-off;
/// what it reads goes to the actor in stream order.
async fn read_loop(client: redis::Client, key: String, cursor: Cursor, actor: Addr<Cluster>) {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_response_timeout(Some(
            Duration::from_millis(READ_BLOCK_MS) + RESPONSE_TIMEOUT,
        ));
    let mut backoff = BACKOFF.0;
    while actor.connected() {
        let connected = client
            .get_multiplexed_async_connection_with_config(&config)
            .await;
        let mut con: MultiplexedConnection = match connected {
            Ok(con) => con,
            Err(error) => {
                debug!("cluster: reader cannot connect: {error}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF.1);
                continue;
            }
        };
        backoff = BACKOFF.0;
        while actor.connected() {
            let from = cursor.borrow().clone();
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(READ_BLOCK_MS)
                .arg("STREAMS")
                .arg(&key)
                .arg(&from);
            match xread.query_async::<Value>(&mut con).await {
                Ok(Value::Nil) => {}
                Ok(value) => {
                    let (entries, last) = parse_entries(value);
                    // Unless the actor started the stream anew meanwhile.
                    let mut at = cursor.borrow_mut();
                    if *at == from {
                        if let Some(last) = last {
                            *at = last;
                        }
                        drop(at);
                        actor.do_send(Entries(entries));
                    }
                }
                Err(error) => {
                    debug!("cluster: reader lost redis: {error}");
                    actor.do_send(ReaderLost);
                    break;
                }
            }
        }
    }
}

impl Actor for Cluster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some((con, ops)) = self.start.take() {
            actix::spawn(write_loop(con, ops, ctx.address()));
        }
        let key = format!("sb:nev:{}", self.node);
        let reader = read_loop(self.client.clone(), key, self.cursor.clone(), ctx.address());
        actix::spawn(reader);
        ctx.run_interval(self.config.heartbeat, |cluster, _| cluster.heartbeat());
        info!(
            "cluster: node {} joined through {}",
            self.node, self.config.url
        );
    }
}

impl Handler<RoomRequest> for Cluster {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, request: RoomRequest, _: &mut Context<Self>) -> Self::Result {
        let count = self.request(request);
        Box::pin(async move {
            match count {
                Some(count) => count.await.unwrap_or(0),
                None => 0,
            }
        })
    }
}

impl Handler<Direct> for Cluster {
    type Result = ();

    fn handle(&mut self, Direct { node, id, event }: Direct, _: &mut Context<Self>) {
        if self.suspect {
            return debug!("cluster: a line for {node}/{id} dropped: redis is unreachable");
        }
        let (text, json) = rendered(Some(&event));
        let mut cmd = eval(&scripts::DIRECT);
        cmd.arg(&*node).arg(id.0).arg(&text[..]).arg(&json[..]);
        self.send(cmd, Tag::Ignore);
    }
}

impl Handler<Depart> for Cluster {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Depart, _: &mut Context<Self>) -> Self::Result {
        self.departed = true;
        let (done, departed) = oneshot::channel();
        let mut cmd = eval(&scripts::REAP);
        cmd.arg(&*self.node).arg(DisconnectReason::Shutdown.word());
        self.send(cmd, Tag::Depart(done));
        Box::pin(async move {
            let _ = departed.await;
        })
    }
}

impl Handler<Done> for Cluster {
    type Result = ();

    fn handle(&mut self, Done(results): Done, _: &mut Context<Self>) {
        for (op, result) in results {
            self.settle(op, result);
        }
    }
}

impl Handler<Entries> for Cluster {
    type Result = ();

    fn handle(&mut self, Entries(read): Entries, _: &mut Context<Self>) {
        if self.suspect {
            return self.parked.extend(read);
        }
        self.apply_all(read);
    }
}

impl Handler<ReaderLost> for Cluster {
    type Result = ();

    fn handle(&mut self, _: ReaderLost, _: &mut Context<Self>) {
        self.failed();
        self.heartbeat();
    }
}

impl Handler<Claim> for Cluster {
    type Result = ();

    fn handle(&mut self, claim: Claim, _: &mut Context<Self>) {
        let Claim {
            name,
            owner,
            request,
        } = claim;
        if self.suspect {
            return owner.answer(request, Answer::Unavailable { broadcast: false }.into());
        }
        let mut cmd = eval(&scripts::CLAIM);
        cmd.arg(name.to_ascii_lowercase())
            .arg(&*self.node)
            .arg(owner.id().0)
            .arg(&*name);
        self.send(
            cmd,
            Tag::Claim {
                owner,
                request,
                name,
            },
        );
    }
}

impl Handler<Release> for Cluster {
    type Result = ();

    fn handle(&mut self, Release { name, owner }: Release, _: &mut Context<Self>) {
        if self
            .claims
            .get(&owner)
            .is_some_and(|held| held.eq_ignore_ascii_case(&name))
        {
            self.claims.remove(&owner);
        }
        let mut cmd = eval(&scripts::RELEASE);
        cmd.arg(name.to_ascii_lowercase())
            .arg(&*self.node)
            .arg(owner.0);
        if self.suspect {
            return self.retry.push(cmd);
        }
        self.send(cmd, Tag::Cleanup);
    }
}

impl Handler<FindName> for Cluster {
    type Result = ();

    fn handle(&mut self, find: FindName, ctx: &mut Context<Self>) {
        let FindName {
            name,
            requester,
            request,
        } = find;
        if self.suspect {
            return requester.answer(request, Answer::Unavailable { broadcast: false }.into());
        }
        let mut cmd = eval(&scripts::FIND);
        cmd.arg(name.to_ascii_lowercase());
        let cluster = ctx.address();
        self.send(
            cmd,
            Tag::Find {
                requester,
                request,
                cluster,
            },
        );
    }
}

impl Handler<ListFor> for Cluster {
    type Result = ();

    fn handle(&mut self, ListFor { requester, request }: ListFor, _: &mut Context<Self>) {
        if self.suspect {
            return requester.answer(request, Answer::Unavailable { broadcast: false }.into());
        }
        let requester = Some((requester, request));
        self.send(
            eval(&scripts::ROOMS),
            Tag::Rooms {
                requester,
                snapshot: None,
            },
        );
    }
}

impl Handler<Snapshot> for Cluster {
    type Result = ResponseFuture<Arc<RoomList>>;

    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        let (snapshot, list) = oneshot::channel();
        let tag = Tag::Rooms {
            requester: None,
            snapshot: Some(snapshot),
        };
        self.send(eval(&scripts::ROOMS), tag);
        Box::pin(async move { list.await.unwrap_or_default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn an_xread_reply_becomes_room_events_and_direct_lines_in_order() {
        let room_event = Value::Array(vec![
            bulk("1700000000000-0"),
            Value::Array(
                [
                    "o",
                    "hall",
                    "s",
                    "7",
                    "k",
                    "j",
                    "a",
                    "n1/5",
                    "t",
                    "JOIN hall a\n",
                    "j",
                    "{}\n",
                ]
                .map(bulk)
                .to_vec(),
            ),
        ]);
        let direct = Value::Array(vec![
            bulk("1700000000000-1"),
            Value::Array(
                ["k", "d", "a", "9", "t", "PRIVMSG a b hi\n", "j", "{}\n"]
                    .map(bulk)
                    .to_vec(),
            ),
        ]);
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("sb:nev:n1"),
            Value::Array(vec![room_event, direct]),
        ])]);
        let (entries, last) = parse_entries(reply);
        assert_eq!(last.as_deref(), Some("1700000000000-1"));
        assert_eq!(entries.len(), 2);
        let (room, join) = &entries[0];
        assert_eq!(room, &Some((RoomName::from("hall"), 7)));
        assert_eq!(&*join.kind, b"j");
        assert_eq!(join.add.as_deref(), Some("n1/5"));
        assert_eq!(join.text.as_deref(), Some(&b"JOIN hall a\n"[..]));
        let (room, line) = &entries[1];
        assert_eq!(room, &None);
        assert_eq!(line.add.as_deref(), Some("9"));
        assert_eq!(parse_entries(Value::Nil).0.len(), 0);
    }
}
