//! Run with: cargo run --example udp_echo -- --bind 127.0.0.1:0
//!
//! The UDP echo server of the classic socket tutorials: every datagram (up
//! to 65,507 bytes, empty ones too) is sent back unchanged to whoever sent it.

use std::net::SocketAddr;
use std::process::ExitCode;

use actix::prelude::*;
use clap::Parser;
use log::info;
use switchboard::{Datagram, SendDatagram, UdpEndpoint, shutdown_signal};
use tokio::net::UdpSocket;

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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    actix_rt::System::new().block_on(serve(args.bind))
}

async fn serve(bind: SocketAddr) -> ExitCode {
    let socket = match UdpSocket::bind(bind).await {
        Ok(socket) => socket,
        Err(error) => {
            eprintln!("udp_echo: cannot listen on {bind}: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The echo answers through the endpoint that reports to it.
    let _echo = Echo::create(|ctx| Echo {
        endpoint: UdpEndpoint::new(socket, "udp echo", ctx.address().recipient()).start(),
    });
    if let Err(error) = shutdown_signal().await {
        eprintln!("udp_echo: cannot listen for signals: {error}");
        return ExitCode::FAILURE;
    }
    info!("shutting down");
    ExitCode::SUCCESS
}
