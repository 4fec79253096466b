//! Rooms shared across nodes through a real Redis (`--cluster`): one order
//! per room across nodes, cluster-wide nicks and capacity, a node killed or
//! paused, and Redis restarted mid-chat. Each test starts its own
//! `redis-server` (unix socket in a temporary directory, persistence off)
//! and its own switchboard nodes on loopback port 0.

mod cluster_support;
mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use cluster_support::Redis;
use common::{Client, Server};

/// Starts `n` nodes of the cluster behind `redis`, with extra `args`.
fn nodes(redis: &Redis, n: usize, args: &[&str]) -> Vec<Server> {
    let url = redis.url();
    (0..n)
        .map(|_| {
            let mut all = vec!["--cluster", url.as_str(), "--threads", "2"];
            all.extend_from_slice(args);
            Server::start(&all)
        })
        .collect()
}

/// `members` named clients `prefix0…`, member `i` on node `i % nodes`, all
/// in `room`, every join seen by every earlier member.
fn seat(servers: &[Server], prefix: &str, members: usize, room: &str) -> Vec<Client> {
    let mut seated: Vec<Client> = Vec::new();
    for i in 0..members {
        let mut member = servers[i % servers.len()].named(&format!("{prefix}{i}"));
        member.join(room);
        for earlier in &mut seated {
            earlier.expect(&format!("JOIN {room} {prefix}{i}"));
        }
        seated.push(member);
    }
    seated
}

/// Every member sends `lines` lines `NAME-K` at once (K from `from`) and
/// reads `expect` room lines; answers what each read.
fn chat(
    members: Vec<Client>,
    lines: usize,
    from: usize,
    expect: usize,
) -> Vec<(Client, Vec<String>)> {
    let start = Arc::new(Barrier::new(members.len()));
    let threads: Vec<_> = members
        .into_iter()
        .map(|mut member| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                for k in from..from + lines {
                    let line = format!("{}-{k}", member.nick);
                    member.send(&line);
                }
                let seen: Vec<String> = (0..expect).map(|_| member.line()).collect();
                (member, seen)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|thread| thread.join().expect("member thread"))
        .collect()
}

/// Every member saw the same lines in the same order, each sender's in the
/// order sent (`from..from + lines`), each exactly once.
fn assert_one_order(results: &[(Client, Vec<String>)], room: &str, lines: usize, from: usize) {
    let reference = &results[0].1;
    for (member, seen) in results {
        if let Some(at) = (0..reference.len()).find(|&n| seen[n] != reference[n]) {
            panic!(
                "{} diverges from {} at line {at}: {:?} vs {:?}",
                member.nick, results[0].0.nick, seen[at], reference[at]
            );
        }
    }
    for (sender, _) in results {
        let prefix = format!("MSG {room} {} ", sender.nick);
        let sent: Vec<&str> = reference
            .iter()
            .filter_map(|line| line.strip_prefix(&prefix))
            .collect();
        let expected: Vec<String> = (from..from + lines)
            .map(|k| format!("{}-{k}", sender.nick))
            .collect();
        assert_eq!(sent, expected, "{}'s lines", sender.nick);
    }
}

#[test]
fn chat_across_three_nodes_reaches_every_member_in_one_order() {
    let Some(redis) = Redis::start() else { return };
    let servers = nodes(&redis, 3, &[]);
    let members = seat(&servers, "m", 10, "arena");
    let results = chat(members, 100, 0, 1000);
    assert_one_order(&results, "arena", 100, 0);
    let mut members: Vec<Client> = results.into_iter().map(|(member, _)| member).collect();
    for member in &mut members {
        member.expect_nothing_pending();
    }
    let mut probe = servers[1].client();
    probe.send("/rooms");
    probe.expect("ROOMS arena=10");
    probe.send("/who arena");
    let names: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    probe.expect(&format!("WHO arena {}", names.join(" ")));
}

#[test]
fn two_nodes_renaming_to_one_nick_at_once_have_exactly_one_winner() {
    let Some(redis) = Redis::start() else { return };
    let servers = nodes(&redis, 2, &[]);
    let mut first = servers[0].client();
    let mut second = servers[1].client();
    for round in 0..20 {
        let nick = format!("racer{round}");
        first.send(&format!("/nick {nick}"));
        second.send(&format!("/nick {nick}"));
        let answers = [first.line(), second.line()];
        let won: Vec<&String> = answers.iter().filter(|l| l.starts_with("NICK ")).collect();
        let lost: Vec<&String> = answers
            .iter()
            .filter(|l| l.starts_with("ERR nick-taken "))
            .collect();
        assert_eq!(
            (won.len(), lost.len()),
            (1, 1),
            "round {round}: {answers:?}"
        );
        // Case-insensitively too, from either node.
        first.send(&format!("/nick {}", nick.to_uppercase()));
        let line = first.line();
        let first_won = answers[0].starts_with("NICK ");
        if first_won {
            assert_eq!(line, format!("NICK {nick} {}", nick.to_uppercase()));
            first.send(&format!("/nick {nick}"));
            first.expect(&format!("NICK {} {nick}", nick.to_uppercase()));
        } else {
            assert!(line.starts_with("ERR nick-taken "), "{line}");
        }
    }
}

#[test]
fn a_full_room_admits_exactly_its_capacity_across_nodes() {
    let Some(redis) = Redis::start() else { return };
    let servers = nodes(&redis, 2, &["--room-capacity", "3"]);
    let mut clients: Vec<Client> = (0..8).map(|i| servers[i % 2].client()).collect();
    for client in &mut clients {
        client.send("/join den");
    }
    let mut joined = 0;
    for client in &mut clients {
        let line = client.line();
        if line == format!("JOIN den {}", client.nick) {
            joined += 1;
        } else {
            assert!(line.starts_with("ERR room-full "), "{line}");
        }
    }
    assert_eq!(joined, 3);
    let mut probe = servers[1].client();
    probe.send("/rooms");
    probe.expect("ROOMS den=3");
}

#[test]
fn members_joining_at_once_on_two_nodes_each_read_their_who_right_after_their_join() {
    let Some(redis) = Redis::start() else { return };
    let servers = nodes(&redis, 2, &[]);
    let mut clients: Vec<Client> = (0..16).map(|i| servers[i % 2].client()).collect();
    for client in &mut clients {
        client.send("/join crowd");
    }
    for client in &mut clients {
        client.expect(&format!("JOIN crowd {}", client.nick));
        let who = client.expect_prefix("WHO crowd ");
        assert!(who.ends_with(&format!(" {}", client.nick)), "{who}");
    }
}

#[test]
fn a_killed_node_s_members_quit_once_as_node_down_on_every_survivor() {
    let Some(redis) = Redis::start() else { return };
    let mut servers = nodes(&redis, 3, &[]);
    let doomed = servers.pop().expect("three nodes");
    let mut a1 = servers[0].named("a1");
    let mut a2 = servers[1].named("a2");
    let mut k1 = doomed.named("k1");
    let mut k2 = doomed.named("k2");
    a1.join_alone("hall");
    a2.join_with("hall", &mut a1);
    k1.join("hall");
    a1.expect("JOIN hall k1");
    a2.expect("JOIN hall k1");
    k2.join("hall");
    for member in [&mut a1, &mut a2, &mut k1] {
        member.expect("JOIN hall k2");
    }
    let started = Instant::now();
    doomed.signal(libc::SIGKILL);
    for member in [&mut a1, &mut a2] {
        let quits: BTreeSet<String> = (0..2).map(|_| member.line()).collect();
        let expected: BTreeSet<String> = ["QUIT hall k1 node-down", "QUIT hall k2 node-down"]
            .map(String::from)
            .into();
        assert_eq!(quits, expected);
    }
    // Within the 5 s timeout plus a heartbeat and the reaper's run.
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    // No second QUIT: the next room line is the marker.
    a1.send("marker");
    a1.expect("MSG hall a1 marker");
    a2.expect("MSG hall a1 marker");
    a2.send("/who");
    a2.expect("WHO hall a1 a2");
    a2.send("/rooms");
    a2.expect("ROOMS hall=2");
    // Their nicks are free again.
    let mut again = servers[0].client();
    let old = again.nick.clone();
    again.send("/nick k1");
    again.expect(&format!("NICK {old} k1"));
    drop(doomed);
}

#[test]
fn a_paused_node_declared_dead_closes_its_own_sessions() {
    let Some(redis) = Redis::start() else { return };
    let servers = nodes(&redis, 2, &[]);
    let (awake, paused) = (&servers[0], &servers[1]);
    let mut a = awake.named("a");
    let mut p = paused.named("p");
    a.join_alone("pause");
    p.join_with("pause", &mut a);
    paused.signal(libc::SIGSTOP);
    a.expect("QUIT pause p node-down");
    paused.signal(libc::SIGCONT);
    // It ends its session rather than bring a zombie back.
    p.drain_to_end(Duration::from_secs(15), 4096);
    // And serves new sessions as a node of the cluster again, once it has
    // registered anew (`unavailable` until then).
    let mut back = paused.client();
    let guest = back.nick.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        back.send("/nick p");
        let line = back.line();
        if line == format!("NICK {guest} p") {
            break;
        }
        assert!(line.starts_with("ERR unavailable "), "{line}");
        assert!(Instant::now() < deadline, "the node never came back");
        thread::sleep(Duration::from_millis(100));
    }
    back.send("/join pause");
    back.expect("JOIN pause p");
    back.expect("WHO pause a p");
    a.expect("JOIN pause p");
}

/// Sends `/who` until it lists `expected`, reading each answer (an
/// `ERR unavailable` while the cluster recovers); bounded.
fn wait_for_who(member: &mut Client, room: &str, expected: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        member.send(&format!("/who {room}"));
        let line = member.line();
        if let Some(names) = line.strip_prefix(&format!("WHO {room} ")) {
            let names: BTreeSet<String> = names.split(' ').map(String::from).collect();
            if &names == expected {
                return;
            }
        } else {
            assert!(line.starts_with("ERR unavailable "), "{line}");
        }
        assert!(Instant::now() < deadline, "{room} never recovered: {line}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn redis_restarted_mid_chat_loses_no_member_and_repeats_or_reorders_no_line() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let servers = nodes(&redis, 2, &[]);
    let members = seat(&servers, "r", 4, "chat");
    let results = chat(members, 25, 0, 100);
    assert_one_order(&results, "chat", 25, 0);
    let before = results[0].1.clone();

    redis.restart();
    let mut members: Vec<Client> = results.into_iter().map(|(member, _)| member).collect();
    let everyone: BTreeSet<String> = members.iter().map(|m| m.nick.clone()).collect();
    for member in &mut members {
        wait_for_who(member, "chat", &everyone);
    }
    let results = chat(members, 25, 25, 100);
    assert_one_order(&results, "chat", 25, 25);
    let all: Vec<&String> = before.iter().chain(&results[0].1).collect();
    let unique: BTreeSet<&&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a line came twice");
    let mut members: Vec<Client> = results.into_iter().map(|(member, _)| member).collect();
    for member in &mut members {
        member.expect_nothing_pending();
    }
}

#[test]
fn cluster_flags_refuse_nonsense_with_exit_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--bind", "127.0.0.1:0", "--cluster", "redis://127.0.0.1:1/"])
        .args(["--node-name", "no spaces"])
        .stdin(Stdio::null())
        .output()
        .expect("run switchboard");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("switchboard: --node-name must be"),
        "{stderr}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--bind", "127.0.0.1:0", "--cluster", "ftp://nowhere/"])
        .stdin(Stdio::null())
        .output()
        .expect("run switchboard");
    assert_eq!(output.status.code(), Some(2));
    // A Redis that is not there at start: one line, exit 1.
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "--bind",
            "127.0.0.1:0",
            "--cluster",
            "/nonexistent/redis.sock",
        ])
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .expect("run switchboard");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("switchboard: cannot join the cluster: cannot reach redis"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn while_redis_is_down_a_node_s_own_members_still_chat_and_the_rest_is_unavailable() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let servers = nodes(&redis, 2, &[]);
    let mut a1 = servers[0].named("a1");
    let mut a2 = servers[0].named("a2");
    let mut b = servers[1].named("b");
    a1.join_alone("den");
    a2.join_with("den", &mut a1);
    b.join("den");
    a1.expect("JOIN den b");
    a2.expect("JOIN den b");

    redis.stop();
    // The first line may fail on its way to Redis; once the node knows,
    // lines reach its own members and the sender is told the rest did not.
    let mut delivered = None;
    for k in 0..50 {
        a1.send(&format!("line-{k}"));
        let line = a1.line();
        if line == format!("MSG den a1 line-{k}") {
            a1.expect_err("unavailable");
            delivered = Some(k);
            break;
        }
        assert!(line.starts_with("ERR unavailable "), "{line}");
        thread::sleep(Duration::from_millis(50));
    }
    let k = delivered.expect("a line reached this node's members");
    a2.expect(&format!("MSG den a1 line-{k}"));
    for command in ["/rooms", "/who", "/nick newname"] {
        a2.send(command);
        a2.expect_err("unavailable");
    }
    assert!(servers[0].logged("cannot be reached"));

    redis.start_again();
    let everyone: BTreeSet<String> = ["a1", "a2", "b"].map(String::from).into();
    for member in [&mut a1, &mut a2, &mut b] {
        wait_for_who(member, "den", &everyone);
    }
    a1.send("after");
    for member in [&mut a1, &mut a2, &mut b] {
        // b never got the line only a1's node saw.
        member.expect("MSG den a1 after");
    }
}

#[test]
fn a_node_shut_down_gracefully_tells_the_other_nodes_members_shutdown() {
    let Some(redis) = Redis::start() else { return };
    let mut servers = nodes(&redis, 2, &[]);
    let mut stays = servers[0].named("stays");
    let mut goes = servers[1].named("goes");
    stays.join_alone("lobby");
    goes.join_with("lobby", &mut stays);
    servers[1].signal(libc::SIGTERM);
    goes.expect("SHUTDOWN");
    stays.expect("QUIT lobby goes shutdown");
    let status = servers[1].wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    stays.send("/who");
    stays.expect("WHO lobby stays");
    stays.send("/nick goes");
    stays.expect("NICK stays goes");
}

#[test]
fn a_private_message_reaches_a_nick_on_another_node_behind_the_sender_s_room_line() {
    let Some(redis) = Redis::start() else { return };
    let servers = nodes(&redis, 2, &[]);
    let mut alice = servers[0].named("alice");
    let mut bob = servers[1].named("bob");
    alice.join_alone("hall");
    bob.join_with("hall", &mut alice);
    for k in 0..20 {
        alice.send_raw(format!("line {k}\n/msg BOB psst {k}\n").as_bytes());
        for member in [&mut alice, &mut bob] {
            member.expect(&format!("MSG hall alice line {k}"));
            member.expect(&format!("PRIVMSG alice bob psst {k}"));
        }
    }
    bob.send("/msg alice back");
    bob.expect("PRIVMSG bob alice back");
    alice.expect("PRIVMSG bob alice back");
    alice.send("/msg nobody hello");
    alice.expect_err("no-such-nick");
}

#[test]
fn a_json_member_hears_of_a_killed_node_in_json() {
    use std::io::{BufRead, BufReader, Write};
    let Some(redis) = Redis::start() else { return };
    let url = redis.url();
    let json_node = Server::start(&["--cluster", &url, "--json-bind", "127.0.0.1:0"]);
    let doomed = Server::start(&["--cluster", &url]);
    let stream = std::net::TcpStream::connect(json_node.listener_addr("json")).expect("connect");
    stream
        .set_read_timeout(Some(common::READ_TIMEOUT))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let mut line = || {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a JSON line");
        line
    };
    assert!(line().starts_with("{\"event\":\"welcome\""));
    writer
        .write_all(b"{\"cmd\":\"nick\",\"name\":\"jay\"}\n{\"cmd\":\"join\",\"room\":\"j\"}\n")
        .expect("write");
    for _ in 0..3 {
        line(); // nick, join, who
    }
    let mut text = doomed.named("tex");
    text.join("j");
    assert_eq!(
        line(),
        "{\"event\":\"join\",\"room\":\"j\",\"nick\":\"tex\"}\n"
    );
    doomed.signal(libc::SIGKILL);
    assert_eq!(
        line(),
        "{\"event\":\"quit\",\"room\":\"j\",\"nick\":\"tex\",\"reason\":\"node-down\"}\n"
    );
    drop(doomed);
}

#[test]
fn a_redis_stall_longer_than_the_node_timeout_declares_no_live_node_dead() {
    let Some(redis) = Redis::start() else { return };
    let servers = nodes(&redis, 2, &[]);
    let mut members = seat(&servers, "s", 2, "stall");
    // Redis stops answering for longer than the 5 s node timeout: no node
    // can heartbeat, so none may judge another dead by its silence.
    redis.signal(libc::SIGSTOP);
    thread::sleep(Duration::from_secs(7));
    redis.signal(libc::SIGCONT);
    // Both members are still there: a line crosses nodes, and the first
    // line either reads after the stall is that line, not a QUIT.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        members[0].send("/who stall");
        let line = members[0].line();
        if line == "WHO stall s0 s1" {
            break;
        }
        assert!(line.starts_with("ERR unavailable "), "{line}");
        assert!(Instant::now() < deadline, "the cluster never recovered");
        thread::sleep(Duration::from_millis(100));
    }
    // Past two more heartbeats and a timeout, still no one was reaped.
    thread::sleep(Duration::from_secs(6));
    members[1].send("after the stall");
    for member in &mut members {
        member.expect("MSG stall s1 after the stall");
    }
}

#[test]
fn a_node_started_with_a_live_node_s_name_refuses_to_start() {
    let Some(redis) = Redis::start() else { return };
    let url = redis.url();
    let live = Server::start(&["--cluster", &url, "--node-name", "twin"]);
    let mut member = live.named("m");
    member.join_alone("r");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "--bind",
            "127.0.0.1:0",
            "--cluster",
            &url,
            "--node-name",
            "twin",
        ])
        .output()
        .expect("run a second node");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by a live node"), "{stderr}");
    // The live node's member was not evicted.
    member.send("/who r");
    member.expect("WHO r m");
}
