//! A `\r`-updated progress line on stderr, once per second, for long runs.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// Counts work done; a background thread prints it while the run lasts.
#[derive(Clone)]
pub struct Progress {
    pub count: Arc<AtomicU64>,
}

impl Progress {
    /// Starts printing `label` with the count in `unit` once the run has
    /// lasted a few seconds; stops when the returned guard is dropped.
    pub fn start(label: String, unit: &'static str, quiet: bool) -> (Progress, ProgressGuard) {
        let progress = Progress {
            count: Arc::new(AtomicU64::new(0)),
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let shown = Arc::new(AtomicBool::new(false));
        let thread = {
            let progress = progress.clone();
            let shown = shown.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut last = (Instant::now(), 0u64);
                // Bounded: a run never lasts a day.
                for _ in 0..86_400 {
                    if stopped.recv_timeout(Duration::from_secs(1))
                        != Err(mpsc::RecvTimeoutError::Timeout)
                    {
                        break;
                    }
                    let elapsed = start.elapsed().as_secs_f64();
                    let count = progress.count.load(Ordering::Relaxed);
                    let rate = (count - last.1) as f64 / last.0.elapsed().as_secs_f64();
                    last = (Instant::now(), count);
                    if elapsed < 3.0 || quiet {
                        continue;
                    }
                    shown.store(true, Ordering::SeqCst);
                    let mut err = std::io::stderr().lock();
                    let _ = write!(
                        err,
                        "\r{label}: {elapsed:>4.0} s, {count} {unit} ({rate:.0}/s)    "
                    );
                    let _ = err.flush();
                }
            })
        };
        let guard = ProgressGuard {
            stop: Some(stop),
            shown,
            thread: Some(thread),
        };
        (progress, guard)
    }

    pub fn add(&self, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
    }
}

/// Ends the progress line when dropped.
pub struct ProgressGuard {
    stop: Option<mpsc::Sender<()>>,
    shown: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if self.shown.load(Ordering::SeqCst) {
            eprint!("\r{:80}\r", "");
        }
    }
}
