//! `lobby-echo`: chat round trips through the lobby.
//!
//! C clients each `/join` a room of their own (`r<i>`) and keep W chat lines
//! in flight; the `MSG` each line comes back as is the reply that is timed.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::harness::{self, Meter, Tally, Timing};
use super::{LobbyClient, Scenario};
use crate::net;
use crate::progress::Progress;
use crate::report::Outcome;
use crate::server::{ServerProc, Service};
use crate::stats::LatencySink;
use crate::{BenchResult, Common, RunCtx};

#[derive(Debug, Clone, Args)]
pub struct LobbyEchoArgs {
    /// Clients, each alone in its own room
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub conns: u32,
    /// Chat lines in flight per client
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=512))]
    pub window: u32,
    /// Bytes of chat text per line
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4000))]
    pub size: u32,
    #[command(flatten)]
    pub timing: Timing,
    #[command(flatten)]
    pub common: Common,
}

impl Scenario for LobbyEchoArgs {
    fn name(&self) -> &'static str {
        "lobby-echo"
    }

    fn describe(&self) -> String {
        format!(
            "{} lobby clients alone in their rooms, window {}, {} B chat text, {} s measured after {} s warm-up",
            self.conns, self.window, self.size, self.timing.duration, self.timing.warmup
        )
    }

    fn service(&self) -> Service {
        Service::Lobby
    }

    fn params(&self) -> serde_json::Value {
        json!({"conns": self.conns, "window": self.window, "size": self.size,
               "duration": self.timing.duration, "warmup": self.timing.warmup,
               "client_threads": self.common.client_threads})
    }

    fn common(&self) -> &Common {
        &self.common
    }

    fn run(&self, server: &mut ServerProc, ctx: &RunCtx) -> BenchResult<Outcome> {
        harness::drive(server, ctx, "msgs", |addr, pid, progress| {
            self.run_async(addr, pid, progress)
        })
    }
}

impl LobbyEchoArgs {
    async fn run_async(
        &self,
        addr: SocketAddr,
        pid: u32,
        progress: Progress,
    ) -> BenchResult<Outcome> {
        let clients = harness::open_all(u64::from(self.conns), 64, |i| {
            harness::joined(addr, i, format!("r{i}"))
        })
        .await;
        let line = format!("{}\n", "x".repeat(self.size as usize));
        let window = self.window as usize;
        let run = harness::round_trips(
            clients,
            &self.timing,
            pid,
            progress,
            "client",
            |client, meter| chat_client(client, line.clone(), window, meter),
        )
        .await?;
        let mut outcome = Outcome::default();
        outcome.fig("msgs/s", "1/s", run.rate());
        Ok(run.finish(
            outcome,
            "client errors",
            "every client kept chatting",
            self.conns,
        ))
    }
}

async fn chat_client(mut client: LobbyClient, line: String, window: usize, meter: Meter) -> Tally {
    let Meter {
        phase,
        latencies,
        progress,
    } = meter;
    let mut sink = LatencySink::new(&latencies);
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(window);
    let mut messages = 0u64;
    let mut owed = 0usize;
    let mut batch = line.repeat(window).into_bytes();
    let mut text = Vec::new();
    if let Err(e) = client.writer.write_all(&batch).await {
        return Tally {
            messages,
            error: Some(e.to_string()),
        };
    }
    in_flight.extend(std::iter::repeat_n(Instant::now(), window));
    let error = loop {
        match net::read_line(&mut client.reader, &mut text, Duration::from_secs(5)).await {
            Ok(true) => {}
            Ok(false) => break Some("server closed the connection".to_owned()),
            Err(e) => break Some(e.to_string()),
        }
        if text.starts_with(b"MSG ") {
            let Some(sent) = in_flight.pop_front() else {
                break Some("an MSG nobody sent".to_owned());
            };
            if phase.measuring() {
                sink.record(sent.elapsed().as_nanos() as u64);
                messages += 1;
            }
            progress.add(1);
            owed += 1;
        }
        if phase.stopping() {
            break None;
        }
        // Answer a whole batch of replies with one write.
        if owed > 0 && !client.reader.buffer().contains(&b'\n') {
            batch.clear();
            for _ in 0..owed {
                batch.extend_from_slice(line.as_bytes());
            }
            if let Err(e) = client.writer.write_all(&batch).await {
                break Some(e.to_string());
            }
            in_flight.extend(std::iter::repeat_n(Instant::now(), owed));
            owed = 0;
        }
    };
    Tally { messages, error }
}
