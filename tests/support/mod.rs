//! Test support: start the real `orders-server` binary on an ephemeral port
//! with a temp data dir, and a small HTTP/1.1 client over raw TCP (so tests
//! control keep-alive, framing and every byte sent).

#![allow(dead_code)]

pub mod mongo_wire;
pub mod netns;

#[allow(unused_imports)] // not every test binary loads under a namespace
pub use netns::in_netns;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use mongo_wire::MockMongo;

/// Which store a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded LMDB store in a temp data dir.
    Embedded,
    /// MongoDB: the in-memory wire-protocol server of `mongo_wire`, or the
    /// real server at `ORDERS_TEST_MONGO_URI` when that is set (each test
    /// then uses its own collection, `orders_test_<random>`).
    Mongo,
}

/// Env var naming a real MongoDB for the mongo variant of the tests.
pub const REAL_MONGO_ENV: &str = "ORDERS_TEST_MONGO_URI";

/// How long a server may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Read timeout of the test client.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A running server; stopped (TERM, then KILL) when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// The wire-protocol test server behind a mongo-backed server.
    pub mongo: Option<MockMongo>,
    log: Arc<Mutex<String>>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts with 2 workers on 127.0.0.1:0 and a fresh data dir.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_with(Backend::Embedded, extra)
    }

    /// Starts on the given backend (for mongo: a fresh collection).
    pub fn start_with(backend: Backend, extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let (mut args, mock) = match backend {
            Backend::Embedded => (Vec::new(), None),
            Backend::Mongo => mongo_args(),
        };
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut s = Server::start_in(&data, &args);
        s._tmp = Some(tmp);
        s.mongo = mock;
        s
    }

    /// Stops the server (TERM, exit 0 expected) and starts it again with the
    /// same arguments, environment, data dir and database.
    pub fn restart(&mut self) {
        assert!(self.stop().success(), "exit status after TERM");
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut next = Server::spawn(self.args.clone(), &env, &self.data_dir);
        std::mem::swap(&mut self.child, &mut next.child);
        std::mem::swap(&mut self.log, &mut next.log);
        self.addr = next.addr;
    }

    /// Starts on an existing data dir (restarts), 2 workers unless `extra` says.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Server {
        let mut args: Vec<String> = vec!["-b".into(), "127.0.0.1:0".into()];
        if !extra.iter().any(|a| *a == "-w" || *a == "--workers") {
            args.extend(["-w".into(), "2".into()]);
        }
        args.extend(["--data-dir".into(), data_dir.display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::spawn(args, &[], data_dir)
    }

    /// Starts with exactly these arguments and extra environment.
    pub fn spawn(args: Vec<String>, env: &[(&str, &str)], data_dir: &Path) -> Server {
        let mut child = command()
            .args(&args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start orders-server");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
                log2.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(a) => a.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start; log:\n{}", log.lock().unwrap());
            }
        };
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Server { child, addr, data_dir: data_dir.to_path_buf(), mongo: None, log, args, env, _tmp: None }
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
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
        // SAFETY: plain kill(2) on our child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Sends TERM and waits for the master to exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(40)).expect("master exits after TERM")
    }

    /// Waits up to `timeout` for the master to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Pids of the workers (children of the master).
    pub fn worker_pids(&self) -> Vec<i32> {
        let path = format!("/proc/{}/task/{}/children", self.child.id(), self.child.id());
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
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
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(libc::SIGTERM);
            if self.wait_exit(Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Arguments selecting MongoDB: the real one of `ORDERS_TEST_MONGO_URI`, or
/// a fresh wire-protocol test server. Each call gets its own collection.
pub fn mongo_args() -> (Vec<String>, Option<MockMongo>) {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = format!(
        "orders_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let (uri, mock) = match std::env::var(REAL_MONGO_ENV) {
        Ok(uri) => (uri, None),
        Err(_) => {
            let m = MockMongo::start();
            (m.uri("orders_db"), Some(m))
        }
    };
    let args = vec!["--mongo-uri".into(), uri, "--mongo-collection".into(), unique];
    (args, mock)
}

/// The server binary, with no ORDERS_* variables inherited from the caller.
pub fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orders-server"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ORDERS_") || k == "MONGO_URI" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs the binary to completion (for start-up errors): status and stderr.
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> (Option<i32>, String) {
    let mut child = command()
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
            return (out.status.code(), text);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (None, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Waits until `cond` holds, polling, up to `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
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
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The error message of an error body.
    pub fn message(&self) -> String {
        self.json()["message"].as_str().expect("a message").to_string()
    }
    pub fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
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
        let stream = TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
        stream.set_nodelay(true).ok()?;
        let reader = BufReader::new(stream.try_clone().ok()?);
        Some(Client { stream, reader })
    }

    /// Sends one request (with Content-Length when there is a body) and reads the response.
    pub fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> Resp {
        self.request_with(method, path, &[], body)
    }

    /// As `request`, with extra header lines ("Name: value").
    pub fn request_with(&mut self, method: &str, path: &str, extra: &[&str], body: Option<&str>) -> Resp {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
        for h in extra {
            req.push_str(h);
            req.push_str("\r\n");
        }
        if let Some(b) = body {
            req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        req.push_str(body.unwrap_or(""));
        self.send_raw(req.as_bytes());
        self.read_response().expect("a response")
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads one response; None if the connection closed first.
    pub fn read_response(&mut self) -> Option<Resp> {
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
        let chunked = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
        if chunked {
            let body = self.read_chunked()?;
            return Some(Resp { status, headers, body });
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).ok()?;
        Some(Resp { status, headers, body })
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
        self.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1];
        match self.reader.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut,
        }
    }
}

/// What wrk reported.
#[derive(Debug, Default)]
pub struct WrkResult {
    pub requests: u64,
    /// Connect, read, write and timeout errors.
    pub socket_errors: u64,
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

/// Starts wrk (keep-alive, the mixed GET/POST script) against `addr`.
pub fn start_wrk(addr: SocketAddr, connections: u32, seconds: u32) -> (std::process::Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("mixed.lua");
    std::fs::write(&script, MIXED_LUA).unwrap();
    let child = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), "--timeout", "5s", "-s"])
        .arg(&script)
        .arg(format!("http://{addr}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk is installed (scripts/test.sh installs it)");
    (child, dir)
}

/// Waits for wrk and parses its report.
pub fn finish_wrk(child: std::process::Child) -> WrkResult {
    let out = child.wait_with_output().unwrap();
    let output = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut r = WrkResult { output: output.clone(), ..WrkResult::default() };
    for line in output.lines() {
        let nums: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok())
            .collect();
        if line.contains("Socket errors") {
            r.socket_errors = nums.iter().sum();
        } else if line.contains("Non-2xx") {
            r.non_2xx = nums.last().copied().unwrap_or(0);
        } else if line.contains("requests in") {
            r.requests = nums.first().copied().unwrap_or(0);
        }
    }
    r
}
