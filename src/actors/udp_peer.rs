//! The UdpPeer actor: one remote address of a UDP service, a session like
//! any TCP peer, running its protocol.
//!
//! Each datagram is one inbound line (a trailing `\n` or `\r\n` optional) and
//! each line owed to the peer leaves as its own datagram. There is no
//! connection to lose, so a peer ends by its protocol closing it, by its idle
//! timeout, or by the server; whichever comes first is reported once, from
//! `stopped()`, and the address is forgotten so its next datagram starts a
//! new session.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

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

/// Datagrams held while the protocol waits for an answer; past this many a
/// peer's datagrams are dropped, as UDP may drop any datagram.
const MAX_HELD_DATAGRAMS: usize = 64;

/// One datagram from the peer, passed on by its router.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Receive(pub Bytes);

/// A peer has ended; its router forgets the address (if it still maps to
/// this session).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PeerGone {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The session that ended.
    pub session: SessionId,
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
        let rate_limit = config
            .max_frames_per_sec
            .map(|rate| Box::new(TokenBucket::new(rate.get())));
        let inbox = Arc::new(Inbox::default());
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
            stop_reason: None,
            close_armed: false,
            _permit: permit,
            _drain: drain,
        }
    }

    fn end(&mut self, reason: DisconnectReason, ctx: &mut Context<Self>) {
        self.stop_reason.get_or_insert(reason);
        ctx.stop();
    }

    /// Sends what the engine produced, handles held datagrams once the
    /// protocol may read again, and closes when it asked to.
    fn apply(&mut self, ctx: &mut Context<Self>) {
        loop {
            if self.stop_reason.is_some() {
                return;
            }
            self.engine.run_controls();
            for payload in self.engine.outbound().drain() {
                self.endpoint.do_send(SendDatagram {
                    to: self.peer,
                    payload,
                });
            }
            if let Some((reason, farewell)) = self.engine.take_close() {
                // Datagrams leave at once: what is owed, then the farewell.
                self.inbox.close();
                if let Some(payload) = farewell.filter(|_| reason.flushes_output()) {
                    self.endpoint.do_send(SendDatagram {
                        to: self.peer,
                        payload,
                    });
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
            if self.engine.input_paused() {
                return;
            }
            let Some(datagram) = self.held.pop_front() else {
                return;
            };
            self.receive(datagram);
        }
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
        self.engine.opened();
        self.apply(ctx);
        self.schedule_idle_check(ctx);
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
        });
    }
}

impl<P: Protocol> Handler<Receive> for UdpPeer<P> {
    type Result = ();

    fn handle(&mut self, Receive(datagram): Receive, ctx: &mut Self::Context) {
        if self.stop_reason.is_some() || self.engine.is_closing() {
            return;
        }
        self.last_inbound = Instant::now();
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
