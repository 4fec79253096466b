//! How anything outside a session reaches it: a [`SessionHandle`] and the
//! inbox behind it.
//!
//! A handle pushes into the session's inbox and wakes the session only when
//! the inbox was empty, so a burst of deliveries (a busy room's broadcasts)
//! costs one actor message, not one per delivery. The inbox is the session's
//! single ordered queue from the rest of the system: room events, answers to
//! its own requests, a close, shutdown. Once the session is closing, pushes
//! are dropped, so nothing reaches a peer after its farewell.
//!
//! The session's outbound bound is kept here, where events are pushed. Once
//! the session has found its peer's socket full, an event that would make it
//! owe the peer more frames or bytes than its bound (waiting in the inbox and
//! in its outbound queue together) is dropped and the session is closed as a
//! slow consumer: a peer that never reads costs at most its bound however
//! fast the rest of the server sends. A peer that reads, whose session is
//! only behind because its thread is busy, is not blamed for that: its inbox
//! may hold [`SCHEDULING_SLACK`] times its byte bound before it is dropped.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use actix::prelude::*;
use futures::channel::oneshot;
use futures::task::AtomicWaker;

use crate::config::SessionConfig;
use crate::event::{Event, SharedEvent, Wire};
use crate::protocol::Rejection;
use crate::reason::DisconnectReason;
use crate::room::{Response, RoomName};

/// Identifies a session; unique and increasing within one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Hands out [`SessionId`]s in increasing order. Clones share the sequence.
///
/// [`SessionIds::default`] is the process's own sequence (1, 2, 3, … across
/// every listener and server of the process), so two listeners wired to one
/// registry without sharing ids explicitly still never hand out the same id.
#[derive(Debug, Clone)]
pub struct SessionIds(Arc<AtomicU64>);

/// The sequence every default [`SessionIds`] draws from.
static PROCESS_IDS: LazyLock<SessionIds> = LazyLock::new(SessionIds::new);

impl Default for SessionIds {
    fn default() -> Self {
        PROCESS_IDS.clone()
    }
}

impl SessionIds {
    /// A sequence of its own, starting at 1: for a program that wants a
    /// server's ids to start at 1 whatever else the process runs. Every
    /// listener feeding one registry must then share it.
    pub fn new() -> Self {
        SessionIds(Arc::default())
    }

    /// A sequence of its own whose first id is `last + 1`: a cluster node
    /// numbers its sessions from its own range, so ids never collide
    /// across nodes.
    pub fn starting_after(last: u64) -> Self {
        SessionIds(Arc::new(AtomicU64::new(last)))
    }

    /// The next id.
    pub fn next_id(&self) -> SessionId {
        SessionId(self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// The last id handed out (`SessionId(0)` before the first).
    pub fn last_issued(&self) -> SessionId {
        SessionId(self.0.load(Ordering::Relaxed))
    }
}

/// Numbers a session's requests, so that answers arriving from different
/// actors are handled in the order the requests were made.
pub(crate) type RequestId = u64;

/// What an embedding program asks a session to do on its behalf. The
/// session's protocol carries it out as if its peer had asked (the lobby:
/// as if it had typed `/join` or `/leave`).
#[derive(Debug)]
pub enum Control {
    /// Move into `room`, leaving the current one first.
    Join {
        /// The room.
        room: String,
        /// Told the outcome: `Ok` once the session is in the room.
        done: oneshot::Sender<Result<(), Rejection>>,
    },
    /// Leave the current room.
    Leave {
        /// Told whether the session was in a room.
        done: oneshot::Sender<bool>,
    },
}

/// One entry of a session's inbox.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// For the peer, rendered in the session's wire format.
    Event(SharedEvent),
    /// The answer to the session's request `RequestId` (boxed, like the
    /// other rare entries, so an event, the entry of every broadcast, takes
    /// 16 bytes of the inbox and not a cache line: a busy room writes one
    /// per member).
    Answer(Box<(RequestId, Response)>),
    /// End the session after everything delivered before.
    Close {
        reason: DisconnectReason,
        farewell: Option<SharedEvent>,
    },
    /// The server is shutting down.
    Shutdown,
    /// An embedding program's request.
    Control(Box<Control>),
}

// An event (a fat pointer) and the tag: the size every member of a busy
// room writes per broadcast.
const _: () = assert!(std::mem::size_of::<Delivery>() <= 24);

/// Take the deliveries waiting in the inbox. Sent only when the inbox was
/// empty, so a burst costs one message.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TakeInbox;

/// How many times its byte bound a session whose peer is reading may have
/// waiting in its inbox, because its thread is busy, before it is dropped
/// all the same. A room's members may have 32 requests each in flight, so
/// a burst of a full room of 64 can reach 2,048 lines (8 MiB of the longest,
/// 4 KiB, lines) before any member's session runs.
pub(crate) const SCHEDULING_SLACK: usize = 8;

/// How much a session may owe its peer: frames and bytes not yet written,
/// whether still in its inbox or already in its outbound queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutboundBound {
    pub(crate) frames: usize,
    pub(crate) bytes: usize,
}

/// Deliveries handed to a session that it has not taken yet, and the little
/// else that others need of a session; one allocation per session.
pub(crate) struct Inbox {
    deliveries: Mutex<Queue>,
    /// The session's wire format, which events are measured in.
    wire: Wire,
    bound: OutboundBound,
    /// The frames and bytes in the session's outbound queue, as it last
    /// reported them (plus what it has taken since).
    owed_frames: AtomicUsize,
    owed_bytes: AtomicUsize,
    /// The peer's socket was full when the session last wrote: it is held
    /// to its bound from now on, until it catches up.
    blocked: AtomicBool,
    /// A `TakeInbox` is on its way; deliveries meanwhile ride along with it.
    notified: AtomicBool,
    /// The session is closing or gone: deliveries are dropped.
    closed: AtomicBool,
    /// Set while the session reads no input (see `Gate` in the session).
    pub(crate) read_paused: AtomicBool,
    /// Wakes the session's reading when the gate opens.
    pub(crate) read_waker: AtomicWaker,
}

/// The queue proper, and the session's presence beside it under the same
/// lock (read rarely: by lookups and listings).
#[derive(Default)]
struct Queue {
    /// Taken whole, so a `Vec` keeps the order.
    deliveries: Vec<Delivery>,
    /// The events among `deliveries`, and their bytes in the session's wire.
    event_frames: usize,
    event_bytes: usize,
    /// Wakes the session; set once the session's actor has started.
    wake: Option<Recipient<TakeInbox>>,
    name: Option<Arc<str>>,
    room: Option<RoomName>,
}

impl OutboundBound {
    /// The bound `config` sets.
    pub(crate) fn of(config: &SessionConfig) -> Self {
        OutboundBound {
            frames: config.outbound_queue,
            bytes: config.outbound_bytes,
        }
    }
}

impl Inbox {
    /// The inbox of a session with `config` (its wire format and bound).
    pub(crate) fn for_session(config: &SessionConfig) -> Self {
        Inbox::new(config.wire, OutboundBound::of(config))
    }

    /// The inbox of a session speaking `wire` that may owe its peer at most
    /// `bound`.
    pub(crate) fn new(wire: Wire, bound: OutboundBound) -> Self {
        Inbox {
            deliveries: Mutex::default(),
            wire,
            bound,
            owed_frames: AtomicUsize::new(0),
            owed_bytes: AtomicUsize::new(0),
            blocked: AtomicBool::new(false),
            notified: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            read_paused: AtomicBool::new(false),
            read_waker: AtomicWaker::new(),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A push or a take cannot be interrupted half-way, so a poisoned lock
        // still guards a whole queue.
        self.deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_wake(&self, wake: Recipient<TakeInbox>) {
        let mut queue = self.queue();
        if !queue.deliveries.is_empty() {
            wake.do_send(TakeInbox);
        }
        queue.wake = Some(wake);
    }

    fn push(&self, delivery: Delivery) {
        self.push_all([delivery]);
    }

    /// Pushes several deliveries under one lock, in order. An event past the
    /// session's bound (see the module docs) ends the session as a slow
    /// consumer instead.
    fn push_all<const N: usize>(&self, deliveries: [Delivery; N]) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let mut queue = self.queue();
        for delivery in deliveries {
            if let Delivery::Event(event) = &delivery {
                let bytes = event.len_in(self.wire);
                let over = if self.blocked.load(Ordering::Relaxed) {
                    let owed_frames = self.owed_frames.load(Ordering::Relaxed) + queue.event_frames;
                    let owed_bytes = self.owed_bytes.load(Ordering::Relaxed) + queue.event_bytes;
                    owed_frames >= self.bound.frames || owed_bytes + bytes > self.bound.bytes
                } else {
                    queue.event_bytes + bytes > SCHEDULING_SLACK * self.bound.bytes
                };
                if over {
                    let (owed_frames, owed_bytes) = (queue.event_frames, queue.event_bytes);
                    log::debug!(
                        "a session with {owed_frames} events of {owed_bytes} bytes waiting is a slow consumer"
                    );
                    return self.overflow(queue);
                }
                queue.event_frames += 1;
                queue.event_bytes += bytes;
            }
            queue.deliveries.push(delivery);
        }
        self.wake(&queue);
    }

    /// The session owes its peer more than its bound: nothing more is
    /// delivered, and what waits gives way to one slow-consumer close.
    fn overflow(&self, mut queue: MutexGuard<'_, Queue>) {
        self.closed.store(true, Ordering::Release);
        queue.deliveries = vec![Delivery::Close {
            reason: DisconnectReason::SlowConsumer,
            farewell: None,
        }];
        (queue.event_frames, queue.event_bytes) = (0, 0);
        self.wake(&queue);
    }

    /// Wakes the session unless a wake is on its way. Called under the
    /// queue's lock, so a take that cleared `notified` and has not locked
    /// yet still takes this delivery: the plain load first spares a burst's
    /// later pushes a locked instruction each (`perf` on `ws-fanout`: the
    /// swap alone was a third of the cost of a push).
    fn wake(&self, queue: &Queue) {
        if !self.notified.load(Ordering::Acquire)
            && !self.notified.swap(true, Ordering::AcqRel)
            && let Some(wake) = &queue.wake
        {
            wake.do_send(TakeInbox);
        }
    }

    /// Takes every waiting delivery. The flag is cleared first, so a delivery
    /// pushed after the take wakes the session anew. The events taken count
    /// as owed until the session next reports its outbound queue.
    pub(crate) fn take(&self) -> Vec<Delivery> {
        self.notified.store(false, Ordering::Release);
        let mut queue = self.queue();
        self.owed_frames
            .fetch_add(queue.event_frames, Ordering::Relaxed);
        self.owed_bytes
            .fetch_add(queue.event_bytes, Ordering::Relaxed);
        (queue.event_frames, queue.event_bytes) = (0, 0);
        std::mem::take(&mut queue.deliveries)
    }

    /// What the session's outbound queue holds now: `frames` frames of
    /// `bytes` bytes in all, not yet written, because the peer's socket is
    /// full (`blocked`) or not.
    pub(crate) fn report_owed(&self, frames: usize, bytes: usize, blocked: bool) {
        self.owed_frames.store(frames, Ordering::Relaxed);
        self.owed_bytes.store(bytes, Ordering::Relaxed);
        self.blocked.store(blocked, Ordering::Relaxed);
    }

    /// From now on nothing is delivered; what waits is dropped.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut queue = self.queue();
        queue.deliveries = Vec::new();
        (queue.event_frames, queue.event_bytes) = (0, 0);
        queue.wake = None;
    }
}

/// How anything outside a session talks to it. Cheap to clone (one reference
/// count); usable from any thread.
///
/// Nothing sent through a handle ever waits or fails: a session that is
/// closing or gone drops what it is sent, and a live one writes it in order
/// after everything sent before. An event that would make a session owe its
/// peer more than its outbound bound (`outbound_queue` frames or
/// `outbound_bytes` bytes, counted as the event is sent) is dropped and the
/// session ends as a [slow consumer](DisconnectReason::SlowConsumer).
#[derive(Clone)]
pub struct SessionHandle {
    id: SessionId,
    inbox: Arc<Inbox>,
}

impl fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionHandle")
            .field("id", &self.id)
            .finish()
    }
}

impl SessionHandle {
    pub(crate) fn new(id: SessionId, inbox: Arc<Inbox>) -> Self {
        SessionHandle { id, inbox }
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The session's name and room, as its protocol last set them.
    pub(crate) fn presence(&self) -> (Arc<str>, Option<RoomName>) {
        let queue = self.inbox.queue();
        let name = queue.name.clone().unwrap_or_else(|| Arc::from(""));
        (name, queue.room.clone())
    }

    pub(crate) fn set_presence(&self, name: Arc<str>, room: Option<RoomName>) {
        let mut queue = self.inbox.queue();
        queue.name = Some(name);
        queue.room = room;
    }

    /// Whether the session is closing or gone (nothing sent reaches it).
    pub fn is_closed(&self) -> bool {
        self.inbox.closed.load(Ordering::Acquire)
    }

    /// Sends `event` to the peer, rendered in its wire format.
    pub fn send(&self, event: impl Event) {
        self.send_shared(SharedEvent::new(event));
    }

    /// Sends an already shared event (rendered once per wire format however
    /// many sessions it is sent to).
    pub fn send_shared(&self, event: SharedEvent) {
        self.inbox.push(Delivery::Event(event));
    }

    /// Ends the session for `reason` after everything sent before, writing
    /// `farewell` last when the reason
    /// [flushes output](DisconnectReason::flushes_output).
    pub fn close(&self, reason: DisconnectReason, farewell: Option<SharedEvent>) {
        self.inbox.push(Delivery::Close { reason, farewell });
    }

    pub(crate) fn answer(&self, request: RequestId, answer: Response) {
        self.inbox
            .push(Delivery::Answer(Box::new((request, answer))));
    }

    /// An event, then the answer to the request that caused it (a
    /// broadcast's own copy, then its acknowledgement), in one push.
    pub(crate) fn send_and_answer(&self, event: SharedEvent, request: RequestId, answer: Response) {
        let deliveries = [
            Delivery::Event(event),
            Delivery::Answer(Box::new((request, answer))),
        ];
        self.inbox.push_all(deliveries);
    }

    pub(crate) fn shutdown(&self) {
        self.inbox.push(Delivery::Shutdown);
    }

    pub(crate) fn control(&self, control: Control) {
        self.inbox.push(Delivery::Control(Box::new(control)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[derive(Debug)]
    struct Line(&'static str);

    impl Event for Line {
        fn render(&self, _: Wire) -> Bytes {
            Bytes::from_static(self.0.as_bytes())
        }
    }

    /// A session whose peer's socket is full, which may owe it at most
    /// `frames` frames of `bytes` bytes.
    fn blocked_session_owing_at_most(frames: usize, bytes: usize) -> SessionHandle {
        let inbox = Inbox::new(Wire::Text, OutboundBound { frames, bytes });
        inbox.report_owed(0, 0, true);
        SessionHandle::new(SessionId(1), Arc::new(inbox))
    }

    fn is_slow_consumer_close(deliveries: &[Delivery]) -> bool {
        matches!(
            deliveries,
            [Delivery::Close {
                reason: DisconnectReason::SlowConsumer,
                farewell: None
            }]
        )
    }

    #[test]
    fn the_event_past_the_frame_bound_closes_a_blocked_session_as_it_is_sent() {
        let session = blocked_session_owing_at_most(2, 1024);
        session.send(Line("a\n"));
        session.send(Line("b\n"));
        assert!(!session.is_closed());
        session.send(Line("c\n"));
        assert!(session.is_closed(), "the third frame is past the bound");
        session.send(Line("d\n"));
        assert!(is_slow_consumer_close(&session.inbox.take()));
    }

    #[test]
    fn the_byte_bound_counts_what_was_taken_until_the_session_reports() {
        let session = blocked_session_owing_at_most(100, 10);
        session.send(Line("12345\n"));
        assert_eq!(session.inbox.take().len(), 1);
        // Taken but not written yet: still owed, so 6 + 4 bytes fit ...
        session.send(Line("678\n"));
        assert!(!session.is_closed());
        let _ = session.inbox.take();
        // ... and once the session reports its queue, that is what counts.
        session.inbox.report_owed(0, 0, true);
        session.send(Line("0123456789"));
        assert!(!session.is_closed(), "exactly the bound is allowed");
        session.send(Line("x"));
        assert!(session.is_closed(), "one byte past the bound");
        assert!(is_slow_consumer_close(&session.inbox.take()));
    }

    #[test]
    fn a_session_whose_peer_reads_may_fall_behind_by_the_slack_only() {
        let inbox = Inbox::new(
            Wire::Text,
            OutboundBound {
                frames: 2,
                bytes: 10,
            },
        );
        let session = SessionHandle::new(SessionId(1), Arc::new(inbox));
        // Its thread is busy: many frames wait, within 8 x 10 bytes.
        for _ in 0..40 {
            session.send(Line("a\n"));
        }
        assert!(!session.is_closed(), "80 bytes waiting is within the slack");
        session.send(Line("b"));
        assert!(session.is_closed(), "81 bytes waiting is past it");
        assert!(is_slow_consumer_close(&session.inbox.take()));
    }

    #[test]
    fn default_ids_never_repeat_across_listeners_of_one_process() {
        let (first, second) = (SessionIds::default(), SessionIds::default());
        let ids: Vec<SessionId> = (0..4)
            .flat_map(|_| [first.next_id(), second.next_id()])
            .collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    }

    #[test]
    fn a_sequence_of_its_own_starts_at_one_and_is_shared_by_its_clones() {
        let ids = SessionIds::new();
        let clone = ids.clone();
        assert_eq!(
            [ids.next_id(), clone.next_id()],
            [SessionId(1), SessionId(2)]
        );
    }
}
