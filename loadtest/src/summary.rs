//! The run's summary: users, failures, throughput, latency percentiles and
//! the store's size, as text and as JSON for scripts.

use goose::metrics::GooseMetrics;
use serde::Serialize;

/// What the run was.
pub struct Run {
    pub scenario: String,
    pub host: String,
    pub planned_users: usize,
    pub spawn_rate: f64,
    pub run_secs: u64,
    pub users_at_first_failure: Option<usize>,
    pub orders_at_start: Option<u64>,
    pub orders_at_end: Option<u64>,
    pub bytes: u64,
}

/// The summary written as JSON.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub host: String,
    pub spawn_rate: f64,
    pub run_secs: u64,
    /// Users the run was to reach within -t at the spawn rate.
    pub users_planned: usize,
    /// Most users running at once.
    pub users_reached: usize,
    /// Users running when the first request failed (None: no failure).
    pub users_at_first_failure: Option<usize>,
    pub requests: usize,
    pub failures: usize,
    pub requests_per_second: f64,
    /// Response body bytes received.
    pub bytes_received: u64,
    /// Response body megabytes (10^6) per second.
    pub megabytes_per_second: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub orders_at_start: Option<u64>,
    pub orders_at_end: Option<u64>,
    /// Requests per status code.
    pub status_codes: std::collections::BTreeMap<u16, usize>,
}

impl Summary {
    /// Builds the summary from goose's metrics.
    pub fn from_metrics(m: &GooseMetrics, run: Run) -> Summary {
        let mut histogram: std::collections::BTreeMap<u64, usize> = Default::default();
        let (mut requests, mut failures, mut max_us) = (0usize, 0usize, 0u64);
        let mut status_codes = std::collections::BTreeMap::new();
        for agg in m.requests.values() {
            requests += agg.success_count + agg.fail_count;
            failures += agg.fail_count;
            max_us = max_us.max(agg.raw_data.maximum_time_us);
            for (us, n) in agg.raw_data.times_us.iter() {
                *histogram.entry(*us).or_default() += *n;
            }
            for (code, n) in &agg.status_code_counts {
                *status_codes.entry(*code).or_default() += *n;
            }
        }
        let pct = |p: f64| percentile(&histogram, p) as f64 / 1000.0;
        let secs = m.duration.max(1) as f64;
        Summary {
            scenario: run.scenario,
            host: run.host,
            spawn_rate: run.spawn_rate,
            run_secs: run.run_secs,
            users_planned: run.planned_users,
            users_reached: m.maximum_users,
            users_at_first_failure: run.users_at_first_failure,
            requests,
            failures,
            requests_per_second: requests as f64 / secs,
            bytes_received: run.bytes,
            megabytes_per_second: run.bytes as f64 / secs / 1e6,
            p50_ms: pct(0.50),
            p95_ms: pct(0.95),
            p99_ms: pct(0.99),
            max_ms: max_us as f64 / 1000.0,
            orders_at_start: run.orders_at_start,
            orders_at_end: run.orders_at_end,
            status_codes,
        }
    }

    /// The human-readable report.
    pub fn text(&self) -> String {
        let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
        format!(
            "scenario {} against {}: spawn rate {}/s, {} s\n\
             users reached:           {} of {}\n\
             users at first failure:  {}\n\
             requests:                {}\n\
             failures:                {} ({:.2}%)\n\
             req/s:                   {:.1}\n\
             body MB/s:               {:.2}\n\
             latency p50/p95/p99/max: {:.1} / {:.1} / {:.1} / {:.1} ms\n\
             orders in store:         {} at start, {} at end\n\
             status codes:            {:?}\n",
            self.scenario,
            self.host,
            self.spawn_rate,
            self.run_secs,
            self.users_reached,
            self.users_planned,
            self.users_at_first_failure
                .map(|u| u.to_string())
                .unwrap_or_else(|| "none (0% failures)".into()),
            self.requests,
            self.failures,
            if self.requests > 0 {
                100.0 * self.failures as f64 / self.requests as f64
            } else {
                0.0
            },
            self.requests_per_second,
            self.megabytes_per_second,
            self.p50_ms,
            self.p95_ms,
            self.p99_ms,
            self.max_ms,
            opt(self.orders_at_start),
            opt(self.orders_at_end),
            self.status_codes,
        )
    }
}

/// The time (µs) under which a share `p` of the requests completed.
pub fn percentile(h: &std::collections::BTreeMap<u64, usize>, p: f64) -> u64 {
    let total: usize = h.values().sum();
    if total == 0 {
        return 0;
    }
    let target = ((total as f64) * p).ceil() as usize;
    let mut seen = 0;
    for (us, n) in h {
        seen += n;
        if seen >= target {
            return *us;
        }
    }
    *h.keys().next_back().unwrap_or(&0)
}

/// Orders in the store, counted by paging (GET /orders?limit=1000).
pub async fn count_orders(host: &str) -> Option<u64> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .ok()?;
    let mut count = 0u64;
    let mut url = format!("{host}/orders?limit=1000");
    loop {
        let page: serde_json::Value = client.get(&url).send().await.ok()?.json().await.ok()?;
        count += page["orders"].as_array()?.len() as u64;
        match page["next"].as_str() {
            Some(next) => url = format!("{host}/orders?limit=1000&after={next}"),
            None => return Some(count),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_of_a_histogram() {
        let h: std::collections::BTreeMap<u64, usize> =
            [(1000, 50), (2000, 45), (9000, 5)].into_iter().collect();
        assert_eq!(super::percentile(&h, 0.5), 1000);
        assert_eq!(super::percentile(&h, 0.95), 2000);
        assert_eq!(super::percentile(&h, 0.99), 9000);
    }
}
