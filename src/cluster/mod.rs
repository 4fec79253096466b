//! Rooms shared across nodes through Redis (`--cluster`): the configuration,
//! the health a node reports, and the connection a node starts with.
//!
//! The engine itself is the [`Cluster`](crate::actors::cluster::Cluster)
//! actor; the Lua scripts that make each operation atomic are in
//! [`scripts`]. Without a cluster none of this runs: rooms stay on the
//! per-thread sequencers.

pub(crate) mod scripts;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::event::{Event, Wire};

/// How often a node heartbeats into Redis, by default.
pub const DEFAULT_NODE_HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a node may miss heartbeats before a surviving node declares it
/// dead, by default.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one Redis request may take before it counts as failed.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// How a node joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Where Redis is: `redis://HOST:PORT/`, `redis+unix:///PATH` or a unix
    /// socket path (starting with `/`).
    pub url: String,
    /// This node's name, unique in the cluster: 1–64 characters of
    /// `A–Z a–z 0–9 _ - . :`.
    pub node_name: String,
    /// How often the node heartbeats.
    pub heartbeat: Duration,
    /// How long without a heartbeat before a node is declared dead (and its
    /// members are told `QUIT <room> <nick> node-down`).
    pub timeout: Duration,
}

impl ClusterConfig {
    /// A node called `node_name` of the cluster whose Redis is at `url`,
    /// with the default heartbeat and timeout.
    pub fn new(url: impl Into<String>, node_name: impl Into<String>) -> Self {
        ClusterConfig {
            url: url.into(),
            node_name: node_name.into(),
            heartbeat: DEFAULT_NODE_HEARTBEAT,
            timeout: DEFAULT_NODE_TIMEOUT,
        }
    }

    /// The URL the redis client is given: a bare path becomes
    /// `redis+unix://PATH`.
    pub(crate) fn client_url(&self) -> String {
        if self.url.starts_with('/') {
            format!("redis+unix://{}", self.url)
        } else {
            self.url.clone()
        }
    }

    /// Checks the node name, the URL and the timers.
    ///
    /// # Errors
    /// [`ClusterError::BadNodeName`], [`ClusterError::BadUrl`] or
    /// [`ClusterError::BadTimers`].
    pub fn validate(&self) -> Result<(), ClusterError> {
        let name_ok = (1..=64).contains(&self.node_name.len())
            && self
                .node_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
        if !name_ok {
            return Err(ClusterError::BadNodeName(self.node_name.clone()));
        }
        if let Err(error) = redis::Client::open(self.client_url()) {
            return Err(ClusterError::BadUrl(self.url.clone(), error.to_string()));
        }
        if self.heartbeat.is_zero() || self.timeout <= self.heartbeat {
            return Err(ClusterError::BadTimers);
        }
        Ok(())
    }
}

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The node name is empty, too long or has other characters.
    #[error("--node-name must be 1-64 characters of A-Z a-z 0-9 _ - . :, not {0:?}")]
    BadNodeName(String),
    /// The URL is not one the redis client takes.
    #[error("--cluster {0:?} is not a redis URL or socket path: {1}")]
    BadUrl(String, String),
    /// The heartbeat is zero or not shorter than the timeout.
    #[error("the node heartbeat must be above zero and shorter than the node timeout")]
    BadTimers,
    /// Redis could not be reached or refused a request.
    #[error("cannot reach redis at {0}: {1}")]
    Unreachable(String, String),
    /// A live node already goes by this node's name.
    #[error("--node-name {0:?} is in use by a live node of the cluster")]
    NameInUse(String),
    /// The server's own configuration is out of range.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// How the cluster engine of a node is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterHealth {
    /// Not in a cluster: rooms are this process's own.
    Standalone,
    /// Redis answers; rooms span the cluster.
    Connected,
    /// Redis does not answer: cross-node operations get `ERR unavailable`
    /// while the node reconnects with back-off.
    Degraded,
}

/// A node's [`ClusterHealth`], shared between its engine and its registry.
#[derive(Debug, Clone, Default)]
pub(crate) struct HealthCell(Arc<AtomicU8>);

impl HealthCell {
    pub(crate) fn get(&self) -> ClusterHealth {
        match self.0.load(Ordering::Acquire) {
            1 => ClusterHealth::Connected,
            2 => ClusterHealth::Degraded,
            _ => ClusterHealth::Standalone,
        }
    }

    /// Sets the health; answers whether it changed.
    pub(crate) fn set(&self, health: ClusterHealth) -> bool {
        let value = match health {
            ClusterHealth::Standalone => 0,
            ClusterHealth::Connected => 1,
            ClusterHealth::Degraded => 2,
        };
        self.0.swap(value, Ordering::AcqRel) != value
    }
}

/// An event that crossed the network: already rendered in every wire
/// format by the node that published it.
#[derive(Debug)]
pub(crate) struct Wired {
    pub text: Bytes,
    pub json: Bytes,
}

impl Event for Wired {
    fn render(&self, wire: Wire) -> Bytes {
        match wire {
            Wire::Text => self.text.clone(),
            Wire::Json => self.json.clone(),
        }
    }
}

/// A node registered in its cluster: what the engine starts from.
pub(crate) struct Joined {
    pub config: ClusterConfig,
    pub client: redis::Client,
    pub commands: ConnectionManager,
    /// Which incarnation of Redis's data the node registered in.
    pub epoch: String,
    /// The node's number in the cluster: its session ids start at
    /// `number × ID_SPAN`.
    pub number: u64,
}

/// Session ids of one node: node `n` numbers its sessions from `n × ID_SPAN
/// + 1`, so ids (and `guest<id>` nicks) never collide across nodes.
pub(crate) const ID_SPAN: u64 = 1_000_000_000;

/// A fresh epoch value: nanoseconds since 1970 and the process id.
pub(crate) fn new_epoch() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("{nanos}-{}", std::process::id())
}

/// The connection manager every command of a node goes through: it
/// reconnects by itself with back-off.
pub(crate) fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(2))
}

/// Connects to Redis, removes what a previous run under the same node name
/// left (its members are told `node-down`), and registers the node.
///
/// # Errors
/// [`ClusterError`] when the configuration is invalid or Redis cannot be
/// reached.
pub(crate) async fn join(config: ClusterConfig) -> Result<Joined, ClusterError> {
    config.validate()?;
    let unreachable =
        |error: redis::RedisError| ClusterError::Unreachable(config.url.clone(), error.to_string());
    let client = redis::Client::open(config.client_url()).map_err(unreachable)?;
    let mut commands = client
        .get_connection_manager_with_config(manager_config())
        .await
        .map_err(unreachable)?;
    for script in scripts::all() {
        script
            .load_async(&mut commands)
            .await
            .map_err(unreachable)?;
    }
    // A previous run of this node that died is reaped; a live node of the
    // same name is left alone, and this one does not start.
    let reaped: i64 = scripts::REAP
        .arg(&config.node_name)
        .arg(crate::DisconnectReason::NodeDown.word())
        .arg(config.timeout.as_millis() as u64)
        .invoke_async(&mut commands)
        .await
        .map_err(unreachable)?;
    if reaped == -2 {
        return Err(ClusterError::NameInUse(config.node_name.clone()));
    }
    let (epoch, number): (String, u64) = scripts::REGISTER
        .arg(&config.node_name)
        .arg(new_epoch())
        .invoke_async(&mut commands)
        .await
        .map_err(unreachable)?;
    Ok(Joined {
        config,
        client,
        commands,
        epoch,
        number,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_urls_and_timers_are_checked() {
        let ok = ClusterConfig::new("redis://127.0.0.1:6379/", "lobby-a:7001");
        assert!(ok.validate().is_ok());
        let socket = ClusterConfig::new("/run/redis/redis.sock", "n1");
        assert_eq!(socket.client_url(), "redis+unix:///run/redis/redis.sock");
        assert!(socket.validate().is_ok());
        for name in ["", "has space", "slash/y", &"x".repeat(65)] {
            let bad = ClusterConfig::new("redis://127.0.0.1/", name);
            assert!(matches!(bad.validate(), Err(ClusterError::BadNodeName(_))));
        }
        let url = ClusterConfig::new("ftp://somewhere/", "n1");
        assert!(matches!(url.validate(), Err(ClusterError::BadUrl(..))));
        let mut timers = ClusterConfig::new("redis://127.0.0.1/", "n1");
        timers.timeout = timers.heartbeat;
        assert!(matches!(timers.validate(), Err(ClusterError::BadTimers)));
    }
}
