//! `switchboard`: the game-lobby server. Parses flags, sets up logging, binds,
//! and hands the socket to the library until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchboard::{ClusterConfig, HttpOptions, LobbyConfig, LobbyServer, config, shutdown_signal};
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
    #[arg(long, default_value_t = config::DEFAULT_MAX_LINE)]
    max_line: usize,
    /// Close a session with no inbound line for this many seconds
    #[arg(long, default_value_t = config::DEFAULT_IDLE_TIMEOUT.as_secs())]
    idle_timeout: u64,
    /// Send PING after this many seconds without inbound traffic
    #[arg(long, default_value_t = config::DEFAULT_HEARTBEAT.as_secs())]
    heartbeat: u64,
    /// Members per room
    #[arg(long, default_value_t = config::DEFAULT_ROOM_CAPACITY)]
    room_capacity: usize,
    /// Lines owed to one peer whose socket is full before it counts as a slow consumer
    #[arg(long, default_value_t = config::DEFAULT_OUTBOUND_QUEUE)]
    outbound_queue: usize,
    /// Bytes owed to one peer whose socket is full before it counts as a slow
    /// consumer [default: 1048576, or twice --max-line if that is more]
    #[arg(long)]
    outbound_bytes: Option<usize>,
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
    /// UDP sessions at most (they also count toward --max-connections)
    #[arg(long, default_value_t = config::DEFAULT_MAX_UDP_SESSIONS)]
    max_udp_sessions: usize,
    /// Also serve HTTP on this address: the lobby page, WebSocket at /ws, /metrics, /healthz.
    /// Open HTTP connections that are not WebSocket sessions are bounded to 8 × --max-per-ip
    /// per address (64 without it, and never more) and 1024 in all; when all are taken, the
    /// oldest (open 1 s or more) is closed to admit a newcomer
    #[arg(long)]
    http_bind: Option<SocketAddr>,
    /// Origins whose pages may open /ws (e.g. https://example.com; `*` for any) [default: a page
    /// of the same host, if that host is an IP address or localhost; a page served under a DNS
    /// name needs the name listed here, so a DNS-rebinding page cannot pass]
    #[arg(long, num_args = 1.., value_name = "ORIGIN")]
    allowed_origin: Vec<String>,
    /// Threads that sessions, rooms and names are spread over [default: one per core]
    #[arg(long, alias = "session-threads")]
    threads: Option<usize>,
    /// Share rooms, nicks and the room list with other nodes through the
    /// Redis at this URL (redis://HOST:PORT/) or unix socket path
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// This node's name in the cluster [default: host name and port]
    #[arg(long, value_name = "NAME", requires = "cluster")]
    node_name: Option<String>,
}

impl Args {
    fn http_options(&self) -> HttpOptions {
        HttpOptions {
            allowed_origins: self.allowed_origin.clone(),
        }
    }

    fn lobby_config(&self) -> LobbyConfig {
        LobbyConfig {
            max_connections: self.max_connections,
            max_line: self.max_line,
            idle_timeout: Duration::from_secs(self.idle_timeout),
            heartbeat: Duration::from_secs(self.heartbeat),
            room_capacity: self.room_capacity,
            outbound_queue: self.outbound_queue,
            // Room for a couple of the longest lines, so raising --max-line
            // alone never makes the default refuse.
            outbound_bytes: self
                .outbound_bytes
                .unwrap_or(config::DEFAULT_OUTBOUND_BYTES.max(self.max_line.saturating_mul(2))),
            max_per_ip: (self.max_per_ip > 0).then_some(self.max_per_ip),
            max_msgs_per_sec: NonZeroU32::new(self.max_msgs_per_sec),
            max_udp_sessions: self.max_udp_sessions,
            threads: self.threads.unwrap_or_else(config::default_threads),
        }
    }

    /// The cluster to join, if any; the node is named after the host and
    /// `port` unless `--node-name` says otherwise.
    fn cluster_config(&self, port: u16) -> Option<ClusterConfig> {
        let url = self.cluster.clone()?;
        let name = self.node_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let host: String = host
                .trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "_-.".contains(*c))
                .take(48)
                .collect();
            let host = if host.is_empty() {
                "node".to_owned()
            } else {
                host
            };
            format!("{host}:{port}")
        });
        Some(ClusterConfig::new(url, name))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let lobby = args.lobby_config();
    if let Err(config::ConfigError::OutOfRange {
        field,
        value,
        min,
        max,
    }) = lobby.validate()
    {
        let flag = format!("--{}", field.replace('_', "-"));
        eprintln!("switchboard: {flag} must be between {min} and {max}, not {value}");
        return ExitCode::from(2);
    }
    if let Err(error) = args.http_options().validate() {
        eprintln!("switchboard: --allowed-origin {error}");
        return ExitCode::from(2);
    }
    if let Some(cluster) = args.cluster_config(args.bind.port())
        && let Err(error) = cluster.validate()
    {
        eprintln!("switchboard: {error}");
        return ExitCode::from(2);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    raise_open_file_limit(lobby.max_connections);
    actix_rt::System::new().block_on(serve(args, lobby))
}

/// File descriptors kept for what is not a connection (listeners, logging,
/// the runtime's own).
const RESERVED_FDS: u64 = 64;

/// Raises the soft limit on open files to the hard limit (the default soft
/// limit is often 1,024, far below `--max-connections`); warns when the limit
/// still cannot hold every connection, since peers past it would wait in the
/// accept queue instead of being told `ERR server-full`.
fn raise_open_file_limit(max_connections: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit/setrlimit to read and write.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        limit.rlim_cur
    };
    let wanted = max_connections as u64 + RESERVED_FDS;
    if soft < wanted {
        log::warn!(
            "the open-file limit is {soft}: fewer than --max-connections {max_connections} \
             sessions fit; raise the hard limit (ulimit -Hn) or lower --max-connections"
        );
    }
}

async fn serve(args: Args, lobby: LobbyConfig) -> ExitCode {
    let socket = match TcpListener::bind(args.bind).await {
        Ok(socket) => socket,
        Err(error) => {
            eprintln!("switchboard: cannot listen on {}: {error}", args.bind);
            return ExitCode::FAILURE;
        }
    };
    let port = socket
        .local_addr()
        .map_or(args.bind.port(), |addr| addr.port());
    let started = match args.cluster_config(port) {
        Some(cluster) => match LobbyServer::clustered(lobby, cluster).await {
            Ok(mut server) => server.serve_text(socket).map(|_| server),
            Err(error) => {
                eprintln!("switchboard: cannot join the cluster: {error}");
                return ExitCode::FAILURE;
            }
        },
        None => LobbyServer::start(socket, lobby),
    };
    let mut server = match started {
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
        if args.max_per_ip == 0 {
            log::warn!(
                "udp source addresses can be forged: one host may hold up to {} \
                 sessions; set --max-per-ip",
                args.max_udp_sessions.min(args.max_connections)
            );
        }
    }
    if let Some(http_bind) = args.http_bind {
        let options = args.http_options();
        let served = match TcpListener::bind(http_bind).await {
            Ok(socket) => server.serve_http(socket, options),
            Err(error) => Err(error),
        };
        if let Err(error) = served {
            eprintln!("switchboard: cannot listen on {http_bind}: {error}");
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
