//! Room ordering under concurrency: every member sees one and the same
//! sequence of the room's messages, and each sender's lines in the order sent.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use common::{Client, Server};

const MEMBERS: usize = 10;
const LINES_EACH: usize = 100;
const TOTAL: usize = MEMBERS * LINES_EACH;

#[test]
fn ten_concurrent_senders_are_seen_in_one_order_by_every_member() {
    let server = Server::start(&[]);
    let mut members: Vec<Client> = Vec::new();
    for i in 0..MEMBERS {
        let mut member = server.named(&format!("m{i}"));
        member.join("arena");
        for earlier in &mut members {
            earlier.expect(&format!("JOIN arena m{i}"));
        }
        members.push(member);
    }
    for member in &mut members {
        member.expect_nothing_pending();
    }

    let start = Arc::new(Barrier::new(MEMBERS));
    let threads: Vec<_> = members
        .into_iter()
        .enumerate()
        .map(|(i, mut member)| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                // One write per line, so the senders really interleave.
                for k in 0..LINES_EACH {
                    member.send(&format!("from-m{i}-{k}"));
                }
                let seen: Vec<String> = (0..TOTAL).map(|_| member.line()).collect();
                (member, seen)
            })
        })
        .collect();
    let results: Vec<(Client, Vec<String>)> = threads
        .into_iter()
        .map(|thread| thread.join().expect("member thread"))
        .collect();

    let reference = &results[0].1;
    // The reference sequence holds every line exactly once, each sender's in
    // the order sent.
    let mut next = [0usize; MEMBERS];
    for line in reference {
        let rest = line
            .strip_prefix("MSG arena m")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        let (sender, text) = rest.split_once(' ').expect("MSG has text");
        let sender: usize = sender.parse().expect("sender index");
        assert_eq!(
            text,
            format!("from-m{sender}-{}", next[sender]),
            "m{sender}'s lines out of order"
        );
        next[sender] += 1;
    }
    assert_eq!(next, [LINES_EACH; MEMBERS]);
    // Every member saw that same sequence.
    for (i, (_, seen)) in results.iter().enumerate() {
        if let Some(at) = (0..TOTAL).find(|&n| seen[n] != reference[n]) {
            panic!(
                "m{i} diverges from m0 at line {at}: {:?} vs {:?}",
                seen[at], reference[at]
            );
        }
    }
    // And nothing else is pending for anyone.
    // (All stay connected until the end, or the others would see a QUIT.)
    let mut members: Vec<Client> = results.into_iter().map(|(member, _)| member).collect();
    for member in &mut members {
        member.expect_nothing_pending();
    }
}
