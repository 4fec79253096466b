//! The Lua scripts that make every cluster operation atomic in Redis.
//!
//! Each room operation numbers its event and appends it, in one script, to
//! the stream of every node that has members in the room, so each node reads
//! one stream (its own) in which every room it is in has its events in the
//! room's one order, and nothing is numbered without being published (or
//! published unnumbered).
//!
//! Keys (all under `sb:`):
//! - `seq:ROOM` the room's event counter (kept while the name is used:
//!   a node may still hold the room's last number);
//! - `rn:ROOM` node → seats it holds in the room: the nodes an event goes to;
//! - `nev:NODE` the node's stream: room events (fields `o` room, `s` seq,
//!   `k` kind, `a` member added, `r` member removed, `t`/`j` the event as
//!   text and JSON) and direct lines for one of its sessions (`k` = `d`,
//!   `a` = the session), capped near [`STREAM_CAP`] entries;
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

/// Stream entries kept per node, roughly (`XADD MAXLEN ~`): how far a node
/// may fall behind before it misses events.
pub(crate) const STREAM_CAP: usize = 100_000;

const PRELUDE: &str = r#"
local P = 'sb:'
local function xadd(node, fields)
  local args = {'XADD', P..'nev:'..node, 'MAXLEN', '~', ARGV_CAP, '*'}
  for _, field in ipairs(fields) do args[#args+1] = field end
  redis.call(unpack(args))
end
-- Numbers an event of room and appends it to the stream of every node
-- with seats in the room, and of extra (a node that just left) too.
local function emit(room, kind, add, rem, text, json, extra)
  local seq = redis.call('INCR', P..'seq:'..room)
  local fields = {'o', room, 's', seq, 'k', kind}
  if add ~= '' then fields[#fields+1] = 'a'; fields[#fields+1] = add end
  if rem ~= '' then fields[#fields+1] = 'r'; fields[#fields+1] = rem end
  if text ~= '' then
    fields[#fields+1] = 't'; fields[#fields+1] = text
    fields[#fields+1] = 'j'; fields[#fields+1] = json
  end
  local sent = false
  for _, node in ipairs(redis.call('HKEYS', P..'rn:'..room)) do
    xadd(node, fields)
    if node == extra then sent = true end
  end
  if extra and extra ~= '' and not sent then xadd(extra, fields) end
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
-- Seats member m (of node, session sid) in room under name.
local function seat(room, node, sid, m, name)
  redis.call('ZADD', P..'m:'..room, redis.call('INCR', P..'ord'), m)
  redis.call('HSET', P..'n:'..room, m, name)
  redis.call('SADD', P..'nr:'..node, sid..'/'..room)
  redis.call('HINCRBY', P..'rn:'..room, node, 1)
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
  if redis.call('HINCRBY', P..'rn:'..room, node, -1) <= 0 then
    redis.call('HDEL', P..'rn:'..room, node)
  end
  count(room)
  return held, name
end
"#;

/// Builds a script from the prelude and `body`.
fn script(body: &str) -> Script {
    let prelude = PRELUDE.replace("ARGV_CAP", &format!("'{STREAM_CAP}'"));
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
seat(room, node, sid, m, name)
if reserve then
  redis.call('SADD', P..'rsv:'..room, m)
  return {'reserved'}
end
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
if held == nil or held then return {'none'} end
-- The leaver's node hears its LEAVE even if it has no seat left there.
return {'left', emit(room, 'l', '', m, ARGV[4], ARGV[5], node)}
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
///
/// After a silence of the whole cluster longer than the timeout (no node's
/// heartbeat reached Redis: Redis stalled), no node is named dead for one
/// more timeout, so that every node has heartbeated again first. Without
/// this, the first node through after a Redis stall reaped every other
/// (the heartbeats queued during the stall arrive one node at a time).
pub(crate) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('GET', P..'epoch') ~= ARGV[2] then return {'lost'} end
if not alive(ARGV[1]) then return {'dead'} end
local now, timeout = now_ms(), tonumber(ARGV[3])
redis.call('ZADD', P..'nodes', now, ARGV[1])
local last = tonumber(redis.call('GET', P..'last-beat') or now)
redis.call('SET', P..'last-beat', now)
if now - last >= timeout then redis.call('SET', P..'judge-after', now + timeout) end
if now < tonumber(redis.call('GET', P..'judge-after') or 0) then return {'ok'} end
return {'ok', redis.call('ZRANGEBYSCORE', P..'nodes', '-inf', now - timeout)}
"#,
    )
});

/// ARGV: dead node, reason word, and (when it is judged silent: at start-up,
/// or named by a heartbeat) the timeout (ms), checked again here, since the
/// node may have heartbeated since; and (named by a heartbeat) any fourth
/// argument, to wait out the grace after a silence of the whole cluster
/// (answer -3), which says nothing about a node starting.
/// Exactly one caller wins the `ZREM` and removes the node's members (one
/// `QUIT` each, sequenced in the member's room) and names. Answers -1 when
/// another node reaped it first, -2 when given a timeout and the node has
/// heartbeated within it (a live node of that name), -3 in the grace, else
/// how many members were told.
pub(crate) static REAP: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local dead, word = ARGV[1], ARGV[2]
if ARGV[3] then
  local now = now_ms()
  local seen = alive(dead)
  if seen and now - tonumber(seen) < tonumber(ARGV[3]) then return -2 end
  if ARGV[4] and now < tonumber(redis.call('GET', P..'judge-after') or 0) then return -3 end
end
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
redis.call('DEL', P..'nev:'..dead)
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
seat(room, node, sid, m, ARGV[4])
count(room)
return 1
"#,
    )
});

/// ARGV: node, session, text, json. Appends a line for one session of
/// `node` to that node's stream, behind every room event appended before.
pub(crate) static DIRECT: LazyLock<Script> = LazyLock::new(|| {
    script("xadd(ARGV[1], {'k', 'd', 'a', ARGV[2], 't', ARGV[3], 'j', ARGV[4]}) return 'ok'")
});

/// Every script, for loading them all after Redis restarted.
pub(crate) fn all() -> [&'static Script; 15] {
    [
        &JOIN, &CONFIRM, &LEAVE, &PUBLISH, &RENAME, &MEMBERS, &ROOMS, &CLAIM, &RELEASE, &FIND,
        &REGISTER, &HEARTBEAT, &REAP, &RESEAT, &DIRECT,
    ]
}
