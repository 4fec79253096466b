//! The HttpListener actor: accepts the connections of `--http-bind` and
//! serves each with actix-web on a thread of the server, the thread its
//! number belongs to, so that a connection upgraded to a WebSocket becomes a
//! session of that thread like any TCP session.
//!
//! Every connection is given the next session id when it is accepted (ids
//! stay unique; a connection that never upgrades leaves a gap). Accepting
//! never ends on an error (see [`Listener`](super::listener::Listener)).

use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;
use log::{debug, info, warn};
use tokio::net::{TcpListener, TcpStream};

use super::listener::{StopAccepting, accepted};
use crate::http::{HttpState, serve_connection};

/// Accepts HTTP connections on one socket. See the module docs.
pub struct HttpListener {
    socket: Option<Arc<TcpListener>>,
    local_addr: Option<SocketAddr>,
    /// What every connection's handlers share.
    state: Arc<HttpState>,
}

impl HttpListener {
    /// A listener on an already bound `socket`, serving with `state`.
    pub(crate) fn new(socket: TcpListener, state: Arc<HttpState>) -> Self {
        HttpListener {
            local_addr: socket.local_addr().ok(),
            socket: Some(Arc::new(socket)),
            state,
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
                actix_rt::spawn(serve_connection(state, stream, peer, id, local));
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
