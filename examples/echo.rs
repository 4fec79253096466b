//! Run with: cargo run --example echo -- --bind 127.0.0.1:0
//!
//! The echo server every socket tutorial starts with (e.g. Real Python's
//! `echo-server.py`): each chunk a client sends comes back unchanged, no
//! newline needed, and once the client has closed its side the server writes
//! what it still owes and closes too. The tutorial's client works unchanged.
//!
//! Only raw framing (one frame per read) is served for now; line and
//! length-prefixed framing (`--framing lines|length`) come later.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;

use actix::prelude::*;
use clap::Parser;
use log::info;
use switchboard::{
    Activity, Closed, DisconnectReason, Framing, Listener, Opened, SessionConfig, SessionEvent,
    SessionEvents, SessionHandle, SessionId, shutdown_signal,
};
use tokio::net::TcpListener;

/// Writes every chunk received back to its sender.
#[derive(Debug, Parser)]
struct Args {
    /// Listen address (IPv4 or IPv6; port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
}

/// The hub every session reports to. Events carry only a session's id, so
/// the hub keeps each session's handle from `Opened` until `Closed`.
#[derive(Default)]
struct Echo {
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
            SessionEvent::Frame(chunk) => handle.send(chunk),
            // Replies to earlier chunks are already queued ahead of the close.
            SessionEvent::InputClosed => handle.close(DisconnectReason::Closed, None),
            // Raw framing without timers or rate limits reports nothing else.
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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    actix_rt::System::new().block_on(serve(args.bind))
}

async fn serve(bind: SocketAddr) -> ExitCode {
    let socket = match TcpListener::bind(bind).await {
        Ok(socket) => socket,
        Err(error) => {
            eprintln!("echo: cannot listen on {bind}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let hub = Echo::default().start();
    let config = SessionConfig::new(Framing::Raw);
    Listener::new(socket, "echo", config, SessionEvents::to_actor(&hub)).start();
    if let Err(error) = shutdown_signal().await {
        eprintln!("echo: cannot listen for signals: {error}");
        return ExitCode::FAILURE;
    }
    info!("shutting down");
    ExitCode::SUCCESS
}
