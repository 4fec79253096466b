//! Run with: cargo run --example embed -- --bind 127.0.0.1:0 [--json-bind 127.0.0.1:0]
//!
//! An actix program that embeds switchboard with a game protocol of its own.
//! A player who connects gets `WELCOME <id> <nick>` and is put in room
//! `game`, where everyone sees `JOIN game <nick>`. `move DX DY` is a command
//! of the game, not chat: the player's protocol hands it to the game-tick
//! actor as a typed message, and no one is sent the line. Every 50 ms that
//! actor broadcasts the state to the room through the registry handle, as
//! `TICK <n> <nick>=<x>,<y> …`. Anything else gets `ERR usage: move DX DY`,
//! and a player who leaves is announced as `LEFT game <nick> <reason>`.
//! Try it with `nc 127.0.0.1 7878`.
//!
//! JSON players (`--json-bind`) send `{"cmd":"move","dx":2,"dy":-1}` and read
//! the same events as objects: `{"event":"welcome","id":1,"nick":"guest1"}`,
//! `{"event":"join","room":"game","nick":…}`, `{"event":"left",…,"reason":…}`,
//! `{"event":"error","message":…}` and
//! `{"event":"tick","tick":7,"players":[{"nick":"guest1","x":2,"y":-1}]}`.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use clap::Parser;
use serde_json::{Value, json};
use switchboard::bytes::Bytes;
use switchboard::{
    Answer, ClosedSession, DisconnectReason, Event, LobbyConfig, Protocol, Registry, RoomName,
    Server, SessionContext, SessionId, SharedEvent, Wire,
};

const ROOM: &str = "game";
const TICK: Duration = Duration::from_millis(50);

/// A game server with a tick.
#[derive(Debug, Parser)]
struct Args {
    /// Listen address (IPv4 or IPv6; port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:7878")]
    bind: SocketAddr,
    /// Also serve JSON players on this address
    #[arg(long)]
    json_bind: Option<SocketAddr>,
}

/// Where a player stands.
#[derive(Debug, Clone, Copy, Default)]
struct Position {
    x: i64,
    y: i64,
}

/// What players are sent, rendered in each player's wire format.
#[derive(Debug)]
enum GameEvent {
    /// To the new player only.
    Welcome { id: SessionId, nick: Arc<str> },
    /// To the room, the new player included.
    Join { nick: Arc<str> },
    /// To the rest of the room when a player's session ends.
    Left {
        nick: Arc<str>,
        reason: DisconnectReason,
    },
    /// To the room, from the game-tick actor.
    Tick {
        tick: u64,
        players: Vec<(Arc<str>, Position)>,
    },
    /// To a player whose line is not a move.
    Usage,
    /// To a player who cannot join: the room is at its capacity.
    Full,
}

impl GameEvent {
    fn text(&self) -> String {
        match self {
            GameEvent::Welcome { id, nick } => format!("WELCOME {id} {nick}"),
            GameEvent::Join { nick } => format!("JOIN {ROOM} {nick}"),
            GameEvent::Left { nick, reason } => format!("LEFT {ROOM} {nick} {}", reason.word()),
            GameEvent::Tick { tick, players } => {
                let mut line = format!("TICK {tick}");
                for (nick, Position { x, y }) in players {
                    line.push_str(&format!(" {nick}={x},{y}"));
                }
                line
            }
            GameEvent::Usage => "ERR usage: move DX DY".into(),
            GameEvent::Full => "ERR the game is full".into(),
        }
    }

    fn json(&self) -> Value {
        match self {
            GameEvent::Welcome { id, nick } => {
                json!({"event": "welcome", "id": id.0, "nick": &**nick})
            }
            GameEvent::Join { nick } => json!({"event": "join", "room": ROOM, "nick": &**nick}),
            GameEvent::Left { nick, reason } => {
                json!({"event": "left", "room": ROOM, "nick": &**nick, "reason": reason.word()})
            }
            GameEvent::Tick { tick, players } => {
                let players: Vec<Value> = players
                    .iter()
                    .map(|(nick, Position { x, y })| json!({"nick": &**nick, "x": x, "y": y}))
                    .collect();
                json!({"event": "tick", "tick": tick, "players": players})
            }
            GameEvent::Usage => json!({"event": "error", "message": "usage: move DX DY"}),
            GameEvent::Full => json!({"event": "error", "message": "the game is full"}),
        }
    }
}

impl Event for GameEvent {
    fn render(&self, wire: Wire) -> Bytes {
        let line = match wire {
            Wire::Text => self.text(),
            Wire::Json => self.json().to_string(),
        };
        format!("{line}\n").into()
    }
}

/// What a player's protocol tells the game.
#[derive(Message, Debug)]
#[rtype(result = "()")]
enum PlayerUpdate {
    Joined(SessionId, Arc<str>),
    Moved(SessionId, i64, i64),
    Left(SessionId),
}

/// The game: where each player stands, and the registry to broadcast through.
struct GameTick {
    registry: Registry,
    players: BTreeMap<SessionId, (Arc<str>, Position)>,
    ticks: u64,
}

impl Actor for GameTick {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(TICK, GameTick::tick);
    }
}

impl GameTick {
    /// Broadcasts the state to the room, in its order with the room's other
    /// events; each player receives it in its own wire format.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.ticks += 1;
        let players = self.players.values().cloned().collect();
        let state = GameEvent::Tick {
            tick: self.ticks,
            players,
        };
        let registry = self.registry.clone();
        let broadcast = async move {
            registry.broadcast(ROOM, state).await;
        };
        ctx.spawn(broadcast.into_actor(self));
    }
}

impl Handler<PlayerUpdate> for GameTick {
    type Result = ();

    fn handle(&mut self, update: PlayerUpdate, _: &mut Context<Self>) {
        match update {
            PlayerUpdate::Joined(id, nick) => {
                self.players.insert(id, (nick, Position::default()));
            }
            PlayerUpdate::Moved(id, dx, dy) => {
                if let Some((_, position)) = self.players.get_mut(&id) {
                    position.x = position.x.saturating_add(dx);
                    position.y = position.y.saturating_add(dy);
                }
            }
            PlayerUpdate::Left(id) => {
                self.players.remove(&id);
            }
        }
    }
}

/// One player's session: the game protocol, run on the session's own thread.
/// Moves go to the game actor; the room only ever sees the game's events.
struct Player {
    game: Recipient<PlayerUpdate>,
}

impl Player {
    /// `move DX DY`, or `{"cmd":"move","dx":DX,"dy":DY}` on a JSON wire.
    fn parse_move(wire: Wire, line: &[u8]) -> Option<(i64, i64)> {
        match wire {
            Wire::Text => {
                let line = std::str::from_utf8(line).ok()?;
                match line.split_whitespace().collect::<Vec<_>>()[..] {
                    ["move", dx, dy] => Some((dx.parse().ok()?, dy.parse().ok()?)),
                    _ => None,
                }
            }
            Wire::Json => {
                let command: Value = serde_json::from_slice(line).ok()?;
                if command["cmd"] != "move" {
                    return None;
                }
                Some((command["dx"].as_i64()?, command["dy"].as_i64()?))
            }
        }
    }
}

impl Protocol for Player {
    fn opened(&mut self, cx: &mut SessionContext<'_>) {
        let nick: Arc<str> = Arc::from(format!("guest{}", cx.id()));
        cx.set_name(nick.clone());
        let id = cx.id();
        cx.send(&GameEvent::Welcome {
            id,
            nick: nick.clone(),
        });
        cx.join(ROOM, Some(GameEvent::Join { nick }.into()), None);
    }

    fn answer(&mut self, cx: &mut SessionContext<'_>, answer: Answer) {
        match answer {
            Answer::Joined { .. } => {
                let joined = PlayerUpdate::Joined(cx.id(), cx.name().clone());
                self.game.do_send(joined);
            }
            Answer::RoomFull { .. } => {
                let farewell = GameEvent::Full.render(cx.wire());
                cx.close(DisconnectReason::Kicked, Some(farewell));
            }
            _ => {}
        }
    }

    fn frame(&mut self, cx: &mut SessionContext<'_>, line: Bytes) {
        if line.trim_ascii().is_empty() {
            return;
        }
        match Self::parse_move(cx.wire(), &line) {
            Some((dx, dy)) => self.game.do_send(PlayerUpdate::Moved(cx.id(), dx, dy)),
            None => cx.send(&GameEvent::Usage),
        }
    }

    fn quit_event(
        &mut self,
        _: &RoomName,
        nick: &Arc<str>,
        reason: DisconnectReason,
    ) -> Option<SharedEvent> {
        let nick = nick.clone();
        Some(GameEvent::Left { nick, reason }.into())
    }

    fn closed(&mut self, session: ClosedSession<'_>) {
        self.game.do_send(PlayerUpdate::Left(session.id));
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    support::run("embed", async move {
        let text = support::bind_tcp(args.bind).await?;
        let json = match args.json_bind {
            Some(addr) => Some(support::bind_tcp(addr).await?),
            None => None,
        };
        let config = LobbyConfig::default();
        let mut server = Server::new(config.clone());
        let game = GameTick {
            registry: server.registry().clone(),
            players: BTreeMap::new(),
            ticks: 0,
        }
        .start();
        let sockets = [(Some(text), "text", Wire::Text), (json, "json", Wire::Json)];
        for (socket, label, wire) in sockets {
            let Some(socket) = socket else { continue };
            let game = game.clone().recipient();
            let player = move || Player { game: game.clone() };
            server
                .serve(socket, label, config.session_config(wire), player)
                .map_err(|error| format!("cannot serve: {error}"))?;
        }
        support::until_signal().await?;
        server.shutdown(Duration::from_secs(5)).await;
        Ok(())
    })
}
