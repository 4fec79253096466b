//! The UdpPeer actor: one remote address of a UDP service, a session like
//! any TCP peer, running its protocol.
//!
//! Each datagram is one inbound line (a trailing `\n` or `\r\n` optional) and
//! each line owed to the peer leaves as its own datagram. There is no
//! connection to lose, so a peer ends by its protocol closing it, by its idle
//! timeout, or by the server; whichever comes first is reported once, from
//! `stopped()`, and the address is forgotten so its next datagram starts a
//! new session.
//!
//! UDP source addresses can be forged, so until a peer proves its address
//! the server sends it at most [`AMPLIFICATION_LIMIT`] times the bytes it
//! received from it (QUIC's rule, RFC 9000 §8.1). Its first datagram is
//! `TOKEN <token>`; a peer proves its address by sending that line back. What
//! the limit holds back waits, within the outbound bound, for the proof or
//! for more datagrams. The lines of an unproved peer wait too (up to
//! [`MAX_HELD_DATAGRAMS`]): a forged address cannot join, chat or take a
//! nick, and it holds its slot for [`HANDSHAKE_TIMEOUT`] at most.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use log::debug;

use super::session::TokenBucket;
use super::udp::{SendDatagram, UdpEndpoint};
use crate::config::SessionConfig;
use crate::drain::DrainGuard;
use crate::driver::{Engine, Protocol};
use crate::framing::Framing;
use crate::handle::{Inbox, SessionHandle, SessionId, TakeInbox};
use crate::limiter::ConnectionPermit;
use crate::local::Local;
use crate::metrics::Transport;
use crate::reason::DisconnectReason;
use crate::registry::Registry;

/// Datagrams held while the protocol waits for an answer or the peer has not
/// proved its address; past this many a peer's datagrams are dropped, as UDP
/// may drop any datagram.
pub const MAX_HELD_DATAGRAMS: usize = 64;

/// How long an address may take to prove itself before its session ends
/// (as `idle-timeout`): a forged source holds a slot no longer than this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many bytes an address that has not proved itself may be sent per byte
/// received from it: 3, as RFC 9000 §8.1 allows a QUIC server.
pub const AMPLIFICATION_LIMIT: usize = 3;

/// Hex digits of a token: 48 random bits, which an attacker who cannot see
/// the server's datagrams must guess before the session's idle timeout.
/// The token line, `TOKEN ` and 12 digits and `\n`, is 19 bytes: a first
/// datagram of 7 bytes or more earns it.
const TOKEN_DIGITS: usize = 12;

/// What a peer's router passes on.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum Receive {
    /// One datagram from the peer.
    Datagram(Bytes),
    /// The router forwards nothing more to this session: having handled
    /// everything forwarded before, an ending session may stop.
    Retire,
}

/// A peer's session is ending, or has ended: its router forgets the address
/// (if it still maps to this session).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PeerGone {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The session.
    pub session: SessionId,
    /// What became of it.
    pub end: PeerEnd,
}

/// How a [`PeerGone`] session stands.
#[derive(Debug)]
pub enum PeerEnd {
    /// It is ending: forward nothing more to it, then send it
    /// [`Receive::Retire`] here.
    Ending(Recipient<Receive>),
    /// A datagram that reached it after its end began: it starts the
    /// address's next session.
    Unhandled(Bytes),
    /// It has stopped.
    Stopped,
}

/// What a UDP peer is started with besides its protocol.
pub(crate) struct UdpPeerParts {
    pub id: SessionId,
    pub peer: SocketAddr,
    pub config: Arc<SessionConfig>,
    pub registry: Registry,
    pub endpoint: Addr<UdpEndpoint>,
    pub router: Recipient<PeerGone>,
    pub permit: Option<ConnectionPermit>,
    pub drain: Option<DrainGuard>,
}

/// One UDP peer running protocol `P`. See the module docs.
pub struct UdpPeer<P: Protocol> {
    id: SessionId,
    peer: SocketAddr,
    config: Arc<SessionConfig>,
    engine: Engine<P>,
    endpoint: Addr<UdpEndpoint>,
    router: Recipient<PeerGone>,
    inbox: Arc<Inbox>,
    last_inbound: Instant,
    rate_limit: Option<Box<TokenBucket>>,
    /// Datagrams that arrived while the protocol waited for an answer.
    held: VecDeque<Bytes>,
    /// `Some` until the peer has proved its address.
    unverified: Option<Box<Unverified>>,
    /// `TOKEN <token>`: proves the address, and is ignored once it has.
    proof: Bytes,
    stop_reason: Option<DisconnectReason>,
    /// A timer ends the peer should answers owed before its close not come.
    close_armed: bool,
    /// The connection slot, held until the actor is gone.
    _permit: Option<ConnectionPermit>,
    /// Held until the actor is gone, so a shutdown waits for this peer.
    _drain: Option<DrainGuard>,
}

impl<P: Protocol> UdpPeer<P> {
    pub(crate) fn new(parts: UdpPeerParts, local: Rc<Local>, protocol: P) -> Self {
        let UdpPeerParts {
            id,
            peer,
            config,
            registry,
            endpoint,
            router,
            permit,
            drain,
        } = parts;
        let rate_limit = TokenBucket::for_session(&config);
        let inbox = Arc::new(Inbox::for_session(&config));
        let unverified = Box::new(Unverified::new());
        let handle = SessionHandle::new(id, inbox.clone());
        UdpPeer {
            id,
            peer,
            engine: Engine::new(protocol, handle, peer, config.wire, (registry, local))
                .with_transport(Transport::Udp),
            config,
            endpoint,
            router,
            inbox,
            last_inbound: Instant::now(),
            rate_limit,
            held: VecDeque::new(),
            proof: unverified.token.clone(),
            unverified: Some(unverified),
            stop_reason: None,
            close_armed: false,
            _permit: permit,
            _drain: drain,
        }
    }

    /// Ends the session for `reason`. It stops once its router has
    /// forwarded everything it will (datagrams sent after the end began come
    /// back to the router for the address's next session), or after the
    /// flush timeout should the router be gone.
    fn end(&mut self, reason: DisconnectReason, ctx: &mut Context<Self>) {
        if self.stop_reason.is_some() {
            return;
        }
        self.stop_reason = Some(reason);
        self.inbox.close();
        let ending = PeerGone {
            peer: self.peer,
            session: self.id,
            end: PeerEnd::Ending(ctx.address().recipient()),
        };
        if !self.router.connected() {
            return ctx.stop();
        }
        self.router.do_send(ending);
        ctx.run_later(self.config.flush_timeout, |_, ctx| ctx.stop());
    }

    /// Sends what the engine produced, handles held datagrams once the
    /// protocol may read again, and closes when it asked to.
    fn apply(&mut self, ctx: &mut Context<Self>) {
        loop {
            if self.stop_reason.is_some() {
                return;
            }
            self.engine.run_controls();
            let output: Vec<Bytes> = self.engine.outbound().drain().collect();
            for payload in output {
                self.send(payload);
            }
            if self.over_bound() {
                return self.end(DisconnectReason::SlowConsumer, ctx);
            }
            if let Some((reason, farewell)) = self.engine.take_close() {
                // Datagrams leave at once: what is owed, then the farewell.
                self.inbox.close();
                if let Some(payload) = farewell.filter(|_| reason.flushes_output()) {
                    self.send(payload);
                }
                return self.end(reason, ctx);
            }
            if let Some(reason) = self.engine.closing_reason() {
                // The close waits for answers still owed; they get the
                // flush timeout to arrive.
                if !self.close_armed {
                    self.close_armed = true;
                    ctx.run_later(self.config.flush_timeout, move |act, ctx| {
                        act.end(reason, ctx)
                    });
                }
                return;
            }
            if self.engine.input_paused() || self.unverified.is_some() {
                return;
            }
            let Some(datagram) = self.held.pop_front() else {
                return;
            };
            self.receive(datagram);
        }
    }

    /// Sends `payload` to the peer now, or once the amplification limit
    /// allows.
    fn send(&mut self, payload: Bytes) {
        match &mut self.unverified {
            Some(unverified) => {
                unverified.withhold(payload);
                self.release_withheld();
            }
            None => self.transmit(payload),
        }
    }

    fn transmit(&self, payload: Bytes) {
        transmit(&self.endpoint, self.peer, payload);
    }

    /// Sends what the amplification limit now allows of what it held back.
    fn release_withheld(&mut self) {
        let Some(unverified) = &mut self.unverified else {
            return;
        };
        while let Some(payload) = unverified.next_allowed() {
            transmit(&self.endpoint, self.peer, payload);
        }
    }

    /// Whether more is held back than the outbound bound allows: the peer
    /// is a slow consumer (it neither proves its address nor sends enough
    /// to earn what it is owed). Tells the inbox what is owed.
    fn over_bound(&self) -> bool {
        let (frames, bytes) = self
            .unverified
            .as_ref()
            .map_or((0, 0), |unverified| unverified.withheld());
        self.inbox.report_owed(frames, bytes, frames > 0);
        frames > self.config.outbound_queue || bytes > self.config.outbound_bytes
    }

    fn receive(&mut self, datagram: Bytes) {
        let within_rate = self
            .rate_limit
            .as_mut()
            .is_none_or(|bucket| bucket.try_take(self.last_inbound));
        let line = strip_terminator(datagram);
        let too_long = match self.config.framing {
            Framing::Lines { max_line } => line.len() > max_line,
            _ => false,
        };
        if !within_rate {
            self.engine.rate_limited();
        } else if too_long {
            self.engine.oversized();
        } else {
            self.engine.frame(line);
        }
    }

    fn schedule_idle_check(&mut self, ctx: &mut Context<Self>) {
        let Some(idle) = self.config.idle_timeout else {
            return;
        };
        let Some(due) = self.last_inbound.checked_add(idle) else {
            return;
        };
        ctx.run_later(
            due.saturating_duration_since(Instant::now()),
            move |act, ctx| {
                if act.stop_reason.is_some() {
                    return;
                }
                if act.last_inbound.elapsed() < idle {
                    return act.schedule_idle_check(ctx);
                }
                act.engine.idle();
                act.apply(ctx);
            },
        );
    }
}

impl<P: Protocol> Actor for UdpPeer<P> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.inbox.set_wake(ctx.address().recipient());
        if let Some(unverified) = &mut self.unverified {
            // The challenge goes first, so that the least a peer may be
            // sent is what it needs to prove its address.
            let mut line = unverified.token.to_vec();
            line.push(b'\n');
            unverified.withhold(Bytes::from(line));
        }
        self.engine.opened();
        self.apply(ctx);
        self.schedule_idle_check(ctx);
        ctx.run_later(HANDSHAKE_TIMEOUT, |act, ctx| {
            if act.unverified.is_some() {
                debug!(
                    "udp session {} ({}) never proved its address",
                    act.id, act.peer
                );
                act.end(DisconnectReason::IdleTimeout, ctx);
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let reason = self
            .stop_reason
            .unwrap_or(DisconnectReason::Error(std::io::ErrorKind::Other));
        debug!("udp session {} ({}) ended: {reason}", self.id, self.peer);
        self.inbox.close();
        self.engine.closed(reason);
        self.router.do_send(PeerGone {
            peer: self.peer,
            session: self.id,
            end: PeerEnd::Stopped,
        });
    }
}

impl<P: Protocol> Handler<Receive> for UdpPeer<P> {
    type Result = ();

    fn handle(&mut self, receive: Receive, ctx: &mut Self::Context) {
        let datagram = match receive {
            Receive::Datagram(datagram) => datagram,
            Receive::Retire => return ctx.stop(),
        };
        if self.stop_reason.is_some() || self.engine.is_closing() {
            // Sent after this session's end began (a `/quit`, then another
            // line): it belongs to the address's next session.
            return self.router.do_send(PeerGone {
                peer: self.peer,
                session: self.id,
                end: PeerEnd::Unhandled(datagram),
            });
        }
        self.last_inbound = Instant::now();
        let is_proof = strip_terminator(datagram.clone()) == self.proof;
        if let Some(unverified) = &mut self.unverified {
            unverified.received += datagram.len();
            if is_proof {
                debug!("udp session {} ({}) proved its address", self.id, self.peer);
                let withheld = std::mem::take(&mut unverified.withheld);
                self.unverified = None;
                withheld.into_iter().for_each(|payload| self.send(payload));
                return self.apply(ctx);
            }
            self.release_withheld();
        } else if is_proof {
            // A retransmitted proof: UDP may deliver a datagram twice.
            return;
        }
        if self.held.len() < MAX_HELD_DATAGRAMS {
            self.held.push_back(datagram);
        }
        self.apply(ctx);
    }
}

impl<P: Protocol> Handler<TakeInbox> for UdpPeer<P> {
    type Result = ();

    fn handle(&mut self, _: TakeInbox, ctx: &mut Self::Context) {
        let deliveries = self.inbox.take();
        if self.stop_reason.is_none() {
            self.engine.deliver(deliveries);
            self.apply(ctx);
        }
    }
}

/// Hands `payload` to the endpoint, or drops it when the endpoint's mailbox
/// is full: the server sends no faster than its socket, as UDP may drop any
/// datagram, and memory does not grow with what it cannot send.
fn transmit(endpoint: &Addr<UdpEndpoint>, to: SocketAddr, payload: Bytes) {
    if endpoint.try_send(SendDatagram { to, payload }).is_err() {
        debug!("datagram to {to} dropped: the socket is behind");
    }
}

/// What a peer that has not proved its address is owed, and what it has
/// earned (RFC 9000 §8.1).
struct Unverified {
    /// `TOKEN <digits>`: the line that proves the address when echoed.
    token: Bytes,
    /// Bytes received from the address.
    received: usize,
    /// Bytes sent to it.
    sent: usize,
    /// Datagrams held back by the limit, oldest first.
    withheld: VecDeque<Bytes>,
    withheld_bytes: usize,
}

impl Unverified {
    fn new() -> Self {
        // Without the system's randomness the token is only as good as the
        // time: still far from guessable by an attacker who cannot see it.
        let random = getrandom::u64().unwrap_or_else(|_| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            now.as_nanos() as u64
        });
        let digits = TOKEN_DIGITS;
        let token = format!("TOKEN {:0digits$x}", random & ((1 << (4 * digits)) - 1));
        Unverified {
            token: Bytes::from(token),
            received: 0,
            sent: 0,
            withheld: VecDeque::new(),
            withheld_bytes: 0,
        }
    }

    fn withhold(&mut self, payload: Bytes) {
        self.withheld_bytes += payload.len();
        self.withheld.push_back(payload);
    }

    /// The oldest datagram held back, if the limit now allows it.
    fn next_allowed(&mut self) -> Option<Bytes> {
        let next = self.withheld.front()?.len();
        if self.sent + next > AMPLIFICATION_LIMIT * self.received {
            return None;
        }
        self.sent += next;
        self.withheld_bytes -= next;
        self.withheld.pop_front()
    }

    /// Datagrams and bytes held back.
    fn withheld(&self) -> (usize, usize) {
        (self.withheld.len(), self.withheld_bytes)
    }
}

/// The line a datagram holds: one trailing `\n` or `\r\n` is optional and
/// removed; anything else, an embedded `\n` included, is left for the
/// protocol to refuse.
fn strip_terminator(mut datagram: Bytes) -> Bytes {
    if datagram.ends_with(b"\n") {
        datagram.truncate(datagram.len() - 1);
        if datagram.ends_with(b"\r") {
            datagram.truncate(datagram.len() - 1);
        }
    }
    datagram
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unproved_address_is_sent_at_most_three_times_what_it_sent() {
        let mut unverified = Unverified::new();
        assert_eq!(unverified.token.len(), "TOKEN ".len() + TOKEN_DIGITS);
        for line in ["0123456789\n", "abcdefghi\n", "x\n"] {
            unverified.withhold(Bytes::from_static(line.as_bytes()));
        }
        assert_eq!(unverified.next_allowed(), None, "nothing received yet");
        unverified.received = 4; // 12 bytes allowed
        assert_eq!(
            unverified.next_allowed().as_deref(),
            Some(&b"0123456789\n"[..])
        );
        assert_eq!(unverified.next_allowed(), None, "11 + 10 > 12");
        assert_eq!(unverified.withheld(), (2, 12));
        unverified.received = 7; // 21 allowed: the next, in order
        assert_eq!(
            unverified.next_allowed().as_deref(),
            Some(&b"abcdefghi\n"[..])
        );
        assert_eq!(unverified.next_allowed(), None, "21 + 2 > 21");
        assert_eq!(unverified.withheld(), (1, 2));
    }

    #[test]
    fn one_trailing_terminator_is_optional() {
        for (datagram, line) in [
            (&b"hi"[..], &b"hi"[..]),
            (b"hi\n", b"hi"),
            (b"hi\r\n", b"hi"),
            (b"a\nb", b"a\nb"),
            (b"hi\n\n", b"hi\n"),
        ] {
            assert_eq!(strip_terminator(Bytes::copy_from_slice(datagram)), line);
        }
    }
}
