//! `idle`: what an idle connection costs the server.
//!
//! C connections are opened by P generator processes (this binary re-run as
//! the hidden `idle-worker` subcommand, each holding about C/P sockets, so no
//! process nears its file limit), spread over source addresses 127.0.0.2…
//! Each reads its `WELCOME`; with `--line-bytes N` it then sends one line of
//! N bytes and reads the answer (`ERR not-in-room` on the lobby). The
//! server's VmRSS is read before connecting, once everything was answered,
//! and a second later. Finally every worker checks that each of its sockets
//! is still open and a sample of them answers `/ping` with `PONG`.
//!
//! The parent talks to each worker over its stdin/stdout, one line each way:
//! the worker prints `READY …` when connected, answers `CHECK n` with
//! `CHECKED …`, and exits on `EXIT` or end of input.

use std::io::{BufRead, BufReader as StdBufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::Scenario;
use crate::net::{self, ConnectOpts};
use crate::procfs;
use crate::report::Outcome;
use crate::server::{self, ServerProc, Service};
use crate::{BenchResult, Common, RunCtx};

/// Connects in progress at once over all workers: below the 128 that a
/// `listen` backlog of tokio's default holds, so no SYN is dropped and retried.
const CONNECTS_IN_FLIGHT: u32 = 96;

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Connections to open and hold
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=200_000))]
    pub conns: u32,
    /// Each connection first sends one line of this many bytes (0 = none)
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub line_bytes: u32,
    /// Generator processes (0 = one per 10,000 connections)
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub procs: u32,
    /// Connections that must answer `/ping` at the end
    #[arg(long, default_value_t = 100)]
    pub ping_sample: u32,
    /// Seconds between the two memory readings after connecting
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
    #[command(flatten)]
    pub common: Common,
}

impl IdleArgs {
    fn procs(&self) -> u32 {
        if self.procs > 0 {
            self.procs
        } else {
            self.conns.div_ceil(10_000).max(1)
        }
    }
}

impl Scenario for IdleArgs {
    fn name(&self) -> &'static str {
        "idle"
    }

    fn describe(&self) -> String {
        format!(
            "{} idle lobby connections from {} generator processes{}",
            self.conns,
            self.procs(),
            if self.line_bytes > 0 {
                format!(", each first sent a {} B line", self.line_bytes)
            } else {
                String::new()
            }
        )
    }

    fn service(&self) -> Service {
        Service::Lobby
    }

    fn params(&self) -> serde_json::Value {
        json!({"conns": self.conns, "line_bytes": self.line_bytes, "procs": self.procs(),
               "ping_sample": self.ping_sample, "settle": self.settle})
    }

    fn common(&self) -> &Common {
        &self.common
    }

    fn run(&self, server: &mut ServerProc, ctx: &RunCtx) -> BenchResult<Outcome> {
        let procs = self.procs();
        // Let the fresh server settle before the first reading.
        std::thread::sleep(Duration::from_millis(200));
        let rss_before = procfs::rss_kib(server.pid)?;
        let fds_before = procfs::fd_count(server.pid);
        let cpu_before = procfs::cpu_secs(server.pid);
        let threads_before = procfs::ThreadTicks::read(server.pid);
        let exe = std::env::current_exe()?;
        let start = Instant::now();
        let mut workers = Vec::new();
        let mut first = 0u64;
        for p in 0..procs {
            let count = self.conns / procs + u32::from(p < self.conns % procs);
            workers.push(Worker::spawn(
                &exe,
                server.addr,
                first,
                count,
                self.line_bytes,
                (CONNECTS_IN_FLIGHT / procs).max(8),
            )?);
            first += u64::from(count);
        }
        // Bounded: each worker's connects and reads have their own timeouts.
        let ready_limit = Duration::from_secs(60 + u64::from(self.conns) / 500);
        let mut connected = 0u64;
        let mut failed = 0u64;
        let mut answered = 0u64;
        let mut notes = Vec::new();
        for worker in &mut workers {
            let ready = worker.expect("READY", ready_limit)?;
            connected += field(&ready, "ok");
            failed += field(&ready, "failed");
            answered += field(&ready, "answered");
            if let Some(error) = ready.split("error=").nth(1) {
                notes.push(format!("worker: {error}"));
            }
        }
        let connect_secs = start.elapsed().as_secs_f64();
        let cpu_after = procfs::cpu_secs(server.pid);
        let threads = threads_before.share_until(&procfs::ThreadTicks::read(server.pid));
        let rss_loaded = procfs::rss_kib(server.pid)?;
        if !ctx.quiet {
            eprintln!(
                "{}: {connected} connected in {connect_secs:.1} s, RSS {rss_loaded} KiB",
                ctx.label
            );
        }
        std::thread::sleep(super::secs(self.settle));
        let rss_settled = procfs::rss_kib(server.pid)?;
        let fds_loaded = procfs::fd_count(server.pid);

        let per_worker = self.ping_sample.div_ceil(procs);
        let mut open = 0;
        let mut closed = 0;
        let mut pinged = 0;
        let mut ponged = 0;
        for worker in &mut workers {
            worker.send(&format!("CHECK {per_worker}"))?;
        }
        for worker in &mut workers {
            let checked = worker.expect("CHECKED", Duration::from_secs(60))?;
            open += field(&checked, "open");
            closed += field(&checked, "closed");
            pinged += field(&checked, "pinged");
            ponged += field(&checked, "ponged");
        }
        for worker in &mut workers {
            let _ = worker.send("EXIT");
        }
        drop(workers);

        let conns = u64::from(self.conns);
        let mut outcome = Outcome::default();
        outcome.fig("connections held", "count", open as f64);
        outcome.fig("connect failures", "count", failed as f64);
        outcome.fig("connect + welcome all", "s", connect_secs);
        outcome.fig("connects/s", "1/s", connected as f64 / connect_secs);
        outcome.fig(
            "server CPU per connection",
            "µs",
            (cpu_after - cpu_before) * 1e6 / connected.max(1) as f64,
        );
        super::harness::thread_share_fig(&mut outcome, threads.as_ref());
        outcome.fig("RSS before", "KiB", rss_before as f64);
        outcome.fig("RSS when all answered", "KiB", rss_loaded as f64);
        outcome.fig("RSS 1 s later", "KiB", rss_settled as f64);
        outcome.fig(
            "RSS per connection",
            "KiB",
            (rss_settled as f64 - rss_before as f64) / connected.max(1) as f64,
        );
        outcome.fig(
            "server fds per connection",
            "count",
            (fds_loaded as f64 - fds_before as f64) / connected.max(1) as f64,
        );
        outcome.check(
            "all connections welcomed",
            connected == conns,
            format!("{connected} of {conns} got WELCOME ({failed} failed)"),
        );
        if self.line_bytes > 0 {
            outcome.check(
                "every line answered",
                answered == conns,
                format!("{answered} of {conns} got a reply to their line"),
            );
        }
        outcome.check(
            "all still open",
            open == conns && closed == 0,
            format!("{open} open, {closed} closed by the server"),
        );
        outcome.check(
            "sample answers /ping",
            pinged > 0 && ponged == pinged,
            format!("{ponged} of {pinged} got PONG"),
        );
        for note in notes.into_iter().take(3) {
            outcome.note(note);
        }
        Ok(outcome)
    }
}

/// `key=N` out of a worker's report line.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// A generator process, killed (by PID) when dropped.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Worker {
    fn spawn(
        exe: &std::path::Path,
        addr: SocketAddr,
        first: u64,
        count: u32,
        line_bytes: u32,
        concurrency: u32,
    ) -> BenchResult<Worker> {
        let mut command = Command::new(exe);
        command
            .arg("idle-worker")
            .arg("--addr")
            .arg(addr.to_string())
            .arg("--first")
            .arg(first.to_string())
            .arg("--count")
            .arg(count.to_string())
            .arg("--line-bytes")
            .arg(line_bytes.to_string())
            .arg("--concurrency")
            .arg(concurrency.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        server::kill_with_parent(&mut command);
        let mut child = command.spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("worker stdout not piped")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in StdBufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Worker {
            child,
            stdin,
            lines,
        })
    }

    fn send(&mut self, line: &str) -> BenchResult<()> {
        let stdin = self.stdin.as_mut().ok_or("worker stdin closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    fn expect(&mut self, word: &str, limit: Duration) -> BenchResult<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(word) => return Ok(line),
                Ok(_) => continue,
                Err(_) => return Err(format!("idle worker did not report {word} in time").into()),
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.stdin.take());
        // A worker exits by itself once its stdin closes; give it a moment.
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The worker process.

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[arg(long)]
    addr: SocketAddr,
    /// Global index of this worker's first connection (for source addresses)
    #[arg(long)]
    first: u64,
    #[arg(long)]
    count: u32,
    #[arg(long, default_value_t = 0)]
    line_bytes: u32,
    /// Connects in progress at once
    #[arg(long, default_value_t = 96)]
    concurrency: u32,
}

struct Held {
    reader: BufReader<TcpStream>,
}

pub fn worker_main(args: WorkerArgs) -> ExitCode {
    procfs::raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("idle-worker: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(worker(args))
}

async fn open_one(addr: SocketAddr, index: u64, line: &[u8]) -> std::io::Result<(Held, bool)> {
    let stream = net::connect_retry(addr, ConnectOpts::from_index(index)).await?;
    let mut reader = BufReader::with_capacity(256, stream);
    net::expect_line(&mut reader, "WELCOME ", 0).await?;
    let mut answered = false;
    if !line.is_empty() {
        reader.get_mut().write_all(line).await?;
        net::expect_line(&mut reader, "", 0).await?;
        answered = true;
    }
    Ok((Held { reader }, answered))
}

async fn worker(args: WorkerArgs) -> ExitCode {
    let line = if args.line_bytes > 0 {
        let mut line = vec![b'x'; args.line_bytes as usize];
        line.push(b'\n');
        line
    } else {
        Vec::new()
    };
    let results: Vec<std::io::Result<(Held, bool)>> =
        futures::stream::iter(0..u64::from(args.count))
            .map(|i| open_one(args.addr, args.first + i, &line))
            .buffer_unordered(args.concurrency.max(1) as usize)
            .collect()
            .await;
    let mut held = Vec::with_capacity(results.len());
    let mut failed = 0;
    let mut answered = 0;
    let mut first_error = None;
    for result in results {
        match result {
            Ok((conn, was_answered)) => {
                answered += u64::from(was_answered);
                held.push(conn);
            }
            Err(error) => {
                failed += 1;
                first_error.get_or_insert(error.to_string());
            }
        }
    }
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "READY ok={} failed={failed} answered={answered}{}",
        held.len(),
        first_error.map_or_else(String::new, |e| format!(" error={e}"))
    );
    let _ = out.flush();

    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    // Bounded: the parent sends a handful of commands, then EXIT or EOF.
    for _ in 0..100 {
        let Ok(Some(command)) = commands.next_line().await else {
            break;
        };
        let mut words = command.split_whitespace();
        match words.next() {
            Some("CHECK") => {
                let sample: usize = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                let open = held
                    .iter()
                    .filter(|conn| net::still_open(conn.reader.get_ref()))
                    .count();
                let closed = held.len() - open;
                let mut pinged = 0;
                let mut ponged = 0;
                for (i, conn) in held.iter_mut().take(sample).enumerate() {
                    pinged += 1;
                    let token = format!("t{i}");
                    if conn
                        .reader
                        .get_mut()
                        .write_all(format!("/ping {token}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        continue;
                    }
                    if let Ok(reply) = net::expect_line(&mut conn.reader, "PONG", 4).await
                        && reply == format!("PONG {token}")
                    {
                        ponged += 1;
                    }
                }
                let _ = writeln!(
                    out,
                    "CHECKED open={open} closed={closed} pinged={pinged} ponged={ponged}"
                );
                let _ = out.flush();
            }
            Some("EXIT") | None => break,
            Some(_) => {}
        }
    }
    ExitCode::SUCCESS
}
