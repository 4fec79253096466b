//! `chaos`: well-behaved members chat in rooms for a fixed time (60 s by
//! default) while faulty peers reset, half-close, never read, send garbage,
//! invalid UTF-8, over-long lines, floods and slow drips, and UDP sources on
//! many loopback addresses and ports poke the UDP lobby without ever
//! answering. Then every promise is checked (see `crate::chaos`) and a table
//! of faults injected and outcomes is printed; the exit status is 2 when a
//! check failed.
//!
//! Unlike the other scenarios it starts its own server (it needs
//! `--udp-bind` and short timers, which the shared launcher's fixed flags
//! would contradict), from `target/release`, and measures switchboard only:
//! the baseline serves no UDP and has none of these limits.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::chaos::process::{ServerProcess, supports_flag};
use crate::chaos::{self, Config, Target};
use crate::procfs::CpuMark;
use crate::server::{Binaries, Service, Target as Which};

#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// Seconds of chaos (faults and chat); checks and clean-up come after
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Well-behaved members
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    pub members: u32,
    /// Rooms the members are spread over
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub rooms: u32,
    /// Chat lines per second each member sends
    #[arg(long, default_value_t = 4.0)]
    pub rate: f64,
    /// Loopback addresses of UDP sources (127.1.x.y)
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub udp_addresses: u32,
    /// UDP source ports on each address
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub udp_ports: u32,
    /// Worker threads of the generator's tokio runtime
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub client_threads: u32,
    /// Pass `--threads N` to the server
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Never rebuild the server, even when it looks older than its sources
    #[arg(long)]
    pub no_build: bool,
}

/// Runs the chaos scenario; the exit status is 0 when every check passed.
pub fn main(args: ChaosArgs) -> ExitCode {
    let binaries = Binaries::locate();
    if !args.no_build
        && let Err(error) = binaries.ensure_built(&[Which::Switchboard], Service::Lobby)
    {
        eprintln!("switchboard-bench: {error}");
        return ExitCode::FAILURE;
    }
    let binary = binaries.path(Which::Switchboard, Service::Lobby);
    let mut cfg = Config::bench(Duration::from_secs_f64(args.duration.clamp(1.0, 3600.0)));
    cfg.members = args.members as usize;
    cfg.rooms = (args.rooms as usize).min(cfg.members);
    cfg.chat_interval = Duration::from_secs_f64(1.0 / args.rate.clamp(0.1, 50.0));
    cfg.udp_addresses = args.udp_addresses as usize;
    cfg.udp_ports = args.udp_ports as usize;
    cfg.threads = args.threads;
    if supports_flag(&binary, "--max-udp-sessions") {
        cfg.max_udp_sessions = Some((cfg.udp_sources() / 4).max(1));
    }
    let server_args = cfg.server_args();
    eprintln!(
        "chaos: {:.0} s, {} members in {} rooms, {} UDP sources; {} {}",
        cfg.duration.as_secs_f64(),
        cfg.members,
        cfg.rooms,
        cfg.udp_sources(),
        binary.display(),
        server_args.join(" ")
    );
    let mut server = match ServerProcess::start(&binary, &server_args) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("switchboard-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads as usize)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("switchboard-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    let target = Target {
        pid: server.pid,
        tcp: server.tcp,
        udp: server.udp,
    };
    let before = CpuMark::now(server.pid);
    let mut report = runtime.block_on(chaos::run(&cfg, target));
    let span = before.until(&CpuMark::now(server.pid));
    chaos::server_health(&mut report, &mut server);
    drop(server);
    report.fig("server CPU", format!("{:.0}% of a core", span.server_pct()));
    report.fig(
        "generator CPU",
        format!("{:.0}% of a core", span.client_pct()),
    );
    report.fig(
        "softirq CPU (loopback TCP)",
        format!("{:.0}% of a core", span.irq_pct()),
    );
    report.fig(
        "other processes CPU (noise)",
        format!("{:.0}% of a core", span.other_pct()),
    );
    println!(
        "== chaos: {:.0} s, {} members in {} rooms at {} lines/s, {} UDP sources; server flags: {}",
        cfg.duration.as_secs_f64(),
        cfg.members,
        cfg.rooms,
        args.rate,
        cfg.udp_sources(),
        server_args.join(" ")
    );
    print!("{}", report.table());
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
