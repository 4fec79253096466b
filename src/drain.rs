//! Knowing when every session has ended: each session (and each listener
//! that may still start one) holds a [`DrainGuard`]; the server's [`Drain`]
//! resolves once the last guard is dropped. Sessions still being started on
//! another thread hold theirs too, so the count is exact.

use std::time::Duration;

use tokio::sync::mpsc;

/// Held by everything that may still be, or start, a session.
#[derive(Debug, Clone)]
pub(crate) struct DrainGuard(#[allow(dead_code)] mpsc::Sender<()>);

/// Waits for every [`DrainGuard`] to be dropped.
#[derive(Debug)]
pub(crate) struct Drain {
    guard: Option<DrainGuard>,
    done: mpsc::Receiver<()>,
}

impl Drain {
    pub(crate) fn new() -> Self {
        let (guard, done) = mpsc::channel(1);
        Drain {
            guard: Some(DrainGuard(guard)),
            done,
        }
    }

    /// A new guard; `None` once draining began.
    pub(crate) fn guard(&self) -> Option<DrainGuard> {
        self.guard.clone()
    }

    /// Drops the server's own guard and waits until every other guard is
    /// gone, or `grace` has passed. Returns whether every guard was dropped.
    pub(crate) async fn wait(&mut self, grace: Duration) -> bool {
        self.guard = None;
        tokio::time::timeout(grace, self.done.recv()).await.is_ok()
    }
}
