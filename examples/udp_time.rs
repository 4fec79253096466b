//! Run with: cargo run --example udp_time -- --bind 127.0.0.1:0
//!
//! The UDP time server of the classic socket tutorials: any datagram (the
//! tutorial's client sends `time?`) is answered with the current local time
//! as `YYYY-MM-DD HH:MM:SS`.

mod support;

use std::net::SocketAddr;
use std::process::ExitCode;

use actix::prelude::*;
use bytes::Bytes;
use clap::Parser;
use switchboard::{Datagram, SendDatagram, UdpEndpoint};

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
    support::run("udp_time", async move {
        let socket = support::bind_udp(args.bind).await?;
        // The clock answers through the endpoint that reports to it.
        let _clock = Clock::create(|ctx| Clock {
            endpoint: UdpEndpoint::new(socket, "udp time", ctx.address().recipient()).start(),
        });
        support::until_signal().await
    })
}
