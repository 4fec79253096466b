//! `echo`: raw echo throughput and latency.
//!
//! C connections each keep W messages of S bytes in flight. Raw echo has no
//! framing, so a reply is complete whenever S more bytes have come back; the
//! send times of in-flight messages wait in a per-connection queue.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Scenario, report_errors, secs};
use crate::net::{self, ConnectOpts};
use crate::procfs::CpuMark;
use crate::progress::Progress;
use crate::report::Outcome;
use crate::server::{ServerProc, Service, Target};
use crate::stats::{self, Latencies, LatencySink, Phase};
use crate::{BenchResult, Common, RunCtx};

#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    /// Connections
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub conns: u32,
    /// Messages in flight per connection
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub window: u32,
    /// Bytes per message
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_536))]
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

impl Scenario for EchoArgs {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn describe(&self) -> String {
        format!(
            "raw echo, {} conns, window {}, {} B messages, {} s measured after {} s warm-up",
            self.conns, self.window, self.size, self.duration, self.warmup
        )
    }

    fn service(&self) -> Service {
        Service::Echo
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

struct ConnResult {
    messages: u64,
    error: Option<String>,
}

impl EchoArgs {
    async fn run_async(
        &self,
        addr: SocketAddr,
        pid: u32,
        progress: Progress,
    ) -> BenchResult<Outcome> {
        let streams: Vec<_> = futures::stream::iter(0..self.conns as u64)
            .map(|i| {
                net::connect_retry(
                    addr,
                    ConnectOpts {
                        source: Some(net::source_ip(i)),
                        ..ConnectOpts::default()
                    },
                )
            })
            .buffered(64)
            .collect()
            .await;
        let phase = Phase::new();
        let latencies = stats::new_latencies();
        let mut tasks = Vec::new();
        for stream in streams {
            tasks.push(tokio::spawn(echo_conn(
                stream?,
                self.size as usize,
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
                Err(_) => errors.push("connection task did not stop".into()),
            }
        }
        let mut outcome = Outcome::default();
        let rate = messages as f64 / span.wall_secs;
        outcome.fig("msgs/s", "1/s", rate);
        outcome.fig(
            "MB/s (payload, each way)",
            "MB/s",
            rate * f64::from(self.size) / 1e6,
        );
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
        report_errors(&mut outcome, "connection errors", &errors);
        outcome.check(
            "every connection kept echoing",
            errors.is_empty(),
            format!("{} of {} failed", errors.len(), self.conns),
        );
        Ok(outcome)
    }
}

async fn echo_conn(
    mut stream: TcpStream,
    size: usize,
    window: usize,
    phase: Phase,
    latencies: Latencies,
    progress: Progress,
) -> ConnResult {
    let payload = vec![b'x'; size * window];
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(window);
    let mut buf = vec![0u8; (size * window).max(4096)];
    let mut sink = LatencySink::new(&latencies);
    let mut partial = 0usize;
    let mut messages = 0u64;
    let mut error = None;
    let now = Instant::now();
    if let Err(e) = stream.write_all(&payload).await {
        return ConnResult {
            messages,
            error: Some(e.to_string()),
        };
    }
    in_flight.extend(std::iter::repeat_n(now, window));
    // Bounded by the run's phases; each read waits at most 5 s.
    loop {
        let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) => {
                error = Some("server closed the connection".to_owned());
                break;
            }
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                error = Some(e.to_string());
                break;
            }
            Err(_) => {
                error = Some("no echo for 5 s".to_owned());
                break;
            }
        };
        partial += n;
        let done = partial / size;
        partial %= size;
        if done > in_flight.len() {
            error = Some("more bytes echoed than sent".to_owned());
            break;
        }
        let now = Instant::now();
        let measuring = phase.measuring();
        for sent in in_flight.drain(..done) {
            if measuring {
                sink.record(now.duration_since(sent).as_nanos() as u64);
                messages += 1;
            }
        }
        progress.add(done as u64);
        if phase.stopping() {
            break;
        }
        if done > 0 {
            if let Err(e) = stream.write_all(&payload[..done * size]).await {
                error = Some(e.to_string());
                break;
            }
            in_flight.extend(std::iter::repeat_n(Instant::now(), done));
        }
    }
    ConnResult { messages, error }
}
