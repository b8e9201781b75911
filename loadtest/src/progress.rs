//! Progress while a run goes on, as Locust's headless mode prints it: every
//! few seconds one line with the elapsed and planned time, the users
//! running, requests and req/s, failures, and p50/p99 so far (latency to
//! the response head, as the summary's). On standard error, so the summary
//! on standard output stays as it was: plain lines, or, when standard
//! error is a terminal, one line redrawn in place with a progress bar.
//!
//! The counters here (requests, failures, a latency histogram, response
//! bytes) are also what `timeline` samples every second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Requests finished so far.
static REQUESTS: AtomicU64 = AtomicU64::new(0);
/// Their response times summed, the shortest and the longest (ms).
static SUM_MS: AtomicU64 = AtomicU64::new(0);
static MIN_MS: AtomicU64 = AtomicU64::new(u64::MAX);
static MAX_MS: AtomicU64 = AtomicU64::new(0);
/// Response body bytes received.
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Of those, failed.
static FAILURES: AtomicU64 = AtomicU64::new(0);
/// Latency histogram: 1 ms buckets to 100 ms, 10 ms to 1 s, 100 ms to 10 s,
/// then one bucket for longer.
static LATENCY: [AtomicU64; BUCKETS] = [const { AtomicU64::new(0) }; BUCKETS];
const BUCKETS: usize = 100 + 90 + 90 + 1;

/// Records one finished request.
pub fn record(response_ms: u64, success: bool) {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    SUM_MS.fetch_add(response_ms, Ordering::Relaxed);
    MIN_MS.fetch_min(response_ms, Ordering::Relaxed);
    MAX_MS.fetch_max(response_ms, Ordering::Relaxed);
    if !success {
        FAILURES.fetch_add(1, Ordering::Relaxed);
    }
    LATENCY[bucket(response_ms)].fetch_add(1, Ordering::Relaxed);
}

/// Records response body bytes.
pub fn received(bytes: u64) {
    BYTES.fetch_add(bytes, Ordering::Relaxed);
}

/// Response body bytes received so far.
pub fn bytes() -> u64 {
    BYTES.load(Ordering::Relaxed)
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub requests: u64,
    pub failures: u64,
    /// Requests per latency bucket.
    pub counts: Vec<u64>,
    pub sum_ms: u64,
    /// None before any request.
    pub min_ms: Option<u64>,
    pub max_ms: u64,
    pub bytes: u64,
}

impl Snapshot {
    /// The counters now.
    pub fn now() -> Snapshot {
        let min = MIN_MS.load(Ordering::Relaxed);
        Snapshot {
            requests: REQUESTS.load(Ordering::Relaxed),
            failures: FAILURES.load(Ordering::Relaxed),
            counts: LATENCY.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            sum_ms: SUM_MS.load(Ordering::Relaxed),
            min_ms: (min != u64::MAX).then_some(min),
            max_ms: MAX_MS.load(Ordering::Relaxed),
            bytes: BYTES.load(Ordering::Relaxed),
        }
    }

    /// The requests between `earlier` and this one, per latency bucket.
    pub fn counts_since(&self, earlier: &Snapshot) -> Vec<u64> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, c)| c - earlier.counts.get(i).copied().unwrap_or(0))
            .collect()
    }
}

/// The `q` quantile (0..1) of a latency histogram, in ms (at most the
/// bucket's upper bound); None when it is empty.
pub fn quantile_of(counts: &[u64], q: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    counts.iter().enumerate().find_map(|(i, c)| {
        seen += c;
        (seen >= rank).then(|| bound(i))
    })
}

fn bucket(ms: u64) -> usize {
    match ms {
        0..=99 => ms as usize,
        100..=999 => 100 + (ms as usize - 100) / 10,
        1000..=9999 => 190 + (ms as usize - 1000) / 100,
        _ => BUCKETS - 1,
    }
}

/// The upper bound (ms) of a bucket.
fn bound(i: usize) -> u64 {
    match i {
        0..=99 => i as u64,
        100..=189 => 100 + (i as u64 - 100 + 1) * 10 - 1,
        190..=279 => 1000 + (i as u64 - 190 + 1) * 100 - 1,
        _ => 10_000,
    }
}

/// The `q` quantile of the latencies so far, in ms.
fn quantile(q: f64) -> Option<u64> {
    quantile_of(&Snapshot::now().counts, q)
}

/// One progress line.
fn line(elapsed: Duration, total_secs: u64, users: u64) -> String {
    let requests = REQUESTS.load(Ordering::Relaxed);
    let rate = requests as f64 / elapsed.as_secs_f64().max(0.001);
    let ms = |q| quantile(q).map_or("-".to_string(), |v| v.to_string());
    format!(
        "[{:>4}/{total_secs} s] users {users}, requests {requests} ({rate:.0} req/s), failures {}, p50 {} ms, p99 {} ms",
        elapsed.as_secs(),
        FAILURES.load(Ordering::Relaxed),
        ms(0.50),
        ms(0.99)
    )
}

/// Width of the progress bar on a terminal.
const BAR_WIDTH: usize = 24;

/// The line with a bar of the time elapsed in front, for a terminal.
fn bar_line(elapsed: Duration, total_secs: u64, users: u64) -> String {
    let done = (elapsed.as_secs_f64() / total_secs.max(1) as f64).min(1.0);
    let filled = (done * BAR_WIDTH as f64).round() as usize;
    format!(
        "[{}{}] {}",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled),
        line(elapsed, total_secs, users)
    )
}

/// Prints progress every `every` until the run ends (the task is dropped
/// with the runtime); `users` reads the users running now. On a terminal
/// the line is redrawn in place (call [`finish`] when the run ends).
pub async fn report(started: Instant, total_secs: u64, every: Duration, users: impl Fn() -> u64) {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal {
        every.min(Duration::from_secs(1))
    } else {
        every
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        if terminal {
            // Clear to the end of the line: the new line may be shorter.
            eprint!(
                "\r{}\x1b[K",
                bar_line(started.elapsed(), total_secs, users())
            );
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("{}", line(started.elapsed(), total_secs, users()));
        }
    }
}

/// Ends the redrawn line on a terminal, so what follows starts afresh.
pub fn finish() {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_their_bounds_agree() {
        for ms in [0, 1, 99, 100, 105, 999, 1000, 1050, 9999] {
            let b = bucket(ms);
            assert!(bound(b) >= ms, "{ms} in bucket {b} bounded by {}", bound(b));
            if b > 0 {
                assert!(bound(b - 1) < ms, "{ms} belongs to an earlier bucket");
            }
        }
        assert_eq!(bucket(50_000), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_histogram_and_the_bar() {
        let mut counts = vec![0; BUCKETS];
        counts[bucket(3)] = 90;
        counts[bucket(250)] = 10;
        assert_eq!(quantile_of(&counts, 0.5), Some(3));
        assert_eq!(
            quantile_of(&counts, 0.99),
            Some(259),
            "the 10 ms bucket's upper bound"
        );
        assert_eq!(quantile_of(&[0; 4], 0.5), None);
        let half = bar_line(Duration::from_secs(30), 60, 5);
        assert!(
            half.starts_with(&format!("[{}{}]", "#".repeat(12), ".".repeat(12))),
            "{half}"
        );
    }
}
