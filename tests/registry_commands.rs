//! An actix program that embeds the lobby talks to its registry with typed
//! messages: kick a session, broadcast a frame, list rooms and sessions.

mod common;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;

use actix::Addr;
use bytes::Bytes;
use common::{Client, READ_TIMEOUT};
use switchboard::{
    Broadcast, Kick, ListRooms, ListSessions, LobbyConfig, LobbyServer, Registry, SessionId,
    SessionInfo,
};

/// A lobby running in this process on its own actix system, stopped when
/// dropped.
struct EmbeddedLobby {
    addr: SocketAddr,
    registry: Addr<Registry>,
    stop: Option<actix_rt::System>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EmbeddedLobby {
    fn start() -> EmbeddedLobby {
        let (started, ready) = mpsc::channel();
        let thread = thread::spawn(move || {
            let system = actix_rt::System::new();
            system.block_on(async move {
                let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind 127.0.0.1:0");
                let lobby = LobbyServer::start(socket, LobbyConfig::default()).expect("start");
                let handles = (lobby.local_addr(), lobby.registry().clone());
                started
                    .send((handles, actix_rt::System::current()))
                    .expect("test thread waits");
            });
            system.run().expect("system runs until stopped");
        });
        let ((addr, registry), system) = ready.recv_timeout(READ_TIMEOUT).expect("lobby started");
        EmbeddedLobby {
            addr,
            registry,
            stop: Some(system),
            thread: Some(thread),
        }
    }

    fn client(&self, nick: &str) -> Client {
        let mut client = Client::connect(self.addr);
        client.welcome_as(nick);
        client
    }

    /// Sends `message` to the registry and waits (bounded) for its answer.
    fn ask<M>(&self, message: M) -> M::Result
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        Registry: actix::Handler<M>,
    {
        let answer = self.registry.send(message);
        let bounded = async { tokio::time::timeout(READ_TIMEOUT, answer).await };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime to wait on");
        runtime
            .block_on(bounded)
            .expect("registry answers in time")
            .expect("registry is running")
    }
}

impl Drop for EmbeddedLobby {
    fn drop(&mut self) {
        if let Some(system) = self.stop.take() {
            system.stop();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
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
    let kicked = lobby.ask(Kick {
        session: SessionId(bob.id),
        farewell: Some(farewell),
    });
    assert!(kicked);
    bob.expect("ERR kicked by the host");
    bob.expect_eof();
    alice.expect("QUIT arena bob kicked");
    assert!(!lobby.ask(Kick {
        session: SessionId(bob.id),
        farewell: None,
    }));
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
    let reached = lobby.ask(Broadcast {
        room: Some("arena".into()),
        frame: tick,
    });
    assert_eq!(reached, 2);
    alice.expect("MSG arena host tick 1");
    bob.expect("MSG arena host tick 1");
    carol.expect_nothing_pending();

    let everyone = Bytes::from_static(b"MSG * host server restarts soon\n");
    let reached = lobby.ask(Broadcast {
        room: None,
        frame: everyone,
    });
    assert_eq!(reached, 3);
    for client in [&mut alice, &mut bob, &mut carol] {
        client.expect("MSG * host server restarts soon");
    }

    assert_eq!(lobby.ask(ListRooms), vec![("arena".to_owned(), 2)]);
    let sessions = lobby.ask(ListSessions);
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
    let unknown_room = lobby.ask(Broadcast {
        room: Some("nowhere".into()),
        frame: Bytes::from_static(b"x\n"),
    });
    assert_eq!(unknown_room, 0);
    // The probe's round trip proves the unknown room's frame reached no one.
    alice.expect_nothing_pending();
}
