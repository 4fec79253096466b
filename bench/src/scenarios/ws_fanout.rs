//! `ws-fanout`: one busy room of WebSocket members.
//!
//! Like `fanout`, over WebSocket and the JSON lobby (SPEC §5): M members
//! upgrade `GET /ws` and join one room; K of them also send
//! `{"cmd":"say","text":"s<k> <seq> <ns>"}` as fast as the room allows,
//! each with at most W lines unacknowledged (acknowledged when the sender
//! sees its own `msg` event). Every member checks each sender's order and
//! records the delivery latency. Switchboard serves it on `--http-bind`; the
//! baseline is `tokio-baseline --mode ws` (tokio-tungstenite).
//!
//! The run, the members' bookkeeping and the figures are `fanout`'s; this
//! module is the WebSocket [`Transport`].

use std::io;
use std::net::SocketAddr;

use clap::Args;
use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::Scenario;
use super::fanout::{Event, FanoutArgs, ROOM, Transport, parse_say};
use super::harness;
use crate::net::{self, ConnectOpts};
use crate::report::Outcome;
use crate::server::{ServerProc, Service, Target};
use crate::{BenchResult, Common, RunCtx};

#[derive(Debug, Clone, Args)]
pub struct WsFanoutArgs {
    #[command(flatten)]
    pub fanout: FanoutArgs,
}

impl Scenario for WsFanoutArgs {
    fn name(&self) -> &'static str {
        "ws-fanout"
    }

    fn describe(&self) -> String {
        self.fanout.describe_members("WebSocket members")
    }

    fn service(&self) -> Service {
        Service::WsLobby
    }

    fn server_args(&self, target: Target) -> Vec<String> {
        self.fanout.server_args(target)
    }

    fn params(&self) -> serde_json::Value {
        self.fanout.params()
    }

    fn common(&self) -> &Common {
        &self.fanout.common
    }

    fn run(&self, server: &mut ServerProc, ctx: &RunCtx) -> BenchResult<Outcome> {
        harness::drive(server, ctx, "deliveries", |addr, pid, progress| {
            self.fanout
                .run_async::<WsMember>(vec![addr], pid, Vec::new(), progress)
        })
    }
}

/// A member of the JSON lobby over WebSocket.
struct WsMember {
    ws: WebSocketStream<TcpStream>,
}

impl Transport for WsMember {
    const SETUP: &'static str = "setup (upgrade + join all)";
    const QUITS: &'static str = "quit events";

    /// Upgrades connection number `index` and joins the room.
    async fn joined(addr: SocketAddr, index: u64) -> io::Result<Self> {
        let stream = net::connect_retry(addr, ConnectOpts::from_index(index)).await?;
        let url = format!("ws://{addr}/ws");
        let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .map_err(io::Error::other)?;
        let join = json!({"cmd": "join", "room": ROOM}).to_string();
        ws.send(Message::text(join))
            .await
            .map_err(io::Error::other)?;
        // Welcome, then our own join, then who (others' joins may come between).
        for _ in 0..64 {
            let message = tokio::time::timeout(net::IO_TIMEOUT, ws.next())
                .await
                .map_err(|_| io::Error::other("no who within the timeout"))?;
            match message {
                Some(Ok(Message::Text(text))) if text.starts_with(r#"{"event":"who""#) => {
                    return Ok(WsMember { ws });
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(io::Error::other(error)),
                None => return Err(io::Error::other("closed before who")),
            }
        }
        Err(io::Error::other("no who after 64 events"))
    }

    fn may_send(&self) -> bool {
        true
    }

    async fn send(
        &mut self,
        k: usize,
        seq: &mut u64,
        count: usize,
        now: u64,
    ) -> Result<(), String> {
        for _ in 0..count {
            let say = format!(r#"{{"cmd":"say","text":"s{k} {seq} {now}"}}"#);
            *seq += 1;
            self.ws
                .feed(Message::text(say))
                .await
                .map_err(|e| e.to_string())?;
        }
        self.ws.flush().await.map_err(|e| e.to_string())
    }

    async fn next(&mut self, stop: &CancellationToken, idle: impl FnOnce() + Send) -> Event {
        let next = match self.ws.next().now_or_never() {
            Some(next) => next,
            None => {
                idle();
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return Event::Stop,
                    next = self.ws.next() => next,
                }
            }
        };
        match next {
            Some(Ok(Message::Text(text))) => {
                if let Some((k, seq, ns)) = parse_msg(&text) {
                    Event::Msg { k, seq, ns }
                } else if text.starts_with(r#"{"event":"quit""#) {
                    Event::Quit
                } else {
                    Event::Other
                }
            }
            Some(Ok(Message::Close(frame))) => {
                Event::Failed(format!("closed by the server: {frame:?}"))
            }
            Some(Ok(_)) => Event::Other,
            Some(Err(error)) => Event::Failed(error.to_string()),
            None => Event::Failed("server closed the connection".into()),
        }
    }
}

/// Parses a `msg` event whose text is `s<k> <seq> <ns>` into (k, seq, ns).
/// Both servers render `{"event":"msg","room":R,"nick":N,"text":T}`.
fn parse_msg(event: &str) -> Option<(usize, u64, u64)> {
    if !event.starts_with(r#"{"event":"msg""#) {
        return None;
    }
    parse_say(event.rsplit_once(r#""text":"s"#)?.1.strip_suffix("\"}")?)
}
