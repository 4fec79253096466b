//! # switchboard
//!
//! An actor-model TCP connection manager built on actix, and the game-lobby
//! server that runs on it.
//!
//! A [`Listener`] accepts connections and starts one [`Session`] actor per
//! peer. A session owns its socket and runs a [`Protocol`] inline, on its own
//! thread: the lobby's, an echo, or an application's own game protocol.
//! Whatever concerns other sessions goes through the [`Registry`]: rooms
//! (each sequenced by one sequencer, delivered by one dispatcher per thread),
//! unique names, and cleanup. Every way a session ends is one
//! [`DisconnectReason`], and the registry forgets the session exactly once.
//!
//! ```text
//!   Listener ──▶ Session (socket, framing, protocol) ──publish──▶ Sequencer of the room
//!                   ▲                                                  │ one Deliver per
//!                   └──────── shared event, via the inbox ◀── Dispatcher of each thread
//! ```
//!
//! ## Example: a protocol of your own
//!
//! A session that greets its peer and broadcasts every line to its room,
//! rendered per wire format:
//!
//! ```no_run
//! use switchboard::bytes::Bytes;
//! use switchboard::{Framing, LobbyConfig, Protocol, RawFrame, Server, SessionConfig,
//!                   SessionContext, SharedEvent};
//!
//! struct Shout;
//!
//! impl Protocol for Shout {
//!     fn opened(&mut self, cx: &mut SessionContext<'_>) {
//!         cx.send(&RawFrame(Bytes::from_static(b"hello\n")));
//!         cx.join("everyone", None, None);
//!     }
//!
//!     fn frame(&mut self, cx: &mut SessionContext<'_>, line: Bytes) {
//!         let mut shout = line.to_ascii_uppercase();
//!         shout.push(b'\n');
//!         cx.publish(SharedEvent::new(RawFrame(shout.into())));
//!     }
//! }
//!
//! fn main() -> std::io::Result<()> {
//!     switchboard::actix_rt::System::new().block_on(async {
//!         let socket = switchboard::tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
//!         let mut server = Server::new(LobbyConfig::default());
//!         let config = SessionConfig::new(Framing::Lines { max_line: 1024 });
//!         server.serve(socket, "shout", config, || Shout)?;
//!         switchboard::shutdown_signal().await?;
//!         server.shutdown(std::time::Duration::from_secs(5)).await;
//!         Ok(())
//!     })
//! }
//! ```
//!
//! ## Layout
//!
//! - [`actors::listener`] — the [`Listener`]: accepting, connection limits,
//!   accept-error back-off.
//! - [`actors::session`] — the [`Session`]: socket, framing, the bounded
//!   outbound queue, timers, rate limit; it runs its protocol.
//! - [`actors::sequencer`] — a [`Sequencer`](actors::sequencer::Sequencer):
//!   the one order of each room hashed to it, and the sequencer boundary a
//!   networked engine can stand behind.
//! - [`actors::dispatcher`] — one [`Dispatcher`](actors::dispatcher::Dispatcher)
//!   per thread: that thread's sessions and their rooms.
//! - [`actors::cluster`] — with `--cluster`, the [`Cluster`](actors::cluster::Cluster)
//!   engine: rooms, names and the room list shared across nodes through Redis,
//!   behind the same boundary as the sequencers; [`cluster`] — its
//!   configuration, health, connection and Lua scripts;
//!   [`actors::remote_peer`] — a session of another node, for `/msg`.
//! - [`actors::directory`] — a shard of the name directory (unique names).
//! - [`actors::room_index`] — every room and its member count.
//! - [`actors::udp`], [`actors::udp_sessions`], [`actors::udp_peer`] — UDP:
//!   one socket, its per-address sessions.
//! - [`actors::http_listener`], [`actors::ws_session`] — `--http-bind`: HTTP
//!   connections served on the session threads, WebSocket sessions.
//! - [`http`] — the HTTP surface: lobby page, `/ws`, `/metrics`, `/healthz`.
//! - [`driver`] — [`Protocol`], [`SessionContext`], and the engine sessions share.
//! - [`registry`] — the [`Registry`] handle: routes requests to the actors above.
//! - [`event`] — [`Event`], [`SharedEvent`], [`Wire`]: typed events rendered
//!   once per wire format.
//! - [`handle`] — [`SessionHandle`] and the inbox behind it.
//! - `outbound` — the frames a session owes its peer, written with vectored
//!   writes.
//! - `local` — what one thread's sessions, sequencer and dispatcher share.
//! - [`lobby`] — the lobby protocol ([`Lobby`], [`LobbyLine`], [`LobbyEvent`]).
//! - [`protocol`] — the lobby's wire format: parsing commands, rendering lines.
//! - [`framing`] — raw chunks, bounded lines or length-prefixed frames.
//! - [`limiter`] — connection slots, overall and per IP address.
//! - [`reason`] — [`DisconnectReason`].
//! - [`metrics`] — [`Metrics`]: counters for `GET /metrics`.
//! - [`config`] — [`LobbyConfig`], [`SessionConfig`] and the default limits.
//! - [`server`] — [`Server`]: the pieces wired together, with graceful shutdown.
//! - [`signal`] — [`shutdown_signal`]: SIGINT or SIGTERM.

#![warn(missing_docs)]

pub mod actors;
pub mod cluster;
pub mod config;
mod drain;
pub mod driver;
pub mod event;
pub mod framing;
pub mod handle;
pub mod http;
pub mod limiter;
pub mod lobby;
mod local;
pub mod metrics;
mod outbound;
pub mod protocol;
pub mod reason;
pub mod registry;
pub mod room;
pub mod server;
pub mod signal;
mod ws_frame_guard;
mod ws_writer;

pub use actors::dispatcher::SessionInfo;
pub use actors::listener::{Listener, StopAccepting};
pub use actors::sequencer::room_thread;
pub use actors::session::Session;
pub use actors::udp::{Datagram, MAX_DATAGRAM, SendDatagram, UdpEndpoint};
pub use cluster::{ClusterConfig, ClusterError, ClusterHealth};
pub use config::{ConfigError, LobbyConfig, SessionConfig};
pub use driver::{ClosedSession, Protocol, REQUEST_CREDIT, SessionContext};
pub use event::{Event, RawFrame, SharedEvent, Wire};
pub use framing::{FrameDecoder, FrameError, FrameReader, Framing, Inbound};
pub use handle::{Control, SessionHandle, SessionId, SessionIds};
pub use http::HttpOptions;
pub use limiter::{ConnectionLimiter, ConnectionPermit};
pub use lobby::{Lobby, LobbyEvent, LobbyLine};
pub use metrics::Metrics;
pub use reason::DisconnectReason;
pub use registry::Registry;
pub use room::{Answer, Peer, RoomList, RoomName};
pub use server::{LobbyServer, Server};
pub use signal::shutdown_signal;

/// The versions of actix, tokio and bytes switchboard is built with,
/// re-exported so an embedding program uses the very same (an `Addr`, a
/// `TcpListener` or `Bytes` of another version is a different type).
pub use {actix, actix_rt, bytes, tokio};

/// The README's Rust examples, compiled as doc tests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
