//! Progress while a run goes on, as Locust's headless mode prints it: every
//! few seconds one line with the elapsed and planned time, the users
//! running, requests and req/s, failures, and p50/p99 so far (latency to
//! the response head, as the summary's). On standard error, so the summary
//! on standard output stays as it was: plain lines, or, when standard
//! error is a terminal, one short line redrawn in place behind a bar.
//!
//! The counters here (requests, failures, a latency histogram in µs,
//! response bytes) are also what `timeline` samples every second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Requests finished so far.
static REQUESTS: AtomicU64 = AtomicU64::new(0);
/// Of those, failed.
static FAILURES: AtomicU64 = AtomicU64::new(0);
/// Their response times summed (µs).
static SUM_US: AtomicU64 = AtomicU64::new(0);
/// The shortest response time (µs; u64::MAX before any request).
static MIN_US: AtomicU64 = AtomicU64::new(u64::MAX);
/// The longest response time (µs).
static MAX_US: AtomicU64 = AtomicU64::new(0);
/// Response body bytes received.
static BYTES: AtomicU64 = AtomicU64::new(0);

/// The latency histogram's ranges: (below this many µs, bucket width µs):
/// about 1% resolution from 1 ms on (10 µs below), to a minute; one more
/// bucket holds anything longer.
const RANGES: [(u64, u64); 4] = [
    (1_000, 10),
    (100_000, 100),
    (1_000_000, 1_000),
    (60_000_000, 100_000),
];
/// Buckets in the histogram: those of [`RANGES`], plus the overflow.
pub const BUCKETS: usize = 100 + 990 + 900 + 590 + 1;
/// Latency histogram: requests per bucket.
static LATENCY: [AtomicU64; BUCKETS] = [const { AtomicU64::new(0) }; BUCKETS];

/// Records one finished request (its response time in µs).
pub fn record(response_us: u64, success: bool) {
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    if !success {
        FAILURES.fetch_add(1, Ordering::Relaxed);
    }
    SUM_US.fetch_add(response_us, Ordering::Relaxed);
    MIN_US.fetch_min(response_us, Ordering::Relaxed);
    MAX_US.fetch_max(response_us, Ordering::Relaxed);
    LATENCY[bucket(response_us)].fetch_add(1, Ordering::Relaxed);
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
    /// Requests finished.
    pub requests: u64,
    /// Of those, failed.
    pub failures: u64,
    /// Requests per latency bucket.
    pub counts: Vec<u64>,
    /// Response times summed (µs).
    pub sum_us: u64,
    /// The shortest response time (µs); None before any request.
    pub min_us: Option<u64>,
    /// The longest response time (µs).
    pub max_us: u64,
    /// Response body bytes received.
    pub bytes: u64,
}

impl Snapshot {
    /// The counters now.
    pub fn now() -> Snapshot {
        let min = MIN_US.load(Ordering::Relaxed);
        Snapshot {
            requests: REQUESTS.load(Ordering::Relaxed),
            failures: FAILURES.load(Ordering::Relaxed),
            counts: LATENCY.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            sum_us: SUM_US.load(Ordering::Relaxed),
            min_us: (min != u64::MAX).then_some(min),
            max_us: MAX_US.load(Ordering::Relaxed),
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

    /// The `q` quantile of every request so far (µs), within the shortest
    /// and longest seen.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let v = quantile_of(&self.counts, q)?;
        Some(v.clamp(
            self.min_us.unwrap_or(0),
            self.max_us.max(self.min_us.unwrap_or(0)),
        ))
    }
}

/// The `q` quantile (0..1) of a latency histogram, in µs: the middle of the
/// bucket that holds it (rank `ceil(n q)`, as the summary's); None when the
/// histogram is empty.
pub fn quantile_of(counts: &[u64], q: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    counts.iter().enumerate().find_map(|(i, c)| {
        seen += c;
        (seen >= rank).then(|| middle(i))
    })
}

/// The bucket of a response time (µs).
fn bucket(us: u64) -> usize {
    let (mut first, mut floor) = (0, 0);
    for (below, width) in RANGES {
        if us < below {
            return first + ((us - floor) / width) as usize;
        }
        first += ((below - floor) / width) as usize;
        floor = below;
    }
    BUCKETS - 1
}

/// The lower bound and width (µs) of bucket `i` (the overflow bucket: from
/// a minute, "width" a minute).
fn span(i: usize) -> (u64, u64) {
    let (mut first, mut floor) = (0, 0);
    for (below, width) in RANGES {
        let n = ((below - floor) / width) as usize;
        if i < first + n {
            return (floor + (i - first) as u64 * width, width);
        }
        first += n;
        floor = below;
    }
    (floor, floor)
}

/// The middle of bucket `i` (µs).
fn middle(i: usize) -> u64 {
    let (low, width) = span(i);
    low + width / 2
}

/// The `q` quantile so far in ms with one decimal, or `-` before any request.
fn quantile_text(now: &Snapshot, q: f64) -> String {
    now.quantile(q)
        .map_or("-".to_string(), |us| format!("{:.1}", us as f64 / 1000.0))
}

/// One progress line.
fn line(elapsed: Duration, total_secs: u64, users: u64) -> String {
    let now = Snapshot::now();
    let rate = now.requests as f64 / elapsed.as_secs_f64().max(0.001);
    let ms = |q| quantile_text(&now, q);
    format!(
        "[{:>4}/{total_secs} s] users {users}, requests {} ({rate:.0} req/s), failures {}, p50 {} ms, p99 {} ms",
        elapsed.as_secs(),
        now.requests,
        now.failures,
        ms(0.50),
        ms(0.99)
    )
}

/// Width of the progress bar on a terminal.
const BAR_WIDTH: usize = 20;
/// Longest line redrawn on a terminal: a wrapped line could not be redrawn.
const TERMINAL_LINE: usize = 79;

/// The short line behind a bar of the time elapsed, for a terminal.
fn bar_line(elapsed: Duration, total_secs: u64, users: u64) -> String {
    let now = Snapshot::now();
    let done = (elapsed.as_secs_f64() / total_secs.max(1) as f64).min(1.0);
    let filled = (done * BAR_WIDTH as f64).round() as usize;
    let ms = |q| quantile_text(&now, q);
    let mut text = format!(
        "[{}{}] {}/{total_secs}s {users}u {:.0}/s fail {} p50 {} p99 {} ms",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled),
        elapsed.as_secs(),
        now.requests as f64 / elapsed.as_secs_f64().max(0.001),
        now.failures,
        ms(0.50),
        ms(0.99)
    );
    text.truncate(TERMINAL_LINE);
    text
}

/// Prints progress every `every` until the run ends (the task is dropped
/// with the runtime); `users` reads the users running now. On a terminal
/// the line is redrawn in place every second (call [`finish`] when the run
/// ends).
pub async fn report(started: Instant, total_secs: u64, every: Duration, users: impl Fn() -> u64) {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal {
        every.min(Duration::from_secs(1))
    } else {
        every
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
    fn buckets_and_their_spans_agree() {
        for us in [
            0, 9, 10, 999, 1_000, 1_050, 99_999, 100_000, 250_500, 999_999, 1_000_000, 59_999_999,
        ] {
            let (low, width) = span(bucket(us));
            assert!(
                low <= us && us < low + width,
                "{us} µs in [{low}, {})",
                low + width
            );
        }
        assert_eq!(bucket(60_000_000), BUCKETS - 1);
        assert_eq!(bucket(59_999_999), BUCKETS - 2);
    }

    #[test]
    fn quantiles_of_a_histogram_and_the_bar() {
        let mut counts = vec![0; BUCKETS];
        counts[bucket(800)] = 90;
        counts[bucket(250_000)] = 10;
        assert_eq!(
            quantile_of(&counts, 0.5),
            Some(805),
            "the middle of the 10 µs bucket"
        );
        assert_eq!(quantile_of(&counts, 0.99), Some(250_500));
        assert_eq!(quantile_of(&[0; 4], 0.5), None);
        let half = bar_line(Duration::from_secs(30), 60, 5);
        assert!(
            half.starts_with(&format!("[{}{}]", "#".repeat(10), ".".repeat(10))),
            "{half}"
        );
        assert!(half.len() <= TERMINAL_LINE);
    }
}
