mod common;

use common::Server;

#[test]
fn two_clients_chat_in_a_room() {
    let server = Server::start(&[]);
    let (mut alice, mut bob) = server.pair("alice", "bob", "lobby");
    bob.send("hi alice");
    bob.expect("MSG lobby bob hi alice");
    alice.expect("MSG lobby bob hi alice");
}

#[test]
fn sessions_on_several_threads_share_rooms_in_one_order() {
    let server = Server::start(&["--session-threads", "3"]);
    let mut members: Vec<_> = ["ann", "ben", "cat"]
        .iter()
        .map(|nick| server.named(nick))
        .collect();
    for member in members.iter_mut() {
        member.join("hall");
    }
    // Everyone saw the later joins; read them so the chat below starts clean.
    members[0].expect("JOIN hall ben");
    members[0].expect("JOIN hall cat");
    members[1].expect("JOIN hall cat");
    for round in 0..20 {
        for sender in 0..members.len() {
            let nick = members[sender].nick.clone();
            members[sender].send(&format!("round {round}"));
            for member in members.iter_mut() {
                member.expect(&format!("MSG hall {nick} round {round}"));
            }
        }
    }
}
