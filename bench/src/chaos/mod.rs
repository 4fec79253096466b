//! The chaos run: hundreds of well-behaved members chatting in rooms while
//! faulty peers reset, half-close, never read, send garbage, invalid UTF-8,
//! over-long lines, floods and slow drips, and UDP sources that never answer
//! (standing in for forged ones) poke the UDP lobby from many addresses and
//! ports. Afterwards it checks what SPEC §3 and §6 promise:
//!
//! - no member lost a line or saw one out of turn, and every member of a
//!   room saw the room's events in one order;
//! - every faulty peer got what its fault deserves, as the peer itself sees
//!   it (the `ERR` lines, the close) and as its room's members see it (the
//!   reason word of its `QUIT`);
//! - no UDP source got more than 3× the bytes it sent, and (when the server
//!   has `--max-udp-sessions`) no TCP peer was refused meanwhile;
//! - `ROOMS` and `WHO` list exactly the members and surviving peers still
//!   connected; the server's open files return to their count before the
//!   run; its peak RSS stays under a bound stated in the report.
//!
//! Shared by `switchboard-bench chaos` and `tests/chaos.rs` (which includes
//! this directory with `#[path]`), so it needs nothing but std, tokio, libc
//! and socket2.

#![allow(dead_code)]

pub mod faults;
pub mod members;
pub mod process;
pub mod udp;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use faults::{FaultCtx, Kind, PeerRecord, Plan};
use members::{Layout, MemberResult, Phase, Shared, member_nick, room_name};
use wire::Conn;

/// Everything that shapes a run; the server's flags derive from it.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long faults are injected while the members chat.
    pub duration: Duration,
    pub members: usize,
    pub rooms: usize,
    /// Each member sends one line per interval.
    pub chat_interval: Duration,
    /// Faulty peers of each kind per 10 s of run, and at most how many at once.
    pub faults_per_10s: Vec<(Kind, usize, usize)>,
    /// UDP sources: loopback addresses × ports on each.
    pub udp_addresses: usize,
    pub udp_ports: usize,
    /// Each UDP source sends a datagram this often.
    pub udp_period: Duration,
    /// `--max-udp-sessions` to pass (when the server has the flag).
    pub max_udp_sessions: Option<usize>,
    pub max_line: usize,
    pub max_msgs_per_sec: u32,
    pub idle_timeout_secs: u64,
    pub heartbeat_secs: u64,
    pub outbound_queue: usize,
    pub outbound_bytes: usize,
    /// `--threads` to pass, if any.
    pub threads: Option<u32>,
    /// RSS allowed per TCP connection at the peak, KiB.
    pub rss_per_conn_kib: u64,
    /// RSS allowed per UDP session, KiB.
    pub rss_per_udp_kib: u64,
    /// RSS allowed on top for allocator and runtime overhead, MiB.
    pub rss_slack_mib: u64,
}

impl Config {
    /// The bench's run: 200 members in 10 rooms, 4 lines/s each, every kind
    /// of fault all along, 256 UDP sources.
    pub fn bench(duration: Duration) -> Config {
        Config {
            duration,
            members: 200,
            rooms: 10,
            chat_interval: Duration::from_millis(250),
            faults_per_10s: vec![
                (Kind::Reset, 20, 8),
                (Kind::HalfClose, 10, 8),
                (Kind::NeverReader, 3, 3),
                (Kind::Garbage, 5, 4),
                (Kind::BadUtf8, 5, 4),
                (Kind::OverLong, 5, 4),
                (Kind::Flood, 3, 2),
                (Kind::Drip, 3, 4),
            ],
            udp_addresses: 32,
            udp_ports: 8,
            udp_period: Duration::from_millis(1500),
            max_udp_sessions: None,
            max_line: 4096,
            max_msgs_per_sec: 200,
            idle_timeout_secs: 5,
            heartbeat_secs: 1,
            outbound_queue: 1024,
            outbound_bytes: 64 * 1024,
            threads: None,
            rss_per_conn_kib: 16,
            rss_per_udp_kib: 8,
            rss_slack_mib: 8,
        }
    }

    /// The `cargo test` run: 10 s, slower chat, fewer UDP sources, every fault.
    pub fn test() -> Config {
        Config {
            members: 200,
            rooms: 10,
            chat_interval: Duration::from_millis(400),
            udp_addresses: 16,
            udp_ports: 8,
            idle_timeout_secs: 4,
            ..Config::bench(Duration::from_secs(10))
        }
    }

    /// The fault plans for this duration (at least one peer of each kind).
    pub fn plans(&self) -> Vec<Plan> {
        let tens = self.duration.as_secs_f64() / 10.0;
        self.faults_per_10s
            .iter()
            .map(|&(kind, per_10s, concurrency)| Plan {
                kind,
                count: ((per_10s as f64 * tens).round() as usize).max(1),
                concurrency,
            })
            .collect()
    }

    pub fn udp_sources(&self) -> usize {
        self.udp_addresses * self.udp_ports
    }

    /// The most TCP sessions the run can hold at once: members, the checker,
    /// every fault's concurrency, an aimer per never-reader, the lingering
    /// peers, and a margin for sessions closing on the server's side.
    pub fn tcp_peak(&self) -> usize {
        let faults: usize = self.faults_per_10s.iter().map(|f| f.2).sum();
        let aimers: usize = self
            .faults_per_10s
            .iter()
            .filter(|f| f.0 == Kind::NeverReader)
            .map(|f| f.2 * faults::AIMERS)
            .sum();
        let lingering = Kind::ALL.iter().filter(|k| k.survives()).count();
        self.members + 1 + faults + aimers + lingering + 32
    }

    /// Flags for the server besides `--bind` and `--udp-bind`.
    pub fn server_args(&self) -> Vec<String> {
        let max_connections = match self.max_udp_sessions {
            Some(udp) => self.tcp_peak() + udp,
            None => 20_000,
        };
        let mut args: Vec<String> = [
            ("--max-line", self.max_line.to_string()),
            ("--max-msgs-per-sec", self.max_msgs_per_sec.to_string()),
            ("--idle-timeout", self.idle_timeout_secs.to_string()),
            ("--heartbeat", self.heartbeat_secs.to_string()),
            ("--outbound-queue", self.outbound_queue.to_string()),
            ("--outbound-bytes", self.outbound_bytes.to_string()),
            ("--room-capacity", "10000".to_owned()),
            ("--max-connections", max_connections.to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .collect();
        if let Some(udp) = self.max_udp_sessions {
            args.extend(["--max-udp-sessions".to_owned(), udp.to_string()]);
        }
        if let Some(threads) = self.threads {
            args.extend(["--threads".to_owned(), threads.to_string()]);
        }
        args
    }

    /// Never-readers that can be in the server's queues at once.
    fn never_readers_at_once(&self) -> usize {
        self.faults_per_10s
            .iter()
            .filter(|f| f.0 == Kind::NeverReader)
            .map(|f| f.2)
            .sum()
    }

    /// The RSS bound above the server's RSS before the run, in KiB: every
    /// TCP session at the peak with 16 KiB (an idle session costs 2 KiB; an
    /// active one may hold a `--max-line` line each way and its share of
    /// events in flight), every never-reader's full queue (`--outbound-bytes`
    /// plus two lines), 8 KiB per UDP session, and 8 MiB for the allocator's
    /// caches and the runtime.
    pub fn rss_allowance_kib(&self) -> u64 {
        self.tcp_peak() as u64 * self.rss_per_conn_kib
            + self.never_readers_at_once() as u64
                * ((self.outbound_bytes + 2 * self.max_line) as u64).div_ceil(1024)
            + self.udp_sources() as u64 * self.rss_per_udp_kib
            + self.rss_slack_mib * 1024
    }

    fn rss_formula(&self) -> String {
        format!(
            "{} TCP × {} KiB + {} never-readers × {} KiB + {} UDP × {} KiB + {} MiB slack",
            self.tcp_peak(),
            self.rss_per_conn_kib,
            self.never_readers_at_once(),
            ((self.outbound_bytes + 2 * self.max_line) as u64).div_ceil(1024),
            self.udp_sources(),
            self.rss_per_udp_kib,
            self.rss_slack_mib
        )
    }
}

/// Whether a row of the table passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    Skip,
}

/// One row of the table: a fault kind or a check.
#[derive(Debug, Clone)]
pub struct Row {
    pub what: String,
    pub injected: String,
    pub expected: String,
    pub seen: String,
    pub verdict: Verdict,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Named figures (name, value with unit).
    pub figures: Vec<(String, String)>,
    /// Details of failures and other remarks.
    pub notes: Vec<String>,
}

impl Report {
    fn row(
        &mut self,
        what: impl Into<String>,
        injected: impl Into<String>,
        expected: impl Into<String>,
        seen: impl Into<String>,
        ok: bool,
    ) {
        self.rows.push(Row {
            what: what.into(),
            injected: injected.into(),
            expected: expected.into(),
            seen: seen.into(),
            verdict: if ok { Verdict::Pass } else { Verdict::Fail },
        });
    }

    pub fn fig(&mut self, name: &str, value: String) {
        self.figures.push((name.to_owned(), value));
    }

    pub fn passed(&self) -> bool {
        self.rows.iter().all(|row| row.verdict != Verdict::Fail)
    }

    /// The failed rows, one line each.
    pub fn failures(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|row| row.verdict == Verdict::Fail)
            .map(|row| format!("{}: expected {}; seen {}", row.what, row.expected, row.seen))
            .collect()
    }

    /// The table of faults and checks, then figures and notes.
    pub fn table(&self) -> String {
        let header = [
            "fault kind / check",
            "injected",
            "outcome expected",
            "outcome seen",
            "pass",
        ];
        let cells: Vec<[String; 5]> = self
            .rows
            .iter()
            .map(|row| {
                [
                    row.what.clone(),
                    row.injected.clone(),
                    row.expected.clone(),
                    row.seen.clone(),
                    match row.verdict {
                        Verdict::Pass => "ok",
                        Verdict::Fail => "FAIL",
                        Verdict::Skip => "skip",
                    }
                    .to_owned(),
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for row in &cells {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, row: &[String]| {
            let mut text = String::from("|");
            for (cell, width) in row.iter().zip(widths) {
                let pad = width - cell.chars().count();
                let _ = write!(text, " {cell}{} |", " ".repeat(pad));
            }
            out.push_str(&text);
            out.push('\n');
        };
        line(&mut out, &header.map(str::to_owned));
        let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
        line(&mut out, &rule);
        for row in &cells {
            line(&mut out, row);
        }
        if !self.figures.is_empty() {
            out.push_str("figures:\n");
            for (name, value) in &self.figures {
                let _ = writeln!(out, "  {name}: {value}");
            }
        }
        if !self.notes.is_empty() {
            out.push_str("notes:\n");
            for note in &self.notes {
                let _ = writeln!(out, "  {note}");
            }
        }
        out
    }
}

/// The server as the run sees it.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub pid: u32,
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
}

/// The peak RSS (KiB) and open files of the server, sampled every 100 ms.
fn sample_peaks(pid: u32, mut stop: watch::Receiver<bool>) -> JoinHandle<(u64, usize)> {
    tokio::spawn(async move {
        let mut peak = (0u64, 0usize);
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        // Bounded by `stop`, which the run always sends.
        loop {
            tokio::select! {
                _ = wire::until_set(&mut stop) => break,
                _ = ticker.tick() => {}
            }
            if let Ok(rss) = process::rss_kib(pid) {
                peak.0 = peak.0.max(rss);
            }
            if let Ok(fds) = process::fd_count(pid) {
                peak.1 = peak.1.max(fds);
            }
        }
        peak
    })
}

/// Waits for a task, at most `limit`; aborts it after that.
async fn join_within<T>(task: JoinHandle<T>, limit: Duration) -> Result<T, String> {
    let abort = task.abort_handle();
    match tokio::time::timeout(limit, task).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("task failed: {error}")),
        Err(_) => {
            abort.abort();
            Err(format!("task did not finish in {limit:?}"))
        }
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Counts of labels, most frequent first: `a ×3, b ×1`.
fn histogram<'a>(labels: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for label in labels {
        *counts.entry(label).or_default() += 1;
    }
    let mut counts: Vec<(&str, usize)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    counts
        .iter()
        .map(|(label, n)| format!("{label} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The room state every member and lingering peer should leave: per room,
/// the members in join order, then the lingering peers (in any order).
struct ExpectedRooms {
    rooms: BTreeMap<String, (Vec<String>, Vec<String>)>,
}

impl ExpectedRooms {
    /// `None` when the server's `ROOMS` and `WHO`s say exactly this;
    /// otherwise what differs.
    async fn differs(&self, checker: &mut Conn) -> std::io::Result<Option<String>> {
        checker.send(b"/rooms\n").await?;
        let rooms = checker.expect("ROOMS").await?;
        let listed: BTreeMap<String, usize> = rooms
            .split(' ')
            .skip(1)
            .filter_map(|entry| {
                let (room, n) = entry.rsplit_once('=')?;
                Some((room.to_owned(), n.parse().ok()?))
            })
            .collect();
        let wanted: BTreeMap<String, usize> = self
            .rooms
            .iter()
            .map(|(room, (members, lingering))| (room.clone(), members.len() + lingering.len()))
            .collect();
        if listed != wanted {
            return Ok(Some(format!("{rooms:?}; wanted {wanted:?}")));
        }
        for (room, (members, lingering)) in &self.rooms {
            checker.send(format!("/who {room}\n").as_bytes()).await?;
            let who = checker.expect(&format!("WHO {room}")).await?;
            let nicks: Vec<&str> = who.split(' ').skip(2).collect();
            let in_order = nicks.len() == members.len() + lingering.len()
                && nicks.iter().zip(members).all(|(a, b)| a == b);
            let mut rest: Vec<&str> = nicks.iter().skip(members.len()).copied().collect();
            rest.sort_unstable();
            let mut want_rest: Vec<&str> = lingering.iter().map(String::as_str).collect();
            want_rest.sort_unstable();
            if !in_order || rest != want_rest {
                return Ok(Some(format!(
                    "{who:?}; wanted the members in join order, then {want_rest:?}"
                )));
            }
        }
        Ok(None)
    }
}

/// Runs the chaos against `target` (started with `cfg.server_args()`), on
/// the current tokio runtime, and reports every check.
pub async fn run(cfg: &Config, target: Target) -> Report {
    let mut report = Report::default();
    let pid = target.pid;
    let fd_before = process::fd_count(pid).unwrap_or(0);
    let rss_before = process::rss_kib(pid).unwrap_or(0);
    let (stop_sampling, sampling) = watch::channel(false);
    let sampler = sample_peaks(pid, sampling);
    let layout = Layout {
        members: cfg.members,
        rooms: cfg.rooms,
    };

    // The members, room by room in parallel, in join order within a room.
    let setup = Instant::now();
    let chains: Vec<_> = (0..cfg.rooms)
        .map(|room| tokio::spawn(members::connect_room(target.tcp, layout, room)))
        .collect();
    let mut joined: Vec<(usize, Conn)> = Vec::with_capacity(cfg.members);
    let mut setup_errors = Vec::new();
    for chain in chains {
        match join_within(chain, Duration::from_secs(120)).await {
            Ok(Ok(conns)) => joined.extend(conns),
            Ok(Err(error)) | Err(error) => setup_errors.push(error),
        }
    }
    if !setup_errors.is_empty() {
        report.row(
            "well-behaved members",
            format!("{} in {} rooms", cfg.members, cfg.rooms),
            "all connected and joined",
            format!("{} joined; {}", joined.len(), setup_errors[0]),
            false,
        );
        let _ = stop_sampling.send(true);
        return report;
    }
    report.fig(
        "members joined in",
        format!("{:.2} s", setup.elapsed().as_secs_f64()),
    );
    let shared = Arc::new(Shared::new(layout));
    let (phase, phases) = watch::channel(Phase::Chat);
    let member_tasks: Vec<JoinHandle<MemberResult>> = joined
        .into_iter()
        .map(|(i, conn)| {
            tokio::spawn(members::run_member(
                conn,
                i,
                cfg.chat_interval,
                shared.clone(),
                phases.clone(),
            ))
        })
        .collect();

    // The faulty peers.
    let (release, released) = watch::channel(false);
    let ctx = Arc::new(FaultCtx {
        addr: target.tcp,
        rooms: cfg.rooms,
        max_line: cfg.max_line,
        max_msgs_per_sec: cfg.max_msgs_per_sec,
        idle_timeout: Duration::from_secs(cfg.idle_timeout_secs),
        tcp_connects: Default::default(),
        tcp_refused: Default::default(),
        keepers: Mutex::new(Vec::new()),
        release: released,
    });
    let start = Instant::now();
    let plans = cfg.plans();
    let drivers: Vec<_> = plans
        .iter()
        .map(|&plan| tokio::spawn(faults::drive(plan, ctx.clone(), start, cfg.duration)))
        .collect();

    // The UDP sources.
    let (sending, sending_rx) = watch::channel(true);
    let (udp_done, udp_done_rx) = watch::channel(false);
    let mut spoofers = Vec::new();
    match udp::bind_sources(cfg.udp_addresses, cfg.udp_ports) {
        Ok(sockets) => {
            let count = sockets.len().max(1);
            for (n, socket) in sockets.into_iter().enumerate() {
                let offset = cfg.udp_period.mul_f64(n as f64 / count as f64);
                spoofers.push(tokio::spawn(udp::spoof(
                    socket,
                    target.udp,
                    room_name(n % cfg.rooms),
                    cfg.udp_period,
                    offset,
                    sending_rx.clone(),
                    udp_done_rx.clone(),
                )));
            }
        }
        Err(error) => report
            .notes
            .push(format!("cannot bind the UDP sources: {error}")),
    }

    // The load itself: chat, faults and datagrams for the run's duration.
    tokio::time::sleep_until(start + cfg.duration).await;
    let _ = sending.send(false);
    let mut records: Vec<PeerRecord> = Vec::new();
    for driver in drivers {
        match join_within(driver, cfg.duration + Duration::from_secs(180)).await {
            Ok(mut batch) => records.append(&mut batch),
            Err(error) => report.notes.push(format!("a fault driver: {error}")),
        }
    }
    let chaos_secs = start.elapsed().as_secs_f64();

    // Members stop sending; each reports when its last line came back.
    let _ = phase.send(Phase::Drain);
    let drained = shared
        .wait_for(&shared.drained, cfg.members, Duration::from_secs(30))
        .await;

    // ROOMS and WHO must list exactly who is still connected: every member,
    // and the lingering peers. UDP sessions end by idle timeout meanwhile.
    let mut expected = ExpectedRooms {
        rooms: BTreeMap::new(),
    };
    for room in 0..cfg.rooms {
        let nicks = layout
            .room_members(room)
            .into_iter()
            .map(member_nick)
            .collect();
        expected.rooms.insert(room_name(room), (nicks, Vec::new()));
    }
    for record in records.iter().filter(|r| r.lingering && r.ok) {
        if let Some(entry) = expected.rooms.get_mut(&room_name(record.room)) {
            entry.1.push(record.nick.clone());
        }
    }
    let check_start = Instant::now();
    let rooms_result = async {
        let mut checker = Conn::connect(target.tcp, None).await?;
        let deadline = check_start + Duration::from_secs(cfg.idle_timeout_secs + 30);
        // Bounded by the deadline; paced at 4 polls a second.
        loop {
            let differs = expected.differs(&mut checker).await?;
            match differs {
                None => return Ok::<_, std::io::Error>(None),
                Some(diff) if Instant::now() >= deadline => return Ok(Some(diff)),
                Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
    .await;
    let rooms_secs = check_start.elapsed().as_secs_f64();

    // The room leaders' `end` markers close every member's books.
    let _ = phase.send(Phase::Marker);
    let marked = shared
        .wait_for(&shared.marked, cfg.members, Duration::from_secs(30))
        .await;

    // Lingering peers and members leave.
    let _ = release.send(true);
    let keepers: Vec<_> =
        std::mem::take(&mut *ctx.keepers.lock().unwrap_or_else(|e| e.into_inner()));
    let mut lingers = Vec::new();
    for keeper in keepers {
        match join_within(keeper, Duration::from_secs(60)).await {
            Ok(linger) => lingers.push(linger),
            Err(error) => report.notes.push(format!("a lingering peer: {error}")),
        }
    }
    let _ = phase.send(Phase::Quit);
    let mut results: Vec<MemberResult> = Vec::new();
    let mut member_task_errors = Vec::new();
    for task in member_tasks {
        match join_within(task, Duration::from_secs(60)).await {
            Ok(result) => results.push(result),
            Err(error) => member_task_errors.push(error),
        }
    }
    let _ = udp_done.send(true);
    let mut spoofs = Vec::new();
    for spoofer in spoofers {
        if let Ok(result) = join_within(spoofer, Duration::from_secs(30)).await {
            spoofs.push(result);
        }
    }

    // Open files back to their count before the run.
    let fd_start = Instant::now();
    let mut fd_after = process::fd_count(pid).unwrap_or(usize::MAX);
    // Bounded: 20 s at 10 polls a second.
    while fd_after != fd_before && fd_start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fd_after = process::fd_count(pid).unwrap_or(usize::MAX);
    }
    let fd_secs = fd_start.elapsed().as_secs_f64();
    let _ = stop_sampling.send(true);
    let (rss_peak, fd_peak) = join_within(sampler, Duration::from_secs(10))
        .await
        .unwrap_or((0, 0));
    let rss_peak = rss_peak.max(process::rss_kib(pid).unwrap_or(0));

    // ---- The members' books.
    let sent: u64 = results.iter().map(|r| r.sent).sum();
    let lost: u64 = results.iter().map(|r| r.lost).sum();
    let out_of_turn: u64 = results.iter().map(|r| r.out_of_turn).sum();
    let foreign: u64 = results.iter().map(|r| r.foreign).sum();
    let privmsgs: u64 = results.iter().map(|r| r.privmsgs).sum();
    let member_drops: usize = results.iter().map(|r| r.member_quits.len()).sum();
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    let failures: Vec<String> = results
        .iter()
        .filter_map(|r| {
            r.failure
                .as_ref()
                .map(|f| format!("{}: {f}", member_nick(r.index)))
        })
        .chain(member_task_errors)
        .collect();
    let unclean = results.iter().filter(|r| !r.clean_exit).count();
    let by_index: HashMap<usize, &MemberResult> = results.iter().map(|r| (r.index, r)).collect();
    let mut split_rooms = Vec::new();
    for room in 0..cfg.rooms {
        let orders: Vec<Option<(u64, u64)>> = layout
            .room_members(room)
            .iter()
            .map(|i| by_index.get(i).and_then(|r| r.order))
            .collect();
        if orders.iter().any(|o| o.is_none() || *o != orders[0]) {
            split_rooms.push(room_name(room));
        }
    }
    let members_ok = lost == 0
        && out_of_turn == 0
        && foreign == 0
        && privmsgs == 0
        && member_drops == 0
        && errors == 0
        && failures.is_empty()
        && unclean == 0
        && split_rooms.is_empty()
        && drained
        && marked
        && results.len() == cfg.members;
    report.row(
        "well-behaved members",
        format!(
            "{} in {} rooms, {sent} lines",
            cfg.members, cfg.rooms
        ),
        "every line of every co-member, each sender's in order; one order per room; none dropped; no ERR or PRIVMSG",
        format!(
            "lost {lost}, out of turn {out_of_turn}, rooms split {}, dropped {member_drops}, ERR {errors}, PRIVMSG {privmsgs}, failed {}",
            split_rooms.len(),
            unclean.max(failures.len())
        ),
        members_ok,
    );
    for problem in results.iter().flat_map(|r| r.problems.iter()).take(5) {
        report.notes.push(format!("member: {problem}"));
    }
    for line in results
        .iter()
        .flat_map(|r| r.member_quits.iter().chain(&r.errors_received))
        .take(5)
    {
        report.notes.push(format!("member got: {line}"));
    }
    for failure in failures.iter().take(5) {
        report.notes.push(format!("member failed: {failure}"));
    }
    if !split_rooms.is_empty() {
        report.notes.push(format!(
            "rooms whose members saw different orders: {split_rooms:?}"
        ));
    }
    if !drained {
        report.notes.push(format!(
            "only {} of {} members saw their last line come back in 30 s",
            shared.drained.load(Ordering::SeqCst),
            cfg.members
        ));
    }
    if !marked {
        report.notes.push(format!(
            "only {} of {} members saw their room's end marker in 30 s",
            shared.marked.load(Ordering::SeqCst),
            cfg.members
        ));
    }

    // ---- Every faulty peer, as it saw itself and as its room saw it.
    let lingered: HashMap<&str, &faults::Linger> =
        lingers.iter().map(|l| (l.nick.as_str(), l)).collect();
    for plan in &plans {
        let kind = plan.kind;
        let of_kind: Vec<&PeerRecord> = records.iter().filter(|r| r.kind == kind).collect();
        let mut watcher_labels = Vec::new();
        let mut all_ok = !of_kind.is_empty();
        for record in &of_kind {
            let watchers = layout.room_members(record.room);
            let seen: Vec<&Vec<members::SeenQuit>> = watchers
                .iter()
                .filter_map(|i| by_index.get(i).and_then(|r| r.quits.get(&record.nick)))
                .collect();
            let (label, watchers_ok) = if record.lingering {
                let early: Vec<&str> = seen
                    .iter()
                    .flat_map(|quits| quits.iter())
                    .filter(|q| !q.after_marker)
                    .map(|q| q.reason.as_str())
                    .collect();
                let linger_ok = lingered.get(record.nick.as_str()).is_some_and(|l| l.ok);
                if let Some(linger) = lingered.get(record.nick.as_str())
                    && let Some(detail) = &linger.detail
                {
                    report.notes.push(format!("{}: {detail}", record.nick));
                }
                match early.first() {
                    None => ("in WHO to the end".to_owned(), linger_ok),
                    Some(reason) => (
                        format!("QUIT {reason} before the end (seen by {})", early.len()),
                        false,
                    ),
                }
            } else {
                let reasons: Vec<&str> = seen
                    .iter()
                    .flat_map(|quits| quits.iter().map(|q| q.reason.as_str()))
                    .collect();
                let every = seen.len() == watchers.len() && seen.iter().all(|q| q.len() == 1);
                let same = reasons.windows(2).all(|w| w[0] == w[1]);
                if reasons.is_empty() {
                    ("no QUIT".to_owned(), false)
                } else if every && same {
                    (
                        format!("QUIT {}", reasons[0]),
                        reasons[0] == kind.quit_reason(),
                    )
                } else {
                    (
                        format!(
                            "QUIT {} (seen by {} of {} watchers)",
                            reasons.join("/"),
                            seen.len(),
                            watchers.len()
                        ),
                        false,
                    )
                }
            };
            if !watchers_ok || !record.ok {
                all_ok = false;
                report.notes.push(format!(
                    "{} {} in {}: peer saw {:?}{}; watchers saw {label}",
                    kind.name(),
                    record.nick,
                    room_name(record.room),
                    record.outcome,
                    record
                        .detail
                        .as_ref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                ));
            }
            watcher_labels.push(label);
        }
        let lines: u64 = of_kind.iter().map(|r| r.lines).sum();
        let injected = match kind {
            Kind::Reset | Kind::HalfClose => format!("{} peers", of_kind.len()),
            Kind::NeverReader => format!("{} peers, {lines} long /msgs at them", of_kind.len()),
            Kind::Drip => format!("{} peers, {lines} bytes", of_kind.len()),
            _ => format!("{} peers, {lines} lines", of_kind.len()),
        };
        let slowest = of_kind.iter().map(|r| r.secs).fold(0.0, f64::max);
        let mut seen = format!(
            "peer: {}; room: {}",
            histogram(of_kind.iter().map(|r| r.outcome.as_str())),
            histogram(watcher_labels.iter().map(String::as_str))
        );
        if matches!(kind, Kind::NeverReader | Kind::Drip) {
            let _ = write!(seen, "; slowest {slowest:.1} s");
        }
        report.row(kind.name(), injected, kind.expected(), seen, all_ok);
    }
    let connects = ctx.tcp_connects.load(Ordering::Relaxed);
    report.fig(
        "faulty TCP peers (and aimers) connected",
        connects.to_string(),
    );

    // ---- UDP: amplification towards sources that never proved themselves.
    let sources = spoofs.len();
    let datagrams: u64 = spoofs.iter().map(|s| s.sent).sum();
    let sent_bytes: u64 = spoofs.iter().map(|s| s.sent_bytes).sum();
    let received_bytes: u64 = spoofs.iter().map(|s| s.received_bytes).sum();
    let received: u64 = spoofs.iter().map(|s| s.received).sum();
    let welcomes: u64 = spoofs.iter().map(|s| s.welcomes).sum();
    let tokens: u64 = spoofs.iter().map(|s| s.tokens).sum();
    let started = tokens.max(welcomes);
    let served = spoofs.iter().filter(|s| s.tokens + s.welcomes > 0).count();
    let refusals: u64 = spoofs.iter().map(|s| s.refusals).sum();
    let worst = spoofs
        .iter()
        .map(udp::SpoofResult::ratio)
        .fold(0.0, f64::max);
    let over = spoofs.iter().filter(|s| s.ratio() > 3.0).count();
    let udp_errors: Vec<&String> = spoofs.iter().filter_map(|s| s.error.as_ref()).collect();
    report.row(
        "UDP from unverified sources",
        format!(
            "{sources} sources ({} addresses × {} ports), {datagrams} datagrams, {sent_bytes} B",
            cfg.udp_addresses, cfg.udp_ports
        ),
        "each source sent at most 3× the bytes it sent",
        format!(
            "{received_bytes} B in {received} datagrams back ({:.1}×); worst source {worst:.1}×; {over} of {sources} over 3×",
            received_bytes as f64 / sent_bytes.max(1) as f64
        ),
        over == 0 && sources == cfg.udp_sources() && udp_errors.is_empty(),
    );
    report.fig(
        "UDP datagrams back: TOKEN / WELCOME / ERR server-full",
        format!("{tokens} / {welcomes} / {refusals}"),
    );
    let udp_quits: Vec<&str> = results
        .iter()
        .flat_map(|r| r.quits.iter())
        .filter(|(nick, _)| nick.starts_with("guest"))
        .flat_map(|(_, quits)| quits.iter().map(|q| q.reason.as_str()))
        .collect();
    report.fig(
        "QUITs of UDP sessions seen by members",
        histogram(udp_quits.into_iter()),
    );
    if let Some(error) = udp_errors.first() {
        report.notes.push(format!("UDP source: {error}"));
    }
    let refused = ctx.tcp_refused.load(Ordering::Relaxed);
    match cfg.max_udp_sessions {
        // The run holds fewer TCP sessions than `tcp_peak`, but far more
        // than `tcp_peak + cap - sources`: uncapped, the UDP sources alone
        // would take the slots TCP peers need.
        Some(cap) => report.row(
            "UDP sessions vs TCP slots",
            format!(
                "{sources} UDP sources; --max-udp-sessions {cap}, --max-connections {} (TCP peak {} + {cap})",
                cfg.tcp_peak() + cap,
                cfg.tcp_peak()
            ),
            "no TCP peer refused (server-full)",
            format!(
                "{refused} of {connects} faulty-peer connects refused, all {} members admitted; {started} UDP sessions started for {served} sources",
                cfg.members
            ),
            refused == 0,
        ),
        None => {
            report.rows.push(Row {
                what: "UDP sessions vs TCP slots".into(),
                injected: format!("{sources} UDP sources"),
                expected: "no TCP peer refused (server-full)".into(),
                seen: "skipped: the server has no --max-udp-sessions".into(),
                verdict: Verdict::Skip,
            });
            report.notes.push(
                "UDP slot starvation not checked: `switchboard --help` lists no --max-udp-sessions"
                    .into(),
            );
        }
    }

    // ---- The final room state.
    let (rooms_ok, rooms_seen) = match rooms_result {
        Ok(None) => (true, format!("matched after {rooms_secs:.1} s")),
        Ok(Some(diff)) => (
            false,
            format!("still differs after {rooms_secs:.1} s: {diff}"),
        ),
        Err(error) => (false, format!("checker failed: {error}")),
    };
    let lingering = records.iter().filter(|r| r.lingering && r.ok).count();
    report.row(
        "ROOMS / WHO at the end",
        format!("{} rooms", cfg.rooms),
        format!(
            "exactly the {} members (join order) + {lingering} surviving peers",
            cfg.members
        ),
        rooms_seen,
        rooms_ok,
    );

    // ---- Memory and open files.
    let bound = rss_before + cfg.rss_allowance_kib();
    report.row(
        "server RSS",
        format!("base {}", mib(rss_before)),
        format!("peak <= {} = base + {}", mib(bound), cfg.rss_formula()),
        format!(
            "peak {} (+{})",
            mib(rss_peak),
            mib(rss_peak.saturating_sub(rss_before))
        ),
        rss_peak > 0 && rss_peak <= bound,
    );
    report.row(
        "server open files",
        format!("{fd_before} before"),
        format!("back to {fd_before} once every peer left"),
        format!("peak {fd_peak}, {fd_after} after {fd_secs:.1} s"),
        fd_after == fd_before,
    );
    report.fig("chaos phase", format!("{chaos_secs:.1} s"));
    report.fig("member lines sent", sent.to_string());
    report.fig(
        "member lines received",
        results.iter().map(|r| r.received).sum::<u64>().to_string(),
    );
    report
}

/// Adds the server's own health: still running, nothing panicked, what it
/// logged at warn or error level.
pub fn server_health(report: &mut Report, server: &mut process::ServerProcess) {
    let alive = server.alive();
    let log = server.log_lines();
    let panics: Vec<&String> = log.iter().filter(|l| l.contains("panicked")).collect();
    let warnings: Vec<&String> = log
        .iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    report.row(
        "server process",
        format!("pid {}", server.pid),
        "still running; no panic logged",
        format!(
            "{}; {} panics, {} warnings logged",
            if alive { "running" } else { "EXITED" },
            panics.len(),
            warnings.len()
        ),
        alive && panics.is_empty(),
    );
    for line in panics.iter().chain(warnings.iter()).take(5) {
        report.notes.push(format!("server log: {line}"));
    }
}
