//! Regression (hostile review, `t22_claimleak2.py`): a nick claimed by a
//! session that ended while its claim was on the way (here: dropped as a
//! slow consumer in the middle of a `/nick`) stayed in the directory, so
//! `/msg` still found the departed session, and no one could take the nick.
//! Every nick of a session that has ended must be free: `/msg` answers
//! `ERR no-such-nick` and `/nick` takes it.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Server};

/// Rounds, each on a server of its own: in one round, a few of the victims
/// are dropped while a claim is on the way, most often; in some, none is.
const ROUNDS: usize = 4;

/// Sessions that rename themselves without pause and never read.
const VICTIMS: usize = 24;
/// `/nick` commands per write of a victim.
const NICKS_PER_WRITE: usize = 5;
/// The most writes a victim makes (it stops once its connection is gone).
const MAX_WRITES: usize = 20_000;
/// Long lines per write of the flooder.
const LONG_PER_WRITE: usize = 20;
/// The most lines the flooder reads while waiting for the echoes of one
/// write (the victims' `NICK` lines come in between).
const MAX_LINES_PER_BATCH: usize = 1_000_000;
/// How long every victim may take to be dropped.
const ALL_GONE_WITHIN: Duration = Duration::from_secs(6);

/// The nick victim `i` takes with its `k`-th `/nick`.
fn nick(i: usize, k: usize) -> String {
    format!("v{i}x{k}")
}

#[test]
fn nicks_of_sessions_dropped_mid_rename_are_free_again() {
    for _ in 0..ROUNDS {
        drop_victims_mid_rename_then_look_their_nicks_up();
    }
}

/// One round: victims renaming without pause are dropped as slow
/// consumers; then no nick they had or were taking is found, and every one
/// of them can be taken.
fn drop_victims_mid_rename_then_look_their_nicks_up() {
    let server = Server::start(&["--threads", "8", "--outbound-queue", "2"]);

    // The observer reads everything said in the room, on a thread of its
    // own, and hands each line over; `/ping stop` ends it.
    let mut observer = server.named("observer");
    observer.join_alone("r");
    let mut observer_writes = observer.stream.try_clone().expect("clone");
    let (lines_tx, lines) = mpsc::channel();
    let observer_thread = thread::spawn(move || {
        loop {
            let line = observer.line();
            if line == "PONG stop" {
                return;
            }
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let next_line = |what: &str| {
        lines
            .recv_timeout(common::READ_TIMEOUT)
            .unwrap_or_else(|_| panic!("observer: no line while waiting for {what}"))
    };

    // Victims: a 2 KiB receive window and never a read after WELCOME.
    let mut victims = Vec::new();
    for _ in 0..VICTIMS {
        let mut victim = Client::connect_with_rcvbuf(server.addr, 2048);
        victim.welcome();
        victim.send("/join r");
        let joined = format!("JOIN r {}", victim.nick);
        assert_eq!(next_line(&joined), joined);
        victims.push(victim);
    }
    // A flooder whose long lines fill the victims' windows.
    let mut flooder = server.named("flooder");
    flooder.send("/join r");
    assert_eq!(next_line("the flooder"), "JOIN r flooder");

    let stop = Arc::new(AtomicBool::new(false));
    let renamers: Vec<_> = victims
        .iter()
        .enumerate()
        .map(|(i, victim)| {
            let mut stream = victim.stream.try_clone().expect("clone");
            let stop = stop.clone();
            thread::spawn(move || {
                let mut k = 0;
                for _ in 0..MAX_WRITES {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let batch: String = (k..k + NICKS_PER_WRITE)
                        .map(|k| format!("/nick {}\n", nick(i, k)))
                        .collect();
                    k += NICKS_PER_WRITE;
                    if stream.write_all(batch.as_bytes()).is_err() {
                        return; // dropped: what this test waits for
                    }
                }
            })
        })
        .collect();
    // It sends a batch of long lines and reads its own echoes of them (and
    // whatever else the room says meanwhile) before the next batch: fast,
    // and never a slow consumer itself.
    let flooding = {
        let stop = stop.clone();
        thread::spawn(move || {
            let long = "y".repeat(2000);
            let batch = format!("{long}\n").repeat(LONG_PER_WRITE);
            let echo = format!("MSG r flooder {long}");
            for _ in 0..MAX_WRITES {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                flooder.send_raw(batch.as_bytes());
                let mut echoed = 0;
                for _ in 0..MAX_LINES_PER_BATCH {
                    if flooder.line() == echo {
                        echoed += 1;
                        if echoed == LONG_PER_WRITE {
                            break;
                        }
                    }
                }
                assert_eq!(echoed, LONG_PER_WRITE, "the flooder's echoes");
            }
        })
    };

    // Wait until every victim has been dropped as a slow consumer, noting
    // the nick it had then.
    let guests: Vec<String> = victims.iter().map(|victim| victim.nick.clone()).collect();
    let deadline = Instant::now() + ALL_GONE_WITHIN;
    let mut last_nick: Vec<Option<usize>> = vec![None; VICTIMS];
    let mut gone = 0;
    while gone < VICTIMS {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            panic!("only {gone} of {VICTIMS} victims dropped within {ALL_GONE_WITHIN:?}");
        };
        let Some(rest) = line.strip_prefix("QUIT r ") else {
            continue;
        };
        let (who, reason) = rest.split_once(' ').expect("QUIT r NICK REASON");
        assert_eq!(reason, "slow-consumer", "{line}");
        // `v<i>x<k>`, or the guest nick of a victim dropped before its
        // first rename (its next nick is then `v<i>x0`).
        let (i, k) = match who.strip_prefix('v').and_then(|rest| rest.split_once('x')) {
            Some((i, k)) => (i.parse().expect("victim"), k.parse().expect("count")),
            None => {
                let i = guests.iter().position(|guest| guest == who);
                (i.unwrap_or_else(|| panic!("not a victim: {line}")), 0)
            }
        };
        assert!(
            last_nick[i].replace(k).is_none(),
            "two QUITs for victim {i}"
        );
        gone += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for renamer in renamers {
        renamer.join().expect("renamer");
    }
    flooding.join().expect("flooder");
    observer_writes
        .write_all(b"/ping stop\n")
        .expect("observer");
    observer_thread.join().expect("observer thread");

    // The nick each victim had when it was dropped, and those it was about
    // to take, are no one's: `/msg` does not find them …
    let mut checker = server.named("checker");
    let candidates: Vec<String> = last_nick
        .iter()
        .enumerate()
        .flat_map(|(i, k)| {
            let k = k.expect("every victim quit");
            (k..k + 3).map(move |k| nick(i, k))
        })
        .collect();
    let batch: String = candidates
        .iter()
        .map(|name| format!("/msg {name} still there?\n"))
        .collect();
    checker.send_raw(batch.as_bytes());
    let mut found = Vec::new();
    for name in &candidates {
        let line = checker.line();
        if line != format!("ERR no-such-nick no one is called {name}") {
            found.push(line);
        }
    }
    assert!(
        found.is_empty(),
        "{} nicks of departed sessions still answered: {:?}",
        found.len(),
        &found[..found.len().min(5)]
    );
    // … and anyone can take them.
    let mut old = checker.nick.clone();
    for name in &candidates {
        checker.send(&format!("/nick {name}"));
        checker.expect(&format!("NICK {old} {name}"));
        old = name.clone();
    }
    checker.expect_nothing_pending();
}
