//! The lobby server: a registry and a text listener wired together, with a
//! graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use actix_rt::{Arbiter, ArbiterHandle};
use log::{info, warn};
use tokio::net::TcpListener;

use crate::actors::listener::{Listener, StopAccepting};
use crate::actors::registry::{Registry, Shutdown};
use crate::actors::session::SessionEvents;
use crate::config::LobbyConfig;
use crate::limiter::ConnectionLimiter;
use crate::protocol::{ErrorCode, Reply};

/// A running lobby: the text protocol of SPEC §3 on one listening socket.
///
/// Start it from inside a running actix `System`; it runs until
/// [`LobbyServer::shutdown`] or until the system stops.
pub struct LobbyServer {
    registry: Addr<Registry>,
    listener: Addr<Listener>,
    local_addr: SocketAddr,
}

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
        let local_addr = socket.local_addr()?;
        let registry = Registry::new(config.room_capacity).start();
        let limiter = ConnectionLimiter::new(config.max_connections, config.max_per_ip);
        let server_full = Reply::Error {
            code: ErrorCode::ServerFull,
            message: "too many connections, try again later",
        };
        let listener = Listener::new(
            socket,
            "text",
            config.session_config(),
            SessionEvents::to_actor(&registry),
        )
        .with_limiter(limiter, Some(server_full.to_line()))
        .with_arbiters(session_arbiters(config.session_threads))
        .start();
        Ok(LobbyServer {
            registry,
            listener,
            local_addr,
        })
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
        self.listener.do_send(StopAccepting);
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
