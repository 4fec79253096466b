//! `fanout`: one busy room.
//!
//! M members join one room; K of them also send lines `s<k> <seq> <ns>` as
//! fast as the room allows, each with at most W lines unacknowledged (a line
//! is acknowledged when its sender sees its own `MSG`). Every member parses
//! every `MSG`, checks that each sender's seq goes up by exactly one (nothing
//! lost, order kept) and records the delivery latency from the send time in
//! the line. After the measured interval the senders stop and the bench waits
//! for every member to have received every line sent.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::harness::{self, Timing};
use super::{LobbyClient, Scenario, report_errors, secs};
use crate::procfs;
use crate::progress::Progress;
use crate::report::Outcome;
use crate::server::{ServerProc, Service, Target};
use crate::stats::{self, Clock, Latencies, LatencySink, Phase};
use crate::{BenchResult, Common, RunCtx};

/// The one room of `fanout`, `ws-fanout` and `cluster-fanout`.
pub(crate) const ROOM: &str = "fan";

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Members of the room (senders included)
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=15_000))]
    pub members: u32,
    /// Members that also send
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub senders: u32,
    /// Unacknowledged lines per sender
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub window: u32,
    /// Switchboard's --outbound-queue (and the baseline's)
    #[arg(long, default_value_t = 1024)]
    pub outbound_queue: u32,
    #[command(flatten)]
    pub timing: Timing,
    /// Longest wait, after the senders stop, for every line to be delivered
    #[arg(long, default_value_t = 20.0)]
    pub drain: f64,
    #[command(flatten)]
    pub common: Common,
}

impl Scenario for FanoutArgs {
    fn name(&self) -> &'static str {
        "fanout"
    }

    fn describe(&self) -> String {
        self.describe_members("members")
    }

    fn service(&self) -> Service {
        Service::Lobby
    }

    fn server_args(&self, _: Target) -> Vec<String> {
        vec!["--outbound-queue".into(), self.outbound_queue.to_string()]
    }

    fn params(&self) -> serde_json::Value {
        json!({"members": self.members, "senders": self.senders, "window": self.window,
               "outbound_queue": self.outbound_queue, "duration": self.timing.duration,
               "warmup": self.timing.warmup, "client_threads": self.common.client_threads})
    }

    fn common(&self) -> &Common {
        &self.common
    }

    fn run(&self, server: &mut ServerProc, ctx: &RunCtx) -> BenchResult<Outcome> {
        harness::drive(server, ctx, "deliveries", |addr, pid, progress| {
            self.run_async::<TextMember>(vec![addr], pid, Vec::new(), progress)
        })
    }
}

impl FanoutArgs {
    /// The scenario's description, its members called `members`.
    pub(crate) fn describe_members(&self, members: &str) -> String {
        format!(
            "{} {members} in one room, {} senders with {} lines unacknowledged each, outbound queue {}, {} s measured after {} s warm-up",
            self.members,
            self.senders.min(self.members),
            self.window,
            self.outbound_queue,
            self.timing.duration,
            self.timing.warmup
        )
    }
}

/// What the members share with the bench while running.
struct Shared {
    phase: Phase,
    clock: Clock,
    latencies: Latencies,
    progress: Progress,
    /// Lines sent so far, per sender.
    sent: Vec<AtomicU64>,
    /// `MSG` lines received by all members together.
    received: AtomicU64,
    stop: CancellationToken,
}

struct MemberResult {
    /// `MSG` lines received from each sender.
    received: Vec<u64>,
    /// Lines whose seq was not the one after the previous line of that sender.
    order_violations: u64,
    /// Deliveries inside the measured interval.
    measured: u64,
    /// `QUIT` lines seen (someone was dropped).
    quits: u64,
    error: Option<String>,
}

impl FanoutArgs {
    /// Runs the load, members speaking `T`, against the servers at `addrs`
    /// (member `i` on `addrs[i % len]`, so the first senders are spread over
    /// them too); `pid` is the server measured like every scenario's,
    /// `others` more processes (other cluster nodes, Redis) whose CPU is
    /// reported too.
    pub(crate) async fn run_async<T: Transport>(
        &self,
        addrs: Vec<SocketAddr>,
        pid: u32,
        others: Vec<(String, u32)>,
        progress: Progress,
    ) -> BenchResult<Outcome> {
        let members = self.members as usize;
        let senders = (self.senders as usize).min(members);
        let setup_start = Instant::now();
        let addrs = Arc::new(addrs);
        let clients = harness::open_all(members as u64, 32, |i| {
            T::joined(addrs[i as usize % addrs.len()], i)
        })
        .await;
        let setup_secs = setup_start.elapsed().as_secs_f64();
        let shared = Arc::new(Shared {
            phase: Phase::new(),
            clock: Clock::new(),
            latencies: stats::new_latencies(),
            progress,
            sent: (0..senders).map(|_| AtomicU64::new(0)).collect(),
            received: AtomicU64::new(0),
            stop: CancellationToken::new(),
        });
        let mut tasks = Vec::new();
        for (i, client) in clients.into_iter().enumerate() {
            let sender = (i < senders).then_some(i);
            let window = self.window as usize;
            tasks.push(tokio::spawn(member(
                client?,
                sender,
                window,
                shared.clone(),
            )));
        }
        tokio::time::sleep(secs(self.timing.warmup)).await;
        let others_before: Vec<u64> = others
            .iter()
            .map(|(_, pid)| procfs::cpu_ticks(*pid).unwrap_or(0))
            .collect();
        let interval = harness::Interval::start(pid, &shared.phase);
        tokio::time::sleep(secs(self.timing.duration)).await;
        let span = interval.stop();
        let others_ticks: Vec<u64> = others
            .iter()
            .zip(&others_before)
            .map(|((_, pid), before)| procfs::cpu_ticks(*pid).unwrap_or(0).saturating_sub(*before))
            .collect();

        // Drain: every member must receive every line sent.
        let drain_start = Instant::now();
        let deadline = drain_start + secs(self.drain);
        let expected = || {
            members as u64
                * shared
                    .sent
                    .iter()
                    .map(|s| s.load(Ordering::SeqCst))
                    .sum::<u64>()
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        while Instant::now() < deadline && shared.received.load(Ordering::SeqCst) < expected() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let drain_secs = drain_start.elapsed().as_secs_f64();
        shared.stop.cancel();
        let sent: Vec<u64> = shared
            .sent
            .iter()
            .map(|s| s.load(Ordering::SeqCst))
            .collect();

        let mut measured = 0;
        let mut lost = 0;
        let mut violations = 0;
        let mut quits = 0;
        let mut errors = Vec::new();
        for result in harness::gather(tasks, "member").await {
            match result {
                Ok(result) => {
                    measured += result.measured;
                    violations += result.order_violations;
                    quits += result.quits;
                    for (k, &count) in result.received.iter().enumerate() {
                        lost += sent[k].saturating_sub(count);
                    }
                    errors.extend(result.error);
                }
                Err(error) => {
                    errors.push(error);
                    lost += sent.iter().sum::<u64>();
                }
            }
        }
        let total_sent: u64 = sent.iter().sum();
        let mut outcome = Outcome::default();
        outcome.fig("deliveries/s", "1/s", measured as f64 / span.wall_secs);
        outcome.fig(
            "lines sent/s (deliveries/members)",
            "1/s",
            measured as f64 / members as f64 / span.wall_secs,
        );
        harness::latency_figs(&mut outcome, "delivery latency", &shared.latencies);
        harness::cpu_figs(&mut outcome, &span, "delivery", measured);
        if !others.is_empty() {
            let tick_us = 1e6 / procfs::clock_ticks_per_sec();
            let lines = measured as f64 / members as f64;
            for ((name, _), ticks) in others.iter().zip(&others_ticks) {
                let us = *ticks as f64 * tick_us;
                outcome.fig(
                    &format!("{name} CPU per delivery"),
                    "µs",
                    us / measured.max(1) as f64,
                );
                outcome.fig(
                    &format!("{name} CPU per line sent"),
                    "µs",
                    us / lines.max(1.0),
                );
            }
            let all_us = span.server_secs * 1e6 + others_ticks.iter().sum::<u64>() as f64 * tick_us;
            outcome.fig(
                "all nodes + redis CPU per delivery",
                "µs",
                all_us / measured.max(1) as f64,
            );
        }
        outcome.fig("lines sent in all", "count", total_sent as f64);
        outcome.fig("lost", "count", lost as f64);
        outcome.fig("order violations", "count", violations as f64);
        outcome.fig(&format!("{} seen", T::QUITS), "count", quits as f64);
        outcome.fig("drain after stop", "s", drain_secs);
        outcome.fig(T::SETUP, "s", setup_secs);
        report_errors(&mut outcome, "member errors", &errors);
        outcome.check(
            "nothing lost",
            lost == 0,
            format!(
                "lost={lost} of {} deliveries owed",
                total_sent * members as u64
            ),
        );
        outcome.check(
            "order kept",
            violations == 0,
            format!("order_violations={violations}"),
        );
        outcome.check(
            "no member dropped",
            errors.is_empty() && quits == 0,
            format!("{} member errors, {quits} {}", errors.len(), T::QUITS),
        );
        Ok(outcome)
    }
}

/// How fanout's members speak to the server: the text lobby over TCP
/// ([`TextMember`], `fanout` and `cluster-fanout`) or the JSON lobby over
/// WebSocket (`ws-fanout`). The run, the members' bookkeeping and the figures
/// are the same for both.
pub(crate) trait Transport: Sized + Send + 'static {
    /// The setup figure's name, e.g. `setup (connect + join all)`.
    const SETUP: &'static str;
    /// What the member's notices of someone leaving are called in figures,
    /// e.g. `QUIT lines`.
    const QUITS: &'static str;

    /// Connection number `index` to `addr`, joined to [`ROOM`].
    fn joined(addr: SocketAddr, index: u64) -> impl Future<Output = io::Result<Self>> + Send;

    /// Whether a sender may top its window up now.
    fn may_send(&self) -> bool;

    /// Sends `count` lines `s<k> <seq> <now>`, numbered on from `seq`.
    fn send(
        &mut self,
        k: usize,
        seq: &mut u64,
        count: usize,
        now: u64,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// The next thing the server sent, or [`Event::Stop`] once `stop` is
    /// cancelled; `idle()` is called first when nothing is ready to read.
    fn next(
        &mut self,
        stop: &CancellationToken,
        idle: impl FnOnce() + Send,
    ) -> impl Future<Output = Event> + Send;
}

/// What a member read.
pub(crate) enum Event {
    /// A chat line `s<k> <seq> <ns>` from sender `k`.
    Msg { k: usize, seq: u64, ns: u64 },
    /// Someone left the room.
    Quit,
    /// Anything else.
    Other,
    /// The bench stopped the members.
    Stop,
    /// The connection failed or was closed.
    Failed(String),
}

/// A member of the text lobby.
pub(crate) struct TextMember {
    client: LobbyClient,
    line: Vec<u8>,
    out: Vec<u8>,
}

impl Transport for TextMember {
    const SETUP: &'static str = "setup (connect + join all)";
    const QUITS: &'static str = "QUIT lines";

    async fn joined(addr: SocketAddr, index: u64) -> io::Result<Self> {
        Ok(TextMember {
            client: harness::joined(addr, index, ROOM.to_owned()).await?,
            line: Vec::with_capacity(128),
            out: Vec::new(),
        })
    }

    /// Only when it has read all it was sent.
    fn may_send(&self) -> bool {
        !self.client.reader.buffer().contains(&b'\n')
    }

    async fn send(
        &mut self,
        k: usize,
        seq: &mut u64,
        count: usize,
        now: u64,
    ) -> Result<(), String> {
        self.out.clear();
        for _ in 0..count {
            self.out
                .extend_from_slice(format!("s{k} {seq} {now}\n").as_bytes());
            *seq += 1;
        }
        self.client
            .writer
            .write_all(&self.out)
            .await
            .map_err(|e| e.to_string())
    }

    async fn next(&mut self, stop: &CancellationToken, idle: impl FnOnce() + Send) -> Event {
        if !self.client.reader.buffer().contains(&b'\n') {
            idle();
        }
        self.line.clear();
        let read = tokio::select! {
            biased;
            () = stop.cancelled() => return Event::Stop,
            read = self.client.reader.read_until(b'\n', &mut self.line) => read,
        };
        match read {
            Ok(0) => return Event::Failed("server closed the connection".into()),
            Ok(_) => {}
            Err(e) => return Event::Failed(e.to_string()),
        }
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
        }
        if let Some((k, seq, ns)) = parse_msg(&self.line) {
            Event::Msg { k, seq, ns }
        } else if self.line.starts_with(b"QUIT ") {
            Event::Quit
        } else {
            Event::Other
        }
    }
}

/// Parses `MSG <room> <nick> s<k> <seq> <ns>` into (k, seq, ns).
fn parse_msg(line: &[u8]) -> Option<(usize, u64, u64)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.splitn(4, ' ');
    if words.next()? != "MSG" {
        return None;
    }
    let _room = words.next()?;
    let _nick = words.next()?;
    parse_say(words.next()?.strip_prefix('s')?)
}

/// Parses the rest of a sender's line, `<k> <seq> <ns>` after its `s`,
/// into (k, seq, ns).
pub(crate) fn parse_say(text: &str) -> Option<(usize, u64, u64)> {
    let mut words = text.split(' ');
    let k = words.next()?.parse().ok()?;
    let seq = words.next()?.parse().ok()?;
    let ns = words.next()?.parse().ok()?;
    Some((k, seq, ns))
}

async fn member<T: Transport>(
    mut conn: T,
    sender: Option<usize>,
    window: usize,
    shared: Arc<Shared>,
) -> MemberResult {
    let senders = shared.sent.len();
    let mut result = MemberResult {
        received: vec![0; senders],
        order_violations: 0,
        measured: 0,
        quits: 0,
        error: None,
    };
    let mut next_seq = vec![0u64; senders];
    let mut sink = LatencySink::new(&shared.latencies);
    let mut unreported = 0u64;
    let mut unacked = 0usize;
    let mut seq = 0u64;
    loop {
        if let Some(k) = sender
            && !shared.phase.stopping()
            && unacked < window
            && conn.may_send()
        {
            let now = shared.clock.nanos();
            let count = window - unacked;
            shared.sent[k].fetch_add(count as u64, Ordering::SeqCst);
            unacked = window;
            if let Err(error) = conn.send(k, &mut seq, count, now).await {
                result.error = Some(error);
                break;
            }
        }
        // Deliveries are reported in batches: whenever nothing is ready.
        let event = conn
            .next(&shared.stop, || {
                if unreported > 0 {
                    shared.received.fetch_add(unreported, Ordering::SeqCst);
                    shared.progress.add(unreported);
                    unreported = 0;
                }
            })
            .await;
        let (k, s, ns) = match event {
            Event::Msg { k, seq, ns } => (k, seq, ns),
            Event::Quit => {
                result.quits += 1;
                continue;
            }
            Event::Other => continue,
            Event::Stop => break,
            Event::Failed(error) => {
                result.error = Some(error);
                break;
            }
        };
        if k >= senders {
            continue;
        }
        if s != next_seq[k] {
            result.order_violations += 1;
        }
        next_seq[k] = s + 1;
        result.received[k] += 1;
        unreported += 1;
        if shared.phase.measuring() {
            sink.record(shared.clock.nanos().saturating_sub(ns));
            result.measured += 1;
        }
        if sender == Some(k) {
            unacked = unacked.saturating_sub(1);
        }
    }
    if unreported > 0 {
        shared.received.fetch_add(unreported, Ordering::SeqCst);
    }
    result
}
