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
//! of connections that never upgrade. A connection over the bounds is
//! answered `503` and closed at once, before it costs a task or a session
//! id.

use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;

use actix::prelude::*;
use log::{debug, info, warn};
use tokio::net::{TcpListener, TcpStream};

use super::listener::{StopAccepting, accepted};
use crate::http::{HttpState, serve_connection};
use crate::limiter::ConnectionLimiter;
use crate::metrics::Refusal;

/// What a connection over the bounds on plain HTTP connections is sent
/// before it is closed: a whole response, so a browser or `curl` shows why.
const OVER_THE_BOUNDS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    Connection: close\r\n\
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
        }
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
        let Some(slot) = self.connections.try_acquire(peer.ip()) else {
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
