//! Shared test harness: start the real `switchboard` binary on port 0 and
//! talk to it over real sockets, synchronising only on reads with timeouts.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// How long any single expected line may take to arrive. Generous, because
/// the suite must pass on a busy 2-core machine; a passing test never waits it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `switchboard` process on a loopback port chosen by the kernel.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// Every stderr line the server has logged so far.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Drains stderr until the process exits.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts the lobby binary with `--bind 127.0.0.1:0` plus `args`, and waits
    /// for its `listening on ADDR (text)` line.
    pub fn start(args: &[&str]) -> Server {
        Self::start_binary(env!("CARGO_BIN_EXE_switchboard"), args)
    }

    /// Starts any binary that logs `listening on ADDR` (the lobby or an
    /// example), with `--bind 127.0.0.1:0` plus `args`.
    pub fn start_binary(path: &str, args: &[&str]) -> Server {
        Self::start_logging(path, args, "info")
    }

    /// Starts `path` like [`Server::start_binary`], logging at `level`
    /// (`RUST_LOG`), e.g. `debug` to see every session's end.
    pub fn start_logging(path: &str, args: &[&str], level: &str) -> Server {
        let mut child = Command::new(path)
            .arg("--bind")
            .arg("127.0.0.1:0")
            .args(args)
            .env("RUST_LOG", level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {path}: {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let log_writer = log.clone();
        // Drain stderr for the whole run so a chatty server never blocks on it.
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    if let Ok(addr) = addr.parse::<SocketAddr>() {
                        let _ = addr_tx.send(addr);
                    }
                }
                log_writer.lock().unwrap().push(line);
            }
        });
        let addr = match addr_rx.recv_timeout(READ_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "{path} never logged `listening on`: {:?}",
                    log.lock().unwrap()
                );
            }
        };
        Server {
            child,
            addr,
            log,
            reader: Some(reader),
        }
    }

    /// Starts the example `name` (built first if needed), with
    /// `--bind 127.0.0.1:0` plus `args`.
    pub fn start_example(name: &str, args: &[&str]) -> Server {
        let path = example_path(name);
        let path = path.to_str().expect("target path is UTF-8");
        Self::start_binary(path, args)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Connects a client and reads its `WELCOME`.
    pub fn client(&self) -> Client {
        let mut client = Client::connect(self.addr);
        client.welcome();
        client
    }

    /// Connects a client, reads its `WELCOME`, and sets its nick.
    pub fn named(&self, nick: &str) -> Client {
        let mut client = Client::connect(self.addr);
        client.welcome_as(nick);
        client
    }

    /// Two named clients in `room`, `first` joining before `second`, with
    /// every announcement of their arrival consumed.
    pub fn pair(&self, first: &str, second: &str, room: &str) -> (Client, Client) {
        let mut first = self.named(first);
        let mut second = self.named(second);
        first.join(room);
        second.join_with(room, &mut first);
        (first, second)
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, signal: libc::c_int) {
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}) failed", self.child.id());
    }

    /// Waits (bounded) for the server to exit and returns its status.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address of the listener that logged `listening on ADDR (service)`,
    /// waiting (bounded) for the line: listeners start one after another.
    pub fn listener_addr(&self, service: &str) -> SocketAddr {
        let wanted = format!("({service})");
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            let found = self.log.lock().unwrap().iter().find_map(|line| {
                let rest = line.split("listening on ").nth(1)?;
                let (addr, label) = rest.split_once(' ')?;
                (label == wanted).then(|| addr.parse().ok()).flatten()
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(Instant::now() < deadline, "no `{wanted}` listener logged");
            // Waiting for the server's own log line, bounded by the deadline.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every line logged, once the process has exited (its stderr is then
    /// at its end, so the reader thread finishes).
    pub fn whole_log(&mut self) -> Vec<String> {
        assert!(self.child.try_wait().expect("try_wait").is_some(), "exited");
        if let Some(reader) = self.reader.take() {
            reader.join().expect("stderr reader");
        }
        self.log.lock().unwrap().clone()
    }

    /// Whether any logged line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(needle))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The resident memory of process `pid`, in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS line");
    kib * 1024
}

/// `target/<profile>/examples/<name>`, next to this test's `deps` directory.
///
/// A plain `cargo test` builds the examples before running tests, but
/// `cargo test --test examples` does not, so the examples are (re)built here
/// once per run; when they are up to date that is a no-op.
pub fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps");
    static BUILD: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILD.get_or_init(|| {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "--examples"]);
        cargo.args([
            "--manifest-path",
            concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
        ]);
        if profile_dir.ends_with("release") {
            cargo.arg("--release");
        }
        match cargo.output() {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
            Err(error) => Err(error.to_string()),
        }
    });
    if let Err(error) = built {
        panic!("cannot build the examples: {error}");
    }
    profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

static PROBES: AtomicU64 = AtomicU64::new(1);

/// A line-oriented client over a real TCP socket.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
    pub id: u64,
    pub nick: String,
}

impl Client {
    /// Connects without reading anything.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Self::from_stream(stream)
    }

    /// Connects to `addr` from the local address `from` (port chosen by the
    /// kernel), e.g. `127.0.0.2`, without reading anything.
    pub fn connect_from(from: IpAddr, addr: SocketAddr) -> Client {
        let socket = new_socket(addr);
        socket
            .bind(&SockAddr::from(SocketAddr::new(from, 0)))
            .unwrap_or_else(|e| panic!("bind {from}: {e}"));
        Self::connect_socket(socket, addr)
    }

    /// Connects to `addr` with `SO_RCVBUF` set to `bytes` before connecting,
    /// so the advertised window stays small; reads nothing.
    pub fn connect_with_rcvbuf(addr: SocketAddr, bytes: usize) -> Client {
        let socket = new_socket(addr);
        socket
            .set_recv_buffer_size(bytes)
            .unwrap_or_else(|e| panic!("SO_RCVBUF {bytes}: {e}"));
        Self::connect_socket(socket, addr)
    }

    /// Connects a socket configured beforehand.
    fn connect_socket(socket: Socket, addr: SocketAddr) -> Client {
        socket
            .connect_timeout(&SockAddr::from(addr), READ_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Self::from_stream(socket.into())
    }

    fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client {
            stream,
            reader,
            id: 0,
            nick: String::new(),
        }
    }

    /// Reads `WELCOME <id> <nick>` and remembers both.
    #[track_caller]
    pub fn welcome(&mut self) {
        let line = self.line();
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 3, "expected WELCOME, got {line:?}");
        assert_eq!(parts[0], "WELCOME", "expected WELCOME, got {line:?}");
        self.id = parts[1].parse().expect("numeric id");
        assert!(self.id > 0);
        assert_eq!(parts[2], format!("guest{}", self.id));
        self.nick = parts[2].to_owned();
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

    /// Sends `line` followed by `\n`.
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
    }

    /// The next line, without its `\n`; panics on timeout or EOF.
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

    /// Asserts the next line is exactly `expected`.
    #[track_caller]
    pub fn expect(&mut self, expected: &str) {
        let line = self.line();
        assert_eq!(line, expected);
    }

    /// Asserts the next line starts with `prefix` and returns it.
    #[track_caller]
    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        let line = self.line();
        assert!(
            line.starts_with(prefix),
            "expected {prefix:?}…, got {line:?}"
        );
        line
    }

    /// Asserts the next line is `ERR <code> …`.
    #[track_caller]
    pub fn expect_err(&mut self, code: &str) {
        self.expect_prefix(&format!("ERR {code} "));
    }

    /// Proves nothing else is pending: a `/ping` round trip must come back as
    /// the very next line.
    #[track_caller]
    pub fn expect_nothing_pending(&mut self) {
        let token = format!("probe{}", PROBES.fetch_add(1, Ordering::Relaxed));
        self.send(&format!("/ping {token}"));
        self.expect(&format!("PONG {token}"));
    }

    /// Asserts the server closes the connection (after any remaining bytes,
    /// which must be none).
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

    /// Joins `room` and consumes this client's own `JOIN` and `WHO`.
    pub fn join(&mut self, room: &str) -> String {
        self.send(&format!("/join {room}"));
        self.expect(&format!("JOIN {room} {}", self.nick));
        self.expect_prefix(&format!("WHO {room}"))
    }

    /// Joins `room`, where this client must then be the only member:
    /// `JOIN` and exactly `WHO <room> <nick>`.
    #[track_caller]
    pub fn join_alone(&mut self, room: &str) {
        let who = self.join(room);
        assert_eq!(who, format!("WHO {room} {}", self.nick));
    }

    /// Joins `room`, where `first` is the only member so far: reads this
    /// client's `JOIN` and `WHO <room> <first> <self>`, and `first`'s `JOIN`.
    #[track_caller]
    pub fn join_with(&mut self, room: &str, first: &mut Client) {
        self.send(&format!("/join {room}"));
        self.expect(&format!("JOIN {room} {}", self.nick));
        self.expect(&format!("WHO {room} {} {}", first.nick, self.nick));
        first.expect(&format!("JOIN {room} {}", self.nick));
    }

    /// Half-closes: no more writes from this side.
    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).unwrap();
    }

    /// Closes abortively (SO_LINGER 0), so the server sees a reset.
    pub fn reset(self) {
        let socket = socket2::SockRef::from(&self.stream);
        socket.set_linger(Some(Duration::ZERO)).unwrap();
        drop(self.reader);
        drop(self.stream);
    }
}

fn new_socket(addr: SocketAddr) -> Socket {
    Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .expect("create a TCP socket")
}

/// Reads `stream` byte by byte through the first `end` (a status line's
/// `\r\n`, a head's `\r\n\r\n`), so nothing after it is consumed.
///
/// # Panics
/// If the stream ends, fails or times out first.
#[allow(dead_code)] // not every test binary reads raw HTTP
pub fn read_through(stream: &mut impl Read, end: &[u8]) -> Vec<u8> {
    let mut read = Vec::new();
    let mut byte = [0u8; 1];
    while !read.ends_with(end) {
        match stream.read(&mut byte) {
            Ok(1) => read.push(byte[0]),
            other => panic!("no {end:?} yet: {other:?} after {read:?}"),
        }
    }
    read
}
