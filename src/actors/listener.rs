//! The Listener actor: accepts TCP connections and starts one [`Session`] per
//! peer, within the connection limits.
//!
//! Accepting never ends on an error: a failed accept is logged and, when it
//! means the process is out of a resource (such as file descriptors), retried
//! after a growing pause instead of spinning.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use bytes::Bytes;
use futures::Stream;
use log::{debug, info, warn};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::session::{Session, SessionEvents, SessionIds};
use crate::config::SessionConfig;
use crate::limiter::ConnectionLimiter;

/// The first pause after an accept error that means resources ran out.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest pause between accept attempts while resources stay exhausted.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long writing the refusal line to a peer over the limit may take.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Stop accepting: the listening socket is closed and no session starts
/// afterwards. Sessions already running are not affected.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopAccepting;

/// Accepts connections on one socket. See the module docs.
pub struct Listener {
    /// Taken by `started()`, which turns it into the accept stream.
    socket: Option<TcpListener>,
    local_addr: Option<SocketAddr>,
    /// What this listener serves, for its `listening on` log line.
    label: String,
    config: Arc<SessionConfig>,
    hub: SessionEvents,
    limiter: Option<ConnectionLimiter>,
    ids: SessionIds,
    /// Written to a peer refused by the limiter before it is closed.
    refusal: Option<Bytes>,
    /// Arbiters that sessions are spread over, round-robin; empty means the
    /// listener's own.
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
}

impl Listener {
    /// A listener on an already bound `socket` whose sessions use `config` and
    /// report to `hub`. By default it admits everyone and numbers sessions
    /// from 1. It logs itself as serving `label`, and its sessions report
    /// `label` as their service in [`Opened`](super::session::Opened).
    pub fn new(
        socket: TcpListener,
        label: impl Into<String>,
        mut config: SessionConfig,
        hub: SessionEvents,
    ) -> Self {
        let label = label.into();
        config.service = Arc::from(label.as_str());
        Listener {
            local_addr: socket.local_addr().ok(),
            socket: Some(socket),
            label,
            config: Arc::new(config),
            hub,
            limiter: None,
            ids: SessionIds::default(),
            refusal: None,
            arbiters: Vec::new(),
            next_arbiter: 0,
        }
    }

    /// Admits peers through `limiter`; a refused peer is sent `refusal` (if
    /// any) and closed, without ever becoming a session.
    pub fn with_limiter(mut self, limiter: ConnectionLimiter, refusal: Option<Bytes>) -> Self {
        self.limiter = Some(limiter);
        self.refusal = refusal;
        self
    }

    /// Starts sessions on these arbiters in turn (each runs on its own
    /// thread), so sessions' socket work uses more than one core. A room's
    /// events stay in one order: the hub sequences them, and each session
    /// writes what it is sent in order.
    pub fn with_arbiters(mut self, arbiters: Vec<ArbiterHandle>) -> Self {
        self.arbiters = arbiters;
        self
    }

    /// Draws session ids from `ids`, shared with other listeners.
    pub fn with_ids(mut self, ids: SessionIds) -> Self {
        self.ids = ids;
        self
    }

    fn refuse(&self, mut stream: TcpStream, peer: SocketAddr) {
        info!("refusing {peer}: connection limit reached");
        let refusal = self.refusal.clone();
        actix::spawn(async move {
            let farewell = async {
                if let Some(refusal) = refusal {
                    stream.write_all(&refusal).await?;
                }
                stream.shutdown().await
            };
            if let Err(error) = tokio::time::timeout(REFUSAL_TIMEOUT, farewell).await {
                debug!("refusal to {peer} not delivered: {error}");
            }
        });
    }
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(socket) = self.socket.take() else {
            return;
        };
        match self.local_addr {
            Some(addr) => info!("listening on {addr} ({})", self.label),
            None => info!("listening ({})", self.label),
        }
        ctx.add_stream(accepted(socket));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        info!("stopped accepting ({})", self.label);
    }
}

impl StreamHandler<(TcpStream, SocketAddr)> for Listener {
    fn handle(&mut self, (stream, peer): (TcpStream, SocketAddr), _: &mut Self::Context) {
        let permit = match &self.limiter {
            Some(limiter) => match limiter.try_acquire(peer.ip()) {
                Some(permit) => Some(permit),
                None => return self.refuse(stream, peer),
            },
            None => None,
        };
        if let Err(error) = stream.set_nodelay(true) {
            debug!("TCP_NODELAY on {peer}: {error}");
        }
        let id = self.ids.next_id();
        let config = self.config.clone();
        let hub = self.hub.clone();
        let Some(arbiter) = self.arbiters.get(self.next_arbiter) else {
            Session::create(move |_| Session::new(id, stream, peer, config, hub, permit));
            return;
        };
        self.next_arbiter = (self.next_arbiter + 1) % self.arbiters.len();
        // A socket belongs to the reactor it was registered with: hand it
        // over unregistered, and register it on the session's own thread.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => return warn!("cannot hand over {peer}: {error}"),
        };
        let started = arbiter.spawn_fn(move || match TcpStream::from_std(stream) {
            Ok(stream) => {
                Session::create(move |_| Session::new(id, stream, peer, config, hub, permit));
            }
            Err(error) => warn!("cannot register {peer}: {error}"),
        });
        if !started {
            warn!("session arbiter is gone; {peer} dropped");
        }
    }
}

impl Handler<StopAccepting> for Listener {
    type Result = ();

    fn handle(&mut self, _: StopAccepting, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// The stream of accepted connections. It never ends and never yields an
/// error: per-connection failures are skipped, resource exhaustion backs off.
fn accepted(socket: TcpListener) -> impl Stream<Item = (TcpStream, SocketAddr)> {
    futures::stream::unfold(
        (socket, ACCEPT_BACKOFF_MIN),
        |(socket, mut backoff)| async move {
            loop {
                match socket.accept().await {
                    Ok(connection) => return Some((connection, (socket, ACCEPT_BACKOFF_MIN))),
                    Err(error) if is_per_connection(&error) => {
                        debug!("accept skipped a connection: {error}");
                    }
                    Err(error) => {
                        warn!("accept failed: {error}; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    }
                }
            }
        },
    )
}

/// Errors that concern one connection that is already gone, not the listener.
fn is_per_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    )
}
