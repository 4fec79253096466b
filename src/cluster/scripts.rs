//! The Lua scripts that make every cluster operation atomic in Redis.
//!
//! Each room operation numbers its event and appends it to the room's
//! stream in one script, so a room's order is the order of its stream and
//! nothing is numbered without being published (or published unnumbered).
//!
//! Keys (all under `sb:`):
//! - `seq:ROOM` the room's event counter (`seq:@NODE` and `ev:@NODE`: a
//!   node's direct stream, for `/msg` from other nodes); `ev:ROOM` its stream, entry ids
//!   `0-SEQ`, capped near [`STREAM_CAP`] entries and expiring
//!   [`EMPTY_ROOM_TTL_SECS`] after the room empties;
//! - `m:ROOM` members (sorted set, scored in join order), `n:ROOM` their
//!   names, `rsv:ROOM` seats held but not announced; a member is
//!   `NODE/SESSION`;
//! - `rooms` announced member count per room (for `ROOMS`);
//! - `names` lower-cased name → `NODE/SESSION/Spelling`;
//! - `nodes` node → last heartbeat (ms, Redis clock); `nr:NODE` the
//!   `SESSION/ROOM` seats of a node, `nn:NODE` its names: what a reaper
//!   removes; `epoch` changes when Redis lost its data.
//!
//! Every key is built inside the scripts, so they need one Redis (or a
//! primary with replicas), not a Redis Cluster.

use std::sync::LazyLock;

use redis::Script;

/// Stream entries kept per room, roughly (`XADD MAXLEN ~`): how far a node
/// may fall behind a room before it misses events.
pub(crate) const STREAM_CAP: usize = 10_000;

/// How long an empty room's stream is kept, in seconds.
pub(crate) const EMPTY_ROOM_TTL_SECS: u64 = 300;

const PRELUDE: &str = r#"
local P = 'sb:'
local function emit(room, kind, add, rem, text, json)
  local seq = redis.call('INCR', P..'seq:'..room)
  local args = {'XADD', P..'ev:'..room, 'MAXLEN', '~', ARGV_CAP, '0-'..seq, 'k', kind}
  if add ~= '' then args[#args+1] = 'a'; args[#args+1] = add end
  if rem ~= '' then args[#args+1] = 'r'; args[#args+1] = rem end
  if text ~= '' then
    args[#args+1] = 't'; args[#args+1] = text
    args[#args+1] = 'j'; args[#args+1] = json
  end
  redis.call(unpack(args))
  return seq
end
local function announced(room)
  return redis.call('ZCARD', P..'m:'..room) - redis.call('SCARD', P..'rsv:'..room)
end
local function count(room)
  local n = announced(room)
  if n > 0 then redis.call('HSET', P..'rooms', room, n) else redis.call('HDEL', P..'rooms', room) end
  return n
end
local function expire_if_empty(room)
  if redis.call('ZCARD', P..'m:'..room) == 0 then
    redis.call('EXPIRE', P..'ev:'..room, ARGV_TTL)
  end
end
local function names(room)
  local out = {}
  for _, m in ipairs(redis.call('ZRANGE', P..'m:'..room, 0, -1)) do
    if redis.call('SISMEMBER', P..'rsv:'..room, m) == 0 then
      out[#out+1] = redis.call('HGET', P..'n:'..room, m)
    end
  end
  return out
end
local function alive(node)
  return redis.call('ZSCORE', P..'nodes', node)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Takes member m (of node, session sid) out of room; nil when it was not
-- seated, else whether the seat was only held, and the member's name.
local function unseat(room, node, sid, m)
  if not redis.call('ZSCORE', P..'m:'..room, m) then return nil end
  local held = redis.call('SREM', P..'rsv:'..room, m) == 1
  local name = redis.call('HGET', P..'n:'..room, m)
  redis.call('ZREM', P..'m:'..room, m)
  redis.call('HDEL', P..'n:'..room, m)
  redis.call('SREM', P..'nr:'..node, sid..'/'..room)
  count(room)
  return held, name
end
"#;

/// Builds a script from the prelude and `body`.
fn script(body: &str) -> Script {
    let prelude = PRELUDE
        .replace("ARGV_CAP", &format!("'{STREAM_CAP}'"))
        .replace("ARGV_TTL", &EMPTY_ROOM_TTL_SECS.to_string());
    Script::new(&format!("{prelude}\n{body}"))
}

/// ARGV: room, node, session, name, capacity, reserve (`1`/`0`), text,
/// json. Answers `{'dead'}`, `{'full'}`, `{'reserved'}` or
/// `{'joined', seq, names…}` (seq 0: already seated, nothing sequenced).
pub(crate) static JOIN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local room, node, sid, name = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local cap, reserve = tonumber(ARGV[5]), ARGV[6] == '1'
if not alive(node) then return {'dead'} end
local m = node..'/'..sid
local mk = P..'m:'..room
if redis.call('ZSCORE', mk, m) then
  if reserve then return {'reserved'} end
  return {'joined', 0, names(room)}
end
if redis.call('ZCARD', mk) >= cap then return {'full'} end
redis.call('ZADD', mk, redis.call('INCR', P..'ord'), m)
redis.call('HSET', P..'n:'..room, m, name)
redis.call('SADD', P..'nr:'..node, sid..'/'..room)
if reserve then
  redis.call('SADD', P..'rsv:'..room, m)
  return {'reserved'}
end
redis.call('PERSIST', P..'ev:'..room)
count(room)
local seq = emit(room, 'j', m, '', ARGV[7], ARGV[8])
return {'joined', seq, names(room)}
"#,
    )
});

/// ARGV: room, node, session, text, json. Answers `{'dead'}`, `{'full'}`
/// (the held seat is gone) or `{'joined', seq, names…}`.
pub(crate) static CONFIRM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local room, node, sid = ARGV[1], ARGV[2], ARGV[3]
if not alive(node) then return {'dead'} end
local m = node..'/'..sid
local mk = P..'m:'..room
if not redis.call('ZSCORE', mk, m) then return {'full'} end
if redis.call('SREM', P..'rsv:'..room, m) == 0 then return {'joined', 0, names(room)} end
redis.call('ZADD', mk, redis.call('INCR', P..'ord'), m)
redis.call('PERSIST', P..'ev:'..room)
count(room)
local seq = emit(room, 'j', m, '', ARGV[4], ARGV[5])
return {'joined', seq, names(room)}
"#,
    )
});

/// ARGV: room, node, session, text, json (empty: nobody is told, the
/// removal is still sequenced). Answers `{'none'}` or `{'left', seq}`.
pub(crate) static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local room, node, sid = ARGV[1], ARGV[2], ARGV[3]
local m = node..'/'..sid
local held = unseat(room, node, sid, m)
if held == nil then return {'none'} end
if held then
  expire_if_empty(room)
  return {'none'}
end
local seq = emit(room, 'l', '', m, ARGV[4], ARGV[5])
expire_if_empty(room)
return {'left', seq}
"#,
    )
});

/// ARGV: room, member (`NODE/SESSION`, or empty for the embedding
/// program), text, json. Answers `{'no'}` or `{'ok', seq, members}`.
pub(crate) static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local room, m = ARGV[1], ARGV[2]
if m ~= '' then
  if not redis.call('ZSCORE', P..'m:'..room, m) then return {'no'} end
  if redis.call('SISMEMBER', P..'rsv:'..room, m) == 1 then return {'no'} end
end
local n = announced(room)
if n == 0 then return {'no'} end
local seq = emit(room, 'p', '', '', ARGV[3], ARGV[4])
return {'ok', seq, n}
"#,
    )
});

/// ARGV: room, node, session, new name, text, json. Answers `{'none'}` or
/// `{'ok', seq}`.
pub(crate) static RENAME: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local room, node, sid = ARGV[1], ARGV[2], ARGV[3]
local m = node..'/'..sid
if not redis.call('ZSCORE', P..'m:'..room, m) then return {'none'} end
redis.call('HSET', P..'n:'..room, m, ARGV[4])
if ARGV[5] == '' then return {'none'} end
return {'ok', emit(room, 'n', '', '', ARGV[5], ARGV[6])}
"#,
    )
});

/// ARGV: room. Answers the announced members' names in join order.
pub(crate) static MEMBERS: LazyLock<Script> = LazyLock::new(|| script("return names(ARGV[1])"));

/// No ARGV. Answers `room, count, room, count, …`.
pub(crate) static ROOMS: LazyLock<Script> =
    LazyLock::new(|| script("return redis.call('HGETALL', P..'rooms')"));

/// ARGV: lower-cased name, node, session, spelling. Answers `ok`, `taken`
/// or `dead`.
pub(crate) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local key, node, sid = ARGV[1], ARGV[2], ARGV[3]
if not alive(node) then return 'dead' end
local owner = node..'/'..sid..'/'
local current = redis.call('HGET', P..'names', key)
if current and string.sub(current, 1, #owner) ~= owner then return 'taken' end
redis.call('HSET', P..'names', key, owner..ARGV[4])
redis.call('SADD', P..'nn:'..node, key)
return 'ok'
"#,
    )
});

/// ARGV: lower-cased name, node, session. Gives the name up if that
/// session holds it.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local key, node, sid = ARGV[1], ARGV[2], ARGV[3]
local owner = node..'/'..sid..'/'
local current = redis.call('HGET', P..'names', key)
if current and string.sub(current, 1, #owner) == owner then
  redis.call('HDEL', P..'names', key)
  redis.call('SREM', P..'nn:'..node, key)
end
return 'ok'
"#,
    )
});

/// ARGV: lower-cased name. Answers `NODE/SESSION/Spelling` or nil.
pub(crate) static FIND: LazyLock<Script> =
    LazyLock::new(|| script("return redis.call('HGET', P..'names', ARGV[1])"));

/// ARGV: node, epoch to set if Redis has none. Registers the node alive and
/// answers `{epoch, node number}`.
pub(crate) static REGISTER: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local epoch = redis.call('GET', P..'epoch')
if not epoch then
  redis.call('SET', P..'epoch', ARGV[2])
  epoch = ARGV[2]
end
redis.call('ZADD', P..'nodes', now_ms(), ARGV[1])
return {epoch, redis.call('INCR', P..'node-number')}
"#,
    )
});

/// ARGV: node, its epoch, timeout (ms). Answers `{'lost'}` (Redis lost its
/// data), `{'dead'}` (the node was declared dead) or `{'ok', dead nodes…}`.
pub(crate) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('GET', P..'epoch') ~= ARGV[2] then return {'lost'} end
if not alive(ARGV[1]) then return {'dead'} end
local now = now_ms()
redis.call('ZADD', P..'nodes', now, ARGV[1])
return {'ok', redis.call('ZRANGEBYSCORE', P..'nodes', '-inf', now - tonumber(ARGV[3]))}
"#,
    )
});

/// ARGV: dead node, reason word. Exactly one caller wins the `ZREM` and
/// removes the node's members (one `QUIT` each, sequenced in the member's
/// room) and names. Answers -1 when another node reaped it first, else how
/// many members were told.
pub(crate) static REAP: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local dead, word = ARGV[1], ARGV[2]
if redis.call('ZREM', P..'nodes', dead) == 0 then return -1 end
local told = 0
for _, seat in ipairs(redis.call('SMEMBERS', P..'nr:'..dead)) do
  local slash = string.find(seat, '/', 1, true)
  local sid, room = string.sub(seat, 1, slash - 1), string.sub(seat, slash + 1)
  local m = dead..'/'..sid
  local held, name = unseat(room, dead, sid, m)
  if held == false then
    local text = 'QUIT '..room..' '..name..' '..word..'\n'
    local json = '{"event":"quit","room":"'..room..'","nick":"'..name..'","reason":"'..word..'"}\n'
    emit(room, 'q', '', m, text, json)
    told = told + 1
  end
  if held ~= nil then expire_if_empty(room) end
end
redis.call('DEL', P..'nr:'..dead)
local owner = dead..'/'
for _, key in ipairs(redis.call('SMEMBERS', P..'nn:'..dead)) do
  local current = redis.call('HGET', P..'names', key)
  if current and string.sub(current, 1, #owner) == owner then
    redis.call('HDEL', P..'names', key)
  end
end
redis.call('DEL', P..'nn:'..dead)
return told
"#,
    )
});

/// ARGV: room, node, session, name. Seats a member again, unannounced,
/// after Redis lost its data.
pub(crate) static RESEAT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local room, node, sid = ARGV[1], ARGV[2], ARGV[3]
local m = node..'/'..sid
if redis.call('ZSCORE', P..'m:'..room, m) then return 0 end
redis.call('ZADD', P..'m:'..room, redis.call('INCR', P..'ord'), m)
redis.call('HSET', P..'n:'..room, m, ARGV[4])
redis.call('SADD', P..'nr:'..node, sid..'/'..room)
redis.call('PERSIST', P..'ev:'..room)
count(room)
return 1
"#,
    )
});

/// ARGV: node, session, text, json. Appends an event for one session of
/// `node` to that node's direct stream (`ev:@NODE`), which every node
/// follows for itself. Answers its sequence number.
pub(crate) static DIRECT: LazyLock<Script> =
    LazyLock::new(|| script("return emit('@'..ARGV[1], 'd', ARGV[2], '', ARGV[3], ARGV[4])"));

/// Every script, for loading them all after Redis restarted.
pub(crate) fn all() -> [&'static Script; 15] {
    [
        &JOIN, &CONFIRM, &LEAVE, &PUBLISH, &RENAME, &MEMBERS, &ROOMS, &CLAIM, &RELEASE, &FIND,
        &REGISTER, &HEARTBEAT, &REAP, &RESEAT, &DIRECT,
    ]
}
