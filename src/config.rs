//! Limits and timings, with the documented defaults of the lobby binary.

use std::num::NonZeroU32;
use std::time::Duration;

use crate::event::Wire;
use crate::framing::Framing;

/// Sessions beyond this many are refused with `ERR server-full`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// The longest accepted line, in bytes, terminator excluded.
pub const DEFAULT_MAX_LINE: usize = 4096;
/// A session with no complete inbound line for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A silent session is sent `PING` this often.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);
/// Members per room.
pub const DEFAULT_ROOM_CAPACITY: usize = 64;
/// Frames queued to one peer before it counts as a slow consumer.
pub const DEFAULT_OUTBOUND_QUEUE: usize = 1024;
/// How long a closing session may spend writing what it still owes the peer.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// Threads that sessions, rooms and names are spread over, unless
/// configured: one per core the process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Everything one session needs to know about its limits.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// How inbound bytes are cut into frames.
    pub framing: Framing,
    /// Frames queued to the peer (written or not yet) before the session is
    /// stopped as a slow consumer.
    pub outbound_queue: usize,
    /// Close after this long without a complete inbound frame; `None` never.
    pub idle_timeout: Option<Duration>,
    /// Report a heartbeat after this long without inbound frames, and again
    /// every period while the peer stays silent; `None` never.
    pub heartbeat: Option<Duration>,
    /// Inbound frames per second (token bucket, burst of the same size);
    /// `None` for no limit.
    pub max_frames_per_sec: Option<NonZeroU32>,
    /// How long a closing session may take to write what it still owes.
    pub flush_timeout: Duration,
    /// The wire format events are rendered in for these sessions.
    pub wire: Wire,
}

impl SessionConfig {
    /// A configuration for `framing` with no timers, no rate limit, the
    /// default outbound queue and the default flush timeout.
    pub fn new(framing: Framing) -> Self {
        SessionConfig {
            framing,
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            idle_timeout: None,
            heartbeat: None,
            max_frames_per_sec: None,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            wire: Wire::Text,
        }
    }
}

/// The lobby server's configuration: the flags of SPEC §2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LobbyConfig {
    /// Sessions beyond this get `ERR server-full` and are closed.
    pub max_connections: usize,
    /// The longest accepted line, in bytes, terminator excluded.
    pub max_line: usize,
    /// Close a session with no inbound line for this long.
    pub idle_timeout: Duration,
    /// Send `PING` after this long without inbound traffic.
    pub heartbeat: Duration,
    /// Members per room.
    pub room_capacity: usize,
    /// Frames queued to one peer before it counts as a slow consumer.
    pub outbound_queue: usize,
    /// Sessions from one IP address; `None` for no per-address limit.
    pub max_per_ip: Option<usize>,
    /// Inbound lines per session per second; `None` for no limit.
    pub max_msgs_per_sec: Option<NonZeroU32>,
    /// Threads that sessions, room sequencers and name shards are spread
    /// over (the first is the thread that starts the server).
    pub threads: usize,
}

impl Default for LobbyConfig {
    fn default() -> Self {
        LobbyConfig {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_line: DEFAULT_MAX_LINE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            heartbeat: DEFAULT_HEARTBEAT,
            room_capacity: DEFAULT_ROOM_CAPACITY,
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            max_per_ip: None,
            max_msgs_per_sec: None,
            threads: default_threads(),
        }
    }
}

impl LobbyConfig {
    /// The per-session part of this configuration, for line framing in
    /// `wire`.
    pub fn session_config(&self, wire: Wire) -> SessionConfig {
        SessionConfig {
            framing: Framing::Lines {
                max_line: self.max_line,
            },
            outbound_queue: self.outbound_queue,
            idle_timeout: Some(self.idle_timeout),
            heartbeat: Some(self.heartbeat),
            max_frames_per_sec: self.max_msgs_per_sec,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            wire,
        }
    }
}
