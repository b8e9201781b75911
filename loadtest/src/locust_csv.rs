//! Locust's CSV files (`--csv PREFIX`): `PREFIX_stats.csv`, one row per
//! request name and an `Aggregated` row, and `PREFIX_stats_history.csv`,
//! one `Aggregated` row per second. Columns, their order and their
//! formats are Locust's (locust/stats.py, `StatsCSV`), so tools that read
//! Locust's runs read ours; a test compares the headers with the ones
//! Locust itself writes. Times are milliseconds, as Locust's.

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

/// Writes both files; returns their paths.
pub fn write(
    prefix: &str,
    metrics: &GooseMetrics,
    bytes_by_name: &std::collections::HashMap<String, u64>,
    samples: &[Sample],
) -> std::io::Result<[String; 2]> {
    let stats = format!("{prefix}_stats.csv");
    let history = format!("{prefix}_stats_history.csv");
    std::fs::write(&stats, stats_csv(metrics, bytes_by_name))?;
    std::fs::write(&history, history_csv(samples))?;
    Ok([stats, history])
}

/// A request name's numbers, in µs as goose keeps them.
struct Row {
    method: String,
    name: String,
    requests: u64,
    failures: u64,
    histogram: std::collections::BTreeMap<u64, usize>,
    total_us: u64,
    min_us: u64,
    max_us: u64,
    bytes: u64,
}

fn stats_csv(
    metrics: &GooseMetrics,
    bytes_by_name: &std::collections::HashMap<String, u64>,
) -> String {
    let mut rows: Vec<Row> = metrics
        .requests
        .values()
        .map(|agg| {
            let method = agg.method.to_string();
            let key = format!("{method} {}", agg.path);
            Row {
                requests: (agg.success_count + agg.fail_count) as u64,
                failures: agg.fail_count as u64,
                histogram: agg
                    .raw_data
                    .times_us
                    .iter()
                    .map(|(us, n)| (*us, *n))
                    .collect(),
                total_us: agg.raw_data.total_time_us,
                min_us: agg.raw_data.minimum_time_us,
                max_us: agg.raw_data.maximum_time_us,
                bytes: bytes_by_name.get(&key).copied().unwrap_or(0),
                name: agg.path.clone(),
                method,
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.name, &a.method).cmp(&(&b.name, &b.method)));
    let secs = metrics.duration.max(1) as f64;
    let mut out = format!("{STATS_HEADER}\n");
    for row in &rows {
        out.push_str(&stats_row(&row.method, &row.name, row, secs));
    }
    let mut total = Row {
        method: String::new(),
        name: "Aggregated".into(),
        requests: 0,
        failures: 0,
        histogram: Default::default(),
        total_us: 0,
        min_us: u64::MAX,
        max_us: 0,
        bytes: 0,
    };
    for row in &rows {
        total.requests += row.requests;
        total.failures += row.failures;
        total.total_us += row.total_us;
        total.min_us = total.min_us.min(row.min_us);
        total.max_us = total.max_us.max(row.max_us);
        total.bytes += row.bytes;
        for (us, n) in &row.histogram {
            *total.histogram.entry(*us).or_default() += n;
        }
    }
    out.push_str(&stats_row("", "Aggregated", &total, secs));
    out
}

fn stats_row(method: &str, name: &str, row: &Row, secs: f64) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    let pct = |p: f64| ms(percentile_us(&row.histogram, p)).round() as u64;
    let n = row.requests.max(1) as f64;
    let mut line = format!(
        "{method},{},{},{},{},{},{},{},{},{},{}",
        quote(name),
        row.requests,
        row.failures,
        pct(0.5),
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
            let _ = write!(line, ",{}", pct(p));
        }
    }
    line.push('\n');
    line
}

fn history_csv(samples: &[Sample]) -> String {
    let mut out = format!("{HISTORY_HEADER}\n");
    for s in samples {
        let t = &s.total;
        let _ = write!(
            out,
            "{},{},,Aggregated,{:.6},{:.6}",
            s.unix, s.users, s.rps, s.fps
        );
        // As Locust's Aggregated row: percentiles of every request so far.
        let total = s.total_percentiles();
        match &total {
            Some(ps) => ps.iter().for_each(|p| {
                let _ = write!(out, ",{p}");
            }),
            None => out.push_str(&",N/A".repeat(PERCENTILES.len())),
        }
        let n = t.requests.max(1) as f64;
        let median = total.map_or(0, |p| p[0]);
        let _ = writeln!(
            out,
            ",{},{},{median},{},{},{},{}",
            t.requests,
            t.failures,
            t.sum_ms as f64 / n,
            t.min_ms.unwrap_or(0),
            t.max_ms,
            t.bytes as f64 / n
        );
    }
    out
}

/// The time (µs) under which a share `p` of the requests completed.
fn percentile_us(h: &std::collections::BTreeMap<u64, usize>, p: f64) -> u64 {
    let total: usize = h.values().sum();
    let target = ((total as f64) * p).ceil().max(1.0) as usize;
    let mut seen = 0;
    for (us, n) in h {
        seen += n;
        if seen >= target {
            return *us;
        }
    }
    h.keys().next_back().copied().unwrap_or(0)
}

/// A CSV field, quoted when it needs to be.
fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Snapshot;
    use crate::timeline::percentiles;

    #[test]
    fn history_rows_have_the_header_s_columns() {
        let mut counts = vec![0; 281];
        counts[5] = 10;
        let sample = Sample {
            unix: 1_700_000_000,
            elapsed: 1.0,
            users: 7,
            rps: 10.0,
            fps: 0.0,
            window_ms: percentiles(&counts),
            total: Snapshot {
                requests: 10,
                failures: 0,
                counts,
                sum_ms: 50,
                min_ms: Some(5),
                max_ms: 5,
                bytes: 1000,
            },
        };
        let csv = history_csv(&[sample]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], HISTORY_HEADER);
        let header = HISTORY_HEADER.split(',').count();
        assert_eq!(lines[1].split(',').count(), header, "{}", lines[1]);
        assert!(
            lines[1].starts_with("1700000000,7,,Aggregated,10.000000,0.000000,5,"),
            "{}",
            lines[1]
        );
        assert!(lines[1].ends_with(",10,0,5,5,5,5,100"), "{}", lines[1]);
    }

    #[test]
    fn fields_are_quoted_as_csv_needs() {
        assert_eq!(quote("/orders"), "/orders");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"x\""), "\"say \"\"x\"\"\"");
    }
}
