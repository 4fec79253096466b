//! UDP sources standing in for forged ones: sockets bound to many loopback
//! addresses (127.1.x.y) and ports, each sending a few small datagrams (the
//! first a `/join` of a busy room) and never answering anything, while
//! counting every byte the server sends back. An unverified address must
//! not be sent more than 3× the bytes it sent (SPEC §6).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use super::wire::until_set;

/// What one source sent and got.
#[derive(Debug, Default, Clone)]
pub struct SpoofResult {
    pub local: Option<SocketAddr>,
    pub sent: u64,
    pub sent_bytes: u64,
    pub received: u64,
    pub received_bytes: u64,
    /// `TOKEN` datagrams: sessions the server started for this address
    /// (the first line of each, SPEC §6).
    pub tokens: u64,
    /// `WELCOME` datagrams.
    pub welcomes: u64,
    /// `ERR server-full` datagrams.
    pub refusals: u64,
    pub error: Option<String>,
}

impl SpoofResult {
    pub fn ratio(&self) -> f64 {
        self.received_bytes as f64 / (self.sent_bytes.max(1)) as f64
    }
}

/// The loopback address of source address number `n`: 127.1.0.1, 127.1.0.2, …
pub fn source_ip(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250 + 1) as u8)
}

/// `addresses` × `ports` sockets, each on its own loopback address and port.
pub fn bind_sources(addresses: usize, ports: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    let mut sockets = Vec::with_capacity(addresses * ports);
    for a in 0..addresses {
        for _ in 0..ports {
            let socket = std::net::UdpSocket::bind((source_ip(a), 0))?;
            // Room enough that nothing the server sends is dropped here
            // before it is counted.
            let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(1 << 20);
            socket.set_nonblocking(true)?;
            sockets.push(socket);
        }
    }
    Ok(sockets)
}

/// Sends a datagram every `period` (the first after `offset`) while
/// `sending` is true, counts everything received until `done`.
pub async fn spoof(
    socket: std::net::UdpSocket,
    server: SocketAddr,
    room: String,
    period: Duration,
    offset: Duration,
    mut sending: watch::Receiver<bool>,
    mut done: watch::Receiver<bool>,
) -> SpoofResult {
    let mut result = SpoofResult {
        local: socket.local_addr().ok(),
        ..SpoofResult::default()
    };
    let socket = match UdpSocket::from_std(socket) {
        Ok(socket) => socket,
        Err(e) => {
            result.error = Some(format!("socket: {e}"));
            return result;
        }
    };
    let lines = [
        format!("/join {room}"),
        format!("/who {room}"),
        "/rooms".to_owned(),
        "hi".to_owned(),
        format!("/who {room}"),
        "/ping".to_owned(),
    ];
    let mut ticker = tokio::time::interval_at(Instant::now() + offset, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 65_536];
    let mut active = true;
    // Bounded by `done`, which the controller always sends.
    loop {
        tokio::select! {
            _ = until_set(&mut done) => break,
            changed = sending.changed(), if active => {
                if changed.is_err() || !*sending.borrow_and_update() {
                    active = false;
                }
            }
            _ = ticker.tick(), if active => {
                let line = &lines[(result.sent as usize) % lines.len()];
                match socket.send_to(line.as_bytes(), server).await {
                    Ok(n) => {
                        result.sent += 1;
                        result.sent_bytes += n as u64;
                    }
                    Err(e) => {
                        result.error = Some(format!("send: {e}"));
                        active = false;
                    }
                }
            }
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, _)) => {
                    result.received += 1;
                    result.received_bytes += n as u64;
                    if buf[..n].starts_with(b"TOKEN ") {
                        result.tokens += 1;
                    } else if buf[..n].starts_with(b"WELCOME ") {
                        result.welcomes += 1;
                    } else if buf[..n].starts_with(b"ERR server-full") {
                        result.refusals += 1;
                    }
                }
                Err(e) => {
                    result.error = Some(format!("recv: {e}"));
                    break;
                }
            }
        }
    }
    // What is already queued counts too.
    while let Ok((n, _)) = socket.try_recv_from(&mut buf) {
        result.received += 1;
        result.received_bytes += n as u64;
    }
    result
}
