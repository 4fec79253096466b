//! The [`Registry`]: the actor system that tracks sessions for broadcast and
//! cleanup, behind one cheap handle.
//!
//! It is not one actor but one set per thread: a [`Dispatcher`] (that
//! thread's sessions and their rooms), a [`Sequencer`] (the rooms hashed to
//! it) and a [`Directory`] shard (the names hashed to it), plus one
//! [`RoomIndex`]. The handle routes each request to the actor that owns it,
//! so an embedding program still talks to "the registry".
//!
//! [`Dispatcher`]: crate::actors::dispatcher::Dispatcher
//! [`Sequencer`]: crate::actors::sequencer::Sequencer
//! [`Directory`]: crate::actors::directory::Directory
//! [`RoomIndex`]: crate::actors::room_index::RoomIndex

use std::sync::Arc;

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use futures::channel::oneshot;

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix::dev::channel;

use crate::actors::cluster::{self, Cluster};
use crate::actors::directory::{self, Claim, Directory, FindName, Release};
use crate::actors::dispatcher::{
    DeliverAll, Dispatcher, ListLocal, SessionInfo, ShutdownSessions, StartSession, ToSession,
};
use crate::actors::room_index::{ListFor, RoomIndex, Snapshot};
use crate::actors::sequencer::{self, Publish, RoomRequest, Sequencer, SequencerRef};
use crate::cluster::{ClusterHealth, HealthCell, Joined};
use crate::event::{Event, SharedEvent};
use crate::handle::{Control, SessionId};
use crate::local::{Crossing, Link, Local};
use crate::metrics::Metrics;
use crate::protocol::{ErrorCode, Rejection};
use crate::reason::DisconnectReason;

/// Messages a registry actor's mailbox holds before senders wait (actix's
/// default; `do_send` does not wait).
const MAILBOX: usize = 16;

/// The registry of one server: every session, room and name. Cheap to
/// clone; usable from any thread of the actix system.
#[derive(Clone)]
pub struct Registry(Arc<Shared>);

struct Shared {
    /// The threads sessions run on; session `id` runs on `id % threads`.
    arbiters: Vec<ArbiterHandle>,
    dispatchers: Arc<[Addr<Dispatcher>]>,
    /// The way into each thread for room traffic (requests, deliveries).
    links: Arc<[Link]>,
    /// Set once shutdown begins; every thread reads it.
    shutting_down: Arc<AtomicBool>,
    sequencers: Vec<SequencerRef>,
    directory: Vec<Addr<Directory>>,
    index: Addr<RoomIndex>,
    /// The server's counters, for `/metrics`.
    metrics: Arc<Metrics>,
    /// With `--cluster`: the engine every room, name and room-list request
    /// goes to instead of the sequencers, directory and index above.
    cluster: Option<Addr<Cluster>>,
    health: HealthCell,
}

impl Registry {
    /// Starts the registry's actors on `arbiters` (one set per arbiter, the
    /// room index on the first), with rooms of at most `room_capacity`
    /// members.
    ///
    /// # Panics
    /// When `arbiters` is empty, or outside a running actix system.
    pub fn start(arbiters: Vec<ArbiterHandle>, room_capacity: usize) -> Registry {
        Registry::start_with(arbiters, room_capacity, None)
    }

    /// Like [`Registry::start`], with rooms, names and the room list shared
    /// through the cluster `joined` (on a thread of its own).
    pub(crate) fn start_clustered(
        arbiters: Vec<ArbiterHandle>,
        room_capacity: usize,
        joined: Joined,
    ) -> Registry {
        Registry::start_with(arbiters, room_capacity, Some(joined))
    }

    fn start_with(
        arbiters: Vec<ArbiterHandle>,
        room_capacity: usize,
        joined: Option<Joined>,
    ) -> Registry {
        assert!(!arbiters.is_empty(), "a registry needs at least one thread");
        let index = RoomIndex::start_in_arbiter(&arbiters[0], |_| RoomIndex::default());
        // Every address exists before any actor runs, so each thread's actors
        // can be built together around the state they share.
        let mailboxes: Vec<_> = arbiters
            .iter()
            .map(|_| (channel::channel(MAILBOX), channel::channel(MAILBOX)))
            .collect();
        let dispatchers: Arc<[Addr<Dispatcher>]> = mailboxes
            .iter()
            .map(|((tx, _), _)| Addr::new(tx.clone()))
            .collect();
        let links: Arc<[Link]> = dispatchers.iter().cloned().map(Link::new).collect();
        let shutting_down = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(Metrics::new(arbiters.len()));
        let mut sequencers = Vec::with_capacity(arbiters.len());
        for (thread, (arbiter, ((_, dispatcher_rx), (sequencer_tx, sequencer_rx)))) in
            arbiters.iter().zip(mailboxes).enumerate()
        {
            sequencers.push(SequencerRef::of(&Addr::new(sequencer_tx)));
            let (links, index) = (links.clone(), index.clone());
            let shutting_down = shutting_down.clone();
            let metrics = metrics.clone();
            arbiter.spawn_fn(move || {
                let shared = (links, index, shutting_down, metrics);
                let local = Local::new(thread, room_capacity, shared);
                let local = Rc::new(local);
                Context::with_receiver(dispatcher_rx).run(Dispatcher::new(local.clone()));
                Context::with_receiver(sequencer_rx).run(Sequencer::new(local));
            });
        }
        let directory = arbiters
            .iter()
            .map(|arbiter| Directory::start_in_arbiter(arbiter, |_| Directory::default()))
            .collect();
        let health = HealthCell::default();
        let cluster = joined.map(|joined| {
            let setup = cluster::Setup {
                joined,
                links: links.clone(),
                dispatchers: dispatchers.clone(),
                capacity: room_capacity,
                health: health.clone(),
            };
            let thread = actix_rt::Arbiter::new();
            let cluster = Cluster::start_in_arbiter(&thread.handle(), |_| Cluster::new(setup));
            // The engine's thread lives as long as the process.
            std::mem::forget(thread);
            cluster
        });
        Registry(Arc::new(Shared {
            arbiters,
            dispatchers,
            links,
            shutting_down,
            sequencers,
            directory,
            index,
            metrics,
            cluster,
            health,
        }))
    }

    /// The server's counters (see [`Metrics`]).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }

    /// Room traffic from other threads waiting for each thread, in thread
    /// order: how far each thread's sequencer and dispatcher are behind.
    pub fn queue_depths(&self) -> Vec<usize> {
        self.0.links.iter().map(Link::depth).collect()
    }

    /// How many threads sessions run on.
    pub fn threads(&self) -> usize {
        self.0.arbiters.len()
    }

    /// The thread whose sequencer orders `room`'s events (see
    /// [`room_thread`](crate::room_thread)).
    pub fn room_thread(&self, room: &str) -> usize {
        sequencer::room_thread(room, self.threads())
    }

    /// The thread session `id` runs on: fixed by its id, so the registry
    /// finds any session without a global table.
    pub fn thread_of(&self, id: SessionId) -> usize {
        (id.0 % self.0.arbiters.len() as u64) as usize
    }

    /// Starts a session on thread `thread`: `start` builds it there, with
    /// the thread's shared state. Answers whether the thread is running.
    pub(crate) fn start_session(
        &self,
        thread: usize,
        start: impl FnOnce(Rc<Local>) + Send + 'static,
    ) -> bool {
        let dispatcher = self.dispatcher(thread);
        dispatcher.connected() && {
            dispatcher.do_send(StartSession(Box::new(start)));
            true
        }
    }

    pub(crate) fn dispatcher(&self, thread: usize) -> &Addr<Dispatcher> {
        &self.0.dispatchers[thread % self.0.dispatchers.len()]
    }

    fn sequencer(&self, room: &str) -> &SequencerRef {
        &self.0.sequencers[sequencer::room_thread(room, self.0.sequencers.len())]
    }

    /// Hands a room request to the room's sequencer: directly when it lives
    /// on the caller's own thread, through its mailbox otherwise; with a
    /// cluster, to the cluster engine.
    pub(crate) fn sequence(&self, local: &Local, request: RoomRequest) {
        if let Some(cluster) = &self.0.cluster {
            return cluster.do_send(request);
        }
        let shard = sequencer::room_thread(request.room(), self.0.sequencers.len());
        if shard == local.thread {
            local.sequence(request);
        } else {
            self.0.links[shard].send(Crossing::Request(request));
        }
    }

    pub(crate) fn directory(&self, name: &str) -> &Addr<Directory> {
        &self.0.directory[directory::shard_of(name, self.0.directory.len())]
    }

    /// Asks for `claim`'s name in the directory (or the cluster's).
    pub(crate) fn claim(&self, claim: Claim) {
        match &self.0.cluster {
            Some(cluster) => cluster.do_send(claim),
            None => self.directory(&claim.name).do_send(claim),
        }
    }

    /// Gives `release`'s name up in the directory (or the cluster's).
    pub(crate) fn release(&self, release: Release) {
        match &self.0.cluster {
            Some(cluster) => cluster.do_send(release),
            None => self.directory(&release.name).do_send(release),
        }
    }

    /// Looks a name up in the directory (or the cluster's).
    pub(crate) fn find_name(&self, find: FindName) {
        match &self.0.cluster {
            Some(cluster) => cluster.do_send(find),
            None => self.directory(&find.name).do_send(find),
        }
    }

    /// Answers a session with the room list (the cluster's, with a cluster).
    pub(crate) fn list_for(&self, list: ListFor) {
        match &self.0.cluster {
            Some(cluster) => cluster.do_send(list),
            None => self.0.index.do_send(list),
        }
    }

    /// How this node's cluster engine is doing ([`ClusterHealth::Standalone`]
    /// without `--cluster`).
    pub fn cluster_health(&self) -> ClusterHealth {
        self.0.health.get()
    }

    fn to_session(&self, id: SessionId, message: ToSession) -> impl Future<Output = bool> + use<> {
        let sent = self.dispatcher(self.thread_of(id)).send(message);
        async move { sent.await.unwrap_or(false) }
    }

    /// Broadcasts `event` to every member of `room`, in the room's order
    /// with its other events; each member receives it in its own wire
    /// format. Answers how many members it was sent to (0: no such room).
    pub async fn broadcast(&self, room: &str, event: impl Event) -> usize {
        let publish = RoomRequest::Publish(Publish {
            room: Arc::from(room),
            from: None,
            event: SharedEvent::new(event),
        });
        if let Some(cluster) = &self.0.cluster {
            return cluster.send(publish).await.unwrap_or(0);
        }
        let sent = self.sequencer(room).requests.send(publish);
        sent.await.unwrap_or(0)
    }

    /// Broadcasts `event` to every member of `room` like
    /// [`Registry::broadcast`], without waiting: queued at once, in the
    /// order of the calls (e.g. a game tick from an actor's timer).
    pub fn publish(&self, room: &str, event: impl Event) {
        let publish = RoomRequest::Publish(Publish {
            room: Arc::from(room),
            from: None,
            event: SharedEvent::new(event),
        });
        match &self.0.cluster {
            Some(cluster) => cluster.do_send(publish),
            None => self.sequencer(room).requests.do_send(publish),
        }
    }

    /// Sends `event` to every session of the server, in its wire format.
    /// Answers how many sessions it was sent to.
    pub async fn broadcast_all(&self, event: impl Event) -> usize {
        let event = SharedEvent::new(event);
        let sent = self
            .0
            .dispatchers
            .iter()
            .map(|dispatcher| dispatcher.send(DeliverAll(event.clone())));
        let counts = futures::future::join_all(sent).await;
        counts.into_iter().map(|count| count.unwrap_or(0)).sum()
    }

    /// Sends `event` to one session, in its wire format. Answers whether the
    /// session exists.
    pub async fn send_to(&self, session: SessionId, event: impl Event) -> bool {
        let event = SharedEvent::new(event);
        self.to_session(session, ToSession::Event(session, event))
            .await
    }

    /// Removes a session, as a moderator would: it is sent `farewell` (if
    /// any) after what it is already owed, then closed, and its room is told
    /// it was `kicked`. Answers whether the session existed.
    pub async fn kick(&self, session: SessionId, farewell: Option<SharedEvent>) -> bool {
        let close = ToSession::Close(session, DisconnectReason::Kicked, farewell);
        self.to_session(session, close).await
    }

    /// Moves a session into `room` on its behalf, exactly as if it had asked
    /// itself (the lobby: `/join ROOM`, so its old room and the new one see
    /// `LEAVE` and `JOIN`).
    ///
    /// # Errors
    /// What the session's protocol answers (the lobby: `bad-name`,
    /// `room-full`); `no-such-nick` when the session does not exist or its
    /// protocol takes no such requests.
    pub async fn join(&self, session: SessionId, room: &str) -> Result<(), Rejection> {
        let (done, outcome) = oneshot::channel();
        let control = Control::Join {
            room: room.to_owned(),
            done,
        };
        self.to_session(session, ToSession::Control(session, control))
            .await;
        outcome
            .await
            .unwrap_or_else(|_| Err(Rejection::new(ErrorCode::NoSuchNick, "no such session")))
    }

    /// Takes a session out of its room on its behalf. Answers whether it was
    /// in one.
    pub async fn leave(&self, session: SessionId) -> bool {
        let (done, outcome) = oneshot::channel();
        let control = Control::Leave { done };
        self.to_session(session, ToSession::Control(session, control))
            .await;
        outcome.await.unwrap_or(false)
    }

    /// Every room with its member count, sorted by name.
    pub async fn list_rooms(&self) -> Vec<(String, usize)> {
        let list = match &self.0.cluster {
            Some(cluster) => cluster.send(Snapshot).await,
            None => self.0.index.send(Snapshot).await,
        };
        let Ok(list) = list else {
            return Vec::new();
        };
        let rooms = list.rooms.iter();
        rooms.map(|(room, n)| (room.to_string(), *n)).collect()
    }

    /// Every live session, in id order.
    pub async fn list_sessions(&self) -> Vec<SessionInfo> {
        let asked = self.0.dispatchers.iter().map(|d| d.send(ListLocal));
        let mut sessions: Vec<SessionInfo> = futures::future::join_all(asked)
            .await
            .into_iter()
            .flat_map(Result::unwrap_or_default)
            .collect();
        sessions.sort_by_key(|info| info.id);
        sessions
    }

    /// With a cluster: leaves it once every request sent so far is done
    /// (members still seated are told `QUIT <room> <nick> shutdown`), within
    /// `grace`. Without one, nothing to do.
    pub(crate) async fn leave_cluster(&self, grace: std::time::Duration) {
        if let Some(cluster) = &self.0.cluster {
            let departed = cluster.send(cluster::Depart);
            if tokio::time::timeout(grace, departed).await.is_err() {
                log::warn!("cluster: could not leave the cluster within {grace:?}");
            }
        }
    }

    /// Stops the threads the registry was started on, but the first (the
    /// thread that started it): for a server whose sessions have all ended.
    pub(crate) fn stop_threads(&self) {
        for arbiter in self.0.arbiters.iter().skip(1) {
            arbiter.stop();
        }
    }

    /// Begins shutting down: from now on a session that ends is not
    /// announced to its room, and every session, including those that start
    /// later, is told to shut down (the lobby: `SHUTDOWN`, then close).
    pub fn shutdown(&self) {
        self.0.shutting_down.store(true, Ordering::Release);
        for dispatcher in self.0.dispatchers.iter() {
            dispatcher.do_send(ShutdownSessions);
        }
    }
}
