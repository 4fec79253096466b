//! The server: a registry on its threads, listeners feeding it sessions of
//! a protocol (the lobby's, or an application's own), shared connection
//! limits and ids, and a graceful shutdown that reaches every session.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_rt::{Arbiter, ArbiterHandle};
use log::{info, warn};
use tokio::net::{TcpListener, UdpSocket};

use crate::actors::http_listener::HttpListener;
use crate::actors::listener::{Listener, StopAccepting};
use crate::actors::udp_sessions::{UdpService, UdpSessions};
use crate::cluster::{self, ClusterConfig, ClusterError};
use crate::config::{ConfigError, LobbyConfig, SessionConfig};
use crate::drain::Drain;
use crate::driver::Protocol;
use crate::event::Wire;
use crate::handle::SessionIds;
use crate::http::{HttpOptions, HttpState};
use crate::limiter::ConnectionLimiter;
use crate::lobby::{Lobby, LobbyEvent, LobbyShared};
use crate::protocol::{ErrorCode, Reply};
use crate::registry::Registry;

/// A running server: the lobby of SPEC §3 and §5, or any protocol of an
/// application's own, on as many listening sockets as the program binds.
/// All of them share one registry (rooms, names), one connection limit and
/// one sequence of session ids, so text, JSON, UDP and custom sessions meet in
/// the same rooms.
///
/// Start it from inside a running actix `System`; it runs until
/// [`Server::shutdown`] or until the system stops.
pub struct Server {
    registry: Registry,
    listeners: Vec<Addr<Listener>>,
    /// UDP routers: told to stop admitting new addresses at shutdown.
    udp: Vec<Addr<UdpSessions>>,
    /// HTTP listeners and what their connections share: told to refuse
    /// upgrades when the shutdown begins, stopped once it is over.
    http: Vec<(Addr<HttpListener>, Arc<HttpState>)>,
    /// The address of the first socket served.
    local_addr: Option<SocketAddr>,
    config: LobbyConfig,
    /// Shared by every listener: the limits count all sessions together.
    limiter: ConnectionLimiter,
    /// Shared by every HTTP listener: open HTTP connections, upgraded or
    /// not, counted apart from sessions (see
    /// [`LobbyConfig::http_connection_limits`]).
    http_connections: ConnectionLimiter,
    ids: SessionIds,
    lobby: Arc<LobbyShared>,
    /// Resolves once every session (and every listener) is gone.
    drain: Drain,
}

/// The lobby server: a [`Server`] serving the lobby protocol.
pub type LobbyServer = Server;

/// What a peer over the connection limits is told before it is closed.
const SERVER_FULL: Reply<'static> = Reply::Error {
    code: ErrorCode::ServerFull,
    message: "too many connections, try again later",
};

/// The threads of a server: the current one plus `threads - 1` new ones.
fn arbiters(threads: usize) -> Vec<ArbiterHandle> {
    let mut arbiters = vec![Arbiter::current()];
    arbiters.extend((1..threads.max(1)).map(|_| Arbiter::new().handle()));
    arbiters
}

impl Server {
    /// A server with `config`'s limits and threads, serving nothing yet:
    /// add sockets with [`Server::serve_text`], [`Server::serve_json`],
    /// [`Server::serve_udp`] or [`Server::serve`].
    ///
    /// # Panics
    /// When `config` is out of range (see [`Server::try_new`]), or when
    /// called outside a running actix `System`, like any actor start.
    pub fn new(config: LobbyConfig) -> Self {
        match Server::try_new(config) {
            Ok(server) => server,
            Err(error) => panic!("invalid LobbyConfig: {error}"),
        }
    }

    /// Like [`Server::new`], for a configuration not checked yet.
    ///
    /// # Errors
    /// The first value of `config` out of range ([`LobbyConfig::validate`]).
    pub fn try_new(config: LobbyConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let registry = Registry::start(arbiters(config.threads), config.room_capacity);
        Ok(Server::with_registry(config, registry, SessionIds::new()))
    }

    /// A server on `registry`, numbering its sessions with `ids`, serving
    /// nothing yet.
    fn with_registry(config: LobbyConfig, registry: Registry, ids: SessionIds) -> Self {
        Server {
            registry,
            listeners: Vec::new(),
            udp: Vec::new(),
            http: Vec::new(),
            local_addr: None,
            limiter: ConnectionLimiter::new(config.max_connections, config.max_per_ip),
            http_connections: {
                let limits = config.http_connection_limits();
                ConnectionLimiter::new(limits.total, Some(limits.per_ip))
            },
            lobby: Arc::new(LobbyShared::new(ids.clone())),
            ids,
            drain: Drain::new(),
            config,
        }
    }

    /// A server whose rooms, names and room list are shared with the other
    /// nodes of the cluster `cluster` describes (rooms span nodes; see the
    /// README's "Scaling out"). Its session ids come from a range of its own
    /// in the cluster.
    ///
    /// # Errors
    /// [`ClusterError::Config`] when `config` is out of range; the other
    /// [`ClusterError`]s when `cluster` is invalid or Redis cannot be
    /// reached.
    pub async fn clustered(
        config: LobbyConfig,
        cluster: ClusterConfig,
    ) -> Result<Self, ClusterError> {
        config.validate()?;
        let joined = cluster::join(cluster).await?;
        let ids = SessionIds::starting_after(joined.number * cluster::ID_SPAN);
        let arbiters = arbiters(config.threads);
        let registry = Registry::start_clustered(arbiters, config.room_capacity, joined);
        Ok(Server::with_registry(config, registry, ids))
    }

    /// Starts serving the text lobby on `socket`, which the caller bound
    /// (the library never picks an address). Logs
    /// `listening on ADDR (text)`.
    ///
    /// # Errors
    /// Fails if `config` is out of range ([`LobbyConfig::validate`]), or if
    /// the socket's local address cannot be read.
    ///
    /// # Panics
    /// When called outside a running actix `System`, like any actor start.
    pub fn start(socket: TcpListener, config: LobbyConfig) -> io::Result<Self> {
        let mut server = Server::try_new(config).map_err(io::Error::other)?;
        server.serve_text(socket)?;
        Ok(server)
    }

    /// Also serves the text lobby (SPEC §3) on `socket`. Logs
    /// `listening on ADDR (text)` and returns that address.
    ///
    /// # Errors
    /// Fails only if the socket's local address cannot be read.
    pub fn serve_text(&mut self, socket: TcpListener) -> io::Result<SocketAddr> {
        self.serve_lobby(socket, "text", Wire::Text)
    }

    /// Also serves the lobby as newline-delimited JSON (SPEC §5) on `socket`.
    /// Logs `listening on ADDR (json)` and returns that address.
    ///
    /// # Errors
    /// Fails only if the socket's local address cannot be read.
    pub fn serve_json(&mut self, socket: TcpListener) -> io::Result<SocketAddr> {
        self.serve_lobby(socket, "json", Wire::Json)
    }

    fn serve_lobby(
        &mut self,
        socket: TcpListener,
        label: &str,
        wire: Wire,
    ) -> io::Result<SocketAddr> {
        let lobby = self.lobby.clone();
        let config = self.config.session_config(wire);
        self.serve(socket, label, config, move || Lobby::new(lobby.clone()))
    }

    /// Also serves the text lobby over UDP on `socket`: one line per
    /// datagram each way, each remote address a session until its idle
    /// timeout (no heartbeats: there is no connection to keep). Logs
    /// `listening on ADDR (udp)` and returns that address.
    ///
    /// # Errors
    /// Fails only if the socket's local address cannot be read.
    pub fn serve_udp(&mut self, socket: UdpSocket) -> io::Result<SocketAddr> {
        let local_addr = socket.local_addr()?;
        let mut config = self.config.session_config(Wire::Text);
        config.heartbeat = None;
        let service = UdpService {
            config,
            registry: self.registry.clone(),
            limiter: self.limiter.clone(),
            max_sessions: self.config.max_udp_sessions,
            ids: self.ids.clone(),
            refusal: SERVER_FULL.to_line(),
            drain: self.drain.guard(),
        };
        let lobby = self.lobby.clone();
        let router = UdpSessions::start_on(socket, service, move || Lobby::new(lobby.clone()));
        self.udp.push(router);
        self.local_addr.get_or_insert(local_addr);
        Ok(local_addr)
    }

    /// Also serves HTTP on `socket` (see [`crate::http`]): the lobby page at
    /// `/`, the lobby over WebSocket at `/ws` (JSON commands and events,
    /// one per text message, sharing rooms and limits with every other
    /// listener), `/metrics` and `/healthz`. Connections are served on the
    /// server's own threads. Open HTTP connections are bounded per address
    /// and in all ([`LobbyConfig::http_connection_limits`], shared by every
    /// HTTP listener); one over the bounds is answered `503` and closed at
    /// once. Logs `listening on ADDR (http)` and returns that address.
    ///
    /// # Errors
    /// Fails only if the socket's local address cannot be read.
    pub fn serve_http(
        &mut self,
        socket: TcpListener,
        options: HttpOptions,
    ) -> io::Result<SocketAddr> {
        let local_addr = socket.local_addr()?;
        let shared = (
            self.registry.clone(),
            self.limiter.clone(),
            self.http_connections.clone(),
            self.ids.clone(),
            self.lobby.clone(),
        );
        let config = self.config.session_config(Wire::Json);
        let state = Arc::new(HttpState::new(shared, config, options, self.drain.guard()));
        let connections = self.http_connections.clone();
        let listener = HttpListener::new(socket, state.clone(), connections).start();
        self.http.push((listener, state));
        self.local_addr.get_or_insert(local_addr);
        Ok(local_addr)
    }

    /// Serves `socket` with sessions of an application's own protocol, made
    /// by `protocol` for each connection, with `config`'s framing, timers
    /// and wire format. They share this server's registry, limits and ids
    /// with every other listener. Logs `listening on ADDR (label)` and
    /// returns that address.
    ///
    /// # Errors
    /// Fails only if the socket's local address cannot be read.
    pub fn serve<P, F>(
        &mut self,
        socket: TcpListener,
        label: &str,
        config: SessionConfig,
        protocol: F,
    ) -> io::Result<SocketAddr>
    where
        P: Protocol,
        F: Fn() -> P + Send + Sync + 'static,
    {
        let local_addr = socket.local_addr()?;
        let refusal = match config.wire {
            Wire::Json => SERVER_FULL.to_json_line(),
            Wire::Text => SERVER_FULL.to_line(),
        };
        let registry = self.registry.clone();
        let drain = self.drain.guard();
        let listener = Listener::with_drain(socket, label, config, registry, protocol, drain)
            .with_limiter(self.limiter.clone(), Some(refusal))
            .with_ids(self.ids.clone())
            .start();
        self.listeners.push(listener);
        self.local_addr.get_or_insert(local_addr);
        Ok(local_addr)
    }

    /// The address of the first socket served (the real port when port 0 was
    /// bound).
    ///
    /// # Panics
    /// When nothing is served yet.
    pub fn local_addr(&self) -> SocketAddr {
        match self.local_addr {
            Some(addr) => addr,
            None => panic!("Server::local_addr before any socket was served"),
        }
    }

    /// The registry, for programs that talk to it directly.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Delivers every [`LobbyEvent`] of the lobby's sessions to `events`
    /// from now on; a subscriber that stops is dropped.
    ///
    /// Delivery never waits and never grows memory: an event that finds the
    /// subscriber's mailbox full (actix's default capacity is 16 messages;
    /// an actor may raise it with `Context::set_mailbox_capacity`) is dropped
    /// for that subscriber and counted in [`Server::dropped_events`].
    pub fn subscribe(&self, events: Recipient<LobbyEvent>) {
        self.lobby.subscribe(events);
    }

    /// How many [`LobbyEvent`]s subscribers have missed because their
    /// mailbox was full, since the server started.
    pub fn dropped_events(&self) -> u64 {
        self.lobby.dropped_events()
    }

    /// Stops accepting, tells every session to shut down (the lobby:
    /// `SHUTDOWN` after what it is already owed), including sessions still
    /// starting, and waits until every session has ended or `grace` has
    /// passed, whichever is first.
    ///
    /// Returns `true` when every session ended within `grace`. Then the
    /// threads the server started are stopped: a [`Registry`] handle kept
    /// from this server drops what it is asked from then on.
    pub async fn shutdown(mut self, grace: Duration) -> bool {
        for listener in &self.listeners {
            listener.do_send(StopAccepting);
        }
        for router in &self.udp {
            router.do_send(StopAccepting);
        }
        // HTTP keeps answering (`/healthz` says draining) until the end.
        for (_, state) in &self.http {
            state.begin_draining();
        }
        self.registry.shutdown();
        let all_closed = self.drain.wait(grace).await;
        self.registry.leave_cluster(grace).await;
        if all_closed {
            info!("all sessions closed");
        } else {
            warn!("sessions still open after {grace:?}; stopping anyway");
        }
        for (listener, _) in &self.http {
            listener.do_send(StopAccepting);
        }
        // The threads the server started end with it (a program that starts
        // and stops servers does not gather threads).
        self.registry.stop_threads();
        all_closed
    }
}
