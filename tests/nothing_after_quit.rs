//! Nothing a session sent after it began closing is carried out (issue 8,
//! REVIEW M7): a client that writes `/quit` and more commands in one write
//! gets `BYE` and end of file, and its room sees `QUIT <room> <nick> quit`
//! and nothing else from it; on the text and the JSON protocol alike.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use common::{Client, READ_TIMEOUT, Server};
use serde_json::{Value, json};

/// What the quitter writes after `/quit`, in one write with it.
const AFTER_QUIT: &str = "hello after quit\n/nick zombie\n/join other\n";

/// The observer's view once the quitter is gone: it saw the quitter join,
/// then quit, and nothing else; no `other` room and no `zombie` exist.
fn observer_saw_only_join_and_quit(observer: &mut Client) {
    observer.expect("JOIN r a");
    observer.expect("QUIT r a quit");
    observer.send("/rooms");
    observer.expect("ROOMS r=1");
    observer.send("/msg zombie are you there");
    observer.expect_err("no-such-nick");
    observer.send("/who r");
    observer.expect("WHO r observer");
}

#[test]
fn text_lines_after_quit_are_not_carried_out() {
    let server = Server::start(&[]);
    let mut observer = server.named("observer");
    observer.join_alone("r");
    let mut quitter = server.client();
    let guest = quitter.nick.clone();
    quitter.send_raw(format!("/nick a\n/join r\n/quit bye\n{AFTER_QUIT}").as_bytes());
    quitter.expect(&format!("NICK {guest} a"));
    quitter.expect("JOIN r a");
    quitter.expect("WHO r observer a");
    quitter.expect("BYE");
    quitter.expect_eof();
    observer_saw_only_join_and_quit(&mut observer);
}

#[test]
fn json_commands_after_quit_are_not_carried_out() {
    let server = Server::start(&["--json-bind", "127.0.0.1:0"]);
    let mut observer = server.named("observer");
    observer.join_alone("r");

    let mut stream = TcpStream::connect(server.listener_addr("json")).expect("connect");
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut next = || {
        let mut line = String::new();
        reader.read_line(&mut line).expect("an event in time");
        serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    };
    let welcome = next();
    let guest = welcome["nick"].as_str().expect("a nick").to_owned();
    let commands = [
        json!({"cmd": "nick", "name": "a"}),
        json!({"cmd": "join", "room": "r"}),
        json!({"cmd": "quit", "reason": "bye"}),
        json!({"cmd": "say", "text": "hello after quit"}),
        json!({"cmd": "nick", "name": "zombie"}),
        json!({"cmd": "join", "room": "other"}),
    ];
    let batch: String = commands.iter().map(|c| format!("{c}\n")).collect();
    stream.write_all(batch.as_bytes()).expect("write");
    assert_eq!(next(), json!({"event": "nick", "old": guest, "new": "a"}));
    assert_eq!(next(), json!({"event": "join", "room": "r", "nick": "a"}));
    assert_eq!(
        next(),
        json!({"event": "who", "room": "r", "nicks": ["observer", "a"]})
    );
    assert_eq!(next(), json!({"event": "bye"}));
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).expect("end of file in time");
    assert!(
        rest.is_empty(),
        "after bye: {:?}",
        String::from_utf8_lossy(&rest)
    );
    observer_saw_only_join_and_quit(&mut observer);
}
