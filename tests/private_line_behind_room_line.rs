//! Regression (hostile review, `t05_crosspath.py`): a sender's private
//! message could overtake its own room line on the way to a member on
//! another thread. The sequencer told the sender's thread first, so the
//! sender could look the target up and hand it the `PRIVMSG` before the
//! room's `MSG` had reached the target's thread. SPEC §3: a sender's messages
//! arrive in the order it sent them.

mod common;

use common::{Client, Server};

/// Rounds of `hello<k>` + `/msg <member> pm<k>` in one write, each waiting
/// for the sender's own `PRIVMSG` echo before the next.
const ROUNDS: usize = 100;

/// The sender and up to three members it writes to (two with three
/// threads), each on a thread of its own (ids are consecutive and session
/// `id` runs on thread `id % threads`); the room is sequenced on a thread
/// other than the sender's, and, with threads to spare, other than the
/// members' too.
fn sender_never_overtaken(threads: usize) {
    let threads_flag = threads.to_string();
    let server = Server::start(&["--threads", &threads_flag]);
    let thread_of = |client: &Client| (client.id % threads as u64) as usize;
    let mut sender = server.named("c0");
    let mut members: Vec<Client> = (1..=(threads - 1).min(3))
        .map(|n| server.named(&format!("c{n}")))
        .collect();
    let mut busy: Vec<usize> = members.iter().map(thread_of).collect();
    busy.push(thread_of(&sender));
    busy.sort_unstable();
    busy.dedup();
    assert_eq!(busy.len(), members.len() + 1, "each on a thread of its own");
    let spare = threads > busy.len();
    let room = (0..256)
        .map(|n| format!("r{n}"))
        .find(|room| {
            let thread = switchboard::room_thread(room, threads);
            thread != thread_of(&sender) && !(spare && busy.contains(&thread))
        })
        .expect("a room on another thread than the sender's");

    // Everyone in the room, every arrival consumed.
    sender.join_alone(&room);
    let mut present = vec![sender.nick.clone()];
    for n in 0..members.len() {
        let nick = members[n].nick.clone();
        members[n].send(&format!("/join {room}"));
        members[n].expect(&format!("JOIN {room} {nick}"));
        present.push(nick.clone());
        members[n].expect(&format!("WHO {room} {}", present.join(" ")));
        sender.expect(&format!("JOIN {room} {nick}"));
        for earlier in &mut members[..n] {
            earlier.expect(&format!("JOIN {room} {nick}"));
        }
    }

    let count = members.len();
    let to = |k: usize| k % count;
    for k in 0..ROUNDS {
        let target = members[to(k)].nick.clone();
        sender.send_raw(format!("hello{k}\n/msg {target} pm{k}\n").as_bytes());
        sender.expect(&format!("MSG {room} c0 hello{k}"));
        sender.expect(&format!("PRIVMSG c0 {target} pm{k}"));
    }
    sender.expect_nothing_pending();

    // Each member: every room line, and its private line right after the
    // room line sent before it.
    for (n, member) in members.iter_mut().enumerate() {
        for k in 0..ROUNDS {
            member.expect(&format!("MSG {room} c0 hello{k}"));
            if to(k) == n {
                member.expect(&format!("PRIVMSG c0 {} pm{k}", member.nick));
            }
        }
        member.expect_nothing_pending();
    }
}

#[test]
fn a_private_line_never_overtakes_the_senders_room_line_on_eight_threads() {
    sender_never_overtaken(8);
}

#[test]
fn a_private_line_never_overtakes_the_senders_room_line_on_three_threads() {
    sender_never_overtaken(3);
}
