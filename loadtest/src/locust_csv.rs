//! Locust's CSV files (`--csv PREFIX`): `PREFIX_stats.csv`, one row per
//! request name and an `Aggregated` row; `PREFIX_stats_history.csv`, one
//! `Aggregated` row per second; `PREFIX_failures.csv` and
//! `PREFIX_exceptions.csv` (none here: goose reports errors as failures).
//! Columns, their order, formats and line endings (CRLF, Python's csv
//! module's) are Locust's (locust/stats.py, `StatsCSV`), so tools that read
//! Locust's runs read ours; a test compares the headers with the ones Locust
//! itself writes. Times are milliseconds, as Locust's. As in Locust, the
//! history's percentiles are of every request so far; its Requests/s is
//! the last second's (Locust's is a moving average of about 10 s).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use goose::metrics::GooseMetrics;

use crate::timeline::{Sample, PERCENTILES};

/// `_stats.csv`'s header.
pub const STATS_HEADER: &str =
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,\
Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,\
50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%";
/// `_stats_history.csv`'s header.
pub const HISTORY_HEADER: &str = "Timestamp,User Count,Type,Name,Requests/s,Failures/s,\
50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%,Total Request Count,Total Failure Count,\
Total Median Response Time,Total Average Response Time,Total Min Response Time,Total Max Response Time,\
Total Average Content Size";
/// `_failures.csv`'s header (goose does not keep when an error was first
/// and last seen: those two fields stay empty).
pub const FAILURES_HEADER: &str = "Method,Name,Error,Occurrences,First Seen,Last Seen";
/// `_exceptions.csv`'s header.
pub const EXCEPTIONS_HEADER: &str = "Count,Message,Traceback,Nodes";
/// Python's csv module ends rows with CRLF.
const EOL: &str = "\r\n";

/// Writes the four files; returns their paths.
pub fn write(
    prefix: &str,
    metrics: &GooseMetrics,
    bytes_by_name: &HashMap<String, u64>,
    samples: &[Sample],
) -> std::io::Result<Vec<String>> {
    let files = [
        ("stats", stats_csv(metrics, bytes_by_name)),
        ("stats_history", history_csv(samples)),
        ("failures", failures_csv(metrics)),
        ("exceptions", format!("{EXCEPTIONS_HEADER}{EOL}")),
    ];
    let mut paths = Vec::new();
    for (suffix, text) in files {
        let path = format!("{prefix}_{suffix}.csv");
        std::fs::write(&path, text)?;
        paths.push(path);
    }
    Ok(paths)
}

/// A request name's numbers, in µs as goose keeps them.
struct Row {
    method: String,
    name: String,
    requests: u64,
    failures: u64,
    histogram: BTreeMap<u64, usize>,
    total_us: u64,
    min_us: u64,
    max_us: u64,
    bytes: u64,
}

impl Row {
    fn empty(method: &str, name: &str) -> Row {
        Row {
            method: method.into(),
            name: name.into(),
            requests: 0,
            failures: 0,
            histogram: BTreeMap::new(),
            total_us: 0,
            min_us: u64::MAX,
            max_us: 0,
            bytes: 0,
        }
    }

    /// Adds another row's numbers to this one (the Aggregated row).
    fn add(&mut self, other: &Row) {
        self.requests += other.requests;
        self.failures += other.failures;
        self.total_us += other.total_us;
        self.min_us = self.min_us.min(other.min_us);
        self.max_us = self.max_us.max(other.max_us);
        self.bytes += other.bytes;
        for (us, n) in &other.histogram {
            *self.histogram.entry(*us).or_default() += n;
        }
    }

    /// The time (ms) under which a share `p` of the requests completed,
    /// within the shortest and the longest, rounded as Locust prints them.
    fn percentile_ms(&self, p: f64) -> u64 {
        let us = crate::summary::percentile(&self.histogram, p);
        (us.clamp(self.min_us.min(self.max_us), self.max_us) as f64 / 1000.0).round() as u64
    }
}

fn stats_csv(metrics: &GooseMetrics, bytes_by_name: &HashMap<String, u64>) -> String {
    let mut rows: Vec<Row> = metrics
        .requests
        .values()
        .map(|agg| {
            let method = agg.method.to_string();
            let mut row = Row::empty(&method, &agg.path);
            row.requests = (agg.success_count + agg.fail_count) as u64;
            row.failures = agg.fail_count as u64;
            row.histogram = agg
                .raw_data
                .times_us
                .iter()
                .map(|(us, n)| (*us, *n))
                .collect();
            row.total_us = agg.raw_data.total_time_us;
            row.min_us = agg.raw_data.minimum_time_us;
            row.max_us = agg.raw_data.maximum_time_us;
            row.bytes = bytes_by_name
                .get(&format!("{method} {}", agg.path))
                .copied()
                .unwrap_or(0);
            row
        })
        .collect();
    rows.sort_by(|a, b| (&a.name, &a.method).cmp(&(&b.name, &b.method)));
    let mut total = Row::empty("", "Aggregated");
    rows.iter().for_each(|r| total.add(r));
    let secs = metrics.duration.max(1) as f64;
    let mut out = format!("{STATS_HEADER}{EOL}");
    for row in rows.iter().chain(std::iter::once(&total)) {
        out.push_str(&stats_row(row, secs));
    }
    out
}

fn stats_row(row: &Row, secs: f64) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    let n = row.requests.max(1) as f64;
    let mut line = format!(
        "{},{},{},{},{},{},{},{},{},{},{}",
        row.method,
        quote(&row.name),
        row.requests,
        row.failures,
        row.percentile_ms(0.5),
        ms(row.total_us) / n,
        if row.requests == 0 {
            0.0
        } else {
            ms(row.min_us)
        },
        ms(row.max_us),
        row.bytes as f64 / n,
        row.requests as f64 / secs,
        row.failures as f64 / secs,
    );
    for p in PERCENTILES {
        if row.requests == 0 {
            line.push_str(",N/A");
        } else {
            let _ = write!(line, ",{}", row.percentile_ms(p));
        }
    }
    line.push_str(EOL);
    line
}

fn history_csv(samples: &[Sample]) -> String {
    let mut out = format!("{HISTORY_HEADER}{EOL}");
    for s in samples {
        let t = &s.total;
        let _ = write!(
            out,
            "{},{},,Aggregated,{:.6},{:.6}",
            s.unix, s.users, s.rps, s.fps
        );
        let total = s.total_percentiles();
        let ms = |us: u64| (us as f64 / 1000.0).round() as u64;
        match &total {
            Some(ps) => ps.iter().for_each(|p| {
                let _ = write!(out, ",{}", ms(*p));
            }),
            None => out.push_str(&",N/A".repeat(PERCENTILES.len())),
        }
        let n = t.requests.max(1) as f64;
        let _ = write!(
            out,
            ",{},{},{},{},{},{},{}{EOL}",
            t.requests,
            t.failures,
            total.map_or(0, |p| ms(p[0])),
            t.sum_us as f64 / 1000.0 / n,
            t.min_us.unwrap_or(0) as f64 / 1000.0,
            t.max_us as f64 / 1000.0,
            t.bytes as f64 / n
        );
    }
    out
}

fn failures_csv(metrics: &GooseMetrics) -> String {
    let mut out = format!("{FAILURES_HEADER}{EOL}");
    let mut errors: Vec<_> = metrics.errors.values().collect();
    errors.sort_by_key(|e| std::cmp::Reverse(e.occurrences));
    for e in errors {
        let _ = write!(
            out,
            "{},{},{},{}{EOL}",
            e.method,
            quote(&e.name),
            quote(&e.error),
            e.occurrences
        );
    }
    out
}

/// A CSV field, quoted when it needs to be.
fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::{Snapshot, BUCKETS};
    use crate::timeline::percentiles;

    #[test]
    fn history_rows_have_the_header_s_columns() {
        let mut counts = vec![0; BUCKETS];
        counts[500] = 10; // 5.0-5.1 ms
        let sample = Sample {
            unix: 1_700_000_000,
            elapsed: 1.0,
            users: 7,
            rps: 10.0,
            fps: 0.0,
            window_us: percentiles(&counts),
            total: Snapshot {
                requests: 10,
                failures: 0,
                counts,
                sum_us: 50_500,
                min_us: Some(5_020),
                max_us: 5_080,
                bytes: 1000,
            },
        };
        let csv = history_csv(&[sample]);
        let lines: Vec<&str> = csv.split(EOL).collect();
        assert_eq!(lines[0], HISTORY_HEADER);
        let header = HISTORY_HEADER.split(',').count();
        assert_eq!(lines[1].split(',').count(), header, "{}", lines[1]);
        assert!(
            lines[1].starts_with("1700000000,7,,Aggregated,10.000000,0.000000,5,"),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].ends_with(",10,0,5,5.05,5.02,5.08,100"),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn percentiles_stay_within_the_shortest_and_longest() {
        let mut row = Row::empty("GET", "/x");
        row.histogram = [(1_000, 5), (9_000, 5)].into_iter().collect();
        (row.requests, row.min_us, row.max_us) = (10, 1_200, 8_600);
        assert_eq!(row.percentile_ms(0.5), 1, "1.2 ms, rounded");
        assert_eq!(
            row.percentile_ms(1.0),
            9,
            "8.6 ms, not the bucket's 9.0, rounds to 9"
        );
    }

    #[test]
    fn fields_are_quoted_as_csv_needs() {
        assert_eq!(quote("/orders"), "/orders");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"x\""), "\"say \"\"x\"\"\"");
    }
}
