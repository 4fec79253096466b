//! The lobby server: a registry with a text listener (and optionally a JSON
//! one) wired to it, and a graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_rt::{Arbiter, ArbiterHandle};
use log::{info, warn};
use tokio::net::{TcpListener, UdpSocket};

use crate::actors::listener::{Listener, StopAccepting};
use crate::actors::registry::{JSON_SERVICE, Registry, Shutdown, TEXT_SERVICE};
use crate::actors::session::{SessionEvents, SessionIds};
use crate::actors::udp_sessions::UdpSessions;
use crate::config::LobbyConfig;
use crate::limiter::ConnectionLimiter;
use crate::protocol::{ErrorCode, Reply};

/// A running lobby: the text protocol of SPEC §3 on one listening socket,
/// and the JSON protocol of §5 on another if [`LobbyServer::serve_json`] is
/// called. Both share one registry, so text and JSON clients meet in the
/// same rooms, and one connection limit.
///
/// Start it from inside a running actix `System`; it runs until
/// [`LobbyServer::shutdown`] or until the system stops.
pub struct LobbyServer {
    registry: Addr<Registry>,
    listeners: Vec<Addr<Listener>>,
    local_addr: SocketAddr,
    config: LobbyConfig,
    /// Shared by every listener: the limits count text and JSON sessions
    /// together, and ids are unique across both.
    limiter: ConnectionLimiter,
    ids: SessionIds,
    arbiters: Vec<ArbiterHandle>,
    /// Kept so the UDP routers live as long as the server.
    udp: Vec<Addr<UdpSessions>>,
}

/// What a peer over the connection limits is told before it is closed.
const SERVER_FULL: Reply<'static> = Reply::Error {
    code: ErrorCode::ServerFull,
    message: "too many connections, try again later",
};

/// The arbiters sessions run on: the current one plus `threads - 1` new
/// ones. The registry stays on the current arbiter.
fn session_arbiters(threads: usize) -> Vec<ArbiterHandle> {
    let mut arbiters = vec![Arbiter::current()];
    arbiters.extend((1..threads).map(|_| Arbiter::new().handle()));
    arbiters
}

impl LobbyServer {
    /// Starts serving the lobby on `socket`, which the caller bound (the
    /// library never picks an address). Logs `listening on ADDR (text)`.
    ///
    /// # Errors
    /// Fails only if the socket's local address cannot be read.
    ///
    /// # Panics
    /// When called outside a running actix `System`, like any actor start.
    pub fn start(socket: TcpListener, config: LobbyConfig) -> io::Result<Self> {
        let mut server = LobbyServer {
            registry: Registry::new(config.room_capacity).start(),
            listeners: Vec::new(),
            local_addr: socket.local_addr()?,
            limiter: ConnectionLimiter::new(config.max_connections, config.max_per_ip),
            ids: SessionIds::default(),
            arbiters: session_arbiters(config.session_threads),
            udp: Vec::new(),
            config,
        };
        server.listen(socket, TEXT_SERVICE)?;
        Ok(server)
    }

    /// Also serves the lobby as newline-delimited JSON (SPEC §5) on `socket`,
    /// with the same registry, limits and session ids. Logs
    /// `listening on ADDR (json)` and returns that address.
    ///
    /// # Errors
    /// Fails only if the socket's local address cannot be read.
    pub fn serve_json(&mut self, socket: TcpListener) -> io::Result<SocketAddr> {
        self.listen(socket, JSON_SERVICE)
    }

    /// Also serves the text lobby over UDP on `socket`: one line per
    /// datagram each way, each remote address a session in the same registry
    /// until its idle timeout (no heartbeats: there is no connection to
    /// keep). Logs `listening on ADDR (udp)` and returns that address.
    ///
    /// # Errors
    /// Fails only if the socket's local address cannot be read.
    pub fn serve_udp(&mut self, socket: UdpSocket) -> io::Result<SocketAddr> {
        let local_addr = socket.local_addr()?;
        let mut config = self.config.session_config();
        config.heartbeat = None;
        config.service = Arc::from(TEXT_SERVICE);
        let refusal = SERVER_FULL.to_line();
        let router = UdpSessions::start_on(
            socket,
            config,
            SessionEvents::to_actor(&self.registry),
            self.limiter.clone(),
            self.ids.clone(),
            refusal,
        );
        self.udp.push(router);
        Ok(local_addr)
    }

    fn listen(&mut self, socket: TcpListener, service: &str) -> io::Result<SocketAddr> {
        let local_addr = socket.local_addr()?;
        let refusal = match service {
            JSON_SERVICE => SERVER_FULL.to_json_line(),
            _ => SERVER_FULL.to_line(),
        };
        let listener = Listener::new(
            socket,
            service,
            self.config.session_config(),
            SessionEvents::to_actor(&self.registry),
        )
        .with_limiter(self.limiter.clone(), Some(refusal))
        .with_ids(self.ids.clone())
        .with_arbiters(self.arbiters.clone())
        .start();
        self.listeners.push(listener);
        Ok(local_addr)
    }

    /// The address the lobby listens on (the real port when port 0 was bound).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The registry actor, for programs that want to talk to it directly.
    pub fn registry(&self) -> &Addr<Registry> {
        &self.registry
    }

    /// Stops accepting, sends every session `SHUTDOWN` after what it is
    /// already owed, and waits until every session has ended or `grace` has
    /// passed, whichever is first.
    ///
    /// Returns `true` when every session ended within `grace`.
    pub async fn shutdown(self, grace: Duration) -> bool {
        for listener in &self.listeners {
            listener.do_send(StopAccepting);
        }
        match tokio::time::timeout(grace, self.registry.send(Shutdown)).await {
            Ok(Ok(())) => {
                info!("all sessions closed");
                true
            }
            Ok(Err(_)) => true,
            Err(_) => {
                warn!("sessions still open after {grace:?}; stopping anyway");
                false
            }
        }
    }
}
