//! Conformance of the text lobby protocol (SPEC §3): every row of the command
//! table and every "details the table leaves open" rule that a single command
//! decides, checked line by line over real TCP against the real binary.

mod common;

use common::{Client, Server};

/// Connects without the harness's `welcome()`, so the raw `WELCOME` line can
/// be checked byte for byte; fills in `id` and `nick` like `welcome()` does.
fn connect_checking_welcome(server: &Server) -> Client {
    let mut client = Client::connect(server.addr);
    let line = client.line();
    let id: u64 = line
        .strip_prefix("WELCOME ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("expected `WELCOME <id> <nick>`, got {line:?}"));
    assert!(id > 0, "the id must be positive: {line:?}");
    assert_eq!(line, format!("WELCOME {id} guest{id}"));
    client.id = id;
    client.nick = format!("guest{id}");
    client
}

/// `alice` and `bob` (in that join order) in `room`, with every announcement
/// of their arrival consumed.
fn pair_in_room(server: &Server, room: &str) -> (Client, Client) {
    server.pair("alice", "bob", room)
}

// ---------------------------------------------------------------------------
// (connect) → WELCOME

#[test]
fn welcome_gives_a_positive_id_and_the_nick_guest_id() {
    let server = Server::start(&[]);
    let mut client = connect_checking_welcome(&server);
    client.expect_nothing_pending();
}

#[test]
fn welcome_ids_are_unique_and_increase_with_each_connection() {
    let server = Server::start(&[]);
    let mut ids = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..5 {
        let client = connect_checking_welcome(&server);
        ids.push(client.id);
        clients.push(client);
    }
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids must increase: {ids:?}"
    );
    // A session that ended does not give its id back.
    let last = clients.pop().expect("five clients");
    drop(last);
    let later = connect_checking_welcome(&server);
    assert!(later.id > ids[4], "id {} reused after {ids:?}", later.id);
}

// ---------------------------------------------------------------------------
// /nick

#[test]
fn nick_is_announced_to_the_sender_outside_a_room() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let guest = client.nick.clone();
    client.send("/nick alice");
    client.expect(&format!("NICK {guest} alice"));
    client.send("/nick bob");
    client.expect("NICK alice bob");
    client.expect_nothing_pending();
}

#[test]
fn nick_is_announced_once_to_every_room_member_and_not_outside() {
    let server = Server::start(&[]);
    let (mut alice, mut bob) = pair_in_room(&server, "lobby");
    let mut carol = server.named("carol");
    carol.join("elsewhere");
    alice.send("/nick alicia");
    alice.expect("NICK alice alicia");
    bob.expect("NICK alice alicia");
    alice.expect_nothing_pending();
    bob.expect_nothing_pending();
    carol.expect_nothing_pending();
    // The new nick is the one the room now uses.
    bob.send("/who");
    bob.expect("WHO lobby alicia bob");
}

#[test]
fn nick_taken_is_compared_case_insensitively() {
    let server = Server::start(&[]);
    let mut alice = server.named("alice");
    let mut bob = server.named("bob");
    for taken in ["alice", "ALICE", "Alice", "aLiCe"] {
        bob.send(&format!("/nick {taken}"));
        bob.expect_err("nick-taken");
    }
    // bob kept his nick, and alice was told nothing.
    bob.send("/nick bobby");
    bob.expect("NICK bob bobby");
    alice.expect_nothing_pending();
}

#[test]
fn nick_is_shown_as_its_owner_typed_it() {
    let server = Server::start(&[]);
    let mut alice = server.client();
    let guest = alice.nick.clone();
    alice.send("/nick AlIcE_42");
    alice.expect(&format!("NICK {guest} AlIcE_42"));
    alice.nick = "AlIcE_42".to_owned();
    alice.send("/join lobby");
    alice.expect("JOIN lobby AlIcE_42");
    alice.expect("WHO lobby AlIcE_42");
    alice.send("hi");
    alice.expect("MSG lobby AlIcE_42 hi");
}

#[test]
fn changing_only_the_case_of_your_own_nick_is_allowed() {
    let server = Server::start(&[]);
    let mut alice = server.named("alice");
    alice.send("/nick ALICE");
    alice.expect("NICK alice ALICE");
    alice.send("/nick Alice");
    alice.expect("NICK ALICE Alice");
    alice.expect_nothing_pending();
}

#[test]
fn a_nick_given_up_can_be_taken_by_someone_else() {
    let server = Server::start(&[]);
    let mut alice = server.named("alice");
    let mut bob = server.named("bob");
    alice.send("/nick alicia");
    alice.expect("NICK alice alicia");
    bob.send("/nick Alice");
    bob.expect("NICK bob Alice");
}

#[test]
fn nick_with_invalid_characters_or_length_is_bad_name() {
    let server = Server::start(&[]);
    let mut client = server.named("alice");
    let too_long = "a".repeat(33);
    for bad in [
        "bad!name",
        "a.b",
        "semi;colon",
        "at@sign",
        "café",
        "x/y",
        "[brackets]",
        too_long.as_str(),
    ] {
        client.send(&format!("/nick {bad}"));
        client.expect_err("bad-name");
    }
    client.expect_nothing_pending();
    // Exactly 32 characters of the full alphabet is fine.
    let longest = format!("Az09_-{}", "q".repeat(26));
    assert_eq!(longest.len(), 32);
    client.send(&format!("/nick {longest}"));
    client.expect(&format!("NICK alice {longest}"));
}

#[test]
fn nick_guest_number_of_a_live_guest_is_nick_taken() {
    let server = Server::start(&[]);
    let other = server.client();
    let mut client = server.client();
    client.send(&format!("/nick guest{}", other.id));
    client.expect_err("nick-taken");
    client.send(&format!("/nick GUEST{}", other.id));
    client.expect_err("nick-taken");
    client.expect_nothing_pending();
    // The refused nick stays with its owner, and the sender keeps its own.
    client.send("/join lobby");
    client.expect(&format!("JOIN lobby {}", client.nick));
    client.expect(&format!("WHO lobby {}", client.nick));
}

#[test]
fn nick_guest_number_not_yet_issued_is_bad_name_so_welcome_never_collides() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let next = client.id + 1;
    client.send(&format!("/nick guest{next}"));
    client.expect_err("bad-name");
    let newcomer = server.client();
    assert_eq!(newcomer.nick, format!("guest{next}"));
    // `WELCOME` never gives these: they are ordinary names.
    for ordinary in ["guest0", format!("guest0{next}").as_str(), "guestbook"] {
        client.send(&format!("/nick {ordinary}"));
        let old = std::mem::replace(&mut client.nick, ordinary.to_string());
        client.expect(&format!("NICK {old} {ordinary}"));
    }
}

#[test]
fn a_guest_nick_given_up_is_free_and_msg_reaches_its_new_owner() {
    let server = Server::start(&[]);
    let mut first = server.client();
    let mut second = server.client();
    let guest = first.nick.clone();
    first.send("/nick alice");
    first.expect(&format!("NICK {guest} alice"));
    second.send(&format!("/nick {guest}"));
    second.expect(&format!("NICK {} {guest}", second.nick));
    // Its first owner cannot take it back while it is someone else's.
    first.send(&format!("/nick {guest}"));
    first.expect_err("nick-taken");
    first.send(&format!("/msg {guest} hi"));
    first.expect(&format!("PRIVMSG alice {guest} hi"));
    second.expect(&format!("PRIVMSG alice {guest} hi"));
    // Once the one who took it leaves, it is free again: its first owner
    // still goes by another name.
    drop(second);
    let mut third = server.client();
    let taken = loop_until_not_taken(&mut third, &guest);
    assert!(taken, "{guest} never became free after its holder left");
    third.send("/msg alice hello");
    first.expect(&format!("PRIVMSG {guest} alice hello"));
}

#[test]
fn the_guest_nick_of_a_session_that_left_stays_reserved() {
    let server = Server::start(&[]);
    let mut watcher = server.named("watcher");
    watcher.join_alone("r");
    let mut leaver = server.client();
    let guest = leaver.nick.clone();
    leaver.join_with("r", &mut watcher);
    leaver.send("/quit");
    leaver.expect("BYE");
    watcher.expect(&format!("QUIT r {guest} quit"));
    // Gone, or not started yet: a claim cannot tell, so none is allowed.
    let mut client = server.client();
    client.send(&format!("/nick {guest}"));
    client.expect_err("bad-name");
}

/// Asks for `nick` until the server stops saying `nick-taken` (the departed
/// owner's release is asynchronous): at most 100 times, 50 ms apart.
fn loop_until_not_taken(client: &mut Client, nick: &str) -> bool {
    for attempt in 0..100 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        client.send(&format!("/nick {nick}"));
        let line = client.line();
        if line == format!("NICK {} {nick}", client.nick) {
            client.nick = nick.to_string();
            return true;
        }
        assert!(line.starts_with("ERR nick-taken"), "{line}");
    }
    false
}

#[test]
fn nick_with_a_missing_or_extra_argument_is_bad_args() {
    let server = Server::start(&[]);
    let mut client = server.named("alice");
    client.send("/nick");
    client.expect_err("bad-args");
    client.send("/nick a b");
    client.expect_err("bad-args");
    client.expect_nothing_pending();
}

// ---------------------------------------------------------------------------
// /join

#[test]
fn join_is_announced_to_every_member_then_who_lists_join_order() {
    let server = Server::start(&[]);
    let mut alice = server.named("alice");
    let mut bob = server.named("bob");
    let mut carol = server.named("carol");

    alice.send("/join lobby");
    alice.expect("JOIN lobby alice");
    alice.expect("WHO lobby alice");

    bob.send("/join lobby");
    bob.expect("JOIN lobby bob");
    bob.expect("WHO lobby alice bob");
    alice.expect("JOIN lobby bob");

    carol.send("/join lobby");
    carol.expect("JOIN lobby carol");
    carol.expect("WHO lobby alice bob carol");
    alice.expect("JOIN lobby carol");
    bob.expect("JOIN lobby carol");

    for client in [&mut alice, &mut bob, &mut carol] {
        client.expect_nothing_pending();
    }
}

#[test]
fn join_from_another_room_sends_leave_to_the_old_room_and_the_sender_first() {
    let server = Server::start(&[]);
    let (mut alice, mut bob) = pair_in_room(&server, "red");
    let mut carol = server.named("carol");
    carol.join("blue");

    alice.send("/join blue");
    alice.expect("LEAVE red alice");
    alice.expect("JOIN blue alice");
    alice.expect("WHO blue carol alice");
    bob.expect("LEAVE red alice");
    carol.expect("JOIN blue alice");
    for client in [&mut alice, &mut bob, &mut carol] {
        client.expect_nothing_pending();
    }

    // alice is really gone from red and in blue.
    bob.send("/who");
    bob.expect("WHO red bob");
    alice.send("moved");
    alice.expect("MSG blue alice moved");
    carol.expect("MSG blue alice moved");
    bob.expect_nothing_pending();
}

#[test]
fn joining_the_room_you_are_in_answers_only_who() {
    let server = Server::start(&[]);
    let (mut alice, mut bob) = pair_in_room(&server, "lobby");
    alice.send("/join lobby");
    alice.expect("WHO lobby alice bob");
    alice.expect_nothing_pending();
    bob.expect_nothing_pending();
}

#[test]
fn join_of_a_full_room_is_room_full_and_changes_nothing() {
    let server = Server::start(&["--room-capacity", "2"]);
    let (mut alice, mut bob) = pair_in_room(&server, "lobby");
    let mut carol = server.named("carol");

    // From outside any room.
    carol.send("/join lobby");
    carol.expect_err("room-full");
    carol.expect_nothing_pending();
    alice.expect_nothing_pending();
    bob.expect_nothing_pending();

    // From another room: the failed line costs that line only, so carol
    // stays where she was.
    carol.join("side");
    carol.send("/join lobby");
    carol.expect_err("room-full");
    carol.send("/who");
    carol.expect("WHO side carol");
    alice.send("/who");
    alice.expect("WHO lobby alice bob");

    // Once a seat is free, the join succeeds.
    bob.send("/leave");
    bob.expect("LEAVE lobby bob");
    alice.expect("LEAVE lobby bob");
    carol.send("/join lobby");
    carol.expect("LEAVE side carol");
    carol.expect("JOIN lobby carol");
    carol.expect("WHO lobby alice carol");
    alice.expect("JOIN lobby carol");
}

#[test]
fn room_names_are_case_sensitive() {
    let server = Server::start(&[]);
    let mut alice = server.named("alice");
    let mut bob = server.named("bob");
    alice.send("/join Lobby");
    alice.expect("JOIN Lobby alice");
    alice.expect("WHO Lobby alice");
    bob.send("/join lobby");
    bob.expect("JOIN lobby bob");
    bob.expect("WHO lobby bob");
    alice.expect_nothing_pending();
    bob.send("hi");
    bob.expect("MSG lobby bob hi");
    alice.expect_nothing_pending();
    bob.send("/rooms");
    bob.expect("ROOMS Lobby=1 lobby=1");
}

#[test]
fn join_with_a_missing_or_extra_argument_is_bad_args() {
    let server = Server::start(&[]);
    let mut client = server.named("alice");
    client.send("/join");
    client.expect_err("bad-args");
    client.send("/join a b");
    client.expect_err("bad-args");
    client.expect_nothing_pending();
}

#[test]
fn join_of_an_invalid_room_name_is_bad_name() {
    let server = Server::start(&[]);
    let mut client = server.named("alice");
    client.send("/join bad!room");
    client.expect_err("bad-name");
    client.send(&format!("/join {}", "r".repeat(33)));
    client.expect_err("bad-name");
    client.expect_nothing_pending();
    let longest = "r".repeat(32);
    client.join(&longest);
}

// ---------------------------------------------------------------------------
// /leave

#[test]
fn leave_is_announced_to_every_member_including_the_sender() {
    let server = Server::start(&[]);
    let (mut alice, mut bob) = pair_in_room(&server, "lobby");
    bob.send("/leave");
    bob.expect("LEAVE lobby bob");
    alice.expect("LEAVE lobby bob");
    alice.expect_nothing_pending();
    bob.expect_nothing_pending();
    // bob is out: his chat has nowhere to go, and alice's no longer reaches him.
    bob.send("still here?");
    bob.expect_err("not-in-room");
    alice.send("bye bob");
    alice.expect("MSG lobby alice bye bob");
    bob.expect_nothing_pending();
}

#[test]
fn leave_outside_a_room_is_not_in_room() {
    let server = Server::start(&[]);
    let mut client = server.named("alice");
    client.send("/leave");
    client.expect_err("not-in-room");
    client.expect_nothing_pending();
}

#[test]
fn leave_with_an_argument_is_bad_args_and_stays_in_the_room() {
    let server = Server::start(&[]);
    let (mut alice, mut bob) = pair_in_room(&server, "lobby");
    alice.send("/leave x");
    alice.expect_err("bad-args");
    alice.expect_nothing_pending();
    bob.expect_nothing_pending();
    alice.send("still in");
    alice.expect("MSG lobby alice still in");
    bob.expect("MSG lobby alice still in");
}

// ---------------------------------------------------------------------------
// chat text

#[test]
fn chat_text_goes_to_every_member_including_the_sender_only() {
    let server = Server::start(&[]);
    let (mut alice, mut bob) = pair_in_room(&server, "lobby");
    let mut carol = server.named("carol");
    carol.join("other");
    let mut dave = server.named("dave");
    alice.send("hello there, 1 2 3");
    alice.expect("MSG lobby alice hello there, 1 2 3");
    bob.expect("MSG lobby alice hello there, 1 2 3");
    bob.send("a /slash inside is just text");
    bob.expect("MSG lobby bob a /slash inside is just text");
    alice.expect("MSG lobby bob a /slash inside is just text");
    for client in [&mut alice, &mut bob, &mut carol, &mut dave] {
        client.expect_nothing_pending();
    }
}

#[test]
fn chat_text_outside_a_room_is_not_in_room() {
    let server = Server::start(&[]);
    let mut client = server.named("alice");
    client.send("anyone?");
    client.expect_err("not-in-room");
    client.expect_nothing_pending();
}

#[test]
fn double_slash_escapes_a_leading_slash_in_chat_text() {
    let server = Server::start(&[]);
    let (mut alice, mut bob) = pair_in_room(&server, "lobby");
    alice.send("//hello");
    alice.expect("MSG lobby alice /hello");
    bob.expect("MSG lobby alice /hello");
    // An escaped command is text, not a command.
    alice.send("//join elsewhere");
    alice.expect("MSG lobby alice /join elsewhere");
    bob.expect("MSG lobby alice /join elsewhere");
    alice.send("/who");
    alice.expect("WHO lobby alice bob");
}

// ---------------------------------------------------------------------------
// /msg

#[test]
fn msg_delivers_privmsg_to_the_target_and_the_sender_only() {
    let server = Server::start(&[]);
    let mut alice = server.named("alice");
    let mut bob = server.named("bob");
    let mut carol = server.named("carol");
    alice.send("/msg bob hi there  bob");
    alice.expect("PRIVMSG alice bob hi there  bob");
    bob.expect("PRIVMSG alice bob hi there  bob");
    for client in [&mut alice, &mut bob, &mut carol] {
        client.expect_nothing_pending();
    }
}

#[test]
fn msg_reaches_a_member_of_another_room() {
    let server = Server::start(&[]);
    let mut alice = server.named("alice");
    let mut bob = server.named("bob");
    alice.join("red");
    bob.join("blue");
    alice.send("/msg bob psst");
    alice.expect("PRIVMSG alice bob psst");
    bob.expect("PRIVMSG alice bob psst");
}

#[test]
fn msg_finds_its_target_case_insensitively_and_shows_the_targets_spelling() {
    let server = Server::start(&[]);
    let mut alice = server.named("alice");
    let mut bob = server.named("BoB");
    alice.send("/msg bob hey");
    alice.expect("PRIVMSG alice BoB hey");
    bob.expect("PRIVMSG alice BoB hey");
    alice.send("/msg BOB again");
    alice.expect("PRIVMSG alice BoB again");
    bob.expect("PRIVMSG alice BoB again");
}

#[test]
fn msg_to_yourself_delivers_exactly_one_privmsg() {
    let server = Server::start(&[]);
    let mut alice = server.named("Alice");
    alice.send("/msg alice note to self");
    alice.expect("PRIVMSG Alice Alice note to self");
    alice.expect_nothing_pending();
}

#[test]
fn msg_to_an_unknown_nick_is_no_such_nick() {
    let server = Server::start(&[]);
    let mut alice = server.named("alice");
    alice.send("/msg nobody hello?");
    alice.expect_err("no-such-nick");
    alice.expect_nothing_pending();
}

#[test]
fn msg_without_text_or_target_is_bad_args() {
    let server = Server::start(&[]);
    let mut alice = server.named("alice");
    let mut bob = server.named("bob");
    alice.send("/msg bob");
    alice.expect_err("bad-args");
    alice.send("/msg");
    alice.expect_err("bad-args");
    alice.expect_nothing_pending();
    bob.expect_nothing_pending();
}

// ---------------------------------------------------------------------------
// /rooms

#[test]
fn rooms_is_bare_when_there_are_no_rooms() {
    let server = Server::start(&[]);
    let mut client = server.named("alice");
    client.send("/rooms");
    client.expect("ROOMS");
}

#[test]
fn rooms_are_sorted_by_byte_order_with_member_counts() {
    let server = Server::start(&[]);
    let mut a1 = server.named("a1");
    let mut a2 = server.named("a2");
    let mut b = server.named("b");
    let mut u = server.named("u");
    let mut n = server.named("n");
    a1.join("a");
    a2.join_with("a", &mut a1);
    b.join("B");
    u.join("_z");
    n.join("9");
    // Byte order: '9' < 'B' < '_' < 'a'.
    for client in [&mut a1, &mut a2, &mut b, &mut u, &mut n] {
        client.send("/rooms");
        client.expect("ROOMS 9=1 B=1 _z=1 a=2");
    }
}

#[test]
fn a_room_emptied_disappears_from_rooms() {
    let server = Server::start(&[]);
    let mut alice = server.named("alice");
    let mut bob = server.named("bob");

    // Emptied by /leave.
    alice.join("first");
    alice.send("/leave");
    alice.expect("LEAVE first alice");
    alice.send("/rooms");
    alice.expect("ROOMS");

    // Emptied by moving to another room.
    alice.join("second");
    alice.send("/join third");
    alice.expect("LEAVE second alice");
    alice.expect("JOIN third alice");
    alice.expect("WHO third alice");
    alice.send("/rooms");
    alice.expect("ROOMS third=1");

    // Emptied by quitting. Nobody is left in the room to see the `QUIT`, so
    // the only observable is `/rooms`; the session's clean-up may trail its
    // closed socket by a few event-loop turns, hence a bounded re-ask.
    alice.send("/quit");
    alice.expect("BYE");
    alice.expect_eof();
    bob.join("fourth");
    let mut rooms = String::new();
    for _ in 0..500 {
        bob.send("/rooms");
        rooms = bob.expect_prefix("ROOMS");
        if rooms == "ROOMS fourth=1" {
            break;
        }
        assert_eq!(rooms, "ROOMS fourth=1 third=1", "unexpected rooms");
    }
    assert_eq!(rooms, "ROOMS fourth=1");
    bob.send("/who third");
    bob.expect("WHO third");
}

#[test]
fn rooms_with_an_argument_is_bad_args() {
    let server = Server::start(&[]);
    let mut client = server.named("alice");
    client.send("/rooms x");
    client.expect_err("bad-args");
    client.expect_nothing_pending();
}

// ---------------------------------------------------------------------------
// /who

#[test]
fn who_without_argument_lists_the_current_room_in_join_order() {
    let server = Server::start(&[]);
    let (mut alice, mut bob) = pair_in_room(&server, "lobby");
    bob.send("/who");
    bob.expect("WHO lobby alice bob");
    alice.send("/who");
    alice.expect("WHO lobby alice bob");
    // Leaving and coming back puts you at the end.
    alice.send("/leave");
    alice.expect("LEAVE lobby alice");
    bob.expect("LEAVE lobby alice");
    alice.join("lobby");
    bob.expect("JOIN lobby alice");
    bob.send("/who");
    bob.expect("WHO lobby bob alice");
}

#[test]
fn who_of_another_room_lists_its_members() {
    let server = Server::start(&[]);
    let (_alice, _bob) = pair_in_room(&server, "lobby");
    let mut carol = server.named("carol");
    carol.send("/who lobby");
    carol.expect("WHO lobby alice bob");
    carol.join("side");
    carol.send("/who lobby");
    carol.expect("WHO lobby alice bob");
}

#[test]
fn who_of_a_room_that_does_not_exist_lists_no_nicks() {
    let server = Server::start(&[]);
    let mut alice = server.named("alice");
    alice.send("/who nowhere");
    alice.expect("WHO nowhere");
    alice.join("lobby");
    alice.send("/who LOBBY");
    alice.expect("WHO LOBBY");
}

#[test]
fn who_without_argument_outside_a_room_is_not_in_room() {
    let server = Server::start(&[]);
    let mut client = server.named("alice");
    client.send("/who");
    client.expect_err("not-in-room");
    client.expect_nothing_pending();
}

#[test]
fn who_with_two_rooms_is_bad_args() {
    let server = Server::start(&[]);
    let mut client = server.named("alice");
    client.send("/who a b");
    client.expect_err("bad-args");
    client.expect_nothing_pending();
}

// ---------------------------------------------------------------------------
// /ping and /pong

#[test]
fn ping_without_token_answers_bare_pong() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.send("/ping");
    client.expect("PONG");
    client.expect_nothing_pending();
}

#[test]
fn ping_with_a_token_echoes_it_in_pong() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.send("/ping 42");
    client.expect("PONG 42");
    client.send("/ping abc-DEF_9");
    client.expect("PONG abc-DEF_9");
}

#[test]
fn ping_with_two_words_is_bad_args() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.send("/ping a b");
    client.expect_err("bad-args");
    client.expect_nothing_pending();
}

#[test]
fn pong_is_never_answered() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.send("/pong");
    client.send("/pong 1");
    client.send("/PONG 2");
    client.expect_nothing_pending();
}

#[test]
fn pong_with_two_words_is_bad_args() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.send("/pong a b");
    client.expect_err("bad-args");
    client.expect_nothing_pending();
}

// ---------------------------------------------------------------------------
// /quit

#[test]
fn quit_answers_bye_then_closes_the_connection() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.send("/quit");
    client.expect("BYE");
    client.expect_eof();
}

#[test]
fn quit_with_a_reason_answers_bye_then_closes_the_connection() {
    let server = Server::start(&[]);
    let mut client = server.client();
    client.send("/quit gone fishing");
    client.expect("BYE");
    client.expect_eof();
}

#[test]
fn quit_is_seen_by_the_remaining_members_with_reason_quit() {
    let server = Server::start(&[]);
    let (mut alice, mut bob) = pair_in_room(&server, "lobby");
    let mut carol = server.named("carol");
    carol.send("/join lobby");
    carol.expect("JOIN lobby carol");
    carol.expect("WHO lobby alice bob carol");
    alice.expect("JOIN lobby carol");
    bob.expect("JOIN lobby carol");

    alice.send("/quit");
    alice.expect("BYE");
    alice.expect_eof();
    bob.expect("QUIT lobby alice quit");
    carol.expect("QUIT lobby alice quit");
    bob.expect_nothing_pending();
    carol.expect_nothing_pending();
    bob.send("/who");
    bob.expect("WHO lobby bob carol");
}

#[test]
fn quit_with_a_reason_is_still_seen_as_reason_quit() {
    let server = Server::start(&[]);
    let (mut alice, mut bob) = pair_in_room(&server, "lobby");
    alice.send("/quit gone fishing");
    alice.expect("BYE");
    alice.expect_eof();
    bob.expect("QUIT lobby alice quit");
    bob.expect_nothing_pending();
}

#[test]
fn quitting_frees_the_nick() {
    let server = Server::start(&[]);
    let (mut alice, mut bob) = pair_in_room(&server, "lobby");
    alice.send("/quit");
    alice.expect("BYE");
    alice.expect_eof();
    bob.expect("QUIT lobby alice quit");
    let mut newcomer = server.client();
    let guest = newcomer.nick.clone();
    newcomer.send("/nick alice");
    newcomer.expect(&format!("NICK {guest} alice"));
}

// ---------------------------------------------------------------------------
// Line syntax: verbs, terminators, empty lines, unknown commands

#[test]
fn verbs_are_case_insensitive() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let guest = client.nick.clone();
    client.send("/Nick Bob");
    client.expect(&format!("NICK {guest} Bob"));
    client.send("/JOIN lobby");
    client.expect("JOIN lobby Bob");
    client.expect("WHO lobby Bob");
    client.send("/wHo");
    client.expect("WHO lobby Bob");
    client.send("/ROOMS");
    client.expect("ROOMS lobby=1");
    client.send("/PiNg x");
    client.expect("PONG x");
    client.send("/MSG bob me");
    client.expect("PRIVMSG Bob Bob me");
    client.send("/Leave");
    client.expect("LEAVE lobby Bob");
    client.send("/QUIT");
    client.expect("BYE");
    client.expect_eof();
}

#[test]
fn crlf_line_endings_are_accepted_and_replies_end_with_plain_newline() {
    let server = Server::start(&[]);
    let mut alice = server.client();
    let mut bob = server.named("bob");
    bob.join("lobby");
    let guest = alice.nick.clone();
    // `line()` strips only the `\n`, so a stray `\r` would fail `expect`.
    alice.send_raw(b"/nick alice\r\n");
    alice.expect(&format!("NICK {guest} alice"));
    alice.send_raw(b"/join lobby\r\nhello\r\n/ping t\r\n");
    alice.expect("JOIN lobby alice");
    alice.expect("WHO lobby bob alice");
    alice.expect("MSG lobby alice hello");
    alice.expect("PONG t");
    bob.expect("JOIN lobby alice");
    bob.expect("MSG lobby alice hello");
    bob.send_raw(b"/msg alice hi\r\n");
    bob.expect("PRIVMSG bob alice hi");
    alice.expect("PRIVMSG bob alice hi");
}

#[test]
fn empty_lines_are_ignored() {
    let server = Server::start(&[]);
    let (mut alice, mut bob) = pair_in_room(&server, "lobby");
    alice.send_raw(b"\n\r\n\n\r\n");
    alice.expect_nothing_pending();
    bob.expect_nothing_pending();
    let mut outsider = server.client();
    outsider.send_raw(b"\n\r\n");
    outsider.expect_nothing_pending();
}

#[test]
fn an_unknown_verb_is_unknown_command() {
    let server = Server::start(&[]);
    let mut client = server.named("alice");
    client.send("/dance");
    client.expect_err("unknown-command");
    client.send("/dance wildly");
    client.expect_err("unknown-command");
    client.expect_nothing_pending();
}

#[test]
fn a_command_error_costs_that_line_only() {
    let server = Server::start(&[]);
    let (mut alice, mut bob) = pair_in_room(&server, "lobby");
    alice.send_raw(b"/dance\n/nick bob\n/join\nstill talking\n");
    alice.expect_err("unknown-command");
    alice.expect_err("nick-taken");
    alice.expect_err("bad-args");
    alice.expect("MSG lobby alice still talking");
    bob.expect("MSG lobby alice still talking");
    alice.expect_nothing_pending();
    bob.expect_nothing_pending();
}
