//! The HTTP engine against hostile and unusual clients, over real sockets
//! against the real binary: descriptor floods, pipelining with closing
//! requests, malformed requests, HTTP/1.1 features (100-continue,
//! absolute-form targets, many headers, chunked bodies), and memory per
//! client (trickled bodies, clients that do not read a large list).

use orders_harness as support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{established_on, order_json, raise_nofile, status_kib, wait_until, Client, Server};

/// CPU time (user + system) of a process so far.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// The keep-alive probe answers a request within a second.
fn probe_answers(probe: &mut Client) {
    let started = Instant::now();
    let r = probe.request("GET", "/orders?limit=1", None);
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "probe took {:?}",
        started.elapsed()
    );
}

/// One worker with these settings, its pid, and a keep-alive probe that
/// has been answered once.
fn one_worker_and_probe(args: &[&str]) -> (Server, i32, Client) {
    let s = Server::builder().workers(1).args(args).start();
    let worker = s.worker_pids()[0];
    let mut probe = s.connect();
    probe_answers(&mut probe);
    (s, worker, probe)
}

fn no_worker_was_killed(s: &Server) {
    let log = s.log();
    assert!(!log.contains("timeout"), "a worker timed out:\n{log}");
    assert!(!log.contains("killed"), "a worker was killed:\n{log}");
}

// Finding 1 (connections past the open-file limit) is tests/pressure.rs:
// the worker makes room by closing idle connections, and is never killed.

/// Out of descriptors for real (the worker's limit lowered under it):
/// accept fails with EMFILE; the loop backs off instead of spinning, open
/// connections are served, and the waiting ones once descriptors return.
#[test]
fn accept_backs_off_when_out_of_descriptors() {
    let (s, worker, mut probe) = one_worker_and_probe(&["--timeout", "5"]);
    let hard = status_limit(worker);
    set_nofile(worker, 16, hard);
    let waiting: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    let cpu_before = cpu_time(worker);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        probe_answers(&mut probe);
        std::thread::sleep(Duration::from_millis(200));
    }
    let cpu = cpu_time(worker) - cpu_before;
    assert!(
        cpu < Duration::from_millis(500),
        "the accept loop spins: {cpu:?} of CPU in 3 s"
    );
    assert!(s.log().contains("accept failed"), "{}", s.log());
    set_nofile(worker, hard, hard);
    for mut c in waiting.into_iter().take(3) {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"GET /orders HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut head = [0u8; 15];
        c.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200 OK");
    }
    assert_eq!(s.worker_pids(), vec![worker]);
    no_worker_was_killed(&s);
}

/// Sets a process's open-file limits (root may lower them under it).
fn set_nofile(pid: i32, soft: u64, hard: u64) {
    let out = std::process::Command::new("prlimit")
        .args([format!("--pid={pid}"), format!("--nofile={soft}:{hard}")])
        .output()
        .expect("prlimit (util-linux)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The hard open-file limit of a process.
fn status_limit(pid: i32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(4).unwrap().parse().unwrap()
}

/// Writes a byte to `c` every `every` (keeping it busy from the client's
/// side, never reading) until a write fails or `gone` says the server let
/// go; how long that took. Fails past `limit`.
fn time_until_closed(
    c: &mut TcpStream,
    every: Duration,
    limit: Duration,
    mut gone: impl FnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    while started.elapsed() < limit {
        std::thread::sleep(every);
        if c.write_all(b"G").is_err() || gone() {
            return started.elapsed();
        }
    }
    panic!("still connected after {limit:?}");
}

/// Finding 2: three pipelined POSTs followed by a request that closes the
/// connection get all their responses, in order, then the closing one, then
/// the close; a request after it is never executed.
#[test]
fn pipelined_responses_come_before_a_closing_one() {
    let s = Server::start(&["--max-body-size", "4096"]);
    let closing: [(&str, u16); 6] = [
        (
            "GET /orders?limit=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            200,
        ),
        ("GET /orders?limit=1 HTTP/1.0\r\n\r\n", 200),
        (
            "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: x1\r\n\r\n",
            400,
        ),
        ("GARBAGE\r\n\r\n", 400),
        (
            "POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
        ),
        (
            "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n",
            413,
        ),
    ];
    let body = order_json("piped", 1);
    let post = format!(
        "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut total = 0;
    for (request, status) in closing {
        let mut c = s.connect();
        let after = post.replace("piped", "never");
        c.send_raw(format!("{post}{post}{post}{request}{after}").as_bytes());
        let mut ids = Vec::new();
        for _ in 0..3 {
            let r = c
                .read_response()
                .unwrap_or_else(|| panic!("a POST's response was lost before {request:?}"));
            assert_eq!(r.status, 200, "{request:?}");
            assert!(!r.closes());
            ids.push(r.json()["order"]["_id"].as_str().unwrap().to_string());
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "in request order");
        let last = c
            .read_response()
            .unwrap_or_else(|| panic!("no response to {request:?}"));
        assert_eq!(last.status, status, "{request:?}: {}", last.text());
        assert!(last.closes(), "{request:?}");
        assert!(
            c.read_response().is_none(),
            "nothing after the closing response to {request:?}"
        );
        total += 3;
        let list = s.request("GET", "/orders", None).json();
        let orders = list["orders"].as_array().unwrap();
        assert_eq!(orders.len(), total, "the request after {request:?} ran");
        assert!(orders.iter().all(|o| o["product"] == "piped"));
    }
}

/// Finding 4: malformed requests get a 400 (505 for another HTTP version)
/// with a JSON message and `Connection: close`, logged at debug level only.
#[test]
fn malformed_requests_get_400_or_505() {
    let s = Server::start(&[]);
    let cases: [(&[u8], u16); 9] = [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /orders\r\n\r\n", 400),
        (b"GET /orders HTTP/1.1\r\nNoColonHere\r\n\r\n", 400),
        (b"GET /orders HTTP/1.1\r\nX-A: a\r\n folded\r\n\r\n", 400),
        (b"GET /orders HTTP/1.1\r\nX-A: a\0b\r\n\r\n", 400),
        (b"\0\0\0\0\r\n\r\n", 400),
        (b"GET /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        (b"GET /orders HTTP/1.2\r\nHost: x\r\n\r\n", 505),
    ];
    for (raw, status) in cases {
        let r = s.connect().closing_answer(raw);
        assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(raw));
        assert!(!r.message().is_empty());
    }
    // 5,000 of them log nothing at the default level (and nothing raw).
    let before = s.log().lines().count();
    for _ in 0..5000 {
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.write_all(b"GARBAGE\r\n\r\n").unwrap();
        let _ = c.read_to_end(&mut Vec::new());
    }
    let log = s.log();
    assert_eq!(
        log.lines().count(),
        before,
        "malformed requests were logged:\n{log}"
    );
    assert_eq!(s.request("GET", "/orders", None).status, 200);
}

/// Finding 5: the HTTP/1.1 features clients use.
#[test]
fn http_1_1_features() {
    let s = Server::start(&[]);
    let body = order_json("continued", 2);

    // Expect: 100-continue gets `100 Continue` before the body is sent.
    let mut c = s.connect();
    c.send_raw(format!("POST /orders HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
    let started = Instant::now();
    let interim = c.read_response().expect("100 Continue");
    assert_eq!(interim.status, 100);
    assert!(started.elapsed() < Duration::from_millis(500));
    c.send_raw(body.as_bytes());
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["order"]["product"], "continued");
    // Another expectation: 417, and the body is never read.
    c.send_raw(
        b"POST /orders HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\nContent-Length: 5\r\n\r\n",
    );
    assert_eq!(c.read_response().unwrap().status, 417);
    // A request refused before its body: the error, not 100 Continue.
    let mut c = s.connect();
    c.send_raw(b"POST /orders/zzz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(c.read_response().unwrap().status, 405);

    // Absolute-form targets.
    let mut c = s.connect();
    let r = c.request("GET", &format!("http://{}/orders", s.addr), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["orders"].as_array().unwrap().len(), 1);

    // 50 headers.
    let headers: Vec<String> = (0..50)
        .map(|i| format!("X-Header-{i}: value {i}"))
        .collect();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let r = c.request_with("GET", "/orders", &headers, None);
    assert_eq!(r.status, 200);

    // A chunked body, with an extension and a trailer.
    let (a, b) = body.split_at(10);
    let chunked = format!(
        "{:x};ext=1\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nX-Trailer: t\r\n\r\n",
        a.len(),
        b.len()
    );
    c.send_raw(
        format!("POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}")
            .as_bytes(),
    );
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.closes());
    assert_eq!(r.json()["order"]["quantity"], 2);
    // ...larger than max_body_size in total: 413.
    let s2 = Server::start(&["--max-body-size", "100"]);
    let mut c2 = s2.connect();
    let piece = "x".repeat(60);
    c2.send_raw(format!("POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3c\r\n{piece}\r\n3c\r\n{piece}\r\n0\r\n\r\n").as_bytes());
    let r = c2.read_response().unwrap();
    assert_eq!(r.status, 413);
    assert!(r.closes());
    // ...and a bad chunk size: 400.
    let mut c2 = s2.connect();
    c2.send_raw(b"POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    assert_eq!(c2.read_response().unwrap().status, 400);

    // One Server header and standard reason phrases on every path.
    let mut raw = TcpStream::connect(s.addr).unwrap();
    raw.write_all(b"GET /orders HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    raw.read_to_string(&mut text).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\nServer: orders-server\r\n"),
        "{text}"
    );
    assert!(
        text.contains("HTTP/1.1 404 Not Found\r\nServer: orders-server\r\n"),
        "{text}"
    );
    assert_eq!(text.matches("Server:").count(), 2);
}

/// Finding 3a: request bodies are held as they arrive, within one budget
/// per worker: 4,000 connections trickling large bodies cannot make the
/// worker's memory follow what they claim, and a probe is answered.
#[test]
fn trickled_bodies_stay_within_the_body_budget() {
    raise_nofile();
    let (s, worker, mut probe) = one_worker_and_probe(&[
        "--max-buffered-body-bytes",
        "33554432",
        "--client-timeout",
        "20",
    ]);
    let rss_before = status_kib(worker, "VmRSS");
    let part = vec![b' '; 100 * 1024];
    let mut trickling = Vec::new();
    for i in 0..4000 {
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        // Claims 1,000,000 bytes, sends 100 KiB, then nothing.
        let _ = c.write_all(b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n");
        let _ = c.write_all(&part);
        trickling.push(c);
        if i % 500 == 0 {
            probe_answers(&mut probe);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    probe_answers(&mut probe);
    let rss = status_kib(worker, "VmRSS");
    // 32 MiB of bodies, plus per-connection buffers and coroutine stacks.
    let bound_kib = rss_before + 32 * 1024 + 4000 * 40;
    eprintln!("worker RSS: {rss_before} KiB before, {rss} KiB with 4,000 trickling clients");
    assert!(
        rss < bound_kib,
        "worker RSS {rss} KiB with 4,000 trickling clients (bound {bound_kib} KiB; 400 MB sent)"
    );
    drop(trickling);
    assert!(wait_until(Duration::from_secs(10), || s
        .request("GET", "/orders", None)
        .status
        == 200));
    let after = status_kib(worker, "VmRSS");
    eprintln!("worker RSS after they left: {after} KiB");
    assert!(
        after < rss_before + 64 * 1024,
        "worker kept {after} KiB after the clients left (started at {rss_before})"
    );
    assert_eq!(
        s.request("GET", "/orders", None).json()["orders"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    no_worker_was_killed(&s);
}

/// Finding 3b: a list of large orders is read and sent a few orders at a
/// time, and the connection stays open after it; 8 clients that never read
/// a ~300 MB list cost about a chunk each, and others are served meanwhile.
#[test]
fn clients_that_do_not_read_a_large_list_cost_a_chunk_each() {
    let s = Server::start(&["-w", "1", "--client-timeout", "4", "--timeout", "10"]);
    let worker = s.worker_pids()[0];
    let first = s.create_large(300, 1_000_000);
    let mut probe = s.connect();
    let anon_before = status_kib(worker, "RssAnon");
    let stuck: Vec<TcpStream> = (0..8)
        .map(|i| {
            let mut c = TcpStream::connect(s.addr).unwrap();
            let target = if i % 2 == 0 {
                "/orders"
            } else {
                "/orders?limit=300"
            };
            c.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let r = probe.request("GET", &format!("/orders/{first}"), None);
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "probe waited {:?}",
        started.elapsed()
    );
    let anon = status_kib(worker, "RssAnon");
    eprintln!(
        "worker anonymous RSS: {anon_before} KiB before, {anon} KiB with 8 clients not reading"
    );
    // Each stuck client holds about one chunk (one ~1 MB order here).
    assert!(
        anon < anon_before + 8 * 4 * 1024 + 16 * 1024,
        "worker anonymous RSS {anon} KiB, {anon_before} KiB before"
    );
    // Cut off once blocked for client_timeout: only the probe is left.
    assert!(
        wait_until(Duration::from_secs(10), || established_on(s.addr.port())
            == 1),
        "{} connections still established",
        established_on(s.addr.port())
    );
    drop(stuck);
    // A reader gets the whole list, and the connection stays open after it.
    let mut reader = s.connect();
    let r = reader.request("GET", "/orders", None);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(!r.closes());
    assert_eq!(r.json()["orders"].as_array().unwrap().len(), 300);
    assert_eq!(
        reader.request("GET", "/orders?limit=1", None).status,
        200,
        "kept alive after a streamed list"
    );
    no_worker_was_killed(&s);
}

/// Review findings on the engine, each a regression test.
mod review {
    use super::*;

    /// A chunk size that would overflow the running total is refused, not
    /// wrapped past max_body_size.
    #[test]
    fn a_huge_chunk_size_is_413_not_an_overflow() {
        let s = Server::start(&["-w", "1"]);
        let mut c = s.connect();
        c.send_raw(b"POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\nffffffffffffffff\r\n");
        let r = c.read_response().expect("an answer");
        assert_eq!(r.status, 413);
        assert!(r.closes());
        let body = order_json("after", 1);
        assert_eq!(
            s.request("POST", "/orders", Some(&body)).status,
            200,
            "the body budget is intact"
        );
    }

    /// Bare LF in a chunk extension or a trailer is refused (a proxy could
    /// end the line there and frame the body differently).
    #[test]
    fn bare_line_feeds_in_chunked_framing_are_400() {
        let s = Server::start(&[]);
        let cases = [
            "5;e\nGET /x\r\nhello\r\n0\r\n\r\n",
            "5;a\0\r\nhello\r\n0\r\n\r\n",
            "5\r\nhello\r\n0\r\nX-T: a\n\r\n",
            "5\r\nhello\r\n0\r\nnocolon\r\n\r\n",
            "5\r\nhello\r\n0\r\nX-T: a\r\n folded\r\n\r\n",
            "5\r\nhello\r\n0\r\nX-T: a\0b\r\n\r\n",
        ];
        for framing in cases {
            let mut c = s.connect();
            c.send_raw(format!("POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{framing}").as_bytes());
            let r = c.read_response().expect("an answer");
            assert_eq!(r.status, 400, "{framing:?}");
            assert!(r.closes());
        }
    }

    /// An HTTP/1.0 client never gets chunked encoding: a long list comes as
    /// the raw body, ended by the close.
    #[test]
    fn http_1_0_lists_are_not_chunked() {
        let s = Server::start(&["--response-buffer-size", "4096"]);
        for i in 0..100 {
            s.create(&format!("P{i}"));
        }
        let mut raw = TcpStream::connect(s.addr).unwrap();
        raw.write_all(b"GET /orders HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        raw.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("transfer-encoding"),
            "{head}"
        );
        assert!(head.contains("Connection: close"), "{head}");
        let list: serde_json::Value =
            serde_json::from_str(body).expect("the raw body is the JSON list");
        assert_eq!(list["orders"].as_array().unwrap().len(), 100);
    }

    /// After a closing response, a client that keeps trickling bytes is
    /// not held beyond the linger time.
    #[test]
    fn lingering_after_a_close_is_bounded() {
        let s = Server::start(&["-w", "1"]);
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.write_all(b"GET /orders HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let held = time_until_closed(
            &mut c,
            Duration::from_millis(300),
            Duration::from_secs(8),
            || false,
        );
        assert!(held < Duration::from_secs(5), "held for {held:?}");
    }

    /// A client that sends but never reads its response is cut at
    /// client_timeout: its bytes do not restart the clock.
    #[test]
    fn a_client_that_sends_but_never_reads_is_cut() {
        let s = Server::start(&[
            "-w",
            "1",
            "--client-timeout",
            "2",
            "--response-buffer-size",
            "4096",
        ]);
        s.create_large(60, 100_000);
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.write_all(b"GET /orders HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let port = s.addr.port();
        let held = time_until_closed(
            &mut c,
            Duration::from_millis(500),
            Duration::from_secs(12),
            || established_on(port) == 0,
        );
        assert!(held < Duration::from_secs(7), "cut after {held:?}");
    }

    /// A graceful stop that begins while a body arrives: that request is
    /// answered with `Connection: close` (it said nothing, and the next
    /// request on the connection went unanswered).
    #[test]
    fn a_drain_during_a_body_closes_after_its_response() {
        let s = Server::start(&["-w", "1"]);
        let body = order_json("draining", 1);
        let (first, rest) = body.split_at(10);
        let mut c = s.connect();
        c.send_raw(
            format!(
                "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{first}",
                body.len()
            )
            .as_bytes(),
        );
        std::thread::sleep(Duration::from_millis(300));
        s.signal(libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(300));
        c.send_raw(rest.as_bytes());
        let r = c.read_response().expect("the request is answered");
        assert_eq!(r.status, 200);
        assert!(r.closes(), "the last response of a draining worker says so");
    }

    /// RFC 9112 §3.2: exactly one Host in an HTTP/1.1 request.
    #[test]
    fn host_is_required_once() {
        let s = Server::start(&[]);
        for raw in [
            "GET /orders HTTP/1.1\r\n\r\n",
            "GET /orders HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            let mut c = s.connect();
            c.send_raw(raw.as_bytes());
            let r = c.read_response().expect("an answer");
            assert_eq!(r.status, 400, "{raw:?}");
            assert!(r.message().contains("Host"), "{}", r.message());
        }
        let mut c = s.connect();
        c.send_raw(b"GET /orders HTTP/1.0\r\n\r\n");
        assert_eq!(
            c.read_response().unwrap().status,
            200,
            "HTTP/1.0 needs none"
        );
    }

    /// A chunked body cut short is "ended early", not a Content-Length error.
    #[test]
    fn a_truncated_chunked_body_says_so() {
        let s = Server::start(&[]);
        let r = s
            .send_truncated(
                b"POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            )
            .expect("an answer");
        assert_eq!(r.status, 400);
        assert_eq!(r.message(), "Request body ended before it was complete");
    }
}

/// A client that sends the start of a request and its end of file at once
/// (a half-close) gets its answer: a read that took the last bytes and the
/// FIN together must not be taken for "the socket is drained, wait for an
/// event" (no event comes after a FIN). Repeated, since it is a race.
#[test]
fn a_request_and_its_end_of_file_arriving_together_are_answered() {
    let s = Server::start(&["-w", "1"]);
    for i in 0..200 {
        let mut c = s.connect();
        c.stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        // Let the server's coroutine park, waiting for the request.
        std::thread::sleep(Duration::from_millis(5));
        c.send_raw(b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"product\"");
        c.stream.shutdown(std::net::Shutdown::Write).unwrap();
        let r = c
            .read_response()
            .unwrap_or_else(|| panic!("round {i}: no answer"));
        assert_eq!(r.status, 400, "round {i}");
    }
}
