//! orders-loadtest: the seed's load test, reproducible.
//!
//! The seed measured its Flask app with Locust: users that alternate
//! `GET /orders` and `POST /orders` with 1–3 s of think time, spawned at 25,
//! 50 or 100 users/s for 60 s. This is the same test on goose (Locust's
//! model in Rust), with Locust's flags and meanings: `-t` is the whole run,
//! ramp included (goose's own run time starts after the ramp, so the run is
//! given to goose as a test plan: ramp, then hold for the rest of `-t`).
//!
//! Scenarios: `seed` (the seed's locustfile), `seed-paged` (the same with
//! `GET /orders?limit=100`, the seed's own suggested fix), `by-id`
//! (`GET /orders/<id>` of existing orders plus POST), `max` (by-id with no
//! think time, for peak req/s). A failure is a connection error, a non-2xx
//! answer, or no answer within `--timeout` seconds. Prints progress while it
//! runs and a summary at the end; writes the summary as JSON (`--json`),
//! Locust's CSV files (`--csv`) and an HTML report with charts over time
//! (`--html`).

mod locust_csv;
mod progress;
mod report;
mod summary;
mod timeline;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use goose::config::GooseConfiguration;
use goose::goose::GooseResponse;
use goose::prelude::*;
use std::sync::atomic::AtomicBool;

use summary::{count_orders, Summary};

/// The seed's order body.
const ORDER_BODY: &str = r#"{"product":"ProductY","quantity":2,"customer_name":"Bob Anderson","customer_address":"101 Pine St"}"#;
/// Most existing ids loaded for `by-id`.
const MAX_IDS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScenarioName {
    /// GET /orders + POST /orders, 1–3 s think time (the seed's locustfile).
    Seed,
    /// GET /orders?limit=100 + POST /orders, 1–3 s think time.
    SeedPaged,
    /// GET /orders/<id> of existing orders + POST /orders, 1–3 s think time.
    ById,
    /// GET /orders/<id> + POST /orders with no think time (peak req/s).
    Max,
}

/// Locust-compatible flags.
#[derive(Debug, Parser)]
#[command(
    name = "orders-loadtest",
    version,
    about = "The seed's Locust load test on goose"
)]
struct Args {
    /// Host to load, e.g. http://127.0.0.1:8000.
    #[arg(short = 'H', long)]
    host: String,
    /// Peak number of concurrent users.
    #[arg(short = 'u', long, default_value_t = 100)]
    users: usize,
    /// Users started per second.
    #[arg(short = 'r', long = "spawn-rate", default_value_t = 10.0)]
    spawn_rate: f64,
    /// Whole run, ramp included, as Locust's -t: 60s, 2m, 1h30m.
    #[arg(short = 't', long = "run-time", default_value = "60s")]
    run_time: String,
    /// What each user does.
    #[arg(short = 's', long, value_enum, default_value_t = ScenarioName::Seed)]
    scenario: ScenarioName,
    /// Seconds without an answer before a request counts as failed.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Stop the run at the first failure (the summary says so).
    #[arg(long)]
    stop_on_failure: bool,
    /// Print a progress line to standard error every this many seconds
    /// (0: none).
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    progress_every: u64,
    /// Write Locust's CSV files: PREFIX_stats.csv and PREFIX_stats_history.csv.
    #[arg(long, value_name = "PREFIX")]
    csv: Option<String>,
    /// Write an HTML report with charts of users, req/s, failures and
    /// p50/p95/p99 over time.
    #[arg(long, value_name = "FILE")]
    html: Option<std::path::PathBuf>,
    /// Connect from this local address (e.g. 127.0.0.2): several processes
    /// on several addresses spread tens of thousands of users over more
    /// source ports than one address has.
    #[arg(long, value_name = "IP")]
    source_ip: Option<std::net::IpAddr>,
}

/// Existing order ids, for by-id and max.
static IDS: OnceLock<Vec<String>> = OnceLock::new();
/// When the attack started.
static STARTED: OnceLock<Instant> = OnceLock::new();
/// Milliseconds from the start to the first failure (u64::MAX: none).
static FIRST_FAILURE_MS: AtomicU64 = AtomicU64::new(u64::MAX);
/// Users launched so far (each runs `user_started` once).
static LAUNCHED: AtomicU64 = AtomicU64::new(0);
/// Users launched when the first request failed (u64::MAX: none).
static USERS_AT_FIRST_FAILURE: AtomicU64 = AtomicU64::new(u64::MAX);

/// Set by --source-ip: one client per user, bound to that address, built
/// before the run (building a client costs ~2 ms of CPU: built as users
/// start, at 1,000 users/s, they would starve the load generator itself).
static BOUND_CLIENTS: std::sync::Mutex<Vec<reqwest::Client>> = std::sync::Mutex::new(Vec::new());

/// Set by --stop-on-failure.
static STOP_ON_FAILURE: AtomicBool = AtomicBool::new(false);

/// Set by --csv: count bytes per request name (a lock per request, which
/// only the CSV's "Average Content Size" needs).
static COUNT_BYTES_BY_NAME: AtomicBool = AtomicBool::new(false);
/// Response body bytes received per request name ("GET /orders"), for the CSV.
static BYTES_BY_NAME: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, u64>>,
> = std::sync::LazyLock::new(Default::default);

/// Reads the body to its end, as Locust does (an unread body would also
/// cost the connection its keep-alive), counts its bytes, and marks the
/// request failed if the body does not arrive in time. Latency percentiles
/// are goose's: time to the response head.
async fn finish(user: &mut GooseUser, r: GooseResponse) -> TransactionResult {
    let GooseResponse {
        mut request,
        response,
    } = r;
    if let Ok(resp) = response {
        match resp.bytes().await {
            Ok(body) => {
                progress::received(body.len() as u64);
                if COUNT_BYTES_BY_NAME.load(Ordering::Relaxed) {
                    let key = format!("{} {}", request.raw.method, request.name);
                    let mut by_name = BYTES_BY_NAME.lock().unwrap_or_else(|e| e.into_inner());
                    *by_name.entry(key).or_default() += body.len() as u64;
                }
            }
            Err(e) => user.set_failure(&format!("body: {e}"), &mut request, None, None)?,
        }
    }
    note(&request);
    Ok(())
}

/// Records the time of the first failed request (and stops the run there
/// with --stop-on-failure).
fn note(request: &goose::metrics::GooseRequestMetric) {
    progress::record(request.response_time_micros(), request.success);
    if !request.success {
        let ms = STARTED
            .get()
            .map(|s| s.elapsed().as_millis() as u64)
            .unwrap_or(0);
        let first = FIRST_FAILURE_MS
            .compare_exchange(u64::MAX, ms, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if first {
            USERS_AT_FIRST_FAILURE.store(LAUNCHED.load(Ordering::SeqCst), Ordering::SeqCst);
        }
        if first && STOP_ON_FAILURE.load(Ordering::SeqCst) {
            goose::trigger_killswitch("first failure (--stop-on-failure)");
        }
    }
}

/// Runs once per user as it starts: counts the users actually running
/// (under load the ramp can fall behind the planned spawn rate).
/// With --source-ip, also gives the user its client bound to that address
/// (goose's own client keeps the system's choice).
async fn user_started(user: &mut GooseUser) -> TransactionResult {
    LAUNCHED.fetch_add(1, Ordering::SeqCst);
    if let Some(client) = BOUND_CLIENTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
    {
        user.client = client;
    }
    Ok(())
}

/// `n` clients bound to `ip`, each its own connection pool (a user holds its
/// own connection, as a Locust user does), with goose's request timeout.
fn bound_clients(
    ip: std::net::IpAddr,
    timeout: Duration,
    n: usize,
) -> Result<Vec<reqwest::Client>, String> {
    (0..n)
        .map(|_| {
            reqwest::Client::builder()
                .user_agent(concat!("orders-loadtest/", env!("CARGO_PKG_VERSION")))
                .local_address(ip)
                .timeout(timeout)
                .build()
                .map_err(|e| format!("--source-ip {ip}: {e}"))
        })
        .collect()
}

async fn get_orders(user: &mut GooseUser) -> TransactionResult {
    let r = user.get("/orders").await?;
    finish(user, r).await
}

async fn get_orders_paged(user: &mut GooseUser) -> TransactionResult {
    let r = user.get("/orders?limit=100").await?;
    finish(user, r).await
}

async fn get_by_id(user: &mut GooseUser) -> TransactionResult {
    let ids = IDS.get().map(Vec::as_slice).unwrap_or(&[]);
    if ids.is_empty() {
        return get_orders_paged(user).await;
    }
    let id = &ids[fastrand::usize(..ids.len())];
    let r = user
        .get_named(&format!("/orders/{id}"), "/orders/<id>")
        .await?;
    finish(user, r).await
}

/// The order body, parsed once.
static ORDER: std::sync::LazyLock<serde_json::Value> =
    std::sync::LazyLock::new(|| serde_json::from_str(ORDER_BODY).expect("a valid body"));

async fn post_order(user: &mut GooseUser) -> TransactionResult {
    let r = user.post_json("/orders", &*ORDER).await?;
    finish(user, r).await
}

fn scenario(name: ScenarioName) -> Result<Scenario, GooseError> {
    let think = (Duration::from_secs(1), Duration::from_secs(3));
    let started = transaction!(user_started).set_on_start();
    let s = match name {
        ScenarioName::Seed => scenario!("seed")
            .register_transaction(started)
            .register_transaction(transaction!(get_orders))
            .register_transaction(transaction!(post_order)),
        ScenarioName::SeedPaged => scenario!("seed-paged")
            .register_transaction(started)
            .register_transaction(transaction!(get_orders_paged))
            .register_transaction(transaction!(post_order)),
        ScenarioName::ById | ScenarioName::Max => scenario!("by-id")
            .register_transaction(started)
            .register_transaction(transaction!(get_by_id))
            .register_transaction(transaction!(post_order)),
    };
    if name == ScenarioName::Max {
        Ok(s)
    } else {
        s.set_wait_time(think.0, think.1)
    }
}

/// Locust's timespan: "90", "60s", "2m", "1h30m".
fn parse_timespan(s: &str) -> Option<u64> {
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let (mut total, mut num) = (0u64, String::new());
    for c in s.chars() {
        match c {
            '0'..='9' => num.push(c),
            'h' | 'm' | 's' => {
                let n: u64 = num.parse().ok()?;
                total += n * match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                num.clear();
            }
            _ => return None,
        }
    }
    num.is_empty().then_some(total)
}

/// Locust's run as a goose test plan: ramp to the users reachable within
/// `-t` at the spawn rate, hold for what is left of `-t`, stop.
fn test_plan(users: usize, rate: f64, run_secs: u64) -> (String, usize) {
    let ramp_secs = (users as f64 / rate).ceil() as u64;
    if ramp_secs >= run_secs {
        let reached = ((rate * run_secs as f64) as usize).clamp(1, users);
        return (format!("{reached},{run_secs}s;0,0s"), reached);
    }
    (
        format!(
            "{users},{ramp_secs}s;{users},{}s;0,0s",
            run_secs - ramp_secs
        ),
        users,
    )
}

async fn load_ids(host: &str) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    let mut url = format!("{host}/orders?limit=1000");
    while ids.len() < MAX_IDS {
        let Ok(resp) = client.get(&url).send().await else {
            break;
        };
        let Ok(page) = resp.json::<serde_json::Value>().await else {
            break;
        };
        let orders = page["orders"].as_array().cloned().unwrap_or_default();
        ids.extend(
            orders
                .iter()
                .filter_map(|o| o["_id"].as_str().map(str::to_string)),
        );
        match page["next"].as_str() {
            Some(next) => url = format!("{host}/orders?limit=1000&after={next}"),
            None => break,
        }
    }
    ids
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match run(args).await {
        Ok(failed) => std::process::exit(if failed { 1 } else { 0 }),
        Err(e) => {
            eprintln!("orders-loadtest: {e}");
            std::process::exit(2);
        }
    }
}

/// Runs the load test; Ok(true) when any request failed.
async fn run(args: Args) -> Result<bool, String> {
    let host = args.host.trim_end_matches('/').to_string();
    let run_secs = parse_timespan(&args.run_time)
        .ok_or_else(|| format!("bad --run-time {:?}", args.run_time))?;
    if args.spawn_rate <= 0.0 || args.users == 0 || run_secs == 0 {
        return Err("--users, --spawn-rate and --run-time must be positive".into());
    }
    let orders_at_start = count_orders(&host).await;
    if matches!(args.scenario, ScenarioName::ById | ScenarioName::Max) {
        let ids = load_ids(&host).await;
        if ids.is_empty() {
            return Err("by-id needs existing orders: create some first".into());
        }
        let _ = IDS.set(ids);
    }
    let (plan, planned_users) = test_plan(args.users, args.spawn_rate, run_secs);
    let attack = GooseAttack::initialize_with_config(GooseConfiguration::default())
        .map_err(|e| e.to_string())?
        .register_scenario(scenario(args.scenario).map_err(|e| e.to_string())?)
        .set_default(GooseDefault::Host, host.as_str())
        .and_then(|a| a.set_default(GooseDefault::TestPlan, plan.as_str()))
        .and_then(|a| a.set_default(GooseDefault::Timeout, args.timeout.to_string().as_str()))
        .and_then(|a| a.set_default(GooseDefault::NoPrintMetrics, true))
        .and_then(|a| a.set_default(GooseDefault::Quiet, 1))
        .map_err(|e| e.to_string())?;
    STOP_ON_FAILURE.store(args.stop_on_failure, Ordering::SeqCst);
    COUNT_BYTES_BY_NAME.store(args.csv.is_some(), Ordering::SeqCst);
    if let Some(ip) = args.source_ip {
        let clients = bound_clients(ip, Duration::from_secs(args.timeout), planned_users)?;
        *BOUND_CLIENTS.lock().unwrap_or_else(|e| e.into_inner()) = clients;
    }
    let started = *STARTED.get_or_init(Instant::now);
    let reporter = (args.progress_every > 0).then(|| {
        let every = Duration::from_secs(args.progress_every);
        tokio::spawn(progress::report(started, run_secs, every, || {
            LAUNCHED.load(Ordering::SeqCst)
        }))
    });
    let timeline = timeline::Timeline::new(started);
    let sampler = tokio::spawn(
        timeline
            .clone()
            .sample_every_second(|| LAUNCHED.load(Ordering::SeqCst)),
    );
    let metrics = attack.execute().await.map_err(|e| e.to_string())?;
    sampler.abort();
    timeline.take(LAUNCHED.load(Ordering::SeqCst));
    if let Some(r) = reporter {
        r.abort();
        progress::finish();
    }
    let stopped_early = FIRST_FAILURE_MS.load(Ordering::SeqCst) != u64::MAX && args.stop_on_failure;
    if stopped_early {
        println!("stopped early at the first failure (--stop-on-failure)");
    }
    let orders_at_end = count_orders(&host).await;
    let users_at_failure = USERS_AT_FIRST_FAILURE.load(Ordering::SeqCst);
    let summary = Summary::from_metrics(
        &metrics,
        summary::Run {
            scenario: format!("{:?}", args.scenario),
            host,
            planned_users,
            spawn_rate: args.spawn_rate,
            run_secs,
            users_at_first_failure: (users_at_failure != u64::MAX)
                .then_some(users_at_failure as usize),
            orders_at_start,
            orders_at_end,
            bytes: progress::bytes(),
        },
    );
    print!("{}", summary.text());
    write_reports(&args, &summary, &metrics, &timeline.samples())?;
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(summary.failures > 0)
}

/// Writes what --json, --csv and --html ask for.
fn write_reports(
    args: &Args,
    summary: &Summary,
    metrics: &goose::metrics::GooseMetrics,
    samples: &[timeline::Sample],
) -> Result<(), String> {
    if let Some(prefix) = &args.csv {
        let by_name = BYTES_BY_NAME
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let files = locust_csv::write(prefix, metrics, &by_name, samples)
            .map_err(|e| format!("--csv {prefix}: {e}"))?;
        println!("csv: {}", files.join(", "));
    }
    if let Some(path) = &args.html {
        std::fs::write(path, report::html(summary, samples))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("html: {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locust_timespans() {
        assert_eq!(parse_timespan("60s"), Some(60));
        assert_eq!(parse_timespan("2m"), Some(120));
        assert_eq!(parse_timespan("1h30m"), Some(5400));
        assert_eq!(parse_timespan("90"), Some(90));
        assert_eq!(parse_timespan("1x"), None);
    }

    #[test]
    fn run_time_includes_the_ramp() {
        // 1500 users at 25/s take the whole 60 s to start.
        assert_eq!(test_plan(1500, 25.0, 60), ("1500,60s;0,0s".into(), 1500));
        // 100 users at 50/s: 2 s ramp, 58 s hold.
        assert_eq!(test_plan(100, 50.0, 60).0, "100,2s;100,58s;0,0s");
        // More users than -t allows: only those started in time.
        assert_eq!(test_plan(10_000, 100.0, 60), ("6000,60s;0,0s".into(), 6000));
    }
}
