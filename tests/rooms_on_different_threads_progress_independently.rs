//! Two rooms sequenced on different threads progress independently: while
//! one room is flooded by several clients, the other room's chat round trips
//! complete, and neither room sees a line of the other.

mod common;
mod embedded;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;

use common::{Client, READ_TIMEOUT, Server};
use embedded::{rooms_on_different_sequencers, sequencer_of};

const THREADS: usize = 2;
/// Clients flooding the busy room.
const FLOODERS: usize = 3;
/// Lines a flooder writes at once before waiting for the last one to come
/// back: the flood stays in the server, not in socket buffers.
const BATCH: usize = 100;
/// A flooder stops after this many lines even if the quiet room never
/// finishes: the bound that makes a starved room fail rather than hang.
const MAX_LINES: usize = 100_000;
/// Batches each flooder completes before the quiet room starts: the flood is
/// under way.
const WARM_BATCHES: usize = 5;
/// Chat round trips the quiet room completes during the flood.
const ROUND_TRIPS: usize = 20;

/// What a flooder thread hands back: its client, how many lines it sent,
/// and the next line number it expects from each flooder.
type Flooded = (Client, usize, [usize; FLOODERS]);

/// Checks one line of the flooded room: `MSG <room> f<j> f<j>-<n>`, each
/// flooder's lines numbered in the order sent. Returns `(j, n)`.
#[track_caller]
fn flood_line(room: &str, line: &str, next: &mut [usize; FLOODERS]) -> (usize, usize) {
    let rest = line
        .strip_prefix(&format!("MSG {room} f"))
        .unwrap_or_else(|| panic!("unexpected line in {room}: {line:?}"));
    let (sender, text) = rest.split_once(' ').expect("MSG has text");
    let sender: usize = sender.parse().expect("flooder index");
    assert_eq!(
        text,
        format!("f{sender}-{}", next[sender]),
        "f{sender}'s lines out of order"
    );
    next[sender] += 1;
    (sender, next[sender] - 1)
}

/// Floods `room` in batches until `stop` is set or `MAX_LINES` are sent,
/// reading every line of the room meanwhile; reports on `warm` once
/// `WARM_BATCHES` batches have come back.
fn flood(
    mut client: Client,
    index: usize,
    room: String,
    stop: Arc<AtomicBool>,
    warm: mpsc::Sender<usize>,
) -> Flooded {
    let mut next = [0usize; FLOODERS];
    let mut sent = 0;
    let mut batches = 0;
    while !stop.load(Ordering::Acquire) && sent < MAX_LINES {
        let mut batch = String::new();
        for _ in 0..BATCH {
            batch.push_str(&format!("f{index}-{sent}\n"));
            sent += 1;
        }
        client.send_raw(batch.as_bytes());
        // Bounded: every line read is one the flooders sent, each within the
        // read timeout.
        while flood_line(&room, &client.line(), &mut next) != (index, sent - 1) {}
        batches += 1;
        if batches == WARM_BATCHES {
            let _ = warm.send(index);
        }
    }
    (client, sent, next)
}

#[test]
fn a_room_on_another_thread_completes_round_trips_while_one_room_is_flooded() {
    // Every line a flooded member is owed fits its outbound queue, so no one
    // is dropped as a slow consumer while the test's threads share the CPU.
    let server = Server::start(&[
        "--threads",
        &THREADS.to_string(),
        "--outbound-queue",
        "1000000",
    ]);
    let (busy, quiet) = rooms_on_different_sequencers("flood", "quiet", THREADS);
    assert_ne!(sequencer_of(&busy, THREADS), sequencer_of(&quiet, THREADS));

    let mut flooders: Vec<Client> = Vec::new();
    for i in 0..FLOODERS {
        let mut flooder = server.named(&format!("f{i}"));
        flooder.join(&busy);
        for earlier in &mut flooders {
            earlier.expect(&format!("JOIN {busy} f{i}"));
        }
        flooders.push(flooder);
    }
    let (mut bee, mut bob) = server.pair("bee", "bob", &quiet);

    let stop = Arc::new(AtomicBool::new(false));
    let (warm_tx, warm) = mpsc::channel();
    let threads: Vec<_> = flooders
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let (room, stop, warm) = (busy.clone(), stop.clone(), warm_tx.clone());
            thread::spawn(move || flood(client, i, room, stop, warm))
        })
        .collect();
    for _ in 0..FLOODERS {
        warm.recv_timeout(READ_TIMEOUT)
            .expect("every flooder is under way");
    }

    // The quiet room's round trips, each line back to its sender and its
    // other member, while the flooders keep flooding.
    for k in 0..ROUND_TRIPS {
        bee.send(&format!("rt-{k}"));
        bee.expect(&format!("MSG {quiet} bee rt-{k}"));
        bob.expect(&format!("MSG {quiet} bee rt-{k}"));
    }
    stop.store(true, Ordering::Release);

    let flooded: Vec<Flooded> = threads
        .into_iter()
        .map(|thread| thread.join().expect("flooder thread"))
        .collect();
    let sent: Vec<usize> = flooded.iter().map(|(_, sent, _)| *sent).collect();
    for (i, &lines) in sent.iter().enumerate() {
        assert!(
            lines < MAX_LINES,
            "f{i} ran out of lines ({lines}) before {quiet} completed {ROUND_TRIPS} round trips"
        );
    }
    // Every flooder reads the rest of the flood: every line sent, each
    // flooder's in order, and nothing from the quiet room.
    // (All stay connected until the end, or the others would see a QUIT.)
    let mut clients = Vec::new();
    for (mut client, _, mut next) in flooded {
        while next.iter().zip(&sent).any(|(seen, sent)| seen < sent) {
            flood_line(&busy, &client.line(), &mut next);
        }
        assert_eq!(next.as_slice(), sent.as_slice());
        clients.push(client);
    }
    for client in &mut clients {
        client.expect_nothing_pending();
    }
    bee.expect_nothing_pending();
    bob.expect_nothing_pending();
}
