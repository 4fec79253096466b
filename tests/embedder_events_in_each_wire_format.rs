//! An embedding program's typed events reach every session in that
//! session's own wire format: in one room, a text member reads the lobby's
//! text line and a JSON member the SPEC §5 JSON object for the very same
//! broadcast; `send_to`, `broadcast_all` and a kick's farewell are rendered
//! per session too; and a subscriber learns each session's wire format.

mod common;
mod embedded;

use std::net::SocketAddr;
use std::sync::{Arc, mpsc};

use common::{Client, READ_TIMEOUT};
use embedded::Embedded;
use switchboard::{
    DisconnectReason, LobbyConfig, LobbyEvent, LobbyLine, SessionId, SharedEvent, Wire,
};

/// A lobby on two threads serving text (`addrs[0]`) and JSON (`addrs[1]`).
fn lobby() -> Embedded {
    let config = LobbyConfig {
        threads: 2,
        ..LobbyConfig::default()
    };
    Embedded::lobby(config, true)
}

/// A JSON client: reads its welcome, then takes `nick`. Lines are compared
/// exactly as the server wrote them.
#[track_caller]
fn json_client(addr: SocketAddr, nick: &str) -> Client {
    let mut client = Client::connect(addr);
    let welcome = client.line();
    let id = welcome
        .strip_prefix(r#"{"event":"welcome","id":"#)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("expected a JSON welcome, got {welcome:?}"));
    client.id = id.parse().expect("numeric id");
    assert_eq!(
        welcome,
        format!(r#"{{"event":"welcome","id":{id},"nick":"guest{id}"}}"#)
    );
    client.send(&format!(r#"{{"cmd":"nick","name":"{nick}"}}"#));
    client.expect(&format!(
        r#"{{"event":"nick","old":"guest{id}","new":"{nick}"}}"#
    ));
    client.nick = nick.to_owned();
    client
}

/// A JSON ping round trip comes back next: nothing else is pending.
#[track_caller]
fn json_nothing_pending(client: &mut Client) {
    client.send(r#"{"cmd":"ping","token":"probe"}"#);
    client.expect(r#"{"event":"pong","token":"probe"}"#);
}

/// A text member `tess` and a JSON member `jay` in `arena`, on different
/// threads, with every announcement consumed.
fn text_and_json_members(lobby: &Embedded) -> (Client, Client) {
    let mut tess = Client::connect(lobby.addrs[0]);
    tess.welcome_as("tess");
    let mut jay = json_client(lobby.addrs[1], "jay");
    let registry = lobby.registry();
    assert_ne!(
        registry.thread_of(SessionId(tess.id)),
        registry.thread_of(SessionId(jay.id)),
        "the two members run on different threads"
    );
    tess.join_alone("arena");
    jay.send(r#"{"cmd":"join","room":"arena"}"#);
    jay.expect(r#"{"event":"join","room":"arena","nick":"jay"}"#);
    jay.expect(r#"{"event":"who","room":"arena","nicks":["tess","jay"]}"#);
    tess.expect("JOIN arena jay");
    (tess, jay)
}

#[test]
fn a_typed_broadcast_reaches_text_and_json_members_each_in_its_format() {
    let lobby = lobby();
    let (mut tess, mut jay) = text_and_json_members(&lobby);

    let reached = lobby.ask(|registry| async move {
        let line = LobbyLine::Msg {
            room: Arc::from("arena"),
            nick: Arc::from("host"),
            text: "round 1: \"go\" \\o/ ü".into(),
        };
        registry.broadcast("arena", line).await
    });
    assert_eq!(reached, 2);
    tess.expect("MSG arena host round 1: \"go\" \\o/ ü");
    jay.expect(r#"{"event":"msg","room":"arena","nick":"host","text":"round 1: \"go\" \\o/ ü"}"#);

    // A chat line from the text member reaches the JSON member as JSON, in
    // the same room order as the embedder's events.
    tess.send("gl hf");
    tess.expect("MSG arena tess gl hf");
    jay.expect(r#"{"event":"msg","room":"arena","nick":"tess","text":"gl hf"}"#);

    // One session at a time, in its own format.
    let jay_id = SessionId(jay.id);
    let sent = lobby.ask(move |registry| async move {
        let line = LobbyLine::PrivMsg {
            from: Arc::from("host"),
            to: Arc::from("jay"),
            text: "you are next".into(),
        };
        registry.send_to(jay_id, line).await
    });
    assert!(sent);
    jay.expect(r#"{"event":"privmsg","from":"host","to":"jay","text":"you are next"}"#);
    tess.expect_nothing_pending();
    let tess_id = SessionId(tess.id);
    let sent = lobby.ask(move |registry| async move {
        let line = LobbyLine::PrivMsg {
            from: Arc::from("host"),
            to: Arc::from("tess"),
            text: "you are after jay".into(),
        };
        registry.send_to(tess_id, line).await
    });
    assert!(sent);
    tess.expect("PRIVMSG host tess you are after jay");
    json_nothing_pending(&mut jay);

    // Every session of the server, each in its format.
    let reached = lobby.ask(|registry| async move {
        let line = LobbyLine::Msg {
            room: Arc::from("*"),
            nick: Arc::from("host"),
            text: "restart in 5".into(),
        };
        registry.broadcast_all(line).await
    });
    assert_eq!(reached, 2);
    tess.expect("MSG * host restart in 5");
    jay.expect(r#"{"event":"msg","room":"*","nick":"host","text":"restart in 5"}"#);
    tess.expect_nothing_pending();
    json_nothing_pending(&mut jay);
}

/// Forwards the lobby's events to the test thread.
struct Forward(mpsc::Sender<LobbyEvent>);

impl actix::Actor for Forward {
    type Context = actix::Context<Self>;
}

impl actix::Handler<LobbyEvent> for Forward {
    type Result = ();

    fn handle(&mut self, event: LobbyEvent, _: &mut Self::Context) {
        let _ = self.0.send(event);
    }
}

/// The next event about `session` that `wanted` accepts, skipping others
/// (sessions on different threads report in no fixed order); bounded.
#[track_caller]
fn next_event(
    events: &mpsc::Receiver<LobbyEvent>,
    session: SessionId,
    wanted: impl Fn(&LobbyEvent) -> bool,
) -> LobbyEvent {
    for _ in 0..100 {
        let event = events
            .recv_timeout(READ_TIMEOUT)
            .expect("a lobby event in time");
        let about = match &event {
            LobbyEvent::Connected { session, .. }
            | LobbyEvent::Command { session, .. }
            | LobbyEvent::Disconnected { session, .. } => *session,
        };
        if about == session && wanted(&event) {
            return event;
        }
    }
    panic!("no such event about session {session}");
}

#[test]
fn a_kicked_json_member_reads_its_farewell_as_json_and_subscribers_learn_its_format() {
    let lobby = lobby();
    let (events_tx, events) = mpsc::channel();
    let forward =
        actix::Actor::start_in_arbiter(lobby.system.arbiter(), move |_| Forward(events_tx));
    lobby.server().subscribe(forward.recipient());
    let (mut tess, mut jay) = text_and_json_members(&lobby);
    let (tess_id, jay_id) = (SessionId(tess.id), SessionId(jay.id));

    let connected = |event: &LobbyEvent| matches!(event, LobbyEvent::Connected { .. });
    assert_eq!(
        next_event(&events, tess_id, connected),
        LobbyEvent::Connected {
            session: tess_id,
            peer: tess.stream.local_addr().expect("local address"),
            nick: format!("guest{tess_id}"),
            wire: Wire::Text,
        }
    );
    assert_eq!(
        next_event(&events, jay_id, connected),
        LobbyEvent::Connected {
            session: jay_id,
            peer: jay.stream.local_addr().expect("local address"),
            nick: format!("guest{jay_id}"),
            wire: Wire::Json,
        }
    );

    let kicked = lobby.ask(move |registry| async move {
        let farewell = LobbyLine::PrivMsg {
            from: Arc::from("host"),
            to: Arc::from("jay"),
            text: "bye now".into(),
        };
        registry
            .kick(jay_id, Some(SharedEvent::new(farewell)))
            .await
    });
    assert!(kicked);
    jay.expect(r#"{"event":"privmsg","from":"host","to":"jay","text":"bye now"}"#);
    jay.expect_eof();
    tess.expect("QUIT arena jay kicked");
    tess.expect_nothing_pending();

    let disconnected = |event: &LobbyEvent| matches!(event, LobbyEvent::Disconnected { .. });
    assert_eq!(
        next_event(&events, jay_id, disconnected),
        LobbyEvent::Disconnected {
            session: jay_id,
            nick: "jay".into(),
            room: Some("arena".into()),
            reason: DisconnectReason::Kicked,
            wire: Wire::Json,
        }
    );
}
