//! Connections to `--http-bind` are bounded per address even when they never
//! upgrade to a WebSocket: past the bound a connection is answered `503` and
//! closed, other addresses are served as before, and a closed connection's
//! slot is free again. A WebSocket session does not count: the session
//! limits count it.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{READ_TIMEOUT, Server};
use futures::StreamExt;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio_tungstenite::tungstenite::Message;

/// The plain HTTP connections one address may hold with `--max-per-ip 1`:
/// 8 × 1, what one player's browser may open, with one to spare.
const PER_ADDRESS: usize = 8;

const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const NEIGHBOUR: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// A TCP connection to `http` from the local address `from`.
fn connect_from(from: IpAddr, http: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("a socket");
    socket
        .bind(&SockAddr::from(SocketAddr::new(from, 0)))
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    socket
        .connect_timeout(&SockAddr::from(http), READ_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {http}: {e}"));
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
}

/// Sends `GET path` on `stream` (kept alive) with `headers`.
fn send_get(stream: &mut TcpStream, http: SocketAddr, path: &str, headers: &[(&str, &str)]) {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {http}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .expect("send a request");
}

/// One response read from a kept-alive connection: its head and its body
/// (by `Content-Length`).
fn response(stream: &mut TcpStream) -> (String, String) {
    let head = common::read_through(stream, b"\r\n\r\n");
    let head = String::from_utf8(head).expect("an ASCII head");
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("no Content-Length in {head}"));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("the whole body");
    (head, String::from_utf8(body).expect("a text body"))
}

/// `GET path` on a kept-alive connection; the response head and body.
fn get(stream: &mut TcpStream, http: SocketAddr, path: &str) -> (String, String) {
    send_get(stream, http, path, &[]);
    response(stream)
}

/// Everything the server sends on `stream` until it ends it (a reset
/// after the response counts as an end).
fn until_closed(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the connection neither closed nor answered: {e} after {bytes:?}"),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A new connection from `from` asking for `/healthz`: whether it was
/// served (`200`) or refused (`503`, then closed).
fn try_healthz(from: IpAddr, http: SocketAddr) -> Result<TcpStream, String> {
    let mut stream = connect_from(from, http);
    send_get(&mut stream, http, "/healthz", &[]);
    let first = {
        let mut byte = [0u8; 12];
        match stream.read_exact(&mut byte) {
            Ok(()) => String::from_utf8_lossy(&byte).into_owned(),
            Err(e) => return Err(format!("closed without a response: {e}")),
        }
    };
    if first == "HTTP/1.1 200" {
        // The rest of the response, so the connection is idle again.
        common::read_through(&mut stream, b"ok\n");
        return Ok(stream);
    }
    Err(first + &until_closed(&mut stream))
}

/// Asserts a refusal: a whole `503` that says the connection closes.
#[track_caller]
fn assert_refused(refusal: Result<TcpStream, String>) {
    match refusal {
        Ok(_) => panic!("a connection past the bound was served"),
        Err(text) => {
            assert!(text.starts_with("HTTP/1.1 503 "), "{text:?}");
            assert!(text.contains("\r\nConnection: close\r\n"), "{text:?}");
            assert!(
                text.ends_with("\r\n\r\ntoo many connections, try again later\n"),
                "{text:?}"
            );
        }
    }
}

/// Asks for `/healthz` on every held connection: each is still open, and
/// none is near its keep-alive timeout when the bound is tested next.
#[track_caller]
fn touch(held: &mut [TcpStream], http: SocketAddr) {
    for stream in held {
        let (head, body) = get(stream, http, "/healthz");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, "ok\n");
    }
}

#[tokio::test]
async fn plain_http_connections_are_bounded_per_address() {
    let server = Server::start(&[
        "--http-bind",
        "127.0.0.1:0",
        "--max-connections",
        "1",
        "--max-per-ip",
        "1",
    ]);
    let http = server.listener_addr("http");

    // The one session allowed: a WebSocket, which gives its HTTP slot back
    // (the 8 plain connections below are all admitted beside it).
    let (mut websocket, upgraded) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
        .await
        .expect("the WebSocket upgrade");
    assert_eq!(upgraded.status(), 101);
    let welcome = tokio::time::timeout(READ_TIMEOUT, websocket.next())
        .await
        .expect("the welcome within the timeout");
    assert!(
        matches!(&welcome, Some(Ok(Message::Text(text))) if text.contains("\"welcome\"")),
        "{welcome:?}"
    );

    // An upgrade refused by the session limits: a 503, and its connection
    // ends (its payload is "until EOF", so it cannot carry another request).
    // From the other address, so the end of its connection need not be
    // awaited before the bound is filled.
    let mut refused_upgrade = connect_from(NEIGHBOUR, http);
    let upgrade = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    send_get(&mut refused_upgrade, http, "/ws", &upgrade);
    let refusal = until_closed(&mut refused_upgrade);
    assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal}");
    drop(refused_upgrade);
    // Plain keep-alive connections up to the bound.
    let mut held = Vec::new();
    while held.len() < PER_ADDRESS {
        held.push(try_healthz(HOME, http).expect("a connection within the bound"));
    }
    touch(&mut held, http);

    // One past the bound is refused...
    assert_refused(try_healthz(HOME, http));
    // ...while another address is served, metrics included (a session
    // refused at the limit does not stop a scrape).
    let mut neighbour = try_healthz(NEIGHBOUR, http).expect("another address is served");
    let (head, metrics) = get(&mut neighbour, http, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for line in [
        "switchboard_refused_connections_total{cause=\"http-limit\"} 1",
        "switchboard_refused_connections_total{cause=\"limit\"} 1",
        "switchboard_sessions{transport=\"ws\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    // The bound's fill: this address's 8 and the scrape's own connection
    // (and the refused upgrade's, if the server has not yet seen it end).
    let open: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_http_connections_open "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no open-connections gauge in\n{metrics}"));
    assert!(
        (PER_ADDRESS + 1..=PER_ADDRESS + 2).contains(&open),
        "{open} open"
    );

    // Two closed connections free two slots: bounded retries, since the
    // server learns of each end on its own time.
    held.truncate(held.len() - 2);
    let deadline = Instant::now() + READ_TIMEOUT;
    while held.len() < PER_ADDRESS {
        match try_healthz(HOME, http) {
            Ok(stream) => held.push(stream),
            Err(refusal) => {
                assert!(
                    Instant::now() < deadline,
                    "a freed slot was never admitted: {refusal:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    touch(&mut held, http);
    assert_refused(try_healthz(HOME, http));
}

/// The whole bound on plain HTTP connections (`MAX_HTTP_CONNECTIONS`), and
/// the most one address may hold of it.
const TOTAL: usize = 1024;
const MOST_PER_ADDRESS: usize = 64;

#[tokio::test]
async fn stalled_connections_filling_every_slot_cannot_shut_others_out() {
    // `--max-per-ip 1000` would allow 8000 per address: one address still
    // holds no more than its share of the total.
    let server = Server::start(&["--http-bind", "127.0.0.1:0", "--max-per-ip", "1000"]);
    let http = server.listener_addr("http");
    // Every slot filled from 16 addresses, each connection stalled in the
    // head of its second request: a request actix-http never times out.
    let mut stalled = Vec::new();
    for k in 0..TOTAL / MOST_PER_ADDRESS {
        let from = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 10, k as u8 + 1));
        for _ in 0..MOST_PER_ADDRESS {
            let mut stream = try_healthz(from, http)
                .unwrap_or_else(|refusal| panic!("slot {} refused: {refusal}", stalled.len()));
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x")
                .unwrap();
            stalled.push(stream);
        }
        if k == 0 {
            // One address holds no more than its share.
            assert_refused(try_healthz(from, http));
        }
    }

    // A newcomer is served once the oldest has been open for a second
    // (bounded retries; a refusal meanwhile is the bound at work).
    let newcomer = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 11, 1));
    let deadline = Instant::now() + READ_TIMEOUT;
    let served = loop {
        match try_healthz(newcomer, http) {
            Ok(stream) => break stream,
            Err(refusal) if Instant::now() < deadline => {
                assert!(refusal.starts_with("HTTP/1.1 503 "), "{refusal:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(refusal) => panic!("the newcomer was shut out: {refusal}"),
        }
    };
    drop(served);
    // The oldest stalled connection made room: the server closed it.
    assert_eq!(until_closed(&mut stalled[0]), "");
}
