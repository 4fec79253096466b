//! `decode_text` then `parse_line` on arbitrary bytes, as a session's hub
//! takes a line; and `parse_line` alone on the lossy text, control
//! characters included.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::protocol::{Command, ErrorCode, Rejection, decode_text, parse_line};
use switchboard_fuzz::check_outcome;

fuzz_target!(|data: &[u8]| {
    let clean = std::str::from_utf8(data)
        .is_ok_and(|s| !s.chars().any(|c| c.is_ascii_control() && c != '\t'));
    match decode_text(data) {
        Ok(text) => {
            assert!(clean, "decode_text let a control character through");
            assert_eq!(text.as_bytes(), data);
            check_outcome(text, &parse_line(text));
        }
        Err(rejection) => {
            assert!(!clean, "decode_text refused clean text");
            assert_eq!(rejection.code, ErrorCode::BadEncoding);
        }
    }

    let lossy = String::from_utf8_lossy(data);
    let outcome = parse_line(&lossy);
    check_outcome(&lossy, &outcome);

    // `//` escapes a slash; verbs ignore ASCII case.
    let escaped = format!("//{lossy}");
    assert_eq!(
        parse_line(&escaped),
        Ok(Some(Command::Say(format!("/{lossy}"))))
    );
    if let Some(request) = lossy.strip_prefix('/').filter(|r| !r.starts_with('/')) {
        let verb_end = request.find([' ', '\t']).unwrap_or(request.len());
        let (verb, rest) = request.split_at(verb_end);
        let upper = format!("/{}{rest}", verb.to_ascii_uppercase());
        let code = |r: Rejection| r.code;
        assert_eq!(
            parse_line(&upper).map_err(code),
            outcome.map_err(code),
            "the verb's case changed the outcome"
        );
    }
});
