//! An application's own protocol (not the lobby) runs on the library with
//! rooms: its sessions join rooms, publish events of their own type, are
//! refused by a full room, move between rooms and are announced when they
//! end, with members on different threads seeing the same lines; the
//! embedding program broadcasts the application's event into its rooms.

mod common;
mod embedded;

use std::sync::Arc;

use bytes::Bytes;
use common::Client;
use embedded::Embedded;
use switchboard::protocol::ErrorCode;
use switchboard::{
    Answer, DisconnectReason, Event, LobbyConfig, Protocol, RoomName, SessionContext, SessionId,
    SessionInfo, SharedEvent, Wire,
};

/// The card table's events, rendered per wire format (its clients speak
/// text; JSON is there because every `Event` renders both).
#[derive(Debug)]
enum TableEvent {
    Hello {
        id: SessionId,
    },
    Seated {
        room: RoomName,
        player: Arc<str>,
    },
    Said {
        room: RoomName,
        player: Arc<str>,
        text: String,
    },
    Left {
        room: RoomName,
        player: Arc<str>,
    },
    Gone {
        room: RoomName,
        player: Arc<str>,
        reason: DisconnectReason,
    },
    Reply(String),
}

impl Event for TableEvent {
    fn render(&self, wire: Wire) -> Bytes {
        let text = match self {
            TableEvent::Hello { id } => format!("HELLO {id}"),
            TableEvent::Seated { room, player } => format!("SEATED {room} {player}"),
            TableEvent::Said { room, player, text } => format!("SAID {room} {player} {text}"),
            TableEvent::Left { room, player } => format!("LEFT {room} {player}"),
            TableEvent::Gone {
                room,
                player,
                reason,
            } => format!("GONE {room} {player} {}", reason.word()),
            TableEvent::Reply(reply) => reply.clone(),
        };
        match wire {
            Wire::Text => Bytes::from(format!("{text}\n")),
            Wire::Json => Bytes::from(format!("{}\n", serde_json::json!({ "table": text }))),
        }
    }
}

/// A card table's protocol: `join ROOM`, `say TEXT`, `leave`, `ping`.
/// Players are named `p<id>`.
struct Table;

impl Table {
    fn reply(cx: &mut SessionContext<'_>, reply: String) {
        cx.send(&TableEvent::Reply(reply));
    }
}

impl Protocol for Table {
    fn opened(&mut self, cx: &mut SessionContext<'_>) {
        cx.set_name(format!("p{}", cx.id()));
        cx.send(&TableEvent::Hello { id: cx.id() });
    }

    fn frame(&mut self, cx: &mut SessionContext<'_>, frame: Bytes) {
        let line = String::from_utf8_lossy(&frame).into_owned();
        let (verb, rest) = line.split_once(' ').unwrap_or((&line, ""));
        let player = cx.name().clone();
        match verb {
            "join" => {
                let room: RoomName = Arc::from(rest);
                let seated = TableEvent::Seated {
                    room,
                    player: player.clone(),
                };
                let left = cx
                    .room()
                    .cloned()
                    .map(|old| TableEvent::Left { room: old, player });
                cx.join(rest, Some(seated.into()), left.map(SharedEvent::new));
            }
            "say" => match cx.room().cloned() {
                Some(room) => {
                    let text = rest.to_owned();
                    cx.publish(TableEvent::Said { room, player, text }.into());
                }
                None => Self::reply(cx, "NOROOM".into()),
            },
            "leave" => match cx.room().cloned() {
                Some(room) => cx.leave(Some(TableEvent::Left { room, player }.into())),
                None => Self::reply(cx, "NOROOM".into()),
            },
            "ping" => Self::reply(cx, "PONG".into()),
            _ => Self::reply(cx, format!("WHAT {line}")),
        }
    }

    fn answer(&mut self, cx: &mut SessionContext<'_>, answer: Answer) {
        match answer {
            Answer::Joined { room, members } => {
                let members: Vec<&str> = members.iter().map(|m| &**m).collect();
                Self::reply(cx, format!("SEATS {room} {}", members.join(" ")));
            }
            Answer::RoomFull { room, capacity } => {
                Self::reply(cx, format!("FULL {room} {capacity}"));
            }
            Answer::Left { room } => Self::reply(cx, format!("STOOD {room}")),
            other => Self::reply(cx, format!("UNEXPECTED {other:?}")),
        }
    }

    fn quit_event(
        &mut self,
        room: &RoomName,
        name: &Arc<str>,
        reason: DisconnectReason,
    ) -> Option<SharedEvent> {
        Some(SharedEvent::new(TableEvent::Gone {
            room: room.clone(),
            player: name.clone(),
            reason,
        }))
    }
}

/// A card-table server on two threads, rooms of at most two players.
fn table_server() -> Embedded {
    let config = LobbyConfig {
        threads: 2,
        room_capacity: 2,
        ..LobbyConfig::default()
    };
    Embedded::serving(config, "table", || Table)
}

/// A `ping` round trip comes back next: nothing else is pending.
#[track_caller]
fn expect_nothing_pending(client: &mut Client) {
    client.send("ping");
    client.expect("PONG");
}

#[test]
fn a_custom_protocol_shares_rooms_across_threads_and_the_embedder_broadcasts_its_events() {
    let server = table_server();
    let mut ann = server.hello_client();
    let mut bob = server.hello_client();
    let mut cid = server.hello_client();
    let (a, b, c) = (ann.nick.clone(), bob.nick.clone(), cid.nick.clone());
    let registry = server.registry();
    assert_ne!(
        registry.thread_of(SessionId(ann.id)),
        registry.thread_of(SessionId(bob.id)),
        "ann and bob run on different threads"
    );

    ann.send("say too early");
    ann.expect("NOROOM");
    ann.send("join table");
    ann.expect(&format!("SEATED table {a}"));
    ann.expect(&format!("SEATS table {a}"));
    bob.send("join table");
    bob.expect(&format!("SEATED table {b}"));
    bob.expect(&format!("SEATS table {a} {b}"));
    ann.expect(&format!("SEATED table {b}"));
    // The room holds two: the third player is refused and nothing changes.
    cid.send("join table");
    cid.expect("FULL table 2");

    ann.send("say hello there");
    bob.send("say hi");
    // Each sees both lines, in the room's one order.
    let first = ann.line();
    let second = ann.line();
    assert_eq!(bob.line(), first);
    assert_eq!(bob.line(), second);
    let mut said = [first, second];
    said.sort();
    assert_eq!(
        said,
        [
            format!("SAID table {a} hello there"),
            format!("SAID table {b} hi")
        ]
    );

    // The embedding program broadcasts the application's own event.
    let reached = server.ask(|registry| async move {
        let deal = TableEvent::Said {
            room: Arc::from("table"),
            player: Arc::from("dealer"),
            text: "deals".into(),
        };
        registry.broadcast("table", deal).await
    });
    assert_eq!(reached, 2);
    ann.expect("SAID table dealer deals");
    bob.expect("SAID table dealer deals");
    expect_nothing_pending(&mut cid);

    // The table protocol takes no requests from the embedder.
    let cid_id = SessionId(cid.id);
    let moved = server.ask(move |registry| async move { registry.join(cid_id, "table").await });
    assert_eq!(moved.map_err(|e| e.code), Err(ErrorCode::NoSuchNick));
    let rooms = server.ask(|registry| async move { registry.list_rooms().await });
    assert_eq!(rooms, vec![("table".to_owned(), 2)]);
    let sessions = server.ask(|registry| async move { registry.list_sessions().await });
    let expected =
        [(&ann, Some("table")), (&bob, Some("table")), (&cid, None)].map(|(client, room)| {
            SessionInfo {
                id: SessionId(client.id),
                nick: client.nick.clone(),
                room: room.map(str::to_owned),
            }
        });
    assert_eq!(sessions, expected);

    // Moving rooms: the old room hears LEFT, the new one SEATED.
    bob.send("join bar");
    bob.expect(&format!("LEFT table {b}"));
    bob.expect(&format!("SEATED bar {b}"));
    bob.expect(&format!("SEATS bar {b}"));
    ann.expect(&format!("LEFT table {b}"));
    cid.send("join table");
    cid.expect(&format!("SEATED table {c}"));
    cid.expect(&format!("SEATS table {a} {c}"));
    ann.expect(&format!("SEATED table {c}"));

    // A player that goes away is announced with the protocol's own event.
    drop(ann);
    cid.expect(&format!("GONE table {a} closed"));
    cid.send("leave");
    cid.expect(&format!("LEFT table {c}"));
    cid.expect("STOOD table");
    cid.send("say anyone?");
    cid.expect("NOROOM");
    bob.send("say alone");
    bob.expect(&format!("SAID bar {b} alone"));
    for client in [&mut bob, &mut cid] {
        expect_nothing_pending(client);
    }
    let rooms = server.ask(|registry| async move { registry.list_rooms().await });
    assert_eq!(rooms, vec![("bar".to_owned(), 1)]);
}
