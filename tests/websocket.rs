//! The lobby over WebSocket (`--http-bind`, `GET /ws`): every command and
//! event of SPEC §5 as one text message each, WebSocket, JSON-TCP and text
//! clients in one room, limits (503 over the connection limit, origins),
//! close codes for what is refused, heartbeat pings, slow consumers and the
//! shutdown close frame. A real client (tokio-tungstenite) against the real
//! binary on port 0.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::time::Duration;

use common::{Client, READ_TIMEOUT, Server};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A WebSocket client of the lobby.
struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    id: u64,
    nick: String,
}

impl WsClient {
    /// Connects and reads the welcome.
    async fn connect(http: SocketAddr) -> WsClient {
        let url = format!("ws://{http}/ws");
        let (stream, response) =
            tokio::time::timeout(READ_TIMEOUT, tokio_tungstenite::connect_async(url))
                .await
                .expect("upgrade within the timeout")
                .expect("upgrade");
        assert_eq!(response.status(), 101);
        Self::welcomed(stream).await
    }

    async fn welcomed(stream: WebSocketStream<MaybeTlsStream<TcpStream>>) -> WsClient {
        let mut client = WsClient {
            stream,
            id: 0,
            nick: String::new(),
        };
        let welcome = client.event().await;
        assert_eq!(welcome["event"], "welcome", "{welcome}");
        client.id = welcome["id"].as_u64().expect("numeric id");
        client.nick = welcome["nick"].as_str().expect("nick").to_owned();
        assert_eq!(client.nick, format!("guest{}", client.id));
        client
    }

    async fn named(http: SocketAddr, nick: &str) -> WsClient {
        let mut client = WsClient::connect(http).await;
        client.send(json!({"cmd": "nick", "name": nick})).await;
        client
            .expect(json!({"event": "nick", "old": client.nick, "new": nick}))
            .await;
        client.nick = nick.to_owned();
        client
    }

    async fn send(&mut self, command: Value) {
        self.send_text(&command.to_string()).await;
    }

    async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("send a message");
    }

    /// The next message that is not a ping or pong.
    async fn message(&mut self) -> Message {
        loop {
            let next = tokio::time::timeout(READ_TIMEOUT, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("nothing within {READ_TIMEOUT:?}"));
            match next {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(message)) => return message,
                Some(Err(error)) => panic!("read failed: {error}"),
                None => panic!("connection ended while waiting for a message"),
            }
        }
    }

    /// The next event, parsed: one text message, no trailing newline.
    async fn event(&mut self) -> Value {
        match self.message().await {
            Message::Text(text) => {
                assert!(!text.ends_with('\n'), "no newline in a message: {text:?}");
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
            }
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    async fn expect(&mut self, expected: Value) {
        assert_eq!(self.event().await, expected);
    }

    async fn expect_error(&mut self, code: &str) {
        let event = self.event().await;
        assert_eq!(event["event"], "error", "{event}");
        assert_eq!(event["code"], code, "{event}");
        assert!(event["message"].is_string(), "{event}");
    }

    /// A ping round trip comes back next: nothing else is pending.
    async fn expect_nothing_pending(&mut self) {
        self.send(json!({"cmd": "ping", "token": "probe"})).await;
        self.expect(json!({"event": "pong", "token": "probe"}))
            .await;
    }

    /// The server's close frame, next; then the connection ends.
    async fn expect_close(&mut self, code: u16, reason: &str) {
        match self.message().await {
            Message::Close(Some(CloseFrame {
                code: got,
                reason: text,
            })) => {
                assert_eq!((u16::from(got), text.as_str()), (code, reason));
            }
            other => panic!("expected close {code} {reason:?}, got {other:?}"),
        }
        let end = tokio::time::timeout(READ_TIMEOUT, self.stream.next())
            .await
            .expect("the connection ends after the close");
        assert!(
            matches!(end, None | Some(Err(WsError::ConnectionClosed))),
            "nothing after the close: {end:?}"
        );
    }
}

/// The lobby with HTTP and JSON listeners: the server, its HTTP address and
/// its JSON address.
fn lobby(extra: &[&str]) -> (Server, SocketAddr, SocketAddr) {
    let mut args = vec!["--http-bind", "127.0.0.1:0", "--json-bind", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    let http = server.listener_addr("http");
    let json = server.listener_addr("json");
    (server, http, json)
}

/// Sends one HTTP/1.1 request on a fresh connection.
fn http_request(http: SocketAddr, path: &str, headers: &[(&str, &str)]) -> StdTcpStream {
    let mut stream = StdTcpStream::connect(http).expect("connect to HTTP");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {http}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream
}

/// One HTTP/1.1 request on a fresh connection; the whole response.
fn http_get(http: SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    let close = [&[("Connection", "close")], headers].concat();
    let mut stream = http_request(http, path, &close);
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("a whole response");
    response
}

/// The status line of the response to an upgrade request (the connection
/// may stay open after it).
fn upgrade_status(http: SocketAddr, headers: &[(&str, &str)]) -> String {
    let mut stream = http_request(http, "/ws", headers);
    let head = common::read_through(&mut stream, b"\r\n");
    String::from_utf8_lossy(&head).trim_end().to_owned()
}

#[tokio::test]
async fn every_command_has_its_event_over_websocket() {
    let (_server, http, _) = lobby(&[]);
    let mut ann = WsClient::named(http, "ann").await;
    let mut bob = WsClient::named(http, "bob").await;
    assert_ne!(ann.id, bob.id);

    ann.send(json!({"cmd": "join", "room": "lobby"})).await;
    ann.expect(json!({"event": "join", "room": "lobby", "nick": "ann"}))
        .await;
    ann.expect(json!({"event": "who", "room": "lobby", "nicks": ["ann"]}))
        .await;
    bob.send(json!({"cmd": "join", "room": "lobby", "extra": [1, 2]}))
        .await;
    bob.expect(json!({"event": "join", "room": "lobby", "nick": "bob"}))
        .await;
    bob.expect(json!({"event": "who", "room": "lobby", "nicks": ["ann", "bob"]}))
        .await;
    ann.expect(json!({"event": "join", "room": "lobby", "nick": "bob"}))
        .await;

    bob.send(json!({"cmd": "say", "text": "hi ann"})).await;
    for client in [&mut ann, &mut bob] {
        client
            .expect(json!({"event": "msg", "room": "lobby", "nick": "bob", "text": "hi ann"}))
            .await;
    }
    ann.send(json!({"cmd": "msg", "to": "BOB", "text": "psst"}))
        .await;
    for client in [&mut bob, &mut ann] {
        client
            .expect(json!({"event": "privmsg", "from": "ann", "to": "bob", "text": "psst"}))
            .await;
    }
    ann.send(json!({"cmd": "rooms"})).await;
    ann.expect(json!({"event": "rooms", "rooms": {"lobby": 2}}))
        .await;
    ann.send(json!({"cmd": "who"})).await;
    ann.expect(json!({"event": "who", "room": "lobby", "nicks": ["ann", "bob"]}))
        .await;
    ann.send(json!({"cmd": "who", "room": "nowhere"})).await;
    ann.expect(json!({"event": "who", "room": "nowhere", "nicks": []}))
        .await;
    ann.send(json!({"cmd": "ping"})).await;
    ann.expect(json!({"event": "pong"})).await;
    ann.send(json!({"cmd": "pong", "token": "1"})).await;
    ann.expect_nothing_pending().await;
    bob.send(json!({"cmd": "nick", "name": "bobby"})).await;
    for client in [&mut ann, &mut bob] {
        client
            .expect(json!({"event": "nick", "old": "bob", "new": "bobby"}))
            .await;
    }
    bob.send(json!({"cmd": "leave"})).await;
    for client in [&mut ann, &mut bob] {
        client
            .expect(json!({"event": "leave", "room": "lobby", "nick": "bobby"}))
            .await;
    }
    bob.send(json!({"cmd": "join", "room": "lobby"})).await;
    bob.expect(json!({"event": "join", "room": "lobby", "nick": "bobby"}))
        .await;
    bob.expect(json!({"event": "who", "room": "lobby", "nicks": ["ann", "bobby"]}))
        .await;
    ann.expect(json!({"event": "join", "room": "lobby", "nick": "bobby"}))
        .await;
    bob.send(json!({"cmd": "quit", "reason": "dinner"})).await;
    bob.expect(json!({"event": "bye"})).await;
    bob.expect_close(1000, "quit").await;
    ann.expect(json!({"event": "quit", "room": "lobby", "nick": "bobby", "reason": "quit"}))
        .await;
    ann.send(json!({"cmd": "rooms"})).await;
    ann.expect(json!({"event": "rooms", "rooms": {"lobby": 1}}))
        .await;
}

#[tokio::test]
async fn bad_messages_cost_that_message_only() {
    let (_server, http, _) = lobby(&["--max-line", "64", "--max-msgs-per-sec", "40"]);
    let mut ann = WsClient::named(http, "ann").await;
    for bad in [
        "{not json",
        r#"{"cmd":"join"}"#,
        r#"{"cmd":"dance"}"#,
        r#"{"cmd":"join","room":7}"#,
        r#"{"cmd":"say","text":""}"#,
        r#"["cmd","say"]"#,
    ] {
        ann.send_text(bad).await;
        ann.expect_error("bad-args").await;
    }
    ann.send(json!({"cmd": "say", "text": "\u{1b}[31mred"}))
        .await;
    ann.expect_error("bad-encoding").await;
    ann.send(json!({"cmd": "nick", "name": "no spaces allowed"}))
        .await;
    ann.expect_error("bad-name").await;
    ann.send(json!({"cmd": "say", "text": "outside"})).await;
    ann.expect_error("not-in-room").await;
    ann.expect_nothing_pending().await;
}

#[tokio::test]
async fn over_the_rate_limit_a_message_is_dropped_with_an_error() {
    let (_server, http, _) = lobby(&["--max-msgs-per-sec", "3"]);
    let mut ann = WsClient::connect(http).await;
    for token in ["1", "2", "3", "4"] {
        ann.send(json!({"cmd": "ping", "token": token})).await;
    }
    for token in ["1", "2", "3"] {
        ann.expect(json!({"event": "pong", "token": token})).await;
    }
    ann.expect_error("rate-limited").await;
}

#[tokio::test]
async fn binary_and_oversized_messages_are_refused_with_a_close_code() {
    let (server, http, _) = lobby(&["--max-line", "64"]);
    let mut watcher = server.named("watcher");
    watcher.join_alone("hall");

    let mut binary = WsClient::named(http, "bin").await;
    binary.send(json!({"cmd": "join", "room": "hall"})).await;
    binary
        .expect(json!({"event": "join", "room": "hall", "nick": "bin"}))
        .await;
    binary.event().await; // who
    watcher.expect("JOIN hall bin");
    binary
        .stream
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send binary");
    binary
        .expect_close(1003, "binary messages are not supported")
        .await;
    watcher.expect("QUIT hall bin error");

    let mut big = WsClient::connect(http).await;
    big.send(json!({"cmd": "say", "text": "x".repeat(100)}))
        .await;
    big.expect_close(1009, "message too big").await;
    watcher.expect_nothing_pending();
}

#[tokio::test]
async fn websocket_json_and_text_clients_share_a_room() {
    let (server, http, json_addr) = lobby(&[]);
    let mut tex = server.named("tex");
    tex.join_alone("hall");

    let mut jay = Client::connect(json_addr);
    let welcome: Value = serde_json::from_str(&jay.line()).unwrap();
    jay.send(r#"{"cmd":"nick","name":"jay"}"#);
    assert_eq!(
        serde_json::from_str::<Value>(&jay.line()).unwrap(),
        json!({"event": "nick", "old": welcome["nick"], "new": "jay"})
    );
    jay.send(r#"{"cmd":"join","room":"hall"}"#);
    jay.line();
    jay.line();
    tex.expect("JOIN hall jay");

    let mut web = WsClient::named(http, "web").await;
    assert!(web.id != tex.id && web.id != welcome["id"].as_u64().unwrap());
    web.send(json!({"cmd": "join", "room": "hall"})).await;
    web.expect(json!({"event": "join", "room": "hall", "nick": "web"}))
        .await;
    web.expect(json!({"event": "who", "room": "hall", "nicks": ["tex", "jay", "web"]}))
        .await;
    tex.expect("JOIN hall web");
    assert_eq!(
        serde_json::from_str::<Value>(&jay.line()).unwrap(),
        json!({"event": "join", "room": "hall", "nick": "web"})
    );

    web.send(json!({"cmd": "say", "text": "hello all"})).await;
    web.expect(json!({"event": "msg", "room": "hall", "nick": "web", "text": "hello all"}))
        .await;
    tex.expect("MSG hall web hello all");
    assert_eq!(
        serde_json::from_str::<Value>(&jay.line()).unwrap(),
        json!({"event": "msg", "room": "hall", "nick": "web", "text": "hello all"})
    );
    tex.send("hi web");
    tex.expect("MSG hall tex hi web");
    jay.line();
    web.expect(json!({"event": "msg", "room": "hall", "nick": "tex", "text": "hi web"}))
        .await;
    tex.send("/msg web psst");
    tex.expect("PRIVMSG tex web psst");
    web.expect(json!({"event": "privmsg", "from": "tex", "to": "web", "text": "psst"}))
        .await;

    // A close frame from the peer is a `closed` session; the server answers
    // it with its own close.
    web.stream
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "tab closed".into(),
        })))
        .await
        .expect("send close");
    web.expect_close(1001, "tab closed").await;
    tex.expect("QUIT hall web closed");

    // A connection that just ends, with no close frame, is a reset.
    let mut gone = WsClient::named(http, "gone").await;
    gone.send(json!({"cmd": "join", "room": "hall"})).await;
    gone.event().await;
    gone.event().await;
    tex.expect("JOIN hall gone");
    drop(gone);
    tex.expect("QUIT hall gone reset");
    tex.expect_nothing_pending();
}

#[tokio::test]
async fn over_the_connection_limit_the_upgrade_gets_503() {
    let (server, http, _) = lobby(&["--max-connections", "1"]);
    let holder = server.client();
    let url = format!("ws://{http}/ws").into_client_request().unwrap();
    match tokio_tungstenite::connect_async(url).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!(
            "expected HTTP 503, got {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    let metrics = http_get(http, "/metrics", &[]);
    assert!(
        metrics.contains("switchboard_refused_connections_total{cause=\"limit\"} 1"),
        "{metrics}"
    );
    holder.reset();
    // The slot is free once the holder's session is gone: bounded retries.
    let mut upgraded = None;
    for _ in 0..100 {
        let url = format!("ws://{http}/ws");
        if let Ok((stream, _)) = tokio_tungstenite::connect_async(url).await {
            upgraded = Some(WsClient::welcomed(stream).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(upgraded.is_some(), "the slot was never released");
}

#[tokio::test]
async fn origins_are_checked_on_upgrade() {
    let (_server, http, _) = lobby(&[]);
    let upgrade = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let evil = [&upgrade[..], &[("Origin", "http://evil.example")]].concat();
    assert_eq!(upgrade_status(http, &evil), "HTTP/1.1 403 Forbidden");
    let own = format!("http://{http}");
    let same = [&upgrade[..], &[("Origin", own.as_str())]].concat();
    assert_eq!(
        upgrade_status(http, &same),
        "HTTP/1.1 101 Switching Protocols"
    );
    assert_eq!(
        upgrade_status(http, &upgrade),
        "HTTP/1.1 101 Switching Protocols"
    );

    let listed = [
        "--allowed-origin",
        "http://game.example",
        "https://b.example",
    ];
    let (_server, http, _) = lobby(&listed);
    let game = [&upgrade[..], &[("Origin", "http://game.example")]].concat();
    assert_eq!(
        upgrade_status(http, &game),
        "HTTP/1.1 101 Switching Protocols"
    );
    let own = format!("http://{http}");
    let same = [&upgrade[..], &[("Origin", own.as_str())]].concat();
    assert_eq!(upgrade_status(http, &same), "HTTP/1.1 403 Forbidden");
}

/// A WebSocket upgrade request for `/ws` with `Host: host` and the `extra`
/// header lines (each ending in `\r\n`).
fn upgrade_request(host: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\n{extra}Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// The status line of the answer to an upgrade request sent with `Host:
/// host` and `Origin: origin`, as a browser sends them for a page of
/// `origin`.
fn upgrade_status_as(http: SocketAddr, host: &str, origin: &str) -> String {
    let mut stream = StdTcpStream::connect(http).expect("connect to HTTP");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let request = upgrade_request(host, &format!("Origin: {origin}\r\n"));
    stream.write_all(&request).unwrap();
    let head = common::read_through(&mut stream, b"\r\n");
    String::from_utf8_lossy(&head).trim_end().to_owned()
}

#[tokio::test]
async fn a_dns_rebinding_page_cannot_open_the_websocket() {
    // A page of http://evil.example:PORT whose name the attacker now
    // resolves to 127.0.0.1: its Origin names the same host as its Host.
    let (_server, http, _) = lobby(&[]);
    let evil = format!("evil.example:{}", http.port());
    assert_eq!(
        upgrade_status_as(http, &evil, &format!("http://{evil}")),
        "HTTP/1.1 403 Forbidden"
    );
    // A host no DNS answer can stand for is still its own origin.
    let localhost = format!("localhost:{}", http.port());
    assert_eq!(
        upgrade_status_as(http, &localhost, &format!("http://{localhost}")),
        "HTTP/1.1 101 Switching Protocols"
    );
    // A name the operator lists is allowed.
    let (_server, http, _) = lobby(&["--allowed-origin", "http://game.example:8080"]);
    assert_eq!(
        upgrade_status_as(http, "game.example:8080", "http://game.example:8080"),
        "HTTP/1.1 101 Switching Protocols"
    );
}

#[tokio::test]
async fn shutdown_sends_the_event_then_close_1001() {
    let (mut server, http, _) = lobby(&[]);
    let mut ann = WsClient::named(http, "ann").await;
    assert!(http_get(http, "/healthz", &[]).starts_with("HTTP/1.1 200"));
    server.signal(libc::SIGTERM);
    ann.expect(json!({"event": "shutdown"})).await;
    ann.expect_close(1001, "shutdown").await;
    assert!(server.wait_exit(READ_TIMEOUT).success());
}

/// The next line that is not the server's `PING`.
fn line_past_pings(client: &mut Client) -> String {
    loop {
        let line = client.line();
        if !line.starts_with("PING ") {
            return line;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_ping_ends_the_session_as_idle_timeout() {
    let (server, http, _) = lobby(&["--heartbeat", "1"]);
    let mut watcher = server.named("watcher");
    watcher.join_alone("hall");

    // A client that keeps reading answers pings (tungstenite does) and stays.
    let mut live = WsClient::named(http, "live").await;
    let live = tokio::spawn(async move {
        for round in 0..12 {
            live.send(json!({"cmd": "ping", "token": round.to_string()}))
                .await;
            live.expect(json!({"event": "pong", "token": round.to_string()}))
                .await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        live
    });

    // A raw client that never answers.
    let mut mute = StdTcpStream::connect(http).unwrap();
    mute.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {http}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    mute.write_all(request.as_bytes()).unwrap();
    // Join through a masked text frame.
    let join = br#"{"cmd":"join","room":"hall"}"#;
    let mut frame = vec![0x81, 0x80 | join.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(join);
    mute.write_all(&frame).unwrap();
    let guest = line_past_pings(&mut watcher);
    assert!(guest.starts_with("JOIN hall guest"), "{guest}");
    let nick = guest.trim_start_matches("JOIN hall ").to_owned();

    // Everything the server sends, until it closes: a ping, then a close
    // 1008 idle-timeout.
    let mut bytes = Vec::new();
    mute.read_to_end(&mut bytes).expect("the server closes");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    let frames = &bytes[text.find("\r\n\r\n").unwrap() + 4..];
    assert!(
        frames.windows(2).any(|w| w == [0x89, 0x00]),
        "a ping: {frames:?}"
    );
    let close = frames
        .windows(2)
        .rposition(|w| w[0] == 0x88)
        .expect("a close frame");
    let payload = &frames[close + 2..];
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
    assert!(payload.ends_with(b"idle-timeout"), "{payload:?}");
    assert_eq!(
        line_past_pings(&mut watcher),
        format!("QUIT hall {nick} idle-timeout")
    );
    let mut live = live.await.expect("the live client kept going");
    live.expect_nothing_pending().await;
}

/// A WebSocket client with a 4 KiB receive buffer, set before connecting,
/// so what the server owes it queues up soon once it stops reading.
async fn small_window_client(http: SocketAddr) -> WsClient {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&http.into()).unwrap();
    let std_stream: StdTcpStream = socket.into();
    std_stream.set_nonblocking(true).unwrap();
    let stream = TcpStream::from_std(std_stream).unwrap();
    let url = format!("ws://{http}/ws");
    let (stream, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .expect("upgrade");
    WsClient::welcomed(stream).await
}

#[tokio::test]
async fn a_websocket_that_stops_reading_is_a_slow_consumer() {
    let (server, http, _) = lobby(&["--outbound-queue", "32"]);
    let mut flooder = server.named("flooder");
    flooder.join_alone("den");

    // A small receive buffer, set before connecting, so the server's queue
    // for this member fills soon.
    let mut sloth = small_window_client(http).await;
    sloth.send(json!({"cmd": "nick", "name": "sloth"})).await;
    sloth.event().await;
    sloth.send(json!({"cmd": "join", "room": "den"})).await;
    sloth.event().await;
    sloth.event().await;
    flooder.expect("JOIN den sloth");

    // Flood until the room is told the sloth is gone (bounded).
    let line = "x".repeat(1000);
    let mut quit = false;
    for _ in 0..20_000 {
        flooder.send(&line);
        let got = flooder.line();
        if got == "QUIT den sloth slow-consumer" {
            quit = true;
            break;
        }
        assert_eq!(got, format!("MSG den flooder {line}"));
    }
    assert!(quit, "the sloth was never dropped");
    let metrics = http_get(http, "/metrics", &[]);
    assert!(
        metrics.contains("switchboard_slow_consumer_drops_total 1"),
        "{metrics}"
    );
    // Its connection is closed: what it still holds, then the end (bounded).
    let mut frames = 0;
    loop {
        let next = tokio::time::timeout(READ_TIMEOUT, sloth.stream.next())
            .await
            .expect("the sloth's connection ends");
        match next {
            Some(Ok(_)) if frames < 100_000 => frames += 1,
            Some(Ok(_)) => panic!("the sloth's connection never ends"),
            None | Some(Err(_)) => break,
        }
    }
}

#[tokio::test]
async fn the_lobby_page_and_health_are_served() {
    let (_server, http, _) = lobby(&[]);
    let page = http_get(http, "/", &[]);
    assert!(page.starts_with("HTTP/1.1 200"), "{page:.200}");
    assert!(page.contains("text/html"), "{page:.300}");
    assert!(page.contains("<title>switchboard lobby</title>"));
    // The page learns the limit on a message, to refuse a longer line itself.
    assert!(
        page.contains("<body data-max-line=\"4096\">"),
        "{page:.2000}"
    );
    assert!(!page.contains("src=\"http"), "no external assets");
    let health = http_get(http, "/healthz", &[]);
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    let missing = http_get(http, "/nothing", &[]);
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    // Load balancers often check with HEAD.
    let mut stream = StdTcpStream::connect(http).expect("connect to HTTP");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let head = format!("HEAD /healthz HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("a whole response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn healthz_reports_draining_while_a_shutdown_waits_for_a_slow_peer() {
    let (mut server, http, _) = lobby(&[
        "--outbound-queue",
        "100000",
        "--outbound-bytes",
        "100000000",
    ]);
    let mut flooder = server.named("flooder");
    flooder.join_alone("den");

    // A member that never reads, with a small window: what it is owed stays
    // queued, so the shutdown waits (up to its flush timeout) for it.
    let mut sloth = small_window_client(http).await;
    sloth.send(json!({"cmd": "join", "room": "den"})).await;
    flooder.expect_prefix("JOIN den guest");
    let line = "x".repeat(1000);
    for _ in 0..8000 {
        flooder.send(&line);
        flooder.expect(&format!("MSG den flooder {line}"));
    }
    assert!(http_get(http, "/healthz", &[]).starts_with("HTTP/1.1 200"));
    server.signal(libc::SIGTERM);
    flooder.expect("SHUTDOWN");
    let health = http_get(http, "/healthz", &[]);
    assert!(
        health.starts_with("HTTP/1.1 503") && health.ends_with("draining\n"),
        "{health}"
    );
    let upgrade = tokio_tungstenite::connect_async(format!("ws://{http}/ws")).await;
    match upgrade {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!(
            "expected HTTP 503, got {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    assert!(server.wait_exit(READ_TIMEOUT).success());
    drop(sloth);
}

/// Upgrades a raw connection to a WebSocket and reads past the response
/// head, so the test can write frames byte by byte.
fn raw_websocket(http: SocketAddr) -> StdTcpStream {
    let upgrade = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    let mut stream = http_request(http, "/ws", &upgrade);
    let head = common::read_through(&mut stream, b"\r\n\r\n");
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    stream
}

#[tokio::test]
async fn a_frame_header_declaring_a_gigabyte_is_refused_before_its_payload() {
    let (server, http, _json) = lobby(&["--max-line", "100"]);
    let baseline = common::rss_bytes(server.pid());
    let mut stream = raw_websocket(http);
    // A masked text frame declaring 1 GiB, then 8 MiB of its payload: the
    // server must refuse at the header and buffer none of it.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend((1u64 << 30).to_be_bytes());
    header.extend([1, 2, 3, 4]);
    stream.write_all(&header).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..128 {
        if stream.write_all(&chunk).is_err() {
            break; // refused and closed: what this test waits for
        }
    }
    // Skip the welcome event; the close frame follows.
    let mut frames = Vec::new();
    let _ = stream.read_to_end(&mut frames);
    let close = frames
        .windows(4)
        .position(|w| w[0] == 0x88 && w[2..4] == 1009u16.to_be_bytes());
    assert!(
        close.is_some(),
        "no close 1009 in {:?}",
        String::from_utf8_lossy(&frames)
    );
    let growth = common::rss_bytes(server.pid()).saturating_sub(baseline);
    assert!(
        growth < 4 << 20,
        "the server buffered {growth} bytes of the frame"
    );
}

/// Reads one unmasked, unfragmented server frame: its opcode and payload.
fn read_frame(stream: &mut StdTcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).expect("a frame header");
    assert_eq!(head[0] & 0x80, 0x80, "a whole frame (FIN set)");
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            stream.read_exact(&mut n).unwrap();
            u64::from(u16::from_be_bytes(n))
        }
        127 => {
            let mut n = [0u8; 8];
            stream.read_exact(&mut n).unwrap();
            u64::from_be_bytes(n)
        }
        short => u64::from(short),
    };
    let mut payload = vec![0u8; usize::try_from(len).unwrap()];
    stream
        .read_exact(&mut payload)
        .expect("the frame's payload");
    (head[0] & 0x0f, payload)
}

/// A masked text frame, as a client sends it (RFC 6455 §5.3).
fn client_text_frame(text: &str) -> Vec<u8> {
    let mask = [7u8, 1, 8, 3];
    assert!(text.len() < 126);
    let mut frame = vec![0x81, 0x80 | text.len() as u8];
    frame.extend(mask);
    frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[tokio::test]
async fn frames_sent_with_the_upgrade_request_are_answered_after_the_101() {
    let (_server, http, _) = lobby(&[]);
    let mut stream = StdTcpStream::connect(http).expect("connect to HTTP");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    // The request and a command in one write: the server may read both at
    // once, and must still send the whole 101 before any frame.
    let mut request = upgrade_request(&http.to_string(), "");
    request.extend(client_text_frame(r#"{"cmd":"ping","token":"early"}"#));
    // A WebSocket ping too: its pong is a control frame, written at once.
    request.extend([0x89, 0x80 | 2, 0, 0, 0, 0, b'h', b'i']);
    stream.write_all(&request).unwrap();
    let head = common::read_through(&mut stream, b"\r\n\r\n");
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    // The pong may come before or after the events; the events keep
    // their order.
    let mut texts = Vec::new();
    let mut pongs = Vec::new();
    while texts.len() < 2 || pongs.is_empty() {
        match read_frame(&mut stream) {
            (0x1, text) => texts.push(String::from_utf8(text).expect("UTF-8")),
            (0xA, payload) => pongs.push(payload),
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert_eq!(pongs, [b"hi".to_vec()]);
    let welcome: Value = serde_json::from_str(&texts[0]).expect("JSON");
    assert_eq!(welcome["event"], "welcome", "{welcome}");
    assert_eq!(texts[1], r#"{"event":"pong","token":"early"}"#);
}

#[tokio::test]
async fn a_member_that_reads_late_gets_every_message_whole_and_in_order() {
    // Lines long enough for 16- and 64-bit frame lengths; all of them stay
    // under the outbound bound, so the member is behind but not dropped.
    let (server, http, _) = lobby(&["--max-line", "100000"]);
    let mut talker = server.named("talker");
    talker.join_alone("den");
    let mut late = small_window_client(http).await;
    late.send(json!({"cmd": "join", "room": "den"})).await;
    late.event().await;
    late.event().await;
    talker.expect(&format!("JOIN den {}", late.nick));

    // The late member reads nothing until every line has been broadcast
    // (the talker sees its own lines come back).
    let lines: Vec<String> = (0..81)
        .map(|i| {
            let len = if i == 40 { 70_000 } else { 3_000 };
            format!("{i:03}{}", "x".repeat(len))
        })
        .collect();
    for line in &lines {
        talker.send(line);
        talker.expect(&format!("MSG den talker {line}"));
    }
    for line in &lines {
        late.expect(json!({"event": "msg", "room": "den", "nick": "talker", "text": line}))
            .await;
    }
    late.expect_nothing_pending().await;
}

#[tokio::test]
async fn a_peer_that_pings_without_reading_is_a_slow_consumer() {
    let (server, http, _) = lobby(&["--outbound-queue", "32"]);
    let mut observer = server.named("observer");
    observer.join_alone("den");
    let mut pinger = small_window_client(http).await;
    pinger.send(json!({"cmd": "join", "room": "den"})).await;
    pinger.event().await;
    pinger.event().await;
    observer.expect(&format!("JOIN den {}", pinger.nick));

    // Pings, and never a read: every pong is owed, so the bound is met.
    // Bounded: 25 MB of pongs, far more than the kernel's send buffer
    // (which grows up to 4 MiB on its own) holds.
    let payload = bytes::Bytes::from(vec![b'p'; 125]);
    for _ in 0..200_000 {
        let ping = Message::Ping(payload.clone());
        if pinger.stream.send(ping).await.is_err() {
            break; // dropped: what this test waits for
        }
    }
    observer.expect(&format!("QUIT den {} slow-consumer", pinger.nick));
}

#[tokio::test]
async fn commands_pipelined_with_the_upgrade_are_answered_even_with_a_small_bound() {
    // The replies wait for the 101 to be written, not for the peer: they
    // are not held against the peer's bound.
    let (_server, http, _) = lobby(&["--outbound-queue", "4"]);
    let mut stream = StdTcpStream::connect(http).expect("connect to HTTP");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut request = upgrade_request(&http.to_string(), "");
    for k in 0..12 {
        request.extend(client_text_frame(&format!(
            r#"{{"cmd":"ping","token":"t{k}"}}"#
        )));
    }
    stream.write_all(&request).unwrap();
    let head = common::read_through(&mut stream, b"\r\n\r\n");
    assert!(head.starts_with(b"HTTP/1.1 101 "), "{head:?}");
    let (_, welcome) = read_frame(&mut stream);
    assert!(welcome.starts_with(br#"{"event":"welcome""#), "{welcome:?}");
    for k in 0..12 {
        let (opcode, pong) = read_frame(&mut stream);
        assert_eq!(opcode, 1, "a text frame");
        assert_eq!(
            String::from_utf8_lossy(&pong),
            format!(r#"{{"event":"pong","token":"t{k}"}}"#)
        );
    }
}
