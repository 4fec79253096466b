//! The well-behaved members: `m<i>` in room `r<i % rooms>`, each sending
//! numbered chat lines (`MSG r<k> m<i> <seq>`) at a steady pace, reading
//! everything, answering `PING`s, and keeping the books that prove nothing
//! was lost or reordered:
//!
//! - per co-member, the next sequence number expected (a line out of turn is
//!   a gap or a reordering);
//! - a hash of every room event (`MSG`, `JOIN`, `LEAVE`, `QUIT`) from the
//!   room's last member `JOIN` up to the room leader's `end` marker, which
//!   must be the same for every member of the room (the room has one order);
//! - every `QUIT` of someone else, with its reason (the watchers' view of
//!   the faulty peers).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::{Instant, MissedTickBehavior};

use super::wire::{Conn, IO_TIMEOUT, fold_hash, words};

/// What the controller asks of every member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Send a numbered line every interval.
    Chat,
    /// Stop sending; report once the last own line came back.
    Drain,
    /// The room leader sends `end`; everyone reports its books at it.
    Marker,
    /// `/quit`, then `BYE` and end of input.
    Quit,
}

/// Where members are: member `i` is in room `i % rooms` at position `i / rooms`.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub members: usize,
    pub rooms: usize,
}

impl Layout {
    pub fn room_of(&self, member: usize) -> usize {
        member % self.rooms
    }

    /// Members of `room`, in join order.
    pub fn room_members(&self, room: usize) -> Vec<usize> {
        (room..self.members).step_by(self.rooms).collect()
    }
}

pub fn member_nick(i: usize) -> String {
    format!("m{i}")
}

pub fn room_name(room: usize) -> String {
    format!("r{room}")
}

/// `m<i>` → `i`, for nicks of members (`i < members`).
fn member_index(nick: &[u8], members: usize) -> Option<usize> {
    let digits = nick.strip_prefix(b"m")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let i: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (i < members).then_some(i)
}

/// What members and the controller share.
pub struct Shared {
    pub layout: Layout,
    /// Lines each member sent, published when it stops sending
    /// (`u64::MAX` until then).
    pub final_sent: Vec<AtomicU64>,
    /// Members whose last line came back after `Drain`.
    pub drained: AtomicUsize,
    /// Members that reached their room's `end` marker.
    pub marked: AtomicUsize,
    /// Woken whenever `drained` or `marked` grows.
    pub progress: Notify,
}

impl Shared {
    pub fn new(layout: Layout) -> Shared {
        Shared {
            layout,
            final_sent: (0..layout.members)
                .map(|_| AtomicU64::new(u64::MAX))
                .collect(),
            drained: AtomicUsize::new(0),
            marked: AtomicUsize::new(0),
            progress: Notify::new(),
        }
    }

    /// Waits until `counter` reaches `target` or `limit` passes; whether it did.
    pub async fn wait_for(&self, counter: &AtomicUsize, target: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        // Bounded by the deadline; woken by every member that reports.
        loop {
            let notified = self.progress.notified();
            if counter.load(Ordering::SeqCst) >= target {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return counter.load(Ordering::SeqCst) >= target;
            }
        }
    }
}

/// One `QUIT` a member saw about someone who is not a member.
#[derive(Debug, Clone)]
pub struct SeenQuit {
    pub reason: String,
    /// Whether it came after the room's `end` marker.
    pub after_marker: bool,
}

/// A member's books at the end.
#[derive(Debug, Default)]
pub struct MemberResult {
    pub index: usize,
    pub sent: u64,
    /// Lines of members (itself included) received in turn.
    pub received: u64,
    /// Lines of co-members never received by the marker.
    pub lost: u64,
    /// Lines that came out of turn (a gap or a step back).
    pub out_of_turn: u64,
    /// Member lines from another room (must be none).
    pub foreign: u64,
    /// `PRIVMSG`s received: none is sent to members, so any came from a
    /// refused line (over-long or not UTF-8) that was carried out anyway.
    pub privmsgs: u64,
    /// Room events from the room's last `JOIN` to the marker: count and hash.
    pub order: Option<(u64, u64)>,
    /// `QUIT`s of non-members, by nick.
    pub quits: HashMap<String, Vec<SeenQuit>>,
    /// `QUIT` lines about members (a well-behaved member dropped).
    pub member_quits: Vec<String>,
    /// `ERR` lines received (a member's line refused), and the first few.
    pub errors: u64,
    pub errors_received: Vec<String>,
    /// What went wrong on this member's own connection.
    pub failure: Option<String>,
    /// `/quit` answered by `BYE` and end of input.
    pub clean_exit: bool,
    /// First problems seen, for the report.
    pub problems: Vec<String>,
}

impl MemberResult {
    fn problem(&mut self, text: String) {
        if self.problems.len() < 3 {
            self.problems.push(text);
        }
    }
}

/// Connects the members of `room` one after another (so their join order is
/// their index order) and returns them joined, each past its own `WHO`.
pub async fn connect_room(
    addr: SocketAddr,
    layout: Layout,
    room: usize,
) -> Result<Vec<(usize, Conn)>, String> {
    let name = room_name(room);
    let mut joined = Vec::new();
    for i in layout.room_members(room) {
        let nick = member_nick(i);
        let step = async {
            let mut conn = Conn::connect(addr, None).await?;
            conn.send(format!("/nick {nick}\n/join {name}\n").as_bytes())
                .await?;
            let reply = conn.expect("").await?;
            if !reply.starts_with("NICK ") {
                return Err(std::io::Error::other(format!("/nick {nick}: {reply}")));
            }
            conn.expect(&format!("WHO {name} ")).await?;
            Ok::<Conn, std::io::Error>(conn)
        };
        match step.await {
            Ok(conn) => joined.push((i, conn)),
            Err(error) => return Err(format!("member {nick}: {error}")),
        }
    }
    Ok(joined)
}

/// One member's state while it runs.
struct Member {
    me: usize,
    layout: Layout,
    shared: Arc<Shared>,
    room: usize,
    leader: usize,
    room_word: Vec<u8>,
    /// `JOIN <room> <last member>`: room events are hashed after it.
    last_join: Vec<u8>,
    /// Next sequence number expected from each co-member (by position).
    expected: Vec<u64>,
    my_pos: usize,
    hashing: bool,
    hash: u64,
    events: u64,
    marker_seen: bool,
    /// Stopped sending (`Drain` or later) and published its count.
    stopped: bool,
    drained: bool,
    marker_sent: bool,
    quitting: bool,
    bye: bool,
    result: MemberResult,
}

impl Member {
    fn new(me: usize, shared: Arc<Shared>) -> Member {
        let layout = shared.layout;
        let room = layout.room_of(me);
        let room_members = layout.room_members(room);
        let last = *room_members.last().unwrap_or(&me);
        Member {
            me,
            layout,
            room,
            leader: room_members[0],
            room_word: room_name(room).into_bytes(),
            last_join: format!("JOIN {} {}", room_name(room), member_nick(last)).into_bytes(),
            expected: vec![0; room_members.len()],
            my_pos: me / layout.rooms,
            // The last member read its own JOIN before its WHO: it starts now.
            hashing: me == last,
            hash: 0,
            events: 0,
            marker_seen: false,
            stopped: false,
            drained: false,
            marker_sent: false,
            quitting: false,
            bye: false,
            result: MemberResult {
                index: me,
                ..MemberResult::default()
            },
            shared,
        }
    }

    /// Reports, once, that every line this member sent came back.
    fn check_drained(&mut self) {
        if self.stopped && !self.drained && self.expected[self.my_pos] >= self.result.sent {
            self.drained = true;
            self.shared.drained.fetch_add(1, Ordering::SeqCst);
            self.shared.progress.notify_waiters();
        }
    }

    /// Catches up with `phase`: phases only move forward, but a receiver
    /// sees only the latest, so every step skipped is taken here.
    async fn enter(&mut self, phase: Phase, conn: &mut Conn) -> std::io::Result<()> {
        if phase >= Phase::Drain && !self.stopped {
            self.stopped = true;
            self.shared.final_sent[self.me].store(self.result.sent, Ordering::SeqCst);
            self.check_drained();
        }
        if phase >= Phase::Marker && self.me == self.leader && !self.marker_sent {
            self.marker_sent = true;
            conn.send(b"end\n").await?;
        }
        if phase == Phase::Quit && !self.quitting {
            self.quitting = true;
            conn.send(b"/quit\n").await?;
        }
        Ok(())
    }

    /// Books one line from the server; a `PING` is answered.
    async fn take(&mut self, line: &[u8], conn: &mut Conn) -> std::io::Result<()> {
        let parts = words(line);
        let kind = parts[0];
        if matches!(kind, b"MSG" | b"JOIN" | b"LEAVE" | b"QUIT") {
            if parts.get(1) != Some(&self.room_word.as_slice()) {
                self.result.foreign += 1;
                let text = format!("event of another room: {}", String::from_utf8_lossy(line));
                self.result.problem(text);
                return Ok(());
            }
            if self.hashing && !self.marker_seen {
                self.hash = fold_hash(self.hash, line);
                self.events += 1;
            }
        }
        match kind {
            b"MSG" if parts.len() >= 4 => self.chat_line(line, &parts),
            b"JOIN" if line == self.last_join.as_slice() => self.hashing = true,
            b"QUIT" if parts.len() >= 4 => self.quit_line(line, &parts),
            b"PING" => {
                let mut pong = b"/pong ".to_vec();
                pong.extend_from_slice(parts.get(1).copied().unwrap_or(b""));
                pong.push(b'\n');
                conn.send(&pong).await?;
            }
            b"ERR" => {
                self.result.errors += 1;
                if self.result.errors_received.len() < 5 {
                    let text = String::from_utf8_lossy(line).into_owned();
                    self.result.errors_received.push(text);
                }
            }
            b"PRIVMSG" => {
                self.result.privmsgs += 1;
                let text = format!("got {}", String::from_utf8_lossy(line));
                self.result.problem(text);
            }
            b"BYE" => self.bye = true,
            _ => {}
        }
        Ok(())
    }

    /// `MSG <room> <nick> <text>`: a member's numbered line, or the leader's
    /// `end` marker (anyone else's chat is not booked).
    fn chat_line(&mut self, line: &[u8], parts: &[&[u8]]) {
        let Some(sender) = member_index(parts[2], self.layout.members) else {
            return;
        };
        let text = &line[parts[0].len() + parts[1].len() + parts[2].len() + 3..];
        if self.layout.room_of(sender) != self.room {
            self.result.foreign += 1;
            return;
        }
        if text == b"end" && sender == self.leader {
            return self.marker();
        }
        let pos = sender / self.layout.rooms;
        let Some(seq) = std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
        else {
            self.result.out_of_turn += 1;
            let text = format!("unexpected member line {}", String::from_utf8_lossy(line));
            return self.result.problem(text);
        };
        if seq == self.expected[pos] {
            self.result.received += 1;
        } else {
            self.result.out_of_turn += 1;
            let text = format!(
                "{} got line {seq} of {} when {} was due",
                member_nick(self.me),
                member_nick(sender),
                self.expected[pos]
            );
            self.result.problem(text);
        }
        self.expected[pos] = self.expected[pos].max(seq + 1);
        if sender == self.me {
            self.check_drained();
        }
    }

    /// The room's `end` marker: every co-member's lines must be in by now.
    fn marker(&mut self) {
        self.marker_seen = true;
        self.result.order = Some((self.events, self.hash));
        for (pos, &got) in self.expected.iter().enumerate() {
            let member = pos * self.layout.rooms + self.room;
            let sent = self.shared.final_sent[member].load(Ordering::SeqCst);
            if sent == u64::MAX {
                let text = format!("{} never reported its count", member_nick(member));
                self.result.problem(text);
            } else if got < sent {
                self.result.lost += sent - got;
                let text = format!(
                    "{}: got {got} of {sent} lines of {}",
                    member_nick(self.me),
                    member_nick(member)
                );
                self.result.problem(text);
            }
        }
        self.shared.marked.fetch_add(1, Ordering::SeqCst);
        self.shared.progress.notify_waiters();
    }

    /// `QUIT <room> <nick> <reason>`: a member's is a drop (until the marker,
    /// after which members leave); anyone else's is booked for the watchers'
    /// view.
    fn quit_line(&mut self, line: &[u8], parts: &[&[u8]]) {
        let nick = parts[2];
        if member_index(nick, self.layout.members).is_some() {
            if !self.marker_seen {
                let text = String::from_utf8_lossy(line).into_owned();
                self.result.member_quits.push(text);
            }
            return;
        }
        self.result
            .quits
            .entry(String::from_utf8_lossy(nick).into_owned())
            .or_default()
            .push(SeenQuit {
                reason: String::from_utf8_lossy(parts[3]).into_owned(),
                after_marker: self.marker_seen,
            });
    }
}

/// Runs member `me` until `Quit` is done (or its connection fails).
pub async fn run_member(
    mut conn: Conn,
    me: usize,
    interval: Duration,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) -> MemberResult {
    let mut member = Member::new(me, shared);
    let mut current = *phase.borrow_and_update();
    let mut phase_open = true;
    // Spread the members' ticks over one interval.
    let offset = interval.mul_f64((me % 97) as f64 / 97.0);
    let mut ticker = tokio::time::interval_at(Instant::now() + offset, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut quit_deadline = None;
    // Bounded: the controller always reaches `Quit`, which has a deadline.
    let failure = loop {
        tokio::select! {
            biased;
            changed = phase.changed(), if phase_open => {
                if changed.is_err() {
                    phase_open = false;
                    continue;
                }
                current = *phase.borrow_and_update();
                if let Err(error) = member.enter(current, &mut conn).await {
                    break Some(format!("write: {error}"));
                }
                if member.quitting && quit_deadline.is_none() {
                    quit_deadline = Some(Instant::now() + IO_TIMEOUT);
                }
            }
            read = conn.next_line() => match read {
                Ok(Some(line)) => {
                    if let Err(error) = member.take(&line, &mut conn).await {
                        break Some(format!("write: {error}"));
                    }
                }
                Ok(None) if member.quitting && member.bye => {
                    member.result.clean_exit = true;
                    break None;
                }
                Ok(None) => break Some("the server closed the connection".into()),
                Err(error) => break Some(format!("read: {error}")),
            },
            _ = ticker.tick(), if current == Phase::Chat => {
                let line = format!("{}\n", member.result.sent);
                if let Err(error) = conn.send(line.as_bytes()).await {
                    break Some(format!("write: {error}"));
                }
                member.result.sent += 1;
            }
            () = sleep_until_some(quit_deadline) => {
                break Some(format!("no BYE and end of input within {IO_TIMEOUT:?} of /quit"));
            }
        }
    };
    member.result.failure = failure;
    member.result
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
