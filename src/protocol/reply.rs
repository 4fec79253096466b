//! Server lines, rendered once into shareable bytes.

use std::fmt::{self, Write as _};

use bytes::{BufMut, Bytes, BytesMut};

use super::{ErrorCode, Rejection};

/// One line the server sends, borrowing its text from the caller.
///
/// [`Reply::to_line`] renders it once into [`Bytes`], so a broadcast to a whole
/// room shares one allocation between all members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `WELCOME <id> <nick>`
    Welcome {
        /// The session id.
        id: u64,
        /// The session's first nick.
        nick: &'a str,
    },
    /// `NICK <old> <new>`
    Nick {
        /// The nick before the change.
        old: &'a str,
        /// The nick after the change.
        new: &'a str,
    },
    /// `JOIN <room> <nick>`
    Join {
        /// The room joined.
        room: &'a str,
        /// Who joined.
        nick: &'a str,
    },
    /// `LEAVE <room> <nick>`
    Leave {
        /// The room left.
        room: &'a str,
        /// Who left.
        nick: &'a str,
    },
    /// `WHO <room> <nicks…>`
    Who {
        /// The room listed.
        room: &'a str,
        /// Its members in join order.
        nicks: &'a [&'a str],
    },
    /// `MSG <room> <nick> <text>`
    Msg {
        /// The room the text was said in.
        room: &'a str,
        /// The speaker.
        nick: &'a str,
        /// What was said.
        text: &'a str,
    },
    /// `PRIVMSG <from> <to> <text>`
    PrivMsg {
        /// The sender's nick.
        from: &'a str,
        /// The target's nick, in its owner's spelling.
        to: &'a str,
        /// What was said.
        text: &'a str,
    },
    /// `ROOMS <room>=<members> …`
    Rooms {
        /// Rooms and member counts, already sorted by name.
        rooms: &'a [(&'a str, usize)],
    },
    /// `PING <token>`
    Ping {
        /// The heartbeat counter.
        token: u64,
    },
    /// `PONG [TOKEN]`
    Pong {
        /// The client's token, echoed.
        token: Option<&'a str>,
    },
    /// `QUIT <room> <nick> <reason>`
    Quit {
        /// The room the session was in.
        room: &'a str,
        /// The session's nick.
        nick: &'a str,
        /// The reason word of its [`crate::DisconnectReason`].
        reason: &'a str,
    },
    /// `BYE`
    Bye,
    /// `SHUTDOWN`
    Shutdown,
    /// `ERR <code> <text>`
    Error {
        /// The error code.
        code: ErrorCode,
        /// The explanation.
        message: &'a str,
    },
}

impl<'a> Reply<'a> {
    /// The `ERR` line for a rejection.
    pub fn rejection(rejection: &'a Rejection) -> Self {
        Reply::Error {
            code: rejection.code,
            message: &rejection.message,
        }
    }

    /// Renders the line, `\n` included.
    pub fn to_line(&self) -> Bytes {
        // Chat is most of the traffic: its words are copied as they are,
        // without the formatting machinery.
        if let Reply::Msg { room, nick, text } = self {
            return words_line(&[b"MSG", room.as_bytes(), nick.as_bytes(), text.as_bytes()]);
        }
        let mut line = LineBuf(BytesMut::with_capacity(self.size_hint()));
        // `LineBuf` never fails to write, so neither does rendering.
        let _ = write!(line, "{self}");
        line.0.put_u8(b'\n');
        line.0.freeze()
    }

    fn size_hint(&self) -> usize {
        let text = match self {
            Reply::Msg { text, .. } | Reply::PrivMsg { text, .. } => text.len(),
            Reply::Who { nicks, .. } => nicks.len() * (super::MAX_NAME_LEN + 1),
            Reply::Rooms { rooms } => rooms.len() * (super::MAX_NAME_LEN + 8),
            Reply::Error { message, .. } => message.len(),
            _ => 0,
        };
        text + 2 * super::MAX_NAME_LEN + 24
    }
}

impl fmt::Display for Reply<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Welcome { id, nick } => write!(f, "WELCOME {id} {nick}"),
            Reply::Nick { old, new } => write!(f, "NICK {old} {new}"),
            Reply::Join { room, nick } => write!(f, "JOIN {room} {nick}"),
            Reply::Leave { room, nick } => write!(f, "LEAVE {room} {nick}"),
            Reply::Who { room, nicks } => {
                write!(f, "WHO {room}")?;
                nicks.iter().try_for_each(|nick| write!(f, " {nick}"))
            }
            Reply::Msg { room, nick, text } => write!(f, "MSG {room} {nick} {text}"),
            Reply::PrivMsg { from, to, text } => write!(f, "PRIVMSG {from} {to} {text}"),
            Reply::Rooms { rooms } => {
                f.write_str("ROOMS")?;
                rooms
                    .iter()
                    .try_for_each(|(room, members)| write!(f, " {room}={members}"))
            }
            Reply::Ping { token } => write!(f, "PING {token}"),
            Reply::Pong { token: None } => f.write_str("PONG"),
            Reply::Pong { token: Some(token) } => write!(f, "PONG {token}"),
            Reply::Quit { room, nick, reason } => write!(f, "QUIT {room} {nick} {reason}"),
            Reply::Bye => f.write_str("BYE"),
            Reply::Shutdown => f.write_str("SHUTDOWN"),
            Reply::Error { code, message } => write!(f, "ERR {} {message}", code.as_str()),
        }
    }
}

/// `words` joined by single spaces, and `\n`.
fn words_line(words: &[&[u8]]) -> Bytes {
    let size = words.iter().map(|word| word.len() + 1).sum();
    let mut line = BytesMut::with_capacity(size);
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            line.put_u8(b' ');
        }
        line.put_slice(word);
    }
    line.put_u8(b'\n');
    line.freeze()
}

/// `fmt::Write` straight into a `BytesMut`, so rendering copies text once.
struct LineBuf(BytesMut);

impl fmt::Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_render_as_the_spec_shows() {
        let cases: [(Reply, &str); 7] = [
            (
                Reply::Msg {
                    room: "hall",
                    nick: "ann",
                    text: "hi  there",
                },
                "MSG hall ann hi  there\n",
            ),
            (
                Reply::Welcome {
                    id: 7,
                    nick: "guest7",
                },
                "WELCOME 7 guest7\n",
            ),
            (
                Reply::Who {
                    room: "lobby",
                    nicks: &["a", "b"],
                },
                "WHO lobby a b\n",
            ),
            (
                Reply::Who {
                    room: "empty",
                    nicks: &[],
                },
                "WHO empty\n",
            ),
            (Reply::Rooms { rooms: &[] }, "ROOMS\n"),
            (
                Reply::Rooms {
                    rooms: &[("a", 2), ("b", 1)],
                },
                "ROOMS a=2 b=1\n",
            ),
            (Reply::Pong { token: None }, "PONG\n"),
        ];
        for (reply, expected) in cases {
            assert_eq!(reply.to_line(), Bytes::from(expected));
        }
        let full = Reply::Error {
            code: ErrorCode::ServerFull,
            message: "try later",
        };
        assert_eq!(full.to_line(), Bytes::from("ERR server-full try later\n"));
    }
}
