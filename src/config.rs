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
/// Bytes queued to one peer before it counts as a slow consumer: 1 MiB, like
/// Centrifugo's client queue.
pub const DEFAULT_OUTBOUND_BYTES: usize = 1 << 20;
/// The largest `outbound_bytes`: 1 GiB.
pub const MAX_OUTBOUND_BYTES: usize = 1 << 30;
/// Default for [`LobbyConfig::max_udp_sessions`]: a tenth of the default
/// connection limit, so UDP can never take more than a tenth of the slots.
pub const DEFAULT_MAX_UDP_SESSIONS: usize = 1_000;
/// How long a closing session may spend writing what it still owes the peer.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// Plain HTTP connections (not WebSocket sessions) one address may hold
/// open on `--http-bind` when `--max-per-ip` is off. A browser opens at most
/// 6 connections to one host, and the lobby page needs 2 or 3 of them for a
/// few seconds (the page, then its WebSocket upgrade; an idle one closes
/// after the 5 s keep-alive), so this is some 20 players behind one address
/// (a NAT) loading the page in the same few seconds; yet far below the 900
/// idle connections one address held when plain connections counted toward
/// no limit.
pub const DEFAULT_HTTP_PER_IP: usize = 64;
/// Plain HTTP connections one address may hold open per session
/// `--max-per-ip` allows it: each of those players' browsers may open the
/// 6 connections a browser opens to one host at most, and one more while a
/// reconnecting page's old connection closes, with one to spare.
pub const HTTP_PER_SESSION: usize = 8;
/// Plain HTTP connections open at once from every address together: page
/// loads, upgrades in progress, health checks and scrapes, some 100 page
/// loads a second. WebSocket sessions are not among them (the session
/// limits count those), so it need not grow with `--max-connections`.
pub const MAX_HTTP_CONNECTIONS: usize = 1024;
/// The fewest addresses that fill [`MAX_HTTP_CONNECTIONS`] between them: no
/// address may hold more than this share of it, however high `--max-per-ip`
/// is, so one address never shuts out the others.
pub const HTTP_ADDRESSES_TO_FILL: usize = 16;

/// Threads that sessions, rooms and names are spread over, unless
/// configured: one per core the process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The longest timer a configuration takes (idle timeout, heartbeat): one
/// year, far beyond any session, and far inside what an `Instant` can add.
pub const MAX_TIMER: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// The largest `max_line`, in bytes: 1 MiB.
pub const MAX_LINE_LIMIT: usize = 1 << 20;
/// The largest count limit (connections, room capacity, outbound queue,
/// sessions per IP address, lines per second).
pub const MAX_COUNT_LIMIT: usize = 1_000_000;
/// The most threads a server spreads over.
pub const MAX_THREADS: usize = 1024;

/// A configuration value outside what makes sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `field` is `value`, outside `min..=max`.
    #[error("{field} must be between {min} and {max}, not {value}")]
    OutOfRange {
        /// The field (its flag is `--` and the name with `-` for `_`).
        field: &'static str,
        /// What it was.
        value: u128,
        /// The least it may be.
        min: u128,
        /// The most it may be.
        max: u128,
    },
}

fn check(field: &'static str, value: u128, min: u128, max: u128) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

fn check_count(field: &'static str, value: usize, min: usize) -> Result<(), ConfigError> {
    check(field, value as u128, min as u128, MAX_COUNT_LIMIT as u128)
}

fn check_secs(field: &'static str, value: Duration) -> Result<(), ConfigError> {
    check(
        field,
        value.as_secs() as u128,
        1,
        MAX_TIMER.as_secs() as u128,
    )
}

/// Everything one session needs to know about its limits.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// How inbound bytes are cut into frames.
    pub framing: Framing,
    /// Frames queued to the peer (written or not yet) before the session is
    /// stopped as a slow consumer.
    pub outbound_queue: usize,
    /// Bytes waiting for the full socket before the session is stopped as a
    /// slow consumer.
    pub outbound_bytes: usize,
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
            outbound_bytes: DEFAULT_OUTBOUND_BYTES,
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
    /// Bytes queued to one peer before it counts as a slow consumer.
    pub outbound_bytes: usize,
    /// Sessions from one IP address; `None` for no per-address limit.
    pub max_per_ip: Option<usize>,
    /// Inbound lines per session per second; `None` for no limit.
    pub max_msgs_per_sec: Option<NonZeroU32>,
    /// UDP sessions at most (they also count toward `max_connections`), so
    /// forged source addresses cannot take every slot.
    pub max_udp_sessions: usize,
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
            outbound_bytes: DEFAULT_OUTBOUND_BYTES,
            max_per_ip: None,
            max_msgs_per_sec: None,
            max_udp_sessions: DEFAULT_MAX_UDP_SESSIONS,
            threads: default_threads(),
        }
    }
}

impl LobbyConfig {
    /// Checks every value: no zero where zero means nothing (connections,
    /// line length, room capacity, outbound queue, threads, timers of at
    /// least a second), an outbound byte bound that holds one whole line,
    /// and no value past its documented maximum
    /// ([`MAX_TIMER`], [`MAX_LINE_LIMIT`], [`MAX_COUNT_LIMIT`],
    /// [`MAX_THREADS`]).
    ///
    /// # Errors
    /// The first value out of range, as [`ConfigError::OutOfRange`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_count("max_connections", self.max_connections, 1)?;
        check("max_line", self.max_line as u128, 1, MAX_LINE_LIMIT as u128)?;
        check_secs("idle_timeout", self.idle_timeout)?;
        check_secs("heartbeat", self.heartbeat)?;
        check_count("room_capacity", self.room_capacity, 1)?;
        check_count("outbound_queue", self.outbound_queue, 1)?;
        // One line must fit, or a peer would be dropped for a single line.
        let min_bytes = self.max_line as u128 + 1;
        let max_bytes = MAX_OUTBOUND_BYTES as u128;
        check(
            "outbound_bytes",
            self.outbound_bytes as u128,
            min_bytes,
            max_bytes,
        )?;
        check_count("max_per_ip", self.max_per_ip.unwrap_or(1), 1)?;
        let rate = self.max_msgs_per_sec.map_or(1, |rate| rate.get() as usize);
        check_count("max_msgs_per_sec", rate, 1)?;
        check_count("max_udp_sessions", self.max_udp_sessions, 1)?;
        check("threads", self.threads as u128, 1, MAX_THREADS as u128)
    }

    /// The bounds on plain HTTP connections held open on `--http-bind`:
    /// [`MAX_HTTP_CONNECTIONS`] in all, and from one address
    /// [`HTTP_PER_SESSION`] × `max_per_ip` when that is set (the players
    /// allowed there, each with a browser's connections), otherwise
    /// [`DEFAULT_HTTP_PER_IP`]; never more than a
    /// [`HTTP_ADDRESSES_TO_FILL`]th of the total.
    pub fn http_connection_limits(&self) -> HttpConnectionLimits {
        let per_ip = self.max_per_ip.map_or(DEFAULT_HTTP_PER_IP, |sessions| {
            sessions.saturating_mul(HTTP_PER_SESSION)
        });
        HttpConnectionLimits {
            total: MAX_HTTP_CONNECTIONS,
            per_ip: per_ip.min(MAX_HTTP_CONNECTIONS / HTTP_ADDRESSES_TO_FILL),
        }
    }

    /// The per-session part of this configuration, for line framing in
    /// `wire`.
    pub fn session_config(&self, wire: Wire) -> SessionConfig {
        SessionConfig {
            framing: Framing::Lines {
                max_line: self.max_line,
            },
            outbound_queue: self.outbound_queue,
            outbound_bytes: self.outbound_bytes,
            idle_timeout: Some(self.idle_timeout),
            heartbeat: Some(self.heartbeat),
            max_frames_per_sec: self.max_msgs_per_sec,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            wire,
        }
    }
}

/// How many plain HTTP connections may be open at once on `--http-bind`,
/// counted from accept until the connection ends or becomes a WebSocket
/// session. The session limits are taken at the WebSocket upgrade only, so
/// these bound what they do not see: connections that never upgrade (a page
/// load, a scrape, an idle keep-alive, a refused upgrade). A WebSocket
/// session gives its slot back, since the session limits then count it:
/// were it kept, this bound would be a second per-address session limit
/// that `--max-per-ip` could not lift (a NAT's players, or the bench's 500
/// WebSockets per source address, would meet it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConnectionLimits {
    /// Plain HTTP connections open in all.
    pub total: usize,
    /// Plain HTTP connections open from one IP address (an IPv4-mapped
    /// IPv6 address counts as its IPv4 address).
    pub per_ip: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_connection_limits_follow_the_session_limits() {
        let default = LobbyConfig::default().http_connection_limits();
        assert_eq!(
            default,
            HttpConnectionLimits {
                total: MAX_HTTP_CONNECTIONS,
                per_ip: DEFAULT_HTTP_PER_IP,
            }
        );
        let strict = LobbyConfig {
            max_connections: 1,
            max_per_ip: Some(2),
            ..LobbyConfig::default()
        };
        assert_eq!(
            strict.http_connection_limits(),
            HttpConnectionLimits {
                total: MAX_HTTP_CONNECTIONS,
                per_ip: 16,
            }
        );
        let lax = LobbyConfig {
            max_per_ip: Some(1000),
            ..LobbyConfig::default()
        };
        assert_eq!(
            lax.http_connection_limits().per_ip,
            MAX_HTTP_CONNECTIONS / HTTP_ADDRESSES_TO_FILL,
            "one address never holds the whole bound"
        );
    }

    #[test]
    fn the_defaults_are_valid_and_nonsense_is_refused() {
        assert_eq!(LobbyConfig::default().validate(), Ok(()));
        let refused = [
            LobbyConfig {
                max_connections: 0,
                ..LobbyConfig::default()
            },
            LobbyConfig {
                heartbeat: Duration::from_secs(u64::MAX),
                ..LobbyConfig::default()
            },
            LobbyConfig {
                idle_timeout: Duration::ZERO,
                ..LobbyConfig::default()
            },
            LobbyConfig {
                max_line: usize::MAX,
                ..LobbyConfig::default()
            },
            LobbyConfig {
                room_capacity: 0,
                ..LobbyConfig::default()
            },
            LobbyConfig {
                threads: 0,
                ..LobbyConfig::default()
            },
        ];
        for config in refused {
            assert!(
                matches!(config.validate(), Err(ConfigError::OutOfRange { .. })),
                "{config:?}"
            );
        }
    }
}
