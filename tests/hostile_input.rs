//! Hostile input, generated: the line and raw framers and the text-protocol
//! parser (SPEC §3) fed arbitrary bytes, arbitrary chunkings and arbitrary
//! strings. Pure functions and a `Decoder` over a `BytesMut`, no sockets.
//!
//! Every property runs a bounded number of cases (see `CASES_*`) so the
//! whole file stays within a few seconds on a small machine. Failures are not
//! persisted to `proptest-regressions/`; a case worth keeping becomes one of
//! the plain `#[test]`s at the bottom.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::Config;
use switchboard::protocol::{Command, ErrorCode, Rejection, decode_text, parse_line};
use switchboard::{FrameDecoder, FrameError, Framing, Inbound};
use tokio_util::codec::Decoder;

/// The reference model and decoder driver shared with the fuzz targets.
#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod model;

use model::{check_outcome, decode_reads, expected_lines};

/// Cases for the cheap decoder properties.
const CASES_DECODER: u32 = 2048;
/// Cases for the parser properties.
const CASES_PARSER: u32 = 2048;

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------
// Driving a decoder
// ---------------------------------------------------------------------------

/// Drains `decode` (or `decode_eof`) into `out`, failing if the decoder errs,
/// does not terminate within `budget` items, or leaves bytes after EOF.
fn drain(
    decoder: &mut FrameDecoder,
    buf: &mut BytesMut,
    out: &mut Vec<Inbound>,
    budget: usize,
    eof: bool,
) {
    loop {
        let item = if eof {
            decoder.decode_eof(buf)
        } else {
            decoder.decode(buf)
        };
        match item.expect("FrameDecoder never returns an error") {
            Some(item) => out.push(item),
            None => break,
        }
        assert!(
            out.len() <= budget,
            "decoder does not terminate: {} items from {budget} bytes",
            out.len()
        );
    }
    if eof {
        assert!(buf.is_empty(), "decode_eof left {} bytes", buf.len());
    }
}

/// `data` cut at `cuts` (positions taken modulo `data.len() + 1`, sorted,
/// duplicates making empty reads).
fn split_at_cuts<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    let mut reads = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts {
        reads.push(&data[start..cut]);
        start = cut;
    }
    reads.push(&data[start..]);
    reads
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

/// A byte biased toward what framing cares about: plain letters, `\n`, `\r`,
/// bytes that are never (or not here) valid UTF-8 or text, and anything at
/// all. Drawn from a `u16` rather than a `prop_oneof!` per byte, which is
/// twenty times slower to generate; 0 maps to `a`, so shrunk inputs read well.
fn hostile_byte(v: u16) -> u8 {
    let [class, low] = v.to_be_bytes();
    match class {
        0..=99 => b'a' + low % 5,
        100..=159 => b'\n',
        160..=199 => b'\r',
        200..=209 => [0xff, 0xc3, 0x80, 0x00, 0x1b][usize::from(low % 5)],
        _ => low,
    }
}

fn hostile_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u16>(), 0..max_len)
        .prop_map(|v| v.into_iter().map(hostile_byte).collect())
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(any::<usize>(), 0..12)
}

/// A line body (no `\n`) of `len` hostile bytes.
fn line_body(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    // Mapped rather than filtered: a filter would reject a byte in four.
    let not_newline = |v| match hostile_byte(v) {
        b'\n' => b'\r',
        b => b,
    };
    prop::collection::vec(any::<u16>(), len)
        .prop_map(move |v| v.into_iter().map(not_newline).collect())
}

/// Lines for `max_line`: each either within the limit or clearly over it
/// (longer than `max_line + 1`, so that stripping a final `\r` cannot bring
/// it back under), each terminated by `\n` or `\r\n`.
fn lines_around_limit(max_line: usize) -> impl Strategy<Value = Vec<(Vec<u8>, bool)>> {
    let line = prop_oneof![
        line_body(0..max_line + 1),
        line_body(max_line + 2..max_line * 4 + 16),
    ];
    prop::collection::vec((line, any::<bool>()), 0..10)
}

/// A valid nick or room name per SPEC §3.
fn valid_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,32}"
}

/// A string that is not a valid name and has no space or tab at either end
/// (those separate arguments, so `/join  a ` is the valid `/join a`). Other
/// Unicode whitespace is part of the word and must not vanish from it.
fn invalid_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[A-Za-z0-9_-]{33,48}",
        "[A-Za-z0-9_-]{0,8}[^A-Za-z0-9_-][A-Za-z0-9_-]{0,8}",
        "[A-Za-z0-9_-]{1,4}[ \t][A-Za-z0-9_-]{1,4}",
        "[\u{a0}\u{85}\u{3000}\u{2028}\u{feff}]?[A-Za-z0-9_-]{1,8}[\u{a0}\u{85}\u{3000}\u{2028}]?",
        any::<String>(),
    ]
    .prop_filter("not a valid name", |s| {
        !switchboard::protocol::is_valid_name(s)
    })
    .prop_filter("no separator at either end", |s| {
        !s.starts_with([' ', '\t']) && !s.ends_with([' ', '\t'])
    })
}

/// `word` with each ASCII letter's case chosen by `mask`.
fn recase(word: &str, mask: u32) -> String {
    word.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask & (1 << (i % 32)) != 0 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Runs a received line through the lobby's two steps, as a session does.
fn handle_line(bytes: &[u8]) -> Result<Option<Command>, Rejection> {
    parse_line(decode_text(bytes)?)
}

// ---------------------------------------------------------------------------
// Line framing
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(CASES_DECODER))]

    /// Arbitrary bytes in arbitrary reads, any `max_line` in 1..=64: no
    /// panic, termination (see `decode_reads`), and every byte accounted for.
    #[test]
    fn line_decoder_never_panics(
        input in hostile_bytes(512),
        cuts in cuts(),
        max_line in 1usize..=64,
    ) {
        let reads = split_at_cuts(&input, &cuts);
        decode_reads(Framing::Lines { max_line }, &reads);
    }

    /// The reads a stream arrives in never change what it decodes to, and
    /// one piece decodes to what the model says.
    #[test]
    fn line_chunking_does_not_matter(
        input in hostile_bytes(256),
        cuts in cuts(),
        max_line in 1usize..=64,
    ) {
        let framing = Framing::Lines { max_line };
        let whole = decode_reads(framing, &[&input]);
        let chunked = decode_reads(framing, &split_at_cuts(&input, &cuts));
        prop_assert_eq!(&chunked, &whole);
        let byte_by_byte: Vec<&[u8]> = input.chunks(1).collect();
        prop_assert_eq!(&decode_reads(framing, &byte_by_byte), &whole);
        prop_assert_eq!(&whole, &expected_lines(&input, max_line));
    }

    /// Frames fit the limit, hold no `\n` and no trailing `\r` of a `\r\n`;
    /// there is one Frame or Oversized per `\n`-terminated line, plus one
    /// Oversized for an unterminated tail already too long; a short tail is
    /// dropped.
    #[test]
    fn line_frames_respect_the_limit_and_count_lines(
        input in hostile_bytes(256),
        cuts in cuts(),
        max_line in 1usize..=64,
    ) {
        let items = decode_reads(Framing::Lines { max_line }, &split_at_cuts(&input, &cuts));
        let terminated = input.iter().filter(|&&b| b == b'\n').count();
        let tail = &input[input.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)..];
        let tail_too_long = tail.strip_suffix(b"\r").unwrap_or(tail).len() > max_line;
        prop_assert_eq!(items.len(), terminated + usize::from(tail_too_long));
        if tail_too_long {
            prop_assert_eq!(items.last(), Some(&Inbound::Oversized));
        }
        let lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        for (item, line) in items.iter().zip(&lines) {
            if let Inbound::Frame(frame) = item {
                prop_assert!(frame.len() <= max_line);
                prop_assert!(!frame.contains(&b'\n'));
                // The frame is its line with exactly one final `\r` removed.
                let stripped = line.strip_suffix(b"\r").unwrap_or(line);
                prop_assert_eq!(&frame[..], stripped);
            }
        }
    }

    /// Over-long lines of arbitrary content, however split: exactly one
    /// Oversized each, in place, and the lines around them intact.
    #[test]
    fn each_over_long_line_is_reported_exactly_once(
        (max_line, lines) in (1usize..=64).prop_flat_map(|m| (Just(m), lines_around_limit(m))),
        cuts in cuts(),
    ) {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for (body, crlf) in &lines {
            input.extend_from_slice(body);
            input.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
            // Only the `\r` of a `\r\n` is stripped; a body may end in `\r` too.
            let line = if *crlf { &body[..] } else { body.strip_suffix(b"\r").unwrap_or(body) };
            expected.push(if line.len() > max_line {
                Inbound::Oversized
            } else {
                Inbound::Frame(Bytes::copy_from_slice(line))
            });
        }
        let over_long = lines.iter().filter(|(body, _)| body.len() > max_line + 1).count();
        let items = decode_reads(Framing::Lines { max_line }, &split_at_cuts(&input, &cuts));
        let oversized = items.iter().filter(|i| **i == Inbound::Oversized).count();
        prop_assert_eq!(oversized, over_long);
        prop_assert_eq!(items, expected);
    }

    /// `FramedRead` resumes a stream after EOF when the source returns more
    /// data (tokio-util's `Decoder::decode_eof` documents this): after
    /// `decode_eof`, whatever state it ended in, the decoder takes new bytes
    /// as a fresh one would.
    #[test]
    fn line_decoder_survives_resuming_after_eof(
        before in hostile_bytes(64),
        after in hostile_bytes(64),
        max_line in 1usize..=16,
    ) {
        let mut decoder = FrameDecoder::new(Framing::Lines { max_line });
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        buf.extend_from_slice(&before);
        drain(&mut decoder, &mut buf, &mut out, before.len() + 1, false);
        drain(&mut decoder, &mut buf, &mut out, before.len() + 1, true);
        out.clear();
        buf.extend_from_slice(&after);
        drain(&mut decoder, &mut buf, &mut out, after.len() + 1, false);
        drain(&mut decoder, &mut buf, &mut out, after.len() + 1, true);
        prop_assert_eq!(out, decode_reads(Framing::Lines { max_line }, &[&after]));
    }
}

// ---------------------------------------------------------------------------
// Raw framing
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(CASES_DECODER))]

    /// Raw frames are the input, in order, whatever the reads: their
    /// concatenation is the input and none is empty.
    #[test]
    fn raw_frames_concatenate_to_the_input(
        input in prop::collection::vec(any::<u8>(), 0..1024),
        cuts in cuts(),
    ) {
        let reads = split_at_cuts(&input, &cuts);
        let items = decode_reads(Framing::Raw, &reads);
        let mut joined = Vec::new();
        for item in &items {
            match item {
                Inbound::Frame(frame) => {
                    prop_assert!(!frame.is_empty());
                    joined.extend_from_slice(frame);
                }
                Inbound::Oversized => prop_assert!(false, "raw framing has no limit"),
            }
        }
        prop_assert_eq!(&joined, &input);
        // One frame per non-empty read: each read is one `recv`.
        prop_assert_eq!(items.len(), reads.iter().filter(|r| !r.is_empty()).count());
    }
}

proptest! {
    #![proptest_config(config(CASES_DECODER))]

    /// Length-prefixed frames round-trip through `Framing::encode` whatever
    /// the reads; a partial frame at the end is dropped; and arbitrary bytes
    /// either decode or stop with `TooLarge`, never a panic.
    #[test]
    fn length_prefixed_frames_round_trip_and_refuse_what_is_too_large(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..12),
        cut_tail in 0usize..4,
        cuts in cuts(),
        garbage in hostile_bytes(256),
    ) {
        let framing = Framing::LengthPrefixed { max_frame: 32 };
        let mut wire: Vec<u8> = payloads.iter().flat_map(|p| framing.encode(p).to_vec()).collect();
        wire.extend_from_slice(&framing.encode(b"tail")[..cut_tail]);
        let mut decoder = FrameDecoder::new(framing);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let mut too_large = None;
        'reads: for read in split_at_cuts(&wire, &cuts) {
            buf.extend_from_slice(read);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(Inbound::Frame(frame))) => frames.push(frame.to_vec()),
                    Ok(Some(Inbound::Oversized)) => prop_assert!(false, "lengths are never Oversized"),
                    Ok(None) => break,
                    Err(FrameError::TooLarge { declared, max }) => {
                        too_large = Some((declared, max));
                        break 'reads;
                    }
                    Err(FrameError::Io(error)) => prop_assert!(false, "no I/O here: {error}"),
                }
            }
        }
        let expected: Vec<Vec<u8>> = payloads.iter().filter(|p| p.len() <= 32).cloned().collect();
        match payloads.iter().position(|p| p.len() > 32) {
            // Frames before the first oversized one arrive; then the stream stops.
            Some(first_too_large) => {
                prop_assert_eq!(&frames[..], &payloads[..first_too_large]);
                prop_assert_eq!(too_large, Some((payloads[first_too_large].len(), 32)));
            }
            None => {
                prop_assert_eq!(&frames, &expected);
                prop_assert_eq!(too_large, None);
                prop_assert!(decoder.decode_eof(&mut buf).expect("no error").is_none());
            }
        }
        // Garbage never panics: it decodes or is refused.
        let mut buf = BytesMut::from(&garbage[..]);
        let mut decoder = FrameDecoder::new(framing);
        while let Ok(Some(_)) = decoder.decode(&mut buf) {}
    }
}

// ---------------------------------------------------------------------------
// Text protocol
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(CASES_PARSER))]

    /// Arbitrary bytes through `decode_text` then `parse_line`: no panic,
    /// `bad-encoding` exactly for non-UTF-8 or C0/DEL other than tab, and
    /// every outcome one of the three shapes with a SPEC code.
    #[test]
    fn arbitrary_bytes_never_panic_the_parser(
        bytes in prop_oneof![
            hostile_bytes(80),
            prop::collection::vec(any::<u8>(), 0..80),
            // A slash first, so the command branch gets garbage too.
            hostile_bytes(40).prop_map(|b| [&b"/"[..], &b].concat()),
        ],
    ) {
        let decoded = decode_text(&bytes);
        let clean = std::str::from_utf8(&bytes)
            .map(|s| !s.chars().any(|c| c.is_ascii_control() && c != '\t'))
            .unwrap_or(false);
        match decoded {
            Ok(text) => {
                prop_assert!(clean);
                prop_assert_eq!(text.as_bytes(), &bytes[..]);
                check_outcome(text, &parse_line(text));
            }
            Err(rejection) => {
                prop_assert!(!clean);
                prop_assert_eq!(rejection.code, ErrorCode::BadEncoding);
            }
        }
    }

    /// Arbitrary strings, and command-shaped ones, straight into
    /// `parse_line`: no panic, a well-formed outcome.
    #[test]
    fn arbitrary_strings_never_panic_the_parser(
        line in prop_oneof![
            any::<String>(),
            "/[a-zA-Z]{0,7}([ \t]{1,2}[^\n]{0,12}){0,3}[ \t]{0,2}",
            "/(nick|join|leave|rooms|who|ping|pong|quit|msg)[ \t\u{a0}\u{3000}/]{0,3}.{0,40}",
        ],
    ) {
        check_outcome(&line, &parse_line(&line));
    }

    /// `/join NAME` and `/nick NAME` with any valid name, separated by any
    /// run of spaces and tabs and with any trailing ones, parse to that name.
    #[test]
    fn valid_names_are_taken_verbatim(
        name in valid_name(),
        sep in "[ \t]{1,3}",
        trailing in "[ \t]{0,2}",
    ) {
        prop_assert_eq!(
            handle_line(format!("/join{sep}{name}{trailing}").as_bytes()),
            Ok(Some(Command::Join(name.clone())))
        );
        prop_assert_eq!(
            handle_line(format!("/nick{sep}{name}{trailing}").as_bytes()),
            Ok(Some(Command::Nick(name.clone())))
        );
        prop_assert_eq!(
            handle_line(format!("/who{sep}{name}").as_bytes()),
            Ok(Some(Command::Who(Some(name))))
        );
    }

    /// Anything else as the argument is refused with `bad-name` (one word
    /// outside the alphabet or too long) or `bad-args` (none, or several).
    #[test]
    fn invalid_names_are_refused(name in invalid_name()) {
        for verb in ["join", "nick"] {
            let line = format!("/{verb} {name}");
            let code = parse_line(&line).map_err(|r| r.code);
            prop_assert!(
                matches!(code, Err(ErrorCode::BadName | ErrorCode::BadArgs)),
                "{:?} gave {:?}", line, code
            );
        }
    }

    /// Verbs are case-insensitive: any casing of `join`, `nick`, `who` and
    /// `ping` parses to what the lower-case verb does.
    #[test]
    fn verbs_ignore_case(
        mask in any::<u32>(),
        name in valid_name(),
        token in "[!-~]{1,12}",
    ) {
        for (verb, arg) in [
            ("join", Some(&name)),
            ("nick", Some(&name)),
            ("who", Some(&name)),
            ("who", None),
            ("ping", Some(&token)),
            ("ping", None),
        ] {
            let line = |v: &str| match arg {
                Some(arg) => format!("/{v} {arg}"),
                None => format!("/{v}"),
            };
            let lower = parse_line(&line(verb));
            prop_assert!(matches!(lower, Ok(Some(_))), "{:?} gave {:?}", line(verb), lower);
            prop_assert_eq!(parse_line(&line(&recase(verb, mask))), lower);
        }
    }

    /// `//text` is chat text `/text`; any line not starting with `/` is chat
    /// text as it stands.
    #[test]
    fn a_double_slash_escapes_chat_text(text in any::<String>()) {
        prop_assert_eq!(
            parse_line(&format!("//{text}")),
            Ok(Some(Command::Say(format!("/{text}"))))
        );
        if !text.is_empty() && !text.starts_with('/') {
            prop_assert_eq!(parse_line(&text), Ok(Some(Command::Say(text.clone()))));
        }
    }

    /// The whole inbound path on garbage: line framing, then each frame as
    /// a session's hub would take it. Nothing panics, and every over-long
    /// line and every frame gets exactly one outcome.
    #[test]
    fn framed_garbage_never_panics_the_lobby_path(
        input in hostile_bytes(256),
        cuts in cuts(),
        max_line in 1usize..=64,
    ) {
        for item in decode_reads(Framing::Lines { max_line }, &split_at_cuts(&input, &cuts)) {
            if let Inbound::Frame(frame) = item {
                let outcome = handle_line(&frame);
                if let Ok(text) = decode_text(&frame) {
                    check_outcome(text, &outcome);
                } else {
                    prop_assert_eq!(outcome.map_err(|r| r.code), Err(ErrorCode::BadEncoding));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Minimal cases the properties found. Both were bugs at 4ab5142, fixed in
// 7bbc660; these pin the fixes.
// ---------------------------------------------------------------------------

/// Was a panic: `decode_eof` dropped a partial line with `buf.clear()` but left
/// `scanned` (and `discarding`) as they were. When `FramedRead` resumed after
/// EOF with fewer new bytes than the dropped partial line, `decode` sliced
/// `buf[scanned..]` past the end ("range start index 2 out of range for
/// slice of length 1").
#[test]
fn resuming_after_eof_with_a_short_read_does_not_panic() {
    let mut decoder = FrameDecoder::new(Framing::Lines { max_line: 8 });
    let mut buf = BytesMut::from(&b"ab"[..]);
    assert_eq!(decoder.decode(&mut buf).unwrap(), None);
    assert_eq!(decoder.decode_eof(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"x");
    assert_eq!(decoder.decode(&mut buf).unwrap(), None);
}

/// The same bug without the panic: the stale `scanned` skipped the new
/// bytes' first newline, so two lines came out as one frame `x\ny`.
#[test]
fn resuming_after_eof_frames_the_new_bytes_afresh() {
    let mut decoder = FrameDecoder::new(Framing::Lines { max_line: 8 });
    let mut buf = BytesMut::from(&b"ab"[..]);
    assert_eq!(decoder.decode(&mut buf).unwrap(), None);
    assert_eq!(decoder.decode_eof(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"x\ny\n");
    let first = decoder.decode(&mut buf).unwrap();
    assert_eq!(first, Some(Inbound::Frame(Bytes::from_static(b"x"))));
}

/// Was accepted: `parse_line` trimmed the argument with `str::trim` (Unicode
/// whitespace) but split words on ASCII space and tab only, so a name that
/// ended (or started) in U+00A0, U+3000 or U+0085 — all of which pass
/// `decode_text` — was taken as a different, valid name (`/nick bob\u{a0}`
/// gave `Nick("bob")`), while the same character inside the name was
/// `bad-name`. SPEC §3: names are 1–32 characters of `A–Z a–z 0–9 _ -`.
#[test]
fn unicode_whitespace_does_not_vanish_from_a_name() {
    let inside = handle_line("/nick bo\u{a0}b".as_bytes()).map_err(|r| r.code);
    assert_eq!(inside, Err(ErrorCode::BadName));
    for line in ["/nick bob\u{a0}", "/join \u{3000}lobby", "/nick bob\u{85}"] {
        let outcome = handle_line(line.as_bytes()).map_err(|r| r.code);
        assert!(
            matches!(outcome, Err(ErrorCode::BadName | ErrorCode::BadArgs)),
            "{line:?} gave {outcome:?}"
        );
    }
}
