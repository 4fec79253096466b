//! `tokio-baseline`: the server an experienced tokio user would write instead
//! of switchboard, used as the yardstick of `switchboard-bench`.
//!
//! - `--mode echo`: raw echo — read into a buffer, write it back.
//! - `--mode lobby`: a subset of switchboard's text lobby protocol: `WELCOME`,
//!   `/nick`, `/join`, `/leave`, chat → `MSG`, `/rooms`, `/who`, `/ping`,
//!   `/pong`, `/quit`, and `QUIT <room> <nick> <reason>` to the room when a
//!   member goes. One task per connection reads lines; a writer task per
//!   connection drains a bounded mpsc channel; rooms live in one map behind a
//!   `std::sync::Mutex`, so every member of a room sees its events in one
//!   order. A client whose channel is full is dropped as `slow-consumer`.
//!
//! - `--mode ws`: the same lobby as JSON over WebSocket (SPEC §5, the
//!   commands `nick`, `join`, `leave`, `say`, `rooms`, `who`, `ping`,
//!   `quit`), with tokio-tungstenite: the socket split into a reading task
//!   and a writer task draining the same bounded channel, each event
//!   rendered once per broadcast.
//!
//! Like switchboard it logs `listening on ADDR (MODE)` to stderr.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Echo,
    Lobby,
    Ws,
}

/// A plain tokio server: raw echo or the text lobby.
#[derive(Debug, Parser)]
struct Args {
    /// What to serve
    #[arg(long, value_enum, default_value_t = Mode::Lobby)]
    mode: Mode,
    /// Listen address (port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:7979")]
    bind: SocketAddr,
    /// Lines queued to one client before it is dropped as a slow consumer
    #[arg(long, default_value_t = 1024)]
    outbound_queue: usize,
    /// Longest accepted line in bytes
    #[arg(long, default_value_t = 4096)]
    max_line: usize,
    /// Runtime worker threads (0 = one per core, tokio's default)
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        runtime.worker_threads(args.threads);
    }
    runtime.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: Args) -> io::Result<()> {
    let listener = TcpListener::bind(args.bind).await?;
    let mode = match args.mode {
        Mode::Echo => "echo",
        Mode::Lobby => "text",
        Mode::Ws => "ws",
    };
    eprintln!("listening on {} ({mode})", listener.local_addr()?);
    let lobby = Arc::new(Lobby {
        state: Mutex::new(State {
            json: args.mode == Mode::Ws,
            ..State::default()
        }),
        next_id: AtomicU64::new(0),
        outbound_queue: args.outbound_queue.max(1),
        max_line: args.max_line,
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match args.mode {
            Mode::Echo => {
                tokio::spawn(echo(stream));
            }
            Mode::Lobby => {
                tokio::spawn(lobby.clone().client(stream));
            }
            Mode::Ws => {
                tokio::spawn(lobby.clone().ws_client(stream));
            }
        }
    }
}

async fn echo(mut stream: TcpStream) {
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// The lobby.

struct Lobby {
    state: Mutex<State>,
    next_id: AtomicU64,
    outbound_queue: usize,
    max_line: usize,
}

#[derive(Default)]
struct State {
    /// Room → members in join order; a `BTreeMap` keeps `/rooms` sorted.
    rooms: BTreeMap<String, Vec<Member>>,
    /// Lower-cased nicks in use.
    nicks: HashSet<String>,
    /// Events are JSON (WebSocket mode), not text lines.
    json: bool,
}

#[derive(Clone)]
struct Member {
    id: u64,
    nick: Arc<str>,
    tx: mpsc::Sender<Bytes>,
    kill: CancellationToken,
}

/// One connection's view of itself.
struct Client {
    id: u64,
    nick: Arc<str>,
    room: Option<String>,
    tx: mpsc::Sender<Bytes>,
    kill: CancellationToken,
}

impl Client {
    fn member(&self) -> Member {
        Member {
            id: self.id,
            nick: self.nick.clone(),
            tx: self.tx.clone(),
            kill: self.kill.clone(),
        }
    }

    /// Queues a reply to this client only; a client whose queue is full is
    /// dropped as a slow consumer.
    fn send(&self, line: String) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(Bytes::from(line)) {
            self.kill.cancel();
        }
    }
}

fn line(text: String) -> Bytes {
    let mut text = text;
    text.push('\n');
    Bytes::from(text)
}

impl State {
    /// Sends `line` to every member of `room`; members whose queue is full are
    /// removed from the room and told to go, and the room hears why.
    fn broadcast(&mut self, room: &str, line: Bytes) {
        let mut pending = vec![line];
        while let Some(line) = pending.pop() {
            let Some(members) = self.rooms.get_mut(room) else {
                return;
            };
            let mut dropped = Vec::new();
            members.retain(|member| match member.tx.try_send(line.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    member.kill.cancel();
                    dropped.push(member.nick.clone());
                    false
                }
            });
            if members.is_empty() {
                self.rooms.remove(room);
                return;
            }
            for nick in dropped {
                pending.push(self.quit(room, &nick, "slow-consumer"));
            }
        }
    }

    /// The event telling `room` that `nick` left for `reason`.
    fn quit(&self, room: &str, nick: &str, reason: &str) -> Bytes {
        if self.json {
            ws::quit(room, nick, reason)
        } else {
            line(format!("QUIT {room} {nick} {reason}"))
        }
    }

    /// Removes member `id` from `room`; true if it was there.
    fn remove(&mut self, room: &str, id: u64) -> bool {
        let Some(members) = self.rooms.get_mut(room) else {
            return false;
        };
        let before = members.len();
        members.retain(|member| member.id != id);
        let removed = members.len() != before;
        if members.is_empty() {
            self.rooms.remove(room);
        }
        removed
    }
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// How a connection ended, as the room hears it.
enum End {
    Quit,
    Closed,
    Reset,
    SlowConsumer,
    Error,
}

impl End {
    fn word(&self) -> &'static str {
        match self {
            End::Quit => "quit",
            End::Closed => "closed",
            End::Reset => "reset",
            End::SlowConsumer => "slow-consumer",
            End::Error => "error",
        }
    }
}

impl Lobby {
    /// A new connection: its id, its guest nick (now taken), its outbound
    /// queue, whose receiving end is for its writer, and its kill token.
    fn register(&self) -> (Client, mpsc::Receiver<Bytes>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(self.outbound_queue);
        let nick: Arc<str> = Arc::from(format!("guest{id}"));
        self.state
            .lock()
            .unwrap()
            .nicks
            .insert(nick.to_ascii_lowercase());
        let client = Client {
            id,
            nick,
            room: None,
            tx,
            kill: CancellationToken::new(),
        };
        (client, rx)
    }

    /// A connection that ended as `end`: its nick is free again and its
    /// room hears that it quit.
    fn unregister(&self, client: &mut Client, end: End) {
        let mut state = self.state.lock().unwrap();
        state.nicks.remove(&client.nick.to_ascii_lowercase());
        if let Some(room) = client.room.take()
            && state.remove(&room, client.id)
        {
            let quit = state.quit(&room, &client.nick, end.word());
            state.broadcast(&room, quit);
        }
    }

    async fn client(self: Arc<Self>, stream: TcpStream) {
        let (read_half, write_half) = stream.into_split();
        let (client, rx) = self.register();
        let writer = tokio::spawn(writer(write_half, rx, client.kill.clone()));
        client.send(format!("WELCOME {} {}\n", client.id, client.nick));

        let lines = FramedRead::new(read_half, LinesCodec::new_with_max_length(self.max_line));
        self.session(client, writer, lines, |client, next| match next {
            Ok(text) => self.handle(client, &text).then_some(End::Quit),
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                client.send("ERR line-too-long line exceeds the maximum length\n".into());
                Some(End::Error)
            }
            Err(LinesCodecError::Io(error)) => Some(match error.kind() {
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => End::Reset,
                io::ErrorKind::InvalidData => {
                    client.send("ERR bad-encoding lines must be UTF-8\n".into());
                    End::Error
                }
                _ => End::Error,
            }),
        })
        .await;
    }

    /// Serves a registered connection until it ends: hands each input to
    /// `on`, which answers it and says whether (and how) the connection
    /// ended; the input running out is `Closed`, the client killed as a slow
    /// consumer is `SlowConsumer`. Then unregisters it and waits for its
    /// `writer` to drain what is owed.
    async fn session<S: Stream + Unpin>(
        &self,
        mut client: Client,
        writer: JoinHandle<()>,
        mut input: S,
        mut on: impl FnMut(&mut Client, S::Item) -> Option<End>,
    ) {
        let end = loop {
            let next = tokio::select! {
                biased;
                () = client.kill.cancelled() => break End::SlowConsumer,
                next = input.next() => next,
            };
            let Some(next) = next else {
                break End::Closed;
            };
            if let Some(end) = on(&mut client, next) {
                break end;
            }
        };
        self.unregister(&mut client, end);
        // Dropping the last sender lets the writer drain what is owed and close.
        drop(client);
        let _ = writer.await;
    }

    /// Answers one line; true when the client quit.
    fn handle(&self, client: &mut Client, text: &str) -> bool {
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.is_empty() {
            return false;
        }
        let command = match text.strip_prefix('/') {
            Some(rest) if !rest.starts_with('/') => rest,
            Some(escaped) => return self.say(client, escaped),
            None => return self.say(client, text),
        };
        let mut words = command.split_whitespace();
        let verb = words.next().unwrap_or("").to_ascii_lowercase();
        let args: Vec<&str> = words.collect();
        match (verb.as_str(), args.as_slice()) {
            ("join", [room]) => self.join::<Text>(client, room),
            ("leave", []) => {
                let Some(room) = client.room.take() else {
                    client.send("ERR not-in-room join a room first\n".into());
                    return false;
                };
                let mut state = self.state.lock().unwrap();
                state.broadcast(&room, line(format!("LEAVE {room} {}", client.nick)));
                state.remove(&room, client.id);
            }
            ("nick", [name]) => self.nick::<Text>(client, name),
            ("rooms", []) => {
                let mut reply = String::from("ROOMS");
                for (room, members) in &self.state.lock().unwrap().rooms {
                    reply.push_str(&format!(" {room}={}", members.len()));
                }
                reply.push('\n');
                client.send(reply);
            }
            ("who", [] | [_]) => {
                let Some(room) = args.first().copied().or(client.room.as_deref()) else {
                    client.send("ERR not-in-room join a room first\n".into());
                    return false;
                };
                let who = Text::who(&self.state.lock().unwrap(), room);
                client.send(who);
            }
            ("ping", []) => client.send("PONG\n".into()),
            ("ping", [token]) => client.send(format!("PONG {token}\n")),
            ("pong", [] | [_]) => {}
            ("quit", _) => {
                client.send("BYE\n".into());
                return true;
            }
            ("join" | "leave" | "nick" | "rooms" | "who" | "ping" | "pong", _) => {
                client.send("ERR bad-args wrong number of arguments\n".into());
            }
            _ => client.send(format!("ERR unknown-command no command /{verb}\n")),
        }
        false
    }

    fn say(&self, client: &Client, text: &str) -> bool {
        match &client.room {
            Some(room) => {
                let msg = line(format!("MSG {room} {} {text}", client.nick));
                self.state.lock().unwrap().broadcast(room, msg);
            }
            None => client.send("ERR not-in-room join a room first\n".into()),
        }
        false
    }

    /// `/join ROOM` (or the `join` command): leaves the old room, joins
    /// `room` and replies with its members, in `D`'s words.
    fn join<D: Dialect>(&self, client: &mut Client, room: &str) {
        if !valid_name(room) {
            client.send(D::bad_name());
            return;
        }
        let mut state = self.state.lock().unwrap();
        if client.room.as_deref() == Some(room) {
            let who = D::who(&state, room);
            client.send(who);
            return;
        }
        if let Some(old) = client.room.take() {
            state.broadcast(&old, D::leave(&old, &client.nick));
            state.remove(&old, client.id);
        }
        state
            .rooms
            .entry(room.to_owned())
            .or_default()
            .push(client.member());
        state.broadcast(room, D::join(room, &client.nick));
        let who = D::who(&state, room);
        client.send(who);
        client.room = Some(room.to_owned());
    }

    /// `/nick NAME` (or the `nick` command): takes `name` if it is free and
    /// tells the room, or the client alone, in `D`'s words.
    fn nick<D: Dialect>(&self, client: &mut Client, name: &str) {
        if !valid_name(name) {
            client.send(D::bad_name());
            return;
        }
        let mut state = self.state.lock().unwrap();
        let key = name.to_ascii_lowercase();
        if key != client.nick.to_ascii_lowercase() && !state.nicks.insert(key) {
            client.send(D::nick_taken(name));
            return;
        }
        state.nicks.remove(&client.nick.to_ascii_lowercase());
        state.nicks.insert(name.to_ascii_lowercase());
        let old = std::mem::replace(&mut client.nick, Arc::from(name));
        let announce = D::nick(&old, name);
        match client.room.clone() {
            Some(room) => {
                if let Some(me) = state
                    .rooms
                    .get_mut(&room)
                    .and_then(|members| members.iter_mut().find(|m| m.id == client.id))
                {
                    me.nick = client.nick.clone();
                }
                state.broadcast(&room, Bytes::from(announce));
            }
            None => {
                drop(state);
                client.send(announce);
            }
        }
    }
}

/// How the lobby words what `join` and `nick` say: text lines ([`Text`]) or
/// JSON events over WebSocket (`ws::Json`).
trait Dialect {
    /// The reply to a name that is not 1-32 of A-Z a-z 0-9 _ -.
    fn bad_name() -> String;
    /// The reply to a nick someone else has.
    fn nick_taken(name: &str) -> String;
    /// The members of `room`.
    fn who(state: &State, room: &str) -> String;
    fn join(room: &str, nick: &str) -> Bytes;
    fn leave(room: &str, nick: &str) -> Bytes;
    /// A nick change, to the room or to the client alone.
    fn nick(old: &str, new: &str) -> String;
}

/// The text lobby's lines.
struct Text;

impl Dialect for Text {
    fn bad_name() -> String {
        "ERR bad-name names are 1-32 of A-Z a-z 0-9 _ -\n".into()
    }

    fn nick_taken(name: &str) -> String {
        format!("ERR nick-taken {name} is already taken\n")
    }

    fn who(state: &State, room: &str) -> String {
        let mut reply = format!("WHO {room}");
        for member in state.rooms.get(room).into_iter().flatten() {
            reply.push(' ');
            reply.push_str(&member.nick);
        }
        reply.push('\n');
        reply
    }

    fn join(room: &str, nick: &str) -> Bytes {
        line(format!("JOIN {room} {nick}"))
    }

    fn leave(room: &str, nick: &str) -> Bytes {
        line(format!("LEAVE {room} {nick}"))
    }

    fn nick(old: &str, new: &str) -> String {
        format!("NICK {old} {new}\n")
    }
}

/// Drains the client's channel into its socket, a batch per write, until every
/// sender is gone (then closes the write side) or the client is killed.
async fn writer(
    mut socket: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    kill: CancellationToken,
) {
    let mut batch = BytesMut::with_capacity(1024);
    loop {
        let first = tokio::select! {
            biased;
            () = kill.cancelled() => return,
            first = rx.recv() => first,
        };
        let Some(first) = first else { break };
        batch.extend_from_slice(&first);
        while batch.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        let written = tokio::select! {
            biased;
            () = kill.cancelled() => return,
            written = socket.write_all(&batch) => written,
        };
        if written.is_err() {
            return;
        }
        batch.clear();
        if batch.capacity() > 64 * 1024 {
            batch = BytesMut::with_capacity(1024);
        }
    }
    let _ = socket.shutdown().await;
}

// ---------------------------------------------------------------------------
// The lobby as JSON over WebSocket.

mod ws {
    use super::*;

    use futures::SinkExt;
    use futures::stream::SplitSink;
    use serde::Deserialize;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

    /// A JSON string literal.
    fn js(text: &str) -> String {
        serde_json::to_string(text).unwrap_or_default()
    }

    pub fn quit(room: &str, nick: &str, reason: &str) -> Bytes {
        let event = format!(
            r#"{{"event":"quit","room":{},"nick":{},"reason":{}}}"#,
            js(room),
            js(nick),
            js(reason)
        );
        Bytes::from(event)
    }

    /// `{"event":EVENT,"room":ROOM,"nick":NICK}`.
    fn member_event(event: &str, room: &str, nick: &str) -> Bytes {
        let event = format!(
            r#"{{"event":"{event}","room":{},"nick":{}}}"#,
            js(room),
            js(nick)
        );
        Bytes::from(event)
    }

    fn error(code: &str, message: &str) -> String {
        format!(
            r#"{{"event":"error","code":{},"message":{}}}"#,
            js(code),
            js(message)
        )
    }

    fn who(state: &State, room: &str) -> String {
        let nicks: Vec<&str> = state
            .rooms
            .get(room)
            .into_iter()
            .flatten()
            .map(|member| &*member.nick)
            .collect();
        format!(
            r#"{{"event":"who","room":{},"nicks":{}}}"#,
            js(room),
            serde_json::to_string(&nicks).unwrap_or_default()
        )
    }

    #[derive(Deserialize)]
    struct Command {
        cmd: String,
        name: Option<String>,
        room: Option<String>,
        text: Option<String>,
        token: Option<String>,
    }

    impl Lobby {
        pub async fn ws_client(self: Arc<Self>, stream: TcpStream) {
            let mut config = WebSocketConfig::default();
            config.max_message_size = Some(self.max_line);
            config.max_frame_size = Some(self.max_line);
            let ws = match tokio_tungstenite::accept_async_with_config(stream, Some(config)).await {
                Ok(ws) => ws,
                Err(_) => return,
            };
            let (sink, messages) = ws.split();
            let (client, rx) = self.register();
            let writer = tokio::spawn(ws_writer(sink, rx, client.kill.clone()));
            client.send(format!(
                r#"{{"event":"welcome","id":{},"nick":{}}}"#,
                client.id,
                js(&client.nick)
            ));
            self.session(client, writer, messages, |client, next| match next {
                Ok(Message::Close(_)) => Some(End::Closed),
                Ok(Message::Text(text)) => self.ws_handle(client, &text).then_some(End::Quit),
                Ok(Message::Binary(_)) => Some(End::Error),
                Ok(_) => None,
                Err(_) => Some(End::Reset),
            })
            .await;
        }

        /// Answers one command; true when the client quit.
        fn ws_handle(&self, client: &mut Client, text: &str) -> bool {
            let mut command: Command = match serde_json::from_str(text) {
                Ok(command) => command,
                Err(e) => {
                    client.send(error("bad-args", &format!("bad command: {e}")));
                    return false;
                }
            };
            let verb = std::mem::take(&mut command.cmd);
            match (verb.as_str(), command) {
                (
                    "say",
                    Command {
                        text: Some(text), ..
                    },
                ) if !text.is_empty() => match &client.room {
                    Some(room) => {
                        let msg = format!(
                            r#"{{"event":"msg","room":{},"nick":{},"text":{}}}"#,
                            js(room),
                            js(&client.nick),
                            js(&text)
                        );
                        self.state.lock().unwrap().broadcast(room, Bytes::from(msg));
                    }
                    None => client.send(error("not-in-room", "join a room first")),
                },
                (
                    "join",
                    Command {
                        room: Some(room), ..
                    },
                ) => self.join::<Json>(client, &room),
                (
                    "nick",
                    Command {
                        name: Some(name), ..
                    },
                ) => self.nick::<Json>(client, &name),
                ("leave", _) => {
                    let Some(room) = client.room.take() else {
                        client.send(error("not-in-room", "join a room first"));
                        return false;
                    };
                    let leave = format!(
                        r#"{{"event":"leave","room":{},"nick":{}}}"#,
                        js(&room),
                        js(&client.nick)
                    );
                    let mut state = self.state.lock().unwrap();
                    state.broadcast(&room, Bytes::from(leave));
                    state.remove(&room, client.id);
                }
                ("rooms", _) => {
                    let rooms: serde_json::Map<String, serde_json::Value> = self
                        .state
                        .lock()
                        .unwrap()
                        .rooms
                        .iter()
                        .map(|(room, members)| (room.clone(), members.len().into()))
                        .collect();
                    client.send(format!(
                        r#"{{"event":"rooms","rooms":{}}}"#,
                        serde_json::Value::Object(rooms)
                    ));
                }
                ("who", command) => match command.room.or(client.room.clone()) {
                    Some(room) => {
                        let who = who(&self.state.lock().unwrap(), &room);
                        client.send(who);
                    }
                    None => client.send(error("not-in-room", "join a room first")),
                },
                ("ping", Command { token, .. }) => client.send(match token {
                    Some(token) => format!(r#"{{"event":"pong","token":{}}}"#, js(&token)),
                    None => r#"{"event":"pong"}"#.to_owned(),
                }),
                ("pong", _) => {}
                ("quit", _) => {
                    client.send(r#"{"event":"bye"}"#.to_owned());
                    return true;
                }
                _ => client.send(error("bad-args", "unknown command or missing field")),
            }
            false
        }
    }

    /// The JSON lobby's events.
    pub struct Json;

    impl Dialect for Json {
        fn bad_name() -> String {
            error("bad-name", "names are 1-32 of A-Z a-z 0-9 _ -")
        }

        fn nick_taken(_: &str) -> String {
            error("nick-taken", "that nick is taken")
        }

        fn who(state: &State, room: &str) -> String {
            who(state, room)
        }

        fn join(room: &str, nick: &str) -> Bytes {
            member_event("join", room, nick)
        }

        fn leave(room: &str, nick: &str) -> Bytes {
            member_event("leave", room, nick)
        }

        fn nick(old: &str, new: &str) -> String {
            format!(r#"{{"event":"nick","old":{},"new":{}}}"#, js(old), js(new))
        }
    }

    /// Drains the client's channel into the WebSocket, a batch of messages
    /// per flush, until every sender is gone (then sends a close) or the
    /// client is killed.
    async fn ws_writer(
        mut sink: SplitSink<WebSocketStream<TcpStream>, Message>,
        mut rx: mpsc::Receiver<Bytes>,
        kill: CancellationToken,
    ) {
        loop {
            let first = tokio::select! {
                biased;
                () = kill.cancelled() => return,
                first = rx.recv() => first,
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < 64 {
                match rx.try_recv() {
                    Ok(more) => batch.push(more),
                    Err(_) => break,
                }
            }
            let written = tokio::select! {
                biased;
                () = kill.cancelled() => return,
                written = async {
                    for event in batch {
                        let Ok(text) = Utf8Bytes::try_from(event) else { continue };
                        sink.feed(Message::Text(text)).await?;
                    }
                    sink.flush().await
                } => written,
            };
            if written.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    }
}
