//! `cluster-fanout`: `fanout`'s busy room with its members split over
//! cluster nodes (`--cluster`) sharing one Redis.
//!
//! Each run starts a fresh `redis-server` (unix socket in a temporary
//! directory, persistence off) and `--nodes` switchboard nodes; member `i`
//! connects to node `i % nodes`, so the senders are on every node too. The
//! same checks as `fanout` hold: every member receives every line, each
//! sender's lines in order. Besides the first node's CPU (the usual server
//! figures), the other nodes' and Redis's CPU per delivery and per line sent
//! are reported, and all of them together per delivery. With the baseline
//! target it runs the baseline's single-process lobby, as `fanout` does.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;

use super::Scenario;
use super::fanout::{FanoutArgs, TextMember};
use crate::progress::Progress;
use crate::report::Outcome;
use crate::server::{Binaries, ServerProc, Service, Target, kill_with_parent};
use crate::{BenchResult, Common, RunCtx};

#[derive(Debug, Clone, Args)]
pub struct ClusterFanoutArgs {
    /// Switchboard nodes the members are split over
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..=8))]
    pub nodes: u32,
    /// The redis-server program started for each run
    #[arg(long, default_value = "redis-server")]
    pub redis_server: String,
    #[command(flatten)]
    pub fanout: FanoutArgs,
    /// The Redis of the current run (started with the first node's flags).
    #[arg(skip)]
    redis: Arc<Mutex<Option<Redis>>>,
}

/// A `redis-server` of one run; killed (by PID) and its directory removed
/// when dropped.
#[derive(Debug)]
struct Redis {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Redis {
    fn start(program: &str) -> BenchResult<Redis> {
        let dir = std::env::temp_dir().join(format!("sb-bench-redis-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("redis.sock");
        let mut command = Command::new(program);
        command
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        kill_with_parent(&mut command);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e} (apt-get install redis-server)"))?;
        let redis = Redis { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis.socket.exists() {
            if Instant::now() > deadline {
                return Err("redis-server never opened its socket".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ClusterFanoutArgs {
    fn cluster_args(&self, socket: &std::path::Path, node: u32) -> Vec<String> {
        let mut args = self.fanout.server_args(Target::Switchboard);
        args.extend(
            self.fanout
                .common
                .threads
                .map_or_else(Vec::new, |n| vec!["--threads".to_owned(), n.to_string()]),
        );
        args.extend([
            "--cluster".to_owned(),
            socket.display().to_string(),
            "--node-name".to_owned(),
            format!("bench-{node}"),
        ]);
        args
    }
}

impl Scenario for ClusterFanoutArgs {
    fn name(&self) -> &'static str {
        "cluster-fanout"
    }

    fn describe(&self) -> String {
        format!(
            "{}; members split over {} cluster nodes sharing one redis-server",
            self.fanout.describe(),
            self.nodes
        )
    }

    fn service(&self) -> Service {
        Service::Lobby
    }

    fn server_args(&self, target: Target) -> Vec<String> {
        if target == Target::Baseline {
            return self.fanout.server_args(target);
        }
        // A fresh Redis for every run; the first node's flags name it.
        let mut slot = self.redis.lock().unwrap_or_else(|e| e.into_inner());
        *slot = None;
        match Redis::start(&self.redis_server) {
            Ok(redis) => {
                let mut args = self.cluster_args(&redis.socket, 1);
                // `--threads` is added by the bench for the first node.
                if let Some(at) = args.iter().position(|a| a == "--threads") {
                    args.drain(at..at + 2);
                }
                *slot = Some(redis);
                args
            }
            Err(error) => {
                eprintln!("cluster-fanout: {error}");
                vec!["--cluster".to_owned(), "/nonexistent/redis.sock".to_owned()]
            }
        }
    }

    fn params(&self) -> serde_json::Value {
        let mut params = self.fanout.params();
        if let serde_json::Value::Object(map) = &mut params {
            map.insert("nodes".to_owned(), self.nodes.into());
        }
        params
    }

    fn common(&self) -> &Common {
        &self.fanout.common
    }

    fn run(&self, server: &mut ServerProc, ctx: &RunCtx) -> BenchResult<Outcome> {
        if server_is_baseline(server) {
            return self.fanout.run(server, ctx);
        }
        let (socket, redis_pid) = {
            let slot = self.redis.lock().unwrap_or_else(|e| e.into_inner());
            let redis = slot.as_ref().ok_or("redis-server did not start")?;
            (redis.socket.clone(), redis.child.id())
        };
        let binaries = Binaries::locate();
        let mut nodes = Vec::new();
        for node in 2..=self.nodes {
            let args = self.cluster_args(&socket, node);
            nodes.push(ServerProc::launch(
                &binaries,
                Target::Switchboard,
                Service::Lobby,
                &args,
                None,
            )?);
        }
        let mut addrs = vec![server.addr];
        addrs.extend(nodes.iter().map(|node| node.addr));
        let mut others: Vec<(String, u32)> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (format!("node {}", i + 2), node.pid))
            .collect();
        others.push(("redis".to_owned(), redis_pid));
        let runtime = ctx.runtime()?;
        let (progress, _guard) = Progress::start(ctx.label.clone(), "deliveries", ctx.quiet);
        let outcome = runtime.block_on(
            self.fanout
                .run_async::<TextMember>(addrs, server.pid, others, progress),
        );
        drop(nodes);
        *self.redis.lock().unwrap_or_else(|e| e.into_inner()) = None;
        outcome
    }
}

/// Whether the run's server is the baseline (no cluster there).
fn server_is_baseline(server: &ServerProc) -> bool {
    std::fs::read_link(format!("/proc/{}/exe", server.pid))
        .is_ok_and(|exe| exe.to_string_lossy().contains("tokio-baseline"))
}
