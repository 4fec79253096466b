//! One room's order holds across threads: with `--threads 4` and members
//! spread over every thread (session `id` runs on thread `id % 4`), eight
//! concurrent senders and a ninth session joining, renaming and leaving over
//! and over, every member sees one and the same sequence of the room's
//! events, each sender's lines in the order sent; the ninth sees exactly
//! the part of that sequence between its own `JOIN` and `LEAVE`.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::Duration;

use common::{Client, READ_TIMEOUT, Server};

const THREADS: u64 = 4;
const MEMBERS: usize = 8;
/// Lines each member sends before the first churn cycle, and again after.
const HALF: usize = 100;
/// Times the ninth session joins, renames and leaves.
const CYCLES: usize = 20;
const ROOM: &str = "arena";
/// Every line a member reads after the start: all chat, and the churner's
/// `JOIN`, `NICK` and `LEAVE` of each cycle.
const TOTAL: usize = MEMBERS * 2 * HALF + 3 * CYCLES;
/// How long a thread waits for the others at a phase change (a bound, not a
/// pace: passing runs never wait it).
const PHASE_TIMEOUT: Duration = Duration::from_secs(6 * READ_TIMEOUT.as_secs());

/// The churner's nick before cycle `r` (its guest nick first).
fn churn_nick(guest: &str, r: usize) -> String {
    match r {
        0 => guest.to_owned(),
        r => format!("c{}", r - 1),
    }
}

/// The three room events of churn cycle `r`.
fn churn_events(guest: &str, r: usize) -> [String; 3] {
    let (before, after) = (churn_nick(guest, r), format!("c{r}"));
    [
        format!("JOIN {ROOM} {before}"),
        format!("NICK {before} {after}"),
        format!("LEAVE {ROOM} {after}"),
    ]
}

/// One churn cycle: join, rename, leave, pipelined; returns every line read
/// up to and including its own `LEAVE`, checking the `WHO` it is answered.
fn churn_cycle(churner: &mut Client, guest: &str, r: usize) -> Vec<String> {
    let before = churn_nick(guest, r);
    churner.send_raw(format!("/join {ROOM}\n/nick c{r}\n/leave\n").as_bytes());
    let leave = format!("LEAVE {ROOM} c{r}");
    let members: Vec<String> = (0..MEMBERS).map(|i| format!("m{i}")).collect();
    let who = format!("WHO {ROOM} {} {before}", members.join(" "));
    let mut lines = Vec::new();
    // Bounded: the churner reads at most every chat line plus its own.
    for _ in 0..=TOTAL + 1 {
        let line = churner.line();
        if line.starts_with("WHO ") {
            assert_eq!(line, who);
            continue;
        }
        let done = line == leave;
        lines.push(line);
        if done {
            return lines;
        }
    }
    panic!("no {leave:?} for the churner");
}

#[test]
fn members_on_every_thread_see_chat_and_membership_changes_in_one_order() {
    let server = Server::start(&["--threads", &THREADS.to_string()]);
    let mut members: Vec<Client> = Vec::new();
    for i in 0..MEMBERS {
        let mut member = server.named(&format!("m{i}"));
        member.join(ROOM);
        for earlier in &mut members {
            earlier.expect(&format!("JOIN {ROOM} m{i}"));
        }
        members.push(member);
    }
    let mut per_thread = BTreeMap::new();
    for member in &members {
        *per_thread.entry(member.id % THREADS).or_insert(0) += 1;
    }
    assert_eq!(
        per_thread,
        (0..THREADS).map(|t| (t, 2)).collect(),
        "two members on each thread"
    );
    for member in &mut members {
        member.expect_nothing_pending();
    }
    let mut churner = server.client();
    let guest = churner.nick.clone();

    // Members send their first halves concurrently and read until their
    // own last line is back; then the churner's first cycle runs alone; then
    // the second halves and the remaining cycles run concurrently.
    // (Channels with timeouts rather than barriers: a thread that fails
    // cannot leave the others waiting for ever.)
    let start = Arc::new(Barrier::new(MEMBERS));
    let (half_back, first_halves_back) = mpsc::channel();
    let mut first_cycle_done = Vec::new();
    let threads: Vec<_> = members
        .into_iter()
        .enumerate()
        .map(|(i, mut member)| {
            let start = start.clone();
            let half_back = half_back.clone();
            let (cycle_done, cycle) = mpsc::channel::<()>();
            first_cycle_done.push(cycle_done);
            thread::spawn(move || {
                start.wait();
                // One write per line, so the senders really interleave.
                for k in 0..HALF {
                    member.send(&format!("m{i}-{k}"));
                }
                let last = format!("MSG {ROOM} m{i} m{i}-{}", HALF - 1);
                let mut seen = Vec::new();
                while seen.last() != Some(&last) {
                    assert!(seen.len() < TOTAL, "m{i} never saw its own {last:?}");
                    seen.push(member.line());
                }
                half_back.send(()).expect("the churner waits");
                cycle
                    .recv_timeout(PHASE_TIMEOUT)
                    .expect("the first churn cycle ends");
                for k in HALF..2 * HALF {
                    member.send(&format!("m{i}-{k}"));
                }
                while seen.len() < TOTAL {
                    seen.push(member.line());
                }
                (member, seen)
            })
        })
        .collect();
    let churn = {
        let guest = guest.clone();
        thread::spawn(move || {
            for _ in 0..MEMBERS {
                first_halves_back
                    .recv_timeout(PHASE_TIMEOUT)
                    .expect("every member's first half is back");
            }
            let mut seen = churn_cycle(&mut churner, &guest, 0);
            for member in first_cycle_done {
                member.send(()).expect("the member waits");
            }
            for r in 1..CYCLES {
                seen.extend(churn_cycle(&mut churner, &guest, r));
            }
            (churner, seen)
        })
    };
    let results: Vec<(Client, Vec<String>)> = threads
        .into_iter()
        .map(|thread| thread.join().expect("member thread"))
        .collect();
    let (mut churner, churner_saw) = churn.join().expect("churner thread");

    let reference = &results[0].1;
    // The reference holds every chat line once, each sender's in the order
    // sent, and the churner's events in the order it caused them.
    let mut next = [0usize; MEMBERS];
    let mut churn_seen = Vec::new();
    for line in reference {
        if let Some(rest) = line.strip_prefix(&format!("MSG {ROOM} m")) {
            let (sender, text) = rest.split_once(' ').expect("MSG has text");
            let sender: usize = sender.parse().expect("sender index");
            assert_eq!(
                text,
                format!("m{sender}-{}", next[sender]),
                "m{sender}'s lines out of order"
            );
            next[sender] += 1;
        } else {
            churn_seen.push(line.clone());
        }
    }
    assert_eq!(next, [2 * HALF; MEMBERS]);
    let churn_expected: Vec<String> = (0..CYCLES).flat_map(|r| churn_events(&guest, r)).collect();
    assert_eq!(churn_seen, churn_expected);
    // The first cycle lies between everyone's first and second halves.
    let at = |wanted: &str| {
        reference
            .iter()
            .position(|line| line == wanted)
            .unwrap_or_else(|| panic!("{wanted:?} missing"))
    };
    let [first_join, _, first_leave] = churn_events(&guest, 0).map(|line| at(&line));
    for i in 0..MEMBERS {
        assert!(at(&format!("MSG {ROOM} m{i} m{i}-{}", HALF - 1)) < first_join);
        assert!(first_leave < at(&format!("MSG {ROOM} m{i} m{i}-{HALF}")));
    }
    // Every member, on whichever thread, saw that same sequence.
    for (i, (_, seen)) in results.iter().enumerate() {
        if let Some(at) = (0..TOTAL).find(|&n| seen[n] != reference[n]) {
            panic!(
                "m{i} diverges from m0 at line {at}: {:?} vs {:?}",
                seen[at], reference[at]
            );
        }
    }
    // The churner saw exactly the room's events from each of its JOINs to
    // the matching LEAVE.
    let mut churner_expected = Vec::new();
    for r in 0..CYCLES {
        let [join, _, leave] = churn_events(&guest, r).map(|line| at(&line));
        churner_expected.extend_from_slice(&reference[join..=leave]);
    }
    assert_eq!(churner_saw, churner_expected);

    let mut members: Vec<Client> = results.into_iter().map(|(member, _)| member).collect();
    for member in &mut members {
        member.expect_nothing_pending();
    }
    churner.expect_nothing_pending();
}
