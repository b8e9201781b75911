//! orders-loadtest and Locust against a real orders-server: the summary of
//! a short run, zero failures through reloads (the issue's "load generator
//! of the load-testing issue"), and the CI smoke run of real Locust.
//!
//! The server is started by the workspace's test harness (`harness/`):
//! the workspace's `target/<profile>/orders-server` (scripts/test.sh builds
//! it first), or `ORDERS_SERVER_BIN`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use orders_harness::{in_netns, Server};

/// A server with `workers` workers (the harness finds the workspace's
/// binary, or `ORDERS_SERVER_BIN`).
fn server(workers: usize) -> Server {
    Server::builder().workers(workers).start()
}

fn loadtest(args: &[&str]) -> (i32, serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let out = Command::new(env!("CARGO_BIN_EXE_orders-loadtest"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let summary = std::fs::read_to_string(&json)
        .map(|s| serde_json::from_str(&s).unwrap())
        .unwrap_or_default();
    (out.status.code().unwrap_or(-1), summary, text)
}

#[test]
fn a_short_seed_run_summarizes_itself() {
    let s = server(1);
    let host = format!("http://{}", s.addr);
    let (code, sum, text) = loadtest(&[
        "-H", &host, "-u", "40", "-r", "20", "-t", "5s", "-s", "seed",
    ]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(sum["users_reached"], 40, "{text}");
    assert_eq!(sum["failures"], 0);
    assert!(sum["requests"].as_u64().unwrap() >= 40, "{text}");
    assert_eq!(sum["orders_at_start"], 0);
    assert!(sum["orders_at_end"].as_u64().unwrap() > 0);
    assert!(sum["p99_ms"].as_f64().unwrap() > 0.0);
    assert!(sum["users_at_first_failure"].is_null());
    for key in ["requests_per_second", "p50_ms", "p95_ms", "max_ms"] {
        assert!(sum[key].is_number(), "{key} in {sum}");
    }
}

#[test]
fn progress_lines_appear_while_it_runs() {
    let s = server(1);
    let host = format!("http://{}", s.addr);
    let (code, sum, text) = loadtest(&[
        "-H",
        &host,
        "-u",
        "20",
        "-r",
        "20",
        "-t",
        "5s",
        "-s",
        "seed-paged",
        "--progress-every",
        "1",
    ]);
    assert_eq!(code, 0, "{text}");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with('[') && l.contains("/5 s] users "))
        .collect();
    assert!(lines.len() >= 3, "a line a second: {text}");
    let last = lines.last().unwrap();
    assert!(
        last.contains("users 20,") && last.contains("req/s), failures 0, p50 "),
        "{last}"
    );
    let requests: u64 = last
        .split("requests ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        requests > 0 && requests <= sum["requests"].as_u64().unwrap(),
        "{last} vs {sum}"
    );
    let (_, _, quiet) = loadtest(&[
        "-H",
        &host,
        "-u",
        "5",
        "-r",
        "5",
        "-t",
        "2s",
        "-s",
        "seed-paged",
        "--progress-every",
        "0",
    ]);
    assert!(
        !quiet.contains("] users "),
        "--progress-every 0 prints none: {quiet}"
    );
}

#[test]
fn failures_are_counted_with_the_user_count_at_the_first_one() {
    // Nothing listens here: every request fails at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("http://127.0.0.1:{port}");
    let (code, sum, text) = loadtest(&[
        "-H",
        &host,
        "-u",
        "10",
        "-r",
        "10",
        "-t",
        "3s",
        "-s",
        "seed-paged",
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(sum["failures"].as_u64().unwrap() > 0, "{text}");
    assert!(sum["users_at_first_failure"].as_u64().is_some(), "{text}");
}

#[test]
fn reloads_under_the_goose_load_fail_no_request() {
    // Needs net.ipv4.tcp_migrate_req=1, set in a private network namespace.
    in_netns(true, || {
        let s = server(2);
        let host = format!("http://{}", s.addr);
        // Orders for by-id to read.
        let (code, _, text) = loadtest(&[
            "-H", &host, "-u", "10", "-r", "10", "-t", "2s", "-s", "seed",
        ]);
        assert_eq!(code, 0, "{text}");
        let child = Command::new(env!("CARGO_BIN_EXE_orders-loadtest"))
            .args(["-H", &host, "-u", "50", "-r", "50", "-t", "7s", "-s", "max"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(2000));
        s.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(2000));
        s.signal(libc::SIGHUP);
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "failed requests:\n{text}\n{}",
            s.log()
        );
        assert!(text.contains("failures:                0 "), "{text}");
        assert!(s.log().contains("reloaded: generation 3"), "{}", s.log());
    });
}

/// The first line of a file, with its line ending.
fn header(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.split_inclusive('\n')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn csv_and_html_reports_follow_the_run() {
    let s = server(1);
    let host = format!("http://{}", s.addr);
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("run");
    let html = dir.path().join("report.html");
    let (code, sum, text) = loadtest(&[
        "-H",
        &host,
        "-u",
        "30",
        "-r",
        "10",
        "-t",
        "5s",
        "-s",
        "seed-paged",
        "--csv",
        prefix.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    let stats = std::fs::read_to_string(dir.path().join("run_stats.csv")).unwrap();
    let rows: Vec<Vec<&str>> = stats.lines().map(|l| l.split(',').collect()).collect();
    let width = rows[0].len();
    assert!(rows.iter().all(|r| r.len() == width), "{stats}");
    let named = |method: &str, name: &str| {
        rows.iter()
            .find(|r| r[0] == method && r[1] == name)
            .cloned()
    };
    let get = named("GET", "/orders?limit=100").unwrap_or_else(|| panic!("{stats}"));
    let post = named("POST", "/orders").unwrap_or_else(|| panic!("{stats}"));
    let total = named("", "Aggregated").unwrap_or_else(|| panic!("{stats}"));
    let count = |r: &Vec<&str>| r[2].parse::<u64>().unwrap();
    assert_eq!(count(&get) + count(&post), count(&total));
    assert_eq!(
        count(&total),
        sum["requests"].as_u64().unwrap(),
        "the CSV and the summary agree"
    );
    assert!(
        get[8].parse::<f64>().unwrap() > 0.0,
        "average content size of the lists: {stats}"
    );

    let history = std::fs::read_to_string(dir.path().join("run_stats_history.csv")).unwrap();
    let lines: Vec<Vec<&str>> = history
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert!(lines.len() >= 4, "one row per second:\n{history}");
    let users: Vec<u64> = lines.iter().map(|r| r[1].parse().unwrap()).collect();
    assert!(
        users.windows(2).all(|w| w[0] <= w[1]) && users[0] < 30 && *users.last().unwrap() == 30,
        "the ramp: {users:?}"
    );
    let last_total: u64 = lines.last().unwrap()[17].parse().unwrap();
    assert_eq!(
        last_total,
        count(&total),
        "the last row's total is the run's"
    );

    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), 3, "three charts");
    for title in [
        "Users",
        "Requests and failures per second",
        "Latency of each second",
    ] {
        assert!(page.contains(title), "{title}");
    }
    assert!(
        page.contains("p99") && page.contains("<polyline"),
        "lines are drawn"
    );
    assert!(
        !page.contains("<script") && !page.contains("http://cdn") && !page.contains("https://"),
        "self-contained"
    );
}

#[test]
fn locust_smoke_run_has_no_failure() {
    let locust = std::env::var("LOCUST").unwrap_or_else(|_| {
        let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/locust");
        venv.display().to_string()
    });
    let s = server(2);
    let csv_dir = tempfile::tempdir().unwrap();
    let locustfile = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("locustfile.py");
    let out = Command::new(&locust)
        .args([
            "--headless",
            "-u",
            "50",
            "-r",
            "50",
            "-t",
            "10s",
            "--only-summary",
            "--exit-code-on-error",
            "1",
            "--csv",
        ])
        .arg(csv_dir.path().join("locust"))
        .arg("-f")
        .arg(&locustfile)
        .arg("-H")
        .arg(format!("http://{}", s.addr))
        .output()
        .unwrap_or_else(|e| {
            panic!("{locust}: {e} (scripts/test.sh installs Locust in loadtest/.venv)")
        });
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "Locust reported failures:\n{text}"
    );
    let agg = text
        .lines()
        .find(|l| l.contains("Aggregated"))
        .unwrap_or_default()
        .to_string();
    assert!(!agg.is_empty(), "{text}");
    let numbers: Vec<&str> = agg.split_whitespace().collect();
    // "Aggregated  <reqs>  <fails>(<pct>%) ..."
    assert!(
        numbers.len() > 2 && numbers[1].parse::<u64>().unwrap_or(0) > 50,
        "{agg}"
    );
    assert!(numbers[2].starts_with("0("), "failures: {agg}");
    // Our CSV files have Locust's own columns, in its order.
    let ours = csv_dir.path().join("ours");
    let (code, _, text) = loadtest(&[
        "-H",
        &format!("http://{}", s.addr),
        "-u",
        "5",
        "-r",
        "5",
        "-t",
        "2s",
        "--csv",
        ours.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    for file in ["stats", "stats_history", "failures", "exceptions"] {
        let theirs = header(&csv_dir.path().join(format!("locust_{file}.csv")));
        assert_eq!(
            header(&csv_dir.path().join(format!("ours_{file}.csv"))),
            theirs,
            "_{file}.csv"
        );
    }
}
