//! A real `redis-server` for the cluster tests: started on a unix socket in
//! a temporary directory with persistence off, stopped by its PID.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long Redis may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(10);

static INSTANCES: AtomicU64 = AtomicU64::new(0);

/// The `redis-server` to run, if installed.
fn redis_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

/// A `redis-server` of this test's own.
pub struct Redis {
    child: Option<Child>,
    binary: PathBuf,
    dir: PathBuf,
    pub socket: PathBuf,
}

impl Redis {
    /// Starts one, or answers `None` (printing why) when `redis-server` is
    /// not installed and `CI` is not `true`; under CI a missing
    /// `redis-server` fails the test.
    pub fn start() -> Option<Redis> {
        let Some(binary) = redis_server() else {
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("redis-server is not installed (.ci/run installs it)");
            }
            eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
            return None;
        };
        let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sb-redis-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the redis directory");
        let socket = dir.join("redis.sock");
        let mut redis = Redis {
            child: None,
            binary,
            dir,
            socket,
        };
        redis.spawn();
        Some(redis)
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let child = Command::new(&self.binary)
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&self.socket)
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while !ping(&self.socket) {
            assert!(
                Instant::now() < deadline,
                "redis-server never answered PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What `--cluster` is given: the socket path.
    pub fn url(&self) -> String {
        self.socket.display().to_string()
    }

    /// Kills Redis (SIGKILL) and starts it again, empty, on the same socket.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kills Redis (SIGKILL); [`Redis::start_again`] brings it back, empty.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Sends Redis `signal` (e.g. `SIGSTOP` to stall it, `SIGCONT` after).
    pub fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("redis is running");
        // SAFETY: kill(2) on the pid of a child this test started.
        let pid = child.id() as libc::pid_t;
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "signal redis");
    }

    /// Starts Redis again after [`Redis::stop`], on the same socket.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether Redis answers `PING` on `socket`.
fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
