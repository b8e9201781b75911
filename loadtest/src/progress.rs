//! Progress while a run goes on, as Locust's headless mode prints it: every
//! few seconds one line with the elapsed and planned time, the users
//! running, requests and req/s, failures, and p50/p99 so far (latency to
//! the response head, as the summary's). Plain lines, on standard error,
//! so the summary on standard output stays as it was.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Requests finished so far.
static REQUESTS: AtomicU64 = AtomicU64::new(0);
/// Of those, failed.
static FAILURES: AtomicU64 = AtomicU64::new(0);
/// Latency histogram: 1 ms buckets to 100 ms, 10 ms to 1 s, 100 ms to 10 s,
/// then one bucket for longer.
static LATENCY: [AtomicU64; BUCKETS] = [const { AtomicU64::new(0) }; BUCKETS];
const BUCKETS: usize = 100 + 90 + 90 + 1;

/// Records one finished request.
pub fn record(response_ms: u64, success: bool) {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    if !success {
        FAILURES.fetch_add(1, Ordering::Relaxed);
    }
    LATENCY[bucket(response_ms)].fetch_add(1, Ordering::Relaxed);
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

/// The `q` quantile (0..1) of the latencies so far, in ms (at most the
/// bucket's upper bound); None before any request.
fn quantile(q: f64) -> Option<u64> {
    let counts: Vec<u64> = LATENCY.iter().map(|c| c.load(Ordering::Relaxed)).collect();
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

/// Prints a line every `every` until the run ends (the task is dropped
/// with the runtime); `users` reads the users running now.
pub async fn report(started: Instant, total_secs: u64, every: Duration, users: impl Fn() -> u64) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        eprintln!("{}", line(started.elapsed(), total_secs, users()));
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
}
