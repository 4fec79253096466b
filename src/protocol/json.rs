//! The JSON lobby protocol of SPEC §5: the same commands and events as the
//! text protocol, one JSON object per line.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Command, ErrorCode, Rejection, Reply, is_valid_name};

/// A command as a JSON client sends it. Unknown fields are ignored; a missing
/// field, a field of the wrong type or an unknown `cmd` fails to parse.
#[derive(Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
enum JsonCommand {
    Nick { name: String },
    Join { room: String },
    Leave {},
    Say { text: String },
    Msg { to: String, text: String },
    Rooms {},
    Who { room: Option<String> },
    Ping { token: Option<String> },
    Pong { token: Option<String> },
    Quit { reason: Option<String> },
}

/// Parses one JSON line into a command.
///
/// Returns `Ok(None)` for an empty line, which the protocol ignores.
///
/// # Errors
/// `bad-encoding` for bytes that are not UTF-8 or strings holding control
/// characters (so no forged lines reach text clients); `bad-args` for
/// malformed JSON, a missing or mistyped field, an unknown `cmd` or an empty
/// `say` text; `bad-name` for an invalid nick or room name.
pub fn parse_json_line(line: &[u8]) -> Result<Option<Command>, Rejection> {
    let text = std::str::from_utf8(line)
        .map_err(|_| Rejection::new(ErrorCode::BadEncoding, "line is not valid UTF-8"))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let command: JsonCommand = serde_json::from_str(text)
        .map_err(|error| Rejection::new(ErrorCode::BadArgs, format!("bad command: {error}")))?;
    let command = match command {
        JsonCommand::Nick { name } => Command::Nick(name_field(name)?),
        JsonCommand::Join { room } => Command::Join(name_field(room)?),
        JsonCommand::Leave {} => Command::Leave,
        JsonCommand::Say { text } if text.is_empty() => {
            return Err(Rejection::new(ErrorCode::BadArgs, "say needs text"));
        }
        JsonCommand::Say { text } => Command::Say(text_field(text)?),
        JsonCommand::Msg { text, .. } if text.is_empty() => {
            return Err(Rejection::new(ErrorCode::BadArgs, "msg needs text"));
        }
        JsonCommand::Msg { to, text } => Command::Msg {
            to: text_field(to)?,
            text: text_field(text)?,
        },
        JsonCommand::Rooms {} => Command::Rooms,
        JsonCommand::Who { room } => Command::Who(room.map(name_field).transpose()?),
        JsonCommand::Ping { token } => Command::Ping(token.map(text_field).transpose()?),
        JsonCommand::Pong { token } => Command::Pong(token.map(text_field).transpose()?),
        JsonCommand::Quit { reason } => Command::Quit(reason.map(text_field).transpose()?),
    };
    Ok(Some(command))
}

fn text_field(text: String) -> Result<String, Rejection> {
    if text.chars().any(|c| c.is_ascii_control() && c != '\t') {
        return Err(Rejection::new(
            ErrorCode::BadEncoding,
            "control characters are not allowed",
        ));
    }
    Ok(text)
}

fn name_field(name: String) -> Result<String, Rejection> {
    let name = text_field(name)?;
    if is_valid_name(&name) {
        Ok(name)
    } else {
        Err(Rejection::new(
            ErrorCode::BadName,
            "names are 1-32 characters of A-Z a-z 0-9 _ -",
        ))
    }
}

impl Reply<'_> {
    /// Renders the event as one JSON object and `\n`, e.g.
    /// `{"event":"msg","room":"lobby","nick":"ann","text":"hi"}`.
    pub fn to_json_line(&self) -> Bytes {
        let value = self.json_value();
        let mut line = BytesMut::new().writer();
        // Serialising a `Value` into memory cannot fail.
        let _ = serde_json::to_writer(&mut line, &value);
        let mut line = line.into_inner();
        line.put_u8(b'\n');
        line.freeze()
    }

    fn json_value(&self) -> Value {
        match *self {
            Reply::Welcome { id, nick } => json!({"event": "welcome", "id": id, "nick": nick}),
            Reply::Nick { old, new } => json!({"event": "nick", "old": old, "new": new}),
            Reply::Join { room, nick } => json!({"event": "join", "room": room, "nick": nick}),
            Reply::Leave { room, nick } => json!({"event": "leave", "room": room, "nick": nick}),
            Reply::Who { room, nicks } => json!({"event": "who", "room": room, "nicks": nicks}),
            Reply::Msg { room, nick, text } => {
                json!({"event": "msg", "room": room, "nick": nick, "text": text})
            }
            Reply::PrivMsg { from, to, text } => {
                json!({"event": "privmsg", "from": from, "to": to, "text": text})
            }
            Reply::Rooms { rooms } => {
                let counts: Map<String, Value> = rooms
                    .iter()
                    .map(|&(room, members)| (room.to_owned(), json!(members)))
                    .collect();
                json!({"event": "rooms", "rooms": counts})
            }
            Reply::Ping { token } => json!({"event": "ping", "token": token.to_string()}),
            Reply::Pong { token: None } => json!({"event": "pong"}),
            Reply::Pong { token: Some(token) } => json!({"event": "pong", "token": token}),
            Reply::Quit { room, nick, reason } => {
                json!({"event": "quit", "room": room, "nick": nick, "reason": reason})
            }
            Reply::Bye => json!({"event": "bye"}),
            Reply::Shutdown => json!({"event": "shutdown"}),
            Reply::Error { code, message } => {
                json!({"event": "error", "code": code.as_str(), "message": message})
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(line: &str) -> ErrorCode {
        parse_json_line(line.as_bytes()).expect_err("rejected").code
    }

    #[test]
    fn commands_parse_and_extra_fields_are_ignored() {
        let parsed = |line: &str| {
            parse_json_line(line.as_bytes())
                .expect("parses")
                .expect("a command")
        };
        assert_eq!(
            parsed(r#"{"cmd":"join","room":"lobby","x":1}"#),
            Command::Join("lobby".into())
        );
        assert_eq!(parsed(r#"{"cmd":"who"}"#), Command::Who(None));
        assert_eq!(
            parsed(r#"{"cmd":"ping","token":"7"}"#),
            Command::Ping(Some("7".into()))
        );
        assert_eq!(
            parsed(r#"{"cmd":"say","text":"/not a command"}"#),
            Command::Say("/not a command".into())
        );
        assert_eq!(parse_json_line(b""), Ok(None));
    }

    #[test]
    fn bad_input_gets_the_spec_codes() {
        assert_eq!(code_of("{not json"), ErrorCode::BadArgs);
        assert_eq!(code_of(r#"{"cmd":"join"}"#), ErrorCode::BadArgs);
        assert_eq!(code_of(r#"{"cmd":"dance"}"#), ErrorCode::BadArgs);
        assert_eq!(code_of(r#"{"cmd":"JOIN","room":"a"}"#), ErrorCode::BadArgs);
        assert_eq!(code_of(r#"{"cmd":"join","room":5}"#), ErrorCode::BadArgs);
        assert_eq!(code_of(r#"{"cmd":"say","text":""}"#), ErrorCode::BadArgs);
        assert_eq!(
            code_of(r#"{"cmd":"say","text":"a\u001b[31m"}"#),
            ErrorCode::BadEncoding
        );
        assert_eq!(
            code_of(r#"{"cmd":"nick","name":"bad name"}"#),
            ErrorCode::BadName
        );
        assert_eq!(
            parse_json_line(b"\xff").unwrap_err().code,
            ErrorCode::BadEncoding
        );
    }

    #[test]
    fn events_render_as_the_spec_shows() {
        // The registry passes rooms sorted by name; the object keeps that order.
        let line = Reply::Rooms {
            rooms: &[("B", 1), ("a", 2)],
        }
        .to_json_line();
        assert_eq!(
            line,
            Bytes::from("{\"event\":\"rooms\",\"rooms\":{\"B\":1,\"a\":2}}\n")
        );
        let pong = Reply::Pong { token: None }.to_json_line();
        assert_eq!(pong, Bytes::from("{\"event\":\"pong\"}\n"));
    }
}
