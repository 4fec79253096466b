//! `lobby-echo`: chat round trips through the lobby.
//!
//! C clients each `/join` a room of their own (`r<i>`) and keep W chat lines
//! in flight; the `MSG` each line comes back as is the reply that is timed.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{LobbyClient, Scenario, report_errors, secs};
use crate::net::{self, ConnectOpts};
use crate::procfs::CpuMark;
use crate::progress::Progress;
use crate::report::Outcome;
use crate::server::{ServerProc, Service, Target};
use crate::stats::{self, Latencies, LatencySink, Phase};
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
    /// Measured seconds
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of load before measuring
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
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
            self.conns, self.window, self.size, self.duration, self.warmup
        )
    }

    fn service(&self) -> Service {
        Service::Lobby
    }

    fn server_args(&self, _: Target) -> Vec<String> {
        Vec::new()
    }

    fn params(&self) -> serde_json::Value {
        json!({"conns": self.conns, "window": self.window, "size": self.size,
               "duration": self.duration, "warmup": self.warmup,
               "client_threads": self.common.client_threads})
    }

    fn common(&self) -> &Common {
        &self.common
    }

    fn run(&self, server: &mut ServerProc, ctx: &RunCtx) -> BenchResult<Outcome> {
        let runtime = ctx.runtime()?;
        let (progress, _guard) = Progress::start(ctx.label.clone(), "msgs", ctx.quiet);
        runtime.block_on(self.run_async(server.addr, server.pid, progress))
    }
}

struct ClientResult {
    messages: u64,
    error: Option<String>,
}

impl LobbyEchoArgs {
    async fn run_async(
        &self,
        addr: SocketAddr,
        pid: u32,
        progress: Progress,
    ) -> BenchResult<Outcome> {
        let clients: Vec<std::io::Result<LobbyClient>> =
            futures::stream::iter(0..self.conns as u64)
                .map(|i| async move {
                    let opts = ConnectOpts {
                        source: Some(net::source_ip(i)),
                        ..ConnectOpts::default()
                    };
                    let mut client = LobbyClient::connect(addr, opts).await?;
                    client.join(&format!("r{i}"), 0).await?;
                    Ok(client)
                })
                .buffered(64)
                .collect()
                .await;
        let phase = Phase::new();
        let latencies = stats::new_latencies();
        let mut tasks = Vec::new();
        let line = format!("{}\n", "x".repeat(self.size as usize));
        for client in clients {
            tasks.push(tokio::spawn(chat_client(
                client?,
                line.clone(),
                self.window as usize,
                phase.clone(),
                latencies.clone(),
                progress.clone(),
            )));
        }
        tokio::time::sleep(secs(self.warmup)).await;
        phase.set(stats::MEASURE);
        let start = CpuMark::now(pid);
        tokio::time::sleep(secs(self.duration)).await;
        let end = CpuMark::now(pid);
        phase.set(stats::STOP);
        let span = start.until(&end);

        let mut messages = 0;
        let mut errors = Vec::new();
        for task in tasks {
            match tokio::time::timeout(Duration::from_secs(15), task).await {
                Ok(Ok(result)) => {
                    messages += result.messages;
                    errors.extend(result.error);
                }
                Ok(Err(error)) => errors.push(error.to_string()),
                Err(_) => errors.push("client task did not stop".into()),
            }
        }
        let mut outcome = Outcome::default();
        outcome.fig("msgs/s", "1/s", messages as f64 / span.wall_secs);
        let [p50, p99, p999, max] = stats::percentiles_us(&latencies);
        outcome.fig("latency p50", "µs", p50);
        outcome.fig("latency p99", "µs", p99);
        outcome.fig("latency p99.9", "µs", p999);
        outcome.fig("latency max", "µs", max);
        outcome.fig("server CPU per msg", "µs", span.server_us_per(messages));
        outcome.fig("server CPU", "%", span.server_pct());
        outcome.fig("generator CPU", "%", span.client_pct());
        outcome.fig("softirq CPU (loopback TCP)", "%", span.irq_pct());
        outcome.fig("other processes CPU (noise)", "%", span.other_pct());
        report_errors(&mut outcome, "client errors", &errors);
        outcome.check(
            "every client kept chatting",
            errors.is_empty(),
            format!("{} of {} failed", errors.len(), self.conns),
        );
        Ok(outcome)
    }
}

async fn chat_client(
    mut client: LobbyClient,
    line: String,
    window: usize,
    phase: Phase,
    latencies: Latencies,
    progress: Progress,
) -> ClientResult {
    let mut sink = LatencySink::new(&latencies);
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(window);
    let mut messages = 0u64;
    let mut owed = 0usize;
    let mut batch = line.repeat(window).into_bytes();
    let mut text = Vec::new();
    if let Err(e) = client.writer.write_all(&batch).await {
        return ClientResult {
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
    ClientResult { messages, error }
}
