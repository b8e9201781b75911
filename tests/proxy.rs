//! The PROXY protocol (`proxy_protocol`, `proxy_allow_ips`): behind a real
//! HAProxy (`send-proxy`, `send-proxy-v2`) and nginx's stream module
//! (`proxy_protocol on`), the client address the header carries is the one
//! the access log shows and the one `forwarded_allow_ips` is asked about;
//! a connection without a valid header, or from a peer not allowed to send
//! one, is closed without an answer. Against the real binary.

use orders_harness as support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use support::haproxy::Haproxy;
use support::nginx::Nginx;
use support::secantus::reserve_port;
use support::{wait_until, Client, Server};

/// The client's own loopback address: not the balancer's (127.0.0.1), so
/// the log shows which one the server took.
const CLIENT_IP: &str = "127.0.0.5";
/// The access log's format: the client, then the request line.
const FORMAT: &str = "%(h)s %(r)s";
/// How long an access log line may take to be written.
const LOGGED_WITHIN: Duration = Duration::from_secs(10);
/// How long a connection may take to be parked (after 1 s idle, seen by
/// a sweep every 0.5 s), on a loaded machine.
const PARKED_WITHIN: Duration = Duration::from_secs(10);
/// How long a refused connection may take to be closed.
const CLOSED_WITHIN: Duration = Duration::from_secs(5);

const REFUSED: &str = "orders_http_proxy_protocol_refused_total";
const PARKED: &str = "orders_http_connections_parked";

/// A server expecting the PROXY protocol, with an access log in `dir`.
fn server(dir: &Path, extra: &[&str]) -> (Server, PathBuf) {
    let log = dir.join("access.log");
    let log_arg = log.display().to_string();
    let args = [
        "--proxy-protocol",
        "true",
        "--access-log",
        &log_arg,
        "--access-log-format",
        FORMAT,
    ];
    let s = Server::builder()
        .workers(1)
        .metrics()
        .args(&args)
        .args(extra)
        .start();
    (s, log)
}

/// A connection to `to` from `from` (a loopback address of its own).
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// Waits for `n` access log lines and returns them.
fn logged(log: &Path, n: usize) -> Vec<String> {
    let read = || std::fs::read_to_string(log).unwrap_or_default();
    let complete = wait_until(LOGGED_WITHIN, || read().lines().count() >= n);
    assert!(complete, "expected {n} lines:\n{}", read());
    read().lines().map(str::to_string).collect()
}

/// Two requests from [`CLIENT_IP`] through the balancer at `front`, the
/// second after the connection was parked, the first claiming another
/// client in X-Forwarded-For (which the server must not believe: the
/// client, not a trusted proxy, sent it): both are logged as the client's.
fn the_client_is_logged(s: &Server, front: SocketAddr, log: &Path) {
    let mut c = Client::over(connect_from(CLIENT_IP, front)).unwrap();
    let r = c.request_with(
        "GET",
        "/orders?limit=1",
        &["X-Forwarded-For: 203.0.113.9"],
        None,
    );
    assert_eq!(r.status, 200);
    assert!(
        wait_until(PARKED_WITHIN, || s.metric(PARKED) == 1.0),
        "the connection was not parked"
    );
    assert_eq!(c.request("GET", "/orders?limit=2", None).status, 200);
    let lines = logged(log, 2);
    assert_eq!(
        lines,
        vec![
            format!("{CLIENT_IP} GET /orders?limit=1 HTTP/1.1"),
            format!("{CLIENT_IP} GET /orders?limit=2 HTTP/1.1"),
        ]
    );
}

#[test]
fn behind_haproxy_the_client_is_the_one_logged() {
    for send_proxy in ["send-proxy", "send-proxy-v2"] {
        let dir = tempfile::tempdir().unwrap();
        let (s, log) = server(dir.path(), &[]);
        let front = SocketAddr::from(([127, 0, 0, 1], reserve_port()));
        let _haproxy = Haproxy::start(front, s.addr, send_proxy);
        // HAProxy's readiness check was relayed too: counted from here.
        let refused = s.metric(REFUSED);
        the_client_is_logged(&s, front, &log);
        assert_eq!(s.metric(REFUSED), refused, "{send_proxy}");
    }
}

#[test]
fn behind_nginx_stream_the_client_is_the_one_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (s, log) = server(dir.path(), &[]);
    let front = SocketAddr::from(([127, 0, 0, 1], reserve_port()));
    let _nginx = Nginx::stream_with_proxy_protocol(front, s.addr);
    the_client_is_logged(&s, front, &log);
}

/// Whether the server closed `c` without answering.
fn closed_unanswered(c: &mut TcpStream) -> bool {
    c.set_read_timeout(Some(CLOSED_WITHIN)).unwrap();
    let mut answer = Vec::new();
    match c.read_to_end(&mut answer) {
        Ok(_) => answer.is_empty(),
        // A reset: closed with our bytes unread.
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset && answer.is_empty(),
    }
}

#[test]
fn connections_without_a_valid_header_are_closed_unanswered() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _log) = server(dir.path(), &[]);
    let attempts: &[&[u8]] = &[
        b"GET /orders HTTP/1.1\r\nHost: test\r\n\r\n",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\nGET /orders HTTP/1.1\r\nHost: test\r\n\r\n",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x04\x00\x00\x00\x00",
    ];
    for (i, bytes) in attempts.iter().enumerate() {
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.write_all(bytes).unwrap();
        assert!(closed_unanswered(&mut c), "attempt {i} was answered");
    }
    assert!(wait_until(CLOSED_WITHIN, || s.metric(REFUSED) == attempts.len() as f64));
    // The worker goes on: a valid header is served.
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n")
        .unwrap();
    let mut c = Client::over(c).unwrap();
    assert_eq!(c.request("GET", "/orders?limit=1", None).status, 200);
}

/// Hostile tester's finding: a peer that connects and resets (a
/// balancer's health check) counted as a refused header. Leaving is not
/// being refused.
#[test]
fn a_peer_that_leaves_is_not_counted_as_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _log) = server(dir.path(), &[]);
    for header in [
        &b""[..],
        b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n",
        b"PROXY TCP4 19",
    ] {
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.write_all(header).unwrap();
        // SO_LINGER 0: the close resets the connection.
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(c);
    }
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n")
        .unwrap();
    let mut c = Client::over(c).unwrap();
    assert_eq!(c.request("GET", "/healthz", None).status, 200);
    assert!(wait_until(CLOSED_WITHIN, || s
        .metric("orders_http_connections_open")
        == 1.0));
    assert_eq!(s.metric(REFUSED), 0.0);
}

#[test]
fn a_peer_not_in_proxy_allow_ips_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (s, log) = server(dir.path(), &["--proxy-allow-ips", "10.0.0.0/8"]);
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\nGET /orders HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert!(closed_unanswered(&mut c));
    assert!(wait_until(CLOSED_WITHIN, || s.metric(REFUSED) == 1.0));
    assert_eq!(std::fs::read_to_string(log).unwrap_or_default(), "");
}

/// A header that comes in pieces is waited for; what follows it in the
/// same packet (pipelined requests, then the client's end) is the
/// connection's, untouched.
#[test]
fn a_header_in_pieces_then_pipelined_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (s, log) = server(dir.path(), &[]);
    let mut c = TcpStream::connect(s.addr).unwrap();
    for piece in [&b"PROX"[..], b"Y TCP6 2001:db8::7 2001:db8::1 4000"] {
        c.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    c.write_all(
        b" 80\r\nGET /orders?limit=1 HTTP/1.1\r\nHost: t\r\n\r\nGET /orders?limit=2 HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    // The client's end may come with the rest: both are still answered.
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut c = Client::over(c).unwrap();
    assert_eq!(c.read_response().unwrap().status, 200);
    assert_eq!(c.read_response().unwrap().status, 200);
    assert_eq!(
        logged(&log, 2),
        vec![
            "2001:db8::7 GET /orders?limit=1 HTTP/1.1",
            "2001:db8::7 GET /orders?limit=2 HTTP/1.1"
        ]
    );
}

/// A balancer's health check (version 2 LOCAL) is served as the balancer's
/// own connection.
#[test]
fn a_local_header_keeps_the_peers_address() {
    let dir = tempfile::tempdir().unwrap();
    let (s, log) = server(dir.path(), &[]);
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.write_all(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00")
        .unwrap();
    let mut c = Client::over(c).unwrap();
    assert_eq!(c.request("GET", "/healthz", None).status, 200);
    assert_eq!(logged(&log, 1), vec!["127.0.0.1 GET /healthz HTTP/1.1"]);
}

/// A header that stalls half-way is cut at `client_timeout`, like a
/// request that stalls.
#[test]
fn a_stalled_header_is_cut_at_client_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _log) = server(dir.path(), &["--client-timeout", "1"]);
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.write_all(b"PROXY TCP4 192.0.2").unwrap();
    let started = Instant::now();
    assert!(closed_unanswered(&mut c));
    assert!(started.elapsed() < CLOSED_WITHIN, "{:?}", started.elapsed());
    assert!(wait_until(CLOSED_WITHIN, || s.metric(REFUSED) == 1.0));
}
