//! nginx with the shipped configuration (conf/nginx.conf, the part between
//! its markers) in front of two app instances, inside a minimal main
//! configuration of a temp dir: on loopback for the deployment tests, or in
//! the load balancer's namespace of a test topology.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::{netns, wait_until};

/// The shipped configuration.
pub const SHIPPED: &str = include_str!("../../conf/nginx.conf");
/// Debian's stream module (libnginx-mod-stream; scripts/test.sh installs it).
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
/// How long nginx may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running nginx; stopped with TERM when dropped.
pub struct Nginx {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// nginx listening on `listen` (in namespace `netns`, or here), proxying
    /// to `a` and `b`, with the shipped configuration changed by `adapt`.
    pub fn start(
        listen: SocketAddr,
        a: SocketAddr,
        b: SocketAddr,
        netns: Option<&str>,
        adapt: impl FnOnce(String) -> String,
    ) -> Nginx {
        Nginx::start_conf(listen, netns, |dir| adapt(shipped_conf(listen, a, b, dir)))
    }

    /// nginx's stream module relaying TCP from `listen` to `upstream`,
    /// opening each relayed connection with a PROXY protocol (version 1)
    /// header, as an L4 balancer in front of the server would.
    pub fn stream_with_proxy_protocol(listen: SocketAddr, upstream: SocketAddr) -> Nginx {
        Nginx::start_conf(listen, None, |dir| {
            let d = dir.display();
            let user = if nix::unistd::geteuid().is_root() {
                "user root;"
            } else {
                ""
            };
            format!(
                "load_module {STREAM_MODULE};
daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log warn; {user}
events {{ worker_connections 1024; }}
stream {{
  server {{ listen {listen}; proxy_pass {upstream}; proxy_protocol on; }}
}}
"
            )
        })
    }

    /// nginx running the configuration `conf` writes for its directory.
    fn start_conf(
        listen: SocketAddr,
        netns: Option<&str>,
        conf: impl FnOnce(&Path) -> String,
    ) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let conf_file = dir.path().join("nginx.conf");
        std::fs::write(&conf_file, conf(dir.path())).unwrap();
        let conf = conf_file;
        let child = netns::command(netns, "nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx is installed (scripts/test.sh installs it)");
        let up = netns::run_in(netns.map(str::to_string), move || {
            wait_until(START_TIMEOUT, || TcpStream::connect(listen).is_ok())
        });
        assert!(up, "nginx did not start");
        Nginx {
            child,
            addr: listen,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    /// TERM (nginx's fast shutdown: the master stops its workers, then
    /// exits); SIGKILL would leave the workers running without a master.
    fn drop(&mut self) {
        crate::send_signal(self.child.id() as i32, libc::SIGTERM);
        let exited = wait_until(START_TIMEOUT, || {
            self.child.try_wait().ok().flatten().is_some()
        });
        if !exited {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The shipped server configuration (between the markers), pointed at the
/// test instances, inside a minimal nginx main configuration.
pub fn shipped_conf(listen: SocketAddr, a: SocketAddr, b: SocketAddr, dir: &Path) -> String {
    let begin = SHIPPED
        .find("# --- orders-server begin ---")
        .expect("begin marker");
    let end = SHIPPED
        .find("# --- orders-server end ---")
        .expect("end marker");
    let part = SHIPPED[begin..end]
        .replace("10.0.0.11:8000", &a.to_string())
        .replace("10.0.0.12:8000", &b.to_string())
        .replace(
            "listen 80 backlog=16384 reuseport;",
            &format!("listen {listen};"),
        );
    assert!(
        part.contains(&a.to_string()) && part.contains(&format!("listen {listen};")),
        "markers moved"
    );
    let d = dir.display();
    let user = if nix::unistd::geteuid().is_root() {
        "user root;"
    } else {
        ""
    };
    format!(
        "daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log warn; {user}
events {{ worker_connections 4096; }}
http {{
  access_log off; default_type application/json;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  {part}
}}
"
    )
}
