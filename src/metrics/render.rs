//! The Prometheus text exposition format (version 0.0.4) of the whole
//! server: every used slot summed, plus the master's block.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::*;

/// The content type of the rendering.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric of `region`.
pub fn render(region: &Region) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let slots = region.used();
    let m = region.master;
    requests(&mut out, slots);
    durations(&mut out, slots);
    gauge(
        &mut out,
        "orders_http_connections_open",
        "Open client connections.",
        sum_i(slots, |s| &s.connections_open),
    );
    gauge(
        &mut out,
        "orders_http_connections_parked",
        "Open connections idle between requests, parked without a coroutine or buffers.",
        sum_i(slots, |s| &s.connections_parked),
    );
    gauge(
        &mut out,
        "orders_http_connection_coroutines",
        "Coroutines serving a connection now (open connections that are not parked).",
        sum_i(slots, |s| &s.connection_coroutines),
    );
    counter(
        &mut out,
        "orders_http_connections_refused_total",
        "Connections refused over worker_connections (answered 503).",
        sum(slots, |s| &s.connections_refused),
    );
    counter(
        &mut out,
        "orders_http_connections_evicted_total",
        "Idle connections closed to admit new ones at worker_connections.",
        sum(slots, |s| &s.connections_evicted),
    );
    counter(
        &mut out,
        "orders_http_proxy_protocol_refused_total",
        "Connections closed without a valid PROXY protocol header, or from a peer not in proxy_allow_ips.",
        sum(slots, |s| &s.proxy_refused),
    );
    counter(
        &mut out,
        "orders_http_tls_handshake_failures_total",
        "TLS handshakes that failed (a protocol error, nothing acceptable offered, a client certificate refused, the client gone or too slow).",
        sum(slots, |s| &s.tls_handshake_failures),
    );
    gauge(
        &mut out,
        "orders_http_requests_in_flight",
        "Requests being handled now.",
        sum_i(slots, |s| &s.in_flight),
    );
    store(&mut out, slots);
    header(
        &mut out,
        "orders_workers",
        "Worker processes by state.",
        "gauge",
    );
    for (state, n) in WORKER_STATES.iter().zip(&m.workers) {
        let _ = writeln!(out, "orders_workers{{state=\"{state}\"}} {}", load(n));
    }
    header(
        &mut out,
        "orders_worker_restarts_total",
        "Workers replaced, by cause.",
        "counter",
    );
    for (cause, n) in RESTART_CAUSES.iter().zip(&m.restarts) {
        let _ = writeln!(
            out,
            "orders_worker_restarts_total{{cause=\"{cause}\"}} {}",
            load(n)
        );
    }
    gauge(
        &mut out,
        "orders_generation",
        "The serving generation (1, then +1 per reload).",
        load(&m.generation) as i64,
    );
    header(&mut out, "orders_build_info", "The running build.", "gauge");
    let _ = writeln!(
        out,
        "orders_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    process(&mut out, m, slots);
    out
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn sum(slots: &[Slot], f: impl Fn(&Slot) -> &AtomicU64) -> u64 {
    slots.iter().map(|s| load(f(s))).fold(0, u64::wrapping_add)
}

fn sum_i(slots: &[Slot], f: impl Fn(&Slot) -> &AtomicI64) -> i64 {
    slots
        .iter()
        .map(|s| f(s).load(Ordering::Relaxed))
        .sum::<i64>()
        .max(0)
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {value}");
}

/// Series with a count only: a fresh server shows the API's two routes.
fn requests(out: &mut String, slots: &[Slot]) {
    header(
        out,
        "orders_http_requests_total",
        "Requests answered, by method, route and status.",
        "counter",
    );
    let mut any = false;
    for (m, method) in METHODS.iter().enumerate() {
        for (r, route) in ROUTES.iter().enumerate() {
            for (s, status) in STATUSES.iter().enumerate() {
                let i = (m * ROUTES.len() + r) * STATUSES.len() + s;
                let n = sum(slots, |slot| &slot.requests[i]);
                if n > 0 {
                    any = true;
                    let status = if *status == 0 {
                        "other".to_string()
                    } else {
                        status.to_string()
                    };
                    let _ = writeln!(out, "orders_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}");
                }
            }
        }
    }
    if !any {
        let _ = writeln!(
            out,
            "orders_http_requests_total{{method=\"GET\",route=\"/orders\",status=\"200\"}} 0"
        );
    }
}

fn durations(out: &mut String, slots: &[Slot]) {
    let name = "orders_http_request_duration_seconds";
    header(
        out,
        name,
        "Time from a complete request head to its response, by route.",
        "histogram",
    );
    for (r, route) in ROUTES.iter().enumerate() {
        let label = format!("route=\"{route}\"");
        let counts = bucket_sums(slots, |s| &s.durations[r]);
        // The API's own routes always; the others once they have a count.
        if r < 2 || counts.iter().any(|c| *c > 0) {
            histogram(
                out,
                name,
                &label,
                &DURATION_BUCKETS,
                &counts,
                sum(slots, |s| &s.durations[r].sum_micros),
            );
        }
    }
}

fn store(out: &mut String, slots: &[Slot]) {
    header(
        out,
        "orders_store_operations_total",
        "Store operations, by operation and result.",
        "counter",
    );
    for (o, op) in STORE_OPS.iter().enumerate() {
        for (r, result) in STORE_RESULTS.iter().enumerate() {
            let n = sum(slots, |s| &s.store_ops[o * STORE_RESULTS.len() + r]);
            let _ = writeln!(
                out,
                "orders_store_operations_total{{op=\"{op}\",result=\"{result}\"}} {n}"
            );
        }
    }
    header(
        out,
        "orders_store_errors_total",
        "Store errors, by kind.",
        "counter",
    );
    for (k, kind) in STORE_ERRORS.iter().enumerate() {
        let _ = writeln!(
            out,
            "orders_store_errors_total{{kind=\"{kind}\"}} {}",
            sum(slots, |s| &s.store_errors[k])
        );
    }
    let batch = "orders_store_commit_batch_size";
    header(
        out,
        batch,
        "Writes per commit of the embedded store (group commit).",
        "histogram",
    );
    let counts = bucket_sums(slots, |s| &s.commit_batch);
    histogram(
        out,
        batch,
        "",
        &BATCH_BUCKETS,
        &counts,
        sum(slots, |s| &s.commit_batch.sum_micros),
    );
    let took = "orders_store_commit_duration_seconds";
    header(
        out,
        took,
        "Duration of one commit (with its fsync) of the embedded store.",
        "histogram",
    );
    let counts = bucket_sums(slots, |s| &s.commit_duration);
    histogram(
        out,
        took,
        "",
        &COMMIT_BUCKETS,
        &counts,
        sum(slots, |s| &s.commit_duration.sum_micros),
    );
}

fn process(out: &mut String, m: &MasterBlock, slots: &[Slot]) {
    gauge(
        out,
        "process_start_time_seconds",
        "Start of the master process, seconds since the Unix epoch.",
        load(&m.start_time) as i64,
    );
    gauge(
        out,
        "process_resident_memory_bytes",
        "Resident memory of the master and every worker.",
        (load(&m.resident_bytes) + sum(slots, |s| &s.resident_bytes)) as i64,
    );
    gauge(
        out,
        "process_open_fds",
        "Open file descriptors of the master and every worker.",
        (load(&m.open_fds) + sum(slots, |s| &s.open_fds)) as i64,
    );
}

fn bucket_sums(slots: &[Slot], h: impl Fn(&Slot) -> &Histogram) -> [u64; MAX_BUCKETS] {
    let mut counts = [0; MAX_BUCKETS];
    for s in slots {
        for (c, a) in counts.iter_mut().zip(&h(s).counts) {
            *c += load(a);
        }
    }
    counts
}

/// Cumulative buckets, +Inf, sum and count. `labels` are the series' own
/// (may be empty).
fn histogram(
    out: &mut String,
    name: &str,
    labels: &str,
    bounds: &[f64],
    counts: &[u64; MAX_BUCKETS],
    sum_micros: u64,
) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (bound, count) in bounds.iter().zip(counts) {
        cumulative += count;
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += counts[bounds.len()];
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
    );
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", sum_micros as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{braces} {cumulative}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_end_in_inf() {
        let mut out = String::new();
        let mut counts = [0; MAX_BUCKETS];
        counts[0] = 2;
        counts[2] = 1;
        counts[BATCH_BUCKETS.len()] = 4;
        histogram(&mut out, "x", "", &BATCH_BUCKETS, &counts, 1_500_000);
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"4\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"512\"} 3\n"), "{out}");
        assert!(
            out.contains("x_bucket{le=\"+Inf\"} 7\nx_sum 1.5\nx_count 7\n"),
            "{out}"
        );
        let mut labelled = String::new();
        histogram(
            &mut labelled,
            "y",
            "route=\"/orders\"",
            &DURATION_BUCKETS,
            &counts,
            0,
        );
        assert!(
            labelled.contains("y_bucket{route=\"/orders\",le=\"0.0005\"} 2\n"),
            "{labelled}"
        );
        assert!(
            labelled.contains("y_count{route=\"/orders\"} 7\n"),
            "{labelled}"
        );
    }
}
