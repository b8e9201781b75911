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
    /// Requests per second over the interval.
    pub rps: f64,
    /// Failures per second over the interval.
    pub fps: f64,
    /// The interval's latency percentiles ([`PERCENTILES`], µs); None when
    /// no request finished in it.
    pub window_us: Option<Vec<u64>>,
    /// The counters since the start.
    pub total: Snapshot,
}

impl Sample {
    /// One of the interval's percentiles (e.g. 0.99), in ms.
    pub fn window_ms(&self, p: f64) -> Option<f64> {
        let i = PERCENTILES.iter().position(|&q| q == p)?;
        self.window_us.as_ref().map(|w| w[i] as f64 / 1000.0)
    }

    /// [`PERCENTILES`] of every request so far (µs); None before any.
    pub fn total_percentiles(&self) -> Option<Vec<u64>> {
        PERCENTILES
            .iter()
            .map(|&q| self.total.quantile(q))
            .collect()
    }
}

/// [`PERCENTILES`] of a latency histogram (µs); None when it is empty.
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
    /// the users running now. A starved runtime delays ticks rather than
    /// firing the missed ones back to back.
    pub async fn sample_every_second(self, users: impl Fn() -> u64) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + INTERVAL, INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.take(users());
        }
    }

    /// Takes a sample (also the last one, when the run ends); none before
    /// the first user starts, whose second is the timeline's zero. Less than
    /// half an interval after the previous one, its rates would mean
    /// little: the previous sample then only takes the new totals.
    pub fn take(&self, users: u64) {
        let mut state = self.lock();
        let now = Snapshot::now();
        if state.samples.is_empty() && users == 0 && now.requests == 0 {
            // goose is still setting its users up: time starts with the first.
            state.started = Instant::now();
            state.last = (state.started, now);
            return;
        }
        let (then, before) = state.last.clone();
        let secs = then.elapsed().as_secs_f64();
        if secs < INTERVAL.as_secs_f64() / 2.0 {
            if let Some(previous) = state.samples.last_mut() {
                previous.total = now;
                return;
            }
        }
        let secs = secs.max(0.001);
        let sample = Sample {
            unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            elapsed: state.started.elapsed().as_secs_f64(),
            users,
            rps: (now.requests - before.requests) as f64 / secs,
            fps: (now.failures - before.failures) as f64 / secs,
            window_us: percentiles(&now.counts_since(&before)),
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
