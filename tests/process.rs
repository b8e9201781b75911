//! The process model over real processes: start-up checks and exit codes,
//! configuration precedence, supervision (a dead worker is replaced, boot
//! failures give up), stop signals, and panics costing one connection.

use orders_harness as support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{order_json, run_to_exit, wait_until, Client, Server};

const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

#[test]
fn help_and_version() {
    let (code, out) = run_to_exit(&["-h"], &[], EXIT_TIMEOUT);
    assert_eq!(code, Some(0));
    for flag in ["--workers", "--bind", "--config", "--data-dir"] {
        assert!(out.contains(flag), "{flag} missing from help:\n{out}");
    }
    let (code, out) = run_to_exit(&["-V"], &[], EXIT_TIMEOUT);
    assert_eq!(code, Some(0));
    assert!(out.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_second_server_on_a_used_port_refuses_to_start() {
    let s = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let addr = s.addr.to_string();
    let data = tmp.path().join("d").display().to_string();
    let (code, out) = run_to_exit(
        &["-w", "1", "-b", &addr, "--data-dir", &data],
        &[],
        EXIT_TIMEOUT,
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("already in use"), "{out}");
    assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
    // The first server still serves everything.
    for _ in 0..10 {
        assert_eq!(s.request("GET", "/orders", None).status, 200);
    }
}

#[test]
fn bad_settings_are_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d").display().to_string();
    let bad_toml = tmp.path().join("bad.toml");
    std::fs::write(&bad_toml, "wrokers = 2\n").unwrap();
    let bad_toml = bad_toml.display().to_string();
    let a_file = tmp.path().join("file");
    std::fs::write(&a_file, "").unwrap();
    let under_file = a_file.join("data").display().to_string();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["-w", "0"], vec![], "workers"),
        (vec!["-b", "nonsense"], vec![], "bind"),
        (vec!["-b", "203.0.113.7:0"], vec![], "203.0.113.7"),
        (
            vec!["-c", "/nonexistent/orders.toml"],
            vec![],
            "/nonexistent/orders.toml",
        ),
        (vec!["-c", &bad_toml], vec![], "wrokers"),
        (vec!["--data-dir", &under_file], vec![], "data_dir"),
        (vec!["--max-page-size", "0"], vec![], "max_page_size"),
        (vec!["--log-level", "loud"], vec![], "log_level"),
        (vec![], vec![("ORDERS_WORKERS", "many")], "workers"),
    ];
    for (args, env, needle) in cases {
        let mut all = vec![];
        if !args.contains(&"--data-dir") {
            all.extend(["--data-dir", data.as_str()]);
        }
        if !args.contains(&"-b") {
            all.extend(["-b", "127.0.0.1:0"]);
        }
        all.extend(args.iter());
        let (code, out) = run_to_exit(&all, &env, EXIT_TIMEOUT);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {out}");
        assert!(out.contains(needle), "{args:?}: {out}");
        assert!(!out.contains("started"), "nothing forked: {out}");
    }
}

#[test]
fn cli_beats_env_beats_file() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("orders.toml");
    std::fs::write(&conf, "workers = 3\nbind = \"127.0.0.1:0\"\n").unwrap();
    let conf = conf.display().to_string();
    let data = tmp.path().join("data");
    let count = |args: Vec<&str>, env: &[(&str, &str)]| {
        let mut builder = Server::builder()
            .workers_from_config()
            .data_dir(&data)
            .args(&args);
        for (k, v) in env {
            builder = builder.env(k, v);
        }
        let s = builder.start();
        let n = s.worker_pids().len();
        assert_eq!(s.request("GET", "/orders", None).status, 200);
        n
    };
    assert_eq!(count(vec!["-c", &conf], &[]), 3);
    assert_eq!(count(vec!["-c", &conf], &[("ORDERS_WORKERS", "2")]), 2);
    assert_eq!(
        count(vec!["-c", &conf, "-w", "1"], &[("ORDERS_WORKERS", "2")]),
        1
    );
    // The config file may come from the environment too.
    assert_eq!(count(vec![], &[("ORDERS_CONFIG", &conf)]), 3);
}

#[test]
fn a_killed_worker_is_replaced_and_others_keep_serving() {
    let s = Server::start(&["-w", "2"]);
    let before = s.worker_pids();
    assert_eq!(before.len(), 2);
    let id = s.create("survivor");
    support::send_signal(before[0], libc::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(2), || {
            let now = s.worker_pids();
            now.len() == 2 && !now.contains(&before[0])
        }),
        "worker not replaced within 2 s: {:?}",
        s.worker_pids()
    );
    assert!(
        s.worker_pids().contains(&before[1]),
        "the other worker was untouched"
    );
    for _ in 0..20 {
        assert_eq!(s.request("GET", &format!("/orders/{id}"), None).status, 200);
    }
    assert!(s.log().contains("killed by SIGKILL"), "{}", s.log());
}

#[test]
fn workers_that_cannot_start_make_the_master_give_up() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // LMDB cannot open an environment whose lock file is a directory (the
    // master checks the data file itself before forking; not the lock file).
    std::fs::create_dir_all(data.join("lock.mdb")).unwrap();
    let d = data.display().to_string();
    let (code, out) = run_to_exit(
        &["-w", "2", "-b", "127.0.0.1:0", "--data-dir", &d],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("giving up"), "{out}");
    assert!(out.contains("cannot open the store"), "{out}");
    let forks = out.matches("started (pid").count();
    assert!(
        (5..=12).contains(&forks),
        "bounded retries, got {forks} forks:\n{out}"
    );
}

/// Writers POSTing orders on fresh connections from `threads` threads
/// until stopped or refused; the ids of the answered ones.
struct WriteLoad {
    acked: Arc<Mutex<HashSet<String>>>,
    stop: Arc<AtomicBool>,
    writers: Vec<std::thread::JoinHandle<()>>,
}

impl WriteLoad {
    fn start(addr: std::net::SocketAddr, threads: usize) -> WriteLoad {
        let acked = Arc::new(Mutex::new(HashSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let writers = (0..threads)
            .map(|t| {
                let (acked, stop) = (acked.clone(), stop.clone());
                std::thread::spawn(move || {
                    for i in 0..100_000 {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let Some(mut c) = Client::try_connect(addr) else {
                            return;
                        };
                        let body = order_json(&format!("t{t}-{i}"), 1);
                        let req = format!(
                            "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if !c.stream.write_all_ok(req.as_bytes()) {
                            continue;
                        }
                        if let Some(r) = c.read_response().filter(|r| r.status == 200) {
                            acked
                                .lock()
                                .unwrap()
                                .insert(r.json()["order"]["_id"].as_str().unwrap().to_string());
                        }
                    }
                })
            })
            .collect();
        WriteLoad {
            acked,
            stop,
            writers,
        }
    }

    /// Stops the writers; the acknowledged ids.
    fn finish(self) -> HashSet<String> {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.writers {
            w.join().unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        assert!(acked.len() > 10, "the load ran ({} acked)", acked.len());
        acked
    }
}

/// Every order's id, in the order listed.
fn listed_ids(s: &Server) -> Vec<String> {
    let list = s.request("GET", "/orders", None).json();
    list["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["_id"].as_str().unwrap().to_string())
        .collect()
}

/// A backup taken with `orders-server backup` (LMDB's compacting copy, as
/// `mdb_copy -c`) while orders are being written is a store of its own:
/// served as is, sorted, with every order acknowledged before the copy
/// began. (Debian's mdb_copy cannot open this LMDB's environment: its lock
/// file format is older.)
#[test]
fn a_backup_made_under_write_load_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let backup = tmp.path().join("backup");
    std::fs::create_dir_all(&backup).unwrap();
    let s = Server::start_in(&data, &["-w", "2"]);
    let load = WriteLoad::start(s.addr, 4);
    std::thread::sleep(Duration::from_millis(500));
    let before_copy = load.acked.lock().unwrap().clone();
    let (d, b) = (data.display().to_string(), backup.display().to_string());
    let (code, out) = run_to_exit(&["--data-dir", &d, "backup", &b], &[], EXIT_TIMEOUT);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("bytes written to"), "{out}");
    load.finish();
    let (code, out) = run_to_exit(&["--data-dir", &d, "backup", &b], &[], EXIT_TIMEOUT);
    assert_eq!(
        code,
        Some(2),
        "a second backup into the same place is refused: {out}"
    );

    let restored = Server::start_in(&backup, &["-w", "1"]);
    let ids = listed_ids(&restored);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "sorted, no id twice");
    let stored: HashSet<&String> = ids.iter().collect();
    assert!(
        before_copy.iter().all(|id| stored.contains(id)),
        "an order acknowledged before the copy is missing"
    );
    assert_eq!(
        restored
            .request("GET", &format!("/orders/{}", ids[0]), None)
            .status,
        200
    );
    assert!(restored.create("after the restore") > *ids.last().unwrap());
}

#[test]
fn term_under_write_load_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut s = Server::start_in(&data, &["-w", "2"]);
    let load = WriteLoad::start(s.addr, 4);
    std::thread::sleep(Duration::from_millis(700));
    let status = s.stop();
    let acked = load.finish();
    assert!(status.success(), "master exit status {status:?}");

    let s = Server::start_in(&data, &["-w", "1"]);
    let stored: HashSet<String> = listed_ids(&s).into_iter().collect();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "{} acknowledged writes lost", lost.len());
}

/// Crash consistency: under POST load from 8 threads, the master and every
/// worker are SIGKILLed at once at a random moment, three times. After each
/// restart on the same data: every acknowledged order is there, none
/// twice, the list is in `_id` order, and a new id is above every old one.
#[test]
fn kill_9_under_write_load_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut acked = HashSet::new();
    for round in 0..3 {
        let mut s = Server::start_in(&data, &["-w", "2"]);
        let load = WriteLoad::start(s.addr, 8);
        let jitter = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_millis()
            % 700;
        std::thread::sleep(Duration::from_millis(300 + u64::from(jitter)));
        s.kill_everything();
        acked.extend(load.finish());

        let s = Server::start_in(&data, &["-w", "1"]);
        let ids = listed_ids(&s);
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "round {round}: the list is sorted, no id twice"
        );
        let stored: HashSet<&String> = ids.iter().collect();
        let lost = acked.iter().filter(|id| !stored.contains(id)).count();
        assert_eq!(
            lost,
            0,
            "round {round}: {lost} of {} acknowledged orders lost",
            acked.len()
        );
        let new = s.create("after the crash");
        assert!(
            ids.last().is_none_or(|last| new > *last),
            "round {round}: a new id ({new}) is above the old ones"
        );
        acked.insert(new);
    }
}

#[test]
fn fast_stop_exits_zero() {
    for sig in [libc::SIGINT, libc::SIGQUIT] {
        let mut s = Server::start(&[]);
        s.create("x");
        s.signal(sig);
        let status = s.wait_exit(Duration::from_secs(5)).expect("exits quickly");
        assert!(status.success(), "{status:?}");
    }
}

#[test]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs the test-hooks feature: scripts/test.sh"
)]
fn a_panic_costs_one_connection_not_a_worker() {
    let s = Server::builder().workers(1).start();
    let pids = s.worker_pids();
    let mut c = s.connect();
    c.send_raw(b"GET /__test/panic HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response().expect("a 500 for the panicking request");
    assert_eq!(r.status, 500);
    assert!(r.closes());
    assert!(
        c.read_response().is_none(),
        "the panicking connection is closed"
    );
    assert!(
        wait_until(Duration::from_secs(2), || s.log().contains("panic at")),
        "the panic is logged: {}",
        s.log()
    );
    for _ in 0..10 {
        assert_eq!(s.request("GET", "/orders", None).status, 200);
    }
    assert_eq!(s.worker_pids(), pids, "the worker survived");
}

/// `write_all` that reports failure instead of panicking (the server may be stopping).
trait WriteOk {
    fn write_all_ok(&mut self, buf: &[u8]) -> bool;
}

impl WriteOk for std::net::TcpStream {
    fn write_all_ok(&mut self, buf: &[u8]) -> bool {
        use std::io::Write;
        self.write_all(buf).is_ok()
    }
}

#[test]
fn ttou_at_one_worker_is_refused_and_said_so() {
    let s = Server::builder().workers(1).start();
    s.signal(libc::SIGTTOU);
    assert!(
        wait_until(Duration::from_secs(5), || s
            .log()
            .contains("ScaleDown ignored: already at one worker")),
        "{}",
        s.log()
    );
    assert_eq!(s.worker_pids().len(), 1);
}

/// A damaged data file is refused before any fork, naming the file and the
/// way back: an empty one (LMDB would take it for a new, empty store) and a
/// truncated one (LMDB would crash on the missing pages).
#[test]
fn a_truncated_or_empty_data_file_is_refused_at_start() {
    let mut s = Server::builder().workers(1).start();
    for i in 0..300 {
        s.create(&format!("order {i}"));
    }
    assert!(s.stop().success());
    let data = s.data_dir.display().to_string();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(s.data_dir.join("data.mdb"))
        .unwrap();
    for (len, words) in [(8192, "is truncated"), (0, "exists but is empty")] {
        file.set_len(len).unwrap();
        let (code, out) = run_to_exit(
            &["-w", "1", "-b", "127.0.0.1:0", "--data-dir", &data],
            &[],
            EXIT_TIMEOUT,
        );
        assert_eq!(code, Some(2), "{out}");
        assert!(
            out.contains(words) && out.contains("data.mdb") && out.contains("orders-server backup"),
            "{out}"
        );
        assert!(!out.contains("started"), "nothing forked: {out}");
    }
}

/// A data file truncated while the server runs: the worker that reads a
/// missing page ends (SIGBUS, status 4) instead of hanging, its
/// replacements refuse the damaged file, and the master gives up (status 3).
#[test]
fn a_data_file_truncated_while_serving_ends_the_worker_not_hangs() {
    let mut s = Server::builder().workers(1).start();
    for i in 0..300 {
        s.create(&format!("order {i}"));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(s.data_dir.join("data.mdb"))
        .unwrap()
        .set_len(8192)
        .unwrap();
    let mut c = s.connect();
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = std::time::Instant::now();
    c.send_raw(b"GET /orders HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        c.read_response().is_none(),
        "the list cannot be answered from a truncated file"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "waited {:?}",
        started.elapsed()
    );
    let status = s
        .wait_exit(Duration::from_secs(30))
        .expect("the master gives up");
    assert_eq!(status.code(), Some(3), "{}", s.log());
    let log = s.log();
    assert!(log.contains("exited with status 4"), "{log}");
    assert!(log.contains("is truncated"), "{log}");
}

/// Zeroes the root page of the `orders` database in an LMDB data file, as
/// a disk that lost a page would: LMDB then reports MDB_CORRUPTED when it
/// reads the orders (the file's size and meta pages stay whole, so nothing
/// notices before). The offsets are LMDB's on-disk format (64-bit): the
/// meta pages (store/datafile.rs), then the main database's leaf page, whose
/// node for the key `orders` holds that database's record.
fn zero_the_orders_root_page(data_mdb: &std::path::Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(data_mdb)
        .unwrap();
    let mut head = vec![0u8; 2 * 4096];
    f.read_exact(&mut head).unwrap();
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes(b[at..at + 2].try_into().unwrap());
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let page_size = u32::from_le_bytes(head[40..44].try_into().unwrap()) as u64;
    assert_eq!(page_size, 4096, "the test reads 4 KiB meta pages");
    // The newer meta page (by txnid) names the main database's root.
    let newer = if u64_at(&head, 4096 + 144) > u64_at(&head, 144) {
        4096
    } else {
        0
    };
    let main_root = u64_at(&head, newer + 128);
    let mut page = vec![0u8; page_size as usize];
    f.seek(SeekFrom::Start(main_root * page_size)).unwrap();
    f.read_exact(&mut page).unwrap();
    let nodes = (usize::from(u16_at(&page, 12)) - 16) / 2;
    let orders_root = (0..nodes)
        .find_map(|i| {
            let node = usize::from(u16_at(&page, 16 + 2 * i));
            let key_len = usize::from(u16_at(&page, node + 6));
            let key = &page[node + 8..node + 8 + key_len];
            (key == b"orders").then(|| u64_at(&page, node + 8 + key_len + 40))
        })
        .expect("the main database names `orders`");
    f.seek(SeekFrom::Start(orders_root * page_size)).unwrap();
    f.write_all(&vec![0u8; page_size as usize]).unwrap();
    f.sync_all().unwrap();
}

/// LMDB reporting corruption while the server runs: the store answers
/// `Damaged` (never exits the process itself), the worker ends with status
/// 4 without answering from the damaged file, and the master replaces it.
#[test]
fn a_store_that_reports_corruption_ends_the_worker_with_status_4() {
    let s = Server::builder().workers(1).start();
    let id = s.create("order");
    let before = s.worker_pids();
    zero_the_orders_root_page(&s.data_dir.join("data.mdb"));
    let answer = s
        .connect()
        .try_request("GET", &format!("/orders/{id}"), None);
    assert!(
        answer.is_none(),
        "nothing is answered from a damaged file: {:?}",
        answer.map(|r| r.status)
    );
    assert!(
        wait_until(EXIT_TIMEOUT, || s.log().contains("exited with status 4")),
        "{}",
        s.log()
    );
    let log = s.log();
    assert!(log.contains("store damaged: MDB_CORRUPTED"), "{log}");
    assert!(
        wait_until(EXIT_TIMEOUT, || {
            let now = s.worker_pids();
            now.len() == 1 && now != before
        }),
        "replaced: {log}"
    );
}
