//! `slow`: members that stop reading must cost bounded memory and be dropped.
//!
//! One room holds N non-readers (tiny `SO_RCVBUF`; after `/nick nr<i>` and
//! `/join` they never read), R readers and S senders (senders read too: they
//! need their own `MSG` back as acknowledgement). The senders flood the room
//! with lines of L bytes, at most W unacknowledged each. The server runs with
//! `--outbound-queue Q`; its VmRSS is sampled every 100 ms. Checks: the peak
//! stays below RSS-before + N × Q × line size + slack; every reader sees
//! `QUIT <room> nr<i> slow-consumer` for every non-reader; no reader or sender
//! is dropped. Readers' throughput is reported.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::harness::{self, Interval};
use super::{LobbyClient, Scenario, report_errors, secs};
use crate::net::{self, ConnectOpts};
use crate::procfs;
use crate::progress::Progress;
use crate::report::Outcome;
use crate::server::{ServerProc, Service, Target};
use crate::stats::Phase;
use crate::{BenchResult, Common, RunCtx};

const ROOM: &str = "slow";

#[derive(Debug, Clone, Args)]
pub struct SlowArgs {
    /// Members that never read
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    pub non_readers: u32,
    /// Members that read everything
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub readers: u32,
    /// Members that flood the room (they read too)
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub senders: u32,
    /// Bytes of chat text per line
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(20..=4000))]
    pub line_bytes: u32,
    /// Unacknowledged lines per sender
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub window: u32,
    /// The server's --outbound-queue
    #[arg(long, default_value_t = 256)]
    pub outbound_queue: u32,
    /// Lines the slowest reader may lag behind all lines sent (default: half
    /// the outbound queue, so readers are never slow consumers)
    #[arg(long)]
    pub reader_lag: Option<u32>,
    /// Memory allowed above the bound for allocator and runtime overhead, MiB
    #[arg(long, default_value_t = 8)]
    pub slack_mib: u64,
    /// Seconds of flooding
    #[arg(long, default_value_t = 8.0)]
    pub duration: f64,
    #[command(flatten)]
    pub common: Common,
}

impl Scenario for SlowArgs {
    fn name(&self) -> &'static str {
        "slow"
    }

    fn describe(&self) -> String {
        format!(
            "{} non-readers + {} readers + {} senders in one room, {} B lines, window {}, outbound queue {}, {} s of flooding",
            self.non_readers,
            self.readers,
            self.senders,
            self.line_bytes,
            self.window,
            self.outbound_queue,
            self.duration
        )
    }

    fn service(&self) -> Service {
        Service::Lobby
    }

    fn server_args(&self, _: Target) -> Vec<String> {
        vec!["--outbound-queue".into(), self.outbound_queue.to_string()]
    }

    fn params(&self) -> serde_json::Value {
        json!({"non_readers": self.non_readers, "readers": self.readers,
               "senders": self.senders, "line_bytes": self.line_bytes, "window": self.window,
               "outbound_queue": self.outbound_queue, "reader_lag": self.reader_lag, "slack_mib": self.slack_mib,
               "duration": self.duration, "client_threads": self.common.client_threads})
    }

    fn common(&self) -> &Common {
        &self.common
    }

    fn run(&self, server: &mut ServerProc, ctx: &RunCtx) -> BenchResult<Outcome> {
        harness::drive(server, ctx, "reader lines", |addr, pid, progress| {
            self.run_async(addr, pid, progress)
        })
    }
}

struct Shared {
    phase: Phase,
    stop: CancellationToken,
    progress: Progress,
    non_readers: usize,
    /// When the bench started flooding.
    flood_start: Instant,
    /// Milliseconds after `flood_start` at which the last reader saw the last
    /// slow-consumer `QUIT`.
    all_dropped_ms: AtomicU64,
    /// How many readers there are (senders come after them in `reader_msgs`).
    readers: usize,
    /// `MSG` lines each reader, then each sender, has taken in.
    reader_msgs: Vec<AtomicU64>,
    /// Lines all senders have sent.
    sent: AtomicU64,
    /// How far the slowest reader may fall behind what was sent.
    lag: u64,
}

#[derive(Default)]
struct ReaderResult {
    msgs: u64,
    /// Non-readers this reader saw dropped as slow consumers.
    dropped: HashSet<String>,
    /// `QUIT` lines about anyone else (readers or senders dropped).
    other_quits: Vec<String>,
    sent: u64,
    error: Option<String>,
}

impl SlowArgs {
    async fn run_async(
        &self,
        addr: SocketAddr,
        pid: u32,
        progress: Progress,
    ) -> BenchResult<Outcome> {
        let mut control = LobbyClient::connect(addr, ConnectOpts::default()).await?;
        // Readers first, so they see every other member join and go.
        let mut readers = Vec::new();
        for i in 0..self.readers {
            readers.push(named_member(addr, u64::from(i), format!("rd{i}")).await?);
        }
        let base = u64::from(self.readers);
        let non_readers = harness::open_all(u64::from(self.non_readers), 32, |i| async move {
            let opts = ConnectOpts {
                recv_buffer: Some(4096),
                ..ConnectOpts::from_index(base + i)
            };
            let mut stream = net::connect_retry(addr, opts).await?;
            stream
                .write_all(format!("/nick nr{i}\n/join {ROOM}\n").as_bytes())
                .await?;
            Ok(stream)
        })
        .await;
        let non_readers: Vec<TcpStream> = non_readers.into_iter().collect::<Result<_, _>>()?;
        let members = (self.readers + self.non_readers) as usize;
        let mut joined = 0;
        for _ in 0..100 {
            joined = control
                .rooms()
                .await?
                .into_iter()
                .find(|(room, _)| room == ROOM)
                .map_or(0, |(_, n)| n);
            if joined >= members {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if joined < members {
            return Err(format!("only {joined} of {members} members joined {ROOM}").into());
        }
        let base = base + u64::from(self.non_readers);
        let mut senders = Vec::new();
        for i in 0..self.senders {
            senders.push(named_member(addr, base + u64::from(i), format!("sd{i}")).await?);
        }
        // Let the JOIN lines settle before the baseline reading.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss_before = procfs::rss_kib(pid)?;

        let shared = Arc::new(Shared {
            phase: Phase::new(),
            stop: CancellationToken::new(),
            progress,
            non_readers: self.non_readers as usize,
            flood_start: Instant::now(),
            all_dropped_ms: AtomicU64::new(0),
            readers: self.readers as usize,
            reader_msgs: (0..self.readers + self.senders)
                .map(|_| AtomicU64::new(0))
                .collect(),
            sent: AtomicU64::new(0),
            lag: u64::from(self.reader_lag.unwrap_or(self.outbound_queue / 2).max(1)),
        });
        let sampler = harness::sample_rss_peak(pid, shared.stop.clone());
        let interval = Interval::start(pid, &shared.phase);
        let mut tasks = Vec::new();
        for (i, client) in readers.into_iter().enumerate() {
            tasks.push(tokio::spawn(member(
                client,
                Role::Reader(i),
                0,
                0,
                shared.clone(),
            )));
        }
        let line_bytes = self.line_bytes as usize;
        for (k, client) in senders.into_iter().enumerate() {
            let window = self.window as usize;
            tasks.push(tokio::spawn(member(
                client,
                Role::Sender(k),
                window,
                line_bytes,
                shared.clone(),
            )));
        }
        tokio::time::sleep(secs(self.duration)).await;
        let span = interval.stop();
        // Let the readers take in what is still on its way, then stop them.
        tokio::time::sleep(Duration::from_millis(500)).await;
        shared.stop.cancel();
        let peak = sampler.await.unwrap_or(0).max(procfs::rss_kib(pid)?);

        let mut results = Vec::new();
        let mut errors = Vec::new();
        for result in harness::gather(tasks, "member").await {
            match result {
                Ok(result) => results.push(result),
                Err(error) => errors.push(error),
            }
        }
        drop(non_readers);
        let readers = self.readers as usize;
        let reader_msgs: u64 = results.iter().take(readers).map(|r| r.msgs).sum();
        let all_msgs: u64 = results.iter().map(|r| r.msgs).sum();
        let sent: u64 = results.iter().map(|r| r.sent).sum();
        let min_dropped = results
            .iter()
            .take(readers)
            .map(|r| r.dropped.len())
            .min()
            .unwrap_or(0);
        let other_quits: Vec<String> = results
            .iter()
            .flat_map(|r| r.other_quits.iter().cloned())
            .collect();
        errors.extend(results.iter().filter_map(|r| r.error.clone()));

        // A broadcast line: "MSG slow sdK " + text + "\n".
        let line_size = (line_bytes + ROOM.len() + 10) as u64;
        let bound_kib = rss_before
            + u64::from(self.non_readers) * u64::from(self.outbound_queue) * line_size / 1024
            + self.slack_mib * 1024;
        let all_dropped_ms = shared.all_dropped_ms.load(Ordering::SeqCst);

        let mut outcome = Outcome::default();
        outcome.fig(
            "reader lines/s (each)",
            "1/s",
            reader_msgs as f64 / readers as f64 / span.wall_secs,
        );
        outcome.fig("lines sent/s", "1/s", sent as f64 / span.wall_secs);
        outcome.fig(
            "deliveries/s (readers + senders)",
            "1/s",
            all_msgs as f64 / span.wall_secs,
        );
        harness::cpu_figs(&mut outcome, &span, "delivery", all_msgs);
        outcome.fig(
            "non-readers dropped (fewest seen)",
            "count",
            min_dropped as f64,
        );
        if min_dropped == self.non_readers as usize {
            outcome.fig(
                "all non-readers dropped after",
                "s",
                all_dropped_ms as f64 / 1000.0,
            );
        }
        outcome.fig("RSS before flood", "KiB", rss_before as f64);
        outcome.fig("RSS peak", "KiB", peak as f64);
        outcome.fig("RSS peak - before", "KiB", peak as f64 - rss_before as f64);
        outcome.fig("RSS bound", "KiB", bound_kib as f64);
        report_errors(&mut outcome, "reader/sender errors", &errors);
        outcome.check(
            "peak RSS within bound",
            peak <= bound_kib,
            format!(
                "peak {peak} KiB <= {rss_before} + {} × {} × {line_size} B + {} MiB slack = {bound_kib} KiB",
                self.non_readers, self.outbound_queue, self.slack_mib
            ),
        );
        outcome.check(
            "every non-reader dropped as slow-consumer",
            min_dropped == self.non_readers as usize,
            format!(
                "each reader saw at least {min_dropped} of {} slow-consumer QUITs",
                self.non_readers
            ),
        );
        outcome.check(
            "no QUIT but slow-consumer of non-readers; no reader or sender error",
            other_quits.is_empty() && errors.is_empty(),
            format!(
                "{} other QUIT lines {:?}, {} errors",
                other_quits.len(),
                other_quits.iter().take(3).collect::<Vec<_>>(),
                errors.len()
            ),
        );
        Ok(outcome)
    }
}

/// Member number `index` (from its own source address), renamed to `nick`
/// and joined to the room, where others may have joined before.
async fn named_member(addr: SocketAddr, index: u64, nick: String) -> std::io::Result<LobbyClient> {
    let mut client = LobbyClient::connect(addr, ConnectOpts::from_index(index)).await?;
    client.rename(&nick).await?;
    client.join(ROOM, 10_000).await?;
    Ok(client)
}

/// A reader or a sender: reads everything, counts `MSG`s and `QUIT`s. A
/// reader publishes how many `MSG`s it has taken in; a sender keeps up to
/// `window` of its own lines unacknowledged, and sends only while the slowest
/// reading member (senders included) is less than `lag` lines behind
/// everything sent, so readers are never the slow consumers, whatever the
/// speed of server and generator.
async fn member(
    mut client: LobbyClient,
    role: Role,
    window: usize,
    line_bytes: usize,
    shared: Arc<Shared>,
) -> ReaderResult {
    let mut result = ReaderResult::default();
    let mut line = Vec::with_capacity(512);
    let mut unacked = 0usize;
    let mut seq = 0u64;
    let mut out = Vec::new();
    let mut unreported = 0;
    let own = match role {
        Role::Sender(k) => Some(format!("MSG {ROOM} sd{k} ")),
        Role::Reader(_) => None,
    };
    // Bounded by the run's stop token; a paced sender re-checks every ms.
    loop {
        let mut paced = false;
        if let Role::Sender(k) = role
            && !shared.phase.stopping()
            && unacked < window
            && !client.reader.buffer().contains(&b'\n')
        {
            let slowest = shared
                .reader_msgs
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .min()
                .unwrap_or(0);
            let in_room = shared.sent.load(Ordering::Relaxed);
            let allowed = (slowest + shared.lag).saturating_sub(in_room) as usize;
            let count = (window - unacked).min(allowed);
            paced = count < window - unacked;
            if count > 0 {
                out.clear();
                for _ in 0..count {
                    let head = format!("s{k} {seq} ");
                    out.extend_from_slice(head.as_bytes());
                    out.extend(std::iter::repeat_n(
                        b'x',
                        line_bytes.saturating_sub(head.len()),
                    ));
                    out.push(b'\n');
                    seq += 1;
                }
                result.sent += count as u64;
                shared.sent.fetch_add(count as u64, Ordering::Relaxed);
                unacked += count;
                if let Err(e) = client.writer.write_all(&out).await {
                    result.error = Some(format!("{}: {e}", client.nick));
                    break;
                }
            }
        }
        if unreported > 0 && !client.reader.buffer().contains(&b'\n') {
            let slot = match role {
                Role::Reader(i) => {
                    shared.progress.add(unreported);
                    i
                }
                Role::Sender(k) => shared.readers + k,
            };
            shared.reader_msgs[slot].fetch_add(unreported, Ordering::Relaxed);
            unreported = 0;
        }
        line.clear();
        let read = tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            read = client.reader.read_until(b'\n', &mut line) => read,
            () = tokio::time::sleep(Duration::from_millis(1)), if paced => continue,
        };
        match read {
            Ok(0) => {
                result.error = Some(format!("{}: server closed the connection", client.nick));
                break;
            }
            Ok(_) => {}
            Err(e) => {
                result.error = Some(format!("{}: {e}", client.nick));
                break;
            }
        }
        if line.starts_with(b"MSG ") {
            result.msgs += 1;
            unreported += 1;
            if let Some(own) = &own
                && line.starts_with(own.as_bytes())
            {
                unacked = unacked.saturating_sub(1);
            }
        } else if line.starts_with(b"QUIT ") {
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            let words: Vec<&str> = text.split(' ').collect();
            match words.as_slice() {
                ["QUIT", ROOM, nick, "slow-consumer"] if nick.starts_with("nr") => {
                    result.dropped.insert((*nick).to_owned());
                    if matches!(role, Role::Reader(_)) && result.dropped.len() == shared.non_readers
                    {
                        let ms = shared.flood_start.elapsed().as_millis() as u64;
                        shared.all_dropped_ms.fetch_max(ms, Ordering::SeqCst);
                    }
                }
                _ => result.other_quits.push(text),
            }
        }
    }
    result
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Reader(usize),
    Sender(usize),
}
