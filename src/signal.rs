//! Waiting for the signal that asks a server to stop.

use std::io;

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM: the two ways a terminal
/// user and a service manager ask a server to stop gracefully.
///
/// # Errors
/// When the signal handlers cannot be installed.
#[cfg(unix)]
pub async fn shutdown_signal() -> io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

/// Resolves on the first Ctrl-C.
///
/// # Errors
/// When the signal handler cannot be installed.
#[cfg(not(unix))]
pub async fn shutdown_signal() -> io::Result<()> {
    tokio::signal::ctrl_c().await
}
