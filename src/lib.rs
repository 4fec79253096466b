//! # switchboard
//!
//! An actor-model TCP connection manager built on actix, and the game-lobby
//! server that runs on it.
//!
//! A [`Listener`] accepts connections and starts one [`Session`] actor per
//! peer. A session owns its socket; it reports what happens on it (a frame
//! arrived, the peer went silent, input ended) to a hub actor, and writes what
//! the hub sends it through a bounded queue. The lobby's hub is the
//! [`Registry`], which tracks nicks and rooms, answers every line, and cleans
//! up after every session that ends. Every way a session ends is one
//! [`DisconnectReason`], reported exactly once.
//!
//! ## Example
//!
//! A lobby on a port the program bound, with the program's own actor told
//! of every session that arrives:
//!
//! ```no_run
//! use actix::prelude::*;
//! use switchboard::{LobbyConfig, LobbyEvent, LobbyServer, Subscribe};
//!
//! struct Greeter;
//!
//! impl Actor for Greeter {
//!     type Context = Context<Self>;
//! }
//!
//! impl Handler<LobbyEvent> for Greeter {
//!     type Result = ();
//!
//!     fn handle(&mut self, event: LobbyEvent, _: &mut Context<Self>) {
//!         if let LobbyEvent::Connected { session, peer } = event {
//!             log::info!("session {session} arrived from {peer}");
//!         }
//!     }
//! }
//!
//! #[actix::main]
//! async fn main() -> std::io::Result<()> {
//!     let socket = tokio::net::TcpListener::bind("127.0.0.1:7878").await?;
//!     let lobby = LobbyServer::start(socket, LobbyConfig::default())?;
//!     let events = Greeter.start().recipient();
//!     lobby.registry().do_send(Subscribe { events });
//!     switchboard::shutdown_signal().await?;
//!     lobby.shutdown(std::time::Duration::from_secs(5)).await;
//!     Ok(())
//! }
//! ```
//!
//! ## Layout
//!
//! - `actors::listener` — the [`Listener`]: accepting, connection limits,
//!   accept-error back-off.
//! - `actors::session` — the [`Session`]: framing, the bounded outbound queue,
//!   heartbeat and idle timers, and the messages between a session and its hub
//!   ([`Opened`], [`Activity`], [`Closed`], [`Close`]).
//! - `actors::registry` — the [`Registry`]: the lobby's sessions, nicks and
//!   rooms, the commands an embedding program sends it ([`SendTo`],
//!   [`Broadcast`], [`JoinRoom`], [`LeaveRoom`], [`Kick`], [`ListRooms`],
//!   [`ListSessions`], [`Shutdown`]) and the [`LobbyEvent`]s it reports to
//!   [`Subscribe`]rs.
//! - `actors::udp` — the [`UdpEndpoint`]: one UDP socket, its datagrams
//!   reported to a hub ([`Datagram`]) and sent for it ([`SendDatagram`]).
//! - `actors::udp_sessions`, `actors::udp_peer` — the lobby over UDP: each
//!   remote address a session in the registry (`LobbyServer::serve_udp`).
//! - `framing` — cutting a byte stream into raw chunks, bounded lines or
//!   length-prefixed frames.
//! - `protocol` — the text lobby protocol: parsing commands, rendering lines.
//! - `limiter` — connection slots, overall and per IP address.
//! - `reason` — [`DisconnectReason`].
//! - `config` — [`LobbyConfig`], [`SessionConfig`] and the default limits.
//! - `server` — [`LobbyServer`]: the pieces wired into the lobby.
//! - `signal` — [`shutdown_signal`]: SIGINT or SIGTERM.

#![warn(missing_docs)]

mod actors;
pub mod config;
mod framing;
mod limiter;
pub mod protocol;
mod reason;
mod server;
mod signal;

pub use actors::listener::{Listener, StopAccepting};
pub use actors::registry::{
    Broadcast, JSON_SERVICE, JoinRoom, Kick, LeaveRoom, ListRooms, ListSessions, LobbyEvent,
    Registry, SendTo, SessionInfo, Shutdown, Subscribe, TEXT_SERVICE,
};
pub use actors::session::{
    Activity, Close, Closed, Opened, Session, SessionEvent, SessionEvents, SessionHandle,
    SessionId, SessionIds,
};
pub use actors::udp::{Datagram, MAX_DATAGRAM, SendDatagram, UdpEndpoint};
pub use config::{LobbyConfig, SessionConfig};
pub use framing::{FrameDecoder, FrameError, FrameReader, Framing, Inbound};
pub use limiter::{ConnectionLimiter, ConnectionPermit};
pub use reason::DisconnectReason;
pub use server::LobbyServer;
pub use signal::shutdown_signal;

/// The README's Rust examples, compiled as doc tests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
