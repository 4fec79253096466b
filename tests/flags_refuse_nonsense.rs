//! Every flag refuses nonsense at start: one line on stderr naming the flag
//! and its range, and exit status 2, before anything is bound.

mod common;

use std::process::Command;

use common::Server;

/// Runs the binary with `args`; asserts exit status 2 and returns stderr.
fn refused_with_status_2(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .output()
        .expect("run the switchboard binary");
    assert_eq!(output.status.code(), Some(2), "{args:?} was accepted");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Like [`refused_with_status_2`], and the refusal is exactly one line.
fn refused(args: &[&str]) -> String {
    let stderr = refused_with_status_2(args);
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line for {args:?}: {stderr:?}"
    );
    stderr
}

#[test]
fn zero_where_zero_means_nothing_is_refused() {
    for flag in [
        "--max-connections",
        "--max-line",
        "--room-capacity",
        "--outbound-queue",
        "--heartbeat",
        "--idle-timeout",
        "--threads",
        "--max-udp-sessions",
    ] {
        let line = refused(&[flag, "0"]);
        assert!(
            line.starts_with(&format!("switchboard: {flag} must be between 1 and ")),
            "{line:?}"
        );
        assert!(line.trim_end().ends_with(", not 0"), "{line:?}");
    }
}

#[test]
fn values_past_their_bound_are_refused() {
    let cases = [
        ("--heartbeat", "18446744073709551615", "31536000"),
        ("--idle-timeout", "31536001", "31536000"),
        ("--max-line", "1048577", "1048576"),
        ("--max-connections", "1000001", "1000000"),
        ("--threads", "1025", "1024"),
        ("--max-udp-sessions", "1000001", "1000000"),
    ];
    for (flag, value, max) in cases {
        let line = refused(&[flag, value]);
        let expected = format!("switchboard: {flag} must be between 1 and {max}, not {value}");
        assert_eq!(line.trim_end(), expected);
    }
}

#[test]
fn a_value_that_is_not_a_number_is_refused_by_the_parser() {
    // clap's own message: its first line names the flag and the value.
    let stderr = refused_with_status_2(&["--room-capacity", "many"]);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains("'many'") && first.contains("--room-capacity"),
        "{stderr:?}"
    );
}

#[test]
fn the_largest_max_line_alone_is_accepted() {
    // Its outbound byte bound follows it: no flag the user did not pass is
    // named in a refusal.
    let server = Server::start(&["--max-line", "1048576"]);
    let mut client = server.client();
    client.send(&format!("/ping {}", "x".repeat(100_000)));
    client.expect(&format!("PONG {}", "x".repeat(100_000)));
}
