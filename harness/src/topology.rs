//! The seed's architecture 1 as network namespaces: `db`, `app1`, `app2`,
//! `lb` and `client` on one bridged LAN, made and removed by
//! scripts/topology.sh (the same script bench/cluster.sh uses), named with
//! a prefix of this test's own so topologies of parallel tests never meet.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A topology; removed (with every process left in it) when dropped.
pub struct Topology {
    prefix: String,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/topology.sh")
}

fn run(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("run scripts/topology.sh");
    assert!(
        out.status.success(),
        "scripts/topology.sh {args:?} failed (needs root, as on the dev and CI machines): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl Topology {
    /// Creates the namespaces.
    pub fn up() -> Topology {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!(
            "ot{}n{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        run(&["up", &prefix]);
        Topology { prefix }
    }

    /// The namespace of `host` (`db`, `app1`, `app2`, `lb`, `client`).
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// `host`'s address with `port`.
    pub fn addr(&self, host: &str, port: u16) -> SocketAddr {
        let ip = run(&["addr", host]);
        format!("{}:{port}", ip.trim())
            .parse()
            .expect("an address from scripts/topology.sh")
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["down", &self.prefix])
            .status();
    }
}
