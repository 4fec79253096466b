//! The UdpSessions actor: the router of a [`UdpEndpoint`] serving a
//! protocol. It maps each remote address to a [`UdpPeer`] session, admitting
//! new addresses within the connection limits and its own cap on UDP
//! sessions, so forged source addresses cannot take every TCP slot.
//!
//! An address over the limits gets no session, and a refusal datagram only
//! within the amplification limit (at most 3× the bytes of the datagram that
//! asked, RFC 9000 §8.1) and within [`REFUSALS_PER_SEC`] over all addresses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::channel;
use actix::prelude::*;
use bytes::Bytes;
use log::{debug, info};
use tokio::net::UdpSocket;

use super::listener::StopAccepting;
use super::session::TokenBucket;
use super::udp::{Datagram, SendDatagram, UdpEndpoint};
use super::udp_peer::{AMPLIFICATION_LIMIT, PeerEnd, PeerGone, Receive, UdpPeer, UdpPeerParts};
use crate::config::SessionConfig;
use crate::drain::DrainGuard;
use crate::driver::Protocol;
use crate::handle::{SessionId, SessionIds};
use crate::limiter::ConnectionLimiter;
use crate::registry::Registry;

/// Datagrams a peer's mailbox holds before senders wait (actix's default;
/// the router's `do_send` does not wait).
const MAILBOX: usize = 16;

/// Refusal datagrams sent per second at most, over every address: beyond
/// them refused addresses get silence.
pub const REFUSALS_PER_SEC: u32 = 100;

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
    /// UDP sessions at most, whatever the connection limits leave.
    max_sessions: usize,
    ids: SessionIds,
    /// Sent to an address refused by the limits.
    refusal: Bytes,
    refusals: TokenBucket,
    /// Datagrams refused since the last summary line.
    refused: u64,
    /// `None` once it stopped accepting: new addresses are ignored.
    drain: Option<DrainGuard>,
}

/// What [`UdpSessions::start_on`] needs besides the socket and protocol.
pub(crate) struct UdpService {
    pub config: SessionConfig,
    pub registry: Registry,
    pub limiter: ConnectionLimiter,
    pub max_sessions: usize,
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
            max_sessions: service.max_sessions,
            ids: service.ids,
            refusal: service.refusal,
            refusals: TokenBucket::new(REFUSALS_PER_SEC),
            refused: 0,
            drain: service.drain,
        })
    }
}

impl UdpSessions {
    /// Answers a datagram from `to` that gets no session: with the refusal
    /// if that amplifies no more than a proved address may be, and the rate
    /// allows.
    fn refuse(&mut self, to: SocketAddr, received: usize) {
        self.refused += 1;
        let within_amplification = AMPLIFICATION_LIMIT * received >= self.refusal.len();
        if within_amplification && self.refusals.try_take(Instant::now()) {
            let refusal = SendDatagram {
                to,
                payload: self.refusal.clone(),
            };
            // A full endpoint drops refusals first.
            let _ = self.endpoint.try_send(refusal);
        }
    }
}

impl Actor for UdpSessions {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // One line per second at most: a flood of refusals must not flood
        // the log.
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            if act.refused > 0 {
                info!("refused {} udp datagrams: limit reached", act.refused);
                act.refused = 0;
            }
        });
    }
}

impl Handler<Datagram> for UdpSessions {
    type Result = ();

    fn handle(&mut self, Datagram { from, payload }: Datagram, ctx: &mut Self::Context) {
        if let Some((_, peer)) = self.peers.get(&from) {
            return peer.do_send(Receive::Datagram(payload));
        }
        let Some(drain) = self.drain.clone() else {
            return;
        };
        if self.peers.len() >= self.max_sessions {
            debug!("refusing udp peer {from}: udp session limit reached");
            return self.refuse(from, payload.len());
        }
        let Some(permit) = self.limiter.try_acquire(from.ip()) else {
            debug!("refusing udp peer {from}: connection limit reached");
            return self.refuse(from, payload.len());
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
        peer.do_send(Receive::Datagram(payload));
        self.peers.insert(from, (id, peer));
    }
}

impl Handler<PeerGone> for UdpSessions {
    type Result = ();

    fn handle(&mut self, gone: PeerGone, ctx: &mut Self::Context) {
        let PeerGone { peer, session, end } = gone;
        if self.peers.get(&peer).is_some_and(|(id, _)| *id == session) {
            self.peers.remove(&peer);
        }
        match end {
            // Behind every datagram already forwarded to it.
            PeerEnd::Ending(session) => session.do_send(Receive::Retire),
            PeerEnd::Unhandled(payload) => self.handle(
                Datagram {
                    from: peer,
                    payload,
                },
                ctx,
            ),
            PeerEnd::Stopped => {}
        }
    }
}

impl Handler<StopAccepting> for UdpSessions {
    type Result = ();

    fn handle(&mut self, _: StopAccepting, _: &mut Self::Context) {
        self.drain = None;
    }
}
