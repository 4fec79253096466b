//! A member that never reads is dropped as a slow consumer once its outbound
//! queue (`--outbound-queue`) overflows; the rest of the room is told why and
//! carries on.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, READ_TIMEOUT, Server};

/// Chat lines carry a 6-digit sequence number and padding, 1000 bytes in all.
const LINE_BYTES: usize = 1000;
/// The flooder sends this many lines per write…
const CHUNK: usize = 16;
/// …and never gets more than this many lines ahead of what the watcher has
/// read, so the readers' own queues stay well under the limit of 64 however
/// the machine schedules the reader threads.
const WINDOW: usize = 32;
/// Upper bound on the flood: far more than any kernel buffering in front of
/// the non-reading member (it only has to overflow 64 queued frames).
const MAX_LINES: usize = 20_000;
/// Upper bound on the whole flood.
const FLOOD_TIME: Duration = Duration::from_secs(60);
const QUIT_SLOTH: &str = "QUIT den sloth slow-consumer";
const END_MARKER: &str = "end-of-flood";

fn chat_line(seq: usize) -> String {
    let head = format!("{seq:06} ");
    format!("{head}{}", "x".repeat(LINE_BYTES - head.len()))
}

/// What a reader of the room saw during the flood.
#[derive(Debug, Default)]
struct Seen {
    msgs: usize,
    /// How many flood lines came before the sloth's QUIT.
    quit_after: Option<usize>,
}

impl Seen {
    /// Checks one line read during the flood; returns `true` at the end marker.
    #[track_caller]
    fn take(&mut self, line: &str) -> bool {
        if line == QUIT_SLOTH {
            assert!(self.quit_after.is_none(), "second {QUIT_SLOTH:?}");
            self.quit_after = Some(self.msgs);
            return false;
        }
        if line == format!("MSG den flooder {END_MARKER}") {
            return true;
        }
        let text = line
            .strip_prefix("MSG den flooder ")
            .unwrap_or_else(|| panic!("unexpected line during the flood: {line:.80}"));
        assert_eq!(
            text,
            chat_line(self.msgs),
            "flood lines must arrive complete and in order"
        );
        self.msgs += 1;
        false
    }
}

enum Progress {
    Msgs(usize),
    Quit,
}

#[test]
fn member_that_never_reads_is_dropped_and_the_room_carries_on() {
    let server = Server::start(&["--outbound-queue", "64"]);

    // A small receive buffer, set before connecting, keeps the window small
    // so the server's queue for this member fills sooner.
    let mut sloth = Client::connect_with_rcvbuf(server.addr, 4096);
    sloth.welcome_as("sloth");
    sloth.join_alone("den");
    let mut watcher = server.named("watcher");
    watcher.send("/join den");
    watcher.expect("JOIN den watcher");
    watcher.expect("WHO den sloth watcher");
    let mut flooder = server.named("flooder");
    flooder.send("/join den");
    flooder.expect("JOIN den flooder");
    flooder.expect("WHO den sloth watcher flooder");
    watcher.expect("JOIN den flooder");
    // From here on the sloth reads nothing until the end of the test.

    let (progress_tx, progress) = mpsc::channel();
    let watcher_thread = thread::spawn(move || {
        let mut seen = Seen::default();
        for _ in 0..MAX_LINES + 2 {
            let line = watcher.line();
            if seen.take(&line) {
                return (watcher, seen);
            }
            let event = match line.as_str() {
                QUIT_SLOTH => Progress::Quit,
                _ => Progress::Msgs(seen.msgs),
            };
            // The flooder may have stopped listening; that is fine.
            let _ = progress_tx.send(event);
        }
        panic!("watcher never saw the end of the flood");
    });

    let started = Instant::now();
    let mut sent = 0;
    let mut watcher_msgs = 0;
    let mut flooder_seen = Seen::default();
    while flooder_seen.quit_after.is_none() {
        assert!(
            sent < MAX_LINES && started.elapsed() < FLOOD_TIME,
            "no {QUIT_SLOTH:?} after {sent} lines in {:?}",
            started.elapsed()
        );
        // Flow control on reads: wait until the watcher has caught up.
        while watcher_msgs + WINDOW < sent + CHUNK {
            match progress.recv_timeout(READ_TIMEOUT) {
                Ok(Progress::Msgs(count)) => watcher_msgs = count,
                Ok(Progress::Quit) => {}
                Err(error) => {
                    if let Err(panic) = watcher_thread.join() {
                        std::panic::resume_unwind(panic);
                    }
                    panic!("watcher stopped reporting: {error}");
                }
            }
        }
        let chunk: String = (sent..sent + CHUNK)
            .map(|seq| chat_line(seq) + "\n")
            .collect();
        flooder.send_raw(chunk.as_bytes());
        sent += CHUNK;
        // The flooder reads its own echoes (and possibly the QUIT) as well.
        while flooder_seen.msgs < sent {
            let line = flooder.line();
            assert!(!flooder_seen.take(&line), "end marker before it was sent");
        }
    }
    let flood_time = started.elapsed();

    flooder.send(END_MARKER);
    // Every flood line and the QUIT are already read: the marker is next.
    let line = flooder.line();
    assert!(
        flooder_seen.take(&line),
        "expected the end marker, got {line:.80}"
    );
    let (mut watcher, watcher_seen) = watcher_thread.join().expect("watcher thread");

    // Both remaining members got every flood line, and saw the sloth's QUIT at
    // the same point of the room's one sequence of events.
    assert_eq!(flooder_seen.msgs, sent);
    assert_eq!(watcher_seen.msgs, sent);
    assert_eq!(
        watcher_seen.quit_after, flooder_seen.quit_after,
        "members disagree on where the QUIT came"
    );

    // The room carries on with the two of them.
    watcher.send("hello flooder");
    watcher.expect("MSG den watcher hello flooder");
    flooder.expect("MSG den watcher hello flooder");
    flooder.send("hi watcher");
    flooder.expect("MSG den flooder hi watcher");
    watcher.expect("MSG den flooder hi watcher");
    flooder.send("/who");
    flooder.expect("WHO den watcher flooder");
    watcher.send("/rooms");
    watcher.expect("ROOMS den=2");
    watcher.expect_nothing_pending();
    flooder.expect_nothing_pending();
    // The nick is free again.
    let _again: Client = server.named("sloth");

    // The sloth's connection was closed by the server: once it reads, what
    // the kernel still held drains and the stream ends.
    let drained = sloth.drain_to_end(Duration::from_secs(20), 64 * 1024 * 1024);
    eprintln!(
        "slow consumer dropped after {sent} lines in {flood_time:?}; \
         it could still read {drained} bytes"
    );
}
