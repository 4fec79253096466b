//! The WsSession actor: one per WebSocket peer of `GET /ws`, a session like
//! any TCP peer, running its protocol (the lobby, on the JSON wire).
//!
//! Each inbound text message is one frame for the protocol; each frame the
//! protocol owes the peer leaves as one text message (its trailing newline
//! removed). The actor runs on the thread of its HTTP connection, which is
//! the thread its id belongs to, so it shares that thread's state with the
//! TCP sessions there.
//!
//! actix-web and actix-ws carry the upgrade and the peer's messages; once
//! the `101` response is on the socket, the session writes its frames
//! straight to the socket, as a TCP session does (`ws_writer`), so a busy
//! room costs each member one write per burst and no trip through the HTTP
//! layer. Output is bounded like a TCP session's: more than the outbound
//! bound waiting for a full socket stops the session as `slow-consumer`.
//! Heartbeats are WebSocket pings: a peer that leaves a ping unanswered for
//! a whole period (no pong, no message) ends as `idle-timeout`. Binary
//! messages, oversized messages and protocol errors are refused with a close
//! code. Whatever ends the session, the first cause is its
//! [`DisconnectReason`], reported once from `stopped()`, with the close frame
//! that was sent or received.

use std::cell::RefCell;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::{CloseCode, CloseReason, ProtocolError};
use actix_ws::{AggregatedMessage, AggregatedMessageStream};
use bytes::Bytes;
use futures::Stream;
use log::debug;

use super::session::{Gate, TokenBucket, stop_reading_when_closing};
use crate::config::SessionConfig;
use crate::drain::DrainGuard;
use crate::driver::{Engine, Protocol};
use crate::handle::{Inbox, SessionHandle, SessionId, TakeInbox};
use crate::http::SharedSocket;
use crate::limiter::ConnectionPermit;
use crate::local::Local;
use crate::metrics::Transport;
use crate::reason::DisconnectReason;
use crate::registry::Registry;
use crate::ws_writer::WsWriter;

/// How long a burst's frames may wait for more to share their write: like
/// Nagle's algorithm for messages. A busy room's events then reach a member
/// in one write and one packet instead of one each, which costs the peer
/// (and the kernel) far less; a lone chat line waits at most this long.
pub const WRITE_COALESCE: Duration = Duration::from_millis(1);

/// Bytes owed that are written at once, without waiting for more.
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

/// How the response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    /// Everything owed, the close frame too, is on the socket: the HTTP
    /// layer ends the connection with a FIN.
    Finished,
    /// The session dropped its peer: the connection is cut.
    Aborted,
}

/// What the session and its response body share (both on one thread).
#[derive(Default)]
struct BodyState {
    /// Set once the session is done with the connection.
    end: Option<BodyEnd>,
    /// The body waits for the end.
    waker: Option<Waker>,
    /// The body is gone: the HTTP layer dropped the connection.
    gone: bool,
}

/// A WebSocket session's side of its connection: the socket it writes its
/// frames to (once the handshake response is out), and the response body
/// that keeps the HTTP layer serving the connection until the session ends
/// it.
#[derive(Clone)]
pub(crate) struct WsOutput {
    socket: SharedSocket,
    body: Rc<RefCell<BodyState>>,
}

impl WsOutput {
    pub(crate) fn new(socket: SharedSocket) -> Self {
        WsOutput {
            socket,
            body: Rc::default(),
        }
    }

    fn is_gone(&self) -> bool {
        self.body.borrow().gone
    }

    fn end_body(&self, end: BodyEnd) {
        let mut body = self.body.borrow_mut();
        if body.end.is_some() {
            return;
        }
        body.end = Some(end);
        if let Some(waker) = body.waker.take() {
            waker.wake();
        }
    }

    /// Everything owed is written: the HTTP layer closes the connection.
    fn finish(&self) {
        self.end_body(BodyEnd::Finished);
    }

    /// Drops the connection without a close frame, even if the peer is not
    /// reading.
    fn abort(&self) {
        self.end_body(BodyEnd::Aborted);
        self.socket.cut();
    }

    /// Aborts unless the connection was already finished or aborted.
    fn abort_unless_ended(&self) {
        if self.body.borrow().end.is_none() {
            self.abort();
        }
    }

    /// The response body that keeps the connection until the session ends.
    pub(crate) fn body(&self) -> WsBody {
        WsBody(self.clone())
    }
}

/// The body of a `101 Switching Protocols` response. It carries no bytes:
/// the session writes its frames to the socket itself. Its first poll tells
/// the socket that the response's head is in the HTTP layer's buffer (so the
/// next flush puts it on the wire); it ends when the session is done.
pub(crate) struct WsBody(WsOutput);

impl Stream for WsBody {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let output = &self.get_mut().0;
        output.socket.handshake_encoded();
        let mut body = output.body.borrow_mut();
        if body.end.is_some() {
            // An aborted connection's input is gone with the session, so the
            // HTTP layer closes the connection once the body ends; a finished
            // one is shut down after the close frame.
            return Poll::Ready(None);
        }
        body.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for WsBody {
    fn drop(&mut self) {
        self.0.body.borrow_mut().gone = true;
    }
}

/// When [`WsSession::apply_then`] writes what is owed.
#[derive(Clone, Copy)]
enum Write {
    /// At once if much is owed, else after [`WRITE_COALESCE`].
    Soon,
    /// At once.
    Now,
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
    /// Control frames, the close frame, and how far the protocol's frames
    /// (in the engine's outbound queue) are written.
    writer: WsWriter,
    /// The socket may be written: the handshake response is out and the
    /// socket was not found full since.
    can_write: bool,
    /// The handshake response is out. Before, what is owed waits for the
    /// HTTP layer, not for the peer, so it is not held against the peer.
    handshake_sent: bool,
    /// A write is scheduled to gather a burst (see [`WRITE_COALESCE`]).
    write_scheduled: bool,
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
    /// How the session ends once the close frame is written.
    closing_end: Option<WsEnd>,
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
            writer: WsWriter::default(),
            can_write: false,
            handshake_sent: false,
            write_scheduled: false,
            inbox,
            reading: None,
            last_inbound: Instant::now(),
            silent_heartbeats: 0,
            rate_limit,
            closing: None,
            closing_end: None,
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

    /// Whether more is waiting for the full socket than the outbound bound
    /// allows (frames or bytes): the peer is a slow consumer. Tells the inbox
    /// what waits, so senders hold the session to its bound too.
    fn over_bound(&mut self) -> bool {
        let (extra_frames, extra_bytes) = self.writer.owed();
        let outbound = self.engine.outbound();
        let frames = outbound.len() + extra_frames;
        let bytes = outbound.bytes() + extra_bytes;
        self.inbox.report_owed(frames, bytes, true);
        self.engine.note_queued_frames(frames);
        frames > self.config.outbound_queue || bytes > self.config.outbound_bytes
    }

    /// Acts on what the engine produced: frames to write (soon), a close to
    /// begin, input to pause or resume.
    fn apply(&mut self, ctx: &mut Context<Self>) {
        self.apply_then(Write::Soon, ctx);
    }

    /// [`apply`](Self::apply), writing at once.
    fn apply_now(&mut self, ctx: &mut Context<Self>) {
        self.apply_then(Write::Now, ctx);
    }

    fn apply_then(&mut self, write: Write, ctx: &mut Context<Self>) {
        if self.end.is_some() {
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
                    act.end_abruptly(reason, ctx);
                }
            },
        );
        if let Some((reason, farewell)) = self.engine.take_close() {
            if let Some(farewell) = farewell.filter(|_| reason.flushes_output()) {
                self.engine.push_out(farewell);
            }
            let close = CloseReason {
                code: close_code(reason),
                description: Some(reason.word().to_string()),
            };
            return self.begin_close(reason, close, ctx);
        }
        Gate(self.inbox.clone()).set_paused(self.engine.input_paused());
        if self.closing.is_some() {
            return;
        }
        if !self.can_write {
            if self.handshake_sent && self.over_bound() {
                // The socket is full and the peer is still not reading.
                self.end_abruptly(DisconnectReason::SlowConsumer, ctx);
            }
            // Otherwise the wait for the socket writes when it ends.
            return;
        }
        match write {
            Write::Soon => self.write_soon(ctx),
            Write::Now => self.flush(ctx),
        }
    }

    /// Writes now if much is owed, or else within [`WRITE_COALESCE`], so
    /// that the rest of a burst shares the write.
    fn write_soon(&mut self, ctx: &mut Context<Self>) {
        let owed = self.engine.outbound().bytes() + self.writer.owed().1;
        if owed >= COALESCE_BYTES || self.writer.has_control() {
            return self.flush(ctx);
        }
        if owed == 0 || self.write_scheduled {
            return;
        }
        self.write_scheduled = true;
        ctx.run_later(WRITE_COALESCE, |act, ctx| {
            act.write_scheduled = false;
            act.take_inbox_and_flush(ctx);
        });
    }

    /// Takes what arrived while the write waited, so it shares the write,
    /// then writes.
    fn take_inbox_and_flush(&mut self, ctx: &mut Context<Self>) {
        if self.closing.is_some() || self.end.is_some() {
            return;
        }
        let deliveries = self.inbox.take();
        if !deliveries.is_empty() {
            self.engine.deliver(deliveries);
            // Whatever else the deliveries asked for (a close, a pause) is
            // acted on as for any delivery; it writes, too.
            return self.apply_now(ctx);
        }
        self.flush(ctx);
    }

    /// Writes what the socket takes now. If it takes everything, a closing
    /// session finishes; if the socket is full, the session waits for it to
    /// drain, unless more than its bound is waiting: a slow consumer.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if !self.can_write || self.end.is_some() {
            return;
        }
        let socket = &self.output.socket;
        let written = self
            .writer
            .write_now(self.engine.outbound(), |bytes| socket.try_write(bytes));
        match written {
            Ok(()) => {
                self.inbox.report_owed(0, 0, false);
                if self.writer.closed(self.engine.outbound()) {
                    self.finish_close(ctx);
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                // `over_bound` notes what waits in the metrics.
                if self.closing.is_none() && self.over_bound() {
                    return self.end_abruptly(DisconnectReason::SlowConsumer, ctx);
                }
                self.wait_until_writable(ctx);
            }
            Err(error) => {
                debug!("ws session {} write failed: {error}", self.engine.id());
                self.end_abruptly(DisconnectReason::from_io_error(&error), ctx);
            }
        }
    }

    /// Writes again once the socket can take more.
    fn wait_until_writable(&mut self, ctx: &mut Context<Self>) {
        self.can_write = false;
        let writable = self.output.socket.writable();
        ctx.spawn(
            writable
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Ok(()) => {
                        act.can_write = true;
                        act.flush(ctx);
                    }
                    Err(error) => act.end_abruptly(DisconnectReason::from_io_error(&error), ctx),
                }),
        );
    }

    /// Writes nothing until the HTTP layer has written the handshake
    /// response, then what is owed by then.
    fn wait_for_handshake(&mut self, ctx: &mut Context<Self>) {
        let sent = self.output.socket.handshake_sent();
        ctx.spawn(sent.into_actor(self).map(|sent, act, ctx| {
            if sent {
                act.handshake_sent = true;
                act.can_write = true;
                act.flush(ctx);
            } else {
                act.end_abruptly(DisconnectReason::Reset, ctx);
            }
        }));
    }

    /// Queues `close` after everything owed and ends once it is written (or
    /// after the flush timeout). Reasons that do not flush output end at
    /// once, without a close frame.
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
        self.closing_end = Some(end.clone());
        self.writer.close(close);
        ctx.run_later(self.config.flush_timeout, move |act, ctx| {
            // The peer did not take what it was owed in time.
            debug!("ws session {} flush timed out", act.engine.id());
            act.output.abort();
            act.permit.take();
            act.end(end, ctx);
        });
        self.flush(ctx);
    }

    /// Everything owed, the close frame too, is written: free the slot, let
    /// the HTTP layer close the connection, stop.
    fn finish_close(&mut self, ctx: &mut Context<Self>) {
        let Some(end) = self.closing_end.take() else {
            return;
        };
        // The permit goes before the connection closes, so a peer that sees
        // the close can connect again at once.
        self.permit.take();
        self.output.finish();
        self.end(end, ctx);
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
            self.writer.ping();
            self.flush(ctx);
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
        self.wait_for_handshake(ctx);
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
        self.output.abort_unless_ended();
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
            AggregatedMessage::Ping(payload) => self.writer.pong(&payload),
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
}
