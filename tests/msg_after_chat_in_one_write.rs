//! Regression (hostile review, `repro1_msg_after_chat.py`): chat followed by
//! `/msg` in the same write. The answer to the `/msg` lookup could be parked
//! behind the chat line's unacknowledged broadcast while input ran on, so the
//! next command overwrote the pending `/msg`: a false `ERR no-such-nick`, a
//! private message that vanished, or answers out of order. Every line must
//! be answered in order, and every target must get its private message.

mod common;

use common::{Client, Server};

/// Pairs of `hello<k>` + `/msg <target> pm<k>` sent in one write.
const ROUNDS: usize = 100;
/// Targets the private messages go to, round robin.
const TARGETS: usize = 3;

/// A room whose sequencer (the library's fixed-hash rule) runs on another
/// thread than session `id`, which runs on `id % threads`: the chat line's
/// broadcast then has to cross threads before it is acknowledged.
fn room_off_the_senders_thread(id: u64, threads: usize) -> String {
    let senders_thread = (id % threads as u64) as usize;
    (0..256)
        .map(|n| format!("hall{n}"))
        .find(|room| switchboard::room_thread(room, threads) != senders_thread)
        .expect("some room name hashes to another thread")
}

fn chat_then_msg_in_one_write(threads: usize) {
    let threads_flag = threads.to_string();
    let server = Server::start(&["--threads", &threads_flag]);
    let mut sender = server.named("sender");
    let mut targets: Vec<Client> = (0..TARGETS)
        .map(|n| server.named(&format!("target{n}")))
        .collect();
    let room = room_off_the_senders_thread(sender.id, threads);
    assert_ne!(
        switchboard::room_thread(&room, threads) as u64,
        sender.id % threads as u64
    );
    sender.join_alone(&room);

    let mut batch = String::new();
    for k in 0..ROUNDS {
        let target = &targets[k % TARGETS].nick;
        batch.push_str(&format!("hello{k}\n/msg {target} pm{k}\n"));
    }
    batch.push_str("/ping end\n");
    sender.send_raw(batch.as_bytes());

    // The sender: MSG, PRIVMSG, MSG, PRIVMSG … exactly, then the PONG.
    for k in 0..ROUNDS {
        let target = &targets[k % TARGETS].nick;
        sender.expect(&format!("MSG {room} sender hello{k}"));
        sender.expect(&format!("PRIVMSG sender {target} pm{k}"));
    }
    sender.expect("PONG end");

    // Each target: every private message meant for it, in order, nothing else.
    for (n, target) in targets.iter_mut().enumerate() {
        for k in (n..ROUNDS).step_by(TARGETS) {
            target.expect(&format!("PRIVMSG sender {} pm{k}", target.nick));
        }
        target.expect_nothing_pending();
    }
}

#[test]
fn chat_then_msg_in_one_write_is_answered_in_order_on_two_threads() {
    chat_then_msg_in_one_write(2);
}

#[test]
fn chat_then_msg_in_one_write_is_answered_in_order_on_eight_threads() {
    chat_then_msg_in_one_write(8);
}
