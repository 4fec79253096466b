//! The UdpSessions actor: the router of a [`UdpEndpoint`] serving a
//! protocol. It maps each remote address to a [`UdpPeer`] session, admitting
//! new addresses within the connection limits (over them, the address gets
//! one refusal datagram and no session).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use actix::dev::channel;
use actix::prelude::*;
use bytes::Bytes;
use log::debug;
use tokio::net::UdpSocket;

use super::listener::StopAccepting;
use super::udp::{Datagram, SendDatagram, UdpEndpoint};
use super::udp_peer::{PeerGone, Receive, UdpPeer, UdpPeerParts};
use crate::config::SessionConfig;
use crate::drain::DrainGuard;
use crate::driver::Protocol;
use crate::handle::{SessionId, SessionIds};
use crate::limiter::ConnectionLimiter;
use crate::registry::Registry;

/// Datagrams a peer's mailbox holds before senders wait (actix's default;
/// the router's `do_send` does not wait).
const MAILBOX: usize = 16;

/// Starts a peer session on the thread its id belongs to.
type SpawnPeer = dyn Fn(UdpPeerParts) -> Recipient<Receive>;

/// Routes one UDP socket's datagrams to per-address sessions.
pub struct UdpSessions {
    endpoint: Addr<UdpEndpoint>,
    peers: HashMap<SocketAddr, (SessionId, Recipient<Receive>)>,
    config: Arc<SessionConfig>,
    registry: Registry,
    spawn: Box<SpawnPeer>,
    limiter: ConnectionLimiter,
    ids: SessionIds,
    /// Sent to an address refused by the limiter.
    refusal: Bytes,
    /// `None` once it stopped accepting: new addresses are ignored.
    drain: Option<DrainGuard>,
}

/// What [`UdpSessions::start_on`] needs besides the socket and protocol.
pub(crate) struct UdpService {
    pub config: SessionConfig,
    pub registry: Registry,
    pub limiter: ConnectionLimiter,
    pub ids: SessionIds,
    pub refusal: Bytes,
    pub drain: Option<DrainGuard>,
}

impl UdpSessions {
    /// Starts serving `socket` (its endpoint logs `listening on ADDR (udp)`)
    /// with sessions of the protocol `protocol` makes.
    pub(crate) fn start_on<P, F>(socket: UdpSocket, service: UdpService, protocol: F) -> Addr<Self>
    where
        P: Protocol,
        F: Fn() -> P + Send + Sync + 'static,
    {
        let protocol = Arc::new(protocol);
        let registry = service.registry.clone();
        let spawn = move |parts: UdpPeerParts| {
            let protocol = protocol.clone();
            // The address exists before the peer does: the router can queue
            // the first datagram for it at once.
            let (mailbox, receiver) = channel::channel(MAILBOX);
            let thread = registry.thread_of(parts.id);
            registry.start_session(thread, move |local| {
                let peer = UdpPeer::new(parts, local, protocol());
                Context::with_receiver(receiver).run(peer);
            });
            Addr::<UdpPeer<P>>::new(mailbox).recipient()
        };
        UdpSessions::create(move |ctx| UdpSessions {
            endpoint: UdpEndpoint::new(socket, "udp", ctx.address().recipient()).start(),
            peers: HashMap::new(),
            config: Arc::new(service.config),
            registry: service.registry,
            spawn: Box::new(spawn),
            limiter: service.limiter,
            ids: service.ids,
            refusal: service.refusal,
            drain: service.drain,
        })
    }
}

impl Actor for UdpSessions {
    type Context = Context<Self>;
}

impl Handler<Datagram> for UdpSessions {
    type Result = ();

    fn handle(&mut self, Datagram { from, payload }: Datagram, ctx: &mut Self::Context) {
        if let Some((_, peer)) = self.peers.get(&from) {
            return peer.do_send(Receive(payload));
        }
        let Some(drain) = self.drain.clone() else {
            return;
        };
        let Some(permit) = self.limiter.try_acquire(from.ip()) else {
            debug!("refusing udp peer {from}: connection limit reached");
            return self.endpoint.do_send(SendDatagram {
                to: from,
                payload: self.refusal.clone(),
            });
        };
        let id = self.ids.next_id();
        let peer = (self.spawn)(UdpPeerParts {
            id,
            peer: from,
            config: self.config.clone(),
            registry: self.registry.clone(),
            endpoint: self.endpoint.clone(),
            router: ctx.address().recipient(),
            permit: Some(permit),
            drain: Some(drain),
        });
        // Queued behind the peer's start, so its greeting comes before the
        // answer to this first line.
        peer.do_send(Receive(payload));
        self.peers.insert(from, (id, peer));
    }
}

impl Handler<PeerGone> for UdpSessions {
    type Result = ();

    fn handle(&mut self, PeerGone { peer, session }: PeerGone, _: &mut Self::Context) {
        if self.peers.get(&peer).is_some_and(|(id, _)| *id == session) {
            self.peers.remove(&peer);
        }
    }
}

impl Handler<StopAccepting> for UdpSessions {
    type Result = ();

    fn handle(&mut self, _: StopAccepting, _: &mut Self::Context) {
        self.drain = None;
    }
}
