//! `GET /metrics` on `metrics_bind`, a listener of its own (never the
//! API's address, so internals are not public by default). Every worker
//! binds it with SO_REUSEPORT, as it binds the API address, so any worker
//! answers a scrape, and each renders the whole server from shared memory.
//!
//! Scrapes are rare and come from a monitoring system, so the endpoint is
//! deliberately simple: one request per connection, a head of at most
//! [`MAX_HEAD`] bytes read within [`READ_TIMEOUT`], then the answer and a
//! close; at most [`MAX_CONNECTIONS`] at once per worker. A draining worker
//! closes its metrics listener with its API listener: during a binary
//! upgrade, the old and the new master's workers share the address, and
//! the old ones' numbers (another shared region) must stop answering.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::net::{TcpListener, TcpStream};

use crate::net::Acceptor;

use super::render::{self, CONTENT_TYPE};
use super::Region;

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a scraper has to send its whole request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a scraper has to take the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Metrics connections per worker at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;

/// Binds `addr` with SO_REUSEPORT (before privileges drop) and listens.
pub fn bind(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    crate::net::listen(crate::net::bind_reuseport(addr)?, backlog)
}

/// Accepts scrapes on `listener` in a coroutine until the acceptor stops.
pub fn serve(listener: TcpListener, region: Region) -> io::Result<Acceptor> {
    let open = Arc::new(AtomicUsize::new(0));
    Acceptor::start(listener, "metrics", move |stream| {
        if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            return; // dropped: closed
        }
        open.fetch_add(1, Ordering::Relaxed);
        let open = open.clone();
        may::go!(move || {
            answer(stream, &region);
            open.fetch_sub(1, Ordering::Relaxed);
        });
    })
}

/// Reads one request head and answers it.
fn answer(mut stream: TcpStream, region: &Region) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let (status, content_type, body) = respond(&head, region);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream
        .write_all(response.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()));
    let _ = stream.shutdown(Shutdown::Write);
}

/// Status line, content type and body for a request head.
fn respond(head: &[u8], region: &Region) -> (&'static str, &'static str, String) {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET", b"/metrics") => ("200 OK", CONTENT_TYPE, render::render(region)),
        (_, b"/metrics") => (
            "405 Method Not Allowed",
            "application/json",
            r#"{"message":"Method not allowed"}"#.into(),
        ),
        _ => (
            "404 Not Found",
            "application/json",
            r#"{"message":"Not found: this address serves GET /metrics"}"#.into(),
        ),
    }
}

/// The request head (through its blank line), or None when the client
/// sends too much, too slowly, or closes first.
fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())?;
        let _ = stream.set_read_timeout(Some(left));
        let n = stream.read(&mut buf).ok().filter(|n| *n > 0)?;
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return None;
        }
    }
    Some(head)
}
