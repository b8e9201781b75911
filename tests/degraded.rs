//! Degraded, never deceiving: how the server behaves while something is
//! wrong, over real sockets against the real binary. A store overwritten
//! in place is never reported ready; bodies that stall cannot stop small
//! writes; a full disk is a 503 with reads working and a few log lines; a
//! body costs about its own size to parse; the JSON access log escapes
//! once; a reload whose file is gone says why.

use orders_harness as support;

use std::io::{Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{order_json, status_kib, wait_until, Client, Server};

/// Bytes from a fixed xorshift sequence (no RNG crate needed).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A GET on a fresh connection: its status, None when no answer came.
fn try_get(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    Client::try_connect(addr)?
        .try_request("GET", path, None)
        .map(|r| r.status)
}

/// The hostile tester's damage: data.mdb overwritten in place, past its
/// two meta pages, while the server runs under load. Every request then
/// fails; `/readyz` must never say ready meanwhile, and the server ends as
/// documented (workers refuse the file, the master gives up: status 3).
#[test]
fn an_overwritten_store_is_never_called_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut s = Server::start_in(&data, &["-w", "2"]);
    let ids: Vec<String> = (0..300).map(|i| s.create(&format!("P{i}"))).collect();
    let order = format!("/orders/{}", ids[150]);
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, addr, order) = (stop.clone(), s.addr, order.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = try_get(addr, &order);
                if let Some(mut c) = Client::try_connect(addr) {
                    let _ = c.try_request("POST", "/orders", Some(&order_json("load", 1)));
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let file = data.join("data.mdb");
    let len = std::fs::metadata(&file).unwrap().len();
    let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.seek(SeekFrom::Start(8192)).unwrap();
    f.write_all(&noise(len as usize - 8192)).unwrap();
    f.sync_all().unwrap();

    let (mut lies, mut not_ready, mut exited) = (Vec::new(), false, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = s.child().try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        let ready = try_get(s.addr, "/readyz");
        let get = try_get(s.addr, &order);
        if ready == Some(200) && get != Some(200) {
            lies.push((ready, get));
        }
        not_ready |= ready == Some(503);
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert!(
        lies.is_empty(),
        "ready while requests fail: {lies:?}\n{}",
        s.log()
    );
    let status = exited.unwrap_or_else(|| panic!("still running after 30 s\n{}", s.log()));
    assert_eq!(status.code(), Some(3), "{}", s.log());
    assert!(
        not_ready || s.log().contains("store damaged"),
        "{}",
        s.log()
    );
}

/// A damaged page in the middle of the file (the meta pages intact, so
/// every replacement starts and serves): each request that reads it ends
/// its worker, and after a few within a minute the master gives up
/// (status 3) instead of restarting workers for ever.
#[test]
fn workers_ending_on_a_damaged_page_make_the_master_give_up() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut s = Server::start_in(&data, &["-w", "2"]);
    let ids: Vec<String> = (0..3000).map(|i| s.create(&format!("P{i}"))).collect();
    let victim = &ids[1500];
    let file = data.join("data.mdb");
    let bytes = std::fs::read(&file).unwrap();
    let key: Vec<u8> = (0..12)
        .map(|i| u8::from_str_radix(&victim[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let at = bytes
        .windows(12)
        .position(|w| w == key.as_slice())
        .expect("the order's key is in the file");
    let page = at / 4096;
    assert!(page >= 2, "not a meta page");
    let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.seek(SeekFrom::Start(page as u64 * 4096)).unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    f.sync_all().unwrap();
    let path = format!("/orders/{victim}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut exited = None;
    while Instant::now() < deadline {
        if let Some(status) = s.child().try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        let answer = try_get(s.addr, &path);
        assert_ne!(answer, Some(200), "an order read from a zeroed page");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = exited.unwrap_or_else(|| panic!("still restarting workers\n{}", s.log()));
    assert_eq!(status.code(), Some(3), "{}", s.log());
    assert!(
        s.log().contains("restore the store from a backup"),
        "{}",
        s.log()
    );
}

/// Hundreds of clients that send half of a large body at once (taking
/// their share of the worker's body memory), then stall, and send again
/// when cut: a client's small orders go on being written.
#[test]
fn bodies_that_stall_do_not_stop_small_writes() {
    let s = Server::start(&["-w", "1", "--body-rate-grace", "2"]);
    let stop = Arc::new(AtomicBool::new(false));
    let cut = Arc::new(AtomicUsize::new(0));
    let attackers: Vec<_> = (0..300)
        .map(|_| {
            let (stop, cut, addr) = (stop.clone(), cut.clone(), s.addr);
            std::thread::spawn(move || {
                let half = vec![b'x'; 600 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut c) = TcpStream::connect(addr) else {
                        continue;
                    };
                    let _ = c.set_write_timeout(Some(Duration::from_secs(2)));
                    let head =
                        "POST /orders HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n";
                    if c.write_all(head.as_bytes()).is_err() || c.write_all(&half).is_err() {
                        continue;
                    }
                    // A byte every half second until the server cuts it.
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(500));
                        if c.write_all(b"x").is_err() {
                            cut.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut answers = Vec::new();
    while started.elapsed() < Duration::from_secs(14) {
        let r =
            Client::connect(s.addr).try_request("POST", "/orders", Some(&order_json("small", 1)));
        answers.push((started.elapsed(), r.map(|r| r.status)));
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    let late_failures: Vec<_> = answers
        .iter()
        .filter(|(at, status)| *at > Duration::from_secs(4) && *status != Some(200))
        .collect();
    assert!(late_failures.is_empty(), "{late_failures:?}");
    assert!(answers.len() > 50, "{}", answers.len());
    assert!(cut.load(Ordering::Relaxed) > 0, "stalled bodies were cut");
}

/// A full disk (a small tmpfs): writes get 503 and reads go on; the log
/// grows by a few lines however many writes fail.
#[test]
fn a_full_disk_is_a_503_with_reads_and_a_few_log_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&disk)
        .status()
        .expect("mount (the tests run as root)");
    assert!(mounted.success(), "mount a tmpfs (the tests run as root)");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(disk.clone());
    let s = Server::start_in(&disk.join("data"), &["-w", "1"]);
    let kept = s.create("kept");
    let big = "x".repeat(200_000);
    let mut c = s.connect();
    let full = (0..100).any(|_| {
        let r = c.request("POST", "/orders", Some(&order_json(&big, 1)));
        r.status == 503
    });
    assert!(full, "a 4 MiB disk never filled");
    let worker = s.worker_pids()[0];
    let lines_before = s.log().lines().count();
    let failed: usize = (0..4)
        .map(|_| {
            let addr = s.addr;
            let big = big.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                (0..250)
                    .filter(|_| {
                        c.request("POST", "/orders", Some(&order_json(&big, 1)))
                            .status
                            == 503
                    })
                    .count()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .sum();
    assert!(failed > 900, "{failed} of 1000 writes failed");
    assert_eq!(
        s.request("GET", &format!("/orders/{kept}"), None).status,
        200
    );
    assert_eq!(s.request("GET", "/orders?limit=1", None).status, 200);
    assert_eq!(s.worker_pids(), vec![worker], "the worker goes on");
    let new_lines = s.log().lines().count() - lines_before;
    assert!(
        new_lines <= 10,
        "{new_lines} log lines for {failed} failed writes:\n{}",
        s.log()
    );
}

/// Bodies are parsed into the four fields only: 1M keys, or an array of
/// 4.5M empty objects beside the fields, cost about the body's own size
/// (a generic JSON tree cost ~28 times it).
#[test]
fn a_body_costs_about_its_own_size_to_parse() {
    let s = Server::start(&[
        "-w",
        "1",
        "--max-body-size",
        "16777216",
        "--client-timeout",
        "60",
    ]);
    let worker = s.worker_pids()[0];
    let fields = r#""product":"P","quantity":1,"customer_name":"N","customer_address":"A""#;
    let keys: String = (0..1_000_000).map(|i| format!("\"k{i}\":0,")).collect();
    let objects = vec!["{}"; 4_500_000].join(",");
    for body in [
        format!("{{{keys}{fields}}}"),
        format!("{{\"x\":[{objects}],{fields}}}"),
    ] {
        // Reset the peak to what is resident now (writing 5 to clear_refs):
        // each body's peak is its own.
        std::fs::write(format!("/proc/{worker}/clear_refs"), "5").unwrap();
        let before = status_kib(worker, "VmHWM");
        let r = s.connect().request("POST", "/orders", Some(&body));
        assert_eq!(r.status, 200, "{}", r.text());
        let grew = status_kib(worker, "VmHWM").saturating_sub(before) * 1024;
        assert!(
            grew < 4 * body.len() as u64,
            "peak RSS grew by {grew} bytes for a body of {}",
            body.len()
        );
    }
}

/// The JSON access log escapes what a client sent once: a User-Agent
/// `q"x\y` is logged so that it decodes as itself.
#[test]
fn the_json_access_log_escapes_client_text_once() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("access.json");
    let s = Server::start(&[
        "--access-log",
        &log.display().to_string(),
        "--access-log-format",
        "json",
    ]);
    let agent = r#"q"x\y"#;
    s.connect()
        .request_with("GET", "/healthz", &[&format!("User-Agent: {agent}")], None);
    let line = (0..50)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            let text = std::fs::read_to_string(&log).ok()?;
            text.lines()
                .find(|l| l.contains("/healthz"))
                .map(str::to_string)
        })
        .expect("a line in the access log");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["user_agent"], agent, "{line}");
}

/// A reload whose configuration file is gone says why, not only which
/// file; the old workers keep serving.
#[test]
fn a_reload_whose_file_is_gone_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("orders.toml");
    std::fs::write(&conf, "threads = 1\n").unwrap();
    let s = Server::start(&["-c", &conf.display().to_string()]);
    std::fs::remove_file(&conf).unwrap();
    s.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || s
            .log()
            .contains("reload refused")),
        "{}",
        s.log()
    );
    assert!(s.log().contains("No such file or directory"), "{}", s.log());
    assert_eq!(s.request("GET", "/healthz", None).status, 200);
}
