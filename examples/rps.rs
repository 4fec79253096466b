//! Run with: cargo run --example rps -- --bind 127.0.0.1:0 [--json-bind 127.0.0.1:0]
//!
//! Rock-paper-scissors at tables of 2. A player gets `WELCOME <id> <nick>`,
//! sends `throw rock|paper|scissors` (JSON `{"cmd":"throw","move":"rock"}`),
//! is told `WAITING` if first (moves stay private); then both get `RESULT
//! <winner's nick>` or `RESULT draw` (JSON `{"event":"result","winner":null}`).
//! A leaver (`quit`, hang-up) gives the other `OPPONENT-LEFT <reason>`.
//!
//! Design: a table's first throw waits in a map all `Player`s share (even for
//! a new opponent); the second takes it and publishes the result, rendered
//! per member's wire. Seats: `table0`, else the next on `RoomFull`. A leaver
//! takes back its throw in `quit_event`, which runs before the other is told.

mod support;

use std::sync::{Arc, Mutex};
use std::{collections::HashMap, net::SocketAddr, process::ExitCode};

use clap::Parser;
use serde_json::{Value, json};
use switchboard::{Answer, DisconnectReason as Reason, Event, LobbyConfig, Protocol, RoomName};
use switchboard::{Server, SessionContext, SharedEvent, Wire, bytes::Bytes};

/// Rock-paper-scissors: text players on --bind, JSON players on --json-bind.
#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:7000")]
    bind: SocketAddr,
    #[arg(long)]
    json_bind: Option<SocketAddr>,
}

/// A line in both wire formats; each player is sent the one it speaks.
#[derive(Debug)]
struct Line(String, Value);

impl Event for Line {
    fn render(&self, wire: Wire) -> Bytes {
        match wire {
            Wire::Text => format!("{}\n", self.0).into(),
            Wire::Json => format!("{}\n", self.1).into(),
        }
    }
}

/// A player; all share the first throw at each table: who threw, and what.
#[derive(Clone, Default)]
struct Player(Arc<Mutex<HashMap<RoomName, (String, usize)>>>);

impl Protocol for Player {
    fn opened(&mut self, cx: &mut SessionContext<'_>) {
        let (id, nick) = (cx.id().0, format!("guest{}", cx.id()));
        let json = json!({"event": "welcome", "id": id, "nick": nick});
        cx.send(&Line(format!("WELCOME {id} {nick}"), json));
        cx.set_name(nick);
        cx.join("table0", None, None);
    }

    fn answer(&mut self, cx: &mut SessionContext<'_>, answer: Answer) {
        if let Answer::RoomFull { room, .. } = answer {
            let next = room["table".len()..].parse::<u64>().unwrap_or_default() + 1;
            cx.join(&format!("table{next}"), None, None);
        }
    }

    fn frame(&mut self, cx: &mut SessionContext<'_>, line: Bytes) {
        let text = if cx.wire() == Wire::Text {
            String::from_utf8_lossy(&line).into_owned()
        } else {
            let json: Value = serde_json::from_slice(&line).unwrap_or_default();
            let field = |key: &str| json[key].as_str().unwrap_or("?").to_owned();
            format!("{} {}", field("cmd"), field("move"))
        };
        let moves = ["rock", "paper", "scissors"];
        let mine = match text.split_whitespace().collect::<Vec<_>>()[..] {
            ["quit", ..] => return cx.close(Reason::Quit, None),
            ["throw", word] => moves.iter().position(|m| *m == word),
            _ => None,
        };
        let (Some(mine), Some(table)) = (mine, cx.room().cloned()) else {
            let text = "throw rock|paper|scissors, or quit";
            let json = json!({"event": "error", "message": text});
            return cx.send(&Line(format!("ERR {text}"), json));
        };
        let mut throws = self.0.lock().unwrap();
        let Some((them, theirs)) = throws.remove(&table).filter(|t| t.0 != **cx.name()) else {
            throws.insert(table, (cx.name().to_string(), mine));
            return cx.send(&Line("WAITING".into(), json!({"event": "waiting"})));
        };
        let winner = [None, Some(&**cx.name()), Some(&*them)][(3 + mine - theirs) % 3];
        let text = format!("RESULT {}", winner.unwrap_or("draw"));
        cx.publish(Line(text, json!({"event": "result", "winner": winner})).into());
    }

    fn quit_event(&mut self, _: &RoomName, nick: &Arc<str>, why: Reason) -> Option<SharedEvent> {
        let mut throws = self.0.lock().unwrap();
        throws.retain(|_, (thrower, _)| **thrower != **nick);
        let json = json!({"event": "opponent-left", "reason": why.word()});
        Some(Line(format!("OPPONENT-LEFT {}", why.word()), json).into())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    support::run("rps", async move {
        let config = LobbyConfig {
            room_capacity: 2,
            ..LobbyConfig::default()
        };
        let (mut server, player) = (Server::new(config.clone()), Player::default());
        for (addr, wire) in [(Some(args.bind), Wire::Text), (args.json_bind, Wire::Json)] {
            let Some(addr) = addr else { continue };
            let (socket, session) = (support::bind_tcp(addr).await?, config.session_config(wire));
            let (label, player) = (format!("{wire:?}").to_lowercase(), player.clone());
            let serving = server.serve(socket, &label, session, move || player.clone());
            serving.map_err(|error| format!("cannot serve: {error}"))?;
        }
        support::until_signal().await
    })
}
