//! The API contract (docs/api.md) over real HTTP against the real
//! binary: CRUD, pagination, ordering, errors, connection rules, durability.

use orders_harness as support;

use serde_json::Value;
use support::{order_json, Backend, Server};

// Each on every backend: embedded::NAME, mongo::NAME, secantus::NAME.
support::on_every_backend!(
    crud_flow_matches_app_py,
    extra_fields_are_not_stored,
    reads_see_writes_from_any_worker,
    pagination_walks_every_order_once,
    bad_pagination_arguments_are_400,
    operator_cap_settings,
    invalid_orders_are_400_naming_the_field,
    ids_paths_and_methods,
    keep_alive_connection_close_and_http_1_0,
    a_large_response_streams_and_keeps_its_connection,
    a_list_larger_than_a_chunk_streams_whole,
    data_survives_restart,
);

/// After a test on the wire-protocol server: the driver sent nothing it did not know.
fn no_unknown_commands(s: &Server) {
    if let Some(m) = &s.mongo {
        assert!(
            m.unknown().is_empty(),
            "the driver sent unknown commands: {:?}",
            m.unknown()
        );
    }
}

fn is_object_id(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 24
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn crud_flow_matches_app_py(b: Backend) {
    let s = Server::start_with(b, &[]);
    let r = s.request("POST", "/orders", Some(&order_json("ProductY", 2)));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["message"], "Order created successfully");
    let order = &body["order"];
    assert!(is_object_id(&order["_id"]), "{order}");
    assert_eq!(order["product"], "ProductY");
    assert_eq!(order["quantity"], 2);
    assert_eq!(order["customer_name"], "Bob Anderson");
    assert_eq!(order["customer_address"], "101 Pine St");
    let id = order["_id"].as_str().unwrap();

    let r = s.request("GET", &format!("/orders/{id}"), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({ "order": order }));

    let r = s.request(
        "PUT",
        &format!("/orders/{id}"),
        Some(r#"{"quantity": 5, "ignored": true}"#),
    );
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["message"], "Order updated successfully");
    assert_eq!(body["order"]["quantity"], 5);
    assert_eq!(
        body["order"]["product"], "ProductY",
        "fields not sent keep their values"
    );
    assert_eq!(body["order"]["_id"], id);
    assert!(body["order"].get("ignored").is_none());

    let r = s.request("GET", "/orders", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({ "orders": [body["order"]] }));

    let r = s.request("DELETE", &format!("/orders/{id}"), None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        serde_json::json!({ "message": "Order deleted successfully" })
    );

    for (method, body) in [
        ("GET", None),
        ("PUT", Some(r#"{"quantity":1}"#)),
        ("DELETE", None),
    ] {
        let r = s.request(method, &format!("/orders/{id}"), body);
        assert_eq!(r.status, 404, "{method}");
        assert_eq!(
            r.json(),
            serde_json::json!({ "message": "Order not found" })
        );
    }
    no_unknown_commands(&s);
}

fn extra_fields_are_not_stored(b: Backend) {
    let s = Server::start_with(b, &[]);
    let body =
        r#"{"product":"P","quantity":1,"customer_name":"N","customer_address":"A","admin":true}"#;
    let r = s.request("POST", "/orders", Some(body));
    assert_eq!(r.status, 200);
    let order = &r.json()["order"];
    assert!(order.get("admin").is_none());
    assert_eq!(order.as_object().unwrap().len(), 5);
}

#[test]
fn a_long_list_is_in_creation_order_across_workers() {
    let s = Server::start(&["-w", "3"]);
    // Each create on a fresh connection: the kernel spreads them over workers.
    let ids: Vec<String> = (0..300).map(|i| s.create(&format!("P{i}"))).collect();
    let list = s.request("GET", "/orders", None).json();
    let orders = list["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 300);
    assert!(list.get("next").is_none(), "a bare list has no next");
    for (i, (o, id)) in orders.iter().zip(&ids).enumerate() {
        assert_eq!(o["_id"], id.as_str(), "position {i}");
        assert_eq!(o["product"], format!("P{i}"));
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "ids sort in creation order");
}

fn reads_see_writes_from_any_worker(b: Backend) {
    let mut s = Server::start_with(b, &["-w", "2"]);
    for i in 0..200 {
        let id = s.create(&format!("R{i}"));
        let r = s.request("GET", &format!("/orders/{id}"), None);
        assert_eq!(
            r.status, 200,
            "order {i} not visible on the next connection"
        );
        let r = s.request(
            "PUT",
            &format!("/orders/{id}"),
            Some(r#"{"customer_name":"Z"}"#),
        );
        assert_eq!(r.status, 200);
        assert_eq!(
            s.request("GET", &format!("/orders/{id}"), None).json()["order"]["customer_name"],
            "Z"
        );
    }
    assert!(s.stop().success());
    // Both workers served part of the traffic.
    let served: Vec<u64> = s
        .log()
        .lines()
        .filter_map(|l| l.split("exiting (graceful): ").nth(1))
        .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(served.len(), 2, "{}", s.log());
    assert!(
        served.iter().all(|&n| n > 0),
        "requests per worker: {served:?}"
    );
}

fn pagination_walks_every_order_once(b: Backend) {
    let s = Server::start_with(b, &[]);
    let mut ids: Vec<String> = (0..25).map(|i| s.create(&format!("P{i}"))).collect();
    // Lists are in `_id` order (creation order on the embedded store; with
    // MongoDB, ids of different workers within one second may interleave).
    ids.sort();
    let mut seen = Vec::new();
    let mut path = "/orders?limit=10".to_string();
    loop {
        let page = s.request("GET", &path, None).json();
        let orders = page["orders"].as_array().unwrap();
        assert!(orders.len() <= 10);
        seen.extend(
            orders
                .iter()
                .map(|o| o["_id"].as_str().unwrap().to_string()),
        );
        match &page["next"] {
            Value::String(next) => {
                assert_eq!(next, seen.last().unwrap());
                path = format!("/orders?limit=10&after={next}");
            }
            Value::Null => break,
            other => panic!("next must be a string or null, got {other}"),
        }
    }
    assert_eq!(seen, ids);

    // Exactly the last 5: next is null (the server looked ahead).
    let page = s
        .request("GET", &format!("/orders?after={}&limit=5", ids[19]), None)
        .json();
    assert_eq!(page["orders"].as_array().unwrap().len(), 5);
    assert_eq!(page["next"], Value::Null);
    // `after` alone: every order after it, with next null.
    let page = s
        .request("GET", &format!("/orders?after={}", ids[4]), None)
        .json();
    assert_eq!(page["orders"].as_array().unwrap().len(), 20);
    assert_eq!(page["next"], Value::Null);
    // After the last: empty.
    let page = s
        .request("GET", &format!("/orders?limit=3&after={}", ids[24]), None)
        .json();
    assert_eq!(page, serde_json::json!({"orders": [], "next": null}));
    // A limit of 1 and the cap itself.
    let page = s.request("GET", "/orders?limit=1", None).json();
    assert_eq!(page["next"], ids[0].as_str());
    let page = s.request("GET", "/orders?limit=1000", None).json();
    assert_eq!(page["orders"].as_array().unwrap().len(), 25);
    no_unknown_commands(&s);
}

#[test]
fn a_pager_never_misses_a_newer_order() {
    let s = Server::start(&[]);
    for i in 0..4 {
        s.create(&format!("old{i}"));
    }
    let first = s.request("GET", "/orders?limit=3", None).json();
    let new_id = s.create("new");
    let mut after = first["next"].as_str().unwrap().to_string();
    let mut rest = Vec::new();
    loop {
        let page = s
            .request("GET", &format!("/orders?limit=3&after={after}"), None)
            .json();
        rest.extend(
            page["orders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["_id"].as_str().unwrap().to_string()),
        );
        match page["next"].as_str() {
            Some(n) => after = n.to_string(),
            None => break,
        }
    }
    assert_eq!(rest.last(), Some(&new_id));
}

fn bad_pagination_arguments_are_400(b: Backend) {
    let s = Server::start_with(b, &[]);
    for q in [
        "limit=0",
        "limit=-1",
        "limit=abc",
        "limit=1001",
        "limit=",
        "limit=1.5",
        "limit=+5",
        "limit=%31",
        "after=123",
        "after=zzzzzzzzzzzzzzzzzzzzzzzz",
        "after=",
        "page=2",
        "limit=5&limit=6",
        "limit=5&x=1",
    ] {
        let r = s.request("GET", &format!("/orders?{q}"), None);
        assert_eq!(r.status, 400, "{q}");
        assert!(!r.message().is_empty());
    }
}

fn operator_cap_settings(b: Backend) {
    let s = Server::start_with(b, &["--max-page-size", "5", "--cap-unpaged-list", "true"]);
    let mut ids: Vec<String> = (0..7).map(|i| s.create(&format!("P{i}"))).collect();
    ids.sort();
    assert_eq!(s.request("GET", "/orders?limit=6", None).status, 400);
    let page = s.request("GET", "/orders", None).json();
    assert_eq!(page["orders"].as_array().unwrap().len(), 5);
    assert_eq!(page["next"], ids[4].as_str());
}

fn invalid_orders_are_400_naming_the_field(b: Backend) {
    let s = Server::start_with(b, &[]);
    let base =
        serde_json::json!({"product":"P","quantity":1,"customer_name":"N","customer_address":"A"});
    for field in ["product", "quantity", "customer_name", "customer_address"] {
        let mut missing = base.clone();
        missing.as_object_mut().unwrap().remove(field);
        let r = s.request("POST", "/orders", Some(&missing.to_string()));
        assert_eq!(r.status, 400, "missing {field}");
        assert!(r.message().contains(field), "{}", r.message());

        let bad_values: Vec<Value> = if field == "quantity" {
            vec![
                "2".into(),
                2.5.into(),
                0.into(),
                (-3).into(),
                Value::Null,
                true.into(),
                serde_json::json!(2.0),
            ]
        } else {
            vec![
                "".into(),
                5.into(),
                Value::Null,
                serde_json::json!(["x"]),
                serde_json::json!({"a": 1}),
            ]
        };
        for v in bad_values {
            let mut bad = base.clone();
            bad[field] = v.clone();
            let r = s.request("POST", "/orders", Some(&bad.to_string()));
            assert_eq!(r.status, 400, "POST {field}={v}");
            assert!(r.message().contains(field), "{}", r.message());
            let put = serde_json::json!({ field: v }).to_string();
            let id = s.create("x");
            let r = s.request("PUT", &format!("/orders/{id}"), Some(&put));
            assert_eq!(r.status, 400, "PUT {field}={v}");
        }
    }
    for body in [
        "",
        "not json",
        "[1,2]",
        "\"str\"",
        "42",
        "{\"product\":",
        "null",
    ] {
        let r = s.request("POST", "/orders", Some(body));
        assert_eq!(r.status, 400, "body {body:?}");
        assert!(!r.message().is_empty());
    }
    let id = s.create("x");
    for body in ["{}", r#"{"other":1}"#, "[]", "nope"] {
        let r = s.request("PUT", &format!("/orders/{id}"), Some(body));
        assert_eq!(r.status, 400, "PUT body {body:?}");
    }
    // Nothing invalid was stored: every stored order is one of the valid
    // "x" creates above, untouched by the rejected updates.
    let list = s.request("GET", "/orders", None).json();
    for o in list["orders"].as_array().unwrap() {
        assert_eq!(o["product"], "x");
        assert_eq!(o["quantity"], 1);
        assert_eq!(o["customer_name"], "Bob Anderson");
    }
}

fn ids_paths_and_methods(b: Backend) {
    let s = Server::start_with(b, &[]);
    for bad in [
        "123",
        "zzzzzzzzzzzzzzzzzzzzzzzz",
        "6566f0c2a1b2c3d4e5f6071",
        "6566f0c2a1b2c3d4e5f607189",
    ] {
        for m in ["GET", "PUT", "DELETE"] {
            let r = s.request(m, &format!("/orders/{bad}"), Some(r#"{"quantity":1}"#));
            assert_eq!(r.status, 400, "{m} {bad}");
        }
    }
    let r = s.request("GET", "/orders/6566f0c2a1b2c3d4e5f60718", None);
    assert_eq!(r.status, 404);
    assert_eq!(r.message(), "Order not found");
    for path in [
        "/",
        "/order",
        "/orders/",
        "/orders/6566f0c2a1b2c3d4e5f60718/x",
        "/ordersx",
    ] {
        let r = s.request("GET", path, None);
        assert_eq!(r.status, 404, "{path}");
        assert!(!r.message().is_empty());
    }
    // HEAD and OPTIONS are answered on every route (tests/semantics.rs).
    for (m, path, allow) in [
        ("TRACE", "/orders", "GET, HEAD, POST, OPTIONS"),
        ("PATCH", "/orders", "GET, HEAD, POST, OPTIONS"),
        ("DELETE", "/orders", "GET, HEAD, POST, OPTIONS"),
        (
            "POST",
            "/orders/6566f0c2a1b2c3d4e5f60718",
            "GET, HEAD, PUT, DELETE, OPTIONS",
        ),
        (
            "TRACE",
            "/orders/6566f0c2a1b2c3d4e5f60718",
            "GET, HEAD, PUT, DELETE, OPTIONS",
        ),
    ] {
        let r = s.request(m, path, None);
        assert_eq!(r.status, 405, "{m} {path}");
        assert_eq!(r.header("allow"), Some(allow));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(!r.message().is_empty());
    }
}

fn keep_alive_connection_close_and_http_1_0(b: Backend) {
    let s = Server::start_with(b, &[]);
    let mut c = s.connect();
    for _ in 0..5 {
        let r = c.request("GET", "/orders", None);
        assert_eq!(r.status, 200);
        assert!(!r.closes());
    }
    let r = c.closing_answer(b"GET /orders HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    let r = s.connect().closing_answer(b"GET /orders HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
}

fn a_large_response_streams_and_keeps_its_connection(b: Backend) {
    let s = Server::start_with(b, &["--response-buffer-size", "4096"]);
    for i in 0..60 {
        s.create(&format!("P{i}"));
    }
    let mut c = s.connect();
    let small = c.request("GET", "/orders?limit=2", None);
    assert!(!small.closes());
    assert!(small.header("transfer-encoding").is_none());
    let big = c.request("GET", "/orders", None);
    assert_eq!(big.status, 200);
    assert!(big.body.len() > 4096);
    assert_eq!(big.header("transfer-encoding"), Some("chunked"));
    assert_eq!(big.json()["orders"].as_array().unwrap().len(), 60);
    assert!(!big.closes());
    let again = c.request("GET", "/orders?limit=2", None);
    assert_eq!(
        again.status, 200,
        "the connection is reused after a streamed list"
    );
    no_unknown_commands(&s);
}

fn a_list_larger_than_a_chunk_streams_whole(b: Backend) {
    // 2,200 orders (~250 KB) against a 64 KiB buffer: three chunks, streamed.
    let s = Server::start_with(b, &["--response-buffer-size", "65536"]);
    let mut c = s.connect();
    let mut ids = Vec::new();
    for i in 0..2200 {
        let r = c.request("POST", "/orders", Some(&order_json(&format!("P{i}"), 1)));
        ids.push(r.json()["order"]["_id"].as_str().unwrap().to_string());
    }
    ids.sort();
    let mut c = s.connect();
    let r = c.request("GET", "/orders", None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("transfer-encoding"),
        Some("chunked"),
        "a list over the buffer is streamed"
    );
    assert!(!r.closes());
    let list = r.json();
    let got: Vec<&str> = list["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids, "every order once, in _id order, across chunks");
    assert!(list.get("next").is_none());
    assert_eq!(
        c.request("GET", "/orders?limit=1", None).status,
        200,
        "kept alive after the stream"
    );
    no_unknown_commands(&s);
}

fn data_survives_restart(b: Backend) {
    let mut s = Server::start_with(b, &[]);
    let a = s.create("A");
    let gone = s.create("B");
    assert_eq!(
        s.request("DELETE", &format!("/orders/{gone}"), None).status,
        200
    );
    assert_eq!(
        s.request("PUT", &format!("/orders/{a}"), Some(r#"{"quantity":7}"#))
            .status,
        200
    );
    s.restart();
    let list = s.request("GET", "/orders", None).json();
    assert_eq!(list["orders"].as_array().unwrap().len(), 1);
    assert_eq!(list["orders"][0]["_id"], a.as_str());
    assert_eq!(list["orders"][0]["quantity"], 7);
    assert_eq!(
        s.request("GET", &format!("/orders/{gone}"), None).status,
        404
    );
    no_unknown_commands(&s);
}

#[test]
fn embedded_ids_never_go_back_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut s = Server::start_in(&data, &[]);
    let a = s.create("A");
    let b = s.create("B");
    assert_eq!(
        s.request("DELETE", &format!("/orders/{b}"), None).status,
        200
    );
    assert!(s.stop().success());

    let s = Server::start_in(&data, &[]);
    let list = s.request("GET", "/orders", None).json();
    assert_eq!(list["orders"].as_array().unwrap().len(), 1);
    assert_eq!(list["orders"][0]["_id"], a.as_str());
    let c = s.create("C");
    assert!(c > b, "a new id ({c}) sorts after the deleted newest ({b})");
}

#[test]
fn a_full_store_answers_503_and_keeps_serving_reads() {
    let s = Server::start(&["--map-size", "1048576"]);
    let kept = s.create("kept");
    let big = "x".repeat(100_000);
    let mut saw_503 = false;
    for _ in 0..30 {
        let r = s.request("POST", "/orders", Some(&order_json(&big, 1)));
        if r.status == 503 {
            assert!(r.header("retry-after").is_some());
            assert!(
                !r.message().contains("MDB"),
                "no internals: {}",
                r.message()
            );
            saw_503 = true;
            break;
        }
        assert_eq!(r.status, 200);
    }
    assert!(saw_503, "a 1 MiB store never filled");
    assert_eq!(
        s.request("GET", &format!("/orders/{kept}"), None).status,
        200
    );
}
