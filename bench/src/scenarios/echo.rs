//! `echo`: raw echo throughput and latency.
//!
//! C connections each keep W messages of S bytes in flight. Raw echo has no
//! framing, so a reply is complete whenever S more bytes have come back; the
//! send times of in-flight messages wait in a per-connection queue.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Scenario;
use super::harness::{self, Meter, Tally, Timing};
use crate::net::{self, ConnectOpts};
use crate::progress::Progress;
use crate::report::Outcome;
use crate::server::{ServerProc, Service};
use crate::stats::LatencySink;
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
    #[command(flatten)]
    pub timing: Timing,
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
            self.conns, self.window, self.size, self.timing.duration, self.timing.warmup
        )
    }

    fn service(&self) -> Service {
        Service::Echo
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

impl EchoArgs {
    async fn run_async(
        &self,
        addr: SocketAddr,
        pid: u32,
        progress: Progress,
    ) -> BenchResult<Outcome> {
        let streams = harness::open_all(u64::from(self.conns), 64, |i| {
            net::connect_retry(addr, ConnectOpts::from_index(i))
        })
        .await;
        let (size, window) = (self.size as usize, self.window as usize);
        let run = harness::round_trips(
            streams,
            &self.timing,
            pid,
            progress,
            "connection",
            |stream, meter| echo_conn(stream, size, window, meter),
        )
        .await?;
        let mut outcome = Outcome::default();
        let rate = run.rate();
        outcome.fig("msgs/s", "1/s", rate);
        outcome.fig(
            "MB/s (payload, each way)",
            "MB/s",
            rate * f64::from(self.size) / 1e6,
        );
        Ok(run.finish(
            outcome,
            "connection errors",
            "every connection kept echoing",
            self.conns,
        ))
    }
}

async fn echo_conn(mut stream: TcpStream, size: usize, window: usize, meter: Meter) -> Tally {
    let Meter {
        phase,
        latencies,
        progress,
    } = meter;
    let payload = vec![b'x'; size * window];
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(window);
    let mut buf = vec![0u8; (size * window).max(4096)];
    let mut sink = LatencySink::new(&latencies);
    let mut partial = 0usize;
    let mut messages = 0u64;
    let mut error = None;
    let now = Instant::now();
    if let Err(e) = stream.write_all(&payload).await {
        return Tally {
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
    Tally { messages, error }
}
