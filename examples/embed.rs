//! Run with: cargo run --example embed -- --bind 127.0.0.1:0
//!
//! An actix program that embeds the lobby: a game-tick actor keeps a tiny
//! game state and drives the lobby through typed messages. Every player who
//! connects is put in room `game`; a chat line `move DX DY` moves that
//! player; every 50 ms the tick broadcasts the state to the room as
//! `MSG game tick <n> <nick>=<x>,<y> …`. Try it with `nc 127.0.0.1 7878`.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use clap::Parser;
use switchboard::protocol::Command;
use switchboard::{
    Broadcast, JoinRoom, LobbyConfig, LobbyEvent, LobbyServer, Registry, SessionId, Subscribe,
};

const ROOM: &str = "game";
const TICK: Duration = Duration::from_millis(50);

/// A lobby with a game tick.
#[derive(Debug, Parser)]
struct Args {
    /// Listen address (IPv4 or IPv6; port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:7878")]
    bind: SocketAddr,
}

/// The game: where each player stands, and the lobby to tell.
struct GameTick {
    registry: Addr<Registry>,
    /// Position by session; the nick is kept for the broadcast.
    players: BTreeMap<SessionId, (String, i64, i64)>,
    ticks: u64,
}

impl Actor for GameTick {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let events = ctx.address().recipient();
        self.registry.do_send(Subscribe { events });
        ctx.run_interval(TICK, |game, _| game.broadcast_state());
    }
}

impl GameTick {
    fn broadcast_state(&mut self) {
        self.ticks += 1;
        let mut line = format!("MSG {ROOM} tick {}", self.ticks);
        for (nick, x, y) in self.players.values() {
            line.push_str(&format!(" {nick}={x},{y}"));
        }
        line.push('\n');
        let frame = Bytes::from(line);
        self.registry.do_send(Broadcast {
            room: Some(ROOM.into()),
            frame,
        });
    }
}

impl Handler<LobbyEvent> for GameTick {
    type Result = ();

    fn handle(&mut self, event: LobbyEvent, _: &mut Context<Self>) {
        match event {
            LobbyEvent::Connected { session, .. } => {
                let room = ROOM.into();
                self.registry.do_send(JoinRoom { session, room });
                self.players
                    .insert(session, (format!("guest{session}"), 0, 0));
            }
            LobbyEvent::Command {
                session, command, ..
            } => {
                let Some(player) = self.players.get_mut(&session) else {
                    return;
                };
                match command {
                    Command::Nick(new) => player.0 = new,
                    Command::Say(text) => {
                        let mut words = text.split_whitespace();
                        let step = (words.next(), words.next(), words.next(), words.next());
                        if let (Some("move"), Some(dx), Some(dy), None) = step
                            && let (Ok(dx), Ok(dy)) = (dx.parse::<i64>(), dy.parse::<i64>())
                        {
                            player.1 = player.1.saturating_add(dx);
                            player.2 = player.2.saturating_add(dy);
                        }
                    }
                    _ => {}
                }
            }
            LobbyEvent::Disconnected { session, .. } => {
                self.players.remove(&session);
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    support::run("embed", async move {
        let socket = support::bind_tcp(args.bind).await?;
        let lobby = LobbyServer::start(socket, LobbyConfig::default())
            .map_err(|error| format!("cannot start: {error}"))?;
        let _game = GameTick {
            registry: lobby.registry().clone(),
            players: BTreeMap::new(),
            ticks: 0,
        }
        .start();
        support::until_signal().await?;
        lobby.shutdown(Duration::from_secs(5)).await;
        Ok(())
    })
}
