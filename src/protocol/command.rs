//! Client lines → [`Command`]s.

use super::{ErrorCode, Rejection, is_valid_name};

/// One request of the text lobby protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/nick NAME`: take a new nick.
    Nick(String),
    /// `/join ROOM`: move to a room, leaving the current one.
    Join(String),
    /// `/leave`: leave the current room.
    Leave,
    /// Chat text for the current room (a plain line, or `//…` unescaped).
    Say(String),
    /// `/msg NICK TEXT`: a private message.
    Msg {
        /// The target nick as typed (matched case-insensitively).
        to: String,
        /// The message text.
        text: String,
    },
    /// `/rooms`: list rooms and their member counts.
    Rooms,
    /// `/who [ROOM]`: list a room's members (the current room when `None`).
    Who(Option<String>),
    /// `/ping [TOKEN]`: ask for a `PONG`.
    Ping(Option<String>),
    /// `/pong [TOKEN]`: answer a server `PING`; nothing is sent back.
    Pong(Option<String>),
    /// `/quit [REASON]`: leave the server; the reason is only logged.
    Quit(Option<String>),
}

/// What separates a verb and its arguments. Only these: other Unicode
/// whitespace is part of a word, so it can never vanish from a name.
const SEPARATORS: [char; 2] = [' ', '\t'];

/// Parses one line (already checked by [`super::decode_text`]).
///
/// Returns `Ok(None)` for an empty line, which the protocol ignores.
///
/// # Errors
/// A [`Rejection`] for an unknown verb (`unknown-command`), a wrong number of
/// arguments (`bad-args`) or an invalid nick or room name (`bad-name`).
pub fn parse_line(line: &str) -> Result<Option<Command>, Rejection> {
    if line.is_empty() {
        return Ok(None);
    }
    let Some(request) = line.strip_prefix('/') else {
        return Ok(Some(Command::Say(line.to_owned())));
    };
    if request.starts_with('/') {
        return Ok(Some(Command::Say(request.to_owned())));
    }
    let (verb, rest) = match request.split_once(SEPARATORS) {
        Some((verb, rest)) => (verb, rest.trim_matches(SEPARATORS)),
        None => (request, ""),
    };
    let command = match verb.to_ascii_lowercase().as_str() {
        "nick" => Command::Nick(name_argument(verb, rest)?),
        "join" => Command::Join(name_argument(verb, rest)?),
        "leave" => no_argument(verb, rest, Command::Leave)?,
        "rooms" => no_argument(verb, rest, Command::Rooms)?,
        "who" => Command::Who(optional_word(verb, rest)?.map(validated_name).transpose()?),
        "ping" => Command::Ping(optional_word(verb, rest)?),
        "pong" => Command::Pong(optional_word(verb, rest)?),
        "quit" => Command::Quit((!rest.is_empty()).then(|| rest.to_owned())),
        "msg" => {
            let Some((to, text)) = rest.split_once(SEPARATORS) else {
                return Err(bad_args("usage: /msg NICK TEXT"));
            };
            let text = text.trim_start_matches(SEPARATORS);
            if text.is_empty() {
                return Err(bad_args("usage: /msg NICK TEXT"));
            }
            Command::Msg {
                to: to.to_owned(),
                text: text.to_owned(),
            }
        }
        _ => {
            return Err(Rejection::new(
                ErrorCode::UnknownCommand,
                format!("unknown command /{verb}"),
            ));
        }
    };
    Ok(Some(command))
}

fn bad_args(message: &str) -> Rejection {
    Rejection::new(ErrorCode::BadArgs, message)
}

fn words(rest: &str) -> impl Iterator<Item = &str> {
    rest.split(SEPARATORS).filter(|word| !word.is_empty())
}

fn no_argument(verb: &str, rest: &str, command: Command) -> Result<Command, Rejection> {
    if rest.is_empty() {
        Ok(command)
    } else {
        Err(bad_args(&format!("/{verb} takes no argument")))
    }
}

fn optional_word(verb: &str, rest: &str) -> Result<Option<String>, Rejection> {
    let mut words = words(rest);
    match (words.next(), words.next()) {
        (word, None) => Ok(word.map(str::to_owned)),
        _ => Err(bad_args(&format!("/{verb} takes at most one word"))),
    }
}

fn name_argument(verb: &str, rest: &str) -> Result<String, Rejection> {
    let mut words = words(rest);
    match (words.next(), words.next()) {
        (Some(name), None) => validated_name(name.to_owned()),
        _ => Err(bad_args(&format!("usage: /{verb} NAME"))),
    }
}

fn validated_name(name: String) -> Result<String, Rejection> {
    if is_valid_name(&name) {
        Ok(name)
    } else {
        Err(Rejection::new(
            ErrorCode::BadName,
            "names are 1-32 characters of A-Z a-z 0-9 _ -",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(line: &str) -> ErrorCode {
        parse_line(line).expect_err("line should be rejected").code
    }

    fn parsed(line: &str) -> Command {
        parse_line(line)
            .expect("line should parse")
            .expect("line is not empty")
    }

    #[test]
    fn verbs_are_case_insensitive_and_text_is_chat() {
        assert_eq!(parsed("/JOIN lobby"), Command::Join("lobby".into()));
        assert_eq!(parsed("/Nick Bob"), Command::Nick("Bob".into()));
        assert_eq!(parsed("hello /there"), Command::Say("hello /there".into()));
        assert_eq!(parsed("//slash"), Command::Say("/slash".into()));
        assert_eq!(parse_line(""), Ok(None));
    }

    #[test]
    fn arguments_are_counted() {
        assert_eq!(code_of("/join"), ErrorCode::BadArgs);
        assert_eq!(code_of("/nick a b"), ErrorCode::BadArgs);
        assert_eq!(code_of("/msg bob"), ErrorCode::BadArgs);
        assert_eq!(code_of("/leave now"), ErrorCode::BadArgs);
        assert_eq!(code_of("/rooms all"), ErrorCode::BadArgs);
        assert_eq!(code_of("/ping a b"), ErrorCode::BadArgs);
        assert_eq!(code_of("/pong a b"), ErrorCode::BadArgs);
        assert_eq!(code_of("/who a b"), ErrorCode::BadArgs);
        assert_eq!(code_of("/nick bad!name"), ErrorCode::BadName);
        assert_eq!(code_of("/dance"), ErrorCode::UnknownCommand);
        assert_eq!(code_of("/"), ErrorCode::UnknownCommand);
    }

    #[test]
    fn optional_arguments_and_free_text() {
        assert_eq!(parsed("/ping"), Command::Ping(None));
        assert_eq!(parsed("/ping 42"), Command::Ping(Some("42".into())));
        assert_eq!(parsed("/who"), Command::Who(None));
        assert_eq!(
            parsed("/quit gone fishing"),
            Command::Quit(Some("gone fishing".into()))
        );
        assert_eq!(
            parsed("/msg bob hi  there"),
            Command::Msg {
                to: "bob".into(),
                text: "hi  there".into()
            }
        );
    }
}
