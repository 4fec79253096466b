//! The UdpPeer actor: one remote address of a UDP lobby, a session in the
//! registry like any TCP peer.
//!
//! Each datagram is one inbound line (a trailing `\n` or `\r\n` optional) and
//! each line owed to the peer leaves as its own datagram. There is no
//! connection to lose, so a peer ends by `/quit`, by its idle timeout, or by
//! the hub closing it; whichever comes first is reported once, from
//! `stopped()`, and the address is forgotten so its next datagram starts a
//! new session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use log::{debug, info};

use super::session::{
    Close, Inbox, Opened, SessionActor, SessionEvent, SessionEvents, SessionHandle, SessionId,
    TakeInbox, TokenBucket,
};
use super::udp::{SendDatagram, UdpEndpoint};
use crate::config::SessionConfig;
use crate::framing::Framing;
use crate::limiter::ConnectionPermit;
use crate::reason::DisconnectReason;

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

/// One UDP peer. See the module docs.
pub struct UdpPeer {
    id: SessionId,
    peer: SocketAddr,
    config: Arc<SessionConfig>,
    hub: SessionEvents,
    endpoint: Addr<UdpEndpoint>,
    router: Recipient<PeerGone>,
    inbox: Arc<Inbox>,
    last_inbound: Instant,
    rate_limit: Option<Box<TokenBucket>>,
    stop_reason: Option<DisconnectReason>,
    /// The connection slot, held until the actor is gone.
    _permit: Option<ConnectionPermit>,
}

impl UdpPeer {
    /// A session for `peer`, answering through `endpoint` and reporting to
    /// `hub`; `router` is told when it ends.
    pub fn new(
        id: SessionId,
        peer: SocketAddr,
        config: Arc<SessionConfig>,
        hub: SessionEvents,
        endpoint: Addr<UdpEndpoint>,
        router: Recipient<PeerGone>,
        permit: Option<ConnectionPermit>,
    ) -> Self {
        let rate_limit = config
            .max_frames_per_sec
            .map(|rate| Box::new(TokenBucket::new(rate.get())));
        UdpPeer {
            id,
            peer,
            config,
            hub,
            endpoint,
            router,
            inbox: Arc::default(),
            last_inbound: Instant::now(),
            rate_limit,
            stop_reason: None,
            _permit: permit,
        }
    }

    fn send_owed(&self) {
        for frame in self.inbox.take() {
            self.endpoint.do_send(SendDatagram {
                to: self.peer,
                payload: frame,
            });
        }
    }

    fn end(&mut self, reason: DisconnectReason, ctx: &mut Context<Self>) {
        self.stop_reason.get_or_insert(reason);
        ctx.stop();
    }

    fn schedule_idle_check(&mut self, ctx: &mut Context<Self>) {
        let Some(idle) = self.config.idle_timeout else {
            return;
        };
        let due = (self.last_inbound + idle).saturating_duration_since(Instant::now());
        ctx.run_later(due, move |act, ctx| {
            if act.stop_reason.is_some() {
                return;
            }
            if act.last_inbound.elapsed() < idle {
                return act.schedule_idle_check(ctx);
            }
            act.hub.activity(act.id, SessionEvent::IdleTimeout);
            // Should the hub not close it, the timeout still ends the peer.
            ctx.run_later(act.config.flush_timeout, |act, ctx| {
                act.end(DisconnectReason::IdleTimeout, ctx);
            });
        });
    }
}

impl Actor for UdpPeer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let handle = SessionHandle::new(
            self.id,
            SessionActor::Udp(ctx.address()),
            self.inbox.clone(),
        );
        self.hub.opened(Opened {
            session: handle,
            peer: self.peer,
            service: self.config.service.clone(),
        });
        self.schedule_idle_check(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let reason = self.stop_reason.unwrap_or(DisconnectReason::Shutdown);
        info!("udp session {} ({}) ended: {reason}", self.id, self.peer);
        self.hub.closed(self.id, reason);
        self.router.do_send(PeerGone {
            peer: self.peer,
            session: self.id,
        });
    }
}

impl Handler<Receive> for UdpPeer {
    type Result = ();

    fn handle(&mut self, Receive(datagram): Receive, _: &mut Self::Context) {
        if self.stop_reason.is_some() {
            return;
        }
        self.last_inbound = Instant::now();
        let within_rate = self
            .rate_limit
            .as_mut()
            .is_none_or(|bucket| bucket.try_take(self.last_inbound));
        let line = strip_terminator(datagram);
        let too_long = match self.config.framing {
            Framing::Lines { max_line } => line.len() > max_line,
            _ => false,
        };
        let event = if !within_rate {
            SessionEvent::RateLimited
        } else if too_long {
            SessionEvent::Oversized
        } else {
            SessionEvent::Frame(line)
        };
        self.hub.activity(self.id, event);
    }
}

impl Handler<TakeInbox> for UdpPeer {
    type Result = ();

    fn handle(&mut self, _: TakeInbox, _: &mut Self::Context) {
        if self.stop_reason.is_none() {
            self.send_owed();
        }
    }
}

impl Handler<Close> for UdpPeer {
    type Result = ();

    fn handle(&mut self, Close { reason, farewell }: Close, ctx: &mut Self::Context) {
        if self.stop_reason.is_some() {
            return;
        }
        debug!("udp session {} closing: {reason}", self.id);
        // Datagrams leave at once: what is owed, then the farewell, then done.
        self.send_owed();
        if let Some(farewell) = farewell.filter(|_| reason.flushes_output()) {
            self.endpoint.do_send(SendDatagram {
                to: self.peer,
                payload: farewell,
            });
        }
        self.end(reason, ctx);
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
