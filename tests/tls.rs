//! TLS in the worker (`certfile`, `keyfile`, `ca_certs`, `cert_reqs`),
//! checked with tools no one here wrote: curl, `openssl s_client` and
//! sslscan against the real binary, wrk over https through a reload that
//! renews the certificate. Certificates come from `openssl` (harness
//! `pki`): a root, an intermediate, a server certificate served with the
//! intermediate as its chain, and a client certificate.

use orders_harness as support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::pki::{set_mode, Pki};
use support::{
    established_on, finish_wrk, in_netns, run_to_exit, start_wrk_at, status_kib, wait_until, Server,
};

/// How long a failed handshake may take to close, a stalled one included
/// (`client_timeout` 1 s, seen by a sweep every 0.5 s).
const CLOSED_WITHIN: Duration = Duration::from_secs(5);
/// How long a run of a TLS tool may take.
const TOOL_TIMEOUT: &str = "10";

const FAILURES: &str = "orders_http_tls_handshake_failures_total";

/// A server speaking TLS with `pki`'s chain and key.
fn tls_server(pki: &Pki, extra: &[&str]) -> Server {
    let (chain, key) = (
        pki.chain.display().to_string(),
        pki.key.display().to_string(),
    );
    Server::builder()
        .workers(1)
        .metrics()
        .args(&["--certfile", &chain, "--keyfile", &key])
        .args(extra)
        .start()
}

/// Runs a command; its status and its output (stdout, then stderr).
fn run(program: &str, args: &[&str], stdin: &[u8]) -> (bool, String) {
    let mut child = Command::new("timeout")
        .arg(TOOL_TIMEOUT)
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// curl to `https://localhost:<port><path>`, trusting only the test root;
/// `extra` arguments before the URL.
fn curl(s: &Server, pki: &Pki, path: &str, extra: &[&str]) -> (bool, String) {
    let port = s.addr.port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let url = format!("https://localhost:{port}{path}");
    let root = pki.root.display().to_string();
    let mut args = vec![
        "-sS",
        "-v",
        "--fail",
        "--cacert",
        &root,
        "--resolve",
        &resolve,
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    run("curl", &args, b"")
}

/// `openssl s_client` to the server with SNI `localhost`, ALPN http/1.1,
/// verifying the chain and the name against the test root; `extra`
/// arguments last.
fn s_client(addr: SocketAddr, pki: &Pki, extra: &[&str]) -> (bool, String) {
    let connect = addr.to_string();
    let root = pki.root.display().to_string();
    let mut args = vec![
        "s_client",
        "-connect",
        &connect,
        "-servername",
        "localhost",
        "-alpn",
        "http/1.1",
        "-CAfile",
        &root,
        "-verify_hostname",
        "localhost",
        "-verify_return_error",
        "-showcerts",
        // Waits for the answer (the request closes the connection).
        "-ign_eof",
    ];
    args.extend_from_slice(extra);
    run(
        "openssl",
        &args,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
}

#[test]
fn curl_and_openssl_see_the_chain_the_name_and_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path(), "localhost");
    let s = tls_server(&pki, &[]);
    let (ok, out) = curl(&s, &pki, "/orders?limit=1", &[]);
    assert!(ok, "{out}");
    assert!(out.contains("ALPN: server accepted http/1.1"), "{out}");
    assert!(out.contains("SSL certificate verify ok"), "{out}");
    let (ok, out) = s_client(s.addr, &pki, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(out.contains("ALPN protocol: http/1.1"), "{out}");
    // The chain: the server's certificate, then the intermediate's.
    assert!(out.contains(" 0 s:CN = localhost"), "{out}");
    assert!(out.contains(" 1 s:CN = orders test intermediate"), "{out}");
    assert!(out.contains("HTTP/1.1 200 OK"), "{out}");
    // TLS 1.2 too, and nothing older.
    let (ok, out) = s_client(s.addr, &pki, &["-tls1_2"]);
    assert!(ok && out.contains("Protocol  : TLSv1.2"), "{out}");
    for old in ["-tls1_1", "-tls1"] {
        let (ok, out) = s_client(s.addr, &pki, &[old, "-cipher", "DEFAULT@SECLEVEL=0"]);
        assert!(!ok && !out.contains("HTTP/1.1 200"), "{old}: {out}");
    }
}

#[test]
fn a_required_client_certificate_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path(), "localhost");
    let root = pki.root.display().to_string();
    let s = tls_server(&pki, &["--ca-certs", &root, "--cert-reqs", "2"]);
    let (ok, out) = curl(&s, &pki, "/orders?limit=1", &[]);
    assert!(!ok, "served without a client certificate: {out}");
    let (cert, key) = (
        pki.client_cert.display().to_string(),
        pki.client_key.display().to_string(),
    );
    let (ok, out) = curl(
        &s,
        &pki,
        "/orders?limit=1",
        &["--cert", &cert, "--key", &key],
    );
    assert!(ok, "{out}");
    // A certificate the root did not sign is refused too: the server's own.
    let (chain, server_key) = (
        pki.chain.display().to_string(),
        pki.key.display().to_string(),
    );
    let (ok, out) = curl(
        &s,
        &pki,
        "/orders?limit=1",
        &["--cert", &chain, "--key", &server_key],
    );
    assert!(!ok, "served with a certificate of another CA: {out}");
    assert!(wait_until(CLOSED_WITHIN, || s.metric(FAILURES) >= 2.0));
}

/// Not TLS on the TLS port, and a handshake that stalls half-way: both are
/// closed (the stalled one at `client_timeout`), counted, and the worker
/// serves on.
#[test]
fn plain_http_and_a_stalled_handshake_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path(), "localhost");
    let s = tls_server(&pki, &["--client-timeout", "1"]);
    let mut plain = TcpStream::connect(s.addr).unwrap();
    plain
        .write_all(b"GET /orders HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let answer = read_until_closed(&mut plain);
    assert!(!answer.starts_with(b"HTTP"), "{answer:?}");
    // The start of a ClientHello record, then nothing.
    let mut stalled = TcpStream::connect(s.addr).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    let started = Instant::now();
    read_until_closed(&mut stalled);
    assert!(started.elapsed() < CLOSED_WITHIN, "{:?}", started.elapsed());
    assert!(wait_until(CLOSED_WITHIN, || s.metric(FAILURES) == 2.0));
    let (ok, out) = curl(&s, &pki, "/healthz", &[]);
    assert!(ok, "{out}");
}

/// Hostile tester's finding: at `worker_connections`, with every slot in
/// a handshake, a new TLS client was answered a plaintext 503 it cannot
/// read. It is closed instead, as nginx closes at worker_connections.
#[test]
fn a_tls_worker_at_its_limit_closes_new_clients_without_a_plaintext_answer() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path(), "localhost");
    let s = tls_server(&pki, &["--worker-connections", "2"]);
    // Two handshakes begun and stalled: inside a request, not closable.
    let stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = TcpStream::connect(s.addr).unwrap();
            c.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
            c
        })
        .collect();
    // Long enough for both to be inside their handshakes on a loaded
    // machine (client_timeout is 30 s).
    std::thread::sleep(Duration::from_millis(1500));
    let mut refused = TcpStream::connect(s.addr).unwrap();
    refused
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    let answer = read_until_closed(&mut refused);
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    assert_eq!(s.metric("orders_http_connections_refused_total"), 1.0);
    drop(stalled);
}

/// What the server sends before it closes the connection (panics if it
/// stays open past [`CLOSED_WITHIN`]).
fn read_until_closed(c: &mut TcpStream) -> Vec<u8> {
    c.set_read_timeout(Some(CLOSED_WITHIN)).unwrap();
    let mut got = Vec::new();
    match c.read_to_end(&mut got) {
        Ok(_) => got,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => got,
        Err(e) => panic!("not closed: {e}"),
    }
}

#[test]
fn a_key_file_others_may_read_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path(), "localhost");
    set_mode(&pki.key, 0o644);
    let (chain, key) = (
        pki.chain.display().to_string(),
        pki.key.display().to_string(),
    );
    let (code, out) = run_to_exit(
        &[
            "--certfile",
            &chain,
            "--keyfile",
            &key,
            "--bind",
            "127.0.0.1:0",
        ],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("keyfile") && out.contains("644"), "{out}");
}

/// A list longer than the response buffer is streamed over TLS whole.
#[test]
fn a_long_list_streams_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path(), "localhost");
    let s = tls_server(&pki, &["--response-buffer-size", "4096"]);
    let body = support::order_json("streamed", 1);
    for _ in 0..200 {
        let (ok, out) = curl(
            &s,
            &pki,
            "/orders",
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-d",
                &body,
                "-o",
                "/dev/null",
            ],
        );
        assert!(ok, "{out}");
    }
    let out_file = dir.path().join("list.json");
    let out_arg = out_file.display().to_string();
    let (ok, out) = curl(&s, &pki, "/orders", &["-o", &out_arg]);
    assert!(ok, "{out}");
    assert!(
        out.to_lowercase().contains("transfer-encoding: chunked"),
        "{out}"
    );
    let list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    assert_eq!(list["orders"].as_array().map(Vec::len), Some(200));
}

/// As in clear (tests/engine.rs), clients that ask for a large list over
/// TLS and read nothing cost the worker about a chunk each (rustls holds
/// at most 64 KiB of records for them), and are cut at `client_timeout`.
#[test]
fn clients_that_do_not_read_a_large_list_over_tls_cost_a_chunk_each() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("pki"), "localhost");
    let data = dir.path().join("data");
    let first = Server::start_in(&data, &["-w", "1"]).create_large(300, 1_000_000);
    let (chain, key) = (
        pki.chain.display().to_string(),
        pki.key.display().to_string(),
    );
    let s = Server::builder()
        .data_dir(&data)
        .workers(1)
        .args(&[
            "--certfile",
            &chain,
            "--keyfile",
            &key,
            "--client-timeout",
            "4",
            "--timeout",
            "10",
        ])
        .start();
    let worker = s.worker_pids()[0];
    let anon_before = status_kib(worker, "RssAnon");
    let config = client_config(&pki);
    let stuck: Vec<_> = (0..8)
        .map(|i| {
            let target = if i % 2 == 0 {
                "/orders"
            } else {
                "/orders?limit=300"
            };
            let name = ServerName::try_from("localhost").unwrap();
            let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(s.addr).unwrap());
            // Writing drives the handshake; nothing is ever read.
            tls.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .unwrap();
            tls
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let (ok, out) = curl(&s, &pki, &format!("/orders/{first}"), &["-o", "/dev/null"]);
    assert!(ok, "{out}");
    let anon = status_kib(worker, "RssAnon");
    eprintln!(
        "worker anonymous RSS: {anon_before} KiB before, {anon} KiB with 8 TLS clients not reading"
    );
    assert!(
        anon < anon_before + 8 * 4 * 1024 + 16 * 1024,
        "worker anonymous RSS {anon} KiB, {anon_before} KiB before"
    );
    assert!(
        wait_until(Duration::from_secs(10), || established_on(s.addr.port())
            == 0),
        "{} connections still established",
        established_on(s.addr.port())
    );
    drop(stuck);
}

/// A rustls client configuration that trusts `pki`'s root.
fn client_config(pki: &Pki) -> std::sync::Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pki.root).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

/// sslscan (Debian's) finds no protocol older than TLS 1.2 and no weak
/// cipher: every suite it is accepted with is an AEAD of 128 bits or more.
#[test]
fn sslscan_finds_no_old_protocol_and_no_weak_cipher() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path(), "localhost");
    let s = tls_server(&pki, &[]);
    let target = s.addr.to_string();
    let (ok, out) = run("sslscan", &["--no-colour", &target], b"");
    assert!(ok, "{out}");
    for old in ["SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"] {
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == [old, "disabled"]),
            "{old} not reported disabled:\n{out}"
        );
    }
    for new in ["TLSv1.2", "TLSv1.3"] {
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == [new, "enabled"]),
            "{new} not reported enabled:\n{out}"
        );
    }
    let suites: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("Accepted") || l.starts_with("Preferred"))
        .collect();
    assert!(!suites.is_empty(), "{out}");
    for suite in suites {
        let words: Vec<&str> = suite.split_whitespace().collect();
        let bits: u32 = words[2].parse().unwrap();
        let name = words[4];
        assert!(bits >= 128, "{suite}");
        assert!(name.contains("GCM") || name.contains("CHACHA20"), "{suite}");
    }
}

/// The certificate is renewed (files replaced) and the server reloaded
/// (HUP) under wrk over https: no request fails, and new connections get
/// the new certificate. A reload whose key does not load is refused: the
/// workers serve on with the certificate they have.
#[test]
fn a_renewed_certificate_is_served_after_hup_under_load() {
    in_netns(true, || {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::generate(&dir.path().join("live"), "localhost");
        let s = tls_server(&pki, &["-w", "2"]);
        let url = format!("https://127.0.0.1:{}/", s.addr.port());
        let (wrk, _wrk_dir) = start_wrk_at(&url, 20, 6);
        std::thread::sleep(Duration::from_millis(1500));
        // certbot's way: new files, then a reload.
        let renewed = Pki::generate(&dir.path().join("renewed"), "renewed.localhost");
        replace(&renewed.chain, &pki.chain);
        replace(&renewed.key, &pki.key);
        s.signal(libc::SIGHUP);
        finish_wrk(wrk).assert_all_served(500, &s.log());
        assert!(
            wait_until(Duration::from_secs(10), || served_cn(s.addr).as_deref()
                == Some("renewed.localhost")),
            "the renewed certificate is not served:\n{}",
            s.log()
        );
        // A key that does not load: the reload is refused.
        std::fs::write(&pki.key, b"not a key").unwrap();
        let pids = s.worker_pids();
        s.signal(libc::SIGHUP);
        assert!(wait_until(Duration::from_secs(10), || s
            .log()
            .contains("keyfile")));
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(s.worker_pids(), pids, "{}", s.log());
        assert_eq!(served_cn(s.addr).as_deref(), Some("renewed.localhost"));
    });
}

/// A binary upgrade (USR2) reads the certificate files again too: the new
/// generation serves the renewed certificate.
#[test]
fn an_upgrade_serves_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("live"), "localhost");
    let s = tls_server(&pki, &[]);
    assert_eq!(served_cn(s.addr).as_deref(), Some("localhost"));
    let renewed = Pki::generate(&dir.path().join("renewed"), "renewed.localhost");
    replace(&renewed.chain, &pki.chain);
    replace(&renewed.key, &pki.key);
    s.signal(libc::SIGUSR2);
    assert!(
        wait_until(Duration::from_secs(15), || s
            .log()
            .contains("generation 2 serves")),
        "{}",
        s.log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || served_cn(s.addr).as_deref()
            == Some("renewed.localhost")),
        "{}",
        s.log()
    );
}

/// Copies `from` over `to` (keeping `to`'s mode).
fn replace(from: &Path, to: &Path) {
    std::fs::write(to, std::fs::read(from).unwrap()).unwrap();
}

/// The common name of the certificate the server at `addr` sends.
fn served_cn(addr: SocketAddr) -> Option<String> {
    let connect = addr.to_string();
    let (_, out) = run("openssl", &["s_client", "-connect", &connect], b"");
    out.lines()
        .find_map(|l| l.trim().strip_prefix("0 s:CN = "))
        .map(str::to_string)
}
