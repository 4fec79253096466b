//! `churn`: sessions that come and go.
//!
//! N cycles of: connect, read `WELCOME`, `/join c<i % 100>`, read up to this
//! client's `WHO`, close — even cycles with a plain close (FIN), odd ones with
//! `SO_LINGER` 0 (a reset) — run by a fixed number of concurrent workers.
//! Afterwards one more client asks `/rooms` until the server has caught up:
//! every room must be gone (`ROOMS` alone). Leaked rooms, the server's RSS and
//! its open files before and after are reported.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::harness;
use super::{LobbyClient, Scenario, report_errors, secs};
use crate::net::{self, ConnectOpts};
use crate::procfs::{self, CpuMark};
use crate::progress::Progress;
use crate::report::Outcome;
use crate::server::{ServerProc, Service};
use crate::{BenchResult, Common, RunCtx};

#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    /// Connect/join/close cycles
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub cycles: u64,
    /// Cycles in progress at once
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=2_000))]
    pub concurrency: u32,
    /// Distinct rooms joined (`c0` … )
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub rooms: u64,
    /// Longest the cycles may take, in seconds (fewer cycles are reported then)
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    #[command(flatten)]
    pub common: Common,
}

impl Scenario for ChurnArgs {
    fn name(&self) -> &'static str {
        "churn"
    }

    fn describe(&self) -> String {
        format!(
            "{} cycles of connect, /join (1 of {} rooms), close (half reset), {} at once, at most {} s",
            self.cycles, self.rooms, self.concurrency, self.duration
        )
    }

    fn service(&self) -> Service {
        Service::Lobby
    }

    fn params(&self) -> serde_json::Value {
        json!({"cycles": self.cycles, "concurrency": self.concurrency, "rooms": self.rooms,
               "duration": self.duration, "client_threads": self.common.client_threads})
    }

    fn common(&self) -> &Common {
        &self.common
    }

    fn run(&self, server: &mut ServerProc, ctx: &RunCtx) -> BenchResult<Outcome> {
        harness::drive(server, ctx, "cycles", |addr, pid, progress| {
            self.run_async(addr, pid, progress)
        })
    }
}

/// One cycle; the stream is dropped (closed) before it returns.
async fn cycle(addr: SocketAddr, i: u64, rooms: u64) -> std::io::Result<()> {
    let mut client = LobbyClient::connect(addr, ConnectOpts::from_index(i)).await?;
    // Other clients' JOIN and QUIT lines for the same room may come first.
    client.join(&format!("c{}", i % rooms), 10_000).await?;
    if i % 2 == 1 {
        let stream = client
            .reader
            .into_inner()
            .reunite(client.writer)
            .map_err(|e| std::io::Error::other(format!("cannot reunite socket halves: {e}")))?;
        net::set_reset_on_close(&stream)?;
        drop(stream);
    }
    Ok(())
}

impl ChurnArgs {
    async fn run_async(
        &self,
        addr: SocketAddr,
        pid: u32,
        progress: Progress,
    ) -> BenchResult<Outcome> {
        let rss_before = procfs::rss_kib(pid)?;
        let fds_before = procfs::fd_count(pid);
        let next = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + secs(self.duration);
        let start = CpuMark::now(pid);
        let mut workers = Vec::new();
        for _ in 0..self.concurrency {
            let next = next.clone();
            let progress = progress.clone();
            let (cycles, rooms) = (self.cycles, self.rooms);
            workers.push(tokio::spawn(async move {
                let mut done = 0u64;
                let mut errors = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= cycles || Instant::now() >= deadline {
                        break;
                    }
                    match cycle(addr, i, rooms).await {
                        Ok(()) => done += 1,
                        Err(error) => errors.push(format!("cycle {i}: {error}")),
                    }
                    progress.add(1);
                }
                (done, errors)
            }));
        }
        let mut done = 0;
        let mut errors = Vec::new();
        for worker in workers {
            let (ok, failed) = worker.await?;
            done += ok;
            errors.extend(failed);
        }
        let end = CpuMark::now(pid);
        let span = start.until(&end);

        // Wait (bounded) for the server to finish cleaning up, then look.
        let settle_start = Instant::now();
        let mut control = LobbyClient::connect(addr, ConnectOpts::default()).await?;
        let mut rooms = control.rooms().await?;
        for _ in 0..100 {
            if rooms.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            rooms = control.rooms().await?;
        }
        let settle_secs = settle_start.elapsed().as_secs_f64();
        // Closed sockets may take a moment longer than the rooms.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rss_after = procfs::rss_kib(pid)?;
        let fds_after = procfs::fd_count(pid);

        let attempted = done + errors.len() as u64;
        let mut outcome = Outcome::default();
        outcome.fig("cycles/s", "1/s", done as f64 / span.wall_secs);
        outcome.fig("cycles completed", "count", done as f64);
        harness::cpu_figs(&mut outcome, &span, "cycle", done);
        outcome.fig("leaked rooms", "count", rooms.len() as f64);
        outcome.fig("time until no rooms", "s", settle_secs);
        outcome.fig("RSS before", "KiB", rss_before as f64);
        outcome.fig("RSS after", "KiB", rss_after as f64);
        // The control connection itself holds one descriptor.
        outcome.fig(
            "server fds leaked",
            "count",
            fds_after as f64 - fds_before as f64 - 1.0,
        );
        report_errors(&mut outcome, "failed cycles", &errors);
        outcome.check(
            "all cycles done",
            done == self.cycles,
            format!("{done} of {} ({attempted} attempted)", self.cycles),
        );
        outcome.check(
            "no leaked rooms",
            rooms.is_empty(),
            if rooms.is_empty() {
                "ROOMS is empty".to_owned()
            } else {
                format!("still listed: {rooms:?}")
            },
        );
        outcome.check(
            "no leaked sockets",
            fds_after <= fds_before + 1,
            format!("server fds {fds_before} before, {fds_after} after (1 is the control client)"),
        );
        Ok(outcome)
    }
}
