//! Connections under pressure: a worker at `worker_connections` closes its
//! longest-idle connections (parked between requests, or waiting for a
//! first byte) to admit new ones, never one inside a request, and answers
//! 503 only when every connection is inside a request. Against the real
//! binary, one worker.

use orders_harness as support;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use orders_server::config::RESERVED_FDS;
use orders_server::http::server::EVICT_BATCH;
use support::{order_json, raise_nofile, wait_until, Client, Server};

/// Idle connections of the flood: more than the worker's slots.
const FLOOD: usize = 2500;
/// The worker's open-file limit: its slots are this less the descriptors
/// it keeps for itself.
const RLIMIT_NOFILE: u64 = 2000;
const WORKER_CONNECTIONS: f64 = (RLIMIT_NOFILE - RESERVED_FDS) as f64;
/// Probes, one a second, while the flood is held.
const PROBES: u32 = 12;
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Each probe's answer must come within this.
const PROBE_DEADLINE: Duration = Duration::from_secs(1);
/// Longer than the server's grace before a connection that sent nothing
/// may be closed (100 ms), and than the parking of idle ones (1 s).
const SETTLE: Duration = Duration::from_millis(1500);

/// How long idle connections may take to be parked on a loaded machine.
const PARKED_WITHIN: Duration = Duration::from_secs(20);

const EVICTED: &str = "orders_http_connections_evicted_total";
const PARKED: &str = "orders_http_connections_parked";
const OPEN: &str = "orders_http_connections_open";
const REFUSED: &str = "orders_http_connections_refused_total";

/// Held by the tests that load the machine (a 2,500-connection flood, wrk
/// at full speed), so that neither runs beside the other: each times its
/// clients against a deadline.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn one_worker(args: &[&str]) -> Server {
    Server::builder().workers(1).metrics().args(args).start()
}

/// A new client's request, answered 200 within [`PROBE_DEADLINE`].
fn probe(s: &Server, which: u32) {
    let started = Instant::now();
    let mut c = s.connect();
    let r = c.request("GET", "/orders?limit=1", None);
    let took = started.elapsed();
    assert_eq!(r.status, 200, "probe {which}: {}", r.text());
    assert!(took < PROBE_DEADLINE, "probe {which} took {took:?}");
}

/// The regression: 2,500 connections that send nothing, held for
/// 12 s against one worker with 1,936 slots, used to make every new client
/// get 503. Now each probe is served within a second, the worker is never
/// killed (its heartbeat timeout is 5 s), and the evictions are logged
/// with a count, at most about once a second.
#[test]
fn an_idle_flood_denies_no_one() {
    let _alone = heavy();
    raise_nofile();
    let nofile = RLIMIT_NOFILE.to_string();
    let s = one_worker(&["--rlimit-nofile", &nofile, "--timeout", "5"]);
    let worker = s.worker_pids()[0];
    let flood: Vec<TcpStream> = (0..FLOOD)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    for i in 0..PROBES {
        let started = Instant::now();
        probe(&s, i);
        let open = s.metric(OPEN);
        assert!(
            open <= WORKER_CONNECTIONS + EVICT_BATCH as f64,
            "{open} connections open"
        );
        std::thread::sleep(PROBE_EVERY.saturating_sub(started.elapsed()));
    }
    // No one was refused: every probe came in by closing an idle
    // connection (and the flood's excess too, as far as the worker had
    // accepted it: the kernel may still queue some).
    assert_eq!(s.metric(REFUSED), 0.0, "refused while idle ones could go");
    assert!(
        s.metric(EVICTED) >= f64::from(PROBES),
        "evicted {}, open {}",
        s.metric(EVICTED),
        s.metric(OPEN)
    );
    drop(flood);
    assert_eq!(s.worker_pids(), vec![worker]);
    let log = s.log();
    assert!(!log.contains("killed"), "a worker was killed:\n{log}");
    let lines = log
        .lines()
        .filter(|l| l.contains("idle connections to admit new ones"))
        .count();
    // The flood's opening, then a line a second at most while it is held.
    assert!(
        (1..=PROBES as usize + 5).contains(&lines),
        "evictions are logged at most once a second: {lines} lines"
    );
}

/// Clients inside a request (a head half sent, a body half sent) keep
/// their connections through a flood of new connections; the keep-alive
/// client idle the longest is the one closed.
#[test]
fn a_client_inside_a_request_is_never_the_one_closed() {
    let s = one_worker(&["--worker-connections", "40", "--min-body-rate", "0"]);
    let mut idle = s.connect();
    assert_eq!(idle.request("GET", "/orders?limit=1", None).status, 200);
    let mut head = s.connect();
    head.send_raw(b"GET /orders?limit=1 HTTP/1.1\r\nHost: test\r\n");
    let body = order_json("kept", 1);
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    let mut posting = s.connect();
    let post = format!(
        "POST /orders HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    posting.send_raw(post.as_bytes());
    posting.send_raw(first);
    std::thread::sleep(SETTLE);
    // 200 new connections, 10 ms apart, through 40 slots.
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(TcpStream::connect(s.addr).unwrap());
        std::thread::sleep(Duration::from_millis(10));
    }
    // 200 + 3 connections through 40 slots: at least 163 made room.
    assert!(
        wait_until(SETTLE, || s.metric(EVICTED) >= 163.0),
        "{}",
        s.metric(EVICTED)
    );
    head.send_raw(b"\r\n");
    assert_eq!(head.read_response().expect("the head's answer").status, 200);
    posting.send_raw(rest);
    let created = posting.read_response().expect("the body's answer");
    assert_eq!(created.status, 200, "{}", created.text());
    assert!(idle.is_closed_by_server(), "the idle client was kept");
}

/// With every connection inside a request, a new one is answered 503 and
/// closed at once; once one of them is idle again, it makes room.
#[test]
fn only_a_worker_whose_connections_are_all_in_requests_refuses() {
    let s = one_worker(&["--worker-connections", "3"]);
    let mut inside: Vec<Client> = (0..3).map(|_| s.connect()).collect();
    for c in &mut inside {
        c.send_raw(b"GET /orders?limit=1 HTTP/1.1\r\nHost: test\r\n");
    }
    std::thread::sleep(SETTLE);
    let mut refused = TcpStream::connect(s.addr).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = refused.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer:?}"
    );
    assert!(answer.contains("Connection: close"), "{answer:?}");
    assert_eq!(s.metric(REFUSED), 1.0);
    // One finishes its request; idle past the grace, it makes room.
    inside[0].send_raw(b"\r\n");
    assert_eq!(inside[0].read_response().unwrap().status, 200);
    std::thread::sleep(SETTLE);
    probe(&s, 0);
    assert!(inside[0].is_closed_by_server(), "the idle one was kept");
    assert!(wait_until(Duration::from_secs(5), || s.metric(EVICTED) == 1.0));
    for c in &mut inside[1..] {
        c.send_raw(b"\r\n");
        assert_eq!(c.read_response().unwrap().status, 200);
    }
}

/// Hostile tester's finding: with the slots held by busy keep-alive
/// clients (idle only for moments between their requests), new clients
/// waited in line for their 503, ~0.1-0.2 s each (the accept loop waited
/// for the busy ones to become closable). They are refused at once now:
/// only a new client's connection is worth waiting for.
#[test]
fn new_clients_of_a_worker_full_of_busy_clients_are_refused_at_once() {
    const NEW_CLIENTS: usize = 60;
    let _alone = heavy();
    let s = one_worker(&["--worker-connections", "50"]);
    // Plain keep-alive GETs: each connection idle for moments between its
    // requests, again and again.
    let wrk = std::process::Command::new("wrk")
        .args(["-t1", "-c50", "-d6s", &format!("http://{}/healthz", s.addr)])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("wrk is installed (scripts/test.sh installs it)");
    std::thread::sleep(SETTLE);
    let started = Instant::now();
    let probes: Vec<_> = (0..NEW_CLIENTS)
        .map(|_| {
            let addr = s.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.try_request("GET", "/healthz", None).map(|r| r.status)
            })
        })
        .collect();
    let statuses: Vec<Option<u16>> = probes.into_iter().map(|p| p.join().unwrap()).collect();
    let took = started.elapsed();
    let _ = wrk.wait_with_output();
    assert!(
        statuses.iter().all(|s| matches!(s, Some(200 | 503))),
        "{statuses:?}"
    );
    // The worker was full: busy clients are not closed to make room.
    assert!(s.metric(REFUSED) >= 1.0, "{statuses:?}");
    // Waiting out the grace (100 ms) for each in turn took seconds.
    assert!(
        took < Duration::from_secs(1),
        "{NEW_CLIENTS} new clients took {took:?}"
    );
}

/// Hostile tester's finding: one new connection made a small worker close
/// 32 of its idle clients. It closes an eighth of its connections now (as
/// nginx does), at least one.
#[test]
fn one_new_client_costs_a_small_worker_an_eighth_of_its_idle_ones() {
    let s = one_worker(&["--worker-connections", "40"]);
    let mut idle: Vec<Client> = (0..40).map(|_| s.connect()).collect();
    for c in &mut idle {
        assert_eq!(c.request("GET", "/healthz", None).status, 200);
    }
    // All 40 parked (after a second idle; longer on a loaded machine).
    assert!(
        wait_until(PARKED_WITHIN, || s.metric(PARKED) == 40.0),
        "parked {}",
        s.metric(PARKED)
    );
    probe(&s, 0);
    // 40 / 8 = 5 closed, then the probe's own connection closed after it.
    assert!(
        wait_until(SETTLE, || s.metric(EVICTED) == 5.0),
        "evicted {}",
        s.metric(EVICTED)
    );
    assert!(
        wait_until(SETTLE, || s.metric(OPEN) == 35.0),
        "open {}",
        s.metric(OPEN)
    );
}
