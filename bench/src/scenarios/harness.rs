//! What the load scenarios share: running on the generator's runtime, opening
//! many connections, the warm-up and measured interval, gathering the client
//! tasks, sampling the server's memory, and the CPU and latency figures.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{LobbyClient, report_errors, secs};
use crate::net::ConnectOpts;
use crate::procfs::{self, CpuMark, CpuSpan, ThreadShare};
use crate::progress::Progress;
use crate::report::Outcome;
use crate::server::ServerProc;
use crate::stats::{self, Latencies, Phase};
use crate::{BenchResult, RunCtx};

/// Runs a scenario's client side, `body(addr, pid, progress)`, on the
/// generator's runtime, with a progress line counting `unit`.
pub fn drive<F, Fut>(
    server: &ServerProc,
    ctx: &RunCtx,
    unit: &'static str,
    body: F,
) -> BenchResult<Outcome>
where
    F: FnOnce(SocketAddr, u32, Progress) -> Fut,
    Fut: Future<Output = BenchResult<Outcome>>,
{
    let runtime = ctx.runtime()?;
    let (progress, _guard) = Progress::start(ctx.label.clone(), unit, ctx.quiet);
    runtime.block_on(body(server.addr, server.pid, progress))
}

/// Opens connections `0..count` with `open`, `in_flight` at a time; the
/// results come in index order.
pub async fn open_all<T, F, Fut>(count: u64, in_flight: usize, open: F) -> Vec<io::Result<T>>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    futures::stream::iter(0..count)
        .map(open)
        .buffered(in_flight)
        .collect()
        .await
}

/// Lobby client number `index` (from its own source address), joined to
/// `room` as the first to arrive there.
pub async fn joined(addr: SocketAddr, index: u64, room: String) -> io::Result<LobbyClient> {
    let mut client = LobbyClient::connect(addr, ConnectOpts::from_index(index)).await?;
    client.join(&room, 0).await?;
    Ok(client)
}

/// Warm-up and measured seconds of a throughput scenario.
#[derive(Debug, Clone, Args)]
pub struct Timing {
    /// Measured seconds
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of load before measuring
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
}

impl Timing {
    /// Lets the load warm up, then measures for `duration`; returns the CPU
    /// used over the measured interval.
    pub async fn measure(&self, pid: u32, phase: &Phase) -> CpuSpan {
        tokio::time::sleep(secs(self.warmup)).await;
        let interval = Interval::start(pid, phase);
        tokio::time::sleep(secs(self.duration)).await;
        interval.stop()
    }
}

/// The measured interval: `phase` is MEASURE from [`Interval::start`] on and
/// STOP after [`Interval::stop`], which reads the CPU used in between.
pub struct Interval {
    pid: u32,
    phase: Phase,
    start: CpuMark,
}

impl Interval {
    pub fn start(pid: u32, phase: &Phase) -> Interval {
        phase.set(stats::MEASURE);
        Interval {
            pid,
            phase: phase.clone(),
            start: CpuMark::now(pid),
        }
    }

    pub fn stop(self) -> CpuSpan {
        let end = CpuMark::now(self.pid);
        self.phase.set(stats::STOP);
        self.start.until(&end)
    }
}

/// Waits for each task in turn, at most 15 s each. A task that panicked or
/// did not stop gives an error (`"<what> task did not stop"`).
pub async fn gather<T>(tasks: Vec<JoinHandle<T>>, what: &str) -> Vec<Result<T, String>> {
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(
            match tokio::time::timeout(Duration::from_secs(15), task).await {
                Ok(Ok(result)) => Ok(result),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("{what} task did not stop")),
            },
        );
    }
    results
}

/// Samples the VmRSS of `pid` every 100 ms until `stop`; the task's result is
/// the peak seen.
pub fn sample_rss_peak(pid: u32, stop: CancellationToken) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0u64;
        let mut interval = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = interval.tick() => {}
            }
            if let Ok(rss) = procfs::rss_kib(pid) {
                peak = peak.max(rss);
            }
        }
        peak
    })
}

/// `<what> p50`, `p99`, `p99.9` and `max` of `latencies`, in µs.
pub fn latency_figs(outcome: &mut Outcome, what: &str, latencies: &Latencies) {
    let [p50, p99, p999, max] = stats::percentiles_us(latencies);
    for (quantile, value) in [("p50", p50), ("p99", p99), ("p99.9", p999), ("max", max)] {
        outcome.fig(&format!("{what} {quantile}"), "µs", value);
    }
}

/// Server CPU per `unit` of work (`count` of them), then the CPU shares of the
/// server, its busiest thread, the generator, softirq and everything else
/// over `span`.
pub fn cpu_figs(outcome: &mut Outcome, span: &CpuSpan, unit: &str, count: u64) {
    outcome.fig(
        &format!("server CPU per {unit}"),
        "µs",
        span.server_us_per(count),
    );
    outcome.fig("server CPU", "%", span.server_pct());
    thread_share_fig(outcome, span.server_threads.as_ref());
    outcome.fig("generator CPU", "%", span.client_pct());
    outcome.fig("softirq CPU (loopback TCP)", "%", span.irq_pct());
    outcome.fig("other processes CPU (noise)", "%", span.other_pct());
}

/// The figure `busiest thread share of server CPU` (%), the thread's name in
/// a note and the whole spread in the run's JSON; notes instead when the
/// server used no measurable CPU or threads exited meanwhile.
pub fn thread_share_fig(outcome: &mut Outcome, share: Option<&ThreadShare>) {
    let Some(share) = share else {
        outcome.note("server threads used no clock tick in the interval: no busiest-thread share");
        return;
    };
    outcome.fig(BUSIEST_THREAD, "%", share.busiest_pct);
    outcome.note(format!(
        "busiest server thread: {} (tid {}), {} of {} ticks; {} thread{}, {} busy",
        share.busiest.comm,
        share.busiest.tid,
        share.busiest.ticks,
        share.total_ticks,
        share.threads,
        if share.threads == 1 { "" } else { "s" },
        share.busy_threads
    ));
    if share.total_ticks < 100 {
        outcome.note(format!(
            "the busiest-thread share rests on {} clock ticks of {:.0} ms: coarse, measure longer",
            share.total_ticks,
            1000.0 / procfs::clock_ticks_per_sec()
        ));
    }
    if share.vanished_threads > 0 {
        outcome.note(format!(
            "{} server threads exited during the interval; their ticks are not in the busiest-thread share",
            share.vanished_threads
        ));
    }
    outcome.server_threads = Some(share.clone());
}

/// The figure name of the busiest server thread's share of server CPU.
pub const BUSIEST_THREAD: &str = "busiest thread share of server CPU";

/// What a round-trip client task records into: the run's phase, the shared
/// latency histogram and the progress count.
#[derive(Clone)]
pub struct Meter {
    pub phase: Phase,
    pub latencies: Latencies,
    pub progress: Progress,
}

/// What a round-trip client task reports: replies timed inside the measured
/// interval, and why it stopped early, if it did.
pub struct Tally {
    pub messages: u64,
    pub error: Option<String>,
}

/// The gathered result of a round-trip run.
pub struct RoundTrips {
    messages: u64,
    span: CpuSpan,
    latencies: Latencies,
    errors: Vec<String>,
}

/// Starts `client(conn, meter)` for every connection, lets the load warm up,
/// measures, and gathers the tasks' tallies (`what` names a task in errors).
pub async fn round_trips<C, F, Fut>(
    conns: Vec<io::Result<C>>,
    timing: &Timing,
    pid: u32,
    progress: Progress,
    what: &str,
    client: F,
) -> BenchResult<RoundTrips>
where
    F: Fn(C, Meter) -> Fut,
    Fut: Future<Output = Tally> + Send + 'static,
{
    let meter = Meter {
        phase: Phase::new(),
        latencies: stats::new_latencies(),
        progress,
    };
    let mut tasks = Vec::new();
    for conn in conns {
        tasks.push(tokio::spawn(client(conn?, meter.clone())));
    }
    let span = timing.measure(pid, &meter.phase).await;
    let mut messages = 0;
    let mut errors = Vec::new();
    for result in gather(tasks, what).await {
        match result {
            Ok(tally) => {
                messages += tally.messages;
                errors.extend(tally.error);
            }
            Err(error) => errors.push(error),
        }
    }
    Ok(RoundTrips {
        messages,
        span,
        latencies: meter.latencies,
        errors,
    })
}

impl RoundTrips {
    /// Replies per second over the measured interval.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.span.wall_secs
    }

    /// Adds the latency, CPU and error figures, and the check `check` that
    /// none of the `total` clients failed, to `outcome` (which holds the rate
    /// figures).
    pub fn finish(&self, mut outcome: Outcome, errors: &str, check: &str, total: u32) -> Outcome {
        latency_figs(&mut outcome, "latency", &self.latencies);
        cpu_figs(&mut outcome, &self.span, "msg", self.messages);
        report_errors(&mut outcome, errors, &self.errors);
        outcome.check(
            check,
            self.errors.is_empty(),
            format!("{} of {} failed", self.errors.len(), total),
        );
        outcome
    }
}
