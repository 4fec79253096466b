//! The lobby protocol of SPEC §3 (text) and §5 (JSON): parsing client lines
//! into [`Command`]s and rendering server lines from [`Reply`]s. Pure
//! functions, no I/O, so every rule can be tested without a socket.

mod command;
mod json;
mod reply;

pub use command::{Command, parse_line};
pub use json::parse_json_line;
pub use reply::Reply;

/// The error codes of `ERR <code> <text>` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A `/verb` the lobby does not know.
    UnknownCommand,
    /// A nick or room name outside 1–32 of `A–Z a–z 0–9 _ -`, or a reserved nick.
    BadName,
    /// Another session holds that nick (compared case-insensitively).
    NickTaken,
    /// The command needs a current room and the session has none.
    NotInRoom,
    /// The room already holds `--room-capacity` members.
    RoomFull,
    /// No session holds that nick.
    NoSuchNick,
    /// The line exceeded `--max-line` bytes.
    LineTooLong,
    /// The line was not UTF-8 or held control characters.
    BadEncoding,
    /// The server is at its connection limit.
    ServerFull,
    /// The session was silent for `--idle-timeout`.
    IdleTimeout,
    /// A missing or extra argument.
    BadArgs,
    /// The session sent more lines per second than `--max-msgs-per-sec`.
    RateLimited,
    /// A cross-node operation while the cluster engine (Redis) is unreachable.
    Unavailable,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnknownCommand => "unknown-command",
            ErrorCode::BadName => "bad-name",
            ErrorCode::NickTaken => "nick-taken",
            ErrorCode::NotInRoom => "not-in-room",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::NoSuchNick => "no-such-nick",
            ErrorCode::LineTooLong => "line-too-long",
            ErrorCode::BadEncoding => "bad-encoding",
            ErrorCode::ServerFull => "server-full",
            ErrorCode::IdleTimeout => "idle-timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::BadArgs => "bad-args",
            ErrorCode::RateLimited => "rate-limited",
        }
    }
}

/// A command the lobby refused, with the human-readable explanation that
/// follows the code on the `ERR` line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {message}", code.as_str())]
pub struct Rejection {
    /// The machine-readable code.
    pub code: ErrorCode,
    /// The explanation for people.
    pub message: String,
}

impl Rejection {
    /// A rejection with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }
}

/// The longest nick or room name, in characters.
pub const MAX_NAME_LEN: usize = 32;

/// Whether `name` is a valid nick or room name: 1–32 characters of
/// `A–Z a–z 0–9 _ -`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks that a received line is text the lobby may relay: UTF-8, with no
/// control characters but tab (so no terminal escapes reach other players).
///
/// # Errors
/// A [`Rejection`] with [`ErrorCode::BadEncoding`] otherwise.
pub fn decode_text(line: &[u8]) -> Result<&str, Rejection> {
    let text = std::str::from_utf8(line)
        .map_err(|_| Rejection::new(ErrorCode::BadEncoding, "line is not valid UTF-8"))?;
    // Control characters are ASCII, and no byte of a multi-byte UTF-8
    // character is ASCII: scanning bytes finds exactly them.
    if text.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(Rejection::new(
            ErrorCode::BadEncoding,
            "control characters are not allowed",
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_alphabet_and_length() {
        assert!(is_valid_name("a"));
        assert!(is_valid_name("Room_1-b"));
        assert!(is_valid_name(&"x".repeat(32)));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name(&"x".repeat(33)));
        assert!(!is_valid_name("bad name"));
        assert!(!is_valid_name("café"));
    }

    #[test]
    fn text_rejects_invalid_utf8_and_controls_but_keeps_tabs() {
        assert_eq!(decode_text(b"hi\tthere"), Ok("hi\tthere"));
        assert_eq!(decode_text("héllo".as_bytes()), Ok("héllo"));
        for bad in [&b"\xff\xfe"[..], b"esc\x1b[31m", b"del\x7f", b"nul\0"] {
            let err = decode_text(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadEncoding);
        }
    }
}
