//! The Session actor: one per connected TCP peer.
//!
//! A session owns its socket and runs its [`Protocol`] inline, on its own
//! thread: it cuts inbound bytes into frames, hands them to the protocol,
//! and writes what the protocol and the rest of the server send it through a
//! bounded queue. It keeps the heartbeat and idle timers and the rate limit.
//!
//! Whatever ends a session — a reset, end of input, a full queue, a timer,
//! its protocol, a kick — the first cause is kept as its
//! [`DisconnectReason`], and the registry forgets the session exactly once,
//! from `stopped()`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use futures::Stream;
use log::debug;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::config::SessionConfig;
use crate::drain::DrainGuard;
use crate::driver::{Engine, Protocol};
use crate::framing::{FrameError, FrameReader, Inbound};
use crate::handle::{Inbox, SessionHandle, SessionId, TakeInbox};
use crate::limiter::ConnectionPermit;
use crate::local::Local;
use crate::reason::DisconnectReason;
use crate::registry::Registry;

/// One peer's connection running protocol `P`. Started by a listener; see
/// the module docs.
pub struct Session<P: Protocol> {
    config: Arc<SessionConfig>,
    /// The protocol and its requests; fed everything that happens.
    engine: Engine<P>,
    /// The read half until `started()` turns it into the frame stream.
    reader: Option<OwnedReadHalf>,
    /// The write half; `None` while a wait for writability owns it (the
    /// peer's socket is full) and once the connection is being shut down.
    writer: Option<OwnedWriteHalf>,
    /// What the rest of the server sent and this session has not taken yet.
    inbox: Arc<Inbox>,
    /// Cancels reading once the session is closing.
    reading: Option<SpawnHandle>,
    /// Pauses reading while the protocol waits for an answer.
    /// When the last complete inbound frame arrived.
    last_inbound: Instant,
    /// Heartbeats reported since `last_inbound`: the next is due one period
    /// after the last, so the timer needs no instant of its own.
    silent_heartbeats: u32,
    /// Heartbeats since the session started: the `PING` token.
    heartbeats: u32,
    /// Boxed: most sessions have no rate limit, and every session pays for
    /// the size of this struct.
    rate_limit: Option<Box<TokenBucket>>,
    /// Set once closing: the session writes what it owes, then closes.
    closing: Option<DisconnectReason>,
    /// The first cause of the end; reported once from `stopped()`.
    stop_reason: Option<DisconnectReason>,
    /// The connection slot; released before the socket closes, so a peer that
    /// sees our close can connect again at once.
    permit: Option<ConnectionPermit>,
    /// Held until the actor is gone, so a shutdown waits for this session.
    _drain: Option<DrainGuard>,
}

impl<P: Protocol> Session<P> {
    /// A session for an accepted `stream` from `peer`, running `protocol`
    /// in `registry`. `permit`, if any, is the connection slot it holds until
    /// it ends.
    pub(crate) fn new(
        id: SessionId,
        stream: TcpStream,
        peer: SocketAddr,
        config: Arc<SessionConfig>,
        (registry, local, protocol): (Registry, Rc<Local>, P),
        permit: Option<ConnectionPermit>,
        drain: Option<DrainGuard>,
    ) -> Self {
        let rate_limit = TokenBucket::for_session(&config);
        let (reader, writer) = stream.into_split();
        let inbox = Arc::new(Inbox::for_session(&config));
        let handle = SessionHandle::new(id, inbox.clone());
        Session {
            engine: Engine::new(protocol, handle, peer, config.wire, (registry, local)),
            config,
            reader: Some(reader),
            writer: Some(writer),
            inbox,
            reading: None,
            last_inbound: Instant::now(),
            silent_heartbeats: 0,
            heartbeats: 0,
            rate_limit,
            closing: None,
            stop_reason: None,
            permit,
            _drain: drain,
        }
    }

    /// Stops the actor now. The first reason is the one reported; a session
    /// already closing keeps its closing reason even if the last write fails.
    fn end(&mut self, reason: DisconnectReason, ctx: &mut Context<Self>) {
        let reason = self.closing.unwrap_or(reason);
        self.stop_reason.get_or_insert(reason);
        ctx.stop();
    }

    /// Whether more is waiting for the full socket than the outbound bound
    /// allows (frames or bytes): the peer is a slow consumer. Tells the inbox
    /// what is waiting for the full socket, so senders hold the session to
    /// its bound too.
    fn over_bound(&mut self) -> bool {
        let (frames, bytes) = (self.config.outbound_queue, self.config.outbound_bytes);
        let outbound = self.engine.outbound();
        self.inbox
            .report_owed(outbound.len(), outbound.bytes(), true);
        outbound.exceeds(frames, bytes)
    }

    /// Acts on whatever the engine produced: output to write, a close to
    /// begin, input to pause or resume.
    fn apply(&mut self, ctx: &mut Context<Self>) {
        if self.stop_reason.is_some() {
            return;
        }
        self.engine.run_controls();
        stop_reading_when_closing(
            &self.engine,
            &mut self.reading,
            self.config.flush_timeout,
            ctx,
            |act, reason, ctx| {
                if act.closing.is_none() {
                    act.end(reason, ctx);
                }
            },
        );
        if let Some((reason, farewell)) = self.engine.take_close() {
            return self.begin_close(reason, farewell, ctx);
        }
        Gate(self.inbox.clone()).set_paused(self.engine.input_paused());
        if self.closing.is_some() {
            return;
        }
        if self.writer.is_none() {
            if self.over_bound() {
                // The socket is full and the peer is still not reading.
                self.end(DisconnectReason::SlowConsumer, ctx);
            }
            // Otherwise the wait for writability flushes when it ends.
            return;
        }
        self.flush(ctx);
    }

    fn begin_close(
        &mut self,
        reason: DisconnectReason,
        farewell: Option<Bytes>,
        ctx: &mut Context<Self>,
    ) {
        if self.closing.is_some() || self.stop_reason.is_some() {
            return;
        }
        debug!("session {} closing: {reason}", self.engine.id());
        self.inbox.close();
        if !reason.flushes_output() {
            return self.end(reason, ctx);
        }
        self.closing = Some(reason);
        if let Some(reading) = self.reading.take() {
            ctx.cancel_future(reading);
        }
        if let Some(farewell) = farewell {
            self.engine.push_out(farewell);
        }
        ctx.run_later(self.config.flush_timeout, move |act, ctx| {
            debug!("session {} flush timed out", act.engine.id());
            act.end(reason, ctx);
        });
        self.flush(ctx);
    }

    /// Writes what the socket takes now. If it takes everything, a closing
    /// session finishes; if the socket is full, the session waits for it to
    /// drain, unless more than its bound is waiting: a slow consumer.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let Some(writer) = &self.writer else {
            return;
        };
        match self.engine.outbound().write_now(writer) {
            Ok(()) => {
                self.inbox.report_owed(0, 0, false);
                if let Some(reason) = self.closing {
                    self.finish_close(reason, ctx);
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                self.engine.note_queued();
                if self.closing.is_none() && self.over_bound() {
                    return self.end(DisconnectReason::SlowConsumer, ctx);
                }
                self.wait_until_writable(ctx);
            }
            Err(error) => {
                debug!("session {} write failed: {error}", self.engine.id());
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
            .and_then(|period| self.next_heartbeat(period));
        let idle_deadline = self
            .config
            .idle_timeout
            .and_then(|idle| self.last_inbound.checked_add(idle));
        let Some(due) = [next_heartbeat, idle_deadline].into_iter().flatten().min() else {
            return;
        };
        let delay = due.saturating_duration_since(Instant::now());
        ctx.run_later(delay, |act, ctx| act.on_timer(ctx));
    }

    /// When the next heartbeat is due; `None` when that lies beyond what an
    /// `Instant` can hold, i.e. never.
    fn next_heartbeat(&self, period: Duration) -> Option<Instant> {
        if period.is_zero() {
            // A zero period would fire without pause: no heartbeat at all.
            return None;
        }
        let periods = period.checked_mul(self.silent_heartbeats + 1)?;
        self.last_inbound.checked_add(periods)
    }

    fn on_timer(&mut self, ctx: &mut Context<Self>) {
        if self.closing.is_some() || self.engine.is_closing() {
            return;
        }
        let now = Instant::now();
        if let Some(idle) = self.config.idle_timeout
            && self
                .last_inbound
                .checked_add(idle)
                .is_some_and(|due| now >= due)
        {
            debug!("session {} idle for {idle:?}", self.engine.id());
            self.engine.idle();
            return self.apply(ctx);
        }
        if let Some(period) = self.config.heartbeat
            && self.next_heartbeat(period).is_some_and(|due| now >= due)
        {
            self.silent_heartbeats += 1;
            self.heartbeats += 1;
            self.engine.heartbeat(u64::from(self.heartbeats));
            self.apply(ctx);
        }
        self.schedule_timer(ctx);
    }
}

impl<P: Protocol> Actor for Session<P> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(read_half) = self.reader.take() else {
            return;
        };
        let frames = FrameReader::new(read_half, self.config.framing);
        self.reading = Some(ctx.add_stream(Gate(self.inbox.clone()).wrap(frames)));
        self.inbox.set_wake(ctx.address().recipient());
        debug!(
            "session {} opened for {}",
            self.engine.id(),
            self.engine.peer()
        );
        self.engine.opened();
        self.apply(ctx);
        self.schedule_timer(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let reason = self
            .stop_reason
            .unwrap_or(DisconnectReason::Error(io::ErrorKind::Other));
        debug!(
            "session {} ({}) ended: {reason}",
            self.engine.id(),
            self.engine.peer()
        );
        self.inbox.close();
        self.engine.closed(reason);
    }
}

impl<P: Protocol> StreamHandler<Result<Inbound, FrameError>> for Session<P> {
    fn handle(&mut self, item: Result<Inbound, FrameError>, ctx: &mut Self::Context) {
        let inbound = match item {
            Ok(inbound) => inbound,
            Err(FrameError::Io(error)) => {
                debug!("session {} read failed: {error}", self.engine.id());
                return self.end(DisconnectReason::from_io_error(&error), ctx);
            }
            Err(error @ FrameError::TooLarge { .. }) => {
                debug!("session {} sent a bad frame: {error}", self.engine.id());
                return self.end(DisconnectReason::BadFrame, ctx);
            }
        };
        if self.closing.is_some() || self.engine.is_closing() {
            return;
        }
        self.last_inbound = Instant::now();
        self.silent_heartbeats = 0;
        let within_rate = self
            .rate_limit
            .as_mut()
            .is_none_or(|bucket| bucket.try_take(self.last_inbound));
        match inbound {
            _ if !within_rate => self.engine.rate_limited(),
            Inbound::Frame(frame) => self.engine.frame(frame),
            Inbound::Oversized => self.engine.oversized(),
        }
        self.apply(ctx);
    }

    /// End of input is the protocol's to answer (it may still owe the peer
    /// replies), so unlike actix's default this does not stop the session.
    fn finished(&mut self, ctx: &mut Self::Context) {
        if self.closing.is_none() && !self.engine.is_closing() {
            self.engine.input_closed();
            self.apply(ctx);
        }
    }
}

impl<P: Protocol> Handler<TakeInbox> for Session<P> {
    type Result = ();

    fn handle(&mut self, _: TakeInbox, ctx: &mut Self::Context) {
        let deliveries = self.inbox.take();
        if self.closing.is_some() {
            return;
        }
        self.engine.deliver(deliveries);
        self.apply(ctx);
    }
}

/// Once the protocol has begun closing, stops reading (nothing the peer
/// sent after that is carried out) and gives the answers still owed before
/// the close `flush_timeout` to arrive; then `give_up` ends the session, if
/// it is not closing by then. Shared by the TCP and WebSocket sessions.
pub(crate) fn stop_reading_when_closing<A, P>(
    engine: &Engine<P>,
    reading: &mut Option<SpawnHandle>,
    flush_timeout: Duration,
    ctx: &mut Context<A>,
    give_up: fn(&mut A, DisconnectReason, &mut Context<A>),
) where
    A: Actor<Context = Context<A>>,
    P: Protocol,
{
    if let Some(reason) = engine.closing_reason()
        && let Some(handle) = reading.take()
    {
        ctx.cancel_future(handle);
        ctx.run_later(flush_timeout, move |act, ctx| give_up(act, reason, ctx));
    }
}

/// Lets a session (TCP or WebSocket) stop reading while its protocol waits
/// for an answer, without losing what was read: the frames stay in the
/// reader's buffer and the socket's, and the peer's sending is slowed by
/// TCP itself. Its state lives in the session's inbox, to share that
/// allocation.
#[derive(Clone)]
pub(crate) struct Gate(pub(crate) Arc<Inbox>);

impl Gate {
    pub(crate) fn set_paused(&self, paused: bool) {
        let was = self.0.read_paused.swap(paused, Ordering::AcqRel);
        if was && !paused {
            self.0.read_waker.wake();
        }
    }

    pub(crate) fn wrap<S: Stream + Unpin>(&self, stream: S) -> Gated<S> {
        Gated {
            gate: self.clone(),
            stream,
        }
    }
}

/// A stream that yields nothing while its [`Gate`] is paused.
pub(crate) struct Gated<S> {
    gate: Gate,
    stream: S,
}

impl<S: Stream + Unpin> Stream for Gated<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<S::Item>> {
        let inbox = &self.gate.0;
        if inbox.read_paused.load(Ordering::Acquire) {
            inbox.read_waker.register(cx.waker());
            // Opened meanwhile: read after all.
            if inbox.read_paused.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
        Pin::new(&mut self.stream).poll_next(cx)
    }
}

// ---------------------------------------------------------------------------
// Helpers.

/// A token bucket: `rate` tokens per second, holding at most `rate`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// The inbound rate limit `config` sets, if any. Boxed: most sessions
    /// have none, and every session pays for the size of its struct.
    pub(crate) fn for_session(config: &SessionConfig) -> Option<Box<Self>> {
        config
            .max_frames_per_sec
            .map(|rate| Box::new(TokenBucket::new(rate.get())))
    }

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
    fn token_bucket_allows_a_burst_then_refills() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(5);
        let taken = (0..20).filter(|_| bucket.try_take(start)).count();
        assert_eq!(taken, 5);
        assert!(bucket.try_take(start + Duration::from_secs(1)));
    }
}
