//! Regressions (hostile review, `doublejoin.rs` and `controljoin.rs`):
//!
//! - A protocol making two joins, or a join and a rename, in one handler
//!   acted on the room before either was answered: the second join did not
//!   leave the first room (a ghost member that outlived its session), and the
//!   rename was neither announced in the room nor seen in its member list.
//!   Each change must act on the room the one before it left.
//! - `Registry::join` on a lobby session that is chatting and sending `/msg`
//!   could answer `Err(no-such-nick)` although it moved the session: the
//!   control overwrote the lobby's pending `/msg` (which was lost too).

mod common;
mod embedded;

use std::io::Write;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Client;
use embedded::Embedded;
use switchboard::{
    Answer, DisconnectReason, Event, LobbyConfig, Protocol, RoomName, SessionContext, SessionId,
    SessionInfo, SharedEvent, Wire,
};

/// A line for the peer; the protocol's room events are lines too.
#[derive(Debug)]
struct Line(String);

impl Event for Line {
    fn render(&self, wire: Wire) -> Bytes {
        match wire {
            Wire::Text => Bytes::from(format!("{}\n", self.0)),
            Wire::Json => Bytes::from(format!("{}\n", serde_json::json!({ "line": self.0 }))),
        }
    }
}

fn line(text: String) -> Option<SharedEvent> {
    Some(SharedEvent::new(Line(text)))
}

/// A protocol whose commands make several changes in one handler:
/// `join ROOM`, `twojoins A B` (join A, then B, leaving A), `joinrename ROOM
/// NAME` (join ROOM, then take NAME), `who ROOM`, `ping`. Sessions are named
/// `p<id>` and greeted `HELLO <id>`.
struct Mover;

impl Protocol for Mover {
    fn opened(&mut self, cx: &mut SessionContext<'_>) {
        cx.set_name(format!("p{}", cx.id()));
        cx.send(&Line(format!("HELLO {}", cx.id())));
    }

    fn frame(&mut self, cx: &mut SessionContext<'_>, frame: Bytes) {
        let text = String::from_utf8_lossy(&frame).into_owned();
        let words: Vec<&str> = text.split(' ').collect();
        let name = cx.name().clone();
        match words[..] {
            ["join", room] => cx.join(room, line(format!("JOIN {room} {name}")), None),
            ["twojoins", first, second] => {
                cx.join(first, line(format!("JOIN {first} {name}")), None);
                // Made before the first is answered; it must leave `first`.
                let leave = line(format!("LEAVE {first} {name}"));
                cx.join(second, line(format!("JOIN {second} {name}")), leave);
            }
            ["joinrename", room, new] => {
                cx.join(room, line(format!("JOIN {room} {name}")), None);
                // Made before the join is answered; the room must hear it.
                cx.rename(new, line(format!("NICK {name} {new}")));
            }
            ["who", room] => cx.who(room),
            ["ping"] => cx.send(&Line("PONG".into())),
            _ => cx.send(&Line(format!("WHAT {text}"))),
        }
    }

    fn answer(&mut self, cx: &mut SessionContext<'_>, answer: Answer) {
        let reply = match answer {
            Answer::Joined { room, members } => format!("JOINED {room} {}", members.join(" ")),
            Answer::Members { room, members } => format!("MEMBERS {room} {}", members.join(" ")),
            Answer::Renamed { old, new, room } => {
                let room = room.as_deref().unwrap_or("-").to_owned();
                format!("RENAMED {old} {new} {room}")
            }
            other => format!("UNEXPECTED {other:?}"),
        };
        cx.send(&Line(reply));
    }

    fn quit_event(
        &mut self,
        room: &RoomName,
        name: &Arc<str>,
        reason: DisconnectReason,
    ) -> Option<SharedEvent> {
        line(format!("QUIT {room} {name} {}", reason.word()))
    }
}

/// The protocol served on four threads.
fn mover_server() -> Embedded {
    let config = LobbyConfig {
        threads: 4,
        ..LobbyConfig::default()
    };
    Embedded::serving(config, "mover", || Mover)
}

/// Joins `room`, where this client must be the only member.
#[track_caller]
fn join_alone(client: &mut Client, room: &str) {
    client.send(&format!("join {room}"));
    client.expect(&format!("JOIN {room} {}", client.nick));
    client.expect(&format!("JOINED {room} {}", client.nick));
}

/// A `ping` round trip comes back next: nothing else is pending.
#[track_caller]
fn expect_nothing_pending(client: &mut Client) {
    client.send("ping");
    client.expect("PONG");
}

fn rooms(server: &Embedded) -> Vec<(String, usize)> {
    server.ask(|registry| async move { registry.list_rooms().await })
}

fn sessions(server: &Embedded) -> Vec<SessionInfo> {
    server.ask(|registry| async move { registry.list_sessions().await })
}

fn info(client: &Client, room: Option<&str>) -> SessionInfo {
    SessionInfo {
        id: SessionId(client.id),
        nick: client.nick.clone(),
        room: room.map(str::to_owned),
    }
}

/// Waits (bounded) until the registry has forgotten every session and room;
/// a session's clean-up after its peer goes away is asynchronous.
#[track_caller]
fn expect_registry_empties(server: &Embedded) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (rooms, sessions) = (rooms(server), sessions(server));
        if rooms.is_empty() && sessions.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: rooms {rooms:?}, sessions {sessions:?}"
        );
        // Polling the registry, bounded by the deadline above.
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_joins_in_one_handler_leave_no_ghost_member() {
    let server = mover_server();
    let mut in_a = server.hello_client();
    let mut in_b = server.hello_client();
    let mut mover = server.hello_client();
    let (a, b, m) = (in_a.nick.clone(), in_b.nick.clone(), mover.nick.clone());
    join_alone(&mut in_a, "a");
    join_alone(&mut in_b, "b");

    mover.send("twojoins a b");
    mover.expect(&format!("JOIN a {m}"));
    mover.expect(&format!("JOINED a {a} {m}"));
    mover.expect(&format!("LEAVE a {m}"));
    mover.expect(&format!("JOIN b {m}"));
    mover.expect(&format!("JOINED b {b} {m}"));
    in_a.expect(&format!("JOIN a {m}"));
    in_a.expect(&format!("LEAVE a {m}"));
    in_b.expect(&format!("JOIN b {m}"));
    for client in [&mut in_a, &mut in_b, &mut mover] {
        expect_nothing_pending(client);
    }
    assert_eq!(rooms(&server), [("a".to_owned(), 1), ("b".to_owned(), 2)]);
    let expected = [
        info(&in_a, Some("a")),
        info(&in_b, Some("b")),
        info(&mover, Some("b")),
    ];
    assert_eq!(sessions(&server), expected);

    // Gone: only the room it is in is told, and nothing of it stays.
    drop(mover);
    in_b.expect(&format!("QUIT b {m} closed"));
    expect_nothing_pending(&mut in_a);
    expect_nothing_pending(&mut in_b);
    assert_eq!(rooms(&server), [("a".to_owned(), 1), ("b".to_owned(), 1)]);
    in_a.send("who a");
    in_a.expect(&format!("MEMBERS a {a}"));

    drop(in_a);
    drop(in_b);
    expect_registry_empties(&server);
}

/// Only what the registry keeps is checked here (the lines are above): a
/// double join answered in whatever order must leave nothing behind.
#[test]
fn a_lone_double_join_leaves_the_registry_empty_after_disconnect() {
    let server = mover_server();
    let mut mover = server.hello_client();
    let m = mover.nick.clone();
    mover.send("twojoins a b");
    let answered = format!("JOINED b {m}");
    let mut seen = Vec::new();
    while !seen.contains(&answered) {
        assert!(seen.len() < 5, "no `{answered}` among {seen:?}");
        seen.push(mover.line());
    }
    expect_nothing_pending(&mut mover);

    drop(mover);
    expect_registry_empties(&server);
}

#[test]
fn a_rename_made_with_a_join_is_announced_in_the_new_room() {
    let server = mover_server();
    let mut in_c = server.hello_client();
    let mut mover = server.hello_client();
    let (c, m) = (in_c.nick.clone(), mover.nick.clone());
    join_alone(&mut in_c, "c");

    let new = format!("renamed{}", mover.id);
    mover.send(&format!("joinrename c {new}"));
    mover.expect(&format!("JOIN c {m}"));
    mover.expect(&format!("JOINED c {c} {m}"));
    mover.expect(&format!("NICK {m} {new}"));
    mover.expect(&format!("RENAMED {m} {new} c"));
    in_c.expect(&format!("JOIN c {m}"));
    in_c.expect(&format!("NICK {m} {new}"));
    mover.nick = new.clone();

    // The room's member list carries the new name.
    in_c.send("who c");
    in_c.expect(&format!("MEMBERS c {c} {new}"));
    mover.send("who c");
    mover.expect(&format!("MEMBERS c {c} {new}"));
    let expected = [info(&in_c, Some("c")), info(&mover, Some("c"))];
    assert_eq!(sessions(&server), expected);

    // It leaves under its new name.
    drop(mover);
    in_c.expect(&format!("QUIT c {new} closed"));
    expect_nothing_pending(&mut in_c);
    drop(in_c);
    expect_registry_empties(&server);
}

/// How many times the embedder moves the busy session.
const MOVES: usize = 300;
/// Pairs of chat line + `/msg` the busy session writes (in one write) just
/// before each move, so that every move finds it busy with them.
const PAIRS_PER_MOVE: usize = 20;
/// More lines than the busy session or the target is sent in that test.
const MAX_LINES: usize = 100_000;

#[test]
fn registry_join_answers_ok_whenever_it_moves_a_chatting_lobby_session() {
    let config = LobbyConfig {
        threads: 8,
        ..LobbyConfig::default()
    };
    let server = Embedded::lobby(config, false);
    let addr = server.addrs[0];
    let mut busy = Client::connect(addr);
    busy.welcome();
    let mut target = Client::connect(addr);
    target.welcome_as("target");
    busy.join_alone("start");
    let busy_id = SessionId(busy.id);
    let mut busy_writes = busy.stream.try_clone().expect("clone the socket");

    // What the busy session and the target read, on threads of their own:
    // the sender until the PONG of its last line, the target until the
    // sender's last private message.
    let reader = thread::spawn(move || {
        let (mut privmsgs, mut errors) = (0, Vec::new());
        for _ in 0..MAX_LINES {
            let line = busy.line();
            if line == "PONG end" {
                return (privmsgs, errors);
            }
            if line.starts_with("PRIVMSG ") {
                privmsgs += 1;
            } else if line.starts_with("ERR ") {
                errors.push(line);
            }
        }
        panic!("no `PONG end` within {MAX_LINES} lines");
    });
    let last = format!("PRIVMSG guest{} target done", busy_id.0);
    let target_reader = thread::spawn(move || {
        for privmsgs in 1..=MAX_LINES {
            let line = target.line();
            assert!(line.starts_with("PRIVMSG "), "target got {line:?}");
            if line == last {
                return privmsgs;
            }
        }
        panic!("no `{last}` within {MAX_LINES} lines");
    });

    let mut wrong = Vec::new();
    for k in 0..MOVES {
        let batch: String = (0..PAIRS_PER_MOVE)
            .map(|n| format!("hi{k}-{n}\n/msg target x{k}-{n}\n"))
            .collect();
        busy_writes.write_all(batch.as_bytes()).expect("write");
        let room = format!("z{k}");
        let asked = room.clone();
        let outcome =
            server.ask(move |registry| async move { registry.join(busy_id, &asked).await });
        let now = sessions(&server)
            .into_iter()
            .find(|session| session.id == busy_id)
            .and_then(|session| session.room);
        if outcome.is_err() || now.as_deref() != Some(room.as_str()) {
            wrong.push(format!("join {room}: {outcome:?}, then in {now:?}"));
        }
    }
    let end = "/msg target done\n/ping end\n";
    busy_writes.write_all(end.as_bytes()).expect("write");
    let (privmsgs, errors) = reader.join().expect("reader");
    assert!(
        wrong.is_empty(),
        "{} of {MOVES} moves went wrong, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
    assert!(
        errors.is_empty(),
        "{} ERR lines, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    let sent = MOVES * PAIRS_PER_MOVE + 1;
    assert_eq!(privmsgs, sent, "every /msg echoed to the sender");
    let received = target_reader.join().expect("target reader");
    assert_eq!(received, sent, "every /msg reached the target");
}
