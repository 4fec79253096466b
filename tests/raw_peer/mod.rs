//! Extra client helpers for tests that need control over the client socket
//! before it connects (source address, receive buffer), which the shared
//! harness's `Client::connect` does not offer.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Same bound as the shared harness: how long one expected line may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A line-oriented client over a socket configured before `connect`.
pub struct RawPeer {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    pub nick: String,
}

impl RawPeer {
    /// Connects to `addr` from the local address `from` (port chosen by the
    /// kernel), e.g. `127.0.0.2`, without reading anything.
    pub fn connect_from(from: IpAddr, addr: SocketAddr) -> RawPeer {
        let socket = new_socket(addr);
        socket
            .bind(&SockAddr::from(SocketAddr::new(from, 0)))
            .unwrap_or_else(|e| panic!("bind {from}: {e}"));
        Self::finish(socket, addr)
    }

    /// Connects to `addr` with `SO_RCVBUF` set to `bytes` before connecting,
    /// so the advertised window stays small; reads nothing.
    pub fn connect_with_rcvbuf(addr: SocketAddr, bytes: usize) -> RawPeer {
        let socket = new_socket(addr);
        socket
            .set_recv_buffer_size(bytes)
            .unwrap_or_else(|e| panic!("SO_RCVBUF {bytes}: {e}"));
        Self::finish(socket, addr)
    }

    fn finish(socket: Socket, addr: SocketAddr) -> RawPeer {
        socket
            .connect_timeout(&SockAddr::from(addr), READ_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        RawPeer {
            stream,
            reader,
            nick: String::new(),
        }
    }

    /// Reads `WELCOME <id> guest<id>` and remembers the nick.
    #[track_caller]
    pub fn welcome(&mut self) -> u64 {
        let line = self.line();
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 3, "expected WELCOME, got {line:?}");
        assert_eq!(parts[0], "WELCOME", "expected WELCOME, got {line:?}");
        let id: u64 = parts[1].parse().expect("numeric id");
        assert!(id > 0);
        assert_eq!(parts[2], format!("guest{id}"));
        self.nick = parts[2].to_owned();
        id
    }

    /// Reads the welcome, then takes `nick`.
    #[track_caller]
    pub fn welcome_as(&mut self, nick: &str) {
        self.welcome();
        let old = self.nick.clone();
        self.send(&format!("/nick {nick}"));
        self.expect(&format!("NICK {old} {nick}"));
        self.nick = nick.to_owned();
    }

    pub fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to server");
    }

    /// The next line without its `\n`; panics on timeout or EOF.
    #[track_caller]
    pub fn line(&mut self) -> String {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => panic!("connection closed while waiting for a line"),
            Ok(_) => {}
            Err(e) => panic!("no line within {READ_TIMEOUT:?}: {e} (partial {buf:?})"),
        }
        assert_eq!(buf.pop(), Some(b'\n'), "line must end with \\n: {buf:?}");
        String::from_utf8(buf).expect("server lines are UTF-8")
    }

    #[track_caller]
    pub fn expect(&mut self, expected: &str) {
        let line = self.line();
        assert_eq!(line, expected);
    }

    #[track_caller]
    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        let line = self.line();
        assert!(
            line.starts_with(prefix),
            "expected {prefix:?}…, got {line:?}"
        );
        line
    }

    /// Asserts the server closes the connection with nothing more to read.
    #[track_caller]
    pub fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => assert!(
                rest.is_empty(),
                "expected EOF, got {:?}",
                String::from_utf8_lossy(&rest)
            ),
            Err(e) => panic!("expected EOF within {READ_TIMEOUT:?}: {e}"),
        }
    }

    /// Reads and discards whatever is left until the connection ends, which
    /// must happen within `within` and `max_bytes`. Returns the byte count.
    /// A reset counts as an end (the server may close with data unread).
    #[track_caller]
    pub fn drain_to_end(&mut self, within: Duration, max_bytes: usize) -> usize {
        let deadline = Instant::now() + within;
        let mut total = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            assert!(
                Instant::now() < deadline,
                "connection still open after {within:?} ({total} bytes read)"
            );
            assert!(
                total <= max_bytes,
                "connection still open after {total} bytes"
            );
            match self.reader.read(&mut buf) {
                Ok(0) => return total,
                Ok(n) => total += n,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return total,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("connection neither closed nor readable: {e}"),
            }
        }
    }
}

fn new_socket(addr: SocketAddr) -> Socket {
    Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .expect("create a TCP socket")
}
