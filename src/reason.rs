//! Why a session ended: the one vocabulary shared by logs, the registry and the
//! `QUIT` lines that room members see.

use std::fmt;
use std::io;

/// The reason a session stopped.
///
/// Every way a session can end maps to exactly one variant, and each session
/// reports its reason exactly once, from the moment its actor stops. The
/// [`word`](DisconnectReason::word) of a reason is what the lobby protocol shows
/// to the remaining room members in `QUIT <room> <nick> <reason>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// The peer asked to leave (`/quit`).
    Quit,
    /// The peer closed its side of the connection (end of input).
    Closed,
    /// The connection was reset or the pipe broke under us.
    Reset,
    /// No complete inbound line arrived for the configured idle timeout.
    IdleTimeout,
    /// The peer did not read fast enough: its outbound queue overflowed.
    SlowConsumer,
    /// The embedding program removed the session.
    Kicked,
    /// The server is shutting down.
    Shutdown,
    /// The peer sent input that cannot be framed at all (a length-prefixed
    /// frame over the limit): nothing after it can be trusted.
    BadFrame,
    /// Any other I/O failure.
    Error(io::ErrorKind),
    /// The session's cluster node stopped heartbeating and was declared
    /// dead (see `--cluster`): its members are gone from every room.
    NodeDown,
}

impl DisconnectReason {
    /// The lower-case reason word used on the wire (`quit`, `closed`, `reset`,
    /// `idle-timeout`, `slow-consumer`, `kicked`, `shutdown`, `error`,
    /// `node-down`).
    pub fn word(self) -> &'static str {
        match self {
            DisconnectReason::Quit => "quit",
            DisconnectReason::Closed => "closed",
            DisconnectReason::Reset => "reset",
            DisconnectReason::IdleTimeout => "idle-timeout",
            DisconnectReason::SlowConsumer => "slow-consumer",
            DisconnectReason::Kicked => "kicked",
            DisconnectReason::Shutdown => "shutdown",
            DisconnectReason::NodeDown => "node-down",
            DisconnectReason::BadFrame | DisconnectReason::Error(_) => "error",
        }
    }

    /// Classifies an I/O error from a session's socket.
    ///
    /// Resets, aborts and broken pipes are all the peer vanishing abruptly, so
    /// they share [`DisconnectReason::Reset`]; everything else is an
    /// [`DisconnectReason::Error`] carrying the error kind for the logs.
    pub fn from_io_error(error: &io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => DisconnectReason::Reset,
            kind => DisconnectReason::Error(kind),
        }
    }

    /// Whether output already queued for the peer is still worth writing.
    ///
    /// A slow consumer or a dead socket would only make the flush wait out its
    /// deadline, so those sessions stop at once; every other ending writes what
    /// the peer is owed (including a farewell line) first.
    pub fn flushes_output(self) -> bool {
        !matches!(
            self,
            DisconnectReason::SlowConsumer | DisconnectReason::Reset | DisconnectReason::Error(_)
        )
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::BadFrame => f.write_str("error (bad frame)"),
            DisconnectReason::Error(kind) => write!(f, "error ({kind})"),
            other => f.write_str(other.word()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_that_mean_the_peer_vanished_are_resets() {
        for kind in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::BrokenPipe,
        ] {
            let reason = DisconnectReason::from_io_error(&io::Error::from(kind));
            assert_eq!(reason, DisconnectReason::Reset);
        }
        let other = DisconnectReason::from_io_error(&io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(other, DisconnectReason::Error(io::ErrorKind::TimedOut));
        assert_eq!(other.word(), "error");
    }
}
