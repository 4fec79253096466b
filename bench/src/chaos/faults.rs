//! The faulty peers. Each episode connects one peer (`<prefix><n>`), puts it
//! in a room with well-behaved members (the watchers), commits its fault,
//! and checks what the peer itself gets back; the watchers' `QUIT` lines are
//! checked by the controller afterwards.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::members::room_name;
use super::wire::{Conn, IO_TIMEOUT, Rng, is_server_full, until_set, words};

/// The faults injected over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Joins, chats, then closes with `SO_LINGER` 0 (half of them with a
    /// partial line unsent).
    Reset,
    /// Joins, chats, then shuts down its writing side and reads to the end.
    HalfClose,
    /// Joins with a tiny receive buffer and never reads again (but sends a
    /// line a second), while helpers (`aim<n>x<k>`) send it long `/msg`s.
    NeverReader,
    /// Lines of random bytes, each with a control character.
    Garbage,
    /// Lines that are not UTF-8 (some shaped like commands).
    BadUtf8,
    /// Lines over `--max-line`, split across many writes.
    OverLong,
    /// Ten seconds' worth of `--max-msgs-per-sec` lines in one write.
    Flood,
    /// A byte every 300 ms and never a newline.
    Drip,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Reset,
        Kind::HalfClose,
        Kind::NeverReader,
        Kind::Garbage,
        Kind::BadUtf8,
        Kind::OverLong,
        Kind::Flood,
        Kind::Drip,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Reset => "reset",
            Kind::HalfClose => "half-close",
            Kind::NeverReader => "never reads",
            Kind::Garbage => "garbage bytes",
            Kind::BadUtf8 => "invalid UTF-8",
            Kind::OverLong => "over-long lines",
            Kind::Flood => "flood",
            Kind::Drip => "slow drip",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Kind::Reset => "rst",
            Kind::HalfClose => "hc",
            Kind::NeverReader => "nr",
            Kind::Garbage => "gb",
            Kind::BadUtf8 => "utf",
            Kind::OverLong => "long",
            Kind::Flood => "fl",
            Kind::Drip => "drip",
        }
    }

    /// The reason word the watchers must see in `QUIT <room> <nick> <reason>`.
    pub fn quit_reason(self) -> &'static str {
        match self {
            Kind::Reset => "reset",
            Kind::HalfClose => "closed",
            Kind::NeverReader => "slow-consumer",
            Kind::Garbage | Kind::BadUtf8 | Kind::OverLong | Kind::Flood => "quit",
            Kind::Drip => "idle-timeout",
        }
    }

    /// Whether the fault costs only the offending lines: the session must
    /// stay, and the last such peer stays connected to the end of the run.
    pub fn survives(self) -> bool {
        matches!(
            self,
            Kind::Garbage | Kind::BadUtf8 | Kind::OverLong | Kind::Flood
        )
    }

    /// What SPEC §3 says must happen, for the report.
    pub fn expected(self) -> &'static str {
        match self {
            Kind::Reset => "QUIT reset",
            Kind::HalfClose => "replies owed, then EOF; QUIT closed",
            Kind::NeverReader => "dropped: QUIT slow-consumer; socket closed",
            Kind::Garbage => "ERR bad-encoding per line; session kept; /quit → QUIT quit",
            Kind::BadUtf8 => "ERR bad-encoding per line; session kept; /quit → QUIT quit",
            Kind::OverLong => {
                "one ERR line-too-long per line; max-line lines pass; session kept; QUIT quit"
            }
            Kind::Flood => {
                "excess lines ERR rate-limited (<= N + N·t pass); session kept; QUIT quit"
            }
            Kind::Drip => "ERR idle-timeout, then closed; QUIT idle-timeout",
        }
    }
}

/// How many peers of a kind, and how many at once.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub kind: Kind,
    pub count: usize,
    pub concurrency: usize,
}

/// What every episode shares.
pub struct FaultCtx {
    pub addr: SocketAddr,
    pub rooms: usize,
    pub max_line: usize,
    pub max_msgs_per_sec: u32,
    pub idle_timeout: Duration,
    /// TCP connections opened by episodes, and refused with `server-full`.
    pub tcp_connects: AtomicU64,
    pub tcp_refused: AtomicU64,
    /// Peers that stay to the end, each kept alive by its own task.
    pub keepers: Mutex<Vec<JoinHandle<Linger>>>,
    /// Turns true when the lingering peers may `/quit`.
    pub release: watch::Receiver<bool>,
}

/// One faulty peer's episode.
#[derive(Debug, Clone)]
pub struct PeerRecord {
    pub kind: Kind,
    pub nick: String,
    pub room: usize,
    /// Kept connected until the end of the run (no `QUIT` expected).
    pub lingering: bool,
    /// What the peer itself saw was right.
    pub ok: bool,
    /// What the peer saw, in a few words (counted per kind in the table).
    pub outcome: String,
    /// Why it is not ok, when it is not.
    pub detail: Option<String>,
    /// Faulty lines sent (0 for kinds that send none).
    pub lines: u64,
    /// Seconds from the fault to the peer's end (dripping, never reading).
    pub secs: f64,
}

/// A lingering peer's end.
#[derive(Debug, Clone)]
pub struct Linger {
    pub nick: String,
    pub ok: bool,
    pub detail: Option<String>,
}

/// What an episode reports on success: outcome, lines, seconds.
type Episode = Result<(String, u64, f64), String>;

fn err(context: &str) -> impl Fn(io::Error) -> String + '_ {
    move |e| format!("{context}: {e}")
}

/// Runs `plan.count` episodes spread evenly over `duration` from `start`,
/// at most `plan.concurrency` at once; none starts after the end. Returns
/// every episode's record once all are done.
pub async fn drive(
    plan: Plan,
    ctx: Arc<FaultCtx>,
    start: Instant,
    duration: Duration,
) -> Vec<PeerRecord> {
    let permits = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let end = start + duration;
    let mut tasks = Vec::new();
    for i in 0..plan.count {
        let at = start + duration.mul_f64((i as f64 + 0.5) / plan.count as f64);
        tokio::time::sleep_until(at).await;
        let Ok(Ok(permit)) = tokio::time::timeout_at(end, permits.clone().acquire_owned()).await
        else {
            break;
        };
        let ctx = ctx.clone();
        let lingering = plan.kind.survives() && i + 1 == plan.count;
        let kind = plan.kind;
        let nick = format!("{}{i}", kind.prefix());
        let room = (i + kind as usize) % ctx.rooms;
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let outcome = episode(kind, i, &nick, room, lingering, &ctx).await;
            drop(permit);
            let (ok, outcome, detail, lines, secs) = match outcome {
                Ok((outcome, lines, secs)) => (true, outcome, None, lines, secs),
                Err(detail) => (
                    false,
                    "failed".to_owned(),
                    Some(format!("{nick}: {detail}")),
                    0,
                    started.elapsed().as_secs_f64(),
                ),
            };
            PeerRecord {
                kind,
                nick,
                room,
                lingering,
                ok,
                outcome,
                detail,
                lines,
                secs,
            }
        }));
    }
    let mut records = Vec::new();
    for task in tasks {
        // Every episode bounds its own waits; this only guards against a bug.
        match tokio::time::timeout(Duration::from_secs(120), task).await {
            Ok(Ok(record)) => records.push(record),
            Ok(Err(error)) => records.push(lost_record(plan.kind, format!("panicked: {error}"))),
            Err(_) => records.push(lost_record(plan.kind, "did not finish in 120 s".into())),
        }
    }
    records
}

fn lost_record(kind: Kind, detail: String) -> PeerRecord {
    PeerRecord {
        kind,
        nick: "?".into(),
        room: 0,
        lingering: false,
        ok: false,
        outcome: "failed".into(),
        detail: Some(detail),
        lines: 0,
        secs: 0.0,
    }
}

async fn episode(
    kind: Kind,
    i: usize,
    nick: &str,
    room: usize,
    lingering: bool,
    ctx: &Arc<FaultCtx>,
) -> Episode {
    let room = room_name(room);
    match kind {
        Kind::Reset => reset(ctx, nick, &room, i % 2 == 1).await,
        Kind::HalfClose => half_close(ctx, nick, &room).await,
        Kind::NeverReader => never_reader(ctx, nick, &room, i).await,
        Kind::Garbage => {
            let lines = garbage_lines(i as u64);
            refused_lines(ctx, nick, &room, lingering, &lines).await
        }
        Kind::BadUtf8 => {
            let lines = bad_utf8_lines();
            refused_lines(ctx, nick, &room, lingering, &lines).await
        }
        Kind::OverLong => over_long(ctx, nick, &room, lingering, i as u64).await,
        Kind::Flood => flood(ctx, nick, &room, lingering).await,
        Kind::Drip => drip(ctx, nick, &room).await,
    }
}

/// A new TCP peer: `WELCOME`, counted (and its refusal counted).
async fn connect(ctx: &FaultCtx, recv_buffer: Option<u32>) -> Result<Conn, String> {
    ctx.tcp_connects.fetch_add(1, Ordering::Relaxed);
    Conn::connect(ctx.addr, recv_buffer).await.map_err(|e| {
        if is_server_full(&e) {
            ctx.tcp_refused.fetch_add(1, Ordering::Relaxed);
        }
        format!("connect: {e}")
    })
}

/// `/nick NICK`, read up to the `NICK` reply.
async fn rename(conn: &mut Conn, nick: &str) -> Result<(), String> {
    conn.send(format!("/nick {nick}\n").as_bytes())
        .await
        .map_err(err("/nick"))?;
    let reply = conn.expect("").await.map_err(err("/nick"))?;
    if !reply.starts_with("NICK ") || !reply.ends_with(&format!(" {nick}")) {
        return Err(format!("/nick {nick}: {reply}"));
    }
    Ok(())
}

/// A peer named `nick`, joined to `room` (past its `WHO`).
async fn join_peer(
    ctx: &FaultCtx,
    nick: &str,
    room: &str,
    recv_buffer: Option<u32>,
) -> Result<Conn, String> {
    let mut conn = connect(ctx, recv_buffer).await?;
    rename(&mut conn, nick).await?;
    conn.send(format!("/join {room}\n").as_bytes())
        .await
        .map_err(err("/join"))?;
    conn.expect(&format!("WHO {room} "))
        .await
        .map_err(err("/join"))?;
    Ok(conn)
}

/// Sends a chat line and reads until its own `MSG` comes back: the session
/// is in the room and its line went through it.
async fn chat(conn: &mut Conn, nick: &str, room: &str, text: &str) -> Result<(), String> {
    request(
        conn,
        &format!("{text}\n"),
        &format!("MSG {room} {nick} {text}"),
        false,
    )
    .await?;
    Ok(())
}

/// Sends `line` and reads until a line starting with `wanted` (returned),
/// skipping room traffic. An `ERR` is a failure, except `rate-limited` when
/// `retry_limited` (right after a flood): then the line is sent again a
/// moment later, at most 50 times.
async fn request(
    conn: &mut Conn,
    line: &str,
    wanted: &str,
    retry_limited: bool,
) -> Result<String, String> {
    let what = line.trim_end();
    for _ in 0..50 {
        conn.send(line.as_bytes()).await.map_err(err(what))?;
        let deadline = Instant::now() + IO_TIMEOUT;
        // Bounded by the deadline.
        let reply = loop {
            let reply = conn
                .line_before(deadline)
                .await
                .map_err(|e| format!("{what}: waiting for {wanted:?}: {e}"))?
                .ok_or_else(|| format!("{what}: closed while waiting for {wanted:?}"))?;
            if reply.starts_with(wanted.as_bytes()) || reply.starts_with(b"ERR ") {
                break String::from_utf8_lossy(&reply).into_owned();
            }
        };
        if reply.starts_with(wanted) {
            return Ok(reply);
        }
        if !(retry_limited && reply.starts_with("ERR rate-limited ")) {
            return Err(format!("{what}: {reply}"));
        }
        // The bucket refills at --max-msgs-per-sec: a token is a moment away.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{what}: still rate-limited after 50 tries"))
}

async fn reset(ctx: &FaultCtx, nick: &str, room: &str, partial: bool) -> Episode {
    let mut conn = join_peer(ctx, nick, room, None).await?;
    chat(&mut conn, nick, room, "about to reset").await?;
    if partial {
        conn.send(b"a line that never ends")
            .await
            .map_err(err("partial line"))?;
    }
    // Dropping a write half would send FIN first; reunite and abort instead.
    let stream = conn
        .reader
        .into_inner()
        .reunite(conn.writer)
        .map_err(|e| format!("reunite: {e}"))?;
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .map_err(err("SO_LINGER"))?;
    drop(stream);
    let what = if partial {
        "RST after a partial line"
    } else {
        "RST"
    };
    Ok((what.into(), 0, 0.0))
}

async fn half_close(ctx: &FaultCtx, nick: &str, room: &str) -> Episode {
    let mut conn = join_peer(ctx, nick, room, None).await?;
    chat(&mut conn, nick, room, "about to half-close").await?;
    // Owed before the close: the answer to this ping.
    conn.send(format!("/ping {nick}\n").as_bytes())
        .await
        .map_err(err("/ping"))?;
    conn.writer.shutdown().await.map_err(err("shutdown"))?;
    let started = Instant::now();
    conn.expect(&format!("PONG {nick}"))
        .await
        .map_err(err("reply owed after the half-close"))?;
    match conn.read_to_close(IO_TIMEOUT, 64 << 20).await {
        Ok(true) => Ok(("PONG, then EOF".into(), 0, started.elapsed().as_secs_f64())),
        Ok(false) => Err("reset instead of a clean close".into()),
        Err(e) => Err(format!("after the half-close: {e}")),
    }
}

/// Helpers that aim long `/msg`s at each never-reader, together several
/// MiB a second.
pub const AIMERS: usize = 4;

async fn never_reader(ctx: &Arc<FaultCtx>, nick: &str, room: &str, i: usize) -> Episode {
    // A tiny receive window, so the server's queue fills instead of the socket.
    let mut peer = join_peer(ctx, nick, room, Some(4096)).await?;
    let (gone, gone_rx) = watch::channel(false);
    let started = Instant::now();
    let aimers: Vec<_> = (0..AIMERS)
        .map(|k| {
            let aimer = format!("aim{i}x{k}");
            tokio::spawn(aim(
                ctx.clone(),
                aimer,
                nick.to_owned(),
                gone.clone(),
                gone_rx.clone(),
            ))
        })
        .collect();
    // The peer keeps sending (a `/pong` a second), so only its not reading
    // can end it, never its idle timer.
    let mut keepalive = tokio::time::interval(Duration::from_secs(1));
    let mut peer_writes = true;
    let mut gone_rx = gone_rx;
    let deadline = started + IO_TIMEOUT;
    // Bounded by the deadline.
    loop {
        tokio::select! {
            _ = until_set(&mut gone_rx) => break,
            _ = keepalive.tick(), if peer_writes => {
                peer_writes = peer.send(b"/pong\n").await.is_ok();
            }
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    let dropped_after = started.elapsed().as_secs_f64();
    let _ = gone.send(true);
    let mut sent = 0;
    let mut told = false;
    for aimer in aimers {
        match aimer.await {
            Ok(Ok((lines, saw_gone))) => {
                sent += lines;
                told |= saw_gone;
            }
            Ok(Err(detail)) => return Err(detail),
            Err(e) => return Err(format!("aimer: {e}")),
        }
    }
    if !told {
        return Err(format!(
            "still there after {sent} long /msgs in {dropped_after:.1} s"
        ));
    }
    // The peer reads at last: whatever was in flight, then the close.
    peer.read_to_close(IO_TIMEOUT, 64 << 20)
        .await
        .map_err(err("the dropped peer's socket"))?;
    Ok(("dropped; socket closed".into(), sent, dropped_after))
}

/// One aimer: long `/msg`s at `target` at 80% of `--max-msgs-per-sec` (so
/// every one is carried out), reading its own copies, until the target is
/// gone (`ERR no-such-nick`, which it announces on `gone`) or another aimer
/// saw it go. Returns the lines sent and whether it saw the target go.
async fn aim(
    ctx: Arc<FaultCtx>,
    nick: String,
    target: String,
    gone: watch::Sender<bool>,
    mut gone_rx: watch::Receiver<bool>,
) -> Result<(u64, bool), String> {
    // A large receive buffer: the aimer reads its own copies (MiB a second)
    // and must never be the slow consumer, even on a busy machine.
    let mut conn = connect(&ctx, Some(4 << 20)).await?;
    rename(&mut conn, &nick).await?;
    let pad = "p".repeat(ctx.max_line.saturating_sub(target.len() + 16).max(1));
    let order = format!("/msg {target} {pad}\n");
    let rate = (f64::from(ctx.max_msgs_per_sec) * 0.8).max(1.0);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut sent = 0u64;
    let mut saw_gone = false;
    // Bounded by the deadline.
    loop {
        tokio::select! {
            _ = until_set(&mut gone_rx) => break,
            _ = ticker.tick() => {
                conn.send(order.as_bytes()).await.map_err(err("aimer /msg"))?;
                sent += 1;
            }
            line = conn.next_line() => {
                let line = line.map_err(err("aimer"))?.ok_or("the aimer was closed")?;
                if line.starts_with(b"ERR no-such-nick") {
                    saw_gone = true;
                    let _ = gone.send(true);
                    break;
                } else if line.starts_with(b"ERR ") {
                    return Err(format!("{nick} got {}", String::from_utf8_lossy(&line)));
                }
            }
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    // Answers to /msgs still in flight (`ERR no-such-nick` once the target
    // went) may come before the BYE.
    conn.send(b"/quit\n").await.map_err(err("aimer /quit"))?;
    conn.expect("BYE")
        .await
        .map_err(|e| format!("{nick} /quit: {e}"))?;
    Ok((sent, saw_gone))
}

/// Control characters SPEC §3 refuses (C0 but tab, LF and CR; DEL).
const CONTROLS: &[u8] = &[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28,
    29, 30, 31, 127,
];

/// Eight lines of random bytes, each holding a control character (and
/// neither LF nor CR), up to 120 bytes long.
fn garbage_lines(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed + 1);
    (0..8)
        .map(|_| {
            let len = rng.range(1, 120) as usize;
            let mut line: Vec<u8> = (0..len)
                .map(|_| match rng.next() as u8 {
                    b'\n' | b'\r' => 0x1b,
                    b => b,
                })
                .collect();
            let at = rng.range(0, len as u64 - 1) as usize;
            line[at] = CONTROLS[rng.range(0, CONTROLS.len() as u64 - 1) as usize];
            line
        })
        .collect()
}

/// Lines that are not UTF-8 and hold no control character, some shaped
/// like commands (which must not be carried out).
fn bad_utf8_lines() -> Vec<Vec<u8>> {
    [
        &b"caf\xc3 au lait"[..],
        b"\xff\xfe plain text",
        b"/join \xc3\x28",
        b"overlong \xc0\xaf slash",
        b"surrogate \xed\xa0\x80 half",
        b"beyond \xf4\x90\x80\x80 U+10FFFF",
        b"lone continuation \x80\x80",
        b"five bytes \xf8\x88\x80\x80\x80",
        b"/msg m0 \xfe",
        b"/nick cut\xe2\x82",
    ]
    .iter()
    .map(|line| line.to_vec())
    .collect()
}

/// Sends `lines` (each refused as `bad-encoding`) in one write, then a
/// `/ping`: exactly one `ERR bad-encoding` per line must come before the
/// `PONG`, and nothing of them may reach the room. Then the session must
/// still chat, and ends with `/quit` (or lingers).
async fn refused_lines(
    ctx: &Arc<FaultCtx>,
    nick: &str,
    room: &str,
    lingering: bool,
    lines: &[Vec<u8>],
) -> Episode {
    let mut conn = join_peer(ctx, nick, room, None).await?;
    let mut bytes = Vec::new();
    for line in lines {
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
    }
    conn.send(&bytes).await.map_err(err("faulty lines"))?;
    let errors = count_errors_until_pong(&mut conn, nick, room, "bad-encoding").await?;
    if errors != lines.len() as u64 {
        return Err(format!(
            "{errors} ERR bad-encoding for {} lines",
            lines.len()
        ));
    }
    chat(&mut conn, nick, room, "still here").await?;
    let outcome = finish(ctx, conn, nick, lingering).await?;
    Ok((outcome, lines.len() as u64, 0.0))
}

/// Sends `/ping <nick>` and reads up to its `PONG`, counting `ERR <code>`;
/// any other `ERR`, or a chat line of this peer, is an error.
async fn count_errors_until_pong(
    conn: &mut Conn,
    nick: &str,
    room: &str,
    code: &str,
) -> Result<u64, String> {
    conn.send(format!("/ping {nick}\n").as_bytes())
        .await
        .map_err(err("/ping"))?;
    let pong = format!("PONG {nick}");
    let own = format!("MSG {room} {nick} ");
    let wanted = format!("ERR {code} ");
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut count = 0;
    // Bounded by the deadline.
    loop {
        let line = conn
            .line_before(deadline)
            .await
            .map_err(err("waiting for PONG"))?
            .ok_or("closed while waiting for PONG")?;
        let text = String::from_utf8_lossy(&line);
        if text == pong {
            return Ok(count);
        }
        if text.starts_with(&wanted) {
            count += 1;
        } else if text.starts_with("ERR ") {
            return Err(format!("unexpected {text}"));
        } else if text.starts_with(&own) {
            return Err(format!("a refused line reached the room: {text}"));
        }
    }
}

/// Ends a surviving peer: `/quit`, `BYE`, end of input; or, when
/// `lingering`, hands it to a keeper task that stays until released.
async fn finish(
    ctx: &Arc<FaultCtx>,
    mut conn: Conn,
    nick: &str,
    lingering: bool,
) -> Result<String, String> {
    if lingering {
        let release = ctx.release.clone();
        let nick = nick.to_owned();
        let keeper = tokio::spawn(keep(conn, nick, release));
        ctx.keepers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(keeper);
        return Ok("kept; stays to the end".into());
    }
    quit(&mut conn).await?;
    Ok("kept; /quit → BYE, EOF".into())
}

async fn quit(conn: &mut Conn) -> Result<(), String> {
    // A flooder's bucket may still be refilling: retried while refused.
    request(conn, "/quit\n", "BYE", true).await?;
    match conn.read_to_close(IO_TIMEOUT, 64 << 20).await {
        Ok(true) => Ok(()),
        Ok(false) => Err("reset after BYE".into()),
        Err(e) => Err(format!("after BYE: {e}")),
    }
}

/// Keeps a lingering peer alive (answering `PING`s) until released, then
/// quits it.
async fn keep(mut conn: Conn, nick: String, mut release: watch::Receiver<bool>) -> Linger {
    let fail = |detail: String| Linger {
        nick: nick.clone(),
        ok: false,
        detail: Some(detail),
    };
    // Bounded by the release, which the controller always sends.
    loop {
        tokio::select! {
            released = until_set(&mut release) => {
                if !released {
                    return fail("the run ended without releasing it".into());
                }
                break;
            }
            line = conn.next_line() => match line {
                Ok(Some(line)) if line.starts_with(b"PING ") => {
                    let mut pong = b"/pong ".to_vec();
                    pong.extend_from_slice(words(&line).get(1).copied().unwrap_or(b""));
                    pong.push(b'\n');
                    if let Err(e) = conn.send(&pong).await {
                        return fail(format!("write: {e}"));
                    }
                }
                Ok(Some(line)) if line.starts_with(b"ERR ") => {
                    return fail(format!("while lingering: {}", String::from_utf8_lossy(&line)));
                }
                Ok(Some(_)) => {}
                Ok(None) => return fail("closed while lingering".into()),
                Err(e) => return fail(format!("while lingering: {e}")),
            }
        }
    }
    match quit(&mut conn).await {
        Ok(()) => Linger {
            nick,
            ok: true,
            detail: None,
        },
        Err(detail) => fail(detail),
    }
}

/// Four lines over `--max-line` (every other one a `/msg` command that must
/// not be carried out), written in small random pieces, then two lines of
/// exactly `--max-line` bytes (one ending in `\r\n`), which must pass.
async fn over_long(
    ctx: &Arc<FaultCtx>,
    nick: &str,
    room: &str,
    lingering: bool,
    seed: u64,
) -> Episode {
    let mut conn = join_peer(ctx, nick, room, None).await?;
    let mut rng = Rng::new(seed + 1000);
    let max = ctx.max_line as u64;
    let mut bytes = Vec::new();
    let count = 4u64;
    for j in 0..count {
        let len = rng.range(max + 1, 4 * max) as usize;
        let start = bytes.len();
        if j % 2 == 1 {
            bytes.extend_from_slice(b"/msg m0 ");
        }
        bytes.resize(start + len, b'y');
        bytes.push(b'\n');
    }
    // Pieces of 1 byte to half a line, a pause now and then: the server
    // sees each line over several reads.
    let mut at = 0;
    while at < bytes.len() {
        let piece = (rng.range(1, max / 2) as usize).min(bytes.len() - at);
        conn.send(&bytes[at..at + piece])
            .await
            .map_err(err("long line"))?;
        at += piece;
        if rng.range(0, 3) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let exact_lf = "x".repeat(ctx.max_line);
    let exact_crlf = "w".repeat(ctx.max_line);
    conn.send(format!("{exact_lf}\n{exact_crlf}\r\n").as_bytes())
        .await
        .map_err(err("max-line lines"))?;
    conn.send(format!("/ping {nick}\n").as_bytes())
        .await
        .map_err(err("/ping"))?;
    let pong = format!("PONG {nick}");
    let own = format!("MSG {room} {nick} ");
    let mut too_long = 0;
    let mut passed = 0;
    let mut ponged = false;
    let deadline = Instant::now() + IO_TIMEOUT;
    // Bounded by the deadline: the PONG and both echoes.
    while !(ponged && passed == 2) {
        let line = conn
            .line_before(deadline)
            .await
            .map_err(|e| format!("waiting for PONG and 2 echoes ({passed} seen): {e}"))?
            .ok_or("closed while waiting for PONG")?;
        let text = String::from_utf8_lossy(&line);
        if text == pong {
            ponged = true;
        } else if text.starts_with("ERR line-too-long ") {
            if ponged {
                return Err("ERR line-too-long after the PONG".into());
            }
            too_long += 1;
        } else if text.starts_with("ERR ") {
            return Err(format!("unexpected {text}"));
        } else if let Some(rest) = text.strip_prefix(&own) {
            if rest == exact_lf || rest == exact_crlf {
                passed += 1;
            } else {
                return Err(format!(
                    "an over-long line reached the room ({} bytes)",
                    rest.len()
                ));
            }
        }
    }
    if too_long != count {
        return Err(format!("{too_long} ERR line-too-long for {count} lines"));
    }
    let outcome = finish(ctx, conn, nick, lingering).await?;
    Ok((outcome, count, 0.0))
}

async fn flood(ctx: &Arc<FaultCtx>, nick: &str, room: &str, lingering: bool) -> Episode {
    let mut conn = join_peer(ctx, nick, room, None).await?;
    let rate = u64::from(ctx.max_msgs_per_sec.max(1));
    let lines = 10 * rate;
    let mut bytes = Vec::new();
    for i in 0..lines {
        bytes.extend_from_slice(format!("f{i}\n").as_bytes());
    }
    let started = Instant::now();
    conn.send(&bytes).await.map_err(err("flood"))?;
    let own = format!("MSG {room} {nick} f");
    let (mut passed, mut limited) = (0u64, 0u64);
    let deadline = started + IO_TIMEOUT;
    // Bounded by the deadline: one answer per line.
    while passed + limited < lines {
        let line = conn
            .line_before(deadline)
            .await
            .map_err(|e| format!("{passed} passed + {limited} limited of {lines}: {e}"))?
            .ok_or("closed during the flood")?;
        let text = String::from_utf8_lossy(&line);
        if text.starts_with(&own) {
            passed += 1;
        } else if text.starts_with("ERR rate-limited ") {
            limited += 1;
        } else if text.starts_with("ERR ") {
            return Err(format!("unexpected {text}"));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    // A token bucket of N per second with a burst of N lets at most
    // N + N·t lines through in t seconds.
    let allowed = rate + (rate as f64 * secs).ceil() as u64;
    // And at least the burst, less the two lines before the flood.
    let burst = rate.saturating_sub(2);
    if limited == 0 || passed > allowed || passed < burst {
        return Err(format!(
            "{passed} passed, {limited} limited of {lines} in {secs:.2} s \
             (between {burst} and {allowed} should pass)"
        ));
    }
    // Still served once the bucket refills: each line retried while refused.
    request(
        &mut conn,
        &format!("/ping {nick}\n"),
        &format!("PONG {nick}"),
        true,
    )
    .await?;
    let echo = format!("MSG {room} {nick} still here");
    request(&mut conn, "still here\n", &echo, true).await?;
    let outcome = finish(ctx, conn, nick, lingering).await?;
    Ok((outcome, lines, secs))
}

async fn drip(ctx: &FaultCtx, nick: &str, room: &str) -> Episode {
    let mut conn = join_peer(ctx, nick, room, None).await?;
    // The `/join` was its last complete line.
    let since = Instant::now();
    let deadline = since + ctx.idle_timeout + IO_TIMEOUT;
    let mut ticker = tokio::time::interval(Duration::from_millis(300));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut dripped = 0u64;
    let mut told = false;
    let mut writing = true;
    let clean = loop {
        tokio::select! {
            _ = ticker.tick(), if writing && !told => {
                let byte = [b"drip"[(dripped % 4) as usize]];
                if conn.send(&byte).await.is_err() {
                    writing = false;
                }
                dripped += 1;
            }
            line = conn.next_line() => match line {
                Ok(Some(line)) if line.starts_with(b"ERR idle-timeout ") => told = true,
                Ok(Some(line)) if line.starts_with(b"ERR ") => {
                    return Err(format!("unexpected {}", String::from_utf8_lossy(&line)));
                }
                Ok(Some(_)) => {}
                Ok(None) => break true,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break false,
                Err(e) => return Err(format!("dripping: {e}")),
            },
            () = tokio::time::sleep_until(deadline) => {
                return Err(format!("still open {:?} after its last line", deadline - since));
            }
        }
    };
    let secs = since.elapsed().as_secs_f64();
    if !told {
        return Err(format!("closed after {secs:.1} s without ERR idle-timeout"));
    }
    // The server saw the /join a moment before the WHO was read here.
    if secs + 0.25 < ctx.idle_timeout.as_secs_f64() {
        return Err(format!("closed after {secs:.1} s, before the idle timeout"));
    }
    let how = if clean { "EOF" } else { "RST" };
    Ok((format!("ERR idle-timeout, {how}"), dripped, secs))
}
