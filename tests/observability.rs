//! What operators see: Prometheus metrics of the whole server on
//! `--metrics-bind` (summed over workers, also over workers that exited),
//! the health checks `/healthz` and `/readyz`.

use orders_harness as support;

use std::time::Duration;

use support::mongo_wire::MockMongo;
use support::{order_json, run_to_exit, wait_until, Client, Server};

/// A server with metrics on a port of its own.
fn with_metrics(workers: usize, extra: &[&str]) -> Server {
    Server::builder()
        .workers(workers)
        .metrics()
        .args(extra)
        .start()
}

fn requests(s: &Server, method: &str, route: &str, status: u16) -> f64 {
    s.metric(&format!(
        "orders_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
    ))
}

#[test]
fn counters_sum_every_worker_and_survive_a_killed_worker() {
    let s = with_metrics(2, &[]);
    let id = s.create("first");
    for _ in 0..40 {
        // A fresh connection each: the kernel spreads them over both workers.
        assert_eq!(s.request("GET", &format!("/orders/{id}"), None).status, 200);
    }
    for _ in 0..9 {
        s.create("more");
    }
    for _ in 0..5 {
        assert_eq!(s.request("GET", "/orders/nothex", None).status, 400);
    }
    for _ in 0..3 {
        assert_eq!(s.request("GET", "/etc/passwd", None).status, 404);
    }
    assert_eq!(requests(&s, "GET", "/orders/{id}", 200), 40.0);
    assert_eq!(requests(&s, "POST", "/orders", 200), 10.0);
    assert_eq!(requests(&s, "GET", "/orders/{id}", 400), 5.0);
    assert_eq!(requests(&s, "GET", "other", 404), 3.0, "never the raw path");
    let by_id = "orders_http_request_duration_seconds_count{route=\"/orders/{id}\"}";
    assert_eq!(
        s.metric(by_id),
        45.0,
        "the histogram counts every request of the route"
    );
    assert_eq!(
        s.metric("orders_http_request_duration_seconds_bucket{route=\"/orders/{id}\",le=\"+Inf\"}"),
        45.0
    );
    assert_eq!(
        s.metric("orders_store_operations_total{op=\"create\",result=\"ok\"}"),
        10.0
    );
    assert_eq!(
        s.metric("orders_store_operations_total{op=\"get\",result=\"ok\"}"),
        40.0
    );
    assert!(s.metric("orders_store_commit_batch_size_count") >= 1.0);
    assert_eq!(s.metric("orders_workers{state=\"serving\"}"), 2.0);
    assert_eq!(s.metric("orders_generation"), 1.0);
    assert_eq!(
        s.metric(&format!(
            "orders_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert!(s.metric("process_start_time_seconds") > 1.7e9);
    assert!(s.metric("process_resident_memory_bytes") > 1e6);
    assert!(s.metric("process_open_fds") > 3.0);

    // A worker killed: its counts stay, the restart is counted.
    let victim = s.worker_pids()[0];
    support::send_signal(victim, libc::SIGKILL);
    // The master publishes after it has handled the exit and the respawn:
    // wait for the crash to be counted, not just for a new pid (the
    // published states may lag the process list by a loop).
    assert!(
        wait_until(Duration::from_secs(10), || {
            let pids = s.worker_pids();
            pids.len() == 2
                && !pids.contains(&victim)
                && s.metric("orders_worker_restarts_total{cause=\"crash\"}") == 1.0
                && s.metric("orders_workers{state=\"serving\"}") == 2.0
        }),
        "the worker was replaced: {:?}",
        s.metrics()
            .into_iter()
            .filter(|(k, _)| k.starts_with("orders_worker"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        requests(&s, "GET", "/orders/{id}", 200),
        40.0,
        "no counter went backwards"
    );
    assert_eq!(requests(&s, "POST", "/orders", 200), 10.0);
    for _ in 0..10 {
        assert_eq!(s.request("GET", &format!("/orders/{id}"), None).status, 200);
    }
    assert_eq!(requests(&s, "GET", "/orders/{id}", 200), 50.0);
    assert_eq!(s.metric("orders_http_requests_in_flight"), 0.0);
}

#[test]
fn connections_open_evicted_and_refused_are_counted() {
    let s = with_metrics(1, &["--worker-connections", "3"]);
    let mut held: Vec<Client> = (0..3).map(|_| s.connect()).collect();
    assert!(wait_until(Duration::from_secs(5), || s
        .metric("orders_http_connections_open")
        == 3.0));
    // Idle ones make room for a new client.
    assert_eq!(s.request("GET", "/orders", None).status, 200);
    assert!(s.metric("orders_http_connections_evicted_total") >= 1.0);
    drop(held);
    // Connections inside a request do not: the new one is refused.
    held = (0..3).map(|_| s.connect()).collect();
    for c in &mut held {
        c.send_raw(b"GET /orders HTTP/1.1\r\n");
    }
    assert!(wait_until(Duration::from_secs(5), || s
        .metric("orders_http_connections_open")
        == 3.0));
    let r = s.request("GET", "/orders", None);
    assert_eq!(r.status, 503);
    assert_eq!(s.metric("orders_http_connections_refused_total"), 1.0);
    drop(held);
    assert!(wait_until(Duration::from_secs(5), || s
        .metric("orders_http_connections_open")
        == 0.0));
}

#[test]
fn the_metrics_address_serves_only_metrics_and_never_the_api_address() {
    let s = with_metrics(1, &[]);
    let m = s.metrics_addr.unwrap();
    assert_ne!(m, s.addr);
    let r = Client::connect(m).request("GET", "/metrics", None);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert_eq!(
        Client::connect(m).request("GET", "/orders", None).status,
        404,
        "no API on the metrics address"
    );
    assert_eq!(
        Client::connect(m)
            .request("POST", "/metrics", Some("{}"))
            .status,
        405
    );
    assert_eq!(
        s.request("GET", "/metrics", None).status,
        404,
        "no metrics on the API address"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let (code, out) = run_to_exit(
        &["-b", &addr, "--metrics-bind", &addr],
        &[],
        Duration::from_secs(15),
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("metrics_bind"), "{out}");
}

#[test]
fn health_checks_answer_without_touching_the_orders() {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), "ops:s3cret-token-123\n").unwrap();
    let path = tokens.path().display().to_string();
    let s = Server::start(&["--api-tokens-file", &path, "--api-tokens-for-reads", "true"]);
    assert_eq!(
        s.request("GET", "/orders", None).status,
        401,
        "the API needs a token"
    );
    let h = s.request("GET", "/healthz", None);
    assert_eq!(
        (h.status, h.json()),
        (200, serde_json::json!({"status": "ok"})),
        "health needs none"
    );
    let r = s.request("GET", "/readyz", None);
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!({"status": "ready"}))
    );
    let m = s.request("POST", "/healthz", Some("{}"));
    assert_eq!(
        (m.status, m.header("allow")),
        (405, Some("GET, HEAD, OPTIONS"))
    );
}

#[test]
fn readyz_follows_the_database_and_the_drain() {
    let mut mock = MockMongo::start();
    let uri = mock.uri("orders_db");
    let mut s = Server::builder()
        .workers(1)
        .args(&[
            "--mongo-uri",
            &uri,
            "--store-timeout-ms",
            "1000",
            "--metrics-bind",
            "127.0.0.1:0",
        ])
        .start();
    assert_eq!(s.request("GET", "/readyz", None).status, 200);
    mock.stop();
    // Within the readiness cache (1 s) plus the ping's deadline (1 s).
    let mut r = s.request("GET", "/readyz", None);
    assert!(
        wait_until(Duration::from_secs(5), || {
            r = s.request("GET", "/readyz", None);
            r.status == 503
        }),
        "not ready while the database is down: {}",
        r.text()
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        s.request("GET", "/healthz", None).status,
        200,
        "the worker itself is fine"
    );
    assert_eq!(
        s.request("POST", "/orders", Some(&order_json("down", 1)))
            .status,
        503
    );
    assert!(
        s.metric("orders_store_operations_total{op=\"create\",result=\"error\"}")
            + s.metric("orders_store_operations_total{op=\"create\",result=\"timeout\"}")
            >= 1.0
    );
    assert!(
        s.metric("orders_store_errors_total{kind=\"unavailable\"}")
            + s.metric("orders_store_errors_total{kind=\"timeout\"}")
            >= 1.0
    );
    mock.restart();
    assert!(
        wait_until(Duration::from_secs(15), || s
            .request("GET", "/readyz", None)
            .status
            == 200),
        "ready again"
    );

    // Draining: a request that arrives after TERM on an open connection
    // is answered, and /readyz says 503.
    let mut c = s.connect();
    c.send_raw(b"GET /readyz HTTP/1.1\r\nHost: x\r\n");
    std::thread::sleep(Duration::from_millis(100));
    s.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    c.send_raw(b"\r\n");
    let r = c.read_response().expect("an answer while draining");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.closes());
    assert!(s.wait_exit(Duration::from_secs(20)).is_some());
}

/// Runs `promtool` with `args`, `stdin` on its standard input.
fn promtool(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test.sh installs Debian's prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn promtool_accepts_the_metrics_the_rules_and_the_scrape_config() {
    let mock = MockMongo::start();
    let uri = mock.uri("orders_db");
    // Every family with samples: requests of each kind, store operations.
    let s = with_metrics(2, &["--mongo-uri", &uri]);
    let id = s.create("x");
    assert_eq!(s.request("GET", &format!("/orders/{id}"), None).status, 200);
    assert_eq!(s.request("GET", "/orders?limit=1", None).status, 200);
    assert_eq!(s.request("GET", "/readyz", None).status, 200);
    let text = Client::connect(s.metrics_addr.unwrap())
        .request("GET", "/metrics", None)
        .text();
    let out = promtool(&["check", "metrics"], &text);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{text}"
    );
    let out = promtool(&["check", "rules", "conf/orders-server.rules.yml"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = promtool(&["check", "config", "conf/prometheus.yml"], "");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_real_prometheus_scrapes_the_counters() {
    let s = with_metrics(2, &[]);
    for _ in 0..7 {
        s.create("scraped");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s }}\nscrape_configs:\n  - job_name: orders-server\n    static_configs:\n      - targets: ['{}']\n",
            s.metrics_addr.unwrap()
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let web: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut prometheus = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus is installed (scripts/test.sh installs it)");
    // sum(orders_http_requests_total{method="POST"}), URL-encoded.
    let query = "/api/v1/query?query=sum(orders_http_requests_total%7Bmethod%3D%22POST%22%7D)";
    let mut seen = String::new();
    let found = wait_until(Duration::from_secs(40), || {
        let Some(mut c) = Client::try_connect(web) else {
            return false;
        };
        let Some(r) = c.try_request("GET", query, None) else {
            return false;
        };
        seen = r.text();
        r.status == 200 && r.json()["data"]["result"][0]["value"][1] == "7"
    });
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert!(found, "Prometheus never read 7 POSTs back: {seen}");
}

/// A process's command line as `ps` shows it.
fn cmdline(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw)
        .trim_end_matches('\0')
        .replace('\0', " ")
}

#[test]
fn process_titles_say_what_each_process_is() {
    // Long arguments: the title takes the room of the original command line.
    let s = with_metrics(2, &["--log-level", "info", "--keepalive", "75"]);
    let master = s.pid() as i32;
    assert_eq!(
        cmdline(master),
        format!("orders-server: master [gen 1] {}", s.addr)
    );
    let mut titles: Vec<String> = s.worker_pids().into_iter().map(cmdline).collect();
    titles.sort();
    assert_eq!(
        titles,
        [
            "orders-server: worker 0 [gen 1]",
            "orders-server: worker 1 [gen 1]"
        ]
    );
    s.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(20), || {
            let workers: Vec<String> = s.worker_pids().into_iter().map(cmdline).collect();
            cmdline(master).starts_with("orders-server: master [gen 2]")
                && workers.len() == 2
                && workers.iter().all(|t| t.ends_with("[gen 2]"))
        }),
        "after a reload: {} / {:?}",
        cmdline(master),
        s.worker_pids().into_iter().map(cmdline).collect::<Vec<_>>()
    );
    assert!(
        wait_until(Duration::from_secs(10), || s
            .metric("orders_worker_restarts_total{cause=\"reload\"}")
            == 2.0),
        "both old workers replaced by the reload"
    );
    assert_eq!(
        s.metric("orders_worker_restarts_total{cause=\"crash\"}"),
        0.0
    );
    assert_eq!(s.metric("orders_generation"), 2.0);
}

/// The lines of `path` once it has `n` (the writer flushes every 100 ms).
fn log_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let read = || {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    wait_until(Duration::from_secs(5), || read().len() >= n);
    read()
}

#[test]
fn the_access_log_has_one_line_per_request_in_gunicorns_format() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let s = Server::builder()
        .workers(2)
        .args(&["--access-log", &log.display().to_string()])
        .start();
    let id = s.create("logged");
    let mut c = s.connect();
    let r = c.request_with(
        "GET",
        &format!("/orders/{id}"),
        &[
            "User-Agent: curl/8.0",
            "Referer: http://example.test/x",
            "X-Request-Id: trace-42",
            "X-Forwarded-For: 6.6.6.6, 203.0.113.7",
        ],
        None,
    );
    assert_eq!(
        r.header("x-request-id"),
        Some("trace-42"),
        "the client's id is echoed"
    );
    let bad = c.request_with(
        "GET",
        "/orders/nothex",
        &["X-Request-Id: bad id; rm -rf"],
        None,
    );
    let generated = bad
        .header("x-request-id")
        .expect("an id is made when the client's is unusable")
        .to_string();
    assert!(
        generated.len() == 16 && generated.bytes().all(|b| b.is_ascii_hexdigit()),
        "{generated}"
    );
    let lines = log_lines(&log, 3);
    assert_eq!(lines.len(), 3, "one line per request: {lines:#?}");
    // Each worker writes its own lines: find them by their request.
    let find = |needle: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle}: {lines:#?}"))
    };
    let post = find("\"POST /orders HTTP/1.1\"");
    assert!(
        post.starts_with("127.0.0.1 - - [") && post.contains("] \"POST /orders HTTP/1.1\" 200 "),
        "{post}"
    );
    // The GET from a trusted peer (127.0.0.1): the hop it saw, not the client's claim.
    let get = find(&format!("\"GET /orders/{id} HTTP/1.1\""));
    assert!(get.starts_with("203.0.113.7 - - ["), "{get}");
    let tail = format!(
        "\"GET /orders/{id} HTTP/1.1\" 200 {} \"http://example.test/x\" \"curl/8.0\" ",
        r.body.len()
    );
    assert!(get.contains(&tail), "{get}\nwanted {tail}");
    assert!(get.ends_with(" trace-42"), "{get}");
    let time: f64 = get.rsplit(' ').nth(1).unwrap().parse().expect("%(L)s");
    assert!(time < 1.0, "{get}");
    let bad_line = find("\"GET /orders/nothex HTTP/1.1\" 400 ");
    assert!(bad_line.ends_with(&generated), "{bad_line}");
}

#[test]
fn the_access_log_in_json_with_untrusted_forwarding_token_names_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.json");
    let tokens = dir.path().join("tokens");
    support::write_private(&tokens, "deploy-bot:t0ken-secret-value-1\n");
    let s = Server::builder()
        .workers(1)
        .args(&[
            "--access-log",
            &log.display().to_string(),
            "--access-log-format",
            "json",
            "--forwarded-allow-ips",
            "10.9.9.9",
            "--api-tokens-file",
            &tokens.display().to_string(),
        ])
        .start();
    let mut c = s.connect();
    let body = order_json("json", 2);
    let r = c.request_with(
        "POST",
        "/orders?src=test",
        &[
            "Authorization: Bearer t0ken-secret-value-1",
            "X-Forwarded-For: 203.0.113.7",
        ],
        Some(&body),
    );
    assert_eq!(r.status, 200);
    let lines = log_lines(&log, 1);
    let line: serde_json::Value =
        serde_json::from_str(&lines[0]).expect("one JSON object per line");
    assert_eq!(
        line["remote_addr"], "127.0.0.1",
        "X-Forwarded-For from an untrusted peer is ignored"
    );
    assert_eq!(
        line["user"], "deploy-bot",
        "the token's name, never the token"
    );
    assert!(!lines[0].contains("t0ken-secret"));
    assert_eq!(
        (
            line["method"].as_str(),
            line["path"].as_str(),
            line["query"].as_str()
        ),
        (Some("POST"), Some("/orders"), Some("src=test"))
    );
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes"], r.body.len());
    assert_eq!(line["request_id"], r.header("x-request-id").unwrap());
    assert!(line["duration_ms"].as_f64().unwrap() < 1000.0, "{line}");
    assert!(line["time"].as_str().unwrap().ends_with('Z'));

    // logrotate: move the file away, USR1, and new lines go to a new file.
    let rotated = dir.path().join("access.json.1");
    std::fs::rename(&log, &rotated).unwrap();
    s.signal(libc::SIGUSR1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.request("GET", "/healthz", None).status, 200);
    let fresh = log_lines(&log, 1);
    assert_eq!(fresh.len(), 1, "the reopened file has the new line");
    assert!(fresh[0].contains("/healthz"));
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        1,
        "the old file keeps its line"
    );
}

#[test]
fn a_bad_access_log_format_stops_the_start() {
    let (code, out) = run_to_exit(
        &[
            "-b",
            "127.0.0.1:0",
            "--access-log",
            "-",
            "--access-log-format",
            "%(h)s %(nope)s",
        ],
        &[],
        Duration::from_secs(15),
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("access_log_format") && out.contains("nope"),
        "{out}"
    );
    let (code, out) = run_to_exit(
        &[
            "-b",
            "127.0.0.1:0",
            "--access-log",
            "-",
            "--forwarded-allow-ips",
            "a.b",
        ],
        &[],
        Duration::from_secs(15),
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("forwarded_allow_ips"), "{out}");
}
