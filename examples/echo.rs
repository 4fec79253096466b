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

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use switchboard::bytes::Bytes;
use switchboard::{Framing, LobbyConfig, Protocol, Server, SessionConfig, SessionContext, config};

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
    /// Threads that sessions are spread over [default: one per core]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
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

/// The echo protocol: each session answers its own frames, on its own
/// thread; nothing crosses to another session.
struct Echo {
    framing: Framing,
}

impl Protocol for Echo {
    fn frame(&mut self, cx: &mut SessionContext<'_>, payload: Bytes) {
        cx.send_bytes(self.framing.encode(&payload));
    }

    fn oversized(&mut self, cx: &mut SessionContext<'_>) {
        log::debug!("session {}: line over the limit dropped", cx.id());
    }
    // End of input: the default closes once every echo is written.
}

fn main() -> ExitCode {
    let args = Args::parse();
    let framing = args.framing();
    let threads = args
        .threads
        .map_or_else(config::default_threads, usize::from);
    support::run("echo", async move {
        let socket = support::bind_tcp(args.bind).await?;
        let mut server = Server::new(LobbyConfig {
            threads,
            ..LobbyConfig::default()
        });
        let config = SessionConfig::new(framing);
        server
            .serve(socket, "echo", config, move || Echo { framing })
            .map_err(|error| format!("cannot serve: {error}"))?;
        support::until_signal().await
    })
}
