//! How a peer's way of leaving shows up for the others: a half-close is
//! `closed`, an abortive close is `reset`, and either way the session is gone
//! from the registry (nick free, room count down or room gone).

mod common;

use common::{Client, Server};

/// A fresh client proves `nick` is free by taking it.
#[track_caller]
fn assert_nick_free(server: &Server, nick: &str) -> Client {
    server.named(nick)
}

#[test]
fn half_closed_peer_is_quit_closed_and_leaves_the_registry() {
    let server = Server::start(&[]);
    let mut alice = server.named("alice");
    let mut carol = server.named("carol");
    alice.join("lobby");
    carol.join_with("lobby", &mut alice);

    carol.shutdown_write();
    // Nothing was owed to carol, so her connection just ends.
    carol.expect_eof();
    alice.expect("QUIT lobby carol closed");
    alice.expect_nothing_pending();

    let mut again = assert_nick_free(&server, "carol");
    again.send("/rooms");
    again.expect("ROOMS lobby=1");
    alice.send("/who");
    alice.expect("WHO lobby alice");
}

#[test]
fn half_closed_peer_still_gets_the_reply_it_asked_for_before_eof() {
    let server = Server::start(&[]);
    let mut alice = server.named("alice");
    let mut dave = server.named("dave");
    alice.join("lobby");
    dave.join("solo");

    // The request and the half-close go out back to back: the reply is owed
    // and must be written before the server closes its side.
    dave.send_raw(b"/rooms\n");
    dave.shutdown_write();
    dave.expect("ROOMS lobby=1 solo=1");
    dave.expect_eof();

    // dave was alone in `solo`: the room is gone and the nick is free.
    let mut again = assert_nick_free(&server, "dave");
    again.send("/rooms");
    again.expect("ROOMS lobby=1");
    alice.expect_nothing_pending();
}

#[test]
fn half_closed_peer_gets_every_reply_owed_in_order() {
    let server = Server::start(&[]);
    let mut alice = server.named("alice");
    let mut erin = server.named("erin");
    alice.join("lobby");
    erin.join("lobby");
    alice.expect("JOIN lobby erin");

    erin.send_raw(b"/ping one\nhello\n/who\n/ping two\n");
    erin.shutdown_write();
    erin.expect("PONG one");
    erin.expect("MSG lobby erin hello");
    erin.expect("WHO lobby alice erin");
    erin.expect("PONG two");
    erin.expect_eof();

    alice.expect("MSG lobby erin hello");
    alice.expect("QUIT lobby erin closed");
    alice.expect_nothing_pending();
    assert_nick_free(&server, "erin");
}

#[test]
fn reset_peer_is_quit_reset_and_leaves_the_registry() {
    let server = Server::start(&[]);
    let mut alice = server.named("alice");
    let mut mallory = server.named("mallory");
    alice.join("lobby");
    mallory.join_with("lobby", &mut alice);

    mallory.reset();
    alice.expect("QUIT lobby mallory reset");
    alice.expect_nothing_pending();

    let mut again = assert_nick_free(&server, "mallory");
    again.send("/rooms");
    again.expect("ROOMS lobby=1");
}

#[test]
fn reset_peer_alone_in_a_room_takes_the_room_with_it() {
    let server = Server::start(&[]);
    let mut alice = server.named("alice");
    let mut mallory = server.named("mallory");
    alice.join("lobby");
    mallory.join("hideout");
    alice.send("/rooms");
    alice.expect("ROOMS hideout=1 lobby=1");

    // Nobody shares mallory's room, so no QUIT marks the moment the registry
    // has forgotten her: poll with fresh clients, each try a bounded read.
    mallory.reset();
    let mut freed = None;
    for _ in 0..50 {
        let mut probe = server.client();
        probe.send("/nick mallory");
        let line = probe.line();
        if line == format!("NICK {} mallory", probe.nick) {
            freed = Some(probe);
            break;
        }
        assert!(line.starts_with("ERR nick-taken "), "unexpected {line:?}");
    }
    let mut again = freed.expect("nick mallory never became free after a reset");
    again.send("/rooms");
    again.expect("ROOMS lobby=1");
    alice.expect_nothing_pending();
}
