//! The UdpSessions actor: the hub of a [`UdpEndpoint`] serving the lobby.
//! It maps each remote address to a [`UdpPeer`] session, admitting new
//! addresses within the connection limits (over them, the address gets one
//! `ERR server-full` datagram and no session).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use log::info;
use tokio::net::UdpSocket;

use super::session::{SessionEvents, SessionId, SessionIds};
use super::udp::{Datagram, SendDatagram, UdpEndpoint};
use super::udp_peer::{PeerGone, Receive, UdpPeer};
use crate::config::SessionConfig;
use crate::limiter::ConnectionLimiter;

/// Routes one UDP socket's datagrams to per-address sessions.
pub struct UdpSessions {
    endpoint: Addr<UdpEndpoint>,
    peers: HashMap<SocketAddr, (SessionId, Addr<UdpPeer>)>,
    config: Arc<SessionConfig>,
    hub: SessionEvents,
    limiter: ConnectionLimiter,
    ids: SessionIds,
    /// Sent to an address refused by the limiter.
    refusal: Bytes,
}

impl UdpSessions {
    /// Starts serving `socket` (its endpoint logs `listening on ADDR (udp)`);
    /// sessions use `config`, report to `hub`, take ids from `ids` and slots
    /// from `limiter`, and a refused address is sent `refusal`.
    pub fn start_on(
        socket: UdpSocket,
        config: SessionConfig,
        hub: SessionEvents,
        limiter: ConnectionLimiter,
        ids: SessionIds,
        refusal: Bytes,
    ) -> Addr<UdpSessions> {
        UdpSessions::create(move |ctx| UdpSessions {
            endpoint: UdpEndpoint::new(socket, "udp", ctx.address().recipient()).start(),
            peers: HashMap::new(),
            config: Arc::new(config),
            hub,
            limiter,
            ids,
            refusal,
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
        let Some(permit) = self.limiter.try_acquire(from.ip()) else {
            info!("refusing udp peer {from}: connection limit reached");
            return self.endpoint.do_send(SendDatagram {
                to: from,
                payload: self.refusal.clone(),
            });
        };
        let id = self.ids.next_id();
        let peer = UdpPeer::new(
            id,
            from,
            self.config.clone(),
            self.hub.clone(),
            self.endpoint.clone(),
            ctx.address().recipient(),
            Some(permit),
        )
        .start();
        // Queued behind the peer's start, so `WELCOME` comes before the
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
