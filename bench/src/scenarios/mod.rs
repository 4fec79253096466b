//! The load scenarios. Each one drives a freshly started server and returns
//! its figures and checks as an [`Outcome`].

pub mod chaos;
pub mod churn;
pub mod cluster_fanout;
pub mod echo;
pub mod fanout;
pub mod harness;
pub mod idle;
pub mod lobby_echo;
pub mod slow;
pub mod ws_fanout;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::net::{self, ConnectOpts};
use crate::report::Outcome;
use crate::server::{ServerProc, Service, Target};
use crate::{BenchResult, Common, RunCtx};

/// A load scenario.
pub trait Scenario {
    fn name(&self) -> &'static str;
    /// One line: what is measured with which sizes.
    fn describe(&self) -> String;
    fn service(&self) -> Service;
    /// Flags for the server beyond `--bind` (and the lobby's fixed ones).
    fn server_args(&self, _target: Target) -> Vec<String> {
        Vec::new()
    }
    fn params(&self) -> serde_json::Value;
    fn common(&self) -> &Common;
    fn run(&self, server: &mut ServerProc, ctx: &RunCtx) -> BenchResult<Outcome>;
}

/// A lobby client after `WELCOME`: its id, nick and the two socket halves.
pub struct LobbyClient {
    pub nick: String,
    pub reader: BufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
}

impl LobbyClient {
    /// Connects from `source` and reads `WELCOME <id> <nick>`.
    pub async fn connect(addr: SocketAddr, opts: ConnectOpts) -> io::Result<LobbyClient> {
        let stream = net::connect_retry(addr, opts).await?;
        let (read_half, writer) = stream.into_split();
        let mut reader = BufReader::with_capacity(16 * 1024, read_half);
        let welcome = net::expect_line(&mut reader, "WELCOME ", 0).await?;
        let nick = welcome
            .split_whitespace()
            .nth(2)
            .ok_or_else(|| io::Error::other(format!("malformed {welcome:?}")))?
            .to_owned();
        Ok(LobbyClient {
            nick,
            reader,
            writer,
        })
    }

    pub async fn send(&mut self, line: &str) -> io::Result<()> {
        self.writer.write_all(line.as_bytes()).await
    }

    /// `/join ROOM`, then reads up to this client's `WHO ROOM` line, skipping
    /// its own `JOIN` and at most `max_skip` other lines (e.g. `JOIN`s of
    /// later members, `QUIT`s).
    pub async fn join(&mut self, room: &str, max_skip: usize) -> io::Result<()> {
        self.send(&format!("/join {room}\n")).await?;
        net::expect_line(&mut self.reader, &format!("WHO {room}"), max_skip + 1).await?;
        Ok(())
    }

    /// `/nick NAME`, then reads the `NICK` line.
    pub async fn rename(&mut self, name: &str) -> io::Result<()> {
        self.send(&format!("/nick {name}\n")).await?;
        let reply = net::expect_line(&mut self.reader, "", 0).await?;
        if !reply.starts_with("NICK ") {
            return Err(io::Error::other(format!("/nick {name}: {reply}")));
        }
        self.nick = name.to_owned();
        Ok(())
    }

    /// `/rooms` and its reply as (room, members) pairs.
    pub async fn rooms(&mut self) -> io::Result<Vec<(String, usize)>> {
        self.send("/rooms\n").await?;
        let reply = net::expect_line(&mut self.reader, "ROOMS", 16).await?;
        Ok(reply
            .split_whitespace()
            .skip(1)
            .filter_map(|entry| {
                let (room, count) = entry.rsplit_once('=')?;
                Some((room.to_owned(), count.parse().ok()?))
            })
            .collect())
    }
}

/// Seconds as a `Duration`, clamped to something sane.
pub fn secs(value: f64) -> Duration {
    Duration::from_secs_f64(value.clamp(0.0, 3600.0))
}

/// Records how many of `total` client tasks failed, with the first errors.
pub fn report_errors(outcome: &mut Outcome, what: &str, errors: &[String]) {
    outcome.fig(what, "count", errors.len() as f64);
    for error in errors.iter().take(3) {
        outcome.note(format!("{what}: {error}"));
    }
}
