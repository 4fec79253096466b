//! Run with: cargo run --example udp_time -- --bind 127.0.0.1:0
//!
//! The UDP time server of the classic socket tutorials: any datagram (the
//! tutorial's client sends `time?`) is answered with the current local time
//! as `YYYY-MM-DD HH:MM:SS`.

use std::net::SocketAddr;
use std::process::ExitCode;

use actix::prelude::*;
use bytes::Bytes;
use clap::Parser;
use log::info;
use switchboard::{Datagram, SendDatagram, UdpEndpoint, shutdown_signal};
use tokio::net::UdpSocket;

/// Answers every datagram with the local time.
#[derive(Debug, Parser)]
struct Args {
    /// Listen address (IPv4 or IPv6; port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:9000")]
    bind: SocketAddr,
}

/// The hub: tells whoever asks what time it is.
struct Clock {
    endpoint: Addr<UdpEndpoint>,
}

impl Actor for Clock {
    type Context = Context<Self>;
}

impl Handler<Datagram> for Clock {
    type Result = ();

    fn handle(&mut self, Datagram { from, .. }: Datagram, _: &mut Context<Self>) {
        let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
        self.endpoint.do_send(SendDatagram {
            to: from,
            payload: Bytes::from(now),
        });
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
            eprintln!("udp_time: cannot listen on {bind}: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The clock answers through the endpoint that reports to it.
    let _clock = Clock::create(|ctx| Clock {
        endpoint: UdpEndpoint::new(socket, "udp time", ctx.address().recipient()).start(),
    });
    if let Err(error) = shutdown_signal().await {
        eprintln!("udp_time: cannot listen for signals: {error}");
        return ExitCode::FAILURE;
    }
    info!("shutting down");
    ExitCode::SUCCESS
}
