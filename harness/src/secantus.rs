//! SecantusDB, a MongoDB wire-protocol server on WiredTiger (MongoDB's own
//! storage engine), as a test database: a separate `secantusd-py` process
//! (GPL-2.0: run, never linked) installed by scripts/test.sh into
//! `.venv-db/` with pymongo beside it. Each `Secantus` has its own port and
//! storage dir; it can be killed (SIGKILL) and restarted on the same port
//! and storage, paused (SIGSTOP: a hung database) and resumed, and scripts
//! can be run against it with the seed's driver (`pymongo`).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{netns, wait_until};

/// Env var naming the `secantusd-py` to run (default: the workspace's
/// `.venv-db/bin/secantusd-py`).
pub const SECANTUSD_ENV: &str = "ORDERS_TEST_SECANTUSD";
/// How long SecantusDB may take to accept connections (it starts in ~1 s).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The `secantusd-py` launcher.
pub fn secantusd() -> PathBuf {
    if let Ok(p) = std::env::var(SECANTUSD_ENV) {
        return p.into();
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv-db/bin/secantusd-py");
    assert!(
        p.exists(),
        "{} missing: scripts/test.sh installs SecantusDB (or set {SECANTUSD_ENV})",
        p.display()
    );
    p
}

/// The Python of SecantusDB's venv (it has pymongo).
pub fn python() -> PathBuf {
    secantusd().with_file_name("python3")
}

/// A running SecantusDB; killed when dropped.
pub struct Secantus {
    child: Option<Child>,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The network namespace it runs in (`None`: this one).
    netns: Option<String>,
    /// Extra flags (e.g. `--auth`).
    flags: Vec<String>,
    log: Arc<Mutex<String>>,
    storage: tempfile::TempDir,
}

impl Secantus {
    /// Starts on a free loopback port with fresh storage.
    pub fn start() -> Secantus {
        Secantus::start_on(reserve_port())
    }

    /// Starts on the given loopback port (reserved earlier with `reserve_port`).
    pub fn start_on(port: u16) -> Secantus {
        Secantus::launch(([127, 0, 0, 1], port).into(), None, &[])
    }

    /// Starts in network namespace `netns`, listening on `addr`.
    pub fn start_in(netns: &str, addr: SocketAddr) -> Secantus {
        Secantus::launch(addr, Some(netns.to_string()), &[])
    }

    fn launch(addr: SocketAddr, netns: Option<String>, flags: &[&str]) -> Secantus {
        let mut db = Secantus {
            child: None,
            addr,
            netns,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            log: Arc::default(),
            storage: tempfile::tempdir().unwrap(),
        };
        db.spawn();
        db
    }

    fn spawn(&mut self) {
        let mut cmd = netns::command(self.netns.as_deref(), secantusd());
        cmd.args([
            "--host",
            &self.addr.ip().to_string(),
            "--port",
            &self.addr.port().to_string(),
        ])
        .arg("--storage-path")
        .arg(self.storage.path())
        .args(&self.flags)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start secantusd-py");
        let log = self.log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        self.child = Some(child);
        let addr = self.addr;
        let ready = netns::run_in(self.netns.clone(), move || {
            wait_until(START_TIMEOUT, || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
        });
        assert!(
            ready,
            "secantusd-py did not listen on {addr}; log:\n{}",
            self.log()
        );
    }

    /// A connection string for database `db`: fast heartbeats, so the driver
    /// notices an outage and a return quickly.
    pub fn uri(&self, db: &str) -> String {
        format!("mongodb://{}/{db}?heartbeatFrequencyMS=500", self.addr)
    }

    /// Same, with credentials.
    pub fn uri_as(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "mongodb://{user}:{password}@{}/{db}?heartbeatFrequencyMS=500&authSource=admin",
            self.addr
        )
    }

    /// What it logged.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// SIGKILL (a crash, or a pulled plug as the process sees it); waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (`systemctl stop`): a clean shutdown; waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::send_signal(child.id() as i32, libc::SIGTERM);
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and storage (killing it first if it runs).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Restarts with other flags (e.g. `--auth` once users exist).
    pub fn restart_with(&mut self, flags: &[&str]) {
        self.flags = flags.iter().map(|f| f.to_string()).collect();
        self.restart();
    }

    /// SIGSTOP: the process hangs with its connections open. Returns once
    /// the kernel shows it stopped (a signal is delivered asynchronously: a
    /// request sent right after kill(2) could still be answered).
    pub fn pause(&self) {
        let pid = self.pid();
        crate::send_signal(pid, libc::SIGSTOP);
        let stopped = wait_until(Duration::from_secs(5), || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The state is the field after the command name's ")".
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                == Some("T")
        });
        assert!(stopped, "secantusd-py (pid {pid}) did not stop");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        crate::send_signal(self.pid(), libc::SIGCONT);
    }

    /// Runs a Python script with pymongo against this database: `URI` (for
    /// database `orders_db`) is defined before it runs. Returns its stdout;
    /// panics with its stderr when it fails.
    pub fn pymongo(&self, script: &str) -> String {
        let prelude = format!("URI = {:?}\n", self.uri("orders_db"));
        let out = netns::command(self.netns.as_deref(), python())
            .arg("-c")
            .arg(prelude + script)
            .output()
            .expect("run the venv's python");
        assert!(
            out.status.success(),
            "pymongo script failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Secantus {
    fn drop(&mut self) {
        // SIGKILL ends a paused (stopped) process too.
        self.kill();
    }
}

/// A loopback port nothing listens on yet.
pub fn reserve_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
