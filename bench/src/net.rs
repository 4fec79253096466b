//! Client sockets: spread over loopback source addresses, and read by lines.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// How long one connect or one expected line may take before it counts as failed.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections per loopback source address: well inside the ephemeral port
/// range of one address, so tens of thousands of sockets never run out.
pub const CONNS_PER_SOURCE: u64 = 500;

/// The source address of client socket number `index`: 127.0.0.2, 127.0.0.3, …
/// one per [`CONNS_PER_SOURCE`] sockets (always inside 127.0.0.0/8).
pub fn source_ip(index: u64) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(127, 0, 0, 2));
    let offset = (index / CONNS_PER_SOURCE) % 0x00ff_0000;
    Ipv4Addr::from(base + offset as u32)
}

/// Options of one client socket.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectOpts {
    /// Bind to this loopback source address first (port chosen at connect).
    pub source: Option<Ipv4Addr>,
    /// `SO_RCVBUF` before connecting (small = the window stays small).
    pub recv_buffer: Option<u32>,
}

impl ConnectOpts {
    /// The options of client socket number `index`: its [`source_ip`].
    pub fn from_index(index: u64) -> ConnectOpts {
        ConnectOpts {
            source: Some(source_ip(index)),
            ..ConnectOpts::default()
        }
    }
}

/// Connects to `addr` with `opts`, `TCP_NODELAY` on, within [`IO_TIMEOUT`].
pub async fn connect(addr: SocketAddr, opts: ConnectOpts) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = opts.recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(ip) = opts.source {
        // Pick the port at connect time (by the whole 4-tuple), not at bind.
        let one: libc::c_int = 1;
        // SAFETY: a valid socket fd and a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket.bind(SocketAddr::from((ip, 0)))?;
    }
    let stream = tokio::time::timeout(IO_TIMEOUT, socket.connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects with a few retries (a full accept backlog drops SYNs).
pub async fn connect_retry(addr: SocketAddr, opts: ConnectOpts) -> io::Result<TcpStream> {
    let mut last = None;
    for attempt in 0..3u64 {
        match connect(addr, opts).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
    }
    Err(last.unwrap_or_else(|| io::Error::other("connect failed")))
}

/// Makes the next close of `stream` a reset (`SO_LINGER` 0).
pub fn set_reset_on_close(stream: &TcpStream) -> io::Result<()> {
    socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO))
}

/// Reads one line (without its `\n`) into `line`, within `limit`.
/// `Ok(false)` at end of input.
pub async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    line: &mut Vec<u8>,
    limit: Duration,
) -> io::Result<bool> {
    line.clear();
    let n = tokio::time::timeout(limit, reader.read_until(b'\n', line))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no line in time"))??;
    if n == 0 || line.last() != Some(&b'\n') {
        return Ok(false);
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(true)
}

/// Reads lines until one starts with `prefix`, returning it as text; lines
/// before it are skipped (at most `max_skip`).
pub async fn expect_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    prefix: &str,
    max_skip: usize,
) -> io::Result<String> {
    let mut line = Vec::new();
    for _ in 0..=max_skip {
        if !read_line(reader, &mut line, IO_TIMEOUT).await? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed while waiting for {prefix}"),
            ));
        }
        if line.starts_with(prefix.as_bytes()) {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
    }
    Err(io::Error::other(format!(
        "no {prefix} line within {max_skip} lines"
    )))
}

/// Peeks at a socket without blocking: `Some(true)` open (nothing or data
/// waiting), `Some(false)` closed by the peer (EOF or error).
pub fn still_open(stream: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: a valid fd and a one-byte buffer; MSG_PEEK leaves the data queued.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n > 0 {
        return true;
    }
    if n == 0 {
        return false;
    }
    io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}
