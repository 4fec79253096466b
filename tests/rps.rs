//! The `rps` example over real TCP: text and JSON players paired at tables
//! of two, each reading the game in its own format; moves private until the
//! result; a player who leaves mid-game and the opponent it leaves behind.

mod common;

use common::{Client, Server};
use serde_json::{Value, json};

/// The example on `127.0.0.1:0`, with a JSON listener on another free port.
fn rps() -> Server {
    Server::start_example("rps", &["--json-bind", "127.0.0.1:0"])
}

/// The next line, parsed as JSON.
#[track_caller]
fn event(client: &mut Client) -> Value {
    let line = client.line();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
}

/// A JSON player, its `welcome` read.
#[track_caller]
fn json_player(server: &Server) -> Client {
    let mut client = Client::connect(server.listener_addr("json"));
    let welcome = event(&mut client);
    client.id = welcome["id"].as_u64().expect("a numeric id");
    client.nick = format!("guest{}", client.id);
    let expected = json!({"event": "welcome", "id": client.id, "nick": client.nick});
    assert_eq!(welcome, expected);
    client
}

fn result(winner: Option<&str>) -> Value {
    json!({"event": "result", "winner": winner})
}

#[test]
fn text_and_json_players_at_one_table_each_read_the_result_in_their_own_format() {
    let server = rps();
    let mut ann = server.client();
    let mut bob = json_player(&server);

    // Ann's move stays hers: she is told to wait, and the very next thing
    // Bob reads, once he has thrown too, is the result.
    ann.send("throw rock");
    ann.expect("WAITING");
    bob.send(r#"{"cmd":"throw","move":"paper"}"#);
    assert_eq!(event(&mut bob), result(Some(&bob.nick)));
    ann.expect(&format!("RESULT {}", bob.nick));

    // Another round, Bob first: a draw.
    bob.send(r#"{"cmd":"throw","move":"scissors"}"#);
    assert_eq!(event(&mut bob), json!({"event": "waiting"}));
    ann.send("throw scissors");
    ann.expect("RESULT draw");
    assert_eq!(event(&mut bob), result(None));

    // And one Ann wins.
    ann.send("throw rock");
    ann.expect("WAITING");
    bob.send(r#"{"cmd":"throw","move":"scissors"}"#);
    assert_eq!(event(&mut bob), result(Some(&ann.nick)));
    ann.expect(&format!("RESULT {}", ann.nick));
}

#[test]
fn two_text_players_draw_and_a_move_may_change_until_the_opponent_throws() {
    let server = rps();
    let mut ann = server.client();
    let mut bob = server.client();
    ann.send("throw lizard");
    ann.expect("ERR throw rock|paper|scissors, or quit");
    ann.send("throw rock");
    ann.expect("WAITING");
    // Until Bob throws, Ann may change her mind.
    ann.send("throw paper");
    ann.expect("WAITING");
    bob.send("throw paper");
    bob.expect("RESULT draw");
    ann.expect("RESULT draw");
}

#[test]
fn a_json_player_who_quits_mid_game_leaves_the_other_told_and_the_seat_free() {
    let server = rps();
    let mut ann = server.client();
    let mut bob = json_player(&server);
    bob.send(r#"{"cmd":"throw","move":"rock"}"#);
    assert_eq!(event(&mut bob), json!({"event": "waiting"}));
    bob.send(r#"{"cmd":"quit"}"#);
    bob.expect_eof();
    ann.expect("OPPONENT-LEFT quit");

    // Bob took his throw with him: Ann's waits for a new opponent…
    ann.send("throw paper");
    ann.expect("WAITING");
    // …who gets Bob's seat and answers it.
    let mut cat = server.client();
    cat.send("throw scissors");
    cat.expect(&format!("RESULT {}", cat.nick));
    ann.expect(&format!("RESULT {}", cat.nick));
}

#[test]
fn a_player_who_resets_mid_game_leaves_the_other_told_why_and_other_tables_alone() {
    let server = rps();
    let mut ann = server.client();
    let mut bob = json_player(&server);
    // The first table is full: Cat sits at the next one, alone.
    let mut cat = server.client();
    cat.send("throw rock");
    cat.expect("WAITING");

    ann.send("throw rock");
    ann.expect("WAITING");
    ann.reset();
    let left = json!({"event": "opponent-left", "reason": "reset"});
    assert_eq!(event(&mut bob), left);

    // Dan takes Ann's seat, not Cat's table; Ann's throw went with her.
    let mut dan = server.client();
    dan.send("throw paper");
    dan.expect("WAITING");
    bob.send(r#"{"cmd":"throw","move":"rock"}"#);
    assert_eq!(event(&mut bob), result(Some(&dan.nick)));
    dan.expect(&format!("RESULT {}", dan.nick));
    // Cat is still waiting for an opponent of her own.
    let mut eve = server.client();
    eve.send("throw rock");
    eve.expect("RESULT draw");
    cat.expect("RESULT draw");
}
