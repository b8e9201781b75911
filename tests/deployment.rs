//! The deployment pieces: the shipped nginx.conf in front of two instances
//! sharing one store (real nginx), the systemd unit (systemd-analyze
//! verify), and `orders-server check` against the shipped sysctl file.

use orders_harness as support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::nginx::Nginx;
use support::{order_json, run_to_exit, Client, Server};

const SHIPPED_UNIT: &str = include_str!("../systemd/orders-server.service");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_nginx(a: SocketAddr, b: SocketAddr) -> Nginx {
    start_nginx_with(a, b, |conf| conf)
}

/// nginx on loopback with the shipped configuration, changed by `adapt`.
fn start_nginx_with(a: SocketAddr, b: SocketAddr, adapt: impl FnOnce(String) -> String) -> Nginx {
    Nginx::start(([127, 0, 0, 1], free_port()).into(), a, b, None, adapt)
}

#[test]
fn nginx_in_front_of_two_instances_sharing_one_store() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let a = Server::start_in(&data, &["-w", "1"]);
    let b = Server::start_in(&data, &["-w", "1"]);
    let nginx = start_nginx(a.addr, b.addr);
    let mut c = Client::connect(nginx.addr);

    // CRUD through nginx.
    let r = c.request("POST", "/orders", Some(&order_json("via nginx", 2)));
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["order"]["_id"].as_str().unwrap().to_string();
    for _ in 0..6 {
        // Either instance answers with the same data (one shared store).
        assert_eq!(
            c.request("GET", &format!("/orders/{id}"), None).json()["order"]["quantity"],
            2
        );
    }
    assert_eq!(
        c.request("PUT", &format!("/orders/{id}"), Some(r#"{"quantity":9}"#))
            .status,
        200
    );
    // Single orders are never cached: the update shows at once.
    for _ in 0..6 {
        assert_eq!(
            c.request("GET", &format!("/orders/{id}"), None).json()["order"]["quantity"],
            9
        );
    }
    // Nothing is cached: a list shows a write at once.
    for i in 0..3 {
        let r = c.request(
            "POST",
            "/orders",
            Some(&order_json(&format!("fresh {i}"), 1)),
        );
        let new_id = r.json()["order"]["_id"].as_str().unwrap().to_string();
        let list = c.request("GET", "/orders", None).json();
        assert!(
            list["orders"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["_id"] == new_id.as_str()),
            "stale list"
        );
        assert_eq!(
            c.request("DELETE", &format!("/orders/{new_id}"), None)
                .status,
            200
        );
    }
    assert_eq!(c.request("GET", "/nope", None).status, 404);
    assert_eq!(
        c.request("DELETE", &format!("/orders/{id}"), None).status,
        200
    );
    assert_eq!(c.request("GET", &format!("/orders/{id}"), None).status, 404);

    // Large lists are gzipped.
    for i in 0..120 {
        assert_eq!(
            c.request(
                "POST",
                "/orders",
                Some(&order_json(&format!("bulk {i}"), 1))
            )
            .status,
            200
        );
    }
    let gz = c.request_with("GET", "/orders", &["Accept-Encoding: gzip"], None);
    assert_eq!(gz.status, 200);
    assert_eq!(
        gz.header("content-encoding"),
        Some("gzip"),
        "{:?} {} bytes",
        gz.headers,
        gz.body.len()
    );
    let ids: Vec<String> = (0..5)
        .map(|i| {
            let r = c.request(
                "POST",
                "/orders",
                Some(&order_json(&format!("probe {i}"), 1)),
            );
            r.json()["order"]["_id"].as_str().unwrap().to_string()
        })
        .collect();

    // Kill instance A outright while clients read through nginx: no
    // idempotent request fails (nginx retries them on B).
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..4)
        .map(|t| {
            let (stop, failures, done, ids) =
                (stop.clone(), failures.clone(), done.clone(), ids.clone());
            let addr = nginx.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..100_000 {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let r = c.request(
                        "GET",
                        &format!("/orders/{}", ids[(i + t) % ids.len()]),
                        None,
                    );
                    if r.status != 200 {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for pid in a.worker_pids().into_iter().chain([a.pid() as i32]) {
        support::send_signal(pid, libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().unwrap();
    }
    assert!(done.load(Ordering::SeqCst) > 100, "the readers ran");
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "idempotent requests failed when an instance died"
    );
    // Writes keep working on the survivor.
    let mut c = Client::connect(nginx.addr);
    for _ in 0..5 {
        assert_eq!(
            c.request("POST", "/orders", Some(&order_json("after", 1)))
                .status,
            200
        );
    }
    drop(b);
}

/// The shipped rate limits, with the real nginx: a burst of writes from
/// one address past the limit gets 429s from nginx (and those never reach
/// the server), reads are never limited, and connections past the per-
/// address limit (lowered here to 20) get 503.
/// The shipped configuration's optional cache, turned on: it keeps orders
/// and pages but asks the app every time (If-None-Match with the stored
/// ETag), so a write shows at once, and an unchanged page costs the app a
/// 304 and no body.
#[test]
fn the_optional_nginx_cache_revalidates_every_use() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let metrics = |port: u16| format!("127.0.0.1:{port}");
    let (ma, mb) = (free_port(), free_port());
    let a = Server::start_in(&data, &["-w", "1", "--metrics-bind", &metrics(ma)]);
    let b = Server::start_in(&data, &["-w", "1", "--metrics-bind", &metrics(mb)]);
    let cache = tmp.path().join("cache");
    let nginx = start_nginx_with(a.addr, b.addr, |conf| {
        let enabled = conf
            .replace("# proxy_cache_path /var/cache/nginx/orders", &format!("proxy_cache_path {}", cache.display()))
            .replace("# proxy_cache orders_cache;", "proxy_cache orders_cache; add_header X-Cache-Status $upstream_cache_status always;")
            .replace("# proxy_cache_revalidate on;", "proxy_cache_revalidate on;");
        assert_eq!(
            enabled.matches("proxy_cache").count(),
            3,
            "the three lines moved"
        );
        enabled
    });
    let mut c = Client::connect(nginx.addr);
    let id = c
        .request("POST", "/orders", Some(&order_json("cached", 1)))
        .json()["order"]["_id"]
        .as_str()
        .unwrap()
        .to_string();
    let not_modified = || {
        let series = r#"orders_http_requests_total{method="GET",route="/orders",status="304"}"#;
        a.metric_or_zero(series) + b.metric_or_zero(series)
    };
    let first = c.request("GET", "/orders?limit=10", None);
    assert_eq!(first.header("x-cache-status"), Some("MISS"));
    for n in 1..=3 {
        let again = c.request("GET", "/orders?limit=10", None);
        assert_eq!(
            again.header("x-cache-status"),
            Some("REVALIDATED"),
            "use {n}"
        );
        assert_eq!(again.body, first.body);
        assert_eq!(not_modified(), n as f64, "the app answered 304, no body");
    }
    // A write, through nginx: the next GETs show it.
    let path = format!("/orders/{id}");
    assert_eq!(c.request("GET", &path, None).json()["order"]["quantity"], 1);
    assert_eq!(
        c.request("GET", &path, None).header("x-cache-status"),
        Some("REVALIDATED")
    );
    assert_eq!(
        c.request("PUT", &path, Some(r#"{"quantity":9}"#)).status,
        200
    );
    let r = c.request("GET", &path, None);
    assert_eq!(r.json()["order"]["quantity"], 9, "never the cached order");
    assert_eq!(r.header("x-cache-status"), Some("EXPIRED"));
    let page = c.request("GET", "/orders?limit=10", None);
    assert_eq!(
        page.json()["orders"][0]["quantity"],
        9,
        "never the cached page"
    );
    assert_eq!(c.request("DELETE", &path, None).status, 200);
    assert_eq!(c.request("GET", &path, None).status, 404);
    assert!(c.request("GET", "/orders?limit=10", None).json()["orders"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn nginx_limits_writes_and_connections_per_address() {
    let a = Server::start(&["-w", "1"]);
    let nginx = start_nginx_with(a.addr, a.addr, |conf| {
        conf.replace(
            "limit_conn orders_conns 1000;",
            "limit_conn orders_conns 20;",
        )
    });
    let mut c = Client::connect(nginx.addr);
    let body = order_json("burst", 1);
    let (mut created, mut limited) = (0, 0);
    for _ in 0..400 {
        match c.request("POST", "/orders", Some(&body)).status {
            200 => created += 1,
            429 => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(limited > 50, "{created} created, {limited} limited");
    assert!(created >= 200, "the burst allowance: {created}");
    let stored = a.request("GET", "/orders", None).json()["orders"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(stored, created, "a limited write never reached the server");
    for _ in 0..400 {
        assert_eq!(
            c.request("GET", "/orders?limit=1", None).status,
            200,
            "reads are not limited"
        );
    }
    // The limit counts requests in flight per address: keep 20 busy with
    // half-sent bodies (reads, which the write limit leaves alone), then
    // one more request is refused.
    let mut busy: Vec<Client> = (0..20).map(|_| Client::connect(nginx.addr)).collect();
    for c in busy.iter_mut() {
        c.send_raw(b"GET /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{");
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            Client::connect(nginx.addr)
                .request("GET", "/orders?limit=1", None)
                .status,
        );
    }
    assert!(
        statuses.contains(&503),
        "connections past the limit: {statuses:?}"
    );
}

#[test]
fn the_systemd_unit_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let unit = tmp.path().join("orders-server.service");
    let text = SHIPPED_UNIT.replace(
        "/usr/local/bin/orders-server",
        env!("CARGO_BIN_EXE_orders-server"),
    );
    std::fs::write(&unit, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze is installed (scripts/test.sh installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only the unit's own lines count (the host's other units may warn).
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("orders-server"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    for needed in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/sh -c 'kill -HUP $$MAINPID'",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "LimitNOFILE=",
        "EnvironmentFile=",
        "ReadWritePaths=/var/lib/orders-server",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "FileDescriptorStoreMax=1",
    ] {
        assert!(
            SHIPPED_UNIT.contains(needed),
            "{needed} missing from the unit"
        );
    }
}

#[test]
fn check_reports_kernel_settings_that_differ() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let shipped = std::fs::read_to_string("tuning/sysctl.d/99-orders-server.conf").unwrap();
    let settings: Vec<(String, String)> = shipped
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    for (k, v) in &settings {
        let path = root.join(k.replace('.', "/"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("{}\n", v.replace(' ', "\t"))).unwrap();
    }
    let root_s = root.display().to_string();
    let (code, out) = run_to_exit(
        &["check", "--proc-sys", &root_s],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "all {} kernel settings are as recommended or better",
            settings.len()
        )),
        "{out}"
    );
    assert!(
        out.contains("ok           net.core.somaxconn = 65535"),
        "{out}"
    );

    // Higher buffers are fine; a lower backlog, another tw_reuse mode and a
    // setting the kernel lacks are not, each with its reason.
    std::fs::write(root.join("net/ipv4/tcp_rmem"), "4096\t131072\t33554432\n").unwrap();
    std::fs::write(root.join("net/core/somaxconn"), "4096\n").unwrap();
    std::fs::write(root.join("net/ipv4/tcp_tw_reuse"), "2\n").unwrap();
    std::fs::remove_file(root.join("net/ipv4/tcp_migrate_req")).unwrap();
    let (code, out) = run_to_exit(
        &["check", "--proc-sys", &root_s],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("ok (better)  net.ipv4.tcp_rmem = 4096 131072 33554432 (recommended 4096 87380 16777216)"), "{out}");
    assert!(
        out.contains(
            "LOWER        net.core.somaxconn = 4096, recommended 65535: Largest accept backlog"
        ),
        "{out}"
    );
    assert!(
        out.contains("DIFFERS      net.ipv4.tcp_tw_reuse = 2, recommended 1: Reuse TIME_WAIT"),
        "{out}"
    );
    assert!(out.contains("MISSING      net.ipv4.tcp_migrate_req: not on this kernel, recommended 1: Move connections"), "{out}");
    assert!(
        out.contains(&format!(
            "3 of {} kernel settings need attention (net.core.somaxconn, net.ipv4.tcp_tw_reuse, net.ipv4.tcp_migrate_req)",
            settings.len()
        )),
        "{out}"
    );
}

#[test]
fn the_shipped_network_settings_apply_in_a_private_namespace() {
    // Only the net.* settings: they are per network namespace, so applying
    // them there leaves the host alone (fs.file-max is not).
    let shipped = std::fs::read_to_string("tuning/sysctl.d/99-orders-server.conf").unwrap();
    let net: String = shipped
        .lines()
        .filter(|l| l.starts_with("net.ipv4.") || l.starts_with("net.core.somaxconn"))
        .map(|l| format!("{l}\n"))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("99-orders-server-net.conf");
    std::fs::write(&file, &net).unwrap();
    let ns = format!("orders-sysctl-{}", std::process::id());
    let ip = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .output()
            .expect("ip (iproute2)")
    };
    assert!(
        ip(&["netns", "add", &ns]).status.success(),
        "needs root, as on the dev and CI machines"
    );
    let applied = Command::new("ip")
        .args(["netns", "exec", &ns, "sysctl", "-p"])
        .arg(&file)
        .output()
        .expect("sysctl (procps)");
    let reserved = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "cat",
            "/proc/sys/net/ipv4/ip_local_reserved_ports",
        ])
        .output()
        .unwrap();
    let range = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "cat",
            "/proc/sys/net/ipv4/ip_local_port_range",
        ])
        .output()
        .unwrap();
    ip(&["netns", "del", &ns]);
    assert!(
        applied.status.success(),
        "sysctl -p: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&reserved.stdout).trim(),
        "80,8000,9180,27017"
    );
    assert_eq!(
        normalize_ws(&String::from_utf8_lossy(&range.stdout)),
        "10240 65000"
    );
}

fn normalize_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn the_debian_package_has_what_operators_need() {
    let out_dir = tempfile::tempdir().unwrap();
    let built = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/package.sh"))
        .arg("--no-build")
        .env("ORDERS_SERVER_BIN", env!("CARGO_BIN_EXE_orders-server"))
        .env("PACKAGE_DIR", out_dir.path())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = String::from_utf8(built.stdout).unwrap().trim().to_string();
    assert!(
        deb.ends_with(&format!(
            "orders-server_{}_amd64.deb",
            env!("CARGO_PKG_VERSION")
        )),
        "{deb}"
    );
    let dpkg_deb = |args: &[&str]| {
        let o = Command::new("dpkg-deb")
            .args(args)
            .arg(&deb)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "dpkg-deb {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let contents = dpkg_deb(&["--contents"]);
    for (mode, path) in [
        ("-rwxr-xr-x root/root", "./usr/bin/orders-server"),
        (
            "-rw-r--r-- root/root",
            "./lib/systemd/system/orders-server.service",
        ),
        (
            "-rw-r--r-- root/root",
            "./etc/orders-server/orders-server.toml",
        ),
        (
            "-rw-r--r-- root/root",
            "./usr/share/orders-server/orders-server.env.example",
        ),
        (
            "-rw-r--r-- root/root",
            "./usr/share/orders-server/tuning/sysctl.d/99-orders-server.conf",
        ),
        (
            "-rw-r--r-- root/root",
            "./usr/share/doc/orders-server/README.md",
        ),
    ] {
        assert!(
            contents
                .lines()
                .any(|l| l.starts_with(mode) && l.ends_with(path)),
            "{mode} {path} missing:\n{contents}"
        );
    }
    assert!(
        !contents.contains("orders-server.env\n"),
        "the env file is made by postinst, never shipped"
    );
    assert!(dpkg_deb(&["--field"]).contains("Package: orders-server"));
    let extracted = tempfile::tempdir().unwrap();
    let x = Command::new("dpkg-deb")
        .arg("--raw-extract")
        .arg(&deb)
        .arg(extracted.path())
        .status()
        .unwrap();
    assert!(x.success());
    let file = |p: &str| std::fs::read_to_string(extracted.path().join(p)).unwrap();
    assert_eq!(
        file("DEBIAN/conffiles").trim(),
        "/etc/orders-server/orders-server.toml"
    );
    let unit = file("lib/systemd/system/orders-server.service");
    assert!(
        unit.contains("ExecStart=/usr/bin/orders-server ")
            && !unit.contains("/usr/local/bin/orders-server"),
        "{unit}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = extracted.path().join("DEBIAN").join(script);
        assert!(
            Command::new("sh")
                .arg("-n")
                .arg(&path)
                .status()
                .unwrap()
                .success(),
            "{script} parses"
        );
    }
    let postinst = file("DEBIAN/postinst");
    assert!(
        postinst.contains("useradd --system")
            && postinst.contains("install -m 0600 -o root -g root")
    );
    assert!(
        postinst.contains("if [ ! -e /etc/orders-server/orders-server.env ]"),
        "the env file is never overwritten"
    );
    let postrm = file("DEBIAN/postrm");
    assert!(
        postrm.contains("ORDERS_SERVER_PURGE_DATA:-}\" = yes"),
        "orders are purged only when asked"
    );
}
