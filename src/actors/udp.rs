//! The UdpEndpoint actor: owns one UDP socket, reports every datagram it
//! receives to a hub, and sends the datagrams the hub asks for.
//!
//! UDP has no connections to lose, so no error ends the endpoint: a failed
//! receive (such as the ICMP "port unreachable" a vanished peer causes) is
//! logged and skipped, and a datagram the socket cannot take right now is
//! dropped and counted, as UDP would drop it anyway.

use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use futures::Stream;
use log::{debug, info};
use tokio::net::UdpSocket;

/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;

/// Datagrams waiting to be sent that an endpoint's mailbox holds; senders
/// that use `try_send` drop what is beyond, as a full network would (at most
/// 4,096 × 64 KiB; lobby lines are far shorter).
pub const ENDPOINT_MAILBOX: usize = 4096;

/// A datagram the endpoint received, reported to its hub.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct Datagram {
    /// Who sent it.
    pub from: SocketAddr,
    /// What it held (possibly nothing).
    pub payload: Bytes,
}

/// Send one datagram from the endpoint's socket.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct SendDatagram {
    /// Where to.
    pub to: SocketAddr,
    /// What to send (possibly nothing).
    pub payload: Bytes,
}

/// One UDP socket. See the module docs.
pub struct UdpEndpoint {
    socket: Arc<UdpSocket>,
    /// What the endpoint serves, for its `listening on` log line.
    label: String,
    hub: Recipient<Datagram>,
    /// Datagrams dropped because the socket's send buffer was full.
    dropped: u64,
}

impl UdpEndpoint {
    /// An endpoint on an already bound `socket`, reporting to `hub` and
    /// logging itself as serving `label`.
    pub fn new(socket: UdpSocket, label: impl Into<String>, hub: Recipient<Datagram>) -> Self {
        UdpEndpoint {
            socket: Arc::new(socket),
            label: label.into(),
            hub,
            dropped: 0,
        }
    }
}

impl Actor for UdpEndpoint {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(ENDPOINT_MAILBOX);
        match self.socket.local_addr() {
            Ok(addr) => info!("listening on {addr} ({})", self.label),
            Err(_) => info!("listening ({})", self.label),
        }
        ctx.add_stream(received(self.socket.clone()));
    }
}

impl StreamHandler<Datagram> for UdpEndpoint {
    fn handle(&mut self, datagram: Datagram, _: &mut Self::Context) {
        self.hub.do_send(datagram);
    }
}

impl Handler<SendDatagram> for UdpEndpoint {
    type Result = ();

    fn handle(&mut self, SendDatagram { to, payload }: SendDatagram, _: &mut Self::Context) {
        if let Err(error) = self.socket.try_send_to(&payload, to) {
            self.dropped += 1;
            debug!(
                "datagram to {to} dropped ({} so far): {error}",
                self.dropped
            );
        }
    }
}

/// The datagrams arriving on `socket`, empty ones included. It never ends:
/// receive errors concern one peer, not the socket, and are skipped; so are
/// datagrams over [`MAX_DATAGRAM`]. Both are logged and counted.
fn received(socket: Arc<UdpSocket>) -> impl Stream<Item = Datagram> {
    let buffer = vec![0; MAX_DATAGRAM + 1];
    let skipped = 0u64;
    futures::stream::unfold(
        (socket, buffer, skipped),
        |(socket, mut buffer, mut skipped)| async move {
            loop {
                match socket.recv_from(&mut buffer).await {
                    Ok((len, from)) if len <= MAX_DATAGRAM => {
                        let payload = Bytes::copy_from_slice(&buffer[..len]);
                        return Some((Datagram { from, payload }, (socket, buffer, skipped)));
                    }
                    Ok((_, from)) => {
                        skipped += 1;
                        debug!("oversized datagram from {from} dropped ({skipped} skipped)");
                    }
                    Err(error) => {
                        skipped += 1;
                        debug!("receive failed: {error} ({skipped} skipped)");
                    }
                }
            }
        },
    )
}
