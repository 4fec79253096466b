//! `--outbound-bytes` bounds what waits for a peer that never reads in
//! bytes, not only in lines: a member sent long lines is dropped as a slow
//! consumer long before the line count would have stopped it.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Server};

/// Bytes of chat text per line.
const LINE_BYTES: usize = 4000;
/// Far past the kernel's buffering for one socket (a few MiB) plus the
/// 64 KiB bound, and far below the line bound of a million.
const MAX_LINES: usize = 5000;
const FLOOD_TIME: Duration = Duration::from_secs(60);

#[test]
fn a_non_reader_sent_long_lines_is_dropped_by_the_byte_bound() {
    let server = Server::start(&["--outbound-queue", "1000000", "--outbound-bytes", "65536"]);
    let mut flooder = server.named("flooder");
    flooder.join_alone("den");
    let mut sloth = Client::connect_with_rcvbuf(server.addr, 4096);
    sloth.welcome_as("sloth");
    sloth.send("/join den");
    flooder.expect("JOIN den sloth");

    let text = "x".repeat(LINE_BYTES);
    let own_line = format!("MSG den flooder {text}");
    let started = Instant::now();
    let mut sent = 0;
    let dropped_after = loop {
        assert!(
            sent < MAX_LINES,
            "still a member after {sent} lines of {LINE_BYTES} bytes"
        );
        assert!(started.elapsed() < FLOOD_TIME, "flood took too long");
        // One line at a time, read back before the next: only the sloth's
        // queue grows.
        flooder.send(&text);
        sent += 1;
        let line = flooder.line();
        if line == "QUIT den sloth slow-consumer" {
            flooder.expect(&own_line);
            break sent;
        }
        assert_eq!(line, own_line);
    };
    // Dropped within the bound plus what the kernel buffers: far from the
    // million lines the line bound alone would have allowed.
    assert!(dropped_after < MAX_LINES, "{dropped_after}");
    flooder.expect_nothing_pending();
    flooder.send("/who");
    flooder.expect("WHO den flooder");
}
