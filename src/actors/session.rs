//! The Session actor: one per connected peer.
//!
//! A session owns its socket. It cuts inbound bytes into frames, writes
//! outbound frames through a bounded queue, keeps the heartbeat and idle
//! timers, and reports to its hub (the registry, or an application's own
//! actor) what happened: opened, activity, closed. It never decides what bytes
//! to send; the hub does, through the session's [`SessionHandle`].
//!
//! Whatever ends a session — a reset, end of input, a full queue, a timer, a
//! `Close` from the hub — the first cause is kept as its
//! [`DisconnectReason`] and reported exactly once, from `stopped()`.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use actix::prelude::*;
use bytes::{Buf, Bytes};
use log::{debug, info};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::udp_peer::UdpPeer;
use crate::config::SessionConfig;
use crate::framing::{FrameError, FrameReader, Inbound};
use crate::limiter::ConnectionPermit;
use crate::reason::DisconnectReason;

/// The largest number of queued frames handed to one vectored write.
const MAX_FRAMES_PER_WRITE: usize = 64;

/// Identifies a session; unique and increasing within one run of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Hands out [`SessionId`]s 1, 2, 3, … Clones share the sequence, so every
/// listener of one server draws from it.
#[derive(Debug, Clone, Default)]
pub struct SessionIds(Arc<AtomicU64>);

impl SessionIds {
    /// The next id.
    pub fn next_id(&self) -> SessionId {
        SessionId(self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

// ---------------------------------------------------------------------------
// Messages a session handles.

/// Take the frames waiting in the session's inbox. [`SessionHandle::send`]
/// sends it only when the inbox had nothing pending, so a burst of frames
/// (a busy room's broadcasts) costs one message, not one per frame.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TakeInbox;

/// Frames handed to a session by its handles that it has not taken yet.
#[derive(Default)]
pub(crate) struct Inbox {
    frames: Mutex<VecDeque<Bytes>>,
    /// A `TakeInbox` is on its way; frames sent meanwhile ride along with it.
    notified: AtomicBool,
}

impl Inbox {
    fn frames(&self) -> MutexGuard<'_, VecDeque<Bytes>> {
        // A push or a take cannot be interrupted half-way, so a poisoned lock
        // still guards a whole queue.
        self.frames.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes every waiting frame. The notification flag is cleared first, so
    /// a frame sent after the take notifies anew.
    pub(crate) fn take(&self) -> VecDeque<Bytes> {
        self.notified.store(false, Ordering::Release);
        std::mem::take(&mut *self.frames())
    }
}

/// The actor behind a [`SessionHandle`]: a TCP session, or a UDP peer.
#[derive(Clone)]
pub(crate) enum SessionActor {
    Tcp(Addr<Session>),
    Udp(Addr<UdpPeer>),
}

impl SessionActor {
    fn take_inbox(&self) {
        match self {
            SessionActor::Tcp(session) => session.do_send(TakeInbox),
            SessionActor::Udp(peer) => peer.do_send(TakeInbox),
        }
    }

    fn close(&self, close: Close) {
        match self {
            SessionActor::Tcp(session) => session.do_send(close),
            SessionActor::Udp(peer) => peer.do_send(close),
        }
    }
}

/// End the session: stop reading, write what is queued plus an optional
/// farewell (bounded by the flush timeout when the reason flushes at all),
/// then close the connection and report `reason`.
///
/// Only the first `Close` (or other ending) counts; later ones are ignored.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Close {
    /// Why the session ends.
    pub reason: DisconnectReason,
    /// A last frame written after everything already queued (e.g. `BYE`).
    pub farewell: Option<Bytes>,
}

// ---------------------------------------------------------------------------
// Messages a session sends to its hub.

/// A session has started; its handle is how the hub talks to it from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Opened {
    /// The new session's handle.
    pub session: SessionHandle,
    /// The peer's address.
    pub peer: SocketAddr,
    /// What the session's listener serves (its label, e.g. `text` or
    /// `json`), so one hub can serve several listeners.
    pub service: Arc<str>,
}

/// Something happened on a session that its hub must answer.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Activity {
    /// Which session.
    pub session: SessionId,
    /// What happened.
    pub event: SessionEvent,
}

/// What a session reports to its hub, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A complete inbound frame.
    Frame(Bytes),
    /// An inbound line over the framing's maximum; it was discarded.
    Oversized,
    /// An inbound frame over the rate limit; it was discarded.
    RateLimited,
    /// The peer has been silent for another heartbeat period; the number
    /// counts heartbeats since the session started (1, 2, …).
    HeartbeatDue(u64),
    /// The peer has been silent for the idle timeout. The session waits for
    /// the hub to [`Close`] it, so the hub can say why first; if no `Close`
    /// comes within the flush timeout, it stops by itself.
    IdleTimeout,
    /// The peer closed its sending side. Nothing more will be read; the hub
    /// decides when to [`Close`] (usually after answering what came before).
    InputClosed,
}

/// A session has stopped, for `reason`. Sent exactly once per session, and
/// always last.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Closed {
    /// Which session.
    pub session: SessionId,
    /// Why it ended.
    pub reason: DisconnectReason,
}

/// Where a session reports: any actor that handles [`Opened`], [`Activity`]
/// and [`Closed`].
///
/// Cloning shares one set of recipients, so thousands of sessions reporting
/// to one hub cost one pointer each.
#[derive(Clone)]
pub struct SessionEvents(Arc<HubRecipients>);

struct HubRecipients {
    opened: Recipient<Opened>,
    activity: Recipient<Activity>,
    closed: Recipient<Closed>,
}

impl SessionEvents {
    pub(crate) fn opened(&self, opened: Opened) {
        self.0.opened.do_send(opened);
    }

    pub(crate) fn activity(&self, session: SessionId, event: SessionEvent) {
        self.0.activity.do_send(Activity { session, event });
    }

    pub(crate) fn closed(&self, session: SessionId, reason: DisconnectReason) {
        self.0.closed.do_send(Closed { session, reason });
    }
}

impl SessionEvents {
    /// Reports to the actor at `addr`.
    pub fn to_actor<A>(addr: &Addr<A>) -> Self
    where
        A: Actor + Handler<Opened> + Handler<Activity> + Handler<Closed>,
        A::Context: actix::dev::ToEnvelope<A, Opened>
            + actix::dev::ToEnvelope<A, Activity>
            + actix::dev::ToEnvelope<A, Closed>,
    {
        SessionEvents(Arc::new(HubRecipients {
            opened: addr.clone().recipient(),
            activity: addr.clone().recipient(),
            closed: addr.clone().recipient(),
        }))
    }
}

/// How a hub talks to one session. Cheap to clone.
///
/// Sending never waits and never fails: the session itself enforces its
/// outbound bound. It drains its mailbox into its queue every turn and writes
/// whatever the socket takes; once the socket stops taking frames, more than
/// `outbound_queue` frames waiting for it stop the session as a
/// [`DisconnectReason::SlowConsumer`]. A peer that never reads therefore costs
/// at most its queue, never the server's memory.
#[derive(Clone)]
pub struct SessionHandle {
    id: SessionId,
    /// One address rather than a recipient per message type: every clone of
    /// an address allocates, and the registry keeps a handle per session.
    session: SessionActor,
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
    pub(crate) fn new(id: SessionId, session: SessionActor, inbox: Arc<Inbox>) -> Self {
        SessionHandle { id, session, inbox }
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Queues `frame` for the peer, in order after every frame sent before.
    /// Frames sent after the session began closing are dropped, so a
    /// farewell stays the last thing the peer reads.
    pub fn send(&self, frame: Bytes) {
        self.inbox.frames().push_back(frame);
        if !self.inbox.notified.swap(true, Ordering::AcqRel) {
            self.session.take_inbox();
        }
    }

    /// Asks the session to end for `reason`, writing `farewell` last when the
    /// reason [flushes output](DisconnectReason::flushes_output).
    pub fn close(&self, reason: DisconnectReason, farewell: Option<Bytes>) {
        self.session.close(Close { reason, farewell });
    }
}

// ---------------------------------------------------------------------------
// The actor.

/// One peer's connection. Started by a listener; see the module docs.
pub struct Session {
    id: SessionId,
    peer: SocketAddr,
    config: Arc<SessionConfig>,
    hub: SessionEvents,
    /// The read half until `started()` turns it into the frame stream.
    reader: Option<OwnedReadHalf>,
    /// The write half; `None` while a wait for writability owns it (the
    /// peer's socket is full) and once the connection is being shut down.
    writer: Option<OwnedWriteHalf>,
    /// Frames handles have sent and this session has not taken yet.
    inbox: Arc<Inbox>,
    /// Frames the socket has not taken yet, oldest first.
    outbound: Outbound,
    /// Cancels reading once the session is closing.
    reading: Option<SpawnHandle>,
    /// When the last complete inbound frame arrived.
    last_inbound: Instant,
    /// Heartbeats reported since `last_inbound`: the next is due one period
    /// after the last, so the timer needs no instant of its own.
    silent_heartbeats: u32,
    /// Heartbeats reported since the session started: the `PING` token.
    heartbeats: u32,
    /// Boxed: most sessions have no rate limit, and every session pays for
    /// the size of this struct.
    rate_limit: Option<Box<TokenBucket>>,
    /// Set by `Close`: the session writes what it owes, then closes.
    closing: Option<DisconnectReason>,
    /// The first cause of the end; reported once from `stopped()`.
    stop_reason: Option<DisconnectReason>,
    /// The connection slot; released before the socket closes, so a peer that
    /// sees our close can connect again at once.
    permit: Option<ConnectionPermit>,
}

impl Session {
    /// A session for an accepted `stream` from `peer`. `permit`, if any, is
    /// the connection slot it holds until it ends.
    pub fn new(
        id: SessionId,
        stream: TcpStream,
        peer: SocketAddr,
        config: Arc<SessionConfig>,
        hub: SessionEvents,
        permit: Option<ConnectionPermit>,
    ) -> Self {
        let rate_limit = config
            .max_frames_per_sec
            .map(|rate| Box::new(TokenBucket::new(rate.get())));
        let (reader, writer) = stream.into_split();
        Session {
            id,
            peer,
            config,
            hub,
            reader: Some(reader),
            writer: Some(writer),
            inbox: Arc::default(),
            outbound: Outbound::default(),
            reading: None,
            last_inbound: Instant::now(),
            silent_heartbeats: 0,
            heartbeats: 0,
            rate_limit,
            closing: None,
            stop_reason: None,
            permit,
        }
    }

    fn report(&self, event: SessionEvent) {
        self.hub.0.activity.do_send(Activity {
            session: self.id,
            event,
        });
    }

    /// Stops the actor now; the first reason given is the one reported.
    fn end(&mut self, reason: DisconnectReason, ctx: &mut Context<Self>) {
        self.stop_reason.get_or_insert(reason);
        ctx.stop();
    }

    /// Moves the inbox's frames to the outbound queue. Once closing, frames
    /// are dropped instead: the hub's `Close` came after everything it meant
    /// to send, and a farewell must stay the last thing the peer reads.
    fn take_inbox(&mut self) {
        let frames = self.inbox.take();
        if self.closing.is_none() {
            self.outbound.extend(frames);
        }
    }

    /// Writes what the socket takes now. If it takes everything, a closing
    /// session finishes; if the socket is full, the session waits for it to
    /// drain, unless more than its bound is waiting: a slow consumer.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let Some(writer) = &self.writer else {
            return;
        };
        match self.outbound.write_now(writer) {
            Ok(()) => {
                if let Some(reason) = self.closing {
                    self.finish_close(reason, ctx);
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                if self.closing.is_none() && self.outbound.len() > self.config.outbound_queue {
                    return self.end(DisconnectReason::SlowConsumer, ctx);
                }
                self.wait_until_writable(ctx);
            }
            Err(error) => {
                debug!("session {} write failed: {error}", self.id);
                self.end(DisconnectReason::from_io_error(&error), ctx);
            }
        }
    }

    fn wait_until_writable(&mut self, ctx: &mut Context<Self>) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        let writable = async move {
            let result = writer.writable().await;
            (writer, result)
        };
        ctx.spawn(
            writable
                .into_actor(self)
                .map(|(writer, result), act, ctx| match result {
                    Ok(()) => {
                        act.writer = Some(writer);
                        act.flush(ctx);
                    }
                    Err(error) => act.end(DisconnectReason::from_io_error(&error), ctx),
                }),
        );
    }

    /// Everything owed is written: free the slot, close the socket, stop.
    fn finish_close(&mut self, reason: DisconnectReason, ctx: &mut Context<Self>) {
        self.permit.take();
        if let Some(mut writer) = self.writer.take() {
            let flush_timeout = self.config.flush_timeout;
            let shutdown = async move {
                // The FIN tells the peer we are done; a peer that stopped
                // reading cannot hold us past the flush timeout.
                let _ = tokio::time::timeout(flush_timeout, writer.shutdown()).await;
            };
            ctx.spawn(
                shutdown
                    .into_actor(self)
                    .map(move |(), act, ctx| act.end(reason, ctx)),
            );
        } else {
            self.end(reason, ctx);
        }
    }

    /// Arms the timer for whichever comes first: the next heartbeat or the
    /// idle timeout. Inbound frames only move `last_inbound`; the timer
    /// re-reads it when it fires, so traffic costs no timer updates.
    fn schedule_timer(&mut self, ctx: &mut Context<Self>) {
        let next_heartbeat = self
            .config
            .heartbeat
            .map(|period| self.next_heartbeat(period));
        let idle_deadline = self
            .config
            .idle_timeout
            .map(|idle| self.last_inbound + idle);
        let Some(due) = [next_heartbeat, idle_deadline].into_iter().flatten().min() else {
            return;
        };
        let delay = due.saturating_duration_since(Instant::now());
        ctx.run_later(delay, |act, ctx| act.on_timer(ctx));
    }

    fn next_heartbeat(&self, period: std::time::Duration) -> Instant {
        self.last_inbound + period * (self.silent_heartbeats + 1)
    }

    fn on_timer(&mut self, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            return;
        }
        let now = Instant::now();
        if let Some(idle) = self.config.idle_timeout
            && now >= self.last_inbound + idle
        {
            debug!("session {} idle for {idle:?}", self.id);
            self.report(SessionEvent::IdleTimeout);
            // The hub normally closes us with a farewell; should it not, the
            // timeout still ends the session.
            ctx.run_later(self.config.flush_timeout, |act, ctx| {
                if act.closing.is_none() {
                    act.end(DisconnectReason::IdleTimeout, ctx);
                }
            });
            return;
        }
        if let Some(period) = self.config.heartbeat
            && now >= self.next_heartbeat(period)
        {
            self.silent_heartbeats += 1;
            self.heartbeats += 1;
            self.report(SessionEvent::HeartbeatDue(u64::from(self.heartbeats)));
        }
        self.schedule_timer(ctx);
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(read_half) = self.reader.take() else {
            return;
        };
        self.reading = Some(ctx.add_stream(FrameReader::new(read_half, self.config.framing)));
        let handle = SessionHandle::new(
            self.id,
            SessionActor::Tcp(ctx.address()),
            self.inbox.clone(),
        );
        self.hub.0.opened.do_send(Opened {
            session: handle,
            peer: self.peer,
            service: self.config.service.clone(),
        });
        self.schedule_timer(ctx);
        debug!("session {} opened for {}", self.id, self.peer);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let reason = self
            .stop_reason
            .unwrap_or(DisconnectReason::Error(io::ErrorKind::Other));
        info!("session {} ({}) ended: {reason}", self.id, self.peer);
        self.hub.0.closed.do_send(Closed {
            session: self.id,
            reason,
        });
    }
}

impl StreamHandler<Result<Inbound, FrameError>> for Session {
    fn handle(&mut self, item: Result<Inbound, FrameError>, ctx: &mut Self::Context) {
        let inbound = match item {
            Ok(inbound) => inbound,
            Err(FrameError::Io(error)) => {
                debug!("session {} read failed: {error}", self.id);
                return self.end(DisconnectReason::from_io_error(&error), ctx);
            }
            Err(error @ FrameError::TooLarge { .. }) => {
                info!("session {} sent a bad frame: {error}", self.id);
                return self.end(DisconnectReason::BadFrame, ctx);
            }
        };
        if self.closing.is_some() {
            return;
        }
        self.last_inbound = Instant::now();
        self.silent_heartbeats = 0;
        let within_rate = self
            .rate_limit
            .as_mut()
            .is_none_or(|bucket| bucket.try_take(self.last_inbound));
        let event = match inbound {
            _ if !within_rate => SessionEvent::RateLimited,
            Inbound::Frame(frame) => SessionEvent::Frame(frame),
            Inbound::Oversized => SessionEvent::Oversized,
        };
        self.report(event);
    }

    /// End of input is the hub's to answer (it may still owe the peer
    /// replies), so unlike actix's default this does not stop the session.
    fn finished(&mut self, _: &mut Self::Context) {
        if self.closing.is_none() {
            self.report(SessionEvent::InputClosed);
        }
    }
}

impl Handler<TakeInbox> for Session {
    type Result = ();

    fn handle(&mut self, _: TakeInbox, ctx: &mut Self::Context) {
        self.take_inbox();
        if self.closing.is_some() {
            return;
        }
        if self.writer.is_none() {
            if self.outbound.len() > self.config.outbound_queue {
                // The socket is full and the peer is still not reading.
                self.end(DisconnectReason::SlowConsumer, ctx);
            }
            // Otherwise the wait for writability flushes when it ends.
            return;
        }
        // The inbox held the whole burst sent since the last take: it leaves
        // in one vectored write.
        self.flush(ctx);
    }
}

impl Handler<Close> for Session {
    type Result = ();

    fn handle(&mut self, Close { reason, farewell }: Close, ctx: &mut Self::Context) {
        if self.closing.is_some() || self.stop_reason.is_some() {
            return;
        }
        debug!("session {} closing: {reason}", self.id);
        if !reason.flushes_output() {
            return self.end(reason, ctx);
        }
        // Everything sent before this `Close` is owed to the peer.
        self.take_inbox();
        self.closing = Some(reason);
        if let Some(reading) = self.reading.take() {
            ctx.cancel_future(reading);
        }
        if let Some(farewell) = farewell {
            self.outbound.push(farewell);
        }
        ctx.run_later(self.config.flush_timeout, move |act, ctx| {
            debug!("session {} flush timed out", act.id);
            act.end(reason, ctx);
        });
        self.flush(ctx);
    }
}

// ---------------------------------------------------------------------------
// Helpers.

/// Frames waiting for the socket, oldest first; the front one may be partly
/// written.
#[derive(Default)]
struct Outbound {
    frames: VecDeque<Bytes>,
}

impl Outbound {
    fn push(&mut self, frame: Bytes) {
        if !frame.is_empty() {
            self.frames.push_back(frame);
        }
    }

    fn len(&self) -> usize {
        self.frames.len()
    }

    fn extend(&mut self, mut frames: VecDeque<Bytes>) {
        frames.retain(|frame| !frame.is_empty());
        if self.frames.is_empty() {
            // The common case: take the sender's queue as it is, no copying.
            self.frames = frames;
        } else {
            self.frames.extend(frames);
        }
    }

    /// Writes queued frames with vectored writes until the queue is empty
    /// (`Ok`) or the socket would block (`Err` of kind `WouldBlock`).
    fn write_now(&mut self, writer: &OwnedWriteHalf) -> io::Result<()> {
        while !self.frames.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_FRAMES_PER_WRITE];
            let count = slices
                .iter_mut()
                .zip(&self.frames)
                .map(|(slice, frame)| *slice = IoSlice::new(frame))
                .count();
            let written = writer.try_write_vectored(&slices[..count])?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.consume(written);
        }
        // An emptied queue gives its memory back: idle sessions hold none.
        self.frames = VecDeque::new();
        Ok(())
    }

    /// Drops `written` bytes from the front of the queue.
    fn consume(&mut self, mut written: usize) {
        while let Some(front) = self.frames.front_mut() {
            if written < front.len() {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.frames.pop_front();
        }
    }
}

/// A token bucket: `rate` tokens per second, holding at most `rate`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: u32) -> Self {
        TokenBucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            refilled: Instant::now(),
        }
    }

    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn outbound_consumes_partly_written_frames() {
        let mut outbound = Outbound::default();
        for frame in ["ab", "", "cde"] {
            outbound.push(Bytes::from(frame));
        }
        assert_eq!(outbound.len(), 2, "empty frames are never queued");
        outbound.consume(3);
        assert_eq!(outbound.frames.front().map(|f| &f[..]), Some(&b"de"[..]));
        outbound.consume(2);
        assert_eq!(outbound.len(), 0);
    }

    #[test]
    fn token_bucket_allows_a_burst_then_refills() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(5);
        let taken = (0..20).filter(|_| bucket.try_take(start)).count();
        assert_eq!(taken, 5);
        assert!(bucket.try_take(start + Duration::from_secs(1)));
    }
}
