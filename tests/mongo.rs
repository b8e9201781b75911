//! The MongoDB backend beyond the shared API tests: what the driver sends,
//! documents of other shapes (the seed's, written by pymongo), the
//! database down, hung or absent at start, configuration and secrets.
//! Failure tests run against both test databases: the strict in-memory
//! wire-protocol server (harness `mongo_wire`: it tells us when the driver
//! starts sending something new) and SecantusDB (harness `secantus`: a real
//! server process on WiredTiger, killed with SIGKILL and restarted on the
//! same port and storage, or frozen with SIGSTOP).

use orders_harness as support;

use std::time::{Duration, Instant};

use bson::doc;
use bson::oid::ObjectId;
use serde_json::{json, Value};
use support::mongo_wire::MockMongo;
use support::secantus::{reserve_port, Secantus};
use support::{order_json, run_to_exit, wait_until, Server, TestDatabase};

/// store_timeout_ms for these tests.
const DEADLINE_MS: u64 = 1000;
/// A 503 must come within the deadline plus this.
const SLACK: Duration = Duration::from_millis(1500);
/// How long service may take to resume once the database is back.
const RESUME: Duration = Duration::from_secs(15);
/// Answers in a row that show every worker of two serves again: the chance
/// that all go to the same one is 2^-19.
const SERVED_IN_A_ROW: usize = 20;

/// Each test in the list runs against both test databases:
/// `mock::NAME` and `secantus::NAME`.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod mock {
            $( #[test] fn $name() { super::$name::<super::MockMongo>() } )*
        }
        mod secantus {
            $( #[test] fn $name() { super::$name::<super::Secantus>() } )*
        }
    };
}

on_both_databases!(
    database_down_is_a_quick_503_and_service_resumes,
    a_hung_database_is_a_503_within_the_deadline,
    starting_with_the_database_down_serves_503_until_it_is_up,
);

/// A test database started on a given loopback port.
trait Launch: TestDatabase + Sized {
    fn launch_on(port: u16) -> Self;
    fn launch() -> Self {
        Self::launch_on(reserve_port())
    }
}

impl Launch for MockMongo {
    fn launch_on(port: u16) -> Self {
        MockMongo::start_on(port)
    }
}

impl Launch for Secantus {
    fn launch_on(port: u16) -> Self {
        Secantus::start_on(port)
    }
}

fn start(db: &impl TestDatabase, extra: &[&str]) -> Server {
    let uri = db.uri("orders_db");
    let timeout = DEADLINE_MS.to_string();
    let mut args = vec!["--mongo-uri", &uri, "--store-timeout-ms", &timeout];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Whether GET `path` is answered 200 by every worker within [`RESUME`]:
/// [`SERVED_IN_A_ROW`] answers in a row, each on a new connection (which
/// the kernel gives to any worker), since each worker's driver learns on
/// its own that the database is back.
fn resumed(s: &Server, path: &str) -> bool {
    wait_until(RESUME, || {
        (0..SERVED_IN_A_ROW).all(|_| s.request("GET", path, None).status == 200)
    })
}

fn assert_quick_503(s: &Server, method: &str, path: &str, body: Option<&str>) {
    let started = Instant::now();
    let r = s.request(method, path, body);
    assert_eq!(r.status, 503, "{method} {path}: {}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        !r.message().to_lowercase().contains("mongo"),
        "no internals: {}",
        r.message()
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(DEADLINE_MS) + SLACK,
        "503 took {took:?}"
    );
}

fn database_down_is_a_quick_503_and_service_resumes<D: Launch>() {
    let mut db = D::launch();
    let s = start(&db, &[]);
    let id = s.create("before");
    db.go_down();
    assert_quick_503(&s, "GET", &format!("/orders/{id}"), None);
    assert_quick_503(&s, "POST", "/orders", Some(&order_json("during", 1)));
    assert_quick_503(&s, "GET", "/orders", None);
    let pids = s.worker_pids();
    db.come_back();
    assert!(
        resumed(&s, &format!("/orders/{id}")),
        "service did not resume (or the order written before the outage is gone): {}\n{}",
        s.request("GET", &format!("/orders/{id}"), None).text(),
        s.log()
    );
    assert_eq!(
        s.request("POST", "/orders", Some(&order_json("after", 1)))
            .status,
        200
    );
    assert_eq!(s.worker_pids(), pids, "no worker died during the outage");
}

fn a_hung_database_is_a_503_within_the_deadline<D: Launch>() {
    let mut db = D::launch();
    let s = start(&db, &[]);
    let id = s.create("x");
    db.hang();
    assert_quick_503(&s, "GET", &format!("/orders/{id}"), None);
    assert_quick_503(
        &s,
        "PUT",
        &format!("/orders/{id}"),
        Some(r#"{"quantity":2}"#),
    );
    let pids = s.worker_pids();
    db.unhang();
    assert!(
        resumed(&s, &format!("/orders/{id}")),
        "service did not resume:\n{}",
        s.log()
    );
    let put = s.request("PUT", &format!("/orders/{id}"), Some(r#"{"quantity":3}"#));
    assert_eq!(put.status, 200, "{}\n{}", put.text(), s.log());
    assert_eq!(
        s.worker_pids(),
        pids,
        "no worker died while the database hung"
    );
}

fn starting_with_the_database_down_serves_503_until_it_is_up<D: Launch>() {
    let port = reserve_port();
    let uri = format!("mongodb://127.0.0.1:{port}/orders_db?heartbeatFrequencyMS=500");
    let timeout = DEADLINE_MS.to_string();
    let s = Server::start(&["--mongo-uri", &uri, "--store-timeout-ms", &timeout]);
    assert_quick_503(&s, "GET", "/orders", None);
    let _db = D::launch_on(port);
    assert!(
        resumed(&s, "/orders"),
        "service did not start once the database came up"
    );
    let id = s.create("x");
    assert_eq!(s.request("GET", &format!("/orders/{id}"), None).status, 200);
}

#[test]
fn the_seed_layout_is_used_and_the_driver_sends_only_known_commands() {
    let mock = MockMongo::start();
    let s = start(&mock, &[]);
    assert!(
        s.log().contains("store: mongo mongodb://127.0.0.1"),
        "{}",
        s.log()
    );
    let id = s.create("P");
    assert_eq!(
        s.request("PUT", &format!("/orders/{id}"), Some(r#"{"quantity":3}"#))
            .status,
        200
    );
    assert_eq!(s.request("GET", "/orders?limit=1", None).status, 200);
    assert_eq!(
        s.request("DELETE", &format!("/orders/{id}"), None).status,
        200
    );
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
    mock.insert_raw(
        doc! { "_id": odd, "product": "legacy", "quantity": "two", "note": { "by": "app.py" } },
    );
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
    let r = s.request(
        "PUT",
        &format!("/orders/{bare}"),
        Some(r#"{"product":"fixed"}"#),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["order"],
        serde_json::json!({"_id": bare.to_hex(), "product": "fixed"})
    );
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
    assert!(
        (1..=5).contains(&get_mores),
        "batched, not one round trip per document: {get_mores} getMore"
    );
}

#[test]
fn the_seeds_mongo_uri_variable_is_accepted() {
    let mock = MockMongo::start();
    let s = Server::builder()
        .workers(1)
        .env("MONGO_URI", &mock.uri("orders_db"))
        .start();
    s.create("via MONGO_URI");
    assert_eq!(mock.count(), 1);
    assert!(
        !s.data_dir.join("data.mdb").exists(),
        "the embedded store was not used"
    );
}

#[test]
fn bad_mongo_settings_exit_2_before_forking() {
    let cases: [(&[&str], &str); 4] = [
        (&["--mongo-uri", "http://nope"], "mongo_uri"),
        (
            &["--mongo-uri", "mongodb://u:hunter2@h:notaport/db"],
            "mongo_uri",
        ),
        (
            &[
                "--mongo-uri",
                "mongodb://127.0.0.1/a",
                "--mongo-database",
                "b",
            ],
            "mongo_database",
        ),
        (
            &[
                "--mongo-uri",
                "mongodb://127.0.0.1/a",
                "--mongo-collection",
                "system.x",
            ],
            "mongo_collection",
        ),
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
    let uri = format!(
        "mongodb://app:hunter2@127.0.0.1:{}/orders_db?heartbeatFrequencyMS=500",
        mock.port
    );
    let timeout = DEADLINE_MS.to_string();
    let s = Server::start(&[
        "--mongo-uri",
        &uri,
        "--store-timeout-ms",
        &timeout,
        "--log-level",
        "debug",
    ]);
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

/// The shapes app.py's code left in `orders_db.orders`, written with pymongo
/// the way app.py wrote them; prints their ids. app.py's PUT set every
/// field from `request.json.get(...)`, so the fields a client did not send
/// became nulls.
const SEED_SHAPES_PY: &str = r#"
import datetime, json
from pymongo import MongoClient
col = MongoClient(URI).orders_db.orders
shapes = [
    {"product": "ProductY", "quantity": 2, "customer_name": "Bob", "customer_address": "101 Pine St"},
    {"product": None, "quantity": 5, "customer_name": None, "customer_address": None},
    {"product": "only a product"},
    {"product": "P", "quantity": "3"},
    {"product": "P", "quantity": 2.5},
    {"product": "P", "quantity": 2.0},
    {"product": "P", "quantity": 2**40},
    {"product": "P", "quantity": 1, "note": {"by": "app.py"}, "tags": ["a", 1], "paid": True},
    {"product": "P", "created": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)},
]
print(json.dumps([str(col.insert_one(d).inserted_id) for d in shapes]))
"#;

/// What orders-server must serve for each of SEED_SHAPES_PY's documents.
fn seed_shapes_as_served() -> Vec<Value> {
    vec![
        json!({"product": "ProductY", "quantity": 2, "customer_name": "Bob", "customer_address": "101 Pine St"}),
        json!({"product": null, "quantity": 5, "customer_name": null, "customer_address": null}),
        json!({"product": "only a product"}),
        json!({"product": "P", "quantity": "3"}),
        json!({"product": "P", "quantity": 2.5}),
        json!({"product": "P", "quantity": 2.0}),
        json!({"product": "P", "quantity": 1_099_511_627_776_i64}),
        json!({"product": "P", "quantity": 1, "note": {"by": "app.py"}, "tags": ["a", 1], "paid": true}),
        json!({"product": "P", "created": {"$date": "2024-01-02T03:04:05Z"}}),
    ]
}

#[test]
fn documents_written_by_pymongo_in_app_py_shapes_are_served_as_stored() {
    let db = Secantus::start();
    let ids: Vec<String> = serde_json::from_str(db.pymongo(SEED_SHAPES_PY).trim()).unwrap();
    let s = start(&db, &[]);
    let mut expected = Vec::new();
    for (id, mut want) in ids.iter().zip(seed_shapes_as_served()) {
        want["_id"] = json!(id);
        let r = s.request("GET", &format!("/orders/{id}"), None);
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        assert_eq!(r.json()["order"], want);
        expected.push(want);
    }
    assert_eq!(
        s.request("GET", "/orders", None).json()["orders"],
        json!(expected),
        "the whole list, in _id order"
    );
    let mut walked = Vec::new();
    let mut page = s.request("GET", "/orders?limit=4", None).json();
    loop {
        walked.extend(page["orders"].as_array().unwrap().iter().cloned());
        let Some(next) = page["next"].as_str() else {
            break;
        };
        page = s
            .request("GET", &format!("/orders?limit=4&after={next}"), None)
            .json();
    }
    assert_eq!(json!(walked), json!(expected), "paged walk");
    // A PUT on app.py's nulls changes only the field sent.
    let r = s.request(
        "PUT",
        &format!("/orders/{}", ids[1]),
        Some(r#"{"product":"fixed"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut want = expected[1].clone();
    want["product"] = json!("fixed");
    assert_eq!(r.json()["order"], want);
    assert_eq!(
        s.request("DELETE", &format!("/orders/{}", ids[3]), None)
            .status,
        200
    );
}

#[test]
fn orders_written_here_have_the_bson_types_pymongo_writes() {
    let db = Secantus::start();
    let s = start(&db, &[]);
    let small = s
        .request("POST", "/orders", Some(&order_json("small", 3)))
        .json()["order"]["_id"]
        .as_str()
        .unwrap()
        .to_string();
    let large = s
        .request("POST", "/orders", Some(&order_json("large", 5_000_000_000)))
        .json()["order"]["_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        s.request(
            "PUT",
            &format!("/orders/{small}"),
            Some(r#"{"quantity":7}"#)
        )
        .status,
        200
    );
    // Type names as pymongo decodes them: int32 -> int, int64 -> Int64.
    let script = format!(
        r#"
import json
from bson import ObjectId
from pymongo import MongoClient
col = MongoClient(URI).orders_db.orders
types = lambda d: {{k: type(v).__name__ for k, v in d.items()}}
theirs = col.insert_one({{"quantity": 3, "big": 5000000000}}).inserted_id
print(json.dumps({{
    "small": types(col.find_one({{"_id": ObjectId("{small}")}})),
    "large": types(col.find_one({{"_id": ObjectId("{large}")}})),
    "pymongo": types(col.find_one({{"_id": theirs}})),
    "quantity": col.find_one({{"_id": ObjectId("{small}")}})["quantity"],
}}))
"#
    );
    let seen: Value = serde_json::from_str(db.pymongo(&script).trim()).unwrap();
    let str_fields = json!({"_id": "ObjectId", "product": "str", "customer_name": "str", "customer_address": "str"});
    for (order, quantity_like) in [
        ("small", &seen["pymongo"]["quantity"]),
        ("large", &seen["pymongo"]["big"]),
    ] {
        for (field, t) in str_fields.as_object().unwrap() {
            assert_eq!(&seen[order][field], t, "{order}.{field}: {seen}");
        }
        assert_eq!(
            &seen[order]["quantity"], quantity_like,
            "{order}.quantity as pymongo writes it: {seen}"
        );
    }
    assert_eq!(
        seen["pymongo"]["quantity"], "int",
        "pymongo writes a small int as int32"
    );
    assert_eq!(seen["quantity"], 7, "the update");
}

#[test]
fn with_authentication_the_right_password_works_and_no_password_is_logged() {
    let mut db = Secantus::start();
    db.pymongo(
        r#"
from pymongo import MongoClient
MongoClient(URI).admin.command("createUser", "app", pwd="hunter2", roles=[{"role": "readWrite", "db": "orders_db"}])
"#,
    );
    db.restart_with(&["--auth"]);
    let timeout = DEADLINE_MS.to_string();
    let good = db.uri_as("app", "hunter2", "orders_db");
    let s = Server::start(&[
        "--mongo-uri",
        &good,
        "--store-timeout-ms",
        &timeout,
        "--log-level",
        "debug",
    ]);
    let id = s.create("authenticated");
    assert_eq!(s.request("GET", &format!("/orders/{id}"), None).status, 200);
    let bad = db.uri_as("app", "wrong-pass-77", "orders_db");
    let t = Server::start(&[
        "--mongo-uri",
        &bad,
        "--store-timeout-ms",
        &timeout,
        "--log-level",
        "debug",
    ]);
    assert_quick_503(&t, "GET", "/orders", None);
    assert_quick_503(&t, "POST", "/orders", Some(&order_json("refused", 1)));
    for (log, secret) in [(s.log(), "hunter2"), (t.log(), "wrong-pass-77")] {
        assert!(log.contains("app:****@127.0.0.1"), "{log}");
        assert!(!log.contains(secret), "password in the log:\n{log}");
    }
    assert!(!db.log().contains("hunter2"));
}

/// Established TCP connections from this machine to `port`, now.
fn connections_to(port: u16) -> usize {
    let out = std::process::Command::new("ss")
        .args([
            "-Htn",
            "state",
            "established",
            &format!("( dport = :{port} )"),
        ])
        .output()
        .expect("ss (iproute2) is installed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[test]
fn the_connection_pool_is_bounded_per_worker() {
    // (what the URI adds, the pool it allows)
    for (extra, pool) in [("", 10), ("&maxPoolSize=2", 2)] {
        let db = Secantus::start();
        // Lists of a few thousand orders keep SecantusDB busy, so
        // concurrent requests need more connections than are allowed.
        db.pymongo(
            r#"
from pymongo import MongoClient
MongoClient(URI).orders_db.orders.insert_many([{"product": "p", "quantity": 1, "customer_name": "n", "customer_address": "a"} for _ in range(3000)])
"#,
        );
        let uri = db.uri("orders_db") + extra;
        let s = Server::builder()
            .workers(1)
            .args(&["--mongo-uri", &uri, "--store-timeout-ms", "20000"])
            .start();
        let addr = s.addr;
        let clients: Vec<_> = (0..30)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut c = support::Client::connect(addr);
                    (0..3)
                        .map(|_| c.request("GET", "/orders?limit=500", None).status)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut most = 0;
        while !clients.iter().all(|c| c.is_finished()) {
            most = most.max(connections_to(db.addr.port()));
            std::thread::sleep(Duration::from_millis(20));
        }
        for c in clients {
            assert!(
                c.join().unwrap().iter().all(|s| *s == 200),
                "every request served"
            );
        }
        eprintln!("maxPoolSize {pool}: at most {most} connections");
        // The pool, plus the driver's monitoring connections (one or two).
        assert!(most <= pool + 2, "maxPoolSize {pool}: {most} connections");
        if pool == 10 {
            assert!(
                most > 4,
                "the load needed more than a few connections: {most}"
            );
        }
    }
}
