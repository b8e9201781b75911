//! Idle connections cost no coroutine: a keep-alive connection idle for a
//! second is parked in its worker's idle set (`proto::idle`), and served
//! by a new coroutine when it sends again. Checked through the metrics
//! (`orders_http_connection_coroutines`, `orders_http_connections_parked`)
//! of one worker, against the real binary. What it saves (memory, CPU) is
//! measured by bench/idle.sh, not here.

use orders_harness as support;

use std::time::{Duration, Instant};

use support::{raise_nofile, wait_until, Client, Server};

/// Connections held idle at once.
const IDLE_CONNECTIONS: usize = 1000;
/// Long enough for any connection to be parked (after `PARK_AFTER`, 1 s,
/// seen by a sweep every 0.5 s) on a loaded test machine.
const PARKED_WITHIN: Duration = Duration::from_secs(20);
/// `keepalive` for the test of a parked connection's expiry: well past
/// `PARK_AFTER`, so the connection is parked first.
const KEEPALIVE: Duration = Duration::from_secs(4);
/// How long after its keepalive a connection must be closed by (a sweep
/// every 0.5 s, then the resumed coroutine closes it), on a loaded machine.
const CLOSED_WITHIN: Duration = Duration::from_secs(10);
/// A graceful stop of a worker whose connections are all parked ends long
/// before its `graceful_timeout` (60 s here).
const STOPPED_WITHIN: Duration = Duration::from_secs(10);

const COROUTINES: &str = "orders_http_connection_coroutines";
const PARKED: &str = "orders_http_connections_parked";
const OPEN: &str = "orders_http_connections_open";

fn one_worker_with_metrics(extra: &[&str]) -> Server {
    Server::builder().workers(1).metrics().args(extra).start()
}

/// Waits until `n` connections are parked and no coroutine serves one;
/// panics with the gauges otherwise.
fn wait_parked(s: &Server, n: usize) {
    let parked = wait_until(PARKED_WITHIN, || {
        s.metric(PARKED) == n as f64 && s.metric(COROUTINES) == 0.0
    });
    assert!(
        parked,
        "expected {n} parked and no connection coroutine: parked {}, coroutines {}, open {}",
        s.metric(PARKED),
        s.metric(COROUTINES),
        s.metric(OPEN)
    );
}

#[test]
fn a_thousand_idle_connections_give_up_their_coroutines_and_are_served_again() {
    raise_nofile();
    let s = one_worker_with_metrics(&[]);
    assert_eq!(s.metric(COROUTINES), 0.0, "the idle baseline");
    let mut clients: Vec<Client> = (0..IDLE_CONNECTIONS)
        .map(|_| {
            let mut c = s.connect();
            assert_eq!(c.request("GET", "/healthz", None).status, 200);
            c
        })
        .collect();
    assert_eq!(s.metric(OPEN), IDLE_CONNECTIONS as f64);
    wait_parked(&s, IDLE_CONNECTIONS);
    assert_eq!(
        s.metric(OPEN),
        IDLE_CONNECTIONS as f64,
        "parked, not closed"
    );

    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.request("GET", "/orders?limit=1", None);
        assert_eq!(r.status, 200, "connection {i} after it was parked");
        assert!(!r.closes(), "connection {i} stays open");
    }
    // Served, then idle again: parked again.
    wait_parked(&s, IDLE_CONNECTIONS);
    drop(clients);
    assert!(
        wait_until(PARKED_WITHIN, || s.metric(OPEN) == 0.0
            && s.metric(PARKED) == 0.0),
        "closed by their clients: open {}, parked {}",
        s.metric(OPEN),
        s.metric(PARKED)
    );
}

#[test]
fn a_parked_connection_answers_pipelined_requests_in_order() {
    let s = one_worker_with_metrics(&[]);
    let mut c = s.connect();
    assert_eq!(c.request("GET", "/healthz", None).status, 200);
    wait_parked(&s, 1);
    let id = s.create("pipelined");
    let mut batch = Vec::new();
    for path in ["/healthz", &format!("/orders/{id}"), "/nope"] {
        batch.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }
    c.send_raw(&batch);
    let statuses: Vec<u16> = (0..3)
        .map(|_| c.read_response().expect("an answer").status)
        .collect();
    assert_eq!(statuses, [200, 200, 404], "answers in request order");
}

#[test]
fn a_connection_that_never_sent_a_byte_is_parked_then_served() {
    let s = one_worker_with_metrics(&[]);
    let mut c = s.connect();
    wait_parked(&s, 1);
    assert_eq!(c.request("GET", "/healthz", None).status, 200);
}

#[test]
fn a_parked_connection_still_closes_after_keepalive() {
    let keepalive = KEEPALIVE.as_secs().to_string();
    let s = one_worker_with_metrics(&["--keepalive", &keepalive]);
    let mut c = s.connect();
    let served = Instant::now();
    assert_eq!(c.request("GET", "/healthz", None).status, 200);
    wait_parked(&s, 1);
    assert!(
        served.elapsed() < KEEPALIVE,
        "parked before its keepalive ran out ({:?}): the test proves nothing",
        served.elapsed()
    );
    assert!(
        wait_until(CLOSED_WITHIN, || s.metric(OPEN) == 0.0),
        "the parked connection was not closed after keepalive"
    );
    assert!(served.elapsed() >= KEEPALIVE, "closed before keepalive");
    assert!(c.is_closed_by_server());
    assert_eq!(s.metric(PARKED), 0.0);
}

#[test]
fn a_graceful_stop_closes_parked_connections_without_waiting_for_them() {
    let mut s = one_worker_with_metrics(&["--graceful-timeout", "60"]);
    let mut clients: Vec<Client> = (0..20).map(|_| s.connect()).collect();
    for c in &mut clients {
        assert_eq!(c.request("GET", "/healthz", None).status, 200);
    }
    wait_parked(&s, clients.len());
    let stopping = Instant::now();
    s.signal(libc::SIGTERM);
    let status = s.wait_exit(PARKED_WITHIN).expect("the server exits");
    assert!(status.success(), "{status:?}\n{}", s.log());
    assert!(
        stopping.elapsed() < STOPPED_WITHIN,
        "the drain waited {:?} for parked connections",
        stopping.elapsed()
    );
    for c in &mut clients {
        assert!(c.is_closed_by_server());
    }
    assert!(s.log().contains("exiting (graceful)"), "{}", s.log());
}
