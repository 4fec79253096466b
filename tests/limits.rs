//! Admission and usage limits: `--max-connections`, `--max-per-ip`,
//! `--max-msgs-per-sec` and `--room-capacity`.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::{Client, Server};

/// Connects and asserts the server refuses: `ERR server-full …`, then EOF.
#[track_caller]
fn assert_refused(server: &Server) {
    let mut refused = Client::connect(server.addr);
    refused.expect_err("server-full");
    refused.expect_eof();
}

/// Sends `/quit` and reads `BYE` and the close.
#[track_caller]
fn quit(mut client: Client) {
    client.send("/quit");
    client.expect("BYE");
    client.expect_eof();
}

#[test]
fn max_connections_refuses_the_third_peer_until_a_slot_frees() {
    let server = Server::start(&["--max-connections", "2"]);
    let mut first = server.client();
    let mut second = server.client();
    assert_refused(&server);
    // The refusal cost the admitted sessions nothing.
    first.expect_nothing_pending();
    second.expect_nothing_pending();

    quit(first);
    let mut third = server.client();
    third.expect_nothing_pending();
    // Full again.
    assert_refused(&server);
    second.expect_nothing_pending();
}

#[test]
fn max_per_ip_refuses_a_third_peer_from_one_address_but_not_another() {
    let server = Server::start(&["--max-per-ip", "2"]);
    let mut first = server.client();
    let _second = server.client();
    assert_refused(&server);

    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut elsewhere = Client::connect_from(other, server.addr);
    elsewhere.welcome_as("elsewhere");
    elsewhere.send("/ping from-127-0-0-2");
    elsewhere.expect("PONG from-127-0-0-2");
    assert_eq!(
        elsewhere.stream.local_addr().unwrap().ip(),
        other,
        "the client really connected from {other}"
    );
    // 127.0.0.2 has one session, so it may have a second one.
    let mut elsewhere_too = Client::connect_from(other, server.addr);
    elsewhere_too.welcome();
    // 127.0.0.1 is still full until one of its sessions ends.
    first.expect_nothing_pending();
    assert_refused(&server);
    quit(first);
    let mut again = server.client();
    again.expect_nothing_pending();
    assert_refused(&server);
}

#[test]
fn max_msgs_per_sec_admits_a_burst_then_refuses_until_the_next_second() {
    let server = Server::start(&["--max-msgs-per-sec", "5"]);
    let mut client = server.client();

    let burst: String = (0..20).map(|n| format!("/ping {n}\n")).collect();
    client.send_raw(burst.as_bytes());
    for n in 0..5 {
        client.expect(&format!("PONG {n}"));
    }
    for _ in 5..20 {
        client.expect_err("rate-limited");
    }

    // The refill rate is the behaviour under test, so this waits on the
    // clock: 1.1 s refills the whole bucket of 5 (and no more).
    std::thread::sleep(Duration::from_millis(1100));
    let burst: String = (20..26).map(|n| format!("/ping {n}\n")).collect();
    client.send_raw(burst.as_bytes());
    for n in 20..25 {
        client.expect(&format!("PONG {n}"));
    }
    // The burst is N: the sixth line of the second burst is refused too.
    client.expect_err("rate-limited");
}

#[test]
fn rate_limit_counts_empty_lines_too() {
    let server = Server::start(&["--max-msgs-per-sec", "5"]);
    let mut client = server.client();
    // Five empty lines use the whole burst; the ping after them is dropped.
    client.send_raw(b"\n\n\n\n\n/ping late\n");
    client.expect_err("rate-limited");
    // The session is still open and served (after a refill: this waits on
    // the clock because the refill is the behaviour under test).
    std::thread::sleep(Duration::from_millis(1100));
    client.expect_nothing_pending();
}

#[test]
fn room_capacity_refuses_the_third_joiner_who_stays_where_it_was() {
    let server = Server::start(&["--room-capacity", "2"]);
    let mut ann = server.named("ann");
    let mut ben = server.named("ben");
    let mut cat = server.named("cat");
    let mut dan = server.named("dan");
    ann.join("den");
    ben.join_with("den", &mut ann);
    cat.join("hall");
    dan.join_with("hall", &mut cat);

    cat.send("/join den");
    cat.expect_err("room-full");
    // cat is still in `hall`, and nobody saw it leave or arrive.
    cat.send("/who");
    cat.expect("WHO hall cat dan");
    cat.send("still here");
    cat.expect("MSG hall cat still here");
    dan.expect("MSG hall cat still here");
    ann.expect_nothing_pending();
    ben.expect_nothing_pending();
    dan.expect_nothing_pending();
    cat.send("/rooms");
    cat.expect("ROOMS den=2 hall=2");

    // A joiner from no room is refused too, and stays in no room.
    let mut eve = server.named("eve");
    eve.send("/join den");
    eve.expect_err("room-full");
    eve.send("/who");
    eve.expect_err("not-in-room");

    // Once a member leaves there is room again.
    ben.send("/leave");
    ben.expect("LEAVE den ben");
    ann.expect("LEAVE den ben");
    eve.send("/join den");
    eve.expect("JOIN den eve");
    eve.expect("WHO den ann eve");
    ann.expect("JOIN den eve");
}
