//! Run with: cargo run --example echo -- --bind 127.0.0.1:0 [--framing raw|lines|length]
//!
//! The echo server every socket tutorial starts with (e.g. Real Python's
//! `echo-server.py`): each chunk a client sends comes back unchanged, no
//! newline needed, and once the client has closed its side the server writes
//! what it still owes and closes too. The tutorial's client works unchanged.
//!
//! `--framing lines` echoes each complete line (written back with `\n`), and
//! `--framing length` each frame of a 4-byte big-endian length plus payload,
//! prefix included; a declared length over `--max-frame` closes that
//! connection. A partial line or frame at end of input is dropped.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;

use actix::prelude::*;
use clap::{Parser, ValueEnum};
use switchboard::{
    Activity, Closed, DisconnectReason, Framing, Listener, Opened, SessionConfig, SessionEvent,
    SessionEvents, SessionHandle, SessionId,
};

/// Writes every chunk, line or frame received back to its sender.
#[derive(Debug, Parser)]
struct Args {
    /// Listen address (IPv4 or IPv6; port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// How the byte stream is cut into messages
    #[arg(long, value_enum, default_value_t = FramingArg::Raw)]
    framing: FramingArg,
    /// Longest line or frame payload accepted, in bytes
    #[arg(long, default_value_t = 1 << 20)]
    max_frame: usize,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FramingArg {
    /// Each chunk one read returns
    Raw,
    /// Newline-terminated lines
    Lines,
    /// A 4-byte big-endian length, then the payload
    Length,
}

impl Args {
    fn framing(&self) -> Framing {
        match self.framing {
            FramingArg::Raw => Framing::Raw,
            FramingArg::Lines => Framing::Lines {
                max_line: self.max_frame,
            },
            FramingArg::Length => Framing::LengthPrefixed {
                max_frame: self.max_frame,
            },
        }
    }
}

/// The hub every session reports to. Events carry only a session's id, so
/// the hub keeps each session's handle from `Opened` until `Closed`.
struct Echo {
    framing: Framing,
    sessions: HashMap<SessionId, SessionHandle>,
}

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<Opened> for Echo {
    type Result = ();

    fn handle(&mut self, Opened { session, .. }: Opened, _: &mut Context<Self>) {
        self.sessions.insert(session.id(), session);
    }
}

impl Handler<Activity> for Echo {
    type Result = ();

    fn handle(&mut self, Activity { session, event }: Activity, _: &mut Context<Self>) {
        let Some(handle) = self.sessions.get(&session) else {
            return;
        };
        match event {
            SessionEvent::Frame(payload) => handle.send(self.framing.encode(&payload)),
            // Replies to earlier chunks are already queued ahead of the close.
            SessionEvent::InputClosed => handle.close(DisconnectReason::Closed, None),
            SessionEvent::Oversized => {
                log::debug!("session {session}: line over the limit dropped")
            }
            // Without timers or rate limits nothing else is reported.
            _ => {}
        }
    }
}

impl Handler<Closed> for Echo {
    type Result = ();

    fn handle(&mut self, Closed { session, .. }: Closed, _: &mut Context<Self>) {
        self.sessions.remove(&session);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let framing = args.framing();
    support::run("echo", async move {
        let socket = support::bind_tcp(args.bind).await?;
        let hub = Echo {
            framing,
            sessions: HashMap::new(),
        }
        .start();
        let config = SessionConfig::new(framing);
        Listener::new(socket, "echo", config, SessionEvents::to_actor(&hub)).start();
        support::until_signal().await
    })
}
