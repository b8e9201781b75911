//! HTTP semantics that strict clients, caches and checkers rely on (RFC
//! 9110/9112), over real HTTP against the real binary: HEAD, OPTIONS,
//! validators (`ETag`, `If-None-Match`, 304), preconditions on writes
//! (`If-Match`, `If-None-Match: *`, 412, compared atomically with the
//! write), `Cache-Control`, strict request targets and `X-Request-Id`.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

use orders_harness as support;
use support::{order_json, Backend, Client, Server};

// Each on every backend: embedded::NAME, mongo::NAME, secantus::NAME.
support::on_every_backend!(
    an_order_is_tagged_and_revalidated,
    writes_meet_their_preconditions_or_412,
    one_of_many_racing_conditional_puts_wins,
    tags_survive_a_restart,
);

/// Header fields of a response that a HEAD must repeat (all but Date).
fn fields(r: &support::Resp) -> BTreeMap<String, String> {
    r.headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("date"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

fn etag(r: &support::Resp) -> String {
    r.header("etag")
        .unwrap_or_else(|| panic!("no ETag: {:?}", r.headers))
        .to_string()
}

/// Finding 1 of the issue: a HEAD answer carried a body, which a client
/// (correctly reading none) took for the start of the next response.
#[test]
fn head_then_a_pipelined_get_on_one_connection_reads_intact() {
    let s = Server::start(&[]);
    s.create("ProductY");
    let mut c = s.connect();
    c.send_raw(
        b"HEAD /orders HTTP/1.1\r\nHost: t\r\n\r\nGET /orders?limit=1 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let head = c.read_response_to("HEAD").expect("the HEAD answer");
    assert_eq!(head.status, 200);
    let get = c.read_response().expect("the GET answer");
    assert_eq!(get.status, 200, "{}", get.text());
    assert_eq!(get.json()["orders"][0]["product"], "ProductY");
    // An error answer to HEAD has no body either, and the connection goes on.
    c.send_raw(
        b"HEAD /orders/nothex HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let bad = c.read_response_to("HEAD").unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.header("content-length").is_some_and(|l| l != "0"));
    let health = c.read_response().unwrap();
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
}

/// HEAD on every route that has GET: the GET's status and fields, no body.
#[test]
fn head_answers_as_get_would_without_the_body() {
    let s = Server::start(&["--response-buffer-size", "4096"]);
    let id = s.create("ProductY");
    for i in 0..60 {
        s.create(&format!("Product{i}"));
    }
    for path in [
        format!("/orders/{id}"),
        "/orders?limit=2".to_string(),
        "/orders".to_string(), // streamed: longer than the 4 KiB buffer
        "/orders/ffffffffffffffffffffffff".to_string(),
        "/healthz".to_string(),
        "/readyz".to_string(),
    ] {
        let mut c = s.connect();
        let get = c.request("GET", &path, None);
        let head = c.request("HEAD", &path, None);
        assert_eq!(head.status, get.status, "{path}");
        assert_eq!(fields(&head), fields(&get), "{path}");
        assert!(head.body.is_empty());
        if path == "/orders" {
            assert_eq!(get.header("transfer-encoding"), Some("chunked"), "streamed");
            assert!(get.header("etag").is_none(), "a streamed list has no tag");
            assert_eq!(
                get.header("cache-control"),
                Some("no-store"),
                "nothing to revalidate"
            );
        }
        // The connection is still in step: nothing of a body was sent.
        assert_eq!(c.request("GET", "/healthz", None).status, 200, "{path}");
    }
}

#[test]
fn options_tells_the_methods_of_each_route_and_of_the_server() {
    let s = Server::start(&[]);
    let order = format!("/orders/{}", s.create("ProductY"));
    for (path, allow) in [
        ("/orders", "GET, HEAD, POST, OPTIONS"),
        (order.as_str(), "GET, HEAD, PUT, DELETE, OPTIONS"),
        ("/healthz", "GET, HEAD, OPTIONS"),
        ("*", "GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    ] {
        let r = s.request("OPTIONS", path, None);
        assert_eq!(r.status, 204, "{path}");
        assert_eq!(r.header("allow"), Some(allow), "{path}");
        assert!(r.header("content-length").is_none(), "{path}");
    }
    let r = s.request("PATCH", "/orders", None);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST, OPTIONS"));
    // As for every method of a missing order, or of a bad id.
    let missing = s.request("OPTIONS", "/orders/6566f0c2a1b2c3d4e5f60718", None);
    assert_eq!(missing.status, 404);
    assert_eq!(s.request("OPTIONS", "/orders/nothex", None).status, 400);
}

fn an_order_is_tagged_and_revalidated(b: Backend) {
    let s = Server::start_with(b, &[]);
    let id = s.create("ProductY");
    let path = format!("/orders/{id}");
    let r = s.request("GET", &path, None);
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    let tag = etag(&r);
    assert!(tag.starts_with('"') && tag.len() == 18, "{tag}");
    let mut c = s.connect();
    for inm in [
        tag.clone(),
        format!("W/{tag}"),
        format!("\"other\", {tag}"),
        "*".to_string(),
    ] {
        let r = c.request_with("GET", &path, &[&format!("If-None-Match: {inm}")], None);
        assert_eq!(r.status, 304, "If-None-Match: {inm}");
        assert_eq!(r.header("etag"), Some(tag.as_str()));
        assert!(r.body.is_empty() && r.header("content-length").is_none());
    }
    let r = c.request_with("GET", &path, &["If-None-Match: \"other\""], None);
    assert_eq!(r.status, 200);
    // A PUT answers with the new version's tag: the one a GET then gives.
    let put = c.request("PUT", &path, Some(r#"{"quantity": 7}"#));
    assert_eq!(put.status, 200);
    assert_eq!(put.header("cache-control"), Some("no-store"));
    let new_tag = etag(&put);
    assert_ne!(new_tag, tag);
    assert_eq!(etag(&c.request("GET", &path, None)), new_tag);
    let r = c.request_with("GET", &path, &[&format!("If-None-Match: {tag}")], None);
    assert_eq!(r.status, 200, "the old tag no longer matches");
    // A page of the list is tagged too; a write changes its tag.
    let page = c.request("GET", "/orders?limit=10", None);
    let page_tag = etag(&page);
    let r = c.request_with(
        "GET",
        "/orders?limit=10",
        &[&format!("If-None-Match: {page_tag}")],
        None,
    );
    assert_eq!(r.status, 304);
    s.create("ProductZ");
    let r = c.request_with(
        "GET",
        "/orders?limit=10",
        &[&format!("If-None-Match: {page_tag}")],
        None,
    );
    assert_eq!(r.status, 200);
    assert_ne!(etag(&r), page_tag);
}

fn writes_meet_their_preconditions_or_412(b: Backend) {
    let s = Server::start_with(b, &[]);
    let id = s.create("ProductY");
    let path = format!("/orders/{id}");
    let mut c = s.connect();
    let tag = etag(&c.request("GET", &path, None));
    let stale = "\"0000000000000000\"";
    let r = c.request_with(
        "PUT",
        &path,
        &[&format!("If-Match: {stale}")],
        Some(r#"{"quantity": 9}"#),
    );
    assert_eq!(r.status, 412);
    assert_eq!(r.header("etag"), Some(tag.as_str()), "the current tag");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(
        c.request("GET", &path, None).json()["order"]["quantity"],
        1,
        "not performed"
    );
    let r = c.request_with(
        "PUT",
        &path,
        &["If-None-Match: *"],
        Some(r#"{"quantity": 9}"#),
    );
    assert_eq!(
        r.status, 412,
        "If-None-Match: * never overwrites an existing order"
    );
    let r = c.request_with(
        "PUT",
        &path,
        &[&format!("If-Match: {stale}, {tag}")],
        Some(r#"{"quantity": 9}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let tag = etag(&r);
    let r = c.request_with("DELETE", &path, &[&format!("If-Match: {stale}")], None);
    assert_eq!(r.status, 412);
    assert_eq!(c.request("GET", &path, None).status, 200, "not deleted");
    let r = c.request_with("DELETE", &path, &[&format!("If-Match: {tag}")], None);
    assert_eq!(r.status, 200);
    let r = c.request_with("PUT", &path, &["If-Match: *"], Some(r#"{"quantity": 1}"#));
    assert_eq!(r.status, 412, "If-Match: * needs a current order");
    assert!(r.header("etag").is_none());
    let r = c.request_with(
        "PUT",
        &path,
        &["If-None-Match: *"],
        Some(r#"{"quantity": 1}"#),
    );
    assert_eq!(r.status, 404, "no order to update");
    // POST: the collection has no tag and always exists.
    let body = order_json("P", 1);
    assert_eq!(
        c.request_with("POST", "/orders", &["If-None-Match: *"], Some(&body))
            .status,
        412
    );
    assert_eq!(
        c.request_with(
            "POST",
            "/orders",
            &[&format!("If-Match: {tag}")],
            Some(&body)
        )
        .status,
        412
    );
    assert_eq!(
        c.request_with("POST", "/orders", &["If-Match: *"], Some(&body))
            .status,
        200
    );
}

/// The lost update the preconditions exist to prevent: many clients, on
/// every worker, PUT one order with the same `If-Match`; exactly one wins.
fn one_of_many_racing_conditional_puts_wins(b: Backend) {
    const CLIENTS: usize = 16;
    let s = Server::builder().backend(b).workers(3).start();
    let id = s.create("ProductY");
    let path = format!("/orders/{id}");
    let tag = etag(&s.request("GET", &path, None));
    let start = Arc::new(Barrier::new(CLIENTS));
    let racers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (addr, path, tag, start) = (s.addr, path.clone(), tag.clone(), start.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let body = format!("{{\"quantity\": {}}}", 100 + i);
                start.wait();
                let r = c.request_with("PUT", &path, &[&format!("If-Match: {tag}")], Some(&body));
                (r.status, r.json())
            })
        })
        .collect();
    let answers: Vec<(u16, serde_json::Value)> =
        racers.into_iter().map(|t| t.join().unwrap()).collect();
    let winners: Vec<_> = answers.iter().filter(|(st, _)| *st == 200).collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    assert_eq!(
        answers.iter().filter(|(st, _)| *st == 412).count(),
        CLIENTS - 1,
        "{answers:?}"
    );
    let stored = s.request("GET", &path, None).json();
    assert_eq!(
        stored["order"]["quantity"],
        winners[0].1["order"]["quantity"]
    );
}

/// A tag depends on the stored order alone: the same after a restart, and
/// on every worker.
fn tags_survive_a_restart(b: Backend) {
    let mut s = Server::builder().backend(b).workers(2).start();
    let id = s.create("ProductY");
    let path = format!("/orders/{id}");
    let tag = etag(&s.request("GET", &path, None));
    for _ in 0..6 {
        assert_eq!(etag(&s.request("GET", &path, None)), tag, "every worker");
    }
    s.restart();
    assert_eq!(etag(&s.request("GET", &path, None)), tag);
}

#[test]
fn every_answer_says_how_it_may_be_cached() {
    let s = Server::start(&[]);
    let id = s.create("ProductY");
    let mut c = s.connect();
    let new_order = order_json("P", 1);
    for (method, path, body, want) in [
        ("GET", format!("/orders/{id}"), None, "no-cache"),
        ("GET", "/orders".into(), None, "no-cache"),
        ("GET", "/orders?limit=1".into(), None, "no-cache"),
        ("GET", "/healthz".into(), None, "no-store"),
        ("GET", "/readyz".into(), None, "no-store"),
        (
            "GET",
            "/orders/ffffffffffffffffffffffff".into(),
            None,
            "no-store",
        ),
        ("GET", "/nowhere".into(), None, "no-store"),
        ("GET", "/orders?limit=0".into(), None, "no-store"),
        (
            "PUT",
            format!("/orders/{id}"),
            Some(r#"{"quantity":3}"#),
            "no-store",
        ),
        (
            "POST",
            "/orders".into(),
            Some(new_order.as_str()),
            "no-store",
        ),
        ("PATCH", "/orders".into(), None, "no-store"),
        ("OPTIONS", "/orders".into(), None, "no-store"),
    ] {
        let r = c.request(method, &path, body);
        assert_eq!(
            r.header("cache-control"),
            Some(want),
            "{method} {path}: {}",
            r.status
        );
    }
}

/// RFC 9112 §3.2: origin-form and absolute-form targets, `*` for OPTIONS
/// only; a Host that is no authority and a second Content-Type are 400.
#[test]
fn requests_a_server_must_refuse() {
    let s = Server::start(&[]);
    for raw in [
        "GET * HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET example.com:443 HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET foo/bar HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET http://:80/orders HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /orders HTTP/1.1\r\nHost: []:80\r\n\r\n",
        "GET /orders HTTP/1.1\r\nHost: a b/c\r\n\r\n",
        "POST /orders HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}",
    ] {
        let r = s.connect().closing_answer(raw.as_bytes());
        assert_eq!(r.status, 400, "{raw:?}");
    }
    assert_eq!(
        s.connect()
            .closing_answer(b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n")
            .status,
        400,
        "a space in the target"
    );
}

/// A HEAD refused before its head could be parsed has no body either:
/// nothing follows the answer's head but the close.
#[test]
fn a_head_refused_while_parsing_has_no_body() {
    let s = Server::start(&[]);
    for raw in [
        "HEAD /orders HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "HEAD * HTTP/1.1\r\nHost: a\r\n\r\n",
        "HEAD /orders HTTP/1.2\r\nHost: a\r\n\r\n",
        "HEAD /orders HTTP/1.1\r\nHost: a\r\nExpect: nothing\r\n\r\n",
    ] {
        let mut c = s.connect();
        c.send_raw(raw.as_bytes());
        let r = c.read_response_to("HEAD").expect("an answer");
        assert!(r.status >= 400, "{raw:?}: {}", r.status);
        assert!(c.is_closed_by_server(), "{raw:?}: bytes after the head");
    }
}

/// Answers without a tag evaluate preconditions too; a streamed list's
/// 304 keeps the 200's `Cache-Control`.
#[test]
fn untagged_answers_evaluate_preconditions() {
    let s = Server::start(&["--response-buffer-size", "4096"]);
    for i in 0..60 {
        s.create(&format!("P{i}"));
    }
    let mut c = s.connect();
    let r = c.request_with("GET", "/healthz", &["If-Match: \"x\""], None);
    assert_eq!(r.status, 412);
    let r = c.request_with("GET", "/healthz", &["If-None-Match: *"], None);
    assert_eq!(r.status, 304);
    let r = c.request_with("OPTIONS", "/orders", &["If-Match: \"x\""], None);
    assert_eq!(r.status, 412);
    let r = c.request_with("GET", "/orders", &["If-None-Match: *"], None);
    assert_eq!(r.status, 304);
    assert_eq!(
        r.header("cache-control"),
        Some("no-store"),
        "as the streamed 200"
    );
    assert!(r.header("etag").is_none());
}

/// `X-Request-Id` is echoed with the access log off too.
#[test]
fn the_request_id_is_echoed_without_the_access_log() {
    let s = Server::start(&[]);
    let r = s
        .connect()
        .request_with("GET", "/healthz", &["X-Request-Id: abc-123"], None);
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    assert!(s
        .request("GET", "/healthz", None)
        .header("x-request-id")
        .is_none());
}
