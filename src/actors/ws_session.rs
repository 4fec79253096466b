//! The WsSession actor: one per WebSocket peer of `GET /ws`, a session like
//! any TCP peer, running its protocol (the lobby, on the JSON wire).
//!
//! Each inbound text message is one frame for the protocol; each frame the
//! protocol owes the peer leaves as one text message (its trailing newline
//! removed). The actor runs on the thread of its HTTP connection, which is
//! the thread its id belongs to, so it shares that thread's state with the
//! TCP sessions there.
//!
//! Output is bounded like a TCP session's: frames wait in a queue that the
//! HTTP response body takes from as fast as the connection writes (the HTTP
//! layer holds at most its write buffer beyond it); more than the outbound
//! bound waiting stops the session as `slow-consumer`. Heartbeats are
//! WebSocket pings: a peer that leaves a ping unanswered for a whole period
//! (no pong, no message) ends as `idle-timeout`. Binary messages, oversized
//! messages and protocol errors are refused with a close code. Whatever ends
//! the session, the first cause is its [`DisconnectReason`], reported once
//! from `stopped()`, with the close frame that was sent or received.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser, ProtocolError};
use actix_ws::{AggregatedMessage, AggregatedMessageStream};
use bytes::{Bytes, BytesMut};
use futures::channel::oneshot;
use futures::{Future, Stream};
use log::debug;

use super::session::{Gate, TokenBucket};
use crate::config::SessionConfig;
use crate::drain::DrainGuard;
use crate::driver::{Engine, Protocol};
use crate::handle::{Inbox, SessionHandle, SessionId, TakeInbox};
use crate::http::ConnectionCut;
use crate::limiter::ConnectionPermit;
use crate::local::Local;
use crate::metrics::Transport;
use crate::reason::DisconnectReason;
use crate::registry::Registry;

/// Bytes waiting for the response body past which the peer counts as not
/// keeping up (about a socket's send buffer): see `over_bound`.
const BEHIND_BYTES: usize = 64 * 1024;
/// The most bytes one poll of the response body encodes: large enough to
/// fill a socket write, small enough to keep the HTTP layer's buffer short.
const BODY_CHUNK: usize = 64 * 1024;

/// How long queued frames may wait for more to share their write: like
/// Nagle's algorithm for messages. A busy room's events then reach a member
/// in one write and one packet instead of one each, which costs the peer
/// (and the kernel) far less; a lone chat line waits at most this long.
pub const WRITE_COALESCE: Duration = Duration::from_millis(1);

/// Queued bytes that are written at once, without waiting for more.
const COALESCE_BYTES: usize = 16 * 1024;

/// How a WebSocket session ended on the wire: the close frame sent or
/// received, beside the [`DisconnectReason`] that everyone else sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsEnd {
    /// Why the session ended.
    pub reason: DisconnectReason,
    /// The close code sent (or, for a peer's close, received); `None` when
    /// the connection ended without a close frame.
    pub code: Option<u16>,
    /// The close frame's reason text.
    pub description: String,
}

impl fmt::Display for WsEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "{} (close {code} {:?})", self.reason, self.description),
            None => write!(f, "{} (no close frame)", self.reason),
        }
    }
}

/// What a read error that is the peer's fault, not the connection's, is
/// refused with. actix-ws reports them all as I/O errors: a frame over the
/// limit (our `FrameGuard`: `PayloadError::Overflow`), a fragmented message
/// over it (an error it names by its text), invalid UTF-8 (`InvalidData`).
fn refusal_of(error: &std::io::Error) -> Option<(CloseCode, &'static str)> {
    let overflow = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<actix_http::error::PayloadError>())
        .is_some_and(|inner| matches!(inner, actix_http::error::PayloadError::Overflow));
    if overflow || error.to_string().contains("maximum continuation size") {
        Some((CloseCode::Size, "message too big"))
    } else if error.kind() == std::io::ErrorKind::InvalidData {
        Some((CloseCode::Invalid, "text is not UTF-8"))
    } else {
        None
    }
}

/// The close frame a session ending for `reason` sends: `1000` for a quit
/// or a peer's own close, `1001` for shutdown or a lost cluster node, `1008` for an idle timeout or
/// a kick, `1013` for a slow consumer, `1011` for an error; the reason text
/// is the reason's word. (A slow consumer's connection is dropped without
/// its close frame: the peer is not reading it.)
pub fn close_code(reason: DisconnectReason) -> CloseCode {
    match reason {
        DisconnectReason::Quit | DisconnectReason::Closed => CloseCode::Normal,
        DisconnectReason::Shutdown | DisconnectReason::NodeDown => CloseCode::Away,
        DisconnectReason::IdleTimeout | DisconnectReason::Kicked => CloseCode::Policy,
        DisconnectReason::SlowConsumer => CloseCode::Again,
        DisconnectReason::BadFrame => CloseCode::Protocol,
        DisconnectReason::Reset | DisconnectReason::Error(_) => CloseCode::Error,
    }
}

/// One entry of the queue to the peer.
enum Outgoing {
    /// A frame of the protocol, sent as one text message (binary if it is
    /// not UTF-8), without its trailing newline.
    Frame(Bytes),
    /// A control frame.
    Ping,
    Pong(Bytes),
    Close(CloseReason),
}

/// What the session and its response body share (both on one thread).
#[derive(Default)]
struct Shared {
    queue: VecDeque<Outgoing>,
    /// Payload bytes of the queued frames.
    bytes: usize,
    /// The body waits for frames.
    waker: Option<Waker>,
    /// No more frames will come: the body ends once the queue is empty.
    finished: bool,
    /// The session ended without a close: the body fails, which drops the
    /// connection.
    aborted: bool,
    /// The body is gone (the connection ended).
    gone: bool,
    /// Told once the body has taken everything after `finished`.
    drained: Option<oneshot::Sender<()>>,
}

/// The queue between a session and its HTTP response body, and the way to
/// end the connection under both.
#[derive(Clone)]
pub(crate) struct WsOutput(Rc<RefCell<Shared>>, ConnectionCut);

impl WsOutput {
    pub(crate) fn new(cut: ConnectionCut) -> Self {
        WsOutput(Rc::default(), cut)
    }

    fn push(&self, outgoing: Outgoing) {
        let mut shared = self.0.borrow_mut();
        if shared.finished || shared.aborted {
            return;
        }
        if let Outgoing::Frame(frame) = &outgoing {
            shared.bytes += frame.len();
        }
        shared.queue.push_back(outgoing);
        if let Some(waker) = shared.waker.take() {
            waker.wake();
        }
    }

    /// Frames waiting for the connection, and their bytes.
    fn pending(&self) -> (usize, usize) {
        let shared = self.0.borrow();
        (shared.queue.len(), shared.bytes)
    }

    fn is_gone(&self) -> bool {
        self.0.borrow().gone
    }

    /// Queues the close frame last; resolves once the body has taken it.
    fn finish(&self, close: CloseReason) -> oneshot::Receiver<()> {
        self.push(Outgoing::Close(close));
        let (done, drained) = oneshot::channel();
        let mut shared = self.0.borrow_mut();
        shared.finished = true;
        shared.drained = Some(done);
        if let Some(waker) = shared.waker.take() {
            waker.wake();
        }
        drained
    }

    /// Drops what is queued and closes the connection without a close
    /// frame, even if the peer is not reading.
    fn abort(&self) {
        let mut shared = self.0.borrow_mut();
        shared.aborted = true;
        shared.queue.clear();
        shared.bytes = 0;
        if let Some(waker) = shared.waker.take() {
            waker.wake();
        }
        drop(shared);
        self.1.cut();
    }

    /// The response body that carries this queue to the peer.
    pub(crate) fn body(&self) -> WsBody {
        WsBody(self.clone(), None)
    }
}

/// The body of a `101 Switching Protocols` response: encodes queued frames
/// as WebSocket frames when the connection can take more.
pub(crate) struct WsBody(WsOutput, Option<Pin<Box<tokio::time::Sleep>>>);

impl Stream for WsBody {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut shared = this.0.0.borrow_mut();
        if shared.aborted {
            // The request's input is gone with the session, so the HTTP
            // layer closes the connection once the body ends.
            return Poll::Ready(None);
        }
        if shared.queue.is_empty() {
            if shared.finished {
                if let Some(drained) = shared.drained.take() {
                    let _ = drained.send(());
                }
                return Poll::Ready(None);
            }
            shared.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let control = matches!(
            shared.queue.front(),
            Some(Outgoing::Ping | Outgoing::Pong(_) | Outgoing::Close(_))
        );
        if !shared.finished && !control && shared.bytes < COALESCE_BYTES {
            let delay = this
                .1
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_COALESCE)));
            if delay.as_mut().poll(cx).is_pending() {
                // Woken by the delay, or by the session when more is queued.
                shared.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        this.1 = None;
        // Room for the frames queued (up to a chunk) and their headers, so a
        // burst is framed without reallocating.
        let queued = shared.bytes.min(BODY_CHUNK) + 14 * shared.queue.len().min(BODY_CHUNK / 64);
        let mut buf = BytesMut::with_capacity(queued);
        while buf.len() < BODY_CHUNK {
            let Some(outgoing) = shared.queue.pop_front() else {
                break;
            };
            match outgoing {
                Outgoing::Frame(frame) => {
                    shared.bytes -= frame.len();
                    let payload = frame.strip_suffix(b"\n").unwrap_or(&frame);
                    // ASCII (every lobby event) is checked fastest; other
                    // bytes must be UTF-8 to go as text.
                    let text = payload.is_ascii() || std::str::from_utf8(payload).is_ok();
                    let op = if text { OpCode::Text } else { OpCode::Binary };
                    Parser::write_message(&mut buf, payload, op, true, false);
                }
                Outgoing::Ping => Parser::write_message(&mut buf, b"", OpCode::Ping, true, false),
                Outgoing::Pong(payload) => {
                    Parser::write_message(&mut buf, payload, OpCode::Pong, true, false);
                }
                Outgoing::Close(reason) => Parser::write_close(&mut buf, Some(reason), false),
            }
        }
        Poll::Ready(Some(Ok(buf.freeze())))
    }
}

impl Drop for WsBody {
    fn drop(&mut self) {
        let mut shared = self.0.0.borrow_mut();
        shared.gone = true;
        shared.queue.clear();
        shared.bytes = 0;
        // A close waiting for the body to take its frame ends now.
        shared.drained = None;
    }
}

/// What a WebSocket session is started with besides its protocol.
pub(crate) struct WsParts {
    pub id: SessionId,
    pub peer: SocketAddr,
    pub config: Arc<SessionConfig>,
    pub registry: Registry,
    pub local: Rc<Local>,
    pub input: AggregatedMessageStream,
    pub output: WsOutput,
    pub permit: Option<ConnectionPermit>,
    pub drain: Option<DrainGuard>,
}

/// One WebSocket peer running protocol `P`. See the module docs.
pub struct WsSession<P: Protocol> {
    config: Arc<SessionConfig>,
    engine: Engine<P>,
    input: Option<AggregatedMessageStream>,
    output: WsOutput,
    inbox: Arc<Inbox>,
    /// Cancels reading once the session is closing.
    reading: Option<SpawnHandle>,
    /// When the last message (or pong) arrived.
    last_inbound: Instant,
    /// Pings sent since `last_inbound`: one unanswered for a whole period
    /// ends the session.
    silent_heartbeats: u32,
    rate_limit: Option<Box<TokenBucket>>,
    /// Set once closing: the close frame is queued after what is owed.
    closing: Option<DisconnectReason>,
    /// The first cause of the end; reported once from `stopped()`.
    end: Option<WsEnd>,
    /// The close frame the peer sent, if it closed first.
    peer_close: Option<CloseReason>,
    /// The connection slot, released when the session ends.
    permit: Option<ConnectionPermit>,
    /// Held until the actor is gone, so a shutdown waits for this session.
    _drain: Option<DrainGuard>,
}

impl<P: Protocol> WsSession<P> {
    pub(crate) fn new(parts: WsParts, protocol: P) -> Self {
        let WsParts {
            id,
            peer,
            config,
            registry,
            local,
            input,
            output,
            permit,
            drain,
        } = parts;
        let rate_limit = TokenBucket::for_session(&config);
        let inbox = Arc::new(Inbox::for_session(&config));
        let handle = SessionHandle::new(id, inbox.clone());
        let engine = Engine::new(protocol, handle, peer, config.wire, (registry, local))
            .with_transport(Transport::WebSocket);
        WsSession {
            config,
            engine,
            input: Some(input),
            output,
            inbox,
            reading: None,
            last_inbound: Instant::now(),
            silent_heartbeats: 0,
            rate_limit,
            closing: None,
            end: None,
            peer_close: None,
            permit,
            _drain: drain,
        }
    }

    /// Stops the actor now; the first end is the one reported.
    fn end(&mut self, end: WsEnd, ctx: &mut Context<Self>) {
        if self.end.is_none() {
            self.end = Some(end);
        }
        ctx.stop();
    }

    /// Stops at once for `reason`, without a close frame.
    fn end_abruptly(&mut self, reason: DisconnectReason, ctx: &mut Context<Self>) {
        let reason = self.closing.unwrap_or(reason);
        self.output.abort();
        self.end(
            WsEnd {
                reason,
                code: None,
                description: String::new(),
            },
            ctx,
        );
    }

    /// Whether more is waiting than the outbound bound allows. Tells the
    /// inbox what waits; once a socket buffer's worth does, the peer counts
    /// as not keeping up and senders hold the session to its bound too.
    fn over_bound(&self) -> bool {
        let (frames, bytes) = self.output.pending();
        self.inbox.report_owed(frames, bytes, bytes >= BEHIND_BYTES);
        frames > self.config.outbound_queue || bytes > self.config.outbound_bytes
    }

    /// Acts on what the engine produced: frames to queue, a close to begin,
    /// input to pause or resume.
    fn apply(&mut self, ctx: &mut Context<Self>) {
        if self.end.is_some() {
            return;
        }
        self.engine.run_controls();
        if let Some(reason) = self.engine.closing_reason()
            && let Some(reading) = self.reading.take()
        {
            ctx.cancel_future(reading);
            ctx.run_later(self.config.flush_timeout, move |act, ctx| {
                if act.closing.is_none() {
                    act.end_abruptly(reason, ctx);
                }
            });
        }
        self.move_output();
        if let Some((reason, farewell)) = self.engine.take_close() {
            if let Some(farewell) = farewell.filter(|_| reason.flushes_output()) {
                self.engine.push_out(farewell);
                self.move_output();
            }
            let close = CloseReason {
                code: close_code(reason),
                description: Some(reason.word().to_string()),
            };
            return self.begin_close(reason, close, ctx);
        }
        Gate(self.inbox.clone()).set_paused(self.engine.input_paused());
        if self.closing.is_none() && self.over_bound() {
            self.end_abruptly(DisconnectReason::SlowConsumer, ctx);
        }
    }

    /// Moves what the engine owes the peer into the queue to the body.
    fn move_output(&mut self) {
        let outbound = self.engine.outbound();
        for frame in outbound.drain() {
            self.output.push(Outgoing::Frame(frame));
        }
        let (frames, _) = self.output.pending();
        if frames > 1 {
            self.engine.note_queued_frames(frames);
        }
    }

    /// Queues `close` after everything owed and ends once it is handed to
    /// the connection (or after the flush timeout). Reasons that do not
    /// flush output end at once, without a close frame.
    fn begin_close(
        &mut self,
        reason: DisconnectReason,
        close: CloseReason,
        ctx: &mut Context<Self>,
    ) {
        if self.closing.is_some() || self.end.is_some() {
            return;
        }
        debug!("ws session {} closing: {reason}", self.engine.id());
        self.inbox.close();
        if !reason.flushes_output() {
            return self.end_abruptly(reason, ctx);
        }
        self.closing = Some(reason);
        if let Some(reading) = self.reading.take() {
            ctx.cancel_future(reading);
        }
        // A peer's own close is what the end records, and the answer
        // echoes it (RFC 6455 §5.5.1).
        let close = self.peer_close.take().unwrap_or(close);
        let end = WsEnd {
            reason,
            code: Some(u16::from(close.code)),
            description: close.description.clone().unwrap_or_default(),
        };
        if self.output.is_gone() {
            // The connection is already gone: nothing to flush.
            return self.end(end, ctx);
        }
        let drained = self.output.finish(close);
        let flushed = tokio::time::timeout(self.config.flush_timeout, drained);
        ctx.spawn(flushed.into_actor(self).map(move |flushed, act, ctx| {
            if flushed.is_err() {
                // The peer did not take what it was owed in time.
                act.output.abort();
            }
            // The permit goes before the connection closes, so a peer that
            // sees the close can connect again at once.
            act.permit.take();
            act.end(end, ctx);
        }));
    }

    /// Refuses what the peer sent with close `code`: the session ends as
    /// [`DisconnectReason::BadFrame`] (its room sees `error`).
    fn refuse(&mut self, code: CloseCode, text: &str, ctx: &mut Context<Self>) {
        debug!("ws session {} refused input: {text}", self.engine.id());
        let close = CloseReason {
            code,
            description: Some(text.to_string()),
        };
        self.begin_close(DisconnectReason::BadFrame, close, ctx);
    }

    /// Arms the timer for the next heartbeat or the idle timeout.
    fn schedule_timer(&mut self, ctx: &mut Context<Self>) {
        let next_heartbeat = self.config.heartbeat.and_then(|period| {
            let periods = period.checked_mul(self.silent_heartbeats + 1)?;
            self.last_inbound.checked_add(periods)
        });
        let idle = self
            .config
            .idle_timeout
            .and_then(|idle| self.last_inbound.checked_add(idle));
        let Some(due) = [next_heartbeat, idle].into_iter().flatten().min() else {
            return;
        };
        let delay = due.saturating_duration_since(Instant::now());
        ctx.run_later(delay, |act, ctx| act.on_timer(ctx));
    }

    fn on_timer(&mut self, ctx: &mut Context<Self>) {
        if self.closing.is_some() || self.engine.is_closing() || self.end.is_some() {
            return;
        }
        let now = Instant::now();
        let silent = now.saturating_duration_since(self.last_inbound);
        if self.config.idle_timeout.is_some_and(|idle| silent >= idle) {
            debug!("ws session {} idle for {silent:?}", self.engine.id());
            self.engine.idle();
            return self.apply(ctx);
        }
        if let Some(period) = self.config.heartbeat.filter(|p| !p.is_zero())
            && silent >= period.saturating_mul(self.silent_heartbeats + 1)
        {
            if self.silent_heartbeats > 0 {
                debug!("ws session {}: ping not answered", self.engine.id());
                self.engine.idle();
                return self.apply(ctx);
            }
            self.silent_heartbeats += 1;
            self.output.push(Outgoing::Ping);
        }
        self.schedule_timer(ctx);
    }

    /// One text message from the peer: a frame for the protocol.
    fn text(&mut self, text: Bytes) {
        let within_rate = self
            .rate_limit
            .as_mut()
            .is_none_or(|bucket| bucket.try_take(self.last_inbound));
        if within_rate {
            self.engine.frame(text);
        } else {
            self.engine.rate_limited();
        }
    }
}

impl<P: Protocol> Actor for WsSession<P> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(input) = self.input.take() else {
            return;
        };
        self.reading = Some(ctx.add_stream(Gate(self.inbox.clone()).wrap(input)));
        self.inbox.set_wake(ctx.address().recipient());
        debug!(
            "ws session {} opened for {}",
            self.engine.id(),
            self.engine.peer()
        );
        self.engine.opened();
        self.apply(ctx);
        self.schedule_timer(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let end = self.end.take().unwrap_or(WsEnd {
            reason: DisconnectReason::Error(std::io::ErrorKind::Other),
            code: None,
            description: String::new(),
        });
        debug!(
            "ws session {} ({}) ended: {end}",
            self.engine.id(),
            self.engine.peer()
        );
        if self.closing.is_none() {
            self.output.abort();
        }
        self.inbox.close();
        self.engine.closed(end.reason);
    }
}

impl<P: Protocol> StreamHandler<Result<AggregatedMessage, ProtocolError>> for WsSession<P> {
    fn handle(&mut self, item: Result<AggregatedMessage, ProtocolError>, ctx: &mut Self::Context) {
        if self.closing.is_some() || self.engine.is_closing() || self.end.is_some() {
            return;
        }
        if self.output.is_gone() {
            return self.end_abruptly(DisconnectReason::Reset, ctx);
        }
        let message = match item {
            Ok(message) => message,
            Err(ProtocolError::Overflow) => {
                return self.refuse(CloseCode::Size, "message too big", ctx);
            }
            Err(ProtocolError::Io(error)) => {
                debug!("ws session {} read failed: {error}", self.engine.id());
                return match refusal_of(&error) {
                    Some((code, text)) => self.refuse(code, text, ctx),
                    None => self.end_abruptly(DisconnectReason::Reset, ctx),
                };
            }
            Err(error) => {
                let text = error.to_string();
                return self.refuse(CloseCode::Protocol, &text, ctx);
            }
        };
        self.last_inbound = Instant::now();
        self.silent_heartbeats = 0;
        match message {
            AggregatedMessage::Text(text) => self.text(text.into_bytes()),
            AggregatedMessage::Binary(_) => {
                return self.refuse(
                    CloseCode::Unsupported,
                    "binary messages are not supported",
                    ctx,
                );
            }
            AggregatedMessage::Ping(payload) => self.output.push(Outgoing::Pong(payload)),
            AggregatedMessage::Pong(_) => {}
            AggregatedMessage::Close(reason) => {
                match &reason {
                    Some(reason) => debug!(
                        "ws session {} closed by peer: {:?} {:?}",
                        self.engine.id(),
                        reason.code,
                        reason.description
                    ),
                    None => debug!("ws session {} closed by peer", self.engine.id()),
                }
                self.peer_close = Some(reason.unwrap_or(CloseCode::Normal.into()));
                self.engine.input_closed();
            }
        }
        self.apply(ctx);
    }

    /// End of input without a close frame: the peer's connection is gone.
    fn finished(&mut self, ctx: &mut Self::Context) {
        if self.closing.is_none() && !self.engine.is_closing() {
            self.end_abruptly(DisconnectReason::Reset, ctx);
        }
    }
}

impl<P: Protocol> Handler<TakeInbox> for WsSession<P> {
    type Result = ();

    fn handle(&mut self, _: TakeInbox, ctx: &mut Self::Context) {
        let deliveries = self.inbox.take();
        if self.closing.is_some() || self.end.is_some() {
            return;
        }
        if self.output.is_gone() {
            return self.end_abruptly(DisconnectReason::Reset, ctx);
        }
        self.engine.deliver(deliveries);
        self.apply(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_close_code() {
        let codes = [
            (DisconnectReason::Quit, 1000),
            (DisconnectReason::Closed, 1000),
            (DisconnectReason::Shutdown, 1001),
            (DisconnectReason::IdleTimeout, 1008),
            (DisconnectReason::Kicked, 1008),
            (DisconnectReason::SlowConsumer, 1013),
            (DisconnectReason::BadFrame, 1002),
            (DisconnectReason::Error(std::io::ErrorKind::Other), 1011),
        ];
        for (reason, code) in codes {
            assert_eq!(u16::from(close_code(reason)), code, "{reason}");
        }
    }

    #[test]
    fn the_body_encodes_frames_without_their_newline_and_ends_after_the_close() {
        let output = WsOutput::new(ConnectionCut::default());
        let mut body = output.body();
        output.push(Outgoing::Frame(Bytes::from_static(
            b"{\"event\":\"bye\"}\n",
        )));
        let _drained = output.finish(CloseReason {
            code: CloseCode::Normal,
            description: Some("quit".into()),
        });
        let waker = futures::task::noop_waker();
        let mut cx = TaskContext::from_waker(&waker);
        let Poll::Ready(Some(Ok(chunk))) = Pin::new(&mut body).poll_next(&mut cx) else {
            panic!("a chunk");
        };
        let mut expected = vec![0x81, 15];
        expected.extend_from_slice(b"{\"event\":\"bye\"}");
        expected.extend_from_slice(&[0x88, 6, 0x03, 0xe8]);
        expected.extend_from_slice(b"quit");
        assert_eq!(&chunk[..], &expected[..]);
        assert!(matches!(
            Pin::new(&mut body).poll_next(&mut cx),
            Poll::Ready(None)
        ));
        assert_eq!(output.pending(), (0, 0));
    }
}
