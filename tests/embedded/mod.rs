//! A server embedded in the test process: the library's `Server` on its own
//! actix system in a thread, with the registry's async methods run inside
//! that system and their answers waited for (bounded) on the test thread.
#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;

use switchboard::{Framing, LobbyConfig, Protocol, Registry, Server, SessionConfig};

use crate::common::{Client, READ_TIMEOUT};

/// A server running in this process on its own actix system, stopped when
/// dropped.
pub struct Embedded {
    /// The address of each socket the set-up served, in its order.
    pub addrs: Vec<SocketAddr>,
    /// Kept for what only the server does (e.g. `subscribe`); `None` once
    /// taken to be shut down.
    pub server: Option<Server>,
    registry: Registry,
    pub system: actix_rt::System,
    thread: Option<thread::JoinHandle<()>>,
}

impl Embedded {
    /// A server with `config` serving, on one socket labelled `label`, a
    /// line protocol (lines up to 1024 bytes) made by `protocol`.
    pub fn serving<P, F>(config: LobbyConfig, label: &'static str, protocol: F) -> Embedded
    where
        P: Protocol,
        F: Fn() -> P + Clone + Send + Sync + 'static,
    {
        Embedded::start(config, 1, move |server, sockets| {
            let session = SessionConfig::new(Framing::Lines { max_line: 1024 });
            let mut addrs = Vec::new();
            for socket in sockets {
                addrs.push(server.serve(socket, label, session.clone(), protocol.clone())?);
            }
            Ok(addrs)
        })
    }

    /// Connects to a protocol that greets with `HELLO <id>` and names its
    /// session `p<id>`; reads the greeting.
    #[track_caller]
    pub fn hello_client(&self) -> Client {
        let mut client = Client::connect(self.addrs[0]);
        let hello = client.line();
        let id = hello
            .strip_prefix("HELLO ")
            .unwrap_or_else(|| panic!("expected HELLO, got {hello:?}"));
        client.id = id.parse().expect("numeric id");
        client.nick = format!("p{}", client.id);
        client
    }

    /// Starts a server with `config` on a new actix system, binds `sockets`
    /// loopback sockets on port 0 and hands them to `setup`, which serves
    /// them (e.g. `serve_text`, `serve_json`, `serve`) and returns their
    /// addresses.
    pub fn start<F>(config: LobbyConfig, sockets: usize, setup: F) -> Embedded
    where
        F: FnOnce(&mut Server, Vec<tokio::net::TcpListener>) -> io::Result<Vec<SocketAddr>>
            + Send
            + 'static,
    {
        let (started, ready) = mpsc::channel();
        let thread = thread::spawn(move || {
            let system = actix_rt::System::new();
            system.block_on(async move {
                let mut bound = Vec::new();
                for _ in 0..sockets {
                    let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind 127.0.0.1:0");
                    bound.push(socket);
                }
                let mut server = Server::new(config);
                let addrs = setup(&mut server, bound).expect("serve the sockets");
                started
                    .send((addrs, server, actix_rt::System::current()))
                    .expect("test thread waits");
            });
            system.run().expect("system runs until stopped");
        });
        let (addrs, server, system) = ready.recv_timeout(READ_TIMEOUT).expect("server started");
        let registry = server.registry().clone();
        Embedded {
            addrs,
            server: Some(server),
            registry,
            system,
            thread: Some(thread),
        }
    }

    /// A lobby serving text on its first address (and JSON on the second
    /// when `json`).
    pub fn lobby(config: LobbyConfig, json: bool) -> Embedded {
        let sockets = if json { 2 } else { 1 };
        Embedded::start(config, sockets, |server, sockets| {
            let mut sockets = sockets.into_iter();
            let mut addrs = Vec::new();
            if let Some(text) = sockets.next() {
                addrs.push(server.serve_text(text)?);
            }
            if let Some(json) = sockets.next() {
                addrs.push(server.serve_json(json)?);
            }
            Ok(addrs)
        })
    }

    /// The server's registry (e.g. for `thread_of`, which needs no system).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The server, for calls that need it (e.g. `subscribe`).
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("the server is still embedded")
    }

    /// Runs `ask(registry)` inside the server's actix system (its async
    /// methods use actix `Addr::send`) and waits, bounded, for the answer.
    #[track_caller]
    pub fn ask<T, F, Fut>(&self, ask: F) -> T
    where
        F: FnOnce(Registry) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let registry = self.registry.clone();
        let (answer, answered) = mpsc::channel();
        let spawned = self.system.arbiter().spawn_fn(move || {
            actix_rt::spawn(async move {
                let _ = answer.send(ask(registry).await);
            });
        });
        assert!(spawned, "the server's system is running");
        answered
            .recv_timeout(READ_TIMEOUT)
            .expect("the registry answers in time")
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.system.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Which of `shards` sequencers owns `room` (the library's own rule, so
/// tests can put two rooms on different sequencers, i.e. different threads).
pub fn sequencer_of(room: &str, shards: usize) -> usize {
    switchboard::room_thread(room, shards)
}

/// Two room names, beginning `first_prefix` and `second_prefix`, owned by
/// different sequencers when there are `shards` of them.
pub fn rooms_on_different_sequencers(
    first_prefix: &str,
    second_prefix: &str,
    shards: usize,
) -> (String, String) {
    let first = format!("{first_prefix}0");
    let shard = sequencer_of(&first, shards);
    let second = (0..64)
        .map(|n| format!("{second_prefix}{n}"))
        .find(|room| sequencer_of(room, shards) != shard)
        .expect("some name hashes to another sequencer");
    (first, second)
}
