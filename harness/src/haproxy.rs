//! HAProxy in TCP mode in front of one server, opening each relayed
//! connection with a PROXY protocol header (`send-proxy` or
//! `send-proxy-v2`): the L4 balancer of the PROXY protocol tests. Debian's
//! `haproxy`, which scripts/test.sh installs.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_until;

/// How long HAProxy may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running HAProxy; stopped when dropped.
pub struct Haproxy {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// HAProxy listening on `listen`, relaying to `server` with the
    /// server option `send_proxy` (`send-proxy` or `send-proxy-v2`).
    pub fn start(listen: SocketAddr, server: SocketAddr, send_proxy: &str) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("haproxy.cfg");
        std::fs::write(
            &conf,
            format!(
                "global
  maxconn 1000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend front
  bind {listen}
  default_backend app
backend app
  server app {server} {send_proxy}
"
            ),
        )
        .unwrap();
        // -db: in the foreground, without forking.
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("haproxy is installed (scripts/test.sh installs it)");
        let up = wait_until(START_TIMEOUT, || TcpStream::connect(listen).is_ok());
        assert!(up, "haproxy did not start");
        Haproxy {
            child,
            addr: listen,
            _dir: dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
