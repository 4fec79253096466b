//! The HttpListener actor: accepts the connections of `--http-bind` and
//! serves each with actix-web on a thread of the server, the thread its
//! number belongs to, so that a connection upgraded to a WebSocket becomes a
//! session of that thread like any TCP session.
//!
//! Every connection is given the next session id when it is accepted (ids
//! stay unique; a connection that never upgrades leaves a gap). Accepting
//! never ends on an error (see [`Listener`](super::listener::Listener)).
//!
//! Every connection takes a slot of the bounds on plain HTTP connections
//! ([`LobbyConfig::http_connection_limits`](crate::LobbyConfig::http_connection_limits))
//! when it is accepted, and holds it until it ends or becomes a WebSocket
//! session (which the session limits count instead): those limits are taken
//! at the upgrade only, so without this bound a peer could hold any number
//! of connections that never upgrade. When every slot is taken, the oldest
//! plain connection (open for at least a second) is closed to admit the
//! newcomer, so whoever fills the bound first cannot hold it shut. A
//! connection over its address's limit, or arriving when no connection is
//! that old, is answered `503` and closed at once, before it costs a task or
//! a session id.

use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use log::{debug, info, warn};
use tokio::net::{TcpListener, TcpStream};

use super::listener::{StopAccepting, accepted};
use crate::http::{HttpState, PlainConnections, close_connection, serve_connection};
use crate::limiter::{ConnectionLimiter, ConnectionPermit};
use crate::metrics::Refusal;

/// How long the oldest plain HTTP connection must have been open before it
/// is closed to admit a newcomer when every slot is taken: longer than a
/// page load or a scrape takes on a LAN, so a flood of new connections
/// cannot close every legitimate one before its first request.
const MAKE_ROOM_AFTER: Duration = Duration::from_secs(1);

/// What a connection over the bounds on plain HTTP connections is sent
/// before it is closed: a whole response, so a browser or `curl` shows why.
const OVER_THE_BOUNDS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    Connection: close\r\n\
    Retry-After: 1\r\n\
    Content-Type: text/plain\r\n\
    Content-Length: 38\r\n\
    \r\n\
    too many connections, try again later\n";

/// Accepts HTTP connections on one socket. See the module docs.
pub struct HttpListener {
    socket: Option<Arc<TcpListener>>,
    local_addr: Option<SocketAddr>,
    /// What every connection's handlers share.
    state: Arc<HttpState>,
    /// Open plain HTTP connections, per address and in all; a slot is held
    /// by the connection until it ends or becomes a WebSocket session.
    connections: ConnectionLimiter,
    /// Which plain connections are open, oldest first: when every slot is
    /// taken, the oldest is closed to admit a newcomer.
    open: PlainConnections,
}

impl HttpListener {
    /// A listener on an already bound `socket`, serving with `state`,
    /// admitting connections within `connections`.
    pub(crate) fn new(
        socket: TcpListener,
        state: Arc<HttpState>,
        connections: ConnectionLimiter,
    ) -> Self {
        HttpListener {
            local_addr: socket.local_addr().ok(),
            socket: Some(Arc::new(socket)),
            state,
            connections,
            open: PlainConnections::default(),
        }
    }

    /// Every slot is taken: closes the oldest plain connection, if it has
    /// been open for [`MAKE_ROOM_AFTER`], and admits `peer` in its place
    /// (within its address's own limit). Whoever fills the bound first
    /// cannot hold it shut: a stalled or idle connection goes first.
    fn make_room(&self, peer: SocketAddr) -> Option<ConnectionPermit> {
        let permit = self.connections.try_acquire_past_total(peer.ip())?;
        let oldest = self.open.take_oldest(MAKE_ROOM_AFTER)?;
        let registry = &self.state.registry;
        registry.start_session(registry.thread_of(oldest), move |_| {
            close_connection(oldest);
        });
        Some(permit)
    }

    /// Answers a connection over the bounds and closes it, without waiting:
    /// the response fits any fresh socket's send buffer, so one
    /// non-blocking write either sends it whole or the peer is gone.
    fn refuse(&self, stream: TcpStream, peer: SocketAddr) {
        debug!("http connection from {peer} refused: too many open HTTP connections");
        self.state.registry.metrics().refused(Refusal::HttpLimit);
        if let Err(error) = stream.try_write(OVER_THE_BOUNDS) {
            debug!("503 to {peer} not delivered: {error}");
        }
        // A FIN after the response, so the peer reads it before the end.
        if let Ok(stream) = stream.into_std() {
            let _ = stream.shutdown(Shutdown::Write);
        }
    }
}

impl Actor for HttpListener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(socket) = self.socket.clone() else {
            return;
        };
        match self.local_addr {
            Some(addr) => info!("listening on {addr} (http)"),
            None => info!("listening (http)"),
        }
        ctx.add_stream(accepted(socket));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        info!("stopped accepting (http)");
    }
}

impl StreamHandler<(TcpStream, SocketAddr)> for HttpListener {
    fn handle(&mut self, (stream, peer): (TcpStream, SocketAddr), _: &mut Self::Context) {
        let Some(permit) = self
            .connections
            .try_acquire(peer.ip())
            .or_else(|| self.make_room(peer))
        else {
            return self.refuse(stream, peer);
        };
        if let Err(error) = stream.set_nodelay(true) {
            debug!("TCP_NODELAY on {peer}: {error}");
        }
        // A socket belongs to the reactor it was registered with: hand it
        // over unregistered, and register it on the connection's thread.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => return warn!("cannot hand over {peer}: {error}"),
        };
        let id = self.state.ids.next_id();
        let slot = self.open.admit(id, permit);
        let registry = &self.state.registry;
        let state = self.state.clone();
        let start = move |local| match TcpStream::from_std(stream) {
            Ok(stream) => {
                actix_rt::spawn(serve_connection(state, stream, peer, id, local, slot));
            }
            Err(error) => warn!("cannot register {peer}: {error}"),
        };
        if !registry.start_session(registry.thread_of(id), start) {
            warn!("session thread is gone; {peer} dropped");
        }
    }
}

impl Handler<StopAccepting> for HttpListener {
    type Result = ();

    fn handle(&mut self, _: StopAccepting, ctx: &mut Self::Context) {
        self.socket = None;
        ctx.stop();
    }
}
