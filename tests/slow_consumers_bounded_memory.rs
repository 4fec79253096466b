//! A hundred members that never read, in a room someone floods, cost the
//! server at most their outbound queues: they are dropped as slow consumers
//! and the server's memory stays flat while the flood goes on.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Server, rss_bytes};

const NON_READERS: usize = 100;
const OUTBOUND_QUEUE: usize = 64;
const LINE_BYTES: usize = 1000;
/// Lines the flooder sends per write, and how far it may run ahead of its own
/// echoes, so its own queue stays far below the limit.
const CHUNK: usize = 16;
const WINDOW: usize = 32;
/// The flood goes on this long after the last non-reader was dropped, so
/// memory that grew with the flood would show.
const LINES_AFTER_LAST_DROP: usize = 2_000;
const MAX_LINES: usize = 40_000;
const FLOOD_TIME: Duration = Duration::from_secs(90);
/// Allocator and runtime noise allowed on top of the queues' own bound.
const SLACK_BYTES: u64 = 8 << 20;

#[test]
fn non_reading_members_are_dropped_and_memory_stays_within_their_queues() {
    let queue = OUTBOUND_QUEUE.to_string();
    let server = Server::start(&["--outbound-queue", &queue, "--room-capacity", "200"]);
    let mut flooder = server.named("flooder");
    flooder.join("flood");

    let mut non_readers = Vec::with_capacity(NON_READERS);
    for _ in 0..NON_READERS {
        let mut peer = Client::connect_with_rcvbuf(server.addr, 4096);
        peer.welcome();
        peer.send("/join flood");
        flooder.expect(&format!("JOIN flood guest{}", peer.id));
        non_readers.push(peer);
    }
    flooder.expect_nothing_pending();

    let baseline = rss_bytes(server.pid());
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling, pid) = (peak.clone(), sampling.clone(), server.pid());
        thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let text = "x".repeat(LINE_BYTES);
    let echo = format!("MSG flood flooder {text}");
    let started = Instant::now();
    let (mut sent, mut echoed, mut dropped) = (0, 0, 0);
    let mut last_drop_at = None;
    while last_drop_at.is_none_or(|at| echoed < at + LINES_AFTER_LAST_DROP) {
        assert!(
            sent < MAX_LINES,
            "flood limit reached: {dropped} of {NON_READERS} dropped"
        );
        assert!(started.elapsed() < FLOOD_TIME, "flood took too long");
        let chunk: String = (0..CHUNK).map(|_| format!("{text}\n")).collect();
        flooder.send_raw(chunk.as_bytes());
        sent += CHUNK;
        while echoed + WINDOW < sent {
            let line = flooder.line();
            if line == echo {
                echoed += 1;
            } else {
                assert!(
                    line.starts_with("QUIT flood guest") && line.ends_with(" slow-consumer"),
                    "unexpected line: {line:.80}"
                );
                dropped += 1;
                if dropped == NON_READERS {
                    last_drop_at = Some(echoed);
                }
            }
        }
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.join().expect("sampler");

    assert_eq!(dropped, NON_READERS);
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    let bound = (NON_READERS * OUTBOUND_QUEUE * LINE_BYTES) as u64 + SLACK_BYTES;
    eprintln!("flood of {sent} lines: peak RSS growth {growth} bytes (bound {bound})");
    assert!(
        growth <= bound,
        "server RSS grew {growth} bytes during the flood, more than {bound}"
    );
    for _ in echoed..sent {
        flooder.expect(&echo);
    }
    flooder.send("/who");
    flooder.expect("WHO flood flooder");
}
