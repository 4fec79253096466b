//! The Registry actor: the lobby's single source of truth.
//!
//! It knows every live session, its nick and its room; it owns the rooms and
//! their join order; it answers every line a session receives; and it cleans
//! up after every session that ends, telling the room why. Because one actor
//! sequences all of this, every member of a room sees that room's events in
//! one order, and each session sees its replies in the order it asked.
//!
//! Sessions never wait for the registry: they report with `do_send`, and the
//! registry answers through each session's [`SessionHandle`].

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;

use actix::prelude::*;
use bytes::Bytes;
use futures::channel::oneshot;
use log::{debug, info};

use super::session::{Activity, Closed, Opened, SessionEvent, SessionHandle, SessionId};
use crate::protocol::{
    Command, ErrorCode, Rejection, Reply, decode_text, is_valid_name, parse_json_line, parse_line,
};
use crate::reason::DisconnectReason;

/// Begin a graceful shutdown: every session is sent `SHUTDOWN` after what it
/// is already owed, then closed. The reply arrives once every session has
/// ended; callers bound the wait with their own deadline.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Remove one session, as an embedding program's moderator would: it is sent
/// `farewell` (if any) after what it is already owed, then closed, and its
/// room sees `QUIT <room> <nick> kicked`. Answers whether the session existed.
#[derive(Message, Debug)]
#[rtype(result = "bool")]
pub struct Kick {
    /// The session to remove.
    pub session: SessionId,
    /// A last line for the kicked peer, `\n` included (e.g. an `ERR` line).
    pub farewell: Option<Bytes>,
}

/// Send one already rendered frame (`\n` included) to every member of a
/// room, or to every session when `room` is `None` — e.g. a game tick's state.
/// The bytes are shared, not copied, per member. Answers how many sessions
/// it was queued for.
#[derive(Message, Debug)]
#[rtype(result = "usize")]
pub struct Broadcast {
    /// The room, or `None` for every session.
    pub room: Option<String>,
    /// The frame, exactly as it goes on the wire.
    pub frame: Bytes,
}

/// Rooms and their member counts, sorted by room name.
#[derive(Message, Debug)]
#[rtype(result = "Vec<(String, usize)>")]
pub struct ListRooms;

/// Every live session, in id order.
#[derive(Message, Debug)]
#[rtype(result = "Vec<SessionInfo>")]
pub struct ListSessions;

/// Deliver every [`LobbyEvent`] to `events` from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    /// The embedding program's actor.
    pub events: Recipient<LobbyEvent>,
}

/// What happened in the lobby, for an embedding program that subscribed.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum LobbyEvent {
    /// A session arrived (and was sent its `WELCOME`).
    Connected {
        /// The new session.
        session: SessionId,
        /// Its peer's address.
        peer: SocketAddr,
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
    /// A session ended; the registry has already forgotten it.
    Disconnected {
        /// The session.
        session: SessionId,
        /// Why it ended.
        reason: DisconnectReason,
    },
}

/// Send one already rendered frame (`\n` included) to one session. Answers
/// whether the session exists.
#[derive(Message, Debug)]
#[rtype(result = "bool")]
pub struct SendTo {
    /// The session.
    pub session: SessionId,
    /// The frame, exactly as it goes on the wire.
    pub frame: Bytes,
}

/// Move a session into a room on its behalf, exactly as if it had sent
/// `/join ROOM` (its old room and the new one see `LEAVE` and `JOIN`).
///
/// # Errors
/// The same as `/join`: `bad-name`, `room-full`; `no-such-nick` when the
/// session does not exist.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), Rejection>")]
pub struct JoinRoom {
    /// The session.
    pub session: SessionId,
    /// The room.
    pub room: String,
}

/// Take a session out of its room on its behalf, as if it had sent
/// `/leave`. Answers whether it was in a room.
#[derive(Message, Debug)]
#[rtype(result = "bool")]
pub struct LeaveRoom {
    /// The session.
    pub session: SessionId,
}

/// What [`ListSessions`] reports about one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's id.
    pub id: SessionId,
    /// Its nick, as its owner typed it.
    pub nick: String,
    /// Its room, if it is in one.
    pub room: Option<String>,
}

/// The lobby registry. See the module docs.
pub struct Registry {
    /// Most members a room admits.
    room_capacity: usize,
    members: HashMap<SessionId, Member>,
    /// Lower-cased chosen nick → owner, so uniqueness is case-insensitive.
    /// Guest nicks are not listed: `guest<id>` can only be session `id`'s,
    /// so it is found by its number, and an idle guest costs no entry here.
    nicks: HashMap<String, SessionId>,
    /// Room name → members in join order. A `BTreeMap` keeps `ROOMS` sorted
    /// by byte order for free; an emptied room is removed at once.
    rooms: BTreeMap<Rc<str>, Vec<SessionId>>,
    /// `Some` once shutting down: who waits for the last session to end.
    draining: Option<Vec<oneshot::Sender<()>>>,
    /// Actors of the embedding program that asked for [`LobbyEvent`]s.
    subscribers: Vec<Recipient<LobbyEvent>>,
}

/// What the registry keeps per session. Names are shared `Rc<str>`s, so
/// handling a command clones no text.
struct Member {
    handle: SessionHandle,
    /// The protocol the member speaks: every line to it is rendered in it.
    wire: Wire,
    /// The nick as its owner typed it.
    nick: Rc<str>,
    room: Option<Rc<str>>,
}

/// Which lobby protocol a session speaks, from the service its listener
/// serves ([`TEXT_SERVICE`] or [`JSON_SERVICE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Text,
    Json,
}

/// The service name of the text lobby protocol (SPEC §3).
pub const TEXT_SERVICE: &str = "text";
/// The service name of the JSON lobby protocol (SPEC §5).
pub const JSON_SERVICE: &str = "json";

impl Wire {
    fn of_service(service: &str) -> Wire {
        if service == JSON_SERVICE {
            Wire::Json
        } else {
            Wire::Text
        }
    }

    fn render(self, reply: &Reply<'_>) -> Bytes {
        match self {
            Wire::Text => reply.to_line(),
            Wire::Json => reply.to_json_line(),
        }
    }

    fn parse(self, frame: &[u8]) -> Result<Option<Command>, Rejection> {
        match self {
            Wire::Text => decode_text(frame).and_then(parse_line),
            Wire::Json => parse_json_line(frame),
        }
    }
}

/// One event rendered at most once per wire format, however many members
/// receive it: every member speaking a format shares the same bytes.
struct Rendered<'r> {
    reply: &'r Reply<'r>,
    text: Option<Bytes>,
    json: Option<Bytes>,
}

impl<'r> Rendered<'r> {
    fn new(reply: &'r Reply<'r>) -> Self {
        Rendered {
            reply,
            text: None,
            json: None,
        }
    }

    fn bytes(&mut self, wire: Wire) -> Bytes {
        let slot = match wire {
            Wire::Text => &mut self.text,
            Wire::Json => &mut self.json,
        };
        slot.get_or_insert_with(|| wire.render(self.reply)).clone()
    }
}

impl Registry {
    /// An empty registry whose rooms hold at most `room_capacity` members.
    pub fn new(room_capacity: usize) -> Self {
        Registry {
            room_capacity,
            members: HashMap::new(),
            nicks: HashMap::new(),
            rooms: BTreeMap::new(),
            draining: None,
            subscribers: Vec::new(),
        }
    }

    fn send_to(&self, id: SessionId, line: Bytes) {
        if let Some(member) = self.members.get(&id) {
            member.handle.send(line);
        }
    }

    fn reply(&self, id: SessionId, reply: Reply<'_>) {
        if let Some(member) = self.members.get(&id) {
            member.handle.send(member.wire.render(&reply));
        }
    }

    fn reject(&self, id: SessionId, rejection: &Rejection) {
        debug!("session {id}: ERR {rejection}");
        self.reply(id, Reply::rejection(rejection));
    }

    /// Sends `reply` to every member of `room`, rendered once per protocol
    /// and shared.
    fn broadcast(&self, room: &str, reply: Reply<'_>) {
        let mut rendered = Rendered::new(&reply);
        for id in self.rooms.get(room).into_iter().flatten() {
            if let Some(member) = self.members.get(id) {
                member.handle.send(rendered.bytes(member.wire));
            }
        }
    }

    /// Sends `WHO <room> <nicks…>` to `id`.
    fn send_who(&self, id: SessionId, room: &str) {
        let nicks: Vec<&str> = self
            .rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter_map(|member| self.members.get(member).map(|member| &*member.nick))
            .collect();
        self.reply(
            id,
            Reply::Who {
                room,
                nicks: &nicks,
            },
        );
    }

    /// Removes `id` from its room (if any) and returns that room's name. The
    /// room disappears when its last member leaves.
    fn remove_from_room(&mut self, id: SessionId) -> Option<Rc<str>> {
        let room = self.members.get_mut(&id)?.room.take()?;
        if let Some(members) = self.rooms.get_mut(&room) {
            members.retain(|&member| member != id);
            if members.is_empty() {
                self.rooms.remove(&room);
            }
        }
        Some(room)
    }

    fn handle_line(&mut self, id: SessionId, frame: &[u8]) {
        let Some(member) = self.members.get(&id) else {
            return;
        };
        let command = member.wire.parse(frame);
        let result = match command {
            Ok(Some(command)) => {
                debug!("session {id}: {command:?}");
                let event = (!self.subscribers.is_empty()).then(|| LobbyEvent::Command {
                    session: id,
                    nick: member.nick.to_string(),
                    room: member.room.as_deref().map(str::to_owned),
                    command: command.clone(),
                });
                let result = self.execute(id, command);
                if let (Ok(()), Some(event)) = (&result, event) {
                    self.notify(&event);
                }
                result
            }
            Ok(None) => Ok(()),
            Err(rejection) => Err(rejection),
        };
        if let Err(rejection) = result {
            self.reject(id, &rejection);
        }
    }

    fn execute(&mut self, id: SessionId, command: Command) -> Result<(), Rejection> {
        let Some(member) = self.members.get(&id) else {
            return Ok(());
        };
        let nick = member.nick.clone();
        let current_room = member.room.clone();
        match command {
            Command::Nick(new) => self.rename(id, &nick, current_room.as_deref(), new)?,
            Command::Join(room) => self.join(id, &nick, current_room.as_deref(), room)?,
            Command::Leave => {
                let room = current_room.ok_or_else(not_in_room)?;
                self.broadcast(
                    &room,
                    Reply::Leave {
                        room: &room,
                        nick: &nick,
                    },
                );
                self.remove_from_room(id);
            }
            Command::Say(text) => {
                let room = current_room.ok_or_else(not_in_room)?;
                let line = Reply::Msg {
                    room: &room,
                    nick: &nick,
                    text: &text,
                };
                self.broadcast(&room, line);
            }
            Command::Msg { to, text } => {
                let target = self
                    .find_by_nick(&to)
                    .and_then(|target| self.members.get_key_value(&target))
                    .ok_or_else(|| {
                        Rejection::new(ErrorCode::NoSuchNick, format!("no one is called {to}"))
                    })?;
                let (&target_id, target) = target;
                let line = Reply::PrivMsg {
                    from: &nick,
                    to: &target.nick,
                    text: &text,
                };
                if target_id != id {
                    self.reply(target_id, line);
                }
                self.reply(id, line);
            }
            Command::Rooms => {
                let rooms: Vec<(&str, usize)> = self
                    .rooms
                    .iter()
                    .map(|(room, members)| (&**room, members.len()))
                    .collect();
                self.reply(id, Reply::Rooms { rooms: &rooms });
            }
            Command::Who(room) => {
                let room = match &room {
                    Some(room) => room.as_str(),
                    None => current_room.as_deref().ok_or_else(not_in_room)?,
                };
                self.send_who(id, room);
            }
            Command::Ping(token) => self.reply(
                id,
                Reply::Pong {
                    token: token.as_deref(),
                },
            ),
            Command::Pong(_) => {}
            Command::Quit(reason) => {
                info!(
                    "session {id} ({nick}) quits: {}",
                    reason.as_deref().unwrap_or("-")
                );
                self.close(id, DisconnectReason::Quit, Some(Reply::Bye));
            }
        }
        Ok(())
    }

    fn rename(
        &mut self,
        id: SessionId,
        old: &str,
        room: Option<&str>,
        new: String,
    ) -> Result<(), Rejection> {
        let key = new.to_ascii_lowercase();
        if is_reserved_guest_nick(&key, id) {
            return Err(Rejection::new(
                ErrorCode::BadName,
                "guest<number> nicks are reserved for new sessions",
            ));
        }
        if self.find_by_nick(&new).is_some_and(|owner| owner != id) {
            return Err(Rejection::new(
                ErrorCode::NickTaken,
                format!("{new} is already taken"),
            ));
        }
        self.nicks.remove(&old.to_ascii_lowercase());
        if key != guest_nick(id) {
            self.nicks.insert(key, id);
        }
        let line = Reply::Nick { old, new: &new };
        match room {
            Some(room) => self.broadcast(room, line),
            None => self.reply(id, line),
        }
        if let Some(member) = self.members.get_mut(&id) {
            member.nick = new.into();
        }
        Ok(())
    }

    fn join(
        &mut self,
        id: SessionId,
        nick: &str,
        current: Option<&str>,
        room: String,
    ) -> Result<(), Rejection> {
        if current == Some(room.as_str()) {
            self.send_who(id, &room);
            return Ok(());
        }
        if self.rooms.get(room.as_str()).map_or(0, Vec::len) >= self.room_capacity {
            return Err(Rejection::new(
                ErrorCode::RoomFull,
                format!("{room} already has {} members", self.room_capacity),
            ));
        }
        if let Some(old) = current {
            self.broadcast(old, Reply::Leave { room: old, nick });
            self.remove_from_room(id);
        }
        let room: Rc<str> = room.into();
        self.rooms.entry(room.clone()).or_default().push(id);
        self.broadcast(&room, Reply::Join { room: &room, nick });
        self.send_who(id, &room);
        if let Some(member) = self.members.get_mut(&id) {
            member.room = Some(room);
        }
        Ok(())
    }

    fn notify(&self, event: &LobbyEvent) {
        for subscriber in &self.subscribers {
            subscriber.do_send(event.clone());
        }
    }

    /// The session whose nick is `nick`, compared case-insensitively.
    fn find_by_nick(&self, nick: &str) -> Option<SessionId> {
        let key = nick.to_ascii_lowercase();
        if let Some(&owner) = self.nicks.get(&key) {
            return Some(owner);
        }
        let id = guest_number(&key)?;
        let member = self.members.get(&id)?;
        member.nick.eq_ignore_ascii_case(nick).then_some(id)
    }

    /// Closes `id` for `reason`, with `farewell` rendered in its protocol.
    fn close(&self, id: SessionId, reason: DisconnectReason, farewell: Option<Reply<'_>>) {
        if let Some(member) = self.members.get(&id) {
            let farewell = farewell.map(|reply| member.wire.render(&reply));
            member.handle.close(reason, farewell);
        }
    }

    fn finish_draining_if_empty(&mut self) {
        if self.members.is_empty() {
            for waiter in self.draining.take().into_iter().flatten() {
                let _ = waiter.send(());
            }
        }
    }
}

fn not_in_room() -> Rejection {
    Rejection::new(ErrorCode::NotInRoom, "join a room first")
}

/// `guest<digits>` is the nick a session is given on arrival, so it belongs to
/// the session with that id only: nobody else may take it and make a later
/// `WELCOME` collide.
fn is_reserved_guest_nick(lowercase_nick: &str, id: SessionId) -> bool {
    guest_number(lowercase_nick).is_some() && lowercase_nick != guest_nick(id)
}

/// The number in a lower-cased `guest<digits>` nick.
fn guest_number(lowercase_nick: &str) -> Option<SessionId> {
    let digits = lowercase_nick.strip_prefix("guest")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(SessionId)
}

fn guest_nick(id: SessionId) -> String {
    format!("guest{id}")
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl Handler<Opened> for Registry {
    type Result = ();

    fn handle(
        &mut self,
        Opened {
            session,
            peer,
            service,
        }: Opened,
        _: &mut Self::Context,
    ) {
        let id = session.id();
        let nick: Rc<str> = guest_nick(id).into();
        info!("session {id} connected from {peer} as {nick} ({service})");
        let member = Member {
            handle: session,
            wire: Wire::of_service(&service),
            nick: nick.clone(),
            room: None,
        };
        self.members.insert(id, member);
        self.reply(
            id,
            Reply::Welcome {
                id: id.0,
                nick: &nick,
            },
        );
        if self.draining.is_some() {
            self.close(id, DisconnectReason::Shutdown, Some(Reply::Shutdown));
        }
        self.notify(&LobbyEvent::Connected { session: id, peer });
    }
}

impl Handler<Activity> for Registry {
    type Result = ();

    fn handle(&mut self, Activity { session, event }: Activity, _: &mut Self::Context) {
        match event {
            SessionEvent::Frame(frame) => self.handle_line(session, &frame),
            SessionEvent::Oversized => self.reject(
                session,
                &Rejection::new(ErrorCode::LineTooLong, "line exceeds the maximum length"),
            ),
            SessionEvent::RateLimited => self.reject(
                session,
                &Rejection::new(ErrorCode::RateLimited, "too many lines per second"),
            ),
            SessionEvent::HeartbeatDue(token) => self.reply(session, Reply::Ping { token }),
            SessionEvent::IdleTimeout => {
                let farewell = Reply::Error {
                    code: ErrorCode::IdleTimeout,
                    message: "no input for too long",
                };
                self.close(session, DisconnectReason::IdleTimeout, Some(farewell));
            }
            SessionEvent::InputClosed => self.close(session, DisconnectReason::Closed, None),
        }
    }
}

impl Handler<Closed> for Registry {
    type Result = ();

    fn handle(&mut self, Closed { session, reason }: Closed, _: &mut Self::Context) {
        let room = self.remove_from_room(session);
        let Some(member) = self.members.remove(&session) else {
            return;
        };
        info!("session {session} ({}) left: {reason}", member.nick);
        let key = member.nick.to_ascii_lowercase();
        if self.nicks.get(&key) == Some(&session) {
            self.nicks.remove(&key);
        }
        if let Some(room) = room
            && reason != DisconnectReason::Shutdown
            && self.draining.is_none()
        {
            let quit = Reply::Quit {
                room: &room,
                nick: &member.nick,
                reason: reason.word(),
            };
            self.broadcast(&room, quit);
        }
        self.notify(&LobbyEvent::Disconnected { session, reason });
        if self.draining.is_some() {
            self.finish_draining_if_empty();
        }
    }
}

impl Handler<Shutdown> for Registry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        info!("shutting down {} sessions", self.members.len());
        let shutdown = Reply::Shutdown;
        let mut rendered = Rendered::new(&shutdown);
        for member in self.members.values() {
            let farewell = rendered.bytes(member.wire);
            member
                .handle
                .close(DisconnectReason::Shutdown, Some(farewell));
        }
        let (done, drained) = oneshot::channel();
        self.draining.get_or_insert_with(Vec::new).push(done);
        self.finish_draining_if_empty();
        Box::pin(async move {
            let _ = drained.await;
        })
    }
}

impl Handler<Kick> for Registry {
    type Result = bool;

    fn handle(&mut self, Kick { session, farewell }: Kick, _: &mut Self::Context) -> bool {
        let Some(member) = self.members.get(&session) else {
            return false;
        };
        info!("kicking session {session}");
        member.handle.close(DisconnectReason::Kicked, farewell);
        true
    }
}

impl Handler<Broadcast> for Registry {
    type Result = usize;

    fn handle(&mut self, Broadcast { room, frame }: Broadcast, _: &mut Self::Context) -> usize {
        let recipients: Vec<SessionId> = match &room {
            Some(room) => self.rooms.get(room.as_str()).cloned().unwrap_or_default(),
            None => self.members.keys().copied().collect(),
        };
        for &id in &recipients {
            self.send_to(id, frame.clone());
        }
        recipients.len()
    }
}

impl Handler<Subscribe> for Registry {
    type Result = ();

    fn handle(&mut self, Subscribe { events }: Subscribe, _: &mut Self::Context) {
        self.subscribers.push(events);
    }
}

impl Handler<SendTo> for Registry {
    type Result = bool;

    fn handle(&mut self, SendTo { session, frame }: SendTo, _: &mut Self::Context) -> bool {
        let found = self.members.contains_key(&session);
        self.send_to(session, frame);
        found
    }
}

impl Handler<JoinRoom> for Registry {
    type Result = Result<(), Rejection>;

    fn handle(
        &mut self,
        JoinRoom { session, room }: JoinRoom,
        _: &mut Self::Context,
    ) -> Self::Result {
        let Some(member) = self.members.get(&session) else {
            return Err(Rejection::new(ErrorCode::NoSuchNick, "no such session"));
        };
        if !is_valid_name(&room) {
            return Err(Rejection::new(
                ErrorCode::BadName,
                "names are 1-32 characters of A-Z a-z 0-9 _ -",
            ));
        }
        let (nick, current) = (member.nick.clone(), member.room.clone());
        self.join(session, &nick, current.as_deref(), room)
    }
}

impl Handler<LeaveRoom> for Registry {
    type Result = bool;

    fn handle(&mut self, LeaveRoom { session }: LeaveRoom, _: &mut Self::Context) -> bool {
        let in_room = self
            .members
            .get(&session)
            .is_some_and(|member| member.room.is_some());
        if in_room {
            // Cannot be refused: the session is in a room.
            let _ = self.execute(session, Command::Leave);
        }
        in_room
    }
}

impl Handler<ListRooms> for Registry {
    type Result = MessageResult<ListRooms>;

    fn handle(&mut self, _: ListRooms, _: &mut Self::Context) -> Self::Result {
        let rooms = self.rooms.iter();
        MessageResult(
            rooms
                .map(|(room, members)| (room.to_string(), members.len()))
                .collect(),
        )
    }
}

impl Handler<ListSessions> for Registry {
    type Result = MessageResult<ListSessions>;

    fn handle(&mut self, _: ListSessions, _: &mut Self::Context) -> Self::Result {
        let mut sessions: Vec<SessionInfo> = self
            .members
            .iter()
            .map(|(&id, member)| SessionInfo {
                id,
                nick: member.nick.to_string(),
                room: member.room.as_deref().map(str::to_owned),
            })
            .collect();
        sessions.sort_by_key(|info| info.id);
        MessageResult(sessions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_nicks_belong_to_their_own_session() {
        assert!(is_reserved_guest_nick("guest7", SessionId(3)));
        assert!(!is_reserved_guest_nick("guest3", SessionId(3)));
        assert!(!is_reserved_guest_nick("guest", SessionId(3)));
        assert!(!is_reserved_guest_nick("guestbook", SessionId(3)));
    }
}
