//! `ws-fanout`: one busy room of WebSocket members.
//!
//! Like `fanout`, over WebSocket and the JSON lobby (SPEC §5): M members
//! upgrade `GET /ws` and join one room; K of them also send
//! `{"cmd":"say","text":"s<k> <seq> <ns>"}` as fast as the room allows,
//! each with at most W lines unacknowledged (acknowledged when the sender
//! sees its own `msg` event). Every member checks each sender's order and
//! records the delivery latency. Switchboard serves it on `--http-bind`; the
//! baseline is `tokio-baseline --mode ws` (tokio-tungstenite).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::harness::{self, Timing};
use super::{Scenario, report_errors, secs};
use crate::net::{self, ConnectOpts};
use crate::progress::Progress;
use crate::report::Outcome;
use crate::server::{ServerProc, Service, Target};
use crate::stats::{self, Clock, Latencies, LatencySink, Phase};
use crate::{BenchResult, Common, RunCtx};

const ROOM: &str = "fan";

#[derive(Debug, Clone, Args)]
pub struct WsFanoutArgs {
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

impl Scenario for WsFanoutArgs {
    fn name(&self) -> &'static str {
        "ws-fanout"
    }

    fn describe(&self) -> String {
        format!(
            "{} WebSocket members in one room, {} senders with {} lines unacknowledged each, outbound queue {}, {} s measured after {} s warm-up",
            self.members,
            self.senders.min(self.members),
            self.window,
            self.outbound_queue,
            self.timing.duration,
            self.timing.warmup
        )
    }

    fn service(&self) -> Service {
        Service::WsLobby
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
            self.run_async(addr, pid, progress)
        })
    }
}

type Ws = WebSocketStream<TcpStream>;

/// Upgrades connection number `index` and joins the room.
async fn joined(addr: SocketAddr, index: u64) -> std::io::Result<Ws> {
    let stream = net::connect_retry(addr, ConnectOpts::from_index(index)).await?;
    let url = format!("ws://{addr}/ws");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(std::io::Error::other)?;
    let join = json!({"cmd": "join", "room": ROOM}).to_string();
    ws.send(Message::text(join))
        .await
        .map_err(std::io::Error::other)?;
    // Welcome, then our own join, then who (others' joins may come between).
    for _ in 0..64 {
        let message = tokio::time::timeout(net::IO_TIMEOUT, ws.next())
            .await
            .map_err(|_| std::io::Error::other("no who within the timeout"))?;
        match message {
            Some(Ok(Message::Text(text))) if text.starts_with(r#"{"event":"who""#) => {
                return Ok(ws);
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(std::io::Error::other(error)),
            None => return Err(std::io::Error::other("closed before who")),
        }
    }
    Err(std::io::Error::other("no who after 64 events"))
}

/// What the members share with the bench while running.
struct Shared {
    phase: Phase,
    clock: Clock,
    latencies: Latencies,
    progress: Progress,
    sent: Vec<AtomicU64>,
    received: AtomicU64,
    stop: CancellationToken,
}

struct MemberResult {
    received: Vec<u64>,
    order_violations: u64,
    measured: u64,
    quits: u64,
    error: Option<String>,
}

impl WsFanoutArgs {
    async fn run_async(
        &self,
        addr: SocketAddr,
        pid: u32,
        progress: Progress,
    ) -> BenchResult<Outcome> {
        let members = self.members as usize;
        let senders = (self.senders as usize).min(members);
        let setup_start = Instant::now();
        let clients = harness::open_all(members as u64, 32, |i| joined(addr, i)).await;
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
        let span = self.timing.measure(pid, &shared.phase).await;

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

        let (mut measured, mut lost, mut violations, mut quits) = (0, 0, 0, 0);
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
        outcome.fig("lines sent in all", "count", total_sent as f64);
        outcome.fig("lost", "count", lost as f64);
        outcome.fig("order violations", "count", violations as f64);
        outcome.fig("quit events seen", "count", quits as f64);
        outcome.fig("drain after stop", "s", drain_secs);
        outcome.fig("setup (upgrade + join all)", "s", setup_secs);
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
            format!("{} member errors, {quits} quit events", errors.len()),
        );
        Ok(outcome)
    }
}

/// Parses a `msg` event whose text is `s<k> <seq> <ns>` into (k, seq, ns).
/// Both servers render `{"event":"msg","room":R,"nick":N,"text":T}`.
fn parse_msg(event: &str) -> Option<(usize, u64, u64)> {
    if !event.starts_with(r#"{"event":"msg""#) {
        return None;
    }
    let text = event.rsplit_once(r#""text":"s"#)?.1.strip_suffix("\"}")?;
    let mut words = text.split(' ');
    let k = words.next()?.parse().ok()?;
    let seq = words.next()?.parse().ok()?;
    let ns = words.next()?.parse().ok()?;
    Some((k, seq, ns))
}

async fn member(
    mut ws: Ws,
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
        {
            let now = shared.clock.nanos();
            let count = window - unacked;
            let mut failed = None;
            for _ in 0..count {
                let say = format!(r#"{{"cmd":"say","text":"s{k} {seq} {now}"}}"#);
                seq += 1;
                if let Err(error) = ws.feed(Message::text(say)).await {
                    failed = Some(error.to_string());
                    break;
                }
            }
            shared.sent[k].fetch_add(count as u64, Ordering::SeqCst);
            unacked = window;
            if let Some(error) = failed.or(ws.flush().await.err().map(|e| e.to_string())) {
                result.error = Some(error);
                break;
            }
        }
        // Deliveries are reported in batches: whenever no message is ready.
        let next = match ws.next().now_or_never() {
            Some(next) => next,
            None => {
                if unreported > 0 {
                    shared.received.fetch_add(unreported, Ordering::SeqCst);
                    shared.progress.add(unreported);
                    unreported = 0;
                }
                tokio::select! {
                    biased;
                    () = shared.stop.cancelled() => break,
                    next = ws.next() => next,
                }
            }
        };
        let text = match next {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                result.error = Some(format!("closed by the server: {frame:?}"));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                result.error = Some(error.to_string());
                break;
            }
            None => {
                result.error = Some("server closed the connection".into());
                break;
            }
        };
        if let Some((k, s, ns)) = parse_msg(&text) {
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
        } else if text.starts_with(r#"{"event":"quit""#) {
            result.quits += 1;
        }
    }
    if unreported > 0 {
        shared.received.fetch_add(unreported, Ordering::SeqCst);
    }
    result
}
