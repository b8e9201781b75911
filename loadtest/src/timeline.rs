//! The run over time: one sample per second of the users running, the
//! requests and failures of that second, its latency percentiles, and the
//! totals so far. The Locust-compatible history CSV (`locust_csv`) and the
//! HTML report's charts (`report`) are drawn from these samples.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::progress::{quantile_of, Snapshot};

/// Locust's reported percentiles (`PERCENTILES_TO_REPORT`), in its order.
pub const PERCENTILES: [f64; 11] = [
    0.50, 0.66, 0.75, 0.80, 0.90, 0.95, 0.98, 0.99, 0.999, 0.9999, 1.0,
];
/// How often a sample is taken.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// One second of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Unix time (s) when it was taken.
    pub unix: u64,
    /// Seconds since the start of the run.
    pub elapsed: f64,
    /// Users running.
    pub users: u64,
    /// Requests and failures per second over the last interval.
    pub rps: f64,
    pub fps: f64,
    /// The last interval's latency percentiles ([`PERCENTILES`], ms);
    /// None when no request finished in it.
    pub window_ms: Option<Vec<u64>>,
    /// The counters since the start.
    pub total: Snapshot,
}

impl Sample {
    /// The percentiles ([`PERCENTILES`], ms) of every request so far.
    pub fn total_percentiles(&self) -> Option<Vec<u64>> {
        percentiles(&self.total.counts)
    }

    /// One of this interval's percentiles (e.g. 0.99), ms.
    pub fn window(&self, p: f64) -> Option<u64> {
        let i = PERCENTILES.iter().position(|&q| q == p)?;
        self.window_ms.as_ref().map(|w| w[i])
    }
}

/// [`PERCENTILES`] of a latency histogram; None when it is empty.
pub fn percentiles(counts: &[u64]) -> Option<Vec<u64>> {
    PERCENTILES
        .iter()
        .map(|&q| quantile_of(counts, q))
        .collect()
}

/// The samples taken so far, shared with the sampling task.
#[derive(Clone)]
pub struct Timeline(Arc<Mutex<State>>);

struct State {
    started: Instant,
    samples: Vec<Sample>,
    /// When the last sample was taken, and the counters then.
    last: (Instant, Snapshot),
}

impl Timeline {
    /// A timeline of a run that started at `started` (counters now at their start).
    pub fn new(started: Instant) -> Timeline {
        Timeline(Arc::new(Mutex::new(State {
            started,
            samples: Vec::new(),
            last: (started, Snapshot::now()),
        })))
    }

    /// Samples every [`INTERVAL`] until the task is aborted; `users` reads
    /// the users running now.
    pub async fn sample_every_second(self, users: impl Fn() -> u64) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + INTERVAL, INTERVAL);
        loop {
            tick.tick().await;
            self.take(users());
        }
    }

    /// Takes one sample (also the last one, when the run ends).
    pub fn take(&self, users: u64) {
        let mut state = self.lock();
        let (then, before) = &state.last;
        let now = Snapshot::now();
        let secs = then.elapsed().as_secs_f64().max(0.001);
        let sample = Sample {
            unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            elapsed: state.started.elapsed().as_secs_f64(),
            users,
            rps: (now.requests - before.requests) as f64 / secs,
            fps: (now.failures - before.failures) as f64 / secs,
            window_ms: percentiles(&now.counts_since(before)),
            total: now.clone(),
        };
        state.samples.push(sample);
        state.last = (Instant::now(), now);
    }

    /// Every sample so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.lock().samples.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
