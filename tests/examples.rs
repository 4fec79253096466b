//! The `echo` and `greeter` examples (SPEC §4) over real TCP: every byte they
//! write, when they close, and that the classic Python tutorial clients work
//! against them unchanged.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::time::Instant;

use common::{Client, READ_TIMEOUT, Server};
use serde_json::{Value, json};

/// What the classic echo tutorial's client sends: no newline.
const TUTORIAL_GREETING: &[u8] = b"Hello, server! This is client.";

/// Starts the example `name` on `127.0.0.1:0`.
fn example(name: &str) -> Server {
    example_with(name, &[])
}

/// Starts the example `name` on `127.0.0.1:0` with extra flags.
fn example_with(name: &str, args: &[&str]) -> Server {
    Server::start_example(name, args)
}

/// `payload` behind its 4-byte big-endian length.
fn length_prefixed(payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("small payload");
    [&length.to_be_bytes()[..], payload].concat()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
}

/// Reads until `len` bytes have arrived, the peer closes, or `READ_TIMEOUT`
/// has passed since the call; returns what arrived.
fn read_up_to(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut buf = vec![0; len];
    let mut filled = 0;
    while filled < len {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream
            .set_read_timeout(Some(left))
            .expect("set read timeout");
        match stream.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("read failed after {filled} of {len} bytes: {e}"),
        }
    }
    buf.truncate(filled);
    buf
}

/// Asserts that the next bytes from `stream` are exactly `expected`.
#[track_caller]
fn expect_bytes(stream: &mut TcpStream, expected: &[u8]) {
    let got = read_up_to(stream, expected.len());
    assert!(
        got == expected,
        "expected {:?}, got {:?}",
        String::from_utf8_lossy(expected),
        String::from_utf8_lossy(&got)
    );
}

/// Reads everything until the server closes; panics if it does not close
/// within `READ_TIMEOUT`.
fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("set read timeout");
    let mut rest = Vec::new();
    if let Err(e) = stream.read_to_end(&mut rest) {
        panic!(
            "no EOF within {READ_TIMEOUT:?}: {e} (got {:?})",
            String::from_utf8_lossy(&rest)
        );
    }
    rest
}

/// Runs a Python 3 client script with the server's host and port as its
/// arguments, and returns what it printed.
fn run_python(script: &str, addr: SocketAddr) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .output()
        .expect("python3 is installed");
    assert!(
        out.status.success(),
        "python client failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the client prints text")
}

// ---------------------------------------------------------------------------
// echo

#[test]
fn echo_returns_the_tutorial_greeting_unchanged_without_a_newline() {
    let server = example("echo");
    let mut client = connect(server.addr);
    client.write_all(TUTORIAL_GREETING).expect("send");
    expect_bytes(&mut client, TUTORIAL_GREETING);
    client.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_to_eof(&mut client), b"", "nothing beyond the echo");
}

#[test]
fn echo_returns_every_chunk_in_order() {
    let server = example("echo");
    let mut client = connect(server.addr);
    for chunk in [
        "one",
        "two\n",
        "three\r\n",
        "a longer chunk with spaces",
        "x",
    ] {
        client.write_all(chunk.as_bytes()).expect("send");
        expect_bytes(&mut client, chunk.as_bytes());
    }
}

#[test]
fn echo_returns_binary_bytes_unchanged() {
    let server = example("echo");
    let mut client = connect(server.addr);
    // Every byte value, NUL, CR, LF and invalid UTF-8 included, four times.
    let payload: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
    client.write_all(&payload).expect("send");
    let echoed = read_up_to(&mut client, payload.len());
    assert_eq!(echoed.len(), payload.len(), "short echo");
    assert!(echoed == payload, "echo differs from what was sent");
}

#[test]
fn echo_streams_a_large_payload_while_the_client_reads() {
    let server = example("echo");
    let mut client = connect(server.addr);
    let payload: Vec<u8> = (0..256 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let mut writer = client.try_clone().expect("clone socket");
    let to_send = payload.clone();
    let sender = std::thread::spawn(move || {
        writer.write_all(&to_send).expect("send");
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let echoed = read_to_eof(&mut client);
    sender.join().expect("sender thread");
    assert_eq!(echoed.len(), payload.len(), "short echo");
    assert!(echoed == payload, "echo differs from what was sent");
}

#[test]
fn echo_writes_what_it_owes_then_closes_after_the_client_half_closes() {
    let server = example("echo");
    let mut client = connect(server.addr);
    for chunk in [&b"first "[..], b"second ", b"third"] {
        client.write_all(chunk).expect("send");
    }
    client.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_to_eof(&mut client), b"first second third");
}

/// The client of the classic echo tutorial, plus a timeout so a broken
/// server fails the test instead of hanging it.
const PYTHON_ECHO_CLIENT: &str = r#"
import socket, sys
socket.setdefaulttimeout(10)

HOST, PORT = sys.argv[1], int(sys.argv[2])
with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.connect((HOST, PORT))
    s.sendall(b"Hello, server! This is client.")
    data = s.recv(1024)
print(f"Received {data!r}")
"#;

#[test]
fn python_tutorial_echo_client_works_unchanged() {
    let server = example("echo");
    let printed = run_python(PYTHON_ECHO_CLIENT, server.addr);
    assert_eq!(printed, "Received b'Hello, server! This is client.'\n");
}

// ---------------------------------------------------------------------------
// greeter

#[test]
fn echo_with_line_framing_returns_complete_lines_and_drops_a_partial_one() {
    let server = example_with("echo", &["--framing", "lines"]);
    let mut client = connect(server.addr);
    client.write_all(b"one\r\ntwo\nthr").expect("write");
    expect_bytes(&mut client, b"one\ntwo\n");
    client.write_all(b"ee\nfour").expect("write");
    expect_bytes(&mut client, b"three\n");
    client.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_to_eof(&mut client), b"", "the partial line is dropped");
}

#[test]
fn echo_with_length_framing_returns_each_frame_with_its_prefix() {
    let server = example_with("echo", &["--framing", "length"]);
    let mut client = connect(server.addr);
    let frames: Vec<Vec<u8>> = [&b"hello"[..], b"", &[0, 255, 10, 13], &[7; 3000]]
        .iter()
        .map(|payload| length_prefixed(payload))
        .collect();
    let wire = frames.concat();
    // Split in the middle of a prefix and of a payload: only whole frames
    // come back, so the first arrives once its last byte was sent…
    client.write_all(&wire[..2]).expect("write");
    client.write_all(&wire[2..7]).expect("write");
    client.write_all(&wire[7..frames[0].len()]).expect("write");
    expect_bytes(&mut client, &frames[0]);
    client.write_all(&wire[frames[0].len()..]).expect("write");
    expect_bytes(&mut client, &wire[frames[0].len()..]);
    // …and many frames in one write.
    client.write_all(&wire).expect("write");
    expect_bytes(&mut client, &wire);
    client
        .write_all(&length_prefixed(b"partial")[..6])
        .expect("write");
    client.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(
        read_to_eof(&mut client),
        b"",
        "the partial frame is dropped"
    );
}

#[test]
fn echo_closes_a_connection_that_declares_an_oversized_frame_and_serves_others() {
    let server = example_with("echo", &["--framing", "length", "--max-frame", "16"]);
    let mut other = connect(server.addr);
    let mut offender = connect(server.addr);
    offender.write_all(&17u32.to_be_bytes()).expect("write");
    offender
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("set read timeout");
    let mut rest = Vec::new();
    match offender.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "nothing is echoed: {rest:?}"),
        Err(e) => assert_eq!(
            e.kind(),
            ErrorKind::ConnectionReset,
            "closed, not timed out"
        ),
    }
    let within_limit = length_prefixed(&[1; 16]);
    other.write_all(&within_limit).expect("write");
    expect_bytes(&mut other, &within_limit);
}

#[test]
fn greeter_welcomes_greets_and_says_good_bye_on_exit() {
    let server = example("greeter");
    let mut client = connect(server.addr);
    expect_bytes(&mut client, b"Server: Welcome!\nServer: What's your name?");
    client.write_all(b"Ann").expect("send");
    expect_bytes(
        &mut client,
        b"Server: Hello Ann!\nServer: What's your name?",
    );
    client.write_all(b"exit").expect("send");
    assert_eq!(
        String::from_utf8_lossy(&read_to_eof(&mut client)),
        "Server: Good bye!\n",
        "the farewell, then EOF"
    );
}

/// Every read is one message for the whole session, not only while its
/// first read buffer lasts: forty names, about 600 bytes in all.
#[test]
fn greeter_greets_whole_names_for_a_whole_conversation() {
    let server = example("greeter");
    let mut client = connect(server.addr);
    expect_bytes(&mut client, b"Server: Welcome!\nServer: What's your name?");
    for i in 1..=40 {
        let name = format!("Guest number {i}");
        client.write_all(name.as_bytes()).expect("send");
        let greeting = format!("Server: Hello {name}!\nServer: What's your name?");
        expect_bytes(&mut client, greeting.as_bytes());
    }
}

#[test]
fn greeter_answers_what_it_owes_then_closes_after_the_client_half_closes() {
    let server = example("greeter");
    let mut client = connect(server.addr);
    expect_bytes(&mut client, b"Server: Welcome!\nServer: What's your name?");
    client.write_all(b"Bo").expect("send");
    client.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(
        String::from_utf8_lossy(&read_to_eof(&mut client)),
        "Server: Hello Bo!\nServer: What's your name?"
    );
}

/// The client of the classic greeting tutorial: names without newlines, a
/// short pause before each send, one `recv` per reply. It prints everything
/// it received, reading on to EOF after `exit`; the timeout only keeps a
/// broken server from hanging the test.
const PYTHON_GREETER_CLIENT: &str = r#"
import socket, sys, time
socket.setdefaulttimeout(10)

s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.connect((sys.argv[1], int(sys.argv[2])))
received = s.recv(1024)
for name in [b"Michael", b"Tracy", b"Sarah"]:
    time.sleep(0.2)
    s.send(name)
    received += s.recv(1024)
time.sleep(0.2)
s.send(b"exit")
while True:
    data = s.recv(1024)
    if not data:
        break
    received += data
s.close()
sys.stdout.write(received.decode())
"#;

#[test]
fn python_tutorial_greeter_client_works_unchanged() {
    let server = example("greeter");
    let transcript = run_python(PYTHON_GREETER_CLIENT, server.addr);
    assert_eq!(
        transcript,
        "Server: Welcome!\n\
         Server: What's your name?\
         Server: Hello Michael!\n\
         Server: What's your name?\
         Server: Hello Tracy!\n\
         Server: What's your name?\
         Server: Hello Sarah!\n\
         Server: What's your name?\
         Server: Good bye!\n"
    );
}

// ---------------------------------------------------------------------------
// udp_echo and udp_time

/// A UDP socket on loopback that waits at most `READ_TIMEOUT` for a reply.
fn udp_client() -> std::net::UdpSocket {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP client");
    socket
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("set read timeout");
    socket
}

#[test]
fn udp_echo_returns_every_datagram_unchanged_empty_and_largest_included() {
    let server = example("udp_echo");
    let client = udp_client();
    let largest = vec![0xA5; 65_507];
    for payload in [&b"hello, udp"[..], b"", &largest] {
        client.send_to(payload, server.addr).expect("send");
        let mut buf = vec![0; 70_000];
        let (len, from) = client
            .recv_from(&mut buf)
            .expect("an echo within the timeout");
        assert_eq!(from, server.addr, "answered from the port it was sent to");
        assert_eq!(&buf[..len], payload, "{len} bytes back");
    }
}

#[test]
fn python_tutorial_time_client_gets_the_local_time() {
    let server = example("udp_time");
    let printed = run_python(
        r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(b'time?', (sys.argv[1], int(sys.argv[2])))
print(s.recv(1024).decode('utf-8'))
"#,
        server.addr,
    );
    let time = printed.trim_end();
    // YYYY-MM-DD HH:MM:SS
    let shape: String = time
        .chars()
        .map(|c| if c.is_ascii_digit() { 'd' } else { c })
        .collect();
    assert_eq!(shape, "dddd-dd-dd dd:dd:dd", "got {time:?}");
}

// ---------------------------------------------------------------------------
// embed

/// How many lines of ticks a client reads at most while waiting for
/// something: ten seconds of ticks at the example's 50 ms.
const MAX_TICKS: usize = 200;

/// Reads past `TICK` lines to the next other line and returns it.
#[track_caller]
fn line_after_ticks(client: &mut Client) -> String {
    for _ in 0..MAX_TICKS {
        let line = client.line();
        if !line.starts_with("TICK ") {
            return line;
        }
    }
    panic!("nothing but ticks for {MAX_TICKS} lines");
}

/// Reads ticks, in increasing order, until one shows exactly `players`
/// (`<nick>=<x>,<y> …`); every line read must be a tick.
#[track_caller]
fn until_tick(client: &mut Client, players: &str) {
    let mut last = 0;
    for _ in 0..MAX_TICKS {
        let line = client.line();
        let Some(tick) = line.strip_prefix("TICK ") else {
            panic!("expected a tick, got {line:?}");
        };
        let (number, shown) = tick.split_once(' ').unwrap_or((tick, ""));
        let number: u64 = number.parse().expect("a tick number");
        assert!(number > last, "tick {number} after tick {last}");
        last = number;
        if shown == players {
            return;
        }
    }
    panic!("no tick showed {players:?} within {MAX_TICKS} lines");
}

/// The next line, parsed as JSON.
#[track_caller]
fn json_event(client: &mut Client) -> Value {
    let line = client.line();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
}

/// Reads past JSON tick events to the next other event and returns it.
#[track_caller]
fn json_event_after_ticks(client: &mut Client) -> Value {
    for _ in 0..MAX_TICKS {
        let event = json_event(client);
        if event["event"] != "tick" {
            return event;
        }
    }
    panic!("nothing but ticks for {MAX_TICKS} events");
}

#[test]
fn embed_puts_players_in_the_game_and_its_tick_reaches_them() {
    let server = example("embed");
    let mut ann = Client::connect(server.addr);
    ann.welcome();
    ann.expect(&format!("JOIN game {}", ann.nick));
    let mut bob = Client::connect(server.addr);
    bob.welcome();
    bob.expect(&format!("JOIN game {}", bob.nick));
    assert_eq!(
        line_after_ticks(&mut ann),
        format!("JOIN game {}", bob.nick)
    );
    let (a, b) = (ann.nick.clone(), bob.nick.clone());
    // Both stand at the origin until ann moves…
    until_tick(&mut ann, &format!("{a}=0,0 {b}=0,0"));
    // …and what is not a move is refused, to ann alone.
    ann.send("say move 1 1");
    assert_eq!(line_after_ticks(&mut ann), "ERR usage: move DX DY");
    ann.send("move 2 -1");
    // A later tick shows the move, to both; every line either of them reads
    // on the way is a tick, so the move itself reached no one as a line.
    let moved = format!("{a}=2,-1 {b}=0,0");
    until_tick(&mut ann, &moved);
    until_tick(&mut bob, &moved);
    // Bob hangs up: ann is told why, and the ticks go on without him.
    bob.shutdown_write();
    assert_eq!(line_after_ticks(&mut ann), format!("LEFT game {b} closed"));
    until_tick(&mut ann, &format!("{a}=2,-1"));
}

#[test]
fn embed_sends_json_players_the_same_game_as_json() {
    let server = example_with("embed", &["--json-bind", "127.0.0.1:0"]);
    let mut ann = Client::connect(server.addr);
    ann.welcome();
    ann.expect(&format!("JOIN game {}", ann.nick));
    let mut cat = Client::connect(server.listener_addr("json"));
    let welcome = json_event(&mut cat);
    assert_eq!(welcome["event"], "welcome", "{welcome}");
    let id = welcome["id"].as_u64().expect("a numeric id");
    let nick = format!("guest{id}");
    assert_eq!(welcome, json!({"event": "welcome", "id": id, "nick": nick}));
    let join = json!({"event": "join", "room": "game", "nick": nick});
    assert_eq!(json_event(&mut cat), join);
    assert_eq!(line_after_ticks(&mut ann), format!("JOIN game {nick}"));

    cat.send(r#"{"cmd":"jump"}"#);
    let usage = json!({"event": "error", "message": "usage: move DX DY"});
    assert_eq!(json_event_after_ticks(&mut cat), usage);
    cat.send(r#"{"cmd":"move","dx":1,"dy":3}"#);
    let players = json!([{"nick": ann.nick, "x": 0, "y": 0}, {"nick": nick, "x": 1, "y": 3}]);
    let mut shown = false;
    for _ in 0..MAX_TICKS {
        let tick = json_event(&mut cat);
        assert_eq!(tick["event"], "tick", "only ticks: {tick}");
        assert!(tick["tick"].is_u64(), "{tick}");
        if tick["players"] == players {
            shown = true;
            break;
        }
    }
    assert!(shown, "no JSON tick showed the move");
    let both = format!("{}=0,0 {nick}=1,3", ann.nick);
    until_tick(&mut ann, &both);

    cat.reset();
    assert_eq!(
        line_after_ticks(&mut ann),
        format!("LEFT game {nick} reset")
    );
}
