//! The Listener actor: accepts TCP connections and starts one [`Session`] per
//! peer, running the listener's protocol, within the connection limits.
//! Session `id` starts on thread `id % threads`, so sessions are spread over
//! every thread and the registry finds each by its id.
//!
//! Accepting never ends on an error: a failed accept is logged and, when it
//! means the process is out of a resource (such as file descriptors), retried
//! after a growing pause instead of spinning.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use futures::Stream;
use log::{debug, info, warn};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::session::Session;
use crate::config::SessionConfig;
use crate::drain::DrainGuard;
use crate::driver::Protocol;
use crate::handle::{SessionId, SessionIds};
use crate::limiter::{ConnectionLimiter, ConnectionPermit};
use crate::metrics::{Metrics, Refusal};
use crate::registry::Registry;

/// The first pause after an accept error that means resources ran out.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest pause between accept attempts while resources stay exhausted.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// The most connections taken from the backlog when accepting stops (the
/// kernel's default `somaxconn` is 4096).
const BACKLOG_DRAIN_MAX: usize = 4096;
/// How long stopping waits for one more connection from the backlog.
const BACKLOG_DRAIN_WAIT: Duration = Duration::from_millis(10);
/// How long writing the refusal line to a peer over the limit may take.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Stop accepting: the listening socket is closed and no session starts
/// afterwards. Sessions already running are not affected.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopAccepting;

/// Starts one session for an accepted connection, on the thread its id
/// belongs to.
type Spawn = dyn Fn(TcpStream, SocketAddr, SessionId, Option<ConnectionPermit>) + Send + Sync;

/// Accepts connections on one socket. See the module docs.
pub struct Listener {
    /// Shared with the accept stream, so that stopping can take the
    /// connections still waiting in the kernel's backlog.
    socket: Option<Arc<TcpListener>>,
    local_addr: Option<SocketAddr>,
    /// What this listener serves, for its `listening on` log line.
    label: String,
    /// Starts a session of this listener's protocol.
    spawn: Arc<Spawn>,
    /// Admits peers; `None` admits everyone.
    limiter: Option<ConnectionLimiter>,
    /// Numbers sessions; shared with the server's other listeners so ids
    /// never collide.
    ids: SessionIds,
    /// Written to a peer refused by the limiter before it is closed.
    refusal: Option<Bytes>,
    /// Peers refused since the last summary line.
    refused: u64,
    /// The registry's counters: refusals are counted there too.
    metrics: Arc<Metrics>,
}

impl Listener {
    /// A listener on an already bound `socket` whose sessions use `config`,
    /// belong to `registry` and each run a protocol made by `protocol`. By
    /// default it admits everyone and numbers sessions from 1. It logs
    /// itself as serving `label`.
    pub fn new<P, F>(
        socket: TcpListener,
        label: impl Into<String>,
        config: SessionConfig,
        registry: Registry,
        protocol: F,
    ) -> Self
    where
        P: Protocol,
        F: Fn() -> P + Send + Sync + 'static,
    {
        Self::with_drain(socket, label, config, registry, protocol, None)
    }

    pub(crate) fn with_drain<P, F>(
        socket: TcpListener,
        label: impl Into<String>,
        config: SessionConfig,
        registry: Registry,
        protocol: F,
        drain: Option<DrainGuard>,
    ) -> Self
    where
        P: Protocol,
        F: Fn() -> P + Send + Sync + 'static,
    {
        let config = Arc::new(config);
        let protocol = Arc::new(protocol);
        let metrics = registry.metrics().clone();
        let spawn = move |stream: TcpStream, peer, id, permit| {
            // A socket belongs to the reactor it was registered with: hand it
            // over unregistered, and register it on the session's own thread.
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(error) => return warn!("cannot hand over {peer}: {error}"),
            };
            let (config, protocol, drain) = (config.clone(), protocol.clone(), drain.clone());
            let session_registry = registry.clone();
            let start = move |local| match TcpStream::from_std(stream) {
                Ok(stream) => {
                    let parts = (session_registry, local, protocol());
                    Session::create(move |_| {
                        Session::new(id, stream, peer, config, parts, permit, drain)
                    });
                }
                Err(error) => warn!("cannot register {peer}: {error}"),
            };
            if !registry.start_session(registry.thread_of(id), start) {
                warn!("session thread is gone; {peer} dropped");
            }
        };
        Listener {
            local_addr: socket.local_addr().ok(),
            socket: Some(Arc::new(socket)),
            label: label.into(),
            spawn: Arc::new(spawn),
            limiter: None,
            ids: SessionIds::default(),
            refusal: None,
            refused: 0,
            metrics,
        }
    }

    /// Admits peers through `limiter`; a refused peer is sent `refusal` (if
    /// any) and closed, without ever becoming a session.
    pub fn with_limiter(mut self, limiter: ConnectionLimiter, refusal: Option<Bytes>) -> Self {
        self.limiter = Some(limiter);
        self.refusal = refusal;
        self
    }

    /// Draws session ids from `ids`, shared with other listeners.
    pub fn with_ids(mut self, ids: SessionIds) -> Self {
        self.ids = ids;
        self
    }

    fn refuse(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        debug!("refusing {peer}: connection limit reached");
        self.refused += 1;
        self.metrics.refused(Refusal::Limit);
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
        let Some(socket) = self.socket.clone() else {
            return;
        };
        match self.local_addr {
            Some(addr) => info!("listening on {addr} ({})", self.label),
            None => info!("listening ({})", self.label),
        }
        ctx.add_stream(accepted(socket));
        // One line per second at most for refusals: a flood of them must not
        // flood the log.
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            if act.refused > 0 {
                info!(
                    "refused {} connections ({}): limit reached",
                    act.refused, act.label
                );
                act.refused = 0;
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        info!("stopped accepting ({})", self.label);
    }
}

impl StreamHandler<(TcpStream, SocketAddr)> for Listener {
    fn handle(&mut self, (stream, peer): (TcpStream, SocketAddr), _: &mut Self::Context) {
        self.admit(stream, peer);
    }
}

impl Listener {
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
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
        (self.spawn)(stream, peer, self.ids.next_id(), permit);
    }
}

impl Handler<StopAccepting> for Listener {
    type Result = ();

    fn handle(&mut self, _: StopAccepting, ctx: &mut Self::Context) {
        let Some(socket) = self.socket.take() else {
            return ctx.stop();
        };
        // Peers whose connection the kernel already completed would be reset
        // when the socket closes: they become sessions (and are told the
        // server is stopping) instead. Bounded by the backlog's length, and
        // over once no connection is waiting for a moment.
        let backlog = async move {
            let mut waiting = Vec::new();
            while waiting.len() < BACKLOG_DRAIN_MAX {
                match tokio::time::timeout(BACKLOG_DRAIN_WAIT, socket.accept()).await {
                    Ok(Ok(connection)) => waiting.push(connection),
                    Ok(Err(_)) | Err(_) => break,
                }
            }
            waiting
        };
        ctx.wait(backlog.into_actor(self).map(|waiting, act, ctx| {
            for (stream, peer) in waiting {
                act.admit(stream, peer);
            }
            ctx.stop();
        }));
    }
}

/// The stream of accepted connections. It never ends and never yields an
/// error: per-connection failures are skipped, resource exhaustion backs off.
pub(crate) fn accepted(socket: Arc<TcpListener>) -> impl Stream<Item = (TcpStream, SocketAddr)> {
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
