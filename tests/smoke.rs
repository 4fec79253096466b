mod common;

use common::Server;

#[test]
fn two_clients_chat_in_a_room() {
    let server = Server::start(&[]);
    let mut alice = server.named("alice");
    let mut bob = server.named("bob");
    alice.join("lobby");
    bob.send("/join lobby");
    bob.expect("JOIN lobby bob");
    bob.expect("WHO lobby alice bob");
    alice.expect("JOIN lobby bob");
    bob.send("hi alice");
    bob.expect("MSG lobby bob hi alice");
    alice.expect("MSG lobby bob hi alice");
}
