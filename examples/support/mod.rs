//! What every example's `main` does around its own actors: logging, an actix
//! system, binding, and waiting for SIGINT or SIGTERM. Errors become one line
//! on stderr and a failing exit code.
#![allow(dead_code)] // each example uses the half it needs

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::{TcpListener, UdpSocket};

/// Sets up logging (`info` unless `RUST_LOG` says otherwise) and runs
/// `serve` on a new actix system.
pub fn run<F: Future<Output = Result<(), String>>>(name: &str, serve: F) -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match actix_rt::System::new().block_on(serve) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A TCP socket bound to `addr`, or why not.
pub async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| cannot_listen(addr, error))
}

/// A UDP socket bound to `addr`, or why not.
pub async fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, String> {
    UdpSocket::bind(addr)
        .await
        .map_err(|error| cannot_listen(addr, error))
}

/// Waits for SIGINT or SIGTERM.
pub async fn until_signal() -> Result<(), String> {
    switchboard::shutdown_signal()
        .await
        .map_err(|error| format!("cannot listen for signals: {error}"))?;
    log::info!("shutting down");
    Ok(())
}

fn cannot_listen(addr: SocketAddr, error: io::Error) -> String {
    format!("cannot listen on {addr}: {error}")
}
