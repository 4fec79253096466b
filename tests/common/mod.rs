//! Shared test harness: start the real `switchboard` binary on port 0 and
//! talk to it over real sockets, synchronising only on reads with timeouts.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any single expected line may take to arrive. Generous, because
/// the suite must pass on a busy 2-core machine; a passing test never waits it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `switchboard` process on a loopback port chosen by the kernel.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// Every stderr line the server has logged so far.
    pub log: Arc<Mutex<Vec<String>>>,
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
        let mut child = Command::new(path)
            .arg("--bind")
            .arg("127.0.0.1:0")
            .args(args)
            .env("RUST_LOG", "info")
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
        std::thread::spawn(move || {
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
        Server { child, addr, log }
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
        let mut client = self.client();
        let old = client.nick.clone();
        client.send(&format!("/nick {nick}"));
        client.expect(&format!("NICK {old} {nick}"));
        client.nick = nick.to_owned();
        client
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

    /// Sends `line` followed by `\n`.
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
    }

    /// The next line, without its `\n`; panics on timeout or EOF.
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

    /// Joins `room` and consumes this client's own `JOIN` and `WHO`.
    pub fn join(&mut self, room: &str) -> String {
        self.send(&format!("/join {room}"));
        self.expect(&format!("JOIN {room} {}", self.nick));
        self.expect_prefix(&format!("WHO {room}"))
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
