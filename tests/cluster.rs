//! The seed's architecture 1 across hosts, rebuilt with network namespaces
//! (scripts/topology.sh): SecantusDB on `db`, orders-server -w 2 on `app1`
//! and `app2` (MongoDB backend), nginx with conf/nginx.conf on `lb`, and the
//! test's clients on `client`. Short runs of what bench/cluster.sh measures
//! at length: an app host killed under load, the database stopped under
//! load, and a pager walking while both hosts write. Needs root.

use orders_harness as support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::netns;
use support::nginx::Nginx;
use support::secantus::Secantus;
use support::topology::Topology;
use support::{order_json, wait_until, Client, Server};

/// Each app host's store deadline.
const STORE_TIMEOUT_MS: u64 = 1000;
/// A 503 during a database outage comes within the deadline plus this.
const SLACK: Duration = Duration::from_millis(1000);
/// Client threads of a load.
const LOAD_THREADS: usize = 6;
/// The app port, as in conf/nginx.conf.
const APP_PORT: u16 = 8000;

/// The five hosts, started. Fields drop in order: the topology last.
struct Cluster {
    nginx: Nginx,
    app1: Server,
    app2: Server,
    db: Secantus,
    topo: Topology,
}

impl Cluster {
    fn start() -> Cluster {
        let topo = Topology::up();
        let db = Secantus::start_in(&topo.ns("db"), topo.addr("db", 27017));
        let app = |host: &str| {
            Server::builder()
                .netns(&topo.ns(host))
                .bind(topo.addr(host, APP_PORT))
                .workers(2)
                .args(&[
                    "--mongo-uri",
                    &db.uri("orders_db"),
                    "--store-timeout-ms",
                    &STORE_TIMEOUT_MS.to_string(),
                ])
                .start()
        };
        let (app1, app2) = (app("app1"), app("app2"));
        // The shipped limits are per client address; every test client
        // shares one.
        let nginx = Nginx::start(
            topo.addr("lb", 80),
            app1.addr,
            app2.addr,
            Some(&topo.ns("lb")),
            |conf| {
                conf.replace("rate=100r/s", "rate=100000r/s").replace(
                    "limit_conn orders_conns 1000;",
                    "limit_conn orders_conns 10000;",
                )
            },
        );
        Cluster {
            nginx,
            app1,
            app2,
            db,
            topo,
        }
    }

    /// Runs `f` on the client host.
    fn on_client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        netns::run_in(Some(self.topo.ns("client")), f)
    }
}

/// One answer (or failure) seen by a load thread.
#[derive(Debug, Clone)]
struct Seen {
    method: &'static str,
    /// The status, or 0 when the connection failed without one.
    status: u16,
    took: Duration,
    at: Instant,
}

/// Client threads on the client host sending GET by id, GET a page and
/// (when `posts`) POST through `lb` until `stop` is set.
fn load(
    cluster: &Cluster,
    ids: Vec<String>,
    posts: bool,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<Seen>>> {
    let lb = cluster.nginx.addr;
    let ns = cluster.topo.ns("client");
    (0..LOAD_THREADS)
        .map(|t| {
            let (ids, stop, ns) = (ids.clone(), stop.clone(), ns.clone());
            std::thread::spawn(move || {
                netns::enter(&ns);
                let mut seen = Vec::new();
                let mut c = Client::connect(lb);
                let mut i = t;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let (method, path, body) = match i % 3 {
                        0 if posts => ("POST", "/orders".to_string(), Some(order_json("load", 1))),
                        1 => ("GET", "/orders?limit=20".to_string(), None),
                        _ => ("GET", format!("/orders/{}", ids[i % ids.len()]), None),
                    };
                    let started = Instant::now();
                    let answer = c.try_request(method, &path, body.as_deref());
                    let status = answer.as_ref().map_or(0, |r| r.status);
                    seen.push(Seen {
                        method,
                        status,
                        took: started.elapsed(),
                        at: started,
                    });
                    if answer.is_none_or(|r| r.closes()) {
                        c = Client::connect(lb);
                    }
                }
                seen
            })
        })
        .collect()
}

fn finish(threads: Vec<std::thread::JoinHandle<Vec<Seen>>>) -> Vec<Seen> {
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

/// Creates `n` orders through `lb` from the client host; returns their ids.
fn create_orders(cluster: &Cluster, n: usize) -> Vec<String> {
    let lb = cluster.nginx.addr;
    cluster.on_client(move || {
        let mut c = Client::connect(lb);
        (0..n)
            .map(|i| {
                let r = c.request(
                    "POST",
                    "/orders",
                    Some(&order_json(&format!("seed {i}"), 1)),
                );
                assert_eq!(r.status, 200, "{}", r.text());
                r.json()["order"]["_id"].as_str().unwrap().to_string()
            })
            .collect()
    })
}

fn statuses(seen: &[Seen], method: &str) -> Vec<u16> {
    seen.iter()
        .filter(|s| s.method == method)
        .map(|s| s.status)
        .collect()
}

#[test]
fn an_app_host_killed_under_load_fails_no_idempotent_request() {
    let mut cluster = Cluster::start();
    let ids = create_orders(&cluster, 20);
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(&cluster, ids.clone(), true, stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    cluster.app1.kill_everything();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let seen = finish(threads);
    let gets = statuses(&seen, "GET");
    let posts = statuses(&seen, "POST");
    assert!(
        gets.len() > 100 && posts.len() > 50,
        "load ran: {} GETs, {} POSTs",
        gets.len(),
        posts.len()
    );
    let failed_gets: Vec<_> = gets.iter().filter(|s| **s != 200).collect();
    assert!(
        failed_gets.is_empty(),
        "GETs failed (nginx retries them on app2): {failed_gets:?}"
    );
    let failed_posts = posts.iter().filter(|s| **s != 200).count();
    // A POST in flight on app1 when it died is not retried (not
    // idempotent): at most one per client thread can be lost that way.
    assert!(
        failed_posts <= LOAD_THREADS,
        "{failed_posts} POSTs failed of {}",
        posts.len()
    );
    eprintln!(
        "app1 killed: {} GETs, 0 failed; {} POSTs, {failed_posts} failed",
        gets.len(),
        posts.len()
    );

    // app1 back: with app2 gone, every request is served by app1.
    cluster.app1.start_again();
    cluster.app2.kill_everything();
    let lb = cluster.nginx.addr;
    let id = ids[0].clone();
    let served = cluster.on_client(move || {
        // nginx retries a failed host after fail_timeout (5 s).
        wait_until(Duration::from_secs(15), || {
            Client::try_connect(lb)
                .and_then(|mut c| c.try_request("GET", &format!("/orders/{id}"), None))
                .is_some_and(|r| r.status == 200)
        }) && (0..50).all(|_| {
            Client::connect(lb)
                .request("POST", "/orders", Some(&order_json("app1 again", 1)))
                .status
                == 200
        })
    });
    assert!(served, "app1 did not take traffic again");
}

#[test]
fn the_database_stopped_under_load_is_503s_within_the_deadline_then_full_service() {
    let mut cluster = Cluster::start();
    let ids = create_orders(&cluster, 20);
    let pids = (cluster.app1.worker_pids(), cluster.app2.worker_pids());
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(&cluster, ids.clone(), true, stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    cluster.db.stop();
    std::thread::sleep(Duration::from_secs(5));
    cluster.db.restart();
    let back = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::SeqCst);
    let seen = finish(threads);

    let unavailable: Vec<&Seen> = seen.iter().filter(|s| s.status == 503).collect();
    assert!(!unavailable.is_empty(), "the outage was seen");
    let slowest = unavailable.iter().map(|s| s.took).max().unwrap();
    assert!(
        slowest < Duration::from_millis(STORE_TIMEOUT_MS) + SLACK,
        "a 503 took {slowest:?}"
    );
    let other: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.status != 200 && s.status != 503)
        .collect();
    assert!(other.is_empty(), "only 200 or 503: {other:?}");
    // Once the first request after the outage succeeds, every one does.
    let first_ok = seen
        .iter()
        .filter(|s| s.at >= back && s.status == 200)
        .map(|s| s.at)
        .min()
        .expect("service resumed");
    let after: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.at > first_ok + Duration::from_secs(1))
        .collect();
    assert!(after.len() > 50, "load after the outage: {}", after.len());
    let failed: Vec<&&Seen> = after.iter().filter(|s| s.status != 200).collect();
    assert!(failed.is_empty(), "after recovery: {failed:?}");
    assert_eq!(
        (cluster.app1.worker_pids(), cluster.app2.worker_pids()),
        pids,
        "no worker restarted"
    );
    eprintln!(
        "database down 5 s: {} requests, {} 503 (slowest {slowest:?}), recovered {:?} after it returned",
        seen.len(),
        unavailable.len(),
        first_ok.saturating_duration_since(back)
    );
}

#[test]
fn a_pager_sees_every_order_that_existed_while_both_hosts_write() {
    let cluster = Cluster::start();
    let before = create_orders(&cluster, 300);
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(Mutex::new(0usize));
    // Writers on both app hosts directly, in the same seconds as the walk.
    let writers: Vec<_> = [cluster.app1.addr, cluster.app2.addr]
        .into_iter()
        .map(|addr: SocketAddr| {
            let (stop, written, ns) = (stop.clone(), written.clone(), cluster.topo.ns("client"));
            std::thread::spawn(move || {
                netns::enter(&ns);
                let mut c = Client::connect(addr);
                while !stop.load(Ordering::SeqCst) {
                    assert_eq!(
                        c.request("POST", "/orders", Some(&order_json("meanwhile", 1)))
                            .status,
                        200
                    );
                    *written.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    let lb = cluster.nginx.addr;
    let walked = cluster.on_client(move || {
        let mut c = Client::connect(lb);
        let mut ids: Vec<String> = Vec::new();
        let mut path = "/orders?limit=25".to_string();
        loop {
            let page = c.request("GET", &path, None).json();
            ids.extend(
                page["orders"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|o| o["_id"].as_str().unwrap().to_string()),
            );
            let Some(next) = page["next"].as_str() else {
                break;
            };
            path = format!("/orders?limit=25&after={next}");
            std::thread::sleep(Duration::from_millis(20));
        }
        ids
    });
    stop.store(true, Ordering::SeqCst);
    writers.into_iter().for_each(|w| w.join().unwrap());
    let mut sorted = walked.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, walked, "pages in _id order, no order twice");
    let missing: Vec<&String> = before
        .iter()
        .filter(|id| sorted.binary_search(id).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "orders that existed when the walk started were missed: {missing:?}"
    );
    assert!(
        *written.lock().unwrap() > 0,
        "both hosts wrote during the walk"
    );
}
