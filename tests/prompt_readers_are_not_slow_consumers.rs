//! A member that reads promptly is never dropped as a slow consumer, however
//! far its session falls behind because its thread is busy (hostile review
//! of issue 8: a paste of thousands of lines dropped half of a room, the
//! members on the other thread). The bound binds once a peer's socket is
//! full; `slow_consumer*.rs` show that side.

mod common;

use std::io::Write;
use std::thread;

use common::Server;

const MEMBERS: usize = 8;
const LINES: usize = 20_000;

#[test]
fn a_paste_of_twenty_thousand_lines_reaches_every_reading_member() {
    let server = Server::start(&["--threads", "2"]);
    let mut sender = server.named("paster");
    sender.join_alone("r");
    let mut members = Vec::new();
    for k in 0..MEMBERS {
        let mut member = server.named(&format!("m{k}"));
        member.send("/join r");
        member.expect(&format!("JOIN r m{k}"));
        let _who = member.line();
        sender.expect(&format!("JOIN r m{k}"));
        members.push(member);
    }
    // Each member that has joined sees the later ones join.
    for (k, member) in members.iter_mut().enumerate() {
        for later in k + 1..MEMBERS {
            member.expect(&format!("JOIN r m{later}"));
        }
    }
    let readers: Vec<_> = members
        .into_iter()
        .map(|mut member| {
            thread::spawn(move || {
                for n in 0..LINES {
                    member.expect(&format!("MSG r paster line {n}"));
                }
                member
            })
        })
        .collect();
    let paste: String = (0..LINES).map(|n| format!("line {n}\n")).collect();
    let mut writer = sender.stream.try_clone().expect("clone");
    let pasting = thread::spawn(move || writer.write_all(paste.as_bytes()).expect("paste"));
    for n in 0..LINES {
        sender.expect(&format!("MSG r paster line {n}"));
    }
    pasting.join().expect("the paste was written");
    let mut members: Vec<_> = readers
        .into_iter()
        .map(|reader| {
            reader
                .join()
                .expect("every member got every line, in order")
        })
        .collect();
    for member in &mut members {
        member.expect_nothing_pending();
    }
    sender.send("/who");
    let mut expected = vec!["WHO r paster".to_owned()];
    expected.extend((0..MEMBERS).map(|k| format!("m{k}")));
    sender.expect(&expected.join(" "));
}
