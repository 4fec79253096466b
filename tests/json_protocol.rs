//! The JSON lobby protocol (SPEC §5) on `--json-bind`: every command and
//! event, its errors, and text and JSON clients sharing one room.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};

use common::{Client, READ_TIMEOUT, Server};
use serde_json::{Value, json};

/// A client speaking newline-delimited JSON.
struct JsonClient {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    id: u64,
    nick: String,
}

impl JsonClient {
    fn connect(addr: SocketAddr) -> JsonClient {
        let stream = TcpStream::connect(addr).expect("connect to the JSON port");
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut client = JsonClient {
            stream,
            reader,
            id: 0,
            nick: String::new(),
        };
        let welcome = client.event();
        assert_eq!(welcome["event"], "welcome", "{welcome}");
        client.id = welcome["id"].as_u64().expect("numeric id");
        client.nick = welcome["nick"].as_str().expect("nick").to_owned();
        assert_eq!(client.nick, format!("guest{}", client.id));
        client
    }

    fn send(&mut self, command: Value) {
        self.send_raw(format!("{command}\n").as_bytes());
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// The next event, parsed.
    #[track_caller]
    fn event(&mut self) -> Value {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("connection closed while waiting for an event"),
            Ok(_) => {}
            Err(e) => panic!("no event within {READ_TIMEOUT:?}: {e}"),
        }
        assert!(line.ends_with('\n'), "events end with a newline: {line:?}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
    }

    #[track_caller]
    fn expect(&mut self, expected: Value) {
        assert_eq!(self.event(), expected);
    }

    #[track_caller]
    fn expect_error(&mut self, code: &str) {
        let event = self.event();
        assert_eq!(event["event"], "error", "{event}");
        assert_eq!(event["code"], code, "{event}");
        assert!(event["message"].is_string(), "{event}");
    }

    /// A ping round trip must come back next: nothing else is pending.
    #[track_caller]
    fn expect_nothing_pending(&mut self) {
        self.send(json!({"cmd": "ping", "token": "probe"}));
        self.expect(json!({"event": "pong", "token": "probe"}));
    }

    fn named(addr: SocketAddr, nick: &str) -> JsonClient {
        let mut client = JsonClient::connect(addr);
        client.send(json!({"cmd": "nick", "name": nick}));
        client.expect(json!({"event": "nick", "old": client.nick, "new": nick}));
        client.nick = nick.to_owned();
        client
    }
}

/// Starts the lobby with a JSON listener; returns it and the JSON address.
fn lobby_with_json(extra: &[&str]) -> (Server, SocketAddr) {
    let mut args = vec!["--json-bind", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    let json_addr = server.listener_addr("json");
    (server, json_addr)
}

#[test]
fn every_command_has_its_event() {
    let (server, json_addr) = lobby_with_json(&[]);
    let mut ann = JsonClient::named(json_addr, "ann");
    let mut bob = JsonClient::named(json_addr, "bob");

    ann.send(json!({"cmd": "join", "room": "lobby"}));
    ann.expect(json!({"event": "join", "room": "lobby", "nick": "ann"}));
    ann.expect(json!({"event": "who", "room": "lobby", "nicks": ["ann"]}));
    bob.send(json!({"cmd": "join", "room": "lobby", "extra": [1, 2]}));
    bob.expect(json!({"event": "join", "room": "lobby", "nick": "bob"}));
    bob.expect(json!({"event": "who", "room": "lobby", "nicks": ["ann", "bob"]}));
    ann.expect(json!({"event": "join", "room": "lobby", "nick": "bob"}));

    bob.send(json!({"cmd": "say", "text": "hi ann"}));
    for client in [&mut ann, &mut bob] {
        client.expect(json!({"event": "msg", "room": "lobby", "nick": "bob", "text": "hi ann"}));
    }
    ann.send(json!({"cmd": "msg", "to": "BOB", "text": "psst"}));
    for client in [&mut bob, &mut ann] {
        client.expect(json!({"event": "privmsg", "from": "ann", "to": "bob", "text": "psst"}));
    }
    ann.send(json!({"cmd": "rooms"}));
    ann.expect(json!({"event": "rooms", "rooms": {"lobby": 2}}));
    ann.send(json!({"cmd": "who"}));
    ann.expect(json!({"event": "who", "room": "lobby", "nicks": ["ann", "bob"]}));
    ann.send(json!({"cmd": "who", "room": "nowhere"}));
    ann.expect(json!({"event": "who", "room": "nowhere", "nicks": []}));
    ann.send(json!({"cmd": "ping"}));
    ann.expect(json!({"event": "pong"}));
    ann.send(json!({"cmd": "pong", "token": "1"}));
    ann.expect_nothing_pending();
    bob.send(json!({"cmd": "nick", "name": "bobby"}));
    for client in [&mut ann, &mut bob] {
        client.expect(json!({"event": "nick", "old": "bob", "new": "bobby"}));
    }
    bob.send(json!({"cmd": "leave"}));
    for client in [&mut ann, &mut bob] {
        client.expect(json!({"event": "leave", "room": "lobby", "nick": "bobby"}));
    }
    bob.send(json!({"cmd": "quit", "reason": "dinner"}));
    bob.expect(json!({"event": "bye"}));
    ann.send(json!({"cmd": "rooms"}));
    ann.expect(json!({"event": "rooms", "rooms": {"lobby": 1}}));
    drop(server);
}

#[test]
fn bad_json_costs_one_line_only() {
    let (_server, json_addr) = lobby_with_json(&["--max-line", "64"]);
    let mut ann = JsonClient::named(json_addr, "ann");
    for bad in [
        &b"{not json"[..],
        br#"{"cmd":"join"}"#,
        br#"{"cmd":"dance"}"#,
        br#"{"cmd":"join","room":7}"#,
        br#"{"cmd":"say","text":""}"#,
        br#"["cmd","say"]"#,
    ] {
        ann.send_raw(&[bad, b"\n"].concat());
        ann.expect_error("bad-args");
    }
    ann.send(json!({"cmd": "say", "text": "\u{1b}[31mred"}));
    ann.expect_error("bad-encoding");
    ann.send_raw(b"\xff\xfe\n");
    ann.expect_error("bad-encoding");
    ann.send(json!({"cmd": "nick", "name": "no spaces allowed"}));
    ann.expect_error("bad-name");
    ann.send(json!({"cmd": "say", "text": "x".repeat(100)}));
    ann.expect_error("line-too-long");
    ann.send(json!({"cmd": "say", "text": "outside"}));
    ann.expect_error("not-in-room");
    ann.expect_nothing_pending();
}

#[test]
fn text_and_json_clients_share_a_room() {
    let (server, json_addr) = lobby_with_json(&[]);
    let mut text: Client = server.named("tex");
    let mut json_client = JsonClient::named(json_addr, "jay");
    assert_ne!(text.id, json_client.id, "ids are unique across listeners");

    text.join("hall");
    json_client.send(json!({"cmd": "join", "room": "hall"}));
    json_client.expect(json!({"event": "join", "room": "hall", "nick": "jay"}));
    json_client.expect(json!({"event": "who", "room": "hall", "nicks": ["tex", "jay"]}));
    text.expect("JOIN hall jay");

    text.send("hello json");
    text.expect("MSG hall tex hello json");
    json_client
        .expect(json!({"event": "msg", "room": "hall", "nick": "tex", "text": "hello json"}));
    json_client.send(json!({"cmd": "say", "text": "hello text"}));
    json_client
        .expect(json!({"event": "msg", "room": "hall", "nick": "jay", "text": "hello text"}));
    text.expect("MSG hall jay hello text");

    text.send("/quit");
    text.expect("BYE");
    json_client.expect(json!({"event": "quit", "room": "hall", "nick": "tex", "reason": "quit"}));
    drop(json_client);
}

#[test]
fn heartbeat_and_shutdown_reach_json_clients_as_events() {
    let (mut server, json_addr) = lobby_with_json(&["--heartbeat", "1"]);
    let mut ann = JsonClient::connect(json_addr);
    ann.expect(json!({"event": "ping", "token": "1"}));
    server.signal(libc::SIGTERM);
    ann.expect(json!({"event": "shutdown"}));
    let mut rest = String::new();
    let read = std::io::Read::read_to_string(&mut ann.reader, &mut rest).expect("EOF");
    assert_eq!((read, rest.as_str()), (0, ""), "nothing after shutdown");
    assert!(server.wait_exit(READ_TIMEOUT).success());
}
