//! The test harness of orders-server, shared by every test crate of the
//! workspace: a builder that starts the real `orders-server` binary on an
//! ephemeral port with a temp data dir and learns its address from its
//! readiness notification (systemd's protocol: the harness listens on the
//! `NOTIFY_SOCKET` it gives the server and waits for `READY=1` with
//! `X_ORDERS_ADDRESS`), never from log wording; a small HTTP/1.1 client over
//! raw TCP (so tests control keep-alive, framing and every byte sent); the
//! in-memory MongoDB wire-protocol server (`mongo_wire`); SecantusDB, a
//! real MongoDB-compatible server (`secantus`); private network namespaces
//! (`netns`); wrk.

pub mod haproxy;
pub mod mongo_wire;
pub mod netns;
pub mod nginx;
pub mod pki;
pub mod secantus;
pub mod topology;

pub use netns::in_netns;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use mongo_wire::MockMongo;
use secantus::Secantus;

/// Which store a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded LMDB store in a temp data dir.
    Embedded,
    /// MongoDB: the in-memory wire-protocol server of `mongo_wire`, or the
    /// real server at `ORDERS_TEST_MONGO_URI` when that is set (each test
    /// then uses its own collection, `orders_test_<random>`).
    Mongo,
    /// MongoDB: a SecantusDB process of the test's own (WiredTiger storage).
    Secantus,
}

/// A MongoDB the tests can take down, hang and bring back: the in-memory
/// wire-protocol server or SecantusDB.
pub trait TestDatabase {
    /// A connection string for database `db`.
    fn uri(&self, db: &str) -> String;
    /// Goes down: the listener and every connection gone, data kept.
    fn go_down(&mut self);
    /// Comes back on the same port with the same data.
    fn come_back(&mut self);
    /// Stops answering, connections left open.
    fn hang(&mut self);
    /// Answers again after `hang`.
    fn unhang(&mut self);
}

impl TestDatabase for MockMongo {
    fn uri(&self, db: &str) -> String {
        MockMongo::uri(self, db)
    }
    fn go_down(&mut self) {
        self.stop()
    }
    fn come_back(&mut self) {
        self.restart()
    }
    fn hang(&mut self) {
        self.set_delay(Duration::from_secs(3600))
    }
    fn unhang(&mut self) {
        self.set_delay(Duration::ZERO)
    }
}

impl TestDatabase for Secantus {
    fn uri(&self, db: &str) -> String {
        Secantus::uri(self, db)
    }
    /// SIGKILL: the kernel resets every connection.
    fn go_down(&mut self) {
        self.kill()
    }
    fn come_back(&mut self) {
        self.restart()
    }
    /// SIGSTOP.
    fn hang(&mut self) {
        self.pause()
    }
    fn unhang(&mut self) {
        self.resume()
    }
}

/// Env var naming a real MongoDB for the mongo variant of the tests.
pub const REAL_MONGO_ENV: &str = "ORDERS_TEST_MONGO_URI";
/// Env var naming the server binary (default: `orders-server` beside the
/// test executable's directory, where cargo builds it).
pub const SERVER_BIN_ENV: &str = "ORDERS_SERVER_BIN";
/// The readiness variable carrying the address (src/master/notify.rs).
const ADDRESS_VAR: &str = "X_ORDERS_ADDRESS=";
/// The readiness variable carrying the metrics address.
const METRICS_ADDRESS_VAR: &str = "X_ORDERS_METRICS_ADDRESS=";

/// How long a server may take to report ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Read timeout of the test client.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two looks of a polling wait.
const POLL: Duration = Duration::from_millis(20);

/// The server binary: `ORDERS_SERVER_BIN`, or the workspace's
/// `target/<profile>/orders-server` (test executables live in
/// `target/<profile>/deps/`).
pub fn server_bin() -> PathBuf {
    if let Ok(p) = std::env::var(SERVER_BIN_ENV) {
        return p.into();
    }
    let exe = std::env::current_exe().expect("the test executable");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("orders-server");
    assert!(
        bin.exists(),
        "{} missing: build the server first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct Builder {
    bin: PathBuf,
    workers: Option<usize>,
    backend: Backend,
    data_dir: Option<PathBuf>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    bind: String,
    netns: Option<String>,
}

impl Builder {
    /// Two workers on 127.0.0.1:0, a fresh data dir, the embedded store.
    pub fn new() -> Builder {
        Builder {
            bin: server_bin(),
            workers: Some(2),
            backend: Backend::Embedded,
            data_dir: None,
            args: Vec::new(),
            env: Vec::new(),
            bind: "127.0.0.1:0".into(),
            netns: None,
        }
    }

    /// The binary to start.
    pub fn binary(mut self, bin: impl Into<PathBuf>) -> Builder {
        self.bin = bin.into();
        self
    }

    /// Worker processes (`-w`).
    pub fn workers(mut self, n: usize) -> Builder {
        self.workers = Some(n);
        self
    }

    /// No `-w`: the configuration file or the environment decides.
    pub fn workers_from_config(mut self) -> Builder {
        self.workers = None;
        self
    }

    /// The address to bind (default `127.0.0.1:0`).
    pub fn bind(mut self, addr: SocketAddr) -> Builder {
        self.bind = addr.to_string();
        self
    }

    /// Runs the server in a named network namespace (`ip netns exec`): a
    /// host of a test topology.
    pub fn netns(mut self, name: &str) -> Builder {
        self.netns = Some(name.to_string());
        self
    }

    /// The store.
    pub fn backend(mut self, backend: Backend) -> Builder {
        self.backend = backend;
        self
    }

    /// An existing data dir (a restart on the same data).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.data_dir = Some(dir.into());
        self
    }

    /// Serves Prometheus metrics on a port of its own (learned from the
    /// readiness notification), for [`Server::metric`].
    pub fn metrics(self) -> Builder {
        self.args(&["--metrics-bind", "127.0.0.1:0"])
    }

    /// More arguments (after the builder's own).
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Builder {
        self.args
            .extend(args.iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// An environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Builder {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts the server and waits until every worker serves.
    pub fn start(self) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| tmp.path().join("data"));
        let (mongo_args, mongo, secantus) = match self.backend {
            Backend::Embedded => (Vec::new(), None, None),
            Backend::Mongo => {
                let (args, mock) = mongo_args();
                (args, mock, None)
            }
            Backend::Secantus => {
                let db = Secantus::start();
                (collection_args(db.uri("orders_db")), None, Some(db))
            }
        };
        let mut args: Vec<String> = vec!["-b".into(), self.bind.clone()];
        if let Some(n) = self
            .workers
            .filter(|_| !self.args.iter().any(|a| a == "-w" || a == "--workers"))
        {
            args.extend(["-w".into(), n.to_string()]);
        }
        args.extend(["--data-dir".into(), data_dir.display().to_string()]);
        args.extend(mongo_args);
        args.extend(self.args.iter().cloned());
        let mut server = Server {
            child: None,
            addr: "0.0.0.0:0".parse().unwrap(),
            metrics_addr: None,
            data_dir,
            mongo,
            secantus,
            log: Arc::default(),
            notifications: Arc::default(),
            command: (self.bin.clone(), args, self.env.clone()),
            netns: self.netns.clone(),
            spawns: 0,
            _tmp: tmp,
        };
        server.spawn();
        server
    }
}

impl Default for Builder {
    fn default() -> Builder {
        Builder::new()
    }
}

/// A running server; stopped (TERM, then KILL) when dropped.
pub struct Server {
    child: Option<Child>,
    /// The address every worker serves.
    pub addr: SocketAddr,
    /// Where `GET /metrics` is served (with `--metrics-bind`).
    pub metrics_addr: Option<SocketAddr>,
    /// The data dir of the embedded store.
    pub data_dir: PathBuf,
    /// The wire-protocol test server behind a mongo-backed server.
    pub mongo: Option<MockMongo>,
    /// The SecantusDB behind a secantus-backed server.
    pub secantus: Option<Secantus>,
    log: Arc<Mutex<String>>,
    notifications: Arc<Mutex<Vec<String>>>,
    /// Binary, arguments and environment, for restarts.
    command: (PathBuf, Vec<String>, Vec<(String, String)>),
    /// The network namespace it runs in.
    netns: Option<String>,
    spawns: usize,
    _tmp: tempfile::TempDir,
}

impl Server {
    /// A builder.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// Starts with 2 workers (unless `extra` says) and a fresh data dir.
    pub fn start(extra: &[&str]) -> Server {
        Builder::new().args(extra).start()
    }

    /// Starts on the given backend (for mongo: a fresh collection).
    pub fn start_with(backend: Backend, extra: &[&str]) -> Server {
        Builder::new().backend(backend).args(extra).start()
    }

    /// Starts on an existing data dir (restarts).
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Server {
        Builder::new().data_dir(data_dir).args(extra).start()
    }

    /// Starts the process and waits for its readiness notification.
    fn spawn(&mut self) {
        let (bin, args, env) = &self.command;
        self.spawns += 1;
        let socket_path = self
            ._tmp
            .path()
            .join(format!("notify-{}.sock", self.spawns));
        let socket = UnixDatagram::bind(&socket_path).expect("the notification socket");
        let mut child = command_in(self.netns.as_deref(), bin)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("NOTIFY_SOCKET", &socket_path)
            // A process group of its own: `kill_everything` can take the
            // master and every worker at once.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start orders-server");
        self.log = Arc::default();
        collect_lines(child.stderr.take().unwrap(), self.log.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let notifications = self.notifications.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                if message.lines().any(|l| l == "READY=1") {
                    if let Some(addr) = message.lines().find_map(|l| l.strip_prefix(ADDRESS_VAR)) {
                        let metrics = message
                            .lines()
                            .find_map(|l| l.strip_prefix(METRICS_ADDRESS_VAR));
                        let _ = tx.send((addr.to_string(), metrics.map(str::to_string)));
                    }
                }
                notifications.lock().unwrap().push(message);
            }
        });
        let mut addr = None;
        let exited_early = !wait_until(START_TIMEOUT, || {
            addr = rx.try_recv().ok();
            addr.is_some() || child.try_wait().ok().flatten().is_some()
        }) || addr.is_none();
        if exited_early {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(POLL * 5); // the rest of its stderr
            panic!(
                "server did not report ready; log:\n{}",
                self.log.lock().unwrap()
            );
        }
        let (addr, metrics) = addr.unwrap();
        self.addr = addr
            .parse()
            .expect("the address in the readiness notification");
        self.metrics_addr = metrics.map(|m| {
            m.parse()
                .expect("the metrics address in the readiness notification")
        });
        self.child = Some(child);
    }

    /// The master process.
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("started")
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("started").id()
    }

    /// Stops the server (TERM, exit 0 expected) and starts it again with the
    /// same arguments, environment, data dir and database.
    pub fn restart(&mut self) {
        assert!(self.stop().success(), "exit status after TERM");
        self.spawn();
    }

    /// Everything the server logged so far (since its last start).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Every notification (sd_notify datagram) the server sent so far.
    pub fn notifications(&self) -> Vec<String> {
        self.notifications.lock().unwrap().clone()
    }

    /// A new keep-alive connection.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// One request on a fresh connection.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        self.connect().request(method, path, body)
    }

    /// Sends a signal to the master.
    pub fn signal(&self, sig: i32) {
        send_signal(self.pid() as i32, sig);
    }

    /// SIGKILL to the master and every worker at once (a crash, a power
    /// cut as the processes see it); waits for the master to be gone.
    pub fn kill_everything(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.pid() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child().wait();
    }

    /// Starts the server again after it died (`kill_everything`), with the
    /// same arguments, environment, data dir and database.
    pub fn start_again(&mut self) {
        assert!(
            self.child().try_wait().unwrap().is_some(),
            "the server is still running"
        );
        self.spawn();
    }

    /// Sends TERM and waits for the master to exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(40))
            .expect("master exits after TERM")
    }

    /// Waits up to `timeout` for the master to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child();
        let mut status = None;
        wait_until(timeout, || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        status
    }

    /// The metrics (`GET /metrics` on the metrics address) as
    /// `(series, value)` pairs, e.g. `("orders_generation", 1.0)`.
    pub fn metrics(&self) -> Vec<(String, f64)> {
        let addr = self.metrics_addr.expect("started with --metrics-bind");
        let r = Client::connect(addr).request("GET", "/metrics", None);
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                l.rsplit_once(' ')
                    .map(|(k, v)| (k.to_string(), v.parse().expect("a number")))
            })
            .collect()
    }

    /// One metric series' value, e.g.
    /// `orders_http_requests_total{method="GET",route="/orders",status="200"}`.
    /// Panics when the series is absent (a renamed metric must fail a
    /// test); use `metric_or_zero` for a series that may not exist yet.
    pub fn metric(&self, series: &str) -> f64 {
        let all = self.metrics();
        match all.iter().find(|(k, _)| k == series) {
            Some((_, v)) => *v,
            None => panic!("no series {series} in:\n{all:#?}"),
        }
    }

    /// As `metric`, 0 when the series is absent (a request counter
    /// appears with its first request).
    pub fn metric_or_zero(&self, series: &str) -> f64 {
        self.metrics()
            .into_iter()
            .find(|(k, _)| k == series)
            .map_or(0.0, |(_, v)| v)
    }

    /// Pids of the workers (children of the master).
    pub fn worker_pids(&self) -> Vec<i32> {
        let pid = self.pid();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Sends `raw` on a new connection, closes the sending side (a client
    /// that stops mid-request), and reads the answer.
    pub fn send_truncated(&self, raw: &[u8]) -> Option<Resp> {
        let mut c = self.connect();
        c.send_raw(raw);
        c.stream.shutdown(std::net::Shutdown::Write).unwrap();
        c.read_response()
    }

    /// Creates `n` orders whose product is `size` bytes long; returns the
    /// first one's `_id`.
    pub fn create_large(&self, n: usize, size: usize) -> String {
        let product = "x".repeat(size);
        let mut c = self.connect();
        let mut first = None;
        for i in 0..n {
            let body = serde_json::json!({"product": product, "quantity": i + 1, "customer_name": "N", "customer_address": "A"});
            let r = c.request("POST", "/orders", Some(&body.to_string()));
            assert_eq!(r.status, 200, "{}", r.text());
            first.get_or_insert_with(|| r.json()["order"]["_id"].as_str().unwrap().to_string());
        }
        first.expect("at least one order")
    }

    /// Creates an order; returns its `_id`.
    pub fn create(&self, product: &str) -> String {
        let r = self.request("POST", "/orders", Some(&order_json(product, 1)));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["order"]["_id"].as_str().unwrap().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            self.signal(libc::SIGTERM);
            if self.wait_exit(Duration::from_secs(10)).is_none() {
                let child = self.child();
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Appends the lines of `stream` to `log` from a thread of its own.
fn collect_lines(stream: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            log.lock().unwrap().push_str(&(line + "\n"));
        }
    });
}

/// Arguments selecting MongoDB: the real one of `ORDERS_TEST_MONGO_URI`, or
/// a fresh wire-protocol test server. Each call gets its own collection.
pub fn mongo_args() -> (Vec<String>, Option<MockMongo>) {
    match std::env::var(REAL_MONGO_ENV) {
        Ok(uri) => (collection_args(uri), None),
        Err(_) => {
            let m = MockMongo::start();
            (collection_args(m.uri("orders_db")), Some(m))
        }
    }
}

/// `--mongo-uri URI` and a collection of this call's own.
fn collection_args(uri: String) -> Vec<String> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = format!(
        "orders_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    vec![
        "--mongo-uri".into(),
        uri,
        "--mongo-collection".into(),
        unique,
    ]
}

/// The server binary, with no ORDERS_* variables inherited from the caller.
pub fn command(bin: &Path) -> Command {
    command_in(None, bin)
}

/// Same, run in network namespace `netns` when given (`ip netns exec`
/// execs the binary: the child's pid is the server's).
pub fn command_in(netns: Option<&str>, bin: &Path) -> Command {
    let mut cmd = netns::command(netns, bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("ORDERS_") || k == "MONGO_URI" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs the binary to completion (for start-up errors): status and stderr.
pub fn run_to_exit(
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> (Option<i32>, String) {
    let mut child = command(&server_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_until(timeout, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().filter(|_| exited), text)
}

/// Waits until `cond` holds, polling, up to `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(POLL);
    }
    cond()
}

/// Established connections on the server's side of `port`.
pub fn established_on(port: u16) -> usize {
    let out = std::process::Command::new("ss")
        .args(["-Htn", "state", "established", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2)");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// Raises this process's soft open-file limit to its hard limit (for
/// tests that hold thousands of sockets).
pub fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
}

/// A valid order body.
pub fn order_json(product: &str, quantity: i64) -> String {
    serde_json::json!({
        "product": product, "quantity": quantity,
        "customer_name": "Bob Anderson", "customer_address": "101 Pine St"
    })
    .to_string()
}

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The error message of an error body.
    pub fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .expect("a message")
            .to_string()
    }
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// A keep-alive HTTP/1.1 connection.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).expect("connect")
    }

    /// None when the connection is refused (a server stopping).
    pub fn try_connect(addr: SocketAddr) -> Option<Client> {
        Client::over(TcpStream::connect(addr).ok()?)
    }

    /// A client on a connection made elsewhere (from a chosen address, or
    /// after bytes of another protocol were sent on it).
    pub fn over(stream: TcpStream) -> Option<Client> {
        stream.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
        stream.set_nodelay(true).ok()?;
        let reader = BufReader::new(stream.try_clone().ok()?);
        Some(Client { stream, reader })
    }

    /// Sends one request (with Content-Length when there is a body) and reads the response.
    pub fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> Resp {
        self.request_with(method, path, &[], body)
    }

    /// As `request`; None when the connection fails instead of an answer.
    pub fn try_request(&mut self, method: &str, path: &str, body: Option<&str>) -> Option<Resp> {
        self.stream
            .write_all(&request_bytes(method, path, &[], body))
            .ok()?;
        self.read_response_to(method)
    }

    /// As `request`, with extra header lines ("Name: value").
    pub fn request_with(
        &mut self,
        method: &str,
        path: &str,
        extra: &[&str],
        body: Option<&str>,
    ) -> Resp {
        self.send_raw(&request_bytes(method, path, extra, body));
        self.read_response_to(method).expect("a response")
    }

    /// Sends `raw` and reads its answer, which must close the connection:
    /// it says `Connection: close`, and the server then closes.
    pub fn closing_answer(&mut self, raw: &[u8]) -> Resp {
        self.send_raw(raw);
        let r = self
            .read_response()
            .unwrap_or_else(|| panic!("no answer to {:?}", String::from_utf8_lossy(raw)));
        assert!(
            r.closes(),
            "{:?}: no Connection: close",
            String::from_utf8_lossy(raw)
        );
        assert!(
            self.is_closed_by_server(),
            "{:?}: the connection stayed open",
            String::from_utf8_lossy(raw)
        );
        r
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads one response; None if the connection closed first.
    pub fn read_response(&mut self) -> Option<Resp> {
        self.read_response_to("GET")
    }

    /// Reads the response to a `method` request: one to HEAD, and a 1xx,
    /// 204 or 304, has no body whatever its header fields say.
    pub fn read_response_to(&mut self, method: &str) -> Option<Resp> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).ok()?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':')?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        if method == "HEAD" || matches!(status, 100..=199 | 204 | 304) {
            return Some(Resp {
                status,
                headers,
                body: Vec::new(),
            });
        }
        let chunked = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        });
        if chunked {
            let body = self.read_chunked()?;
            return Some(Resp {
                status,
                headers,
                body,
            });
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).ok()?;
        Some(Resp {
            status,
            headers,
            body,
        })
    }

    /// A chunked body (nginx's responses), without trailers.
    fn read_chunked(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let mut size_line = String::new();
            self.reader.read_line(&mut size_line).ok()?;
            let size = usize::from_str_radix(size_line.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                return Some(body);
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }

    /// True when the server closed the connection (EOF or reset) within the timeout.
    pub fn is_closed_by_server(&mut self) -> bool {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 1];
        match self.reader.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => {
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut
            }
        }
    }
}

/// A request's bytes: Host, and Content-Length when there is a body.
fn request_bytes(method: &str, path: &str, extra: &[&str], body: Option<&str>) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    req.into_bytes()
}

/// What wrk reported.
#[derive(Debug, Default)]
pub struct WrkResult {
    pub requests: u64,
    /// Connect, read, write and timeout errors.
    pub socket_errors: u64,
    /// Of those, requests that got no answer within wrk's timeout.
    pub timeouts: u64,
    pub non_2xx: u64,
    pub output: String,
}

/// A wrk Lua script alternating `GET /orders?limit=5` and `POST /orders`.
pub const MIXED_LUA: &str = r#"
local n = 0
request = function()
  n = n + 1
  if n % 2 == 0 then
    return wrk.format("POST", "/orders", {["Content-Type"] = "application/json"},
      '{"product":"P","quantity":1,"customer_name":"N","customer_address":"A"}')
  end
  return wrk.format("GET", "/orders?limit=5")
end
"#;

impl WrkResult {
    /// Panics unless the load ran (more than `at_least` requests) and no
    /// request failed (a socket error or a non-2xx answer); shows wrk's
    /// output and `server_log` if one did.
    pub fn assert_all_served(&self, at_least: u64, server_log: &str) {
        assert!(self.requests > at_least, "the load ran: {}", self.output);
        assert_eq!(
            (self.socket_errors, self.non_2xx),
            (0, 0),
            "failed requests:\n{}\n{server_log}",
            self.output
        );
    }
}

/// Starts wrk (keep-alive, the mixed GET/POST script) against `addr`.
pub fn start_wrk(
    addr: SocketAddr,
    connections: u32,
    seconds: u32,
) -> (std::process::Child, tempfile::TempDir) {
    start_wrk_at(&format!("http://{addr}/"), connections, seconds)
}

/// As [`start_wrk`], against `url` (`https://...`: wrk speaks TLS too).
pub fn start_wrk_at(
    url: &str,
    connections: u32,
    seconds: u32,
) -> (std::process::Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("mixed.lua");
    std::fs::write(&script, MIXED_LUA).unwrap();
    let child = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--timeout",
            "5s",
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk is installed (scripts/test.sh installs it)");
    (child, dir)
}

/// Waits for wrk and parses its report.
pub fn finish_wrk(child: std::process::Child) -> WrkResult {
    let out = child.wait_with_output().unwrap();
    let output =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut r = WrkResult {
        output: output.clone(),
        ..WrkResult::default()
    };
    for line in output.lines() {
        let nums: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok())
            .collect();
        if line.contains("Socket errors") {
            // "Socket errors: connect 0, read 3, write 0, timeout 0"
            r.socket_errors = nums.iter().sum();
            r.timeouts = nums.last().copied().unwrap_or(0);
        } else if line.contains("Non-2xx") {
            r.non_2xx = nums.last().copied().unwrap_or(0);
        } else if line.contains("requests in") {
            r.requests = nums.first().copied().unwrap_or(0);
        }
    }
    r
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`, ...).
pub fn status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in {status}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Writes `text` to a new file at `path` that only its owner may read
/// (mode 0600: the server refuses a tokens file others may read).
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Runs each named test function (`fn NAME(b: Backend)`, in the calling
/// file) on every backend, as `embedded::NAME`, `mongo::NAME` (the strict
/// in-memory wire-protocol server) and `secantus::NAME` (SecantusDB:
/// WiredTiger storage, a real server).
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $( #[test] fn $name() { super::$name($crate::Backend::Embedded) } )*
        }
        mod mongo {
            $( #[test] fn $name() { super::$name($crate::Backend::Mongo) } )*
        }
        mod secantus {
            $( #[test] fn $name() { super::$name($crate::Backend::Secantus) } )*
        }
    };
}

/// Sends signal `sig` (a libc number, e.g. `libc::SIGTERM`) to `pid`; a
/// process that is gone already is no error.
pub fn send_signal(pid: i32, sig: i32) {
    let sig = nix::sys::signal::Signal::try_from(sig).expect("a valid signal number");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}
