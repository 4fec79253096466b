//! The lobby: the text (SPEC §3) and JSON (SPEC §5) protocols as a
//! [`Protocol`] that runs inside each session.
//!
//! Parsing, validation, replies and errors happen on the session's own
//! thread; rooms, names and lookups go through the registry. Embedding
//! programs can watch the lobby by subscribing to [`LobbyEvent`]s.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use actix::prelude::*;
use bytes::Bytes;
use futures::channel::oneshot;
use log::{debug, info};

use crate::driver::{ClosedSession, Protocol, SessionContext};
use crate::event::{Event, SharedEvent, Wire};
use crate::handle::{Control, SessionId, SessionIds};
use crate::protocol::{
    Command, ErrorCode, Rejection, Reply, decode_text, is_valid_name, parse_json_line, parse_line,
};
use crate::reason::DisconnectReason;
use crate::room::{Answer, Peer, RoomName};

/// What happened in the lobby, for an embedding program that subscribed
/// (see [`LobbyServer::subscribe`](crate::LobbyServer::subscribe)).
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum LobbyEvent {
    /// A session arrived (and was sent its `WELCOME`).
    Connected {
        /// The new session.
        session: SessionId,
        /// Its peer's address.
        peer: SocketAddr,
        /// Its nick (`guest<id>`).
        nick: String,
        /// Its wire format.
        wire: Wire,
    },
    /// A session's command was carried out (a refused one is not reported).
    Command {
        /// Who sent it.
        session: SessionId,
        /// Its nick when it sent it.
        nick: String,
        /// Its room when it sent it.
        room: Option<String>,
        /// The command.
        command: Command,
    },
    /// A session ended; its room has been told and the registry forgets it.
    Disconnected {
        /// The session.
        session: SessionId,
        /// Its last nick.
        nick: String,
        /// The room it was in.
        room: Option<String>,
        /// Why it ended.
        reason: DisconnectReason,
        /// Its wire format.
        wire: Wire,
    },
}

/// A lobby line for other sessions, owned so it can be shared between them
/// and rendered in each member's wire format: the events a room, a private
/// message or an embedding program sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LobbyLine {
    /// `MSG <room> <nick> <text>`
    Msg {
        /// The room.
        room: RoomName,
        /// The speaker.
        nick: Arc<str>,
        /// What was said.
        text: String,
    },
    /// `JOIN <room> <nick>`
    Join {
        /// The room.
        room: RoomName,
        /// Who joined.
        nick: Arc<str>,
    },
    /// `LEAVE <room> <nick>`
    Leave {
        /// The room.
        room: RoomName,
        /// Who left.
        nick: Arc<str>,
    },
    /// `NICK <old> <new>`
    Nick {
        /// Before.
        old: Arc<str>,
        /// After.
        new: Arc<str>,
    },
    /// `QUIT <room> <nick> <reason>`
    Quit {
        /// The room.
        room: RoomName,
        /// Who ended.
        nick: Arc<str>,
        /// Why.
        reason: DisconnectReason,
    },
    /// `PRIVMSG <from> <to> <text>`
    PrivMsg {
        /// The sender.
        from: Arc<str>,
        /// The target, in its own spelling.
        to: Arc<str>,
        /// What was said.
        text: String,
    },
}

impl LobbyLine {
    fn reply(&self) -> Reply<'_> {
        match self {
            LobbyLine::Msg { room, nick, text } => Reply::Msg { room, nick, text },
            LobbyLine::Join { room, nick } => Reply::Join { room, nick },
            LobbyLine::Leave { room, nick } => Reply::Leave { room, nick },
            LobbyLine::Nick { old, new } => Reply::Nick { old, new },
            LobbyLine::Quit { room, nick, reason } => Reply::Quit {
                room,
                nick,
                reason: reason.word(),
            },
            LobbyLine::PrivMsg { from, to, text } => Reply::PrivMsg { from, to, text },
        }
    }
}

impl Event for LobbyLine {
    fn render(&self, wire: Wire) -> Bytes {
        render(wire, &self.reply())
    }
}

/// Renders a lobby line in `wire`.
fn render(wire: Wire, reply: &Reply<'_>) -> Bytes {
    match wire {
        Wire::Text => reply.to_line(),
        Wire::Json => reply.to_json_line(),
    }
}

/// What every lobby session of one server shares: who watches the lobby,
/// and the server's id sequence (which `guest<id>` nicks are still to come).
#[derive(Default)]
pub(crate) struct LobbyShared {
    /// The server's ids: a `guest<id>` nick not issued yet is reserved for the
    /// session that will be welcomed with it.
    ids: SessionIds,
    /// Whether anyone subscribed: checked on every command, so the lock is
    /// only taken when there is someone to tell.
    watched: AtomicBool,
    subscribers: Mutex<Vec<Recipient<LobbyEvent>>>,
    /// Events a subscriber's full mailbox could not take.
    dropped_events: AtomicU64,
}

impl LobbyShared {
    pub(crate) fn new(ids: SessionIds) -> Self {
        LobbyShared {
            ids,
            ..LobbyShared::default()
        }
    }

    pub(crate) fn subscribe(&self, subscriber: Recipient<LobbyEvent>) {
        let mut subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        subscribers.push(subscriber);
        self.watched.store(true, Ordering::Release);
    }

    fn watched(&self) -> bool {
        self.watched.load(Ordering::Acquire)
    }

    fn notify(&self, event: LobbyEvent) {
        if !self.watched() {
            return;
        }
        let mut subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A subscriber that stopped is dropped; one whose mailbox is full
        // misses the event rather than growing the mailbox without bound.
        subscribers.retain(|subscriber| match subscriber.try_send(event.clone()) {
            Ok(()) => true,
            Err(SendError::Full(_)) => {
                self.dropped_events.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(SendError::Closed(_)) => false,
        });
    }

    /// How many events subscribers missed because their mailbox was full.
    pub(crate) fn dropped_events(&self) -> u64 {
        self.dropped_events.load(Ordering::Relaxed)
    }
}

/// A lobby request waiting for its answer, with what finishing it needs.
enum Pending {
    Command(Command),
    /// `/msg`: the text to deliver once the target is found. A `guest<id>`
    /// target is first looked for as session `id` (`by_id`), then by name.
    PrivMsg {
        to: String,
        text: String,
        command: Command,
        by_id: bool,
    },
    /// `/nick guest<id>` of another session: free only if session `id` no
    /// longer goes by it.
    GuestNick(Command),
    JoinFor(oneshot::Sender<Result<(), Rejection>>),
    LeaveFor(oneshot::Sender<bool>),
}

/// One session of the lobby. See the module docs.
pub struct Lobby {
    shared: Arc<LobbyShared>,
    /// Boxed: most sessions wait for nothing, and every session pays for
    /// the size of this struct.
    pending: Option<Box<Pending>>,
}

impl Lobby {
    pub(crate) fn new(shared: Arc<LobbyShared>) -> Self {
        Lobby {
            shared,
            pending: None,
        }
    }

    fn reply(cx: &mut SessionContext<'_>, reply: &Reply<'_>) {
        let bytes = render(cx.wire(), reply);
        cx.send_bytes(bytes);
    }

    fn reject(cx: &mut SessionContext<'_>, rejection: &Rejection) {
        debug!("session {}: ERR {}", cx.id(), rejection.code.as_str());
        Self::reply(cx, &Reply::rejection(rejection));
    }

    fn parse(cx: &SessionContext<'_>, frame: &[u8]) -> Result<Option<Command>, Rejection> {
        match cx.wire() {
            Wire::Text => decode_text(frame).and_then(parse_line),
            Wire::Json => parse_json_line(frame),
        }
    }

    fn carried_out(&self, cx: &SessionContext<'_>, command: Command) {
        if self.shared.watched() {
            self.shared.notify(LobbyEvent::Command {
                session: cx.id(),
                nick: cx.name().to_string(),
                room: cx.room().map(|room| room.to_string()),
                command,
            });
        }
    }

    /// Carries out `command`; what needs an answer is finished in
    /// [`Protocol::answer`].
    fn execute(&mut self, cx: &mut SessionContext<'_>, command: Command) -> Result<(), Rejection> {
        debug!("session {}: {command:?}", cx.id());
        let nick = cx.name().clone();
        match &command {
            Command::Nick(new) => {
                match guest_number(new) {
                    Some(id) if id > self.shared.ids.last_issued() => {
                        return Err(reserved_guest_nick());
                    }
                    Some(id) if id != cx.id() => {
                        // Taken while session `id` still goes by it.
                        cx.find_session(id);
                        self.pending = Some(Box::new(Pending::GuestNick(command)));
                    }
                    _ => self.rename(cx, command),
                }
            }
            Command::Join(room) => {
                self.join(cx, room);
                self.pending = Some(Box::new(Pending::Command(command)));
            }
            Command::Leave => {
                let room = cx.room().cloned().ok_or_else(not_in_room)?;
                cx.leave(Some(SharedEvent::new(LobbyLine::Leave { room, nick })));
                self.pending = Some(Box::new(Pending::Command(command)));
            }
            Command::Say(text) => {
                let room = cx.room().cloned().ok_or_else(not_in_room)?;
                let text = text.clone();
                cx.publish(SharedEvent::new(LobbyLine::Msg { room, nick, text }));
                self.carried_out(cx, command);
            }
            Command::Msg { to, text } => {
                let by_id = match guest_number(to) {
                    Some(id) if id <= self.shared.ids.last_issued() => {
                        cx.find_session(id);
                        true
                    }
                    _ => {
                        cx.find_name(to);
                        false
                    }
                };
                let (to, text) = (to.clone(), text.clone());
                self.pending = Some(Box::new(Pending::PrivMsg {
                    to,
                    text,
                    command,
                    by_id,
                }));
            }
            Command::Rooms => {
                cx.rooms();
                self.pending = Some(Box::new(Pending::Command(command)));
            }
            Command::Who(room) => {
                let room = match room {
                    Some(room) => room.clone(),
                    None => cx.room().ok_or_else(not_in_room)?.to_string(),
                };
                cx.who(&room);
                self.pending = Some(Box::new(Pending::Command(command)));
            }
            Command::Ping(token) => {
                Self::reply(
                    cx,
                    &Reply::Pong {
                        token: token.as_deref(),
                    },
                );
                self.carried_out(cx, command);
            }
            Command::Pong(_) => self.carried_out(cx, command),
            Command::Quit(reason) => {
                info!(
                    "session {} ({nick}) quits: {}",
                    cx.id(),
                    reason.as_deref().unwrap_or("-")
                );
                self.carried_out(cx, command);
                let bye = render(cx.wire(), &Reply::Bye);
                cx.close(DisconnectReason::Quit, Some(bye));
            }
        }
        Ok(())
    }

    /// `/nick NAME` once the name may be claimed: the directory decides.
    fn rename(&mut self, cx: &mut SessionContext<'_>, command: Command) {
        let Command::Nick(new) = &command else {
            return;
        };
        let announce = cx.room().map(|_| {
            SharedEvent::new(LobbyLine::Nick {
                old: cx.name().clone(),
                new: Arc::from(new.as_str()),
            })
        });
        cx.rename(new, announce);
        self.pending = Some(Box::new(Pending::Command(command)));
    }

    /// `/join ROOM`: the room you are in answers `WHO` only.
    fn join(&mut self, cx: &mut SessionContext<'_>, room: &str) {
        if cx.room().is_some_and(|current| &**current == room) {
            return cx.who(room);
        }
        let nick = cx.name().clone();
        let room_name: RoomName = Arc::from(room);
        let join = LobbyLine::Join {
            room: room_name,
            nick: nick.clone(),
        };
        let leave = cx
            .room()
            .cloned()
            .map(|old| SharedEvent::new(LobbyLine::Leave { room: old, nick }));
        cx.join(room, Some(SharedEvent::new(join)), leave);
    }

    /// A session lookup answered: `found` is the session if it goes by the
    /// name the pending command is about.
    fn found(
        &mut self,
        cx: &mut SessionContext<'_>,
        pending: Option<Pending>,
        found: Option<Peer>,
    ) {
        match pending {
            Some(Pending::GuestNick(command)) => {
                let Command::Nick(new) = &command else {
                    return;
                };
                match found {
                    Some(owner) if owner.name.eq_ignore_ascii_case(new) => {
                        let message = format!("{new} is already taken");
                        Self::reject(cx, &Rejection::new(ErrorCode::NickTaken, message));
                    }
                    // Its owner goes by another name: the directory decides.
                    Some(_) => self.rename(cx, command),
                    // Its owner has left, or has not started yet (its id is
                    // drawn before it registers): only a guest nick that no
                    // `WELCOME` can still give is free.
                    None => Self::reject(cx, &reserved_guest_nick()),
                }
            }
            Some(Pending::PrivMsg {
                to,
                text,
                command,
                by_id,
            }) => match found {
                Some(target) => {
                    let line = SharedEvent::new(LobbyLine::PrivMsg {
                        from: cx.name().clone(),
                        to: target.name.clone(),
                        text,
                    });
                    if target.id != cx.id() {
                        cx.send_to(&target, line.clone());
                    }
                    cx.send_bytes(line.bytes(cx.wire()));
                    self.carried_out(cx, command);
                }
                // Session `id` goes by another name now; someone else may
                // have taken its guest nick since.
                None if by_id => {
                    cx.find_name(&to);
                    self.pending = Some(Box::new(Pending::PrivMsg {
                        to,
                        text,
                        command,
                        by_id: false,
                    }));
                }
                None => {
                    let message = format!("no one is called {to}");
                    Self::reject(cx, &Rejection::new(ErrorCode::NoSuchNick, message));
                }
            },
            _ => {}
        }
    }

    fn send_who(cx: &mut SessionContext<'_>, room: &str, members: &[Arc<str>]) {
        let nicks: Vec<&str> = members.iter().map(|nick| &**nick).collect();
        Self::reply(
            cx,
            &Reply::Who {
                room,
                nicks: &nicks,
            },
        );
    }
}

fn reserved_guest_nick() -> Rejection {
    Rejection::new(
        ErrorCode::BadName,
        "guest<number> is reserved for the session with that id",
    )
}

fn unavailable() -> Rejection {
    Rejection::new(
        ErrorCode::Unavailable,
        "the cluster cannot be reached; try again",
    )
}

fn not_in_room() -> Rejection {
    Rejection::new(ErrorCode::NotInRoom, "join a room first")
}

/// The id in a `guest<id>` nick as `WELCOME` gives it (any case, no leading
/// zero): the nick session `id` arrives with. Other names (`guest007`,
/// `guest0`, `guestbook`) are ordinary names.
fn guest_number(nick: &str) -> Option<SessionId> {
    let prefix = nick.get(..5)?;
    let digits = &nick[5..];
    if !prefix.eq_ignore_ascii_case("guest")
        || digits.starts_with('0')
        || digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    digits.parse().ok().map(SessionId)
}

fn guest_nick(id: SessionId) -> String {
    format!("guest{id}")
}

impl Protocol for Lobby {
    fn opened(&mut self, cx: &mut SessionContext<'_>) {
        let nick = guest_nick(cx.id());
        cx.set_name(nick.as_str());
        let welcome = Reply::Welcome {
            id: cx.id().0,
            nick: &nick,
        };
        Self::reply(cx, &welcome);
        debug!("session {} connected from {} as {nick}", cx.id(), cx.peer());
        self.shared.notify(LobbyEvent::Connected {
            session: cx.id(),
            peer: cx.peer(),
            nick,
            wire: cx.wire(),
        });
    }

    fn frame(&mut self, cx: &mut SessionContext<'_>, frame: Bytes) {
        let result = match Self::parse(cx, &frame) {
            Ok(Some(command)) => self.execute(cx, command),
            Ok(None) => Ok(()),
            Err(rejection) => Err(rejection),
        };
        if let Err(rejection) = result {
            Self::reject(cx, &rejection);
        }
    }

    fn oversized(&mut self, cx: &mut SessionContext<'_>) {
        let rejection = Rejection::new(ErrorCode::LineTooLong, "line exceeds the maximum length");
        Self::reject(cx, &rejection);
    }

    fn rate_limited(&mut self, cx: &mut SessionContext<'_>) {
        let rejection = Rejection::new(ErrorCode::RateLimited, "too many lines per second");
        Self::reject(cx, &rejection);
    }

    fn heartbeat(&mut self, cx: &mut SessionContext<'_>, count: u64) {
        Self::reply(cx, &Reply::Ping { token: count });
    }

    fn idle(&mut self, cx: &mut SessionContext<'_>) {
        let farewell = Reply::Error {
            code: ErrorCode::IdleTimeout,
            message: "no input for too long",
        };
        let farewell = render(cx.wire(), &farewell);
        cx.close(DisconnectReason::IdleTimeout, Some(farewell));
    }

    fn answer(&mut self, cx: &mut SessionContext<'_>, answer: Answer) {
        if let Answer::Unavailable { broadcast: true } = answer {
            // A chat line the cluster could not take: no command waits on it.
            let rejection = Rejection::new(
                ErrorCode::Unavailable,
                "the cluster cannot be reached; only this node's members got it",
            );
            return Self::reject(cx, &rejection);
        }
        let pending = self.pending.take().map(|pending| *pending);
        let outcome = match answer {
            Answer::Joined { room, members } => {
                Self::send_who(cx, &room, &members);
                Ok(())
            }
            Answer::Members { room, members } => {
                Self::send_who(cx, &room, &members);
                Ok(())
            }
            Answer::RoomFull { room, capacity } => Err(Rejection::new(
                ErrorCode::RoomFull,
                format!("{room} already has {capacity} members"),
            )),
            Answer::Left { .. } => Ok(()),
            Answer::Unavailable { .. } => Err(unavailable()),
            Answer::Renamed { old, new, room } => {
                if room.is_none() {
                    Self::reply(
                        cx,
                        &Reply::Nick {
                            old: &old,
                            new: &new,
                        },
                    );
                }
                Ok(())
            }
            Answer::NameTaken { name } => Err(Rejection::new(
                ErrorCode::NickTaken,
                format!("{name} is already taken"),
            )),
            Answer::Rooms(list) => {
                let line = list.rendered(cx.wire(), |rooms| {
                    let rooms: Vec<(&str, usize)> =
                        rooms.iter().map(|(room, n)| (&**room, *n)).collect();
                    render(cx.wire(), &Reply::Rooms { rooms: &rooms })
                });
                cx.send_bytes(line);
                Ok(())
            }
            Answer::Found(peer) => {
                let found = peer.filter(|peer| match &pending {
                    Some(Pending::PrivMsg { to, .. }) => peer.name.eq_ignore_ascii_case(to),
                    // Whatever it goes by now: see `found`.
                    Some(Pending::GuestNick(_)) => true,
                    _ => false,
                });
                return self.found(cx, pending, found);
            }
        };
        match (pending, outcome) {
            (Some(Pending::Command(command)), Ok(())) => self.carried_out(cx, command),
            (Some(Pending::Command(_)), Err(rejection)) => Self::reject(cx, &rejection),
            (Some(Pending::JoinFor(done)), outcome) => {
                let _ = done.send(outcome);
            }
            (Some(Pending::LeaveFor(done)), _) => {
                let _ = done.send(true);
            }
            (_, Err(rejection)) => Self::reject(cx, &rejection),
            _ => {}
        }
    }

    fn control(&mut self, cx: &mut SessionContext<'_>, control: Control) {
        match control {
            Control::Join { room, done } => {
                if !is_valid_name(&room) {
                    let rejection = Rejection::new(
                        ErrorCode::BadName,
                        "names are 1-32 characters of A-Z a-z 0-9 _ -",
                    );
                    let _ = done.send(Err(rejection));
                    return;
                }
                self.join(cx, &room);
                self.pending = Some(Box::new(Pending::JoinFor(done)));
            }
            Control::Leave { done } => {
                let Some(room) = cx.room().cloned() else {
                    let _ = done.send(false);
                    return;
                };
                let nick = cx.name().clone();
                cx.leave(Some(SharedEvent::new(LobbyLine::Leave { room, nick })));
                self.pending = Some(Box::new(Pending::LeaveFor(done)));
            }
        }
    }

    fn shutdown(&mut self, cx: &mut SessionContext<'_>) {
        let farewell = render(cx.wire(), &Reply::Shutdown);
        cx.close(DisconnectReason::Shutdown, Some(farewell));
    }

    fn quit_event(
        &mut self,
        room: &RoomName,
        name: &Arc<str>,
        reason: DisconnectReason,
    ) -> Option<SharedEvent> {
        Some(SharedEvent::new(LobbyLine::Quit {
            room: room.clone(),
            nick: name.clone(),
            reason,
        }))
    }

    fn closed(&mut self, session: ClosedSession<'_>) {
        debug!(
            "session {} ({}) left: {}",
            session.id, session.name, session.reason
        );
        self.shared.notify(LobbyEvent::Disconnected {
            session: session.id,
            nick: session.name.to_string(),
            room: session.room.map(|room| room.to_string()),
            reason: session.reason,
            wire: session.wire,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_nicks_welcome_gives_are_guest_numbers() {
        assert_eq!(guest_number("guest7"), Some(SessionId(7)));
        assert_eq!(guest_number("GuEsT12"), Some(SessionId(12)));
        for ordinary in [
            "guest",
            "guest0",
            "guest007",
            "guestbook",
            "guest7a",
            "gues",
        ] {
            assert_eq!(guest_number(ordinary), None, "{ordinary}");
        }
    }
}
