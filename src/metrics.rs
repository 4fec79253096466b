//! What an operator scrapes: counters every thread keeps for itself, summed
//! and encoded in the Prometheus text format (with `prometheus-client`) when
//! `GET /metrics` asks.
//!
//! Hot counters (lines and bytes in and out) live in one cache-line-sized
//! block per thread, written only by that thread with relaxed atomics: a
//! chat line costs no shared cache line and no lock. Rare events (a session
//! opening or ending, a refusal) use shared atomics. Labels are bounded
//! vocabularies (transport, reason word, refusal cause, thread index): never
//! a room or a nick.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry as PromRegistry;

use crate::reason::DisconnectReason;

/// How a session reaches the server: the `transport` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Lines over TCP (the text lobby, or a custom protocol).
    TcpText,
    /// Newline-delimited JSON over TCP.
    TcpJson,
    /// One line per UDP datagram.
    Udp,
    /// JSON over WebSocket text messages.
    WebSocket,
}

impl Transport {
    const ALL: [Transport; 4] = [
        Transport::TcpText,
        Transport::TcpJson,
        Transport::Udp,
        Transport::WebSocket,
    ];

    /// The label value: `tcp-text`, `tcp-json`, `udp` or `ws`.
    pub fn label(self) -> &'static str {
        match self {
            Transport::TcpText => "tcp-text",
            Transport::TcpJson => "tcp-json",
            Transport::Udp => "udp",
            Transport::WebSocket => "ws",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a peer was refused before it became a session: the `cause` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over `--max-connections` or `--max-per-ip`.
    Limit,
    /// A WebSocket upgrade from an origin not allowed.
    Origin,
    /// A WebSocket upgrade while the server drains.
    Draining,
    /// A WebSocket upgrade that was not a valid handshake.
    BadHandshake,
    /// An HTTP connection over the bounds on open HTTP connections (per
    /// address or in all), closed when accepted: apart from `Limit`, which
    /// counts sessions, so an operator sees which bound refused.
    HttpLimit,
}

impl Refusal {
    const ALL: [Refusal; 5] = [
        Refusal::Limit,
        Refusal::Origin,
        Refusal::Draining,
        Refusal::BadHandshake,
        Refusal::HttpLimit,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Limit => "limit",
            Refusal::Origin => "origin",
            Refusal::Draining => "draining",
            Refusal::BadHandshake => "bad-handshake",
            Refusal::HttpLimit => "http-limit",
        }
    }
}

/// The reason words of [`DisconnectReason::word`], in label order.
const REASON_WORDS: [&str; 8] = [
    "quit",
    "closed",
    "reset",
    "idle-timeout",
    "slow-consumer",
    "kicked",
    "shutdown",
    "error",
];

/// One thread's hot counters; padded to its own cache lines so two threads
/// never write the same line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct ThreadCounters {
    lines_in: AtomicU64,
    bytes_in: AtomicU64,
    lines_out: AtomicU64,
    bytes_out: AtomicU64,
    /// The most frames one session of this thread had waiting for its peer.
    queue_high_water: AtomicU64,
}

impl ThreadCounters {
    /// One inbound frame of `bytes` bytes.
    pub(crate) fn frame_in(&self, bytes: usize) {
        // Only this thread writes: a load and a store are enough, and cheaper
        // than a locked add.
        bump(&self.lines_in, 1);
        bump(&self.bytes_in, bytes as u64);
    }

    /// One outbound frame of `bytes` bytes queued for a peer.
    pub(crate) fn frame_out(&self, bytes: usize) {
        bump(&self.lines_out, 1);
        bump(&self.bytes_out, bytes as u64);
    }

    /// A session has `frames` frames waiting for its peer.
    pub(crate) fn queued(&self, frames: usize) {
        let frames = frames as u64;
        if frames > self.queue_high_water.load(Ordering::Relaxed) {
            self.queue_high_water.store(frames, Ordering::Relaxed);
        }
    }
}

/// Adds `by` to a counter only its own thread writes.
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// Every counter of one server. Shared by its registry (`Arc`); see the
/// module docs.
#[derive(Debug)]
pub struct Metrics {
    threads: Box<[ThreadCounters]>,
    sessions: [AtomicI64; Transport::ALL.len()],
    disconnects: [AtomicU64; REASON_WORDS.len()],
    refused: [AtomicU64; Refusal::ALL.len()],
}

/// Values read at scrape time that the counters above do not hold.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Rooms that exist now.
    pub rooms: usize,
    /// Room traffic waiting in each thread's queue from other threads.
    pub sequencer_queue: Vec<usize>,
    /// Plain HTTP connections open now (not WebSocket sessions): how full
    /// their bound is.
    pub plain_http_connections: usize,
}

impl Metrics {
    /// Counters for a server of `threads` threads, all zero.
    pub fn new(threads: usize) -> Self {
        Metrics {
            threads: (0..threads.max(1))
                .map(|_| ThreadCounters::default())
                .collect(),
            sessions: Default::default(),
            disconnects: Default::default(),
            refused: Default::default(),
        }
    }

    /// Thread `thread`'s hot counters.
    pub(crate) fn thread(&self, thread: usize) -> &ThreadCounters {
        &self.threads[thread % self.threads.len()]
    }

    /// A session of `transport` started.
    pub(crate) fn opened(&self, transport: Transport) {
        self.sessions[transport.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A session of `transport` ended for `reason`.
    pub(crate) fn closed(&self, transport: Transport, reason: DisconnectReason) {
        self.sessions[transport.index()].fetch_sub(1, Ordering::Relaxed);
        let word = reason.word();
        if let Some(at) = REASON_WORDS.iter().position(|known| *known == word) {
            self.disconnects[at].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A peer was refused for `cause`.
    pub fn refused(&self, cause: Refusal) {
        self.refused[cause as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Live sessions of `transport`.
    pub fn sessions(&self, transport: Transport) -> i64 {
        self.sessions[transport.index()].load(Ordering::Relaxed)
    }

    /// Everything, in the Prometheus text exposition format (ending in
    /// `# EOF`), with `snapshot`'s values beside the counters.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        let mut registry = PromRegistry::with_prefix("switchboard");
        let labelled = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect()
        };

        let sessions = Family::<Vec<(String, String)>, Gauge>::default();
        for transport in Transport::ALL {
            let value = self.sessions(transport).max(0);
            sessions
                .get_or_create(&labelled(&[("transport", transport.label())]))
                .set(value);
        }
        registry.register("sessions", "Live sessions by transport", sessions);

        let rooms = Gauge::<i64>::default();
        rooms.set(i64::try_from(snapshot.rooms).unwrap_or(i64::MAX));
        registry.register("rooms", "Rooms that exist (have members)", rooms);

        let sum = |field: fn(&ThreadCounters) -> &AtomicU64| -> u64 {
            self.threads
                .iter()
                .map(|thread| field(thread).load(Ordering::Relaxed))
                .fold(0, u64::wrapping_add)
        };
        for (name, help, value) in [
            (
                "lines_in",
                "Inbound frames (lines, JSON commands, WebSocket text messages)",
                sum(|t| &t.lines_in),
            ),
            (
                "lines_out",
                "Outbound frames queued for peers",
                sum(|t| &t.lines_out),
            ),
            (
                "bytes_in",
                "Bytes of inbound frames, terminators excluded",
                sum(|t| &t.bytes_in),
            ),
            (
                "bytes_out",
                "Bytes of outbound frames queued for peers",
                sum(|t| &t.bytes_out),
            ),
        ] {
            let counter = Counter::<u64>::default();
            counter.inc_by(value);
            registry.register(name, help, counter);
        }

        let disconnects = Family::<Vec<(String, String)>, Counter>::default();
        for (word, count) in REASON_WORDS.iter().zip(&self.disconnects) {
            disconnects
                .get_or_create(&labelled(&[("reason", word)]))
                .inc_by(count.load(Ordering::Relaxed));
        }
        registry.register("disconnects", "Sessions ended, by reason", disconnects);

        let slow = Counter::<u64>::default();
        let slow_at = REASON_WORDS
            .iter()
            .position(|word| *word == DisconnectReason::SlowConsumer.word());
        slow.inc_by(slow_at.map_or(0, |at| self.disconnects[at].load(Ordering::Relaxed)));
        registry.register(
            "slow_consumer_drops",
            "Sessions dropped because their peer did not read fast enough",
            slow,
        );

        let refused = Family::<Vec<(String, String)>, Counter>::default();
        for (cause, count) in Refusal::ALL.iter().zip(&self.refused) {
            refused
                .get_or_create(&labelled(&[("cause", cause.label())]))
                .inc_by(count.load(Ordering::Relaxed));
        }
        registry.register(
            "refused_connections",
            "Peers refused before becoming a session, by cause",
            refused,
        );

        let high_water = Gauge::<i64>::default();
        let most = self
            .threads
            .iter()
            .map(|thread| thread.queue_high_water.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        high_water.set(i64::try_from(most).unwrap_or(i64::MAX));
        registry.register(
            "outbound_queue_high_water",
            "The most frames one session had waiting for its peer since start",
            high_water,
        );

        let plain = Gauge::<i64>::default();
        plain.set(i64::try_from(snapshot.plain_http_connections).unwrap_or(i64::MAX));
        registry.register(
            "http_connections_open",
            "Plain HTTP connections open now (WebSocket sessions are counted as sessions)",
            plain,
        );

        let depth = Family::<Vec<(String, String)>, Gauge>::default();
        for (thread, waiting) in snapshot.sequencer_queue.iter().enumerate() {
            depth
                .get_or_create(&labelled(&[("thread", &thread.to_string())]))
                .set(i64::try_from(*waiting).unwrap_or(i64::MAX));
        }
        registry.register(
            "sequencer_queue_depth",
            "Room traffic from other threads waiting for each thread",
            depth,
        );

        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_over_threads_and_reasons_are_labelled() {
        let metrics = Metrics::new(2);
        metrics.thread(0).frame_in(10);
        metrics.thread(1).frame_in(5);
        metrics.opened(Transport::WebSocket);
        metrics.opened(Transport::WebSocket);
        metrics.closed(Transport::WebSocket, DisconnectReason::SlowConsumer);
        metrics.refused(Refusal::Origin);
        let text = metrics.encode(&Snapshot {
            rooms: 3,
            sequencer_queue: vec![0, 4],
            plain_http_connections: 2,
        });
        for line in [
            "switchboard_lines_in_total 2",
            "switchboard_bytes_in_total 15",
            "switchboard_sessions{transport=\"ws\"} 1",
            "switchboard_disconnects_total{reason=\"slow-consumer\"} 1",
            "switchboard_slow_consumer_drops_total 1",
            "switchboard_refused_connections_total{cause=\"origin\"} 1",
            "switchboard_rooms 3",
            "switchboard_sequencer_queue_depth{thread=\"1\"} 4",
            "switchboard_http_connections_open 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
