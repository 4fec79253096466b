//! One lobby connection of the chaos run: lines read with deadlines, in a
//! way that survives being a `select!` branch that loses.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long one connect, one expected line or one close may take. Generous:
/// the run must pass on a busy 2-core machine, and a passing run never waits
/// this long.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Bytes read from the socket at a time.
const READ_BUFFER: usize = 16 * 1024;

/// A lobby client after its `WELCOME`.
pub struct Conn {
    pub reader: BufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
    /// The line being read; kept across a cancelled read, so no byte is lost.
    partial: Vec<u8>,
}

/// Why a connect did not give a session.
pub fn is_server_full(error: &io::Error) -> bool {
    error.to_string().starts_with("ERR server-full")
}

impl Conn {
    /// Connects (with `SO_RCVBUF` = `recv_buffer` first, if given) and reads
    /// `WELCOME`. A refusal (`ERR server-full …`) is an error whose text is
    /// that line.
    pub async fn connect(addr: SocketAddr, recv_buffer: Option<u32>) -> io::Result<Conn> {
        let socket = TcpSocket::new_v4()?;
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        let stream = tokio::time::timeout(IO_TIMEOUT, socket.connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        let mut conn = Conn::from_stream(stream);
        let first = conn.line_within(IO_TIMEOUT).await?;
        match first {
            Some(line) if line.starts_with(b"WELCOME ") => Ok(conn),
            Some(line) => Err(io::Error::other(
                String::from_utf8_lossy(&line).into_owned(),
            )),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before WELCOME",
            )),
        }
    }

    pub fn from_stream(stream: TcpStream) -> Conn {
        let (read_half, writer) = stream.into_split();
        Conn {
            reader: BufReader::with_capacity(READ_BUFFER, read_half),
            writer,
            partial: Vec::with_capacity(256),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes).await
    }

    /// The next line without its `\n` (or `\r\n`); `None` at end of input (a
    /// partial last line is dropped). Cancel-safe: bytes of a line read
    /// before a cancellation stay for the next call.
    pub async fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        // Bounded: each round either ends the line, ends the input, or
        // makes `read_until` wait for more bytes.
        loop {
            let n = self.reader.read_until(b'\n', &mut self.partial).await?;
            if n == 0 {
                self.partial.clear();
                return Ok(None);
            }
            if self.partial.last() == Some(&b'\n') {
                let mut line = std::mem::replace(&mut self.partial, Vec::with_capacity(256));
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
        }
    }

    /// [`Conn::next_line`] within `limit` (a `TimedOut` error after it).
    pub async fn line_within(&mut self, limit: Duration) -> io::Result<Option<Vec<u8>>> {
        tokio::time::timeout(limit, self.next_line())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no line in time"))?
    }

    /// [`Conn::next_line`] before `deadline` (a `TimedOut` error after it).
    pub async fn line_before(&mut self, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        self.line_within(deadline.saturating_duration_since(Instant::now()))
            .await
    }

    /// Reads until a line starting with `prefix` (returned), skipping others,
    /// all within [`IO_TIMEOUT`].
    pub async fn expect(&mut self, prefix: &str) -> io::Result<String> {
        let deadline = Instant::now() + IO_TIMEOUT;
        // Bounded by the deadline.
        loop {
            match self.line_before(deadline).await {
                Ok(Some(line)) if line.starts_with(prefix.as_bytes()) => {
                    return Ok(String::from_utf8_lossy(&line).into_owned());
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("closed while waiting for {prefix:?}"),
                    ));
                }
                Err(error) if error.kind() == io::ErrorKind::TimedOut => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no {prefix:?} line within {IO_TIMEOUT:?}"),
                    ));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Reads and drops everything until the server closes, within `limit`
    /// and `max_bytes`: `Ok(true)` for a clean end of input, `Ok(false)` for
    /// a reset.
    pub async fn read_to_close(&mut self, limit: Duration, max_bytes: usize) -> io::Result<bool> {
        let deadline = Instant::now() + limit;
        let mut total = 0usize;
        // Bounded by the deadline and the byte count.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let read = tokio::time::timeout(left, self.reader.fill_buf()).await;
            let n = match read {
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("still open after {limit:?} ({total} bytes read)"),
                    ));
                }
                Ok(Ok(buf)) => buf.len(),
                Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionReset => {
                    return Ok(false);
                }
                Ok(Err(error)) => return Err(error),
            };
            if n == 0 {
                return Ok(true);
            }
            self.reader.consume(n);
            total += n;
            if total > max_bytes {
                return Err(io::Error::other(format!("still open after {total} bytes")));
            }
        }
    }
}

/// Waits until `flag` is true: `false` if its sender is gone first.
pub async fn until_set(flag: &mut watch::Receiver<bool>) -> bool {
    flag.wait_for(|set| *set).await.is_ok()
}

/// The words of a line (split on single spaces), for matching.
pub fn words(line: &[u8]) -> Vec<&[u8]> {
    line.split(|&b| b == b' ').collect()
}

/// A cheap hash step: FNV-1a over `bytes`, folded into `state`.
pub fn fold_hash(state: u64, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (state ^ h)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(17)
}

/// A small deterministic generator (xorshift64*) for fault contents.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}
