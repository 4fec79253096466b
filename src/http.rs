//! The HTTP surface of `--http-bind`, served with actix-web on the server's
//! own threads:
//!
//! - `GET /` — the lobby page: one HTML file with its script and style,
//!   embedded in the binary.
//! - `GET /ws` — the lobby over WebSocket: each text message one JSON
//!   command (SPEC §5), each event one text message. The connection slot is
//!   taken before the upgrade (over the limits: `503`), the `Origin` is
//!   checked (`403`), and during a shutdown upgrades are refused (`503`).
//!   Only `/ws` checks the `Origin` (and so, by default, that the `Host` is
//!   no DNS name): it is the one route that acts as a player and shows
//!   rooms, nicks and what players say. The others change nothing and hold
//!   no name or text (`/` is the public page, `/metrics` counters with
//!   bounded labels, `/healthz` one word), and checking their `Host` would
//!   refuse the scrapers and load balancers that reach the server by name.
//! - `GET /metrics` — the [`Metrics`](crate::Metrics) in the Prometheus text
//!   format.
//! - `GET /healthz` — `200 ok` while accepting, `503 draining` once a
//!   shutdown began.
//!
//! Open plain connections (not yet, or never, a WebSocket session) are
//! bounded per address and in all from the moment they are accepted (see
//! [`HttpListener`](crate::actors::http_listener::HttpListener)); an idle
//! one is closed after `KEEP_ALIVE`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use actix_http::{Extensions, HttpService};
use actix_service::{Service, ServiceFactory, map_config};
use actix_web::body::BodyStream;
use actix_web::dev::AppConfig;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{App, FromRequest, HttpRequest, HttpResponse, web};
use bytes::Bytes;
use log::debug;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::actors::ws_session::{WsOutput, WsParts, WsSession};
use crate::config::SessionConfig;
use crate::drain::DrainGuard;
use crate::handle::{SessionId, SessionIds};
use crate::limiter::{ConnectionLimiter, ConnectionPermit};
use crate::lobby::{Lobby, LobbyShared};
use crate::local::Local;
use crate::metrics::{Refusal, Snapshot};
use crate::registry::Registry;
use crate::ws_frame_guard::FrameGuard;

/// The lobby page, served at `GET /` with [`MAX_LINE_MARK`] filled in.
pub const LOBBY_PAGE: &str = include_str!("lobby.html");

/// Where [`LOBBY_PAGE`] learns the longest message the server takes: the
/// attribute of its `<body>`, filled in with `--max-line` when served, so
/// the page refuses a longer line itself instead of having the server close
/// its connection (and losing what the user typed).
pub const MAX_LINE_MARK: &str = "data-max-line=\"\"";

/// How long a client may take to send a request's head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection may stay open idle between two requests. Stated
/// here rather than left to actix-http's default (also 5 s) because it
/// bounds how long an idle keep-alive connection holds its slot among
/// plain HTTP connections. Short, because the lobby page makes one request before its
/// WebSocket and Prometheus scrapes every 15 s or so: a new connection then
/// costs less than holding every idle one.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Options of the HTTP surface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpOptions {
    /// Origins (`scheme://host[:port]`) whose pages may open `/ws`; `*`
    /// allows any. Empty: only pages served by this same host (the `Origin`
    /// names the `Host` the request was sent to), and only when that host
    /// is an IP address (IPv6 in brackets) or `localhost`: a DNS name may
    /// be an attacker's, resolved to this server (DNS rebinding), so a page
    /// served under a name needs that name listed. A request without an
    /// `Origin` (not from a browser) is always allowed.
    pub allowed_origins: Vec<String>,
}

/// An `--allowed-origin` that is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be `*` or scheme://host[:port] with scheme http or https, not {0:?}")]
pub struct OriginError(pub String);

impl HttpOptions {
    /// Checks every allowed origin: `*`, or `http://` or `https://`
    /// followed by a host (and port), with no path.
    ///
    /// # Errors
    /// The first origin that is neither.
    pub fn validate(&self) -> Result<(), OriginError> {
        for origin in &self.allowed_origins {
            let rest = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            let valid = origin == "*"
                || rest.is_some_and(|host| {
                    let host = host.strip_suffix('/').unwrap_or(host);
                    !host.is_empty()
                        && host
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c))
                });
            if !valid {
                return Err(OriginError(origin.clone()));
            }
        }
        Ok(())
    }
}

/// What every HTTP connection's handlers share.
pub(crate) struct HttpState {
    pub registry: Registry,
    pub limiter: ConnectionLimiter,
    /// The bound on plain HTTP connections, read for `/metrics`.
    pub plain_limiter: ConnectionLimiter,
    pub ids: SessionIds,
    pub lobby: Arc<LobbyShared>,
    /// WebSocket sessions' limits and timers, on the JSON wire.
    pub config: Arc<SessionConfig>,
    pub options: HttpOptions,
    /// [`LOBBY_PAGE`] as served: with this server's limit on a message
    /// (shared, not copied, by every response).
    page: Bytes,
    /// Set once a shutdown began: `/healthz` says so and upgrades stop.
    draining: AtomicBool,
    /// Where WebSocket sessions get their drain guard; emptied when the
    /// shutdown begins, so the drain does not wait for the HTTP surface.
    drain: Mutex<Option<DrainGuard>>,
}

impl HttpState {
    pub(crate) fn new(
        (registry, limiter, plain_limiter, ids, lobby): (
            Registry,
            ConnectionLimiter,
            ConnectionLimiter,
            SessionIds,
            Arc<LobbyShared>,
        ),
        config: SessionConfig,
        options: HttpOptions,
        drain: Option<DrainGuard>,
    ) -> Self {
        let limit = format!("data-max-line=\"{}\"", max_message(&config));
        HttpState {
            registry,
            limiter,
            plain_limiter,
            ids,
            lobby,
            page: Bytes::from(LOBBY_PAGE.replacen(MAX_LINE_MARK, &limit, 1)),
            config: Arc::new(config),
            options,
            draining: AtomicBool::new(drain.is_none()),
            drain: Mutex::new(drain),
        }
    }

    /// The shutdown began: refuse upgrades, report draining.
    pub(crate) fn begin_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.drain
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    fn drain_guard(&self) -> Option<DrainGuard> {
        self.drain
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Whether a page from `origin` may open a WebSocket on a request sent to
/// `host`, given the `allowed` origins. Empty: the same host only, and only
/// when DNS cannot stand for it (see [`beyond_dns`]): a DNS-rebinding page
/// at `http://evil.example:8080`, its name now resolving to this server,
/// sends `Host: evil.example:8080` and a matching `Origin`, so a same-host
/// check alone lets it in.
fn origin_allowed(allowed: &[String], origin: &str, host: Option<&str>) -> bool {
    let origin = origin.trim_end_matches('/');
    if allowed.is_empty() {
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        return matches!((origin_host, host),
            (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) && beyond_dns(h));
    }
    allowed
        .iter()
        .any(|allowed| allowed == "*" || allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// Whether the `Host` header `authority` (a host and an optional port)
/// names its host without DNS: an IPv4 literal, an IPv6 literal in
/// brackets, or `localhost` (which browsers resolve to loopback themselves,
/// never through DNS). Any other name may be one an attacker resolves to
/// this server.
fn beyond_dns(authority: &str) -> bool {
    // The port, if any, follows the last `:`, unless a `]` closes an IPv6
    // literal (whose own colons are inside its brackets) after it.
    let (host, port) = match authority.rfind([':', ']']) {
        Some(at) if authority.as_bytes()[at] == b':' => {
            (&authority[..at], Some(&authority[at + 1..]))
        }
        _ => (authority, None),
    };
    let port_valid =
        port.is_none_or(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
    let literal = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => host.eq_ignore_ascii_case("localhost") || host.parse::<Ipv4Addr>().is_ok(),
    };
    port_valid && literal
}

/// The plain HTTP connections open now, by session id (ids grow in accept
/// order, so the first is the oldest) with the instant each was accepted.
/// When every slot is taken, the listener closes the oldest to admit the
/// newcomer: a bound that cannot be held shut by whoever fills it first.
#[derive(Clone, Default)]
pub(crate) struct PlainConnections(Arc<Mutex<BTreeMap<SessionId, Instant>>>);

/// A plain HTTP connection's slot: its permit and its place among the
/// [`PlainConnections`], both given back when dropped (at the upgrade to a
/// WebSocket, or at the end).
pub(crate) struct PlainSlot {
    _permit: ConnectionPermit,
    id: SessionId,
    open: PlainConnections,
}

impl PlainConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SessionId, Instant>> {
        // Inserts and removes are single steps: a poisoned map is whole.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connection `id`, admitted with `permit`, is open from now.
    pub(crate) fn admit(&self, id: SessionId, permit: ConnectionPermit) -> PlainSlot {
        self.lock().insert(id, Instant::now());
        PlainSlot {
            _permit: permit,
            id,
            open: self.clone(),
        }
    }

    /// Takes the oldest connection out of the list if it has been open for
    /// `at_least`: the one to close to make room. (A younger one is left: a
    /// page load takes a moment, and a flood of connections must not close
    /// every other newcomer before its first request.)
    pub(crate) fn take_oldest(&self, at_least: Duration) -> Option<SessionId> {
        let mut open = self.lock();
        let (&id, &since) = open.first_key_value()?;
        if since.elapsed() < at_least {
            return None;
        }
        open.remove(&id);
        Some(id)
    }
}

impl Drop for PlainSlot {
    fn drop(&mut self) {
        self.open.lock().remove(&self.id);
    }
}

thread_local! {
    /// The sockets of this thread's plain HTTP connections (not upgraded),
    /// so that the listener can have one closed ([`close_connection`]).
    static SOCKETS: RefCell<HashMap<SessionId, SharedSocket>> = RefCell::default();
    /// Connections the listener closed before they began to be served (the
    /// thread was that far behind): each is dropped as it begins.
    static CLOSED_EARLY: RefCell<HashSet<SessionId>> = RefCell::default();
    /// The last connection that began to be served here. A thread's
    /// connections begin in id order (ids are handed out in accept order and
    /// each thread starts its connections in the order it is given them), so
    /// an id above it has not begun yet, and one at or below it has begun
    /// (and, if it is not in `SOCKETS`, already ended or upgraded).
    static LAST_BEGUN: Cell<SessionId> = const { Cell::new(SessionId(0)) };
}

/// Connection `id` begins to be served on this thread: false if the
/// listener closed it already.
fn begins(id: SessionId) -> bool {
    LAST_BEGUN.set(LAST_BEGUN.get().max(id));
    !CLOSED_EARLY.with(|closed| closed.borrow_mut().remove(&id))
}

/// Keeps a connection's socket in [`SOCKETS`] while it is served.
struct Registered(SessionId);

impl Drop for Registered {
    fn drop(&mut self) {
        SOCKETS.with(|sockets| sockets.borrow_mut().remove(&self.0));
    }
}

/// Closes HTTP connection `id` if it is served on this thread: the listener
/// made room for a newcomer (see [`PlainConnections`]).
pub(crate) fn close_connection(id: SessionId) {
    debug!("http connection {id} closed to make room for a newcomer");
    SOCKETS.with(|sockets| match sockets.borrow().get(&id) {
        Some(socket) => socket.cut(),
        // Not served yet (its task has not run): it is dropped as it
        // begins, so the room made is real.
        None if id > LAST_BEGUN.get() => {
            CLOSED_EARLY.with(|closed| closed.borrow_mut().insert(id));
        }
        // It ended or became a WebSocket meanwhile: nothing to close.
        None => {}
    });
}

/// What the handlers learn of their connection.
#[derive(Clone)]
struct Connection {
    /// The connection's slot among open plain HTTP connections, given back
    /// when it becomes a WebSocket session (the session limits count it
    /// from then on), or when the connection ends.
    slot: Rc<Cell<Option<PlainSlot>>>,
    /// The session id of the connection (the WebSocket session's, if it
    /// upgrades); its thread is the one the id belongs to.
    id: SessionId,
    peer: SocketAddr,
    local: Rc<Local>,
    socket: SharedSocket,
}

/// One HTTP connection's socket, shared by the HTTP layer (which reads the
/// requests and a WebSocket's input, and writes the responses) and, once a
/// WebSocket's handshake response is out, its session, which writes its
/// frames straight to the socket as a TCP session does: a busy room then
/// costs each member one system call per burst and no trip through the
/// HTTP layer. It also lets a session end the connection from outside the
/// HTTP layer: one that drops its peer (a slow consumer, a flush that timed
/// out) must close the socket even while the HTTP layer waits for the peer.
#[derive(Clone)]
pub(crate) struct SharedSocket(Rc<SocketState>);

struct SocketState {
    /// The write half; the HTTP layer's stream owns the read half.
    writer: OwnedWriteHalf,
    /// Set once cut: every read and write of the HTTP layer fails.
    cut: Cell<bool>,
    /// The HTTP layer's tasks waiting on the socket, woken by a cut.
    read: RefCell<Option<Waker>>,
    write: RefCell<Option<Waker>>,
    /// How far the upgrade response is.
    handshake: Cell<Handshake>,
    /// The session waiting for the upgrade response to be written.
    handshake_waker: RefCell<Option<Waker>>,
}

/// Where an upgrade's response is: the session may write only once the HTTP
/// layer has written all of it, or the peer would read frames before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handshake {
    /// No upgrade response yet.
    Waiting,
    /// The response's head is in the HTTP layer's write buffer: the body
    /// that follows it has been asked for its first bytes.
    Encoded,
    /// The HTTP layer flushed its buffer since: the head is on the socket.
    Sent,
    /// The HTTP layer dropped the connection.
    Gone,
}

impl SharedSocket {
    fn new(writer: OwnedWriteHalf) -> Self {
        SharedSocket(Rc::new(SocketState {
            writer,
            cut: Cell::new(false),
            read: RefCell::default(),
            write: RefCell::default(),
            handshake: Cell::new(Handshake::Waiting),
            handshake_waker: RefCell::default(),
        }))
    }

    /// From now on every read and write of the HTTP layer fails: it drops
    /// the connection.
    pub(crate) fn cut(&self) {
        self.0.cut.set(true);
        for waker in [&self.0.read, &self.0.write] {
            if let Some(waker) = waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }

    /// The upgrade response's head is in the HTTP layer's write buffer (its
    /// body is being polled for the first time).
    pub(crate) fn handshake_encoded(&self) {
        if self.0.handshake.get() == Handshake::Waiting {
            self.0.handshake.set(Handshake::Encoded);
        }
    }

    /// Resolves `true` once the upgrade response is on the socket, `false`
    /// if the connection ended first.
    pub(crate) fn handshake_sent(&self) -> impl Future<Output = bool> + 'static {
        let state = self.0.clone();
        std::future::poll_fn(move |cx| match state.handshake.get() {
            Handshake::Sent => Poll::Ready(true),
            Handshake::Gone => Poll::Ready(false),
            Handshake::Waiting | Handshake::Encoded => {
                *state.handshake_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    fn set_handshake(&self, handshake: Handshake) {
        self.0.handshake.set(handshake);
        if let Some(waker) = self.0.handshake_waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Writes what the socket takes now; `WouldBlock` when it is full.
    ///
    /// # Errors
    /// The socket's, or `ConnectionAborted` once cut.
    pub(crate) fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        if self.0.cut.get() {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        self.0.writer.try_write(bytes)
    }

    /// Resolves once the socket can take more (or has failed).
    pub(crate) fn writable(&self) -> impl Future<Output = io::Result<()>> + 'static {
        let state = self.0.clone();
        async move { state.writer.writable().await }
    }
}

/// The HTTP layer's side of a connection: the read half, and the write half
/// shared with a WebSocket session; a cut ends both.
struct CuttableStream {
    reader: OwnedReadHalf,
    socket: SharedSocket,
}

impl CuttableStream {
    /// Fails once cut; remembers the waker of what is pending.
    fn guard<T>(
        &self,
        waker: &RefCell<Option<Waker>>,
        cx: &TaskContext<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if self.socket.0.cut.get() {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        if poll.is_pending() {
            let mut slot = waker.borrow_mut();
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
        }
        poll
    }

    /// Writes with `write` once the socket is writable.
    fn poll_write_with(
        &self,
        cx: &mut TaskContext<'_>,
        write: impl Fn(&OwnedWriteHalf) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let writer = &self.socket.0.writer;
        let poll = loop {
            match writer.as_ref().poll_write_ready(cx) {
                Poll::Ready(Ok(())) => match write(writer) {
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                    result => break Poll::Ready(result),
                },
                Poll::Ready(Err(error)) => break Poll::Ready(Err(error)),
                Poll::Pending => break Poll::Pending,
            }
        };
        self.guard(&self.socket.0.write, cx, poll)
    }
}

impl Drop for CuttableStream {
    fn drop(&mut self) {
        if self.socket.0.handshake.get() != Handshake::Sent {
            self.socket.set_handshake(Handshake::Gone);
        }
    }
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.reader).poll_read(cx, buf);
        self.guard(&self.socket.0.read, cx, poll)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |writer| writer.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |writer| writer.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// The HTTP layer flushes only once its whole write buffer is on the
    /// socket: after an upgrade response's head was encoded, that means the
    /// head is out and the session may write.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        if self.socket.0.handshake.get() == Handshake::Encoded {
            self.socket.set_handshake(Handshake::Sent);
        }
        self.guard(&self.socket.0.write, cx, Poll::Ready(Ok(())))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let shutdown = socket2::SockRef::from(self.socket.0.writer.as_ref())
            .shutdown(std::net::Shutdown::Write);
        self.guard(&self.socket.0.write, cx, Poll::Ready(shutdown))
    }
}

/// Serves one HTTP/1 connection, on the thread it was handed to, until it
/// ends; `slot` is its place among open plain HTTP connections.
pub(crate) async fn serve_connection(
    state: Arc<HttpState>,
    stream: TcpStream,
    peer: SocketAddr,
    id: SessionId,
    local: Rc<Local>,
    slot: PlainSlot,
) {
    if !begins(id) {
        return debug!("http connection {id} from {peer} closed before it was served");
    }
    let (reader, writer) = stream.into_split();
    let socket = SharedSocket::new(writer);
    SOCKETS.with(|sockets| sockets.borrow_mut().insert(id, socket.clone()));
    let _registered = Registered(id);
    let stream = CuttableStream {
        reader,
        socket: socket.clone(),
    };
    let connection = Connection {
        slot: Rc::new(Cell::new(Some(slot))),
        id,
        peer,
        local,
        socket,
    };
    let data = web::Data::from(state);
    let app = App::new()
        .app_data(data)
        .route("/", web::get().to(page))
        .route("/", web::head().to(page))
        .route("/ws", web::get().to(websocket))
        .route("/metrics", web::get().to(metrics))
        // Load balancers check health with HEAD as often as with GET.
        .route("/healthz", web::get().to(healthz))
        .route("/healthz", web::head().to(healthz));
    let service = HttpService::build()
        .client_request_timeout(REQUEST_TIMEOUT)
        .keep_alive(KEEP_ALIVE)
        .on_connect_ext(move |_: &CuttableStream, extensions: &mut Extensions| {
            extensions.insert(connection.clone());
        })
        .h1(map_config(app, |()| AppConfig::default()));
    let handler = match service.new_service(()).await {
        Ok(handler) => handler,
        Err(()) => return debug!("http connection {id} from {peer}: no service"),
    };
    if let Err(error) = handler.call((stream, Some(peer))).await {
        debug!("http connection {id} from {peer} ended: {error:?}");
    }
}

async fn page(state: web::Data<HttpState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(state.page.clone())
}

async fn healthz(state: web::Data<HttpState>) -> HttpResponse {
    if state.draining() {
        HttpResponse::ServiceUnavailable().body("draining\n")
    } else {
        HttpResponse::Ok().body("ok\n")
    }
}

async fn metrics(state: web::Data<HttpState>) -> HttpResponse {
    let registry = &state.registry;
    let snapshot = Snapshot {
        rooms: registry.list_rooms().await.len(),
        sequencer_queue: registry.queue_depths(),
        plain_http_connections: state.plain_limiter.live(),
    };
    let text = registry.metrics().encode(&snapshot);
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text)
}

/// A refusal of an upgrade, counted for `cause`.
fn refuse(state: &HttpState, status: StatusCode, cause: Refusal, text: &str) -> HttpResponse {
    state.registry.metrics().refused(cause);
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static("text/plain")))
        .body(format!("{text}\n"))
}

async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<HttpState>,
) -> HttpResponse {
    let Some(connection) = req.conn_data::<Connection>().cloned() else {
        return HttpResponse::InternalServerError().finish();
    };
    let Connection {
        slot,
        id,
        peer,
        local,
        socket,
    } = connection;
    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
    if state.draining() {
        return refuse(
            &state,
            unavailable,
            Refusal::Draining,
            "server is shutting down",
        );
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let allowed = origin
            .to_str()
            .is_ok_and(|origin| origin_allowed(&state.options.allowed_origins, origin, host));
        if !allowed {
            debug!(
                "ws upgrade from {peer}: origin {origin:?} not allowed \
                 (a page served under a DNS name needs it in --allowed-origin)"
            );
            return refuse(
                &state,
                StatusCode::FORBIDDEN,
                Refusal::Origin,
                "origin not allowed",
            );
        }
    }
    let Some(permit) = state.limiter.try_acquire(peer.ip()) else {
        debug!("ws upgrade from {peer}: connection limit reached");
        return refuse(
            &state,
            unavailable,
            Refusal::Limit,
            "too many connections, try again later",
        );
    };
    let Some(drain) = state.drain_guard() else {
        return refuse(
            &state,
            unavailable,
            Refusal::Draining,
            "server is shutting down",
        );
    };
    let max = max_message(&state.config);
    let body = match guard_frames(&req, body, max).await {
        Ok(body) => body,
        Err(error) => return HttpResponse::from_error(error),
    };
    let (response, _unused_session, input) = match actix_ws::handle(&req, body) {
        Ok(handled) => handled,
        Err(error) => {
            debug!("ws upgrade from {peer} refused: {error}");
            state.registry.metrics().refused(Refusal::BadHandshake);
            return HttpResponse::from_error(error);
        }
    };
    // A session now: the session limits count it, not the HTTP bound, and
    // it is no longer a plain connection the listener may close.
    drop(slot.take());
    SOCKETS.with(|sockets| sockets.borrow_mut().remove(&id));
    let input = input
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    let output = WsOutput::new(socket);
    let body = BodyStream::new(output.body());
    let parts = WsParts {
        id,
        peer,
        config: state.config.clone(),
        registry: state.registry.clone(),
        local,
        input,
        output,
        permit: Some(permit),
        drain: Some(drain),
    };
    let lobby = state.lobby.clone();
    actix::Actor::start(WsSession::new(parts, Lobby::new(lobby)));
    response.set_body(body).map_into_boxed_body()
}

/// The request's payload behind a [`FrameGuard`]: a frame declaring more
/// than `max` bytes ends it at its header, before its payload is buffered.
async fn guard_frames(
    req: &HttpRequest,
    body: web::Payload,
    max: usize,
) -> Result<web::Payload, actix_web::Error> {
    let guarded: actix_http::BoxedPayloadStream = Box::pin(FrameGuard::new(body.into_inner(), max));
    let mut payload = actix_web::dev::Payload::Stream { payload: guarded };
    web::Payload::from_request(req, &mut payload).await
}

/// The longest WebSocket message a session accepts: its line limit.
fn max_message(config: &SessionConfig) -> usize {
    match config.framing {
        crate::framing::Framing::Lines { max_line } => max_line,
        crate::framing::Framing::LengthPrefixed { max_frame } => max_frame,
        crate::framing::Framing::Raw => crate::config::DEFAULT_MAX_LINE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_a_same_host_origin_needs_a_host_dns_cannot_rebind() {
        for host in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "10.1.2.3:80",
            "[::1]:8080",
            "[::1]",
            "[::ffff:127.0.0.1]:8080",
            "localhost:8080",
            "LocalHost",
        ] {
            let origin = format!("http://{host}");
            assert!(origin_allowed(&[], &origin, Some(host)), "{host}");
            assert!(beyond_dns(host), "{host}");
        }
        // A DNS-rebinding page: its name now resolves to this server.
        for host in [
            "evil.example:8080",
            "evil.example",
            "127.0.0.1.nip.io:8080",
            "localhost.evil.example",
            "localhost.:8080",
            "2130706433:8080",
            "127.1:8080",
        ] {
            let origin = format!("http://{host}");
            assert!(!origin_allowed(&[], &origin, Some(host)), "{host}");
            assert!(!beyond_dns(host), "{host}");
        }
        // Not a host and port at all.
        for host in [
            "::1",
            "::1:8080",
            "[::1",
            "[::1]x",
            "[evil]:80",
            "127.0.0.1:",
            "127.0.0.1:8o",
            "",
        ] {
            assert!(!beyond_dns(host), "{host:?}");
        }
        // A name listed by the operator is allowed, as listed.
        let listed = vec!["http://evil.example:8080".to_owned()];
        let host = Some("evil.example:8080");
        assert!(origin_allowed(&listed, "http://evil.example:8080", host));
    }

    #[test]
    fn a_connection_closed_before_it_begins_is_dropped_as_it_begins() {
        // Closed while its thread had not started it: dropped when it does.
        close_connection(SessionId(7));
        assert!(!begins(SessionId(7)));
        assert!(begins(SessionId(8)));
        // Closed after it began and ended (not among the sockets): nothing
        // is kept for it.
        close_connection(SessionId(8));
        assert!(CLOSED_EARLY.with(|closed| closed.borrow().is_empty()));
    }

    #[test]
    fn origins_default_to_the_same_host_and_lists_are_exact() {
        let host = Some("127.0.0.1:8080");
        assert!(origin_allowed(&[], "http://127.0.0.1:8080", host));
        assert!(origin_allowed(&[], "https://127.0.0.1:8080/", host));
        assert!(!origin_allowed(&[], "http://127.0.0.1:9999", host));
        assert!(!origin_allowed(&[], "http://evil.example", host));
        assert!(!origin_allowed(&[], "null", host));
        assert!(!origin_allowed(&[], "http://127.0.0.1:8080", None));
        let listed = vec!["https://game.example".to_owned()];
        assert!(origin_allowed(&listed, "https://GAME.example", host));
        assert!(!origin_allowed(&listed, "http://game.example", host));
        assert!(!origin_allowed(&listed, "http://127.0.0.1:8080", host));
        assert!(origin_allowed(&["*".to_owned()], "http://anything", host));
    }

    #[test]
    fn the_page_has_one_mark_for_the_line_limit() {
        assert_eq!(LOBBY_PAGE.matches(MAX_LINE_MARK).count(), 1);
        assert!(LOBBY_PAGE.contains(&format!("<body {MAX_LINE_MARK}>")));
    }

    #[test]
    fn allowed_origins_must_be_origins() {
        let options = |origins: &[&str]| HttpOptions {
            allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
        };
        for good in [
            &["*"][..],
            &["http://a.example"],
            &["https://a.example:8443/"],
            &[],
        ] {
            assert_eq!(options(good).validate(), Ok(()), "{good:?}");
        }
        for bad in [
            "a.example",
            "ftp://a.example",
            "http://",
            "http://a/b",
            "http://a b",
        ] {
            assert_eq!(
                options(&[bad]).validate(),
                Err(OriginError(bad.to_owned())),
                "{bad}"
            );
        }
    }
}
