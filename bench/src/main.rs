//! `switchboard-bench`: measures switchboard against a plain tokio server.
//!
//! ```text
//! switchboard-bench SCENARIO [options] --target switchboard|baseline|both --runs N [--json]
//!                   [--threads N] [--server-cpus LIST] [--client-cpus LIST]
//! ```
//!
//! Every run starts a fresh server from `target/release` (rebuilding it first
//! when it is missing or older than its sources), drives it over loopback
//! from this process (or, for `idle`, from child generator processes), and
//! kills it afterwards. With `--target both` the targets alternate run by run
//! and the report gives per-target medians and switchboard/baseline ratios.

mod affinity;
mod chaos;
mod net;
mod procfs;
mod progress;
mod report;
mod scenarios;
mod server;
mod stats;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use affinity::Pinning;
use report::{Outcome, Report, RunRecord};
use scenarios::Scenario;
use server::{Binaries, ServerProc, Target};

/// Errors end a run (the report says why), never the whole bench silently.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Load scenarios for switchboard and a tokio baseline, over loopback.
#[derive(Debug, Parser)]
#[command(about, version)]
struct Cli {
    #[command(subcommand)]
    scenario: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Raw echo: C connections, each with W messages of S bytes in flight
    Echo(scenarios::echo::EchoArgs),
    /// Lobby chat echo: C clients alone in their own rooms, W lines in flight each
    LobbyEcho(scenarios::lobby_echo::LobbyEchoArgs),
    /// One room of M members, K of them sending: deliveries/s, order, loss
    Fanout(scenarios::fanout::FanoutArgs),
    /// `fanout` over WebSocket (JSON lobby): M members, K senders
    WsFanout(scenarios::ws_fanout::WsFanoutArgs),
    /// `fanout` with the room split over cluster nodes sharing a Redis
    ClusterFanout(scenarios::cluster_fanout::ClusterFanoutArgs),
    /// C idle connections: server memory per connection, all held
    Idle(scenarios::idle::IdleArgs),
    /// Connect, join, close (half reset) N times: cycles/s and leaks
    Churn(scenarios::churn::ChurnArgs),
    /// Non-reading members in a flooded room: bounded memory, slow-consumer drops
    Slow(scenarios::slow::SlowArgs),
    /// Members chatting while faulty peers and UDP sources misbehave: every promise checked
    Chaos(scenarios::chaos::ChaosArgs),
    /// (internal) one generator process of `idle --procs P`
    #[command(hide = true)]
    IdleWorker(scenarios::idle::WorkerArgs),
}

/// Which servers to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetChoice {
    Switchboard,
    Baseline,
    Both,
}

/// Options every scenario takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Which server(s) to measure; `both` alternates them run by run
    #[arg(long, value_enum, default_value_t = TargetChoice::Both)]
    pub target: TargetChoice,
    /// Runs per target
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub runs: u32,
    /// Print one JSON document instead of the table
    #[arg(long)]
    pub json: bool,
    /// Worker threads of the generator's tokio runtime (1 or 2 on this machine)
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub client_threads: u32,
    /// Never rebuild the servers, even when they look older than their sources
    #[arg(long)]
    pub no_build: bool,
    /// No progress line on stderr
    #[arg(long)]
    pub quiet: bool,
    /// Pass `--threads N` to every server started (default: pass nothing)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// CPUs the server may run on, e.g. 0-7, 8-15 or 0,2,4-6 (default: all)
    #[arg(long, value_name = "LIST")]
    pub server_cpus: Option<String>,
    /// CPUs this generator (all its threads and processes) may run on (default: all)
    #[arg(long, value_name = "LIST")]
    pub client_cpus: Option<String>,
}

impl Common {
    /// The server flags these options add: `--threads N` when given.
    fn server_args(&self) -> Vec<String> {
        self.threads
            .map(|n| vec!["--threads".to_owned(), n.to_string()])
            .unwrap_or_default()
    }
}

/// What a scenario's run is given besides its server.
pub struct RunCtx {
    pub client_threads: usize,
    pub label: String,
    pub quiet: bool,
}

impl RunCtx {
    /// The generator's runtime: multi-threaded with `--client-threads` workers.
    pub fn runtime(&self) -> BenchResult<tokio::runtime::Runtime> {
        Ok(tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.client_threads)
            .enable_all()
            .build()?)
    }
}

fn main() -> ExitCode {
    procfs::raise_fd_limit();
    let cli = Cli::parse();
    let scenario: Box<dyn Scenario> = match cli.scenario {
        Command::Echo(args) => Box::new(args),
        Command::LobbyEcho(args) => Box::new(args),
        Command::Fanout(args) => Box::new(args),
        Command::WsFanout(args) => Box::new(args),
        Command::ClusterFanout(args) => Box::new(args),
        Command::Idle(args) => Box::new(args),
        Command::Churn(args) => Box::new(args),
        Command::Slow(args) => Box::new(args),
        Command::IdleWorker(args) => return scenarios::idle::worker_main(args),
        Command::Chaos(args) => return scenarios::chaos::main(args),
    };
    let common = scenario.common();
    let pinning =
        match Pinning::from_options(common.server_cpus.as_deref(), common.client_cpus.as_deref()) {
            Ok(pinning) => pinning,
            Err(error) => {
                eprintln!("switchboard-bench: {error}");
                return ExitCode::from(2);
            }
        };
    match run_scenario(scenario.as_ref(), &pinning) {
        Ok(report) => {
            if common.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report.to_json()).unwrap_or_default()
                );
            } else {
                print!("{}", report.to_table());
            }
            if report.all_checks_pass() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(error) => {
            eprintln!("switchboard-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_scenario(scenario: &dyn Scenario, pinning: &Pinning) -> BenchResult<Report> {
    let common = scenario.common().clone();
    let targets: Vec<Target> = match common.target {
        TargetChoice::Switchboard => vec![Target::Switchboard],
        TargetChoice::Baseline => vec![Target::Baseline],
        TargetChoice::Both => vec![Target::Switchboard, Target::Baseline],
    };
    let binaries = Binaries::locate();
    if !common.no_build {
        binaries.ensure_built(&targets, scenario.service())?;
    }
    // After the build (cargo runs on every CPU), before any other thread or
    // runtime exists: the generator's threads all inherit this.
    pinning.pin_generator()?;
    let mut runs = Vec::new();
    for run in 1..=common.runs as usize {
        for &target in &targets {
            let label = format!(
                "{} {} run {run}/{}",
                scenario.name(),
                target.name(),
                common.runs
            );
            let ctx = RunCtx {
                client_threads: common.client_threads as usize,
                label: label.clone(),
                quiet: common.quiet,
            };
            if !common.quiet {
                eprintln!("{label} …");
            }
            let mut extra = scenario.server_args(target);
            extra.extend(common.server_args());
            let mut server = ServerProc::launch(
                &binaries,
                target,
                scenario.service(),
                &extra,
                pinning.server_cpus(),
            )?;
            // What the kernel says the server may run on, before the load.
            let server_allowed = affinity::allowed_list(server.pid);
            let overflows_before = procfs::listen_overflows();
            let result = scenario.run(&mut server, &ctx);
            let overflows = procfs::listen_overflows().saturating_sub(overflows_before);
            let alive = server.alive();
            let mut outcome = result.unwrap_or_else(|error| {
                let mut failed = Outcome::default();
                failed.check("run completed", false, error.to_string());
                failed
            });
            if let Some(cpus) = pinning.server_cpus() {
                let allowed = server_allowed.unwrap_or_else(|| "?".to_owned());
                outcome.check(
                    "server on its CPUs",
                    allowed == cpus.to_string(),
                    format!("wanted {cpus}; the server's Cpus_allowed_list: {allowed}"),
                );
            }
            outcome.fig("listen queue overflows", "count", overflows as f64);
            if !alive {
                outcome.check(
                    "server survived",
                    false,
                    "the server process exited during the run",
                );
            }
            let server_log: Vec<String> = server.warnings().into_iter().take(20).collect();
            drop(server);
            runs.push(RunRecord {
                target,
                run,
                outcome,
                server_log,
            });
            // Let the kernel retire the last run's sockets before the next one.
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let mut description = scenario.describe();
    let mut params = scenario.params();
    let mut placement = Vec::new();
    if let Some(threads) = common.threads {
        placement.push(format!("server --threads {threads}"));
    }
    if let Some(cpus) = &pinning.server {
        placement.push(format!("server on CPUs {cpus}"));
    }
    if let Some(cpus) = &pinning.client {
        placement.push(format!("generator on CPUs {cpus}"));
    }
    if !placement.is_empty() {
        description.push_str(&format!("; {}", placement.join(", ")));
    }
    if let serde_json::Value::Object(map) = &mut params {
        map.insert("threads".to_owned(), serde_json::json!(common.threads));
        let list = |cpus: &Option<affinity::CpuSet>| cpus.as_ref().map(ToString::to_string);
        map.insert(
            "server_cpus".to_owned(),
            serde_json::json!(list(&pinning.server)),
        );
        map.insert(
            "client_cpus".to_owned(),
            serde_json::json!(list(&pinning.client)),
        );
    }
    Ok(Report {
        scenario: scenario.name().to_owned(),
        description,
        params,
        targets,
        runs,
    })
}
