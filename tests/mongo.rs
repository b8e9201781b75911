//! The MongoDB backend beyond the shared API tests: what the driver sends,
//! documents of other shapes, the database down, slow or absent at start,
//! configuration and secrets. Runs against the in-memory wire-protocol
//! server of tests/support/mongo_wire.rs.

use orders_harness as support;

use std::time::{Duration, Instant};

use bson::oid::ObjectId;
use bson::doc;
use support::mongo_wire::MockMongo;
use support::{order_json, run_to_exit, wait_until, Server};

/// store_timeout_ms for these tests.
const DEADLINE_MS: u64 = 1000;
/// A 503 must come within the deadline plus this.
const SLACK: Duration = Duration::from_millis(1500);

fn start(mock: &MockMongo, extra: &[&str]) -> Server {
    let uri = mock.uri("orders_db");
    let timeout = DEADLINE_MS.to_string();
    let mut args = vec!["--mongo-uri", &uri, "--store-timeout-ms", &timeout];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn assert_quick_503(s: &Server, method: &str, path: &str, body: Option<&str>) {
    let started = Instant::now();
    let r = s.request(method, path, body);
    assert_eq!(r.status, 503, "{method} {path}: {}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(!r.message().to_lowercase().contains("mongo"), "no internals: {}", r.message());
    let took = started.elapsed();
    assert!(took < Duration::from_millis(DEADLINE_MS) + SLACK, "503 took {took:?}");
}

#[test]
fn the_seed_layout_is_used_and_the_driver_sends_only_known_commands() {
    let mock = MockMongo::start();
    let s = start(&mock, &[]);
    assert!(s.log().contains("store: mongo mongodb://127.0.0.1"), "{}", s.log());
    let id = s.create("P");
    assert_eq!(s.request("PUT", &format!("/orders/{id}"), Some(r#"{"quantity":3}"#)).status, 200);
    assert_eq!(s.request("GET", "/orders?limit=1", None).status, 200);
    assert_eq!(s.request("DELETE", &format!("/orders/{id}"), None).status, 200);
    let seen = mock.commands();
    for c in ["isMaster", "insert", "findAndModify", "find", "delete"] {
        assert!(seen.iter().any(|x| x == c), "{c} never sent: {seen:?}");
    }
    assert!(mock.unknown().is_empty(), "{:?}", mock.unknown());
}

#[test]
fn quantities_are_stored_as_integers_like_app_py() {
    let mock = MockMongo::start();
    let s = start(&mock, &[]);
    let r = s.request("POST", "/orders", Some(&order_json("P", 3)));
    let id = r.json()["order"]["_id"].as_str().unwrap().to_string();
    let stored = s.request("GET", &format!("/orders/{id}"), None).json();
    assert_eq!(stored["order"]["quantity"], 3);
    assert!(stored["order"]["quantity"].is_i64());
}

#[test]
fn documents_of_other_shapes_are_returned_as_stored() {
    let mock = MockMongo::start();
    let odd = ObjectId::new();
    mock.insert_raw(doc! { "_id": odd, "product": "legacy", "quantity": "two", "note": { "by": "app.py" } });
    let bare = ObjectId::new();
    mock.insert_raw(doc! { "_id": bare });
    let s = start(&mock, &[]);
    let r = s.request("GET", &format!("/orders/{odd}"), None);
    assert_eq!(r.status, 200);
    let order = &r.json()["order"];
    assert_eq!(order["quantity"], "two");
    assert_eq!(order["note"]["by"], "app.py");
    assert_eq!(order["_id"], odd.to_hex());
    let list = s.request("GET", "/orders", None).json();
    assert_eq!(list["orders"].as_array().unwrap().len(), 2);
    let r = s.request("PUT", &format!("/orders/{bare}"), Some(r#"{"product":"fixed"}"#));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["order"], serde_json::json!({"_id": bare.to_hex(), "product": "fixed"}));
}

#[test]
fn a_long_list_streams_in_batches() {
    let mock = MockMongo::start();
    for i in 0..2500 {
        let _ = i;
        mock.insert_raw(doc! { "_id": ObjectId::new(), "product": "p", "quantity": 1, "customer_name": "n", "customer_address": "a" });
    }
    let s = start(&mock, &["--close-after-response-bytes", "16777216"]);
    let list = s.request("GET", "/orders", None).json();
    let orders = list["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 2500);
    let ids: Vec<&str> = orders.iter().map(|o| o["_id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "in _id order");
    let get_mores = mock.commands().iter().filter(|c| *c == "getMore").count();
    assert!((1..=5).contains(&get_mores), "batched, not one round trip per document: {get_mores} getMore");
}

#[test]
fn database_down_is_a_quick_503_and_service_resumes() {
    let mut mock = MockMongo::start();
    let s = start(&mock, &[]);
    let id = s.create("before");
    mock.stop();
    assert_quick_503(&s, "GET", &format!("/orders/{id}"), None);
    assert_quick_503(&s, "POST", "/orders", Some(&order_json("during", 1)));
    assert_quick_503(&s, "GET", "/orders", None);
    let pids = s.worker_pids();
    mock.restart();
    assert!(
        wait_until(Duration::from_secs(15), || s.request("GET", &format!("/orders/{id}"), None).status == 200),
        "service did not resume"
    );
    assert_eq!(s.request("POST", "/orders", Some(&order_json("after", 1))).status, 200);
    assert_eq!(s.worker_pids(), pids, "no worker died during the outage");
}

#[test]
fn a_slow_database_is_a_503_within_the_deadline() {
    let mock = MockMongo::start();
    let s = start(&mock, &[]);
    let id = s.create("x");
    mock.set_delay(Duration::from_millis(3 * DEADLINE_MS));
    assert_quick_503(&s, "GET", &format!("/orders/{id}"), None);
    assert_quick_503(&s, "PUT", &format!("/orders/{id}"), Some(r#"{"quantity":2}"#));
    mock.set_delay(Duration::ZERO);
    assert!(wait_until(Duration::from_secs(15), || s.request("GET", &format!("/orders/{id}"), None).status == 200));
}

#[test]
fn starting_with_the_database_down_serves_503_until_it_is_up() {
    let port = MockMongo::reserve_port();
    let uri = format!("mongodb://127.0.0.1:{port}/orders_db?heartbeatFrequencyMS=500");
    let timeout = DEADLINE_MS.to_string();
    let s = Server::start(&["--mongo-uri", &uri, "--store-timeout-ms", &timeout]);
    assert_quick_503(&s, "GET", "/orders", None);
    let mock = MockMongo::start_on(port);
    assert!(
        wait_until(Duration::from_secs(15), || s.request("GET", "/orders", None).status == 200),
        "service did not start once the database came up"
    );
    assert_eq!(s.request("POST", "/orders", Some(&order_json("x", 1))).status, 200);
    assert_eq!(mock.count(), 1);
}

#[test]
fn the_seeds_mongo_uri_variable_is_accepted() {
    let mock = MockMongo::start();
    let s = Server::builder().workers(1).env("MONGO_URI", &mock.uri("orders_db")).start();
    s.create("via MONGO_URI");
    assert_eq!(mock.count(), 1);
    assert!(!s.data_dir.join("data.mdb").exists(), "the embedded store was not used");
}

#[test]
fn bad_mongo_settings_exit_2_before_forking() {
    let cases: [(&[&str], &str); 4] = [
        (&["--mongo-uri", "http://nope"], "mongo_uri"),
        (&["--mongo-uri", "mongodb://u:hunter2@h:notaport/db"], "mongo_uri"),
        (&["--mongo-uri", "mongodb://127.0.0.1/a", "--mongo-database", "b"], "mongo_database"),
        (&["--mongo-uri", "mongodb://127.0.0.1/a", "--mongo-collection", "system.x"], "mongo_collection"),
    ];
    for (args, needle) in cases {
        let mut all = vec!["-b", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let (code, out) = run_to_exit(&all, &[], Duration::from_secs(15));
        assert_eq!(code, Some(2), "{args:?}: {out}");
        assert!(out.contains(needle), "{args:?}: {out}");
        assert!(!out.contains("hunter2"), "password leaked: {out}");
        assert!(!out.contains("started"), "nothing forked: {out}");
    }
}

#[test]
fn a_password_is_warned_about_and_never_logged() {
    let mut mock = MockMongo::start();
    let uri = format!("mongodb://app:hunter2@127.0.0.1:{}/orders_db?heartbeatFrequencyMS=500", mock.port);
    let timeout = DEADLINE_MS.to_string();
    let s = Server::start(&["--mongo-uri", &uri, "--store-timeout-ms", &timeout, "--log-level", "debug"]);
    // The test server has no authentication: every operation fails to authenticate.
    let r = s.request("GET", "/orders", None);
    assert_eq!(r.status, 503);
    mock.stop();
    let _ = s.request("GET", "/orders", None);
    let log = s.log();
    assert!(log.contains("visible to every local user"), "{log}");
    assert!(log.contains("app:****@127.0.0.1"), "{log}");
    assert!(!log.contains("hunter2"), "password in the log:\n{log}");
}
