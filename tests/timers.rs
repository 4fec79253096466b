//! Heartbeat and idle timeout, with `--heartbeat 1 --idle-timeout 3`: a silent
//! peer is pinged every second and closed after three; a peer that answers
//! (with `/pong` or any other line) stays.
//!
//! The waits here are the behaviour under test, but every one of them is a
//! blocking read with the harness's timeout: the server's timers pace the test.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Server};

const TIMERS: [&str; 4] = ["--heartbeat", "1", "--idle-timeout", "3"];

/// Reads a `PING <token>` line and returns the token.
#[track_caller]
fn read_ping(client: &mut Client) -> String {
    let line = client.expect_prefix("PING ");
    let token = line["PING ".len()..].to_owned();
    assert!(
        !token.is_empty() && !token.contains(' '),
        "PING token must be one word: {line:?}"
    );
    token
}

#[test]
fn silent_peer_is_pinged_twice_then_closed_and_its_room_is_told() {
    let server = Server::start(&TIMERS);
    let mut talker = server.named("talker");
    talker.join("lobby");
    let mut silent = server.named("silent");
    let quiet_since = Instant::now();
    silent.send("/join lobby");
    silent.expect("JOIN lobby silent");
    silent.expect("WHO lobby talker silent");
    talker.expect("JOIN lobby silent");

    // The talker keeps its own session alive by answering every PING until it
    // sees the silent member go. Bounded: at most 20 lines.
    let talker_thread = thread::spawn(move || {
        for _ in 0..20 {
            let line = talker.line();
            if let Some(token) = line.strip_prefix("PING ") {
                talker.send(&format!("/pong {token}"));
                continue;
            }
            assert_eq!(line, "QUIT lobby silent idle-timeout");
            return talker;
        }
        panic!("talker never saw the silent member's QUIT");
    });

    let first = read_ping(&mut silent);
    let first_at = quiet_since.elapsed();
    let second = read_ping(&mut silent);
    assert_ne!(first, second, "heartbeat tokens must differ");
    silent.expect_err("idle-timeout");
    let closed_at = quiet_since.elapsed();
    silent.expect_eof();

    // The first PING comes after one heartbeat of silence, the close after
    // the idle timeout (measured from before the last line was sent).
    assert!(
        first_at >= Duration::from_millis(950),
        "first PING after {first_at:?}"
    );
    assert!(
        closed_at >= Duration::from_millis(2950),
        "idle close after {closed_at:?}"
    );

    let mut talker = talker_thread.join().expect("talker thread");
    // The silent member is gone from the room and its nick is free.
    talker.send("/who");
    let who = loop_past_pings(&mut talker);
    assert_eq!(who, "WHO lobby talker");
    let _again = server.named("silent");
}

/// Reads the next line that is not a `PING`, answering PINGs on the way
/// (at most 5 of them).
#[track_caller]
fn loop_past_pings(client: &mut Client) -> String {
    for _ in 0..5 {
        let line = client.line();
        match line.strip_prefix("PING ") {
            Some(token) => client.send(&format!("/pong {token}")),
            None => return line,
        }
    }
    panic!("only PINGs arrived");
}

/// Answers four PINGs with `answer(token)`; that spans more than the idle
/// timeout, so the session must still be served afterwards.
fn survives_by_answering(answer: fn(&str) -> String) {
    let server = Server::start(&TIMERS);
    let mut alive = server.named("alive");
    let started = Instant::now();
    let mut tokens = Vec::new();
    for _ in 0..4 {
        let token = read_ping(&mut alive);
        alive.send(&answer(&token));
        tokens.push(token);
    }
    let elapsed = started.elapsed();
    // (Measured from after the `/nick` reply, a hair after the server saw
    // the last line, hence the small margin.)
    assert!(
        elapsed >= Duration::from_millis(2900),
        "four heartbeats took only {elapsed:?}"
    );
    let mut distinct = tokens.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), tokens.len(), "tokens repeat: {tokens:?}");
    // Still served, and nothing (no ERR idle-timeout) was queued in between.
    alive.expect_nothing_pending();
}

#[test]
fn peer_answering_each_ping_with_pong_is_not_closed() {
    survives_by_answering(|token| format!("/pong {token}"));
}

#[test]
fn peer_answering_each_ping_with_an_empty_line_is_not_closed() {
    survives_by_answering(|_| String::new());
}

#[test]
fn peer_answering_each_ping_with_chat_outside_a_room_is_not_closed() {
    // The chat line is refused (`not-in-room`) but still counts as traffic.
    let server = Server::start(&TIMERS);
    let mut alive = server.named("alive");
    let started = Instant::now();
    for _ in 0..4 {
        read_ping(&mut alive);
        alive.send("still here");
        alive.expect_err("not-in-room");
    }
    assert!(started.elapsed() >= Duration::from_millis(2900));
    alive.expect_nothing_pending();
}

#[test]
fn partial_line_is_not_traffic() {
    let server = Server::start(&TIMERS);
    let mut dribbler = server.named("dribbler");
    let quiet_since = Instant::now();
    // Answer each PING with bytes but never a newline: no complete line, so
    // the idle timeout still runs out.
    for _ in 0..2 {
        read_ping(&mut dribbler);
        dribbler.send_raw(b"pong");
    }
    dribbler.expect_err("idle-timeout");
    let closed_at = quiet_since.elapsed();
    dribbler.expect_eof();
    assert!(
        closed_at >= Duration::from_millis(2950),
        "idle close after {closed_at:?}"
    );
}
