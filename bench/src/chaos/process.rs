//! The server under test: started from a given binary on loopback port 0
//! with the chaos run's flags, its addresses read from the `listening on`
//! lines it logs, killed by its PID (through its `Child`) when dropped.
//!
//! [`LoggedChild`] and [`kill_with_parent`] serve the bench's servers too
//! (`bench/src/server.rs`); this module depends on nothing outside `chaos/`,
//! as `tests/chaos.rs` compiles it alone.

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// Lines of the server's log kept (the rest is drained and dropped).
const LOG_LINES: usize = 20_000;

/// A running `switchboard` serving text over TCP and UDP.
pub struct ServerProcess {
    process: LoggedChild,
    pub pid: u32,
    /// The text lobby's TCP address.
    pub tcp: SocketAddr,
    /// The text lobby's UDP address.
    pub udp: SocketAddr,
}

/// A child process whose stderr a thread keeps draining into a log (its
/// first lines, as many as asked), killed by its PID (through its `Child`)
/// when dropped.
pub struct LoggedChild {
    child: Child,
    pub pid: u32,
    log: Arc<Mutex<Vec<String>>>,
}

impl LoggedChild {
    /// Starts `command` with its stderr piped; every line it logs is shown
    /// to `seen`, then kept if fewer than `keep` are.
    ///
    /// # Errors
    /// When the process cannot start.
    pub fn spawn(
        command: &mut Command,
        keep: usize,
        mut seen: impl FnMut(&str) + Send + 'static,
    ) -> io::Result<LoggedChild> {
        let mut child = command.stderr(Stdio::piped()).spawn().map_err(|e| {
            let program = Path::new(command.get_program()).display().to_string();
            io::Error::new(e.kind(), format!("cannot start {program}: {e}"))
        })?;
        let pid = child.id();
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| io::Error::other("stderr not piped"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                seen(&line);
                let mut log = writer.lock().unwrap_or_else(|e| e.into_inner());
                if log.len() < keep {
                    log.push(line);
                }
            }
        });
        Ok(LoggedChild { child, pid, log })
    }

    /// Everything logged so far (the first lines kept).
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for LoggedChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Has the kernel kill the child `command` starts should this process die
/// without running its destructors.
pub fn kill_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe; it only sets the child's
    // parent-death signal.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Whether `binary --help` mentions `flag`.
pub fn supports_flag(binary: &Path, flag: &str) -> bool {
    Command::new(binary)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).contains(flag))
        .unwrap_or(false)
}

impl ServerProcess {
    /// Starts `binary` with `--bind 127.0.0.1:0 --udp-bind 127.0.0.1:0` and
    /// `args`, `RUST_LOG=info`, and waits (bounded) for both listeners.
    ///
    /// # Errors
    /// When the process cannot start or does not log both addresses in 20 s.
    pub fn start(binary: &Path, args: &[String]) -> io::Result<ServerProcess> {
        let mut command = Command::new(binary);
        command
            .args(["--bind", "127.0.0.1:0", "--udp-bind", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // The server dies with this process.
        kill_with_parent(&mut command);
        let (addr_tx, addr_rx) = mpsc::channel::<(String, SocketAddr)>();
        let process = LoggedChild::spawn(&mut command, LOG_LINES, move |line| {
            if let Some(rest) = line.split("listening on ").nth(1)
                && let Some((addr, label)) = rest.split_once(' ')
                && let Ok(addr) = addr.parse::<SocketAddr>()
            {
                let _ = addr_tx.send((label.to_owned(), addr));
            }
        })?;
        let mut server = ServerProcess {
            pid: process.pid,
            process,
            tcp: SocketAddr::from(([127, 0, 0, 1], 0)),
            udp: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let (mut tcp, mut udp) = (None, None);
        while tcp.is_none() || udp.is_none() {
            match addr_rx.recv_timeout(Duration::from_secs(20)) {
                Ok((label, addr)) if label == "(text)" => tcp = Some(addr),
                Ok((label, addr)) if label == "(udp)" => udp = Some(addr),
                Ok(_) => {}
                Err(_) => {
                    return Err(io::Error::other(format!(
                        "{} did not log both listeners: {:?}",
                        binary.display(),
                        server.log_lines()
                    )));
                }
            }
        }
        server.tcp = tcp.unwrap_or(server.tcp);
        server.udp = udp.unwrap_or(server.udp);
        Ok(server)
    }

    /// Everything logged so far (the first [`LOG_LINES`] lines).
    pub fn log_lines(&self) -> Vec<String> {
        self.process.log_lines()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.process.alive()
    }
}

/// `VmRSS` of `pid` in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS"))
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}
