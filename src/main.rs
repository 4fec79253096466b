//! `switchboard`: the game-lobby server. Parses flags, sets up logging, binds,
//! and hands the socket to the library until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchboard::{LobbyConfig, LobbyServer, config, shutdown_signal};
use tokio::net::{TcpListener, UdpSocket};

/// jemalloc, with a background thread that purges freed pages within a
/// second: idle sessions then cost the same after a burst of long lines as
/// before it, where glibc's allocator keeps the burst's buffers resident.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's configuration, read at start-up from this symbol.
#[cfg(feature = "jemalloc")]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:500,muzzy_decay_ms:0\0";

/// How long a graceful shutdown may take to flush every session.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A game-lobby server: rooms, nicks and chat over a line protocol.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Listen address (IPv4 or IPv6; port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:7878")]
    bind: SocketAddr,
    /// Sessions beyond this get `ERR server-full` and are closed
    #[arg(long, default_value_t = config::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Longest accepted line, in bytes, without its terminator
    #[arg(long, default_value_t = config::DEFAULT_MAX_LINE, value_parser = at_least_one)]
    max_line: usize,
    /// Close a session with no inbound line for this many seconds
    #[arg(long, default_value_t = config::DEFAULT_IDLE_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Send PING after this many seconds without inbound traffic
    #[arg(long, default_value_t = config::DEFAULT_HEARTBEAT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat: u64,
    /// Members per room
    #[arg(long, default_value_t = config::DEFAULT_ROOM_CAPACITY, value_parser = at_least_one)]
    room_capacity: usize,
    /// Frames queued to one peer before it counts as a slow consumer
    #[arg(long, default_value_t = config::DEFAULT_OUTBOUND_QUEUE, value_parser = at_least_one)]
    outbound_queue: usize,
    /// Sessions from one IP address beyond this are refused (0 = no limit)
    #[arg(long, default_value_t = 0)]
    max_per_ip: usize,
    /// Inbound lines per session per second, burst of the same size (0 = no limit)
    #[arg(long, default_value_t = 0)]
    max_msgs_per_sec: u32,
    /// Also serve the lobby as newline-delimited JSON on this address (same rooms)
    #[arg(long)]
    json_bind: Option<SocketAddr>,
    /// Also serve the text lobby over UDP on this address, one line per datagram
    #[arg(long)]
    udp_bind: Option<SocketAddr>,
    /// Threads that sessions, rooms and names are spread over [default: one per core]
    #[arg(long, alias = "session-threads", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
}

/// Parses a count that must be at least 1 (a limit of zero would refuse everything).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(error) => Err(error.to_string()),
    }
}

impl Args {
    fn lobby_config(&self) -> LobbyConfig {
        LobbyConfig {
            max_connections: self.max_connections,
            max_line: self.max_line,
            idle_timeout: Duration::from_secs(self.idle_timeout),
            heartbeat: Duration::from_secs(self.heartbeat),
            room_capacity: self.room_capacity,
            outbound_queue: self.outbound_queue,
            max_per_ip: (self.max_per_ip > 0).then_some(self.max_per_ip),
            max_msgs_per_sec: NonZeroU32::new(self.max_msgs_per_sec),
            threads: self
                .threads
                .map_or_else(config::default_threads, usize::from),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    actix_rt::System::new().block_on(serve(args))
}

async fn serve(args: Args) -> ExitCode {
    let socket = match TcpListener::bind(args.bind).await {
        Ok(socket) => socket,
        Err(error) => {
            eprintln!("switchboard: cannot listen on {}: {error}", args.bind);
            return ExitCode::FAILURE;
        }
    };
    let mut server = match LobbyServer::start(socket, args.lobby_config()) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("switchboard: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(json_bind) = args.json_bind {
        let served = match TcpListener::bind(json_bind).await {
            Ok(socket) => server.serve_json(socket),
            Err(error) => Err(error),
        };
        if let Err(error) = served {
            eprintln!("switchboard: cannot listen on {json_bind}: {error}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(udp_bind) = args.udp_bind {
        let served = match UdpSocket::bind(udp_bind).await {
            Ok(socket) => server.serve_udp(socket),
            Err(error) => Err(error),
        };
        if let Err(error) = served {
            eprintln!("switchboard: cannot listen on {udp_bind}: {error}");
            return ExitCode::FAILURE;
        }
    }
    if let Err(error) = shutdown_signal().await {
        eprintln!("switchboard: cannot listen for signals: {error}");
        return ExitCode::FAILURE;
    }
    log::info!("shutdown requested");
    server.shutdown(SHUTDOWN_GRACE).await;
    ExitCode::SUCCESS
}
