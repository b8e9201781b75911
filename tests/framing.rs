//! Raw-socket tests for request framing: bad Content-Length, chunked bodies
//! and other transfer codings, a body holding a second request, oversized
//! bodies, truncated bodies, garbage. After each, the worker keeps serving,
//! and no byte of a body ever runs as a request.

use orders_harness as support;

use std::time::{Duration, Instant};

use support::{order_json, Client, Server};

/// The server answers normally on a fresh connection (no worker died).
fn still_serving(s: &Server) {
    for _ in 0..6 {
        assert_eq!(s.request("GET", "/orders", None).status, 200);
    }
}

fn count_orders(s: &Server) -> usize {
    s.request("GET", "/orders", None).json()["orders"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn bad_content_length_is_400_and_closes() {
    let s = Server::start(&[]);
    let pids = s.worker_pids();
    for cl in ["abc", "-1", "+5", "1 2", "0x10", "5a", ""] {
        let req = format!("POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: {cl}\r\n\r\n{{}}");
        let r = s.connect().closing_answer(req.as_bytes());
        assert_eq!(r.status, 400, "Content-Length {cl:?}");
        assert!(!r.message().is_empty());
    }
    let twice =
        b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}";
    assert_eq!(s.connect().closing_answer(twice).status, 400);
    still_serving(&s);
    assert_eq!(s.worker_pids(), pids, "no worker died");
}

#[test]
fn chunked_bodies_are_decoded_and_their_bytes_never_run() {
    let s = Server::start(&[]);
    let id = s.create("keep");
    let mut c = s.connect();
    // The chunk holds a DELETE: it is the POST's body (not JSON: 400), and
    // never runs as a request; the connection stays usable.
    let smuggled = format!("DELETE /orders/{id} HTTP/1.1\r\nHost: x\r\n\r\n");
    let req = format!(
        "POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
        smuggled.len()
    );
    c.send_raw(req.as_bytes());
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.message(), "Request body is not valid JSON");
    assert!(!r.closes());
    assert_eq!(
        c.request("GET", &format!("/orders/{id}"), None).status,
        200,
        "the smuggled DELETE ran"
    );

    // A coding other than chunked: 501, closed, its bytes never run.
    let mut c = s.connect();
    let req =
        format!("POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n{smuggled}");
    c.send_raw(req.as_bytes());
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 501);
    assert!(r.closes());
    assert!(c.read_response().is_none(), "nothing after the 501");
    assert_eq!(
        s.request("GET", &format!("/orders/{id}"), None).status,
        200,
        "the smuggled DELETE ran"
    );
    still_serving(&s);
}

#[test]
fn a_body_holding_a_request_is_only_a_body() {
    let s = Server::start(&[]);
    let id = s.create("keep");
    let mut c = s.connect();
    let inner = format!("DELETE /orders/{id} HTTP/1.1\r\nHost: x\r\n\r\n");
    let req = format!(
        "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{inner}GET /orders?limit=1 HTTP/1.1\r\nHost: x\r\n\r\n",
        inner.len()
    );
    c.send_raw(req.as_bytes());
    let first = c.read_response().unwrap();
    assert_eq!(first.status, 400, "the body is invalid JSON");
    let second = c.read_response().unwrap();
    assert_eq!(second.status, 200);
    assert!(
        second.json()["orders"].is_array(),
        "the second response answers the GET"
    );
    assert_eq!(
        s.request("GET", &format!("/orders/{id}"), None).status,
        200,
        "the DELETE in the body ran"
    );

    // A GET with a body: the body is consumed, the next request still works.
    let mut c = s.connect();
    c.send_raw(b"GET /orders?limit=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\nGET /x HTTP/1.1GET /orders?limit=2 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().unwrap().status, 200);
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn oversized_body_is_413_without_reading_it() {
    let s = Server::start(&["--max-body-size", "1000"]);
    let mut c = s.connect();
    // Claim 4 GB and send none of it: the answer must not wait for the body.
    let started = Instant::now();
    c.send_raw(b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000000\r\n\r\n");
    let r = c.read_response().expect("413 without the body");
    assert_eq!(r.status, 413);
    assert!(r.closes());
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(c.is_closed_by_server());

    // Exactly at the limit is accepted (valid JSON padded with spaces).
    let body = order_json("P", 1);
    let padded = format!("{body}{}", " ".repeat(1000 - body.len()));
    assert_eq!(s.request("POST", "/orders", Some(&padded)).status, 200);
    let over = format!("{padded} ");
    assert_eq!(s.request("POST", "/orders", Some(&over)).status, 413);
    assert_eq!(count_orders(&s), 1);
    still_serving(&s);
}

#[test]
fn default_body_limit_is_one_mib() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    c.send_raw(
        format!(
            "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            1024 * 1024 + 1
        )
        .as_bytes(),
    );
    assert_eq!(c.read_response().unwrap().status, 413);
}

#[test]
fn truncated_body_and_garbage_leave_workers_up() {
    let s = Server::start(&[]);
    let pids = s.worker_pids();
    // Body shorter than announced, then the client closes its side: 400.
    let r = s
        .send_truncated(
            b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"product\"",
        )
        .expect("an answer to the truncated body");
    assert_eq!(r.status, 400);
    assert_eq!(r.message(), "Request body ended before it was complete");
    assert!(r.closes());
    // Garbage, a request line without version, NUL bytes: 400 each.
    for g in ["GARBAGE\r\n\r\n", "GET /orders\r\n\r\n", "\0\0\0\0\r\n\r\n"] {
        let mut c = s.connect();
        c.send_raw(g.as_bytes());
        assert_eq!(c.read_response().expect("an answer").status, 400, "{g:?}");
    }
    // 17 headers (more than may_minihttp allowed) are served.
    let seventeen: String = (0..17).map(|i| format!("X-H{i}: v\r\n")).collect();
    let mut c = s.connect();
    c.send_raw(format!("GET /orders HTTP/1.1\r\nHost: x\r\n{seventeen}\r\n").as_bytes());
    assert_eq!(c.read_response().expect("an answer").status, 200);
    still_serving(&s);
    assert_eq!(s.worker_pids(), pids, "no worker died");
    assert_eq!(count_orders(&s), 0);
}

#[test]
fn deeply_nested_json_is_400_not_a_crash() {
    let s = Server::start(&[]);
    let pids = s.worker_pids();
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let r = s.request("POST", "/orders", Some(&deep));
    assert_eq!(r.status, 400);
    let extra = format!(
        r#"{{"product":"P","quantity":1,"customer_name":"N","customer_address":"A","x":{}1{}}}"#,
        "{\"a\":".repeat(100_000),
        "}".repeat(100_000)
    );
    let r = s.request("POST", "/orders", Some(&extra));
    assert_eq!(r.status, 400);
    still_serving(&s);
    assert_eq!(s.worker_pids(), pids, "no worker died");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    let body = order_json("pipelined", 3);
    let req = format!(
        "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}GET /orders HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
        body.len()
    );
    c.send_raw(req.as_bytes());
    let a = c.read_response().unwrap();
    let b = c.read_response().unwrap();
    let d = c.read_response().unwrap();
    assert_eq!((a.status, b.status, d.status), (200, 200, 404));
    assert_eq!(b.json()["orders"][0]["product"], "pipelined");
}

#[test]
fn clients_mistakes_are_never_500() {
    let s = Server::start(&[]);
    let id = s.create("x");
    let cases: Vec<(String, String, Option<String>)> = vec![
        (
            "GET".into(),
            "/orders?limit=99999999999999999999999".into(),
            None,
        ),
        ("PUT".into(), format!("/orders/{id}"), Some("\u{0}".into())),
        (
            "POST".into(),
            "/orders".into(),
            Some("{\"product\": \"\\ud800\"}".into()),
        ),
        ("GET".into(), "/orders/%00%00".into(), None),
        ("DELETE".into(), "/orders?limit=1".into(), None),
        // `OPTIONS *` is a question a server answers (204); `*` with any
        // other method is a client's mistake.
        ("GET".into(), "*".into(), None),
    ];
    for (m, p, b) in cases {
        let mut c = Client::connect(s.addr);
        let r = c.request(&m, &p, b.as_deref());
        assert!(r.status >= 400 && r.status < 500, "{m} {p}: {}", r.status);
        assert!(!r.message().is_empty());
    }
}
