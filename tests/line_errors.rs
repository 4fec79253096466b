//! Line-level errors of the text lobby (SPEC §3): `--max-line` (bytes,
//! terminator excluded, exactly one `ERR line-too-long` per over-long line
//! however it is split), invalid UTF-8 and control characters
//! (`ERR bad-encoding`), and that each of these costs one line only — down to
//! a peer spraying binary garbage, which must not disturb anybody else.

mod common;

use std::io::Write;
use std::thread;

use common::{Client, Server};

/// The `--max-line` used by the length tests.
const MAX_LINE: &str = "10";

/// `expect_nothing_pending` for servers with `--max-line 10`: the harness's
/// probe line (`/ping probeN`) would itself be too long there. The probe
/// `/ping TOKEN` fits as long as the token has at most 4 bytes.
#[track_caller]
fn expect_nothing_pending_short(client: &mut Client, token: &str) {
    assert!(token.len() <= 4, "probe token {token:?} would be too long");
    client.send(&format!("/ping {token}"));
    client.expect(&format!("PONG {token}"));
}

/// A `--max-line 10` server with `al` and `bo` (short nicks, so `/nick NAME`
/// fits in 10 bytes) both in room `r`.
fn short_line_pair() -> (Server, Client, Client) {
    let server = Server::start(&["--max-line", MAX_LINE]);
    let (al, bo) = server.pair("al", "bo", "r");
    (server, al, bo)
}

/// Two clients `alice` and `bob` in room `lobby` on a default server.
fn default_pair() -> (Server, Client, Client) {
    let server = Server::start(&[]);
    let (alice, bob) = server.pair("alice", "bob", "lobby");
    (server, alice, bob)
}

/// xorshift64: deterministic pseudo-random bytes without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

// ---------------------------------------------------------------------------
// --max-line

#[test]
fn a_line_of_exactly_max_line_bytes_is_accepted() {
    let (_server, mut al, mut bo) = short_line_pair();
    assert_eq!("/ping 1234".len(), 10);
    al.send("/ping 1234");
    al.expect("PONG 1234");
    al.send("abcdefghij");
    al.expect("MSG r al abcdefghij");
    bo.expect("MSG r al abcdefghij");
    // Bytes, not characters: five two-byte characters fill the line exactly.
    assert_eq!("ééééé".len(), 10);
    al.send("ééééé");
    al.expect("MSG r al ééééé");
    bo.expect("MSG r al ééééé");
    expect_nothing_pending_short(&mut al, "p1");
    expect_nothing_pending_short(&mut bo, "p2");
}

#[test]
fn the_cr_of_crlf_does_not_count_toward_max_line() {
    let (_server, mut al, mut bo) = short_line_pair();
    al.send_raw(b"/ping 1234\r\n");
    al.expect("PONG 1234");
    al.send_raw(b"abcdefghij\r\n");
    al.expect("MSG r al abcdefghij");
    bo.expect("MSG r al abcdefghij");
    expect_nothing_pending_short(&mut al, "p1");
    expect_nothing_pending_short(&mut bo, "p2");
}

#[test]
fn a_line_one_byte_over_max_line_gets_exactly_one_line_too_long() {
    let (_server, mut al, mut bo) = short_line_pair();
    al.send("/ping 12345");
    al.expect_err("line-too-long");
    expect_nothing_pending_short(&mut al, "p1");
    al.send_raw(b"/ping 12345\r\n");
    al.expect_err("line-too-long");
    expect_nothing_pending_short(&mut al, "p2");
    // Over-long chat is not relayed.
    al.send("abcdefghijk");
    al.expect_err("line-too-long");
    expect_nothing_pending_short(&mut al, "p3");
    // Six two-byte characters are 12 bytes: too long, though only 6 characters.
    al.send("éééééé");
    al.expect_err("line-too-long");
    expect_nothing_pending_short(&mut al, "p4");
    expect_nothing_pending_short(&mut bo, "p5");
}

#[test]
fn an_over_long_line_that_is_also_bad_utf8_gets_only_line_too_long() {
    let (_server, mut al, _bo) = short_line_pair();
    let mut line = vec![0xff; 11];
    line.push(b'\n');
    al.send_raw(&line);
    al.expect_err("line-too-long");
    expect_nothing_pending_short(&mut al, "p1");
}

#[test]
fn an_over_long_line_split_across_writes_gets_exactly_one_error_and_blocks_nobody() {
    let (_server, mut al, mut bo) = short_line_pair();
    // Exactly the limit, then a `\r` that might still be a terminator, then
    // more: over-long after all. Between writes, `bo` does a round trip, so the
    // server's event loop turns (and likely reads each piece on its own) while
    // `al`'s partial line is pending — which must not hold `bo` up.
    let pieces: [&[u8]; 7] = [
        b"abcdefghij",
        b"\r",
        b"k",
        b"lmnopqrstu",
        b"vwxyz01234",
        b"56789",
        b"\n",
    ];
    for (index, piece) in pieces.iter().enumerate() {
        al.send_raw(piece);
        expect_nothing_pending_short(&mut bo, &format!("b{index}"));
    }
    al.expect_err("line-too-long");
    // The next line is handled normally, and there was exactly one ERR.
    al.send("/ping ok");
    al.expect("PONG ok");

    // Pieces that are each short but add up to an over-long line.
    for (index, piece) in [&b"abcd"[..], b"efgh", b"ijk", b"\n"].iter().enumerate() {
        al.send_raw(piece);
        expect_nothing_pending_short(&mut bo, &format!("c{index}"));
    }
    al.expect_err("line-too-long");
    al.send("hello");
    al.expect("MSG r al hello");
    bo.expect("MSG r al hello");
    expect_nothing_pending_short(&mut al, "p1");
    expect_nothing_pending_short(&mut bo, "p2");
}

#[test]
fn a_line_split_across_writes_within_the_limit_is_one_line() {
    let (_server, mut al, mut bo) = short_line_pair();
    for (index, piece) in [&b"abcde"[..], b"fghij", b"\r"].iter().enumerate() {
        al.send_raw(piece);
        expect_nothing_pending_short(&mut bo, &format!("b{index}"));
    }
    al.send_raw(b"\n");
    al.expect("MSG r al abcdefghij");
    bo.expect("MSG r al abcdefghij");
    expect_nothing_pending_short(&mut al, "p1");
}

#[test]
fn each_over_long_line_in_one_write_gets_its_own_single_error() {
    let (_server, mut al, mut bo) = short_line_pair();
    al.send_raw(b"aaaaaaaaaaaaaaaaaaaaaaaaa\nbbbbbbbbbbbbbbbbbbbbb\r\nok\n");
    al.expect_err("line-too-long");
    al.expect_err("line-too-long");
    al.expect("MSG r al ok");
    bo.expect("MSG r al ok");
    expect_nothing_pending_short(&mut al, "p1");
    expect_nothing_pending_short(&mut bo, "p2");
}

#[test]
fn a_huge_line_gets_one_error_and_the_session_goes_on() {
    let (_server, mut al, mut bo) = short_line_pair();
    let mut huge = vec![b'x'; 256 * 1024];
    huge.push(b'\n');
    al.send_raw(&huge);
    al.expect_err("line-too-long");
    al.send("after");
    al.expect("MSG r al after");
    bo.expect("MSG r al after");
    expect_nothing_pending_short(&mut al, "p1");
    expect_nothing_pending_short(&mut bo, "p2");
}

// ---------------------------------------------------------------------------
// Encoding

#[test]
fn invalid_utf8_is_bad_encoding_and_the_session_goes_on() {
    let (_server, mut alice, mut bob) = default_pair();
    let bad_lines: [&[u8]; 6] = [
        b"\xff\xfe\n",
        b"caf\xc3\n",            // truncated sequence
        b"\xc0\xaf\n",           // overlong encoding of '/'
        b"\xed\xa0\x80\n",       // UTF-16 surrogate
        b"\xf4\x90\x80\x80\r\n", // beyond U+10FFFF
        b"/nick al\xffice\n",    // inside a command, too
    ];
    for line in bad_lines {
        alice.send_raw(line);
        alice.expect_err("bad-encoding");
    }
    alice.expect_nothing_pending();
    bob.expect_nothing_pending();
    // Valid UTF-8 beyond ASCII is relayed unchanged.
    alice.send("héllo wörld ✓ 日本");
    alice.expect("MSG lobby alice héllo wörld ✓ 日本");
    bob.expect("MSG lobby alice héllo wörld ✓ 日本");
}

#[test]
fn a_bad_line_between_good_ones_in_one_write_costs_that_line_only() {
    let (_server, mut alice, mut bob) = default_pair();
    alice.send_raw(b"one\n\xff\ntwo\n");
    alice.expect("MSG lobby alice one");
    alice.expect_err("bad-encoding");
    alice.expect("MSG lobby alice two");
    bob.expect("MSG lobby alice one");
    bob.expect("MSG lobby alice two");
    alice.expect_nothing_pending();
    bob.expect_nothing_pending();
}

#[test]
fn control_characters_are_bad_encoding_and_never_relayed() {
    let (_server, mut alice, mut bob) = default_pair();
    let bad_lines: [&[u8]; 9] = [
        b"\x1b[31mred\x1b[0m\n", // ESC: a terminal escape
        b"nul\0byte\n",
        b"del\x7fete\n",
        b"bell\x07\n",
        b"\x01start\n",
        b"carriage\rreturn\n", // a `\r` that is not part of the terminator
        b"form\x0cfeed\n",
        b"/nick a\x1bb\n",       // inside a command
        b"/msg bob hi\x1b[2J\n", // inside a private message
    ];
    for line in bad_lines {
        alice.send_raw(line);
        alice.expect_err("bad-encoding");
    }
    alice.expect_nothing_pending();
    bob.expect_nothing_pending();
    alice.send("clean");
    alice.expect("MSG lobby alice clean");
    bob.expect("MSG lobby alice clean");
}

#[test]
fn a_tab_inside_chat_text_is_relayed() {
    let (_server, mut alice, mut bob) = default_pair();
    alice.send("col1\tcol2");
    alice.expect("MSG lobby alice col1\tcol2");
    bob.expect("MSG lobby alice col1\tcol2");
    alice.send("/msg bob a\tb");
    alice.expect("PRIVMSG alice bob a\tb");
    bob.expect("PRIVMSG alice bob a\tb");
    alice.expect_nothing_pending();
    bob.expect_nothing_pending();
}

// ---------------------------------------------------------------------------
// Garbage

#[test]
fn random_binary_garbage_from_one_peer_disturbs_nobody_else() {
    let server = Server::start(&[]);
    let mut before = server.named("before");
    before.join("lobby");

    let mut garbage = server.client();
    let mut writer = garbage.stream.try_clone().expect("clone the socket");
    // Drain the garbage peer's replies on another thread so that its own
    // output never backs up while it writes.
    let reader = thread::spawn(move || {
        let mut replies = Vec::new();
        // Bounded: 64 KiB holds at most 64 Ki lines.
        for _ in 0..=64 * 1024 {
            let line = garbage.line();
            if line == "BYE" {
                garbage.expect_eof();
                return replies;
            }
            replies.push(line);
        }
        panic!("no BYE after {} replies", replies.len());
    });
    let noise = XorShift(0x9E37_79B9_7F4A_7C15).bytes(64 * 1024);
    writer.write_all(&noise).expect("write the garbage");
    // End whatever partial line the noise left, then leave politely: the
    // session must still be handling lines.
    writer.write_all(b"\n/quit\n").expect("write /quit");
    let replies = reader.join().expect("the garbage peer gets BYE then EOF");
    assert!(
        !replies.is_empty(),
        "64 KiB of noise must have drawn some errors"
    );
    for reply in &replies {
        assert!(reply.starts_with("ERR "), "unexpected reply {reply:?}");
    }

    // The peer that was there before noticed nothing...
    before.expect_nothing_pending();
    // ...and one that arrives afterwards chats with it normally.
    let mut after = server.named("after");
    after.join_with("lobby", &mut before);
    after.send("still standing?");
    after.expect("MSG lobby after still standing?");
    before.expect("MSG lobby after still standing?");
    before.send("yes");
    before.expect("MSG lobby before yes");
    after.expect("MSG lobby before yes");
    before.expect_nothing_pending();
    after.expect_nothing_pending();
}
