//! An actix program that embeds the lobby talks to its registry: kick a
//! session, broadcast or send an event, move a session between rooms, list
//! rooms and sessions, and subscribe to what happens.

mod common;
mod embedded;

use std::sync::mpsc;
use std::thread;

use bytes::Bytes;
use common::{Client, READ_TIMEOUT};
use embedded::Embedded;
use switchboard::protocol::Command;
use switchboard::{
    DisconnectReason, LobbyConfig, LobbyEvent, LobbyServer, RawFrame, SessionId, SessionInfo,
    SharedEvent,
};

/// A lobby running in this process on its own actix system, stopped when
/// dropped.
struct EmbeddedLobby(Embedded);

impl std::ops::Deref for EmbeddedLobby {
    type Target = Embedded;

    fn deref(&self) -> &Embedded {
        &self.0
    }
}

impl EmbeddedLobby {
    fn start() -> EmbeddedLobby {
        EmbeddedLobby(Embedded::lobby(LobbyConfig::default(), false))
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.0.addrs[0]
    }

    fn client(&self, nick: &str) -> Client {
        let mut client = Client::connect(self.addr());
        client.welcome_as(nick);
        client
    }
}

#[test]
fn kick_closes_the_session_and_tells_its_room_why() {
    let lobby = EmbeddedLobby::start();
    let mut alice = lobby.client("alice");
    let mut bob = lobby.client("bob");
    alice.join("arena");
    bob.join("arena");
    alice.expect("JOIN arena bob");

    let farewell = Bytes::from_static(b"ERR kicked by the host\n");
    let bob_id = SessionId(bob.id);
    let farewell = Some(SharedEvent::new(RawFrame(farewell)));
    let kicked = lobby.ask(move |registry| async move { registry.kick(bob_id, farewell).await });
    assert!(kicked);
    bob.expect("ERR kicked by the host");
    bob.expect_eof();
    alice.expect("QUIT arena bob kicked");
    assert!(!lobby.ask(move |registry| async move { registry.kick(bob_id, None).await }));
}

#[test]
fn broadcast_reaches_a_room_or_everyone_and_lists_show_the_lobby() {
    let lobby = EmbeddedLobby::start();
    let mut alice = lobby.client("alice");
    let mut bob = lobby.client("bob");
    let mut carol = lobby.client("carol");
    alice.join("arena");
    bob.join("arena");
    alice.expect("JOIN arena bob");

    let tick = Bytes::from_static(b"MSG arena host tick 1\n");
    let reached =
        lobby.ask(|registry| async move { registry.broadcast("arena", RawFrame(tick)).await });
    assert_eq!(reached, 2);
    alice.expect("MSG arena host tick 1");
    bob.expect("MSG arena host tick 1");
    carol.expect_nothing_pending();

    let everyone = Bytes::from_static(b"MSG * host server restarts soon\n");
    let reached =
        lobby.ask(|registry| async move { registry.broadcast_all(RawFrame(everyone)).await });
    assert_eq!(reached, 3);
    for client in [&mut alice, &mut bob, &mut carol] {
        client.expect("MSG * host server restarts soon");
    }

    let rooms = lobby.ask(|registry| async move { registry.list_rooms().await });
    assert_eq!(rooms, vec![("arena".to_owned(), 2)]);
    let sessions = lobby.ask(|registry| async move { registry.list_sessions().await });
    let expected = [
        (&alice, Some("arena")),
        (&bob, Some("arena")),
        (&carol, None),
    ]
    .map(|(client, room)| SessionInfo {
        id: SessionId(client.id),
        nick: client.nick.clone(),
        room: room.map(str::to_owned),
    });
    assert_eq!(sessions, expected);
    let unknown_room = lobby.ask(|registry| async move {
        let frame = RawFrame(Bytes::from_static(b"x\n"));
        registry.broadcast("nowhere", frame).await
    });
    assert_eq!(unknown_room, 0);
    // The probe's round trip proves the unknown room's frame reached no one.
    alice.expect_nothing_pending();
}

/// Forwards the lobby's events to the test thread.
struct Forward(mpsc::Sender<LobbyEvent>);

impl actix::Actor for Forward {
    type Context = actix::Context<Self>;
}

impl actix::Handler<LobbyEvent> for Forward {
    type Result = ();

    fn handle(&mut self, event: LobbyEvent, _: &mut Self::Context) {
        let _ = self.0.send(event);
    }
}

#[test]
fn a_subscriber_sees_the_lobby_and_moves_sessions_between_rooms() {
    let lobby = EmbeddedLobby::start();
    let (events_tx, events) = mpsc::channel();
    let forward =
        actix::Actor::start_in_arbiter(lobby.system.arbiter(), move |_| Forward(events_tx));
    lobby.server().subscribe(forward.recipient());
    let next = || events.recv_timeout(READ_TIMEOUT).expect("an event in time");

    let mut ann = Client::connect(lobby.addr());
    ann.welcome();
    let id = SessionId(ann.id);
    assert!(matches!(next(), LobbyEvent::Connected { session, .. } if session == id));
    ann.join("lobby");
    ann.send("hi all");
    ann.expect(&format!("MSG lobby {} hi all", ann.nick));
    let joined = next();
    assert!(
        matches!(&joined, LobbyEvent::Command { session, command: Command::Join(room), .. }
            if *session == id && room == "lobby"),
        "{joined:?}"
    );
    let said = next();
    assert_eq!(
        said,
        LobbyEvent::Command {
            session: id,
            nick: ann.nick.clone(),
            room: Some("lobby".into()),
            command: Command::Say("hi all".into()),
        }
    );

    assert_eq!(
        lobby.ask(move |registry| async move { registry.join(id, "arena").await }),
        Ok(())
    );
    ann.expect(&format!("LEAVE lobby {}", ann.nick));
    ann.expect(&format!("JOIN arena {}", ann.nick));
    ann.expect(&format!("WHO arena {}", ann.nick));
    let bad = lobby.ask(move |registry| async move { registry.join(id, "no spaces").await });
    assert_eq!(
        bad.map_err(|rejection| rejection.code),
        Err(switchboard::protocol::ErrorCode::BadName)
    );

    assert!(lobby.ask(move |registry| async move {
        let frame = RawFrame(Bytes::from_static(b"MSG arena host welcome\n"));
        registry.send_to(id, frame).await
    }));
    ann.expect("MSG arena host welcome");
    assert!(lobby.ask(move |registry| async move { registry.leave(id).await }));
    ann.expect(&format!("LEAVE arena {}", ann.nick));
    assert!(!lobby.ask(move |registry| async move { registry.leave(id).await }));

    ann.send("/quit");
    ann.expect("BYE");
    loop {
        match next() {
            LobbyEvent::Disconnected {
                session, reason, ..
            } => {
                assert_eq!((session, reason), (id, DisconnectReason::Quit));
                break;
            }
            LobbyEvent::Command { command, .. } => {
                assert!(matches!(command, Command::Quit(_)), "{command:?}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(!lobby.ask(move |registry| async move {
        let frame = RawFrame(Bytes::from_static(b"x\n"));
        registry.send_to(id, frame).await
    }));
}

#[test]
fn a_host_shuts_the_lobby_down_and_learns_when_every_session_is_gone() {
    let (started, ready) = mpsc::channel();
    let (finished, outcome) = mpsc::channel();
    let (shut_down, shutdown_requested) = futures::channel::oneshot::channel::<()>();
    let host = thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1:0");
            let lobby = LobbyServer::start(socket, LobbyConfig::default()).expect("start");
            started.send(lobby.local_addr()).expect("test thread waits");
            let _ = shutdown_requested.await;
            let all_closed = lobby.shutdown(READ_TIMEOUT).await;
            finished.send(all_closed).expect("test thread waits");
        });
    });
    let addr = ready.recv_timeout(READ_TIMEOUT).expect("lobby started");
    let mut ann = Client::connect(addr);
    ann.welcome();
    ann.join("hall");
    let mut bob = Client::connect(addr);
    bob.welcome();

    shut_down.send(()).expect("host waits");
    for client in [&mut ann, &mut bob] {
        client.expect("SHUTDOWN");
        client.expect_eof();
    }
    let all_closed = outcome
        .recv_timeout(READ_TIMEOUT)
        .expect("shutdown finished");
    assert!(all_closed, "every session ended within the grace period");
    host.join().expect("host thread ends");
}

/// A subscriber that is stuck: it takes the first event, then blocks its
/// own thread until the test lets it go, then forwards what it gets.
struct Stuck {
    release: Option<mpsc::Receiver<()>>,
    events: mpsc::Sender<LobbyEvent>,
}

impl actix::Actor for Stuck {
    type Context = actix::Context<Self>;
}

impl actix::Handler<LobbyEvent> for Stuck {
    type Result = ();

    fn handle(&mut self, event: LobbyEvent, _: &mut Self::Context) {
        if let Some(release) = self.release.take() {
            // Bounded: a test that fails never releases it.
            let _ = release.recv_timeout(READ_TIMEOUT * 4);
        }
        let _ = self.events.send(event);
    }
}

#[test]
fn a_stuck_subscriber_misses_events_instead_of_growing_its_mailbox() {
    const LINES: usize = 200;
    /// actix's default mailbox capacity, which `Stuck` keeps.
    const MAILBOX: usize = 16;
    let lobby = EmbeddedLobby::start();
    let (release_tx, release) = mpsc::channel();
    let (events_tx, events) = mpsc::channel();
    // A thread of its own in the lobby's system, so blocking it stalls no
    // session.
    actix_rt::System::set_current(lobby.system.clone());
    let arbiter = actix::Arbiter::new();
    let stuck = actix::Actor::start_in_arbiter(&arbiter.handle(), move |_| Stuck {
        release: Some(release),
        events: events_tx,
    });
    lobby.server().subscribe(stuck.recipient());

    let mut ann = Client::connect(lobby.addr());
    ann.welcome();
    ann.join("lobby");
    for k in 0..LINES {
        ann.send(&format!("line {k}"));
    }
    for k in 0..LINES {
        ann.expect(&format!("MSG lobby {} line {k}", ann.nick));
    }
    // Connected, join and the lines: all but what the mailbox holds (and the
    // one being handled, and one the mailbox lets past) were dropped.
    let generated = (2 + LINES) as u64;
    let dropped = lobby.server().dropped_events();
    assert!(
        dropped >= generated - MAILBOX as u64 - 2 && dropped <= generated,
        "{dropped} of {generated} events dropped"
    );
    release_tx.send(()).expect("the subscriber is waiting");
    // What was not dropped arrives, then nothing else before the next event.
    for _ in dropped..generated {
        events
            .recv_timeout(READ_TIMEOUT)
            .expect("an event kept in the mailbox");
    }
    ann.send("after");
    ann.expect(&format!("MSG lobby {} after", ann.nick));
    let next = events.recv_timeout(READ_TIMEOUT).expect("the next event");
    assert!(
        matches!(&next, LobbyEvent::Command { command: Command::Say(text), .. } if text == "after"),
        "{next:?}"
    );
    arbiter.stop();
}
