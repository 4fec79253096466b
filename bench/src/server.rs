//! Finding, building and launching the servers under test.
//!
//! Every server is started fresh for each run with `--bind 127.0.0.1:0`; its
//! address comes from the `listening on ADDR` line it logs to stderr, which a
//! thread keeps draining for the whole run. A [`ServerProc`] kills its process
//! (by PID, through its `Child`) when dropped, so every exit path — an error,
//! a panic — stops what the bench started.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use crate::BenchResult;
use crate::affinity::{self, CpuSet};
use crate::chaos::process::LoggedChild;
/// Has the kernel kill the child `command` starts should this bench die
/// without running its destructors (the chaos run's, shared).
pub use crate::chaos::process::kill_with_parent;

/// Which implementation a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Switchboard,
    Baseline,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Switchboard => "switchboard",
            Target::Baseline => "baseline",
        }
    }
}

/// Which server program a scenario talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Raw echo: switchboard's `echo` example or `tokio-baseline --mode echo`.
    Echo,
    /// The text lobby: `switchboard` or `tokio-baseline --mode lobby`.
    Lobby,
    /// The JSON lobby over WebSocket: `switchboard --http-bind` (its `/ws`)
    /// or `tokio-baseline --mode ws` (tokio-tungstenite).
    WsLobby,
}

/// Where the binaries live and how to rebuild them.
pub struct Binaries {
    pub workspace: PathBuf,
    pub release_dir: PathBuf,
}

impl Binaries {
    pub fn locate() -> Self {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        // Prefer the directory this bench runs from (`target/release` under
        // `cargo run --release`), so a custom target dir works too.
        let release_dir = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
            .filter(|dir| dir.ends_with("release"))
            .unwrap_or_else(|| workspace.join("target").join("release"));
        Binaries {
            workspace,
            release_dir,
        }
    }

    pub fn path(&self, target: Target, service: Service) -> PathBuf {
        match (target, service) {
            (Target::Switchboard, Service::Lobby | Service::WsLobby) => {
                self.release_dir.join("switchboard")
            }
            (Target::Switchboard, Service::Echo) => self.release_dir.join("examples").join("echo"),
            (Target::Baseline, _) => self.release_dir.join("tokio-baseline"),
        }
    }

    /// Rebuilds whichever binaries are missing or older than their sources.
    /// A failed build is fatal only when there is no binary at all: the lead
    /// may be mid-edit, and the last good binary is still worth measuring.
    pub fn ensure_built(&self, targets: &[Target], service: Service) -> BenchResult<()> {
        for &target in targets {
            let binary = self.path(target, service);
            let sources: Vec<PathBuf> = match target {
                Target::Switchboard => vec![
                    self.workspace.join("src"),
                    self.workspace.join("examples").join("echo.rs"),
                    self.workspace.join("Cargo.toml"),
                    self.workspace.join("Cargo.lock"),
                ],
                Target::Baseline => vec![
                    self.workspace.join("bench").join("src").join("bin"),
                    self.workspace.join("bench").join("Cargo.toml"),
                ],
            };
            let newest_source = sources.iter().filter_map(|p| newest_mtime(p)).max();
            let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok();
            let stale = match (built, newest_source) {
                (None, _) => true,
                (Some(built), Some(source)) => source > built,
                (Some(_), None) => false,
            };
            if !stale {
                continue;
            }
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let args: &[&str] = match target {
                Target::Switchboard => &[
                    "build",
                    "--release",
                    "--bin",
                    "switchboard",
                    "--example",
                    "echo",
                    "-p",
                    "switchboard",
                ],
                Target::Baseline => &[
                    "build",
                    "--release",
                    "--bin",
                    "tokio-baseline",
                    "-p",
                    "switchboard-bench",
                ],
            };
            eprintln!(
                "{} is missing or older than its sources: {cargo} {}",
                binary.display(),
                args.join(" ")
            );
            let status = Command::new(&cargo)
                .args(args)
                .current_dir(&self.workspace)
                .stdin(Stdio::null())
                .status();
            let ok = matches!(status, Ok(s) if s.success());
            if !ok {
                if binary.exists() {
                    eprintln!("build failed; measuring the existing {}", binary.display());
                } else {
                    return Err(format!("cannot build {}", binary.display()).into());
                }
            }
        }
        Ok(())
    }
}

/// The newest modification time of a file, or of any file under a directory.
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return meta.modified().ok();
    }
    let mut newest = None;
    let mut stack = vec![path.to_path_buf()];
    let mut visited = 0;
    while let Some(dir) = stack.pop() {
        visited += 1;
        if visited > 10_000 {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if let Ok(modified) = meta.modified() {
                newest = newest.max(Some(modified));
            }
        }
    }
    newest
}

/// A running server, killed when dropped.
pub struct ServerProc {
    process: LoggedChild,
    pub pid: u32,
    pub addr: SocketAddr,
}

impl ServerProc {
    /// Starts `target`'s program for `service` with `extra` flags, on the
    /// CPUs `cpus` if given (set in the child before exec).
    pub fn launch(
        binaries: &Binaries,
        target: Target,
        service: Service,
        extra: &[String],
        cpus: Option<&CpuSet>,
    ) -> BenchResult<ServerProc> {
        let path = binaries.path(target, service);
        let mut command = Command::new(&path);
        command.arg("--bind").arg("127.0.0.1:0");
        match (target, service) {
            (Target::Switchboard, Service::Lobby | Service::WsLobby) => {
                if service == Service::WsLobby {
                    command.args(["--http-bind", "127.0.0.1:0"]);
                }
                command.args([
                    "--max-connections",
                    "20000",
                    "--room-capacity",
                    "20000",
                    "--idle-timeout",
                    "3600",
                    "--heartbeat",
                    "3600",
                ]);
            }
            (Target::Switchboard, Service::Echo) => {}
            (Target::Baseline, Service::Echo) => {
                command.args(["--mode", "echo"]);
            }
            (Target::Baseline, Service::Lobby) => {
                command.args(["--mode", "lobby"]);
            }
            (Target::Baseline, Service::WsLobby) => {
                command.args(["--mode", "ws"]);
            }
        }
        command.args(extra);
        // Per-session info logs would cost the server time; keep the
        // listener's own `listening on` line, which is logged at info.
        command
            .env(
                "RUST_LOG",
                "warn,switchboard::actors::listener=info,switchboard::actors::http_listener=info",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        kill_with_parent(&mut command);
        if let Some(cpus) = cpus {
            affinity::pin_child(&mut command, cpus);
        }
        let (addr_tx, addr_rx) = mpsc::channel();
        // The WebSocket lobby is measured on the HTTP (or `ws`) listener.
        let wanted = match service {
            Service::WsLobby => &["(http)", "(ws)"][..],
            Service::Echo | Service::Lobby => &[][..],
        };
        let process = LoggedChild::spawn(&mut command, 10_000, move |line| {
            if let Some(rest) = line.split("listening on ").nth(1)
                && let Some(addr) = rest.split_whitespace().next()
                && let Ok(addr) = addr.parse::<SocketAddr>()
                && (wanted.is_empty() || wanted.iter().any(|label| rest.ends_with(label)))
            {
                let _ = addr_tx.send(addr);
            }
        })?;
        let mut server = ServerProc {
            pid: process.pid,
            process,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        match addr_rx.recv_timeout(Duration::from_secs(15)) {
            Ok(addr) => server.addr = addr,
            Err(_) => {
                return Err(format!(
                    "{} never logged `listening on`: {:?}",
                    path.display(),
                    server.log_lines()
                )
                .into());
            }
        }
        Ok(server)
    }

    /// Everything the server logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.process.log_lines()
    }

    /// Lines the server logged at warn or error level (or anything else that
    /// is not the `listening on` line).
    pub fn warnings(&self) -> Vec<String> {
        self.log_lines()
            .into_iter()
            .filter(|line| !line.contains("listening on"))
            .collect()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.process.alive()
    }
}
