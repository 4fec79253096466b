//! Latency histograms shared by many client tasks, and the run phases.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;

/// Latencies in nanoseconds, 1 ns to 60 s, 3 significant figures.
pub type Latencies = Arc<Mutex<Histogram<u64>>>;

pub fn new_latencies() -> Latencies {
    Arc::new(Mutex::new(
        Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds"),
    ))
}

/// Records latencies into a shared histogram in batches, so thousands of
/// client tasks neither contend on the lock nor each own a histogram.
pub struct LatencySink {
    shared: Latencies,
    local: Vec<u64>,
}

impl LatencySink {
    pub fn new(shared: &Latencies) -> Self {
        LatencySink {
            shared: shared.clone(),
            local: Vec::with_capacity(256),
        }
    }

    pub fn record(&mut self, nanos: u64) {
        self.local.push(nanos.max(1));
        if self.local.len() == self.local.capacity() {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        if self.local.is_empty() {
            return;
        }
        let mut hist = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        for &value in &self.local {
            hist.saturating_record(value);
        }
        self.local.clear();
    }
}

impl Drop for LatencySink {
    fn drop(&mut self) {
        self.flush();
    }
}

/// p50, p99, p99.9 and max of `latencies`, in µs.
pub fn percentiles_us(latencies: &Latencies) -> [f64; 4] {
    let hist = latencies.lock().unwrap_or_else(|e| e.into_inner());
    if hist.is_empty() {
        return [0.0; 4];
    }
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    [us(0.5), us(0.99), us(0.999), hist.max() as f64 / 1000.0]
}

/// Where a throughput run is: warming up, measuring, or stopping.
#[derive(Clone)]
pub struct Phase(Arc<AtomicU8>);

pub const WARMUP: u8 = 0;
pub const MEASURE: u8 = 1;
pub const STOP: u8 = 2;

impl Phase {
    pub fn new() -> Self {
        Phase(Arc::new(AtomicU8::new(WARMUP)))
    }

    pub fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, phase: u8) {
        self.0.store(phase, Ordering::SeqCst);
    }

    pub fn measuring(&self) -> bool {
        self.get() == MEASURE
    }

    pub fn stopping(&self) -> bool {
        self.get() == STOP
    }
}

/// Nanoseconds since a shared epoch, for timestamps carried inside messages.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Self {
        Clock(Instant::now())
    }

    pub fn nanos(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}
