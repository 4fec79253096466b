//! Helpers shared by the fuzz targets: turning fuzz input into reads,
//! driving a [`FrameDecoder`] as `FramedRead` does, and the reference model
//! of line framing that `tests/hostile_input.rs` also uses.

use bytes::{Bytes, BytesMut};
use switchboard::protocol::{Command, ErrorCode, Rejection, is_valid_name};
use switchboard::{FrameDecoder, Framing, Inbound};
use tokio_util::codec::Decoder;

/// Splits fuzz input into read sizes and the byte stream: the first byte
/// says how many read sizes follow (0–15), each following byte is one read's
/// length (0 = an empty read); whatever the sizes leave over is one last read,
/// so there is always at least one read.
pub fn reads_from(data: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return (vec![&[]], &[]);
    };
    let count = usize::from(count % 16).min(rest.len());
    let (sizes, stream) = rest.split_at(count);
    let mut reads = Vec::with_capacity(count + 1);
    let mut start = 0;
    for &size in sizes {
        let end = (start + usize::from(size)).min(stream.len());
        reads.push(&stream[start..end]);
        start = end;
    }
    reads.push(&stream[start..]);
    (reads, stream)
}

/// Feeds `reads` in order, draining `decode` after each, then drains
/// `decode_eof`. Panics if the decoder errs, yields more items than there are
/// bytes plus one (it would not terminate), or leaves bytes after EOF.
pub fn decode_reads(framing: Framing, reads: &[&[u8]]) -> Vec<Inbound> {
    let mut decoder = FrameDecoder::new(framing);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let budget = reads.iter().map(|r| r.len()).sum::<usize>() + 1;
    let mut step = |decoder: &mut FrameDecoder, buf: &mut BytesMut, eof: bool| {
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
            assert!(out.len() <= budget, "decoder does not terminate");
        }
    };
    for read in reads {
        buf.extend_from_slice(read);
        step(&mut decoder, &mut buf, false);
    }
    step(&mut decoder, &mut buf, true);
    assert!(buf.is_empty(), "decode_eof left bytes behind");
    out
}

/// What a line decoder must produce for `input`: each `\n`-terminated line,
/// one trailing `\r` removed, as a `Frame` if it has at most `max_line`
/// bytes and `Oversized` otherwise; an unterminated tail is dropped unless it
/// is already too long without a final `\r` (then it is one `Oversized`).
pub fn expected_lines(input: &[u8], max_line: usize) -> Vec<Inbound> {
    let mut pieces: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let tail = pieces.pop().unwrap_or_default();
    let mut out: Vec<Inbound> = pieces
        .into_iter()
        .map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > max_line {
                Inbound::Oversized
            } else {
                Inbound::Frame(Bytes::copy_from_slice(line))
            }
        })
        .collect();
    if tail.strip_suffix(b"\r").unwrap_or(tail).len() > max_line {
        out.push(Inbound::Oversized);
    }
    out
}

/// The error codes of SPEC §3.
pub const SPEC_CODES: [&str; 12] = [
    "unknown-command",
    "bad-name",
    "nick-taken",
    "not-in-room",
    "room-full",
    "no-such-nick",
    "line-too-long",
    "bad-encoding",
    "server-full",
    "idle-timeout",
    "bad-args",
    "rate-limited",
];

/// Checks the shape of any parse outcome for `line`.
pub fn check_outcome(line: &str, outcome: &Result<Option<Command>, Rejection>) {
    match outcome {
        Ok(None) => assert!(line.is_empty(), "only an empty line is ignored"),
        Ok(Some(command)) => {
            assert!(!line.is_empty());
            match command {
                Command::Nick(name) | Command::Join(name) | Command::Who(Some(name)) => {
                    assert!(
                        is_valid_name(name),
                        "{line:?} parsed to invalid name {name:?}"
                    );
                    // The name is the argument as sent: nothing vanished from it.
                    let argument = line
                        .split_once([' ', '\t'])
                        .map(|(_, rest)| rest.trim_matches([' ', '\t']));
                    assert_eq!(
                        argument,
                        Some(name.as_str()),
                        "{line:?} lost part of its name"
                    );
                }
                Command::Ping(Some(token)) | Command::Pong(Some(token)) => {
                    assert!(!token.is_empty() && !token.contains([' ', '\t']));
                }
                Command::Msg { to, text } => {
                    assert!(!to.is_empty() && !text.is_empty());
                }
                Command::Say(text) => {
                    let expected = line.strip_prefix('/').unwrap_or(line);
                    assert_eq!(text, expected, "chat text is the line, one `/` unescaped");
                }
                _ => {}
            }
        }
        Err(rejection) => {
            assert!(
                SPEC_CODES.contains(&rejection.code.as_str()),
                "code {:?} is not in SPEC §3",
                rejection.code
            );
            assert!(
                matches!(
                    rejection.code,
                    ErrorCode::UnknownCommand | ErrorCode::BadArgs | ErrorCode::BadName
                ),
                "parse_line answered {line:?} with {:?}, not a parse error",
                rejection.code
            );
            assert!(line.starts_with('/') && !line.starts_with("//"));
        }
    }
}
