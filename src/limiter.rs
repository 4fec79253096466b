//! Connection admission: the live-session count, overall and per IP address.
//! A second [`ConnectionLimiter`] counts the plain HTTP connections of
//! `--http-bind` the same way (see
//! [`LobbyConfig::http_connection_limits`](crate::LobbyConfig::http_connection_limits)).
//!
//! A slot is a [`ConnectionPermit`] owned by the session (or connection) it
//! admitted, so a slot is released exactly when that owner lets go of it,
//! whatever ended it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Counts live sessions against a global and a per-address limit.
///
/// Cloning is cheap and shares the counts, so several listeners (or a listener
/// on each of several protocols) can enforce one limit together.
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    inner: Arc<LimiterState>,
}

#[derive(Debug)]
struct LimiterState {
    max_connections: usize,
    /// `None` when there is no per-address limit.
    max_per_ip: Option<usize>,
    /// Accepting and closing are rare next to messages, so one short-held lock
    /// here never sits on a hot path.
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl ConnectionLimiter {
    /// A limiter admitting at most `max_connections` sessions, and at most
    /// `max_per_ip` from one address when that is `Some`.
    pub fn new(max_connections: usize, max_per_ip: Option<usize>) -> Self {
        ConnectionLimiter {
            inner: Arc::new(LimiterState {
                max_connections,
                max_per_ip,
                counts: Mutex::new(Counts::default()),
            }),
        }
    }

    /// Takes a slot for a peer at `ip`, or `None` when either limit is reached.
    ///
    /// IPv4-mapped IPv6 addresses count as the IPv4 address they carry.
    pub fn try_acquire(&self, ip: IpAddr) -> Option<ConnectionPermit> {
        self.acquire(ip, false)
    }

    /// Takes a slot for a peer at `ip` within its address's limit even if
    /// every slot is taken: for a caller that is freeing one (the HTTP
    /// listener closing its oldest connection), so the total is passed only
    /// until that one is gone.
    pub(crate) fn try_acquire_past_total(&self, ip: IpAddr) -> Option<ConnectionPermit> {
        self.acquire(ip, true)
    }

    fn acquire(&self, ip: IpAddr, past_total: bool) -> Option<ConnectionPermit> {
        let ip = ip.to_canonical();
        let mut counts = self.lock();
        if counts.total >= self.inner.max_connections && !past_total {
            return None;
        }
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if self.inner.max_per_ip.is_some_and(|max| from_ip >= max) {
            return None;
        }
        counts.total += 1;
        counts.per_ip.insert(ip, from_ip + 1);
        Some(ConnectionPermit {
            limiter: self.clone(),
            ip,
        })
    }

    /// The number of slots currently held.
    pub fn live(&self) -> usize {
        self.lock().total
    }

    fn release(&self, ip: IpAddr) {
        let mut counts = self.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                counts.per_ip.remove(&ip);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts are plain integers updated in one step: a panic elsewhere
        // cannot leave them half-written, so a poisoned lock is still sound.
        self.inner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One admitted session's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionPermit {
    limiter: ConnectionLimiter,
    ip: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.limiter.release(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn slots_are_released_when_permits_drop() {
        let limiter = ConnectionLimiter::new(2, None);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let first = limiter.try_acquire(ip);
        let second = limiter.try_acquire(ip);
        assert!(first.is_some() && second.is_some());
        assert!(limiter.try_acquire(ip).is_none());
        drop(first);
        assert!(limiter.try_acquire(ip).is_some());
    }

    #[test]
    fn per_ip_limit_counts_mapped_ipv6_as_ipv4() {
        let limiter = ConnectionLimiter::new(10, Some(1));
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let _held = limiter.try_acquire(v4).unwrap();
        assert!(limiter.try_acquire(mapped).is_none());
        assert!(limiter.try_acquire(other).is_some());
        assert_eq!(limiter.live(), 1);
    }
}
