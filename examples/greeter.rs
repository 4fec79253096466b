//! Run with: cargo run --example greeter -- --bind 127.0.0.1:0
//!
//! The greeting server of the classic Python TCP tutorials (e.g. Liao
//! Xuefeng's "TCP programming" chapter): it welcomes each client, greets every
//! name it receives, and says good-bye on `exit`. As there, what one read
//! returns is one message (raw framing), so the tutorial's client, which sends
//! names without newlines, works unchanged.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;

use actix::prelude::*;
use bytes::Bytes;
use clap::Parser;
use switchboard::{
    Activity, Closed, DisconnectReason, Framing, Listener, Opened, SessionConfig, SessionEvent,
    SessionEvents, SessionHandle, SessionId,
};

const WELCOME: &[u8] = b"Server: Welcome!\n";
/// Sent after the welcome and after every greeting; the tutorial's client
/// prints it as is, so it has no newline.
const PROMPT: &[u8] = b"Server: What's your name?";
const GOOD_BYE: &[u8] = b"Server: Good bye!\n";

/// Greets every name it is sent, until `exit`.
#[derive(Debug, Parser)]
struct Args {
    /// Listen address (IPv4 or IPv6; port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:6000")]
    bind: SocketAddr,
}

/// The hub every session reports to. Events carry only a session's id, so
/// the hub keeps each session's handle from `Opened` until `Closed`.
#[derive(Default)]
struct Greeter {
    sessions: HashMap<SessionId, SessionHandle>,
}

impl Actor for Greeter {
    type Context = Context<Self>;
}

impl Handler<Opened> for Greeter {
    type Result = ();

    fn handle(&mut self, Opened { session, .. }: Opened, _: &mut Context<Self>) {
        reply(&session, [WELCOME, PROMPT].concat().into());
        self.sessions.insert(session.id(), session);
    }
}

impl Handler<Activity> for Greeter {
    type Result = ();

    fn handle(&mut self, Activity { session, event }: Activity, _: &mut Context<Self>) {
        let Some(session) = self.sessions.get(&session) else {
            return;
        };
        match event {
            SessionEvent::Frame(name) if name == b"exit"[..] => {
                let farewell = Some(Bytes::from_static(GOOD_BYE));
                session.close(DisconnectReason::Quit, farewell);
            }
            SessionEvent::Frame(name) => {
                let hello = [b"Server: Hello ", &name[..], b"!\n", PROMPT].concat();
                reply(session, hello.into());
            }
            SessionEvent::InputClosed => session.close(DisconnectReason::Closed, None),
            // Raw framing without timers or rate limits reports nothing else.
            _ => {}
        }
    }
}

impl Handler<Closed> for Greeter {
    type Result = ();

    fn handle(&mut self, Closed { session, .. }: Closed, _: &mut Context<Self>) {
        self.sessions.remove(&session);
    }
}

/// Queues one reply, in one piece so that one `recv` of the client gets it
/// all.
fn reply(session: &SessionHandle, reply: Bytes) {
    session.send(reply);
}

fn main() -> ExitCode {
    let args = Args::parse();
    support::run("greeter", async move {
        let socket = support::bind_tcp(args.bind).await?;
        let hub = Greeter::default().start();
        let config = SessionConfig::new(Framing::Raw);
        Listener::new(socket, "greeter", config, SessionEvents::to_actor(&hub)).start();
        support::until_signal().await
    })
}
