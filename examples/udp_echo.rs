//! Run with: cargo run --example udp_echo -- --bind 127.0.0.1:0
//!
//! The UDP echo server of the classic socket tutorials: every datagram (up
//! to 65,507 bytes, empty ones too) is sent back unchanged to whoever sent it.

mod support;

use std::net::SocketAddr;
use std::process::ExitCode;

use actix::prelude::*;
use clap::Parser;
use switchboard::{Datagram, SendDatagram, UdpEndpoint};

/// Sends every datagram back to its sender.
#[derive(Debug, Parser)]
struct Args {
    /// Listen address (IPv4 or IPv6; port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:9001")]
    bind: SocketAddr,
}

/// The hub: answers each datagram through the endpoint it came from.
struct Echo {
    endpoint: Addr<UdpEndpoint>,
}

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<Datagram> for Echo {
    type Result = ();

    fn handle(&mut self, Datagram { from, payload }: Datagram, _: &mut Context<Self>) {
        self.endpoint.do_send(SendDatagram { to: from, payload });
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    support::run("udp_echo", async move {
        let socket = support::bind_udp(args.bind).await?;
        // The echo answers through the endpoint that reports to it.
        let _echo = Echo::create(|ctx| Echo {
            endpoint: UdpEndpoint::new(socket, "udp echo", ctx.address().recipient()).start(),
        });
        support::until_signal().await
    })
}
