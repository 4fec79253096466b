//! Run with: cargo run --example greeter -- --bind 127.0.0.1:0
//!
//! The greeting server of the classic Python TCP tutorials (e.g. Liao
//! Xuefeng's "TCP programming" chapter): it welcomes each client, greets every
//! name it receives, and says good-bye on `exit`. As there, what one read
//! returns is one message (raw framing), so the tutorial's client, which sends
//! names without newlines, works unchanged.

mod support;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use switchboard::bytes::Bytes;
use switchboard::{
    DisconnectReason, Framing, LobbyConfig, Protocol, Server, SessionConfig, SessionContext,
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

/// The greeter protocol: each reply goes out in one piece, so that one
/// `recv` of the tutorial's client gets it all.
struct Greeter;

impl Protocol for Greeter {
    fn opened(&mut self, cx: &mut SessionContext<'_>) {
        cx.send_bytes([WELCOME, PROMPT].concat().into());
    }

    fn frame(&mut self, cx: &mut SessionContext<'_>, name: Bytes) {
        if name == b"exit"[..] {
            let farewell = Some(Bytes::from_static(GOOD_BYE));
            return cx.close(DisconnectReason::Quit, farewell);
        }
        let hello = [b"Server: Hello ", &name[..], b"!\n", PROMPT].concat();
        cx.send_bytes(hello.into());
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    support::run("greeter", async move {
        let socket = support::bind_tcp(args.bind).await?;
        let mut server = Server::new(LobbyConfig::default());
        let config = SessionConfig::new(Framing::Raw);
        server
            .serve(socket, "greeter", config, || Greeter)
            .map_err(|error| format!("cannot serve: {error}"))?;
        support::until_signal().await
    })
}
