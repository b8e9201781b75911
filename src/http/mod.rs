//! The HTTP layer on may_minihttp: one [`Connection`] service per TCP
//! connection, framing checks before any body byte is read, routing, and
//! responses. Errors become statuses in one place (`response`).
//!
//! may_minihttp cannot close a connection after a response. When one must
//! be closed (framing errors, `Connection: close`, HTTP/1.0, a large
//! response, a draining worker), the handler writes the whole response on
//! the socket itself, shuts down the write side and marks the connection:
//! no later request on it is executed, and may_minihttp's own write of the
//! placeholder response then fails, which closes the connection.

pub mod framing;
pub mod response;
pub mod routes;

use std::io::{self, Read};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may_minihttp::{HttpService, HttpServiceFactory, Request, Response};

use crate::store::Store;
use response::{encode_closing, ApiError, Reply, CONTENT_TYPE_HEADER};
use routes::ListLimits;

/// How long a closing response may take to write before it is abandoned.
const CLOSING_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between tries when the socket's send buffer is full.
const WRITE_RETRY_PAUSE: Duration = Duration::from_millis(1);

/// Request limits and response policy.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest request body.
    pub max_body_size: u64,
    /// Close the connection after a response body larger than this
    /// (may_minihttp keeps each connection's buffer at its largest size).
    pub close_after_response_bytes: usize,
    /// Pagination limits.
    pub list: ListLimits,
}

/// Counters and flags shared by a worker's connections and its lifecycle.
#[derive(Debug, Default)]
pub struct ServerState {
    /// Set when the worker stops: every response closes its connection.
    draining: AtomicBool,
    /// Requests being handled now.
    in_flight: AtomicUsize,
    /// Open connections.
    connections: AtomicUsize,
    /// Requests handled since start.
    requests: AtomicU64,
}

impl ServerState {
    /// Makes every further response close its connection.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
    /// Whether the worker is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
    /// Requests being handled now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
    /// Open connections.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
    /// Requests handled since start.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// What every connection of a worker shares.
pub struct App {
    /// The store.
    pub store: Box<dyn Store>,
    /// Limits.
    pub limits: HttpLimits,
    /// Lifecycle state.
    pub state: Arc<ServerState>,
    /// Test-only routes under `/__test/` (env `ORDERS_TEST_HOOKS=1`).
    pub test_hooks: bool,
}

/// Env var that enables the test-only routes. Never set it in production.
pub const TEST_HOOKS_ENV: &str = "ORDERS_TEST_HOOKS";

/// Creates a [`Connection`] for each accepted socket.
#[derive(Clone)]
pub struct Factory {
    app: Arc<App>,
}

impl Factory {
    /// A factory serving `app`.
    pub fn new(app: Arc<App>) -> Factory {
        Factory { app }
    }
}

impl HttpServiceFactory for Factory {
    type Service = Connection;

    fn new_service(&self, fd: usize) -> Connection {
        self.app.state.connections.fetch_add(1, Ordering::SeqCst);
        Connection { app: self.app.clone(), fd: fd as RawFd, closed: false }
    }
}

/// The per-connection service.
pub struct Connection {
    app: Arc<App>,
    /// The socket (may_minihttp passes it as the service id).
    fd: RawFd,
    /// A response that closes the connection was sent: execute nothing more.
    closed: bool,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.app.state.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a request as in flight for as long as it lives.
struct InFlight<'a>(&'a ServerState);

impl<'a> InFlight<'a> {
    fn new(state: &'a ServerState) -> Self {
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        state.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl HttpService for Connection {
    fn call(&mut self, req: Request, rsp: &mut Response) -> io::Result<()> {
        if self.closed {
            // Bytes after a closing response (an unread body, pipelined
            // requests): never executed, and this placeholder is never sent.
            rsp.status_code(503, "Service Unavailable");
            return Ok(());
        }
        let state = self.app.state.clone();
        let _in_flight = InFlight::new(&state);
        let reply = self.serve(req);
        self.send(reply, rsp);
        Ok(())
    }
}

impl Connection {
    /// Checks framing, reads the body, routes and handles one request.
    fn serve(&mut self, req: Request) -> Reply {
        let limits = &self.app.limits;
        let framing = match framing::check(req.headers(), limits.max_body_size) {
            Ok(f) => f,
            Err(e) => return Reply::error(&e),
        };
        let close = framing.close_requested || req.version() == 0;
        if self.app.test_hooks {
            run_test_hook(req.path());
        }
        let routed = routes::route(req.method(), req.path(), &limits.list);
        let body = match read_body(req, framing.body_len) {
            Ok(body) => body,
            Err(e) => return Reply::error(&e),
        };
        let mut reply = match routed.and_then(|route| routes::handle(self.app.store.as_ref(), route, &body)) {
            Ok(reply) => reply,
            Err(e) => {
                if let ApiError::Store(cause) = &e {
                    log::warn!("store error: {cause}");
                }
                Reply::error(&e)
            }
        };
        reply.close |= close;
        reply
    }

    /// Hands the reply to may_minihttp, or writes it and closes.
    fn send(&mut self, reply: Reply, rsp: &mut Response) {
        let close = reply.close
            || self.app.state.is_draining()
            || reply.body.len() > self.app.limits.close_after_response_bytes;
        if close {
            self.write_and_close(&reply);
            rsp.status_code(503, "Service Unavailable");
            return;
        }
        rsp.status_code(reply.status.code, reply.status.reason);
        rsp.header(CONTENT_TYPE_HEADER);
        for h in &reply.headers {
            rsp.header(h);
        }
        rsp.body_vec(reply.body);
    }

    /// Writes the full response with `Connection: close`, then shuts down
    /// the write side. Responses of earlier pipelined requests still queued
    /// in may_minihttp are lost with the connection (documented).
    fn write_and_close(&mut self, reply: &Reply) {
        self.closed = true;
        let bytes = encode_closing(reply);
        if let Err(e) = write_all_fd(self.fd, &bytes) {
            log::debug!("closing response not delivered: {e}");
        }
        // SAFETY: `fd` is this connection's socket, open for as long as this
        // service lives (may_minihttp drops the service before the stream).
        unsafe { libc::shutdown(self.fd, libc::SHUT_WR) };
    }
}

/// Test-only faults: `/__test/panic` panics in the handler (a panic must
/// cost one connection, never the worker); `/__test/hang` blocks the
/// scheduler thread for a minute (a hung worker).
fn run_test_hook(path: &str) {
    match path {
        "/__test/panic" => panic!("test hook: panic in a handler"),
        "/__test/hang" => std::thread::sleep(Duration::from_secs(60)),
        _ => {}
    }
}

/// Reads exactly `len` body bytes (already checked against the limit).
/// The body is always consumed, so its bytes are never parsed as a request.
fn read_body(req: Request, len: u64) -> Result<Vec<u8>, ApiError> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let mut body = Vec::with_capacity(len as usize);
    let read = req.body().take(len).read_to_end(&mut body);
    match read {
        Ok(n) if n as u64 == len => Ok(body),
        _ => Err(ApiError::IncompleteBody),
    }
}

/// Writes all of `buf` on a non-blocking socket from a coroutine, pausing
/// (without blocking the scheduler thread) while the send buffer is full.
fn write_all_fd(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    let deadline = Instant::now() + CLOSING_WRITE_TIMEOUT;
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid slice; MSG_NOSIGNAL turns a closed peer
        // into EPIPE instead of SIGPIPE; MSG_DONTWAIT never blocks.
        let n = unsafe {
            libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
        };
        if n >= 0 {
            buf = &buf[n as usize..];
            continue;
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::WouldBlock if Instant::now() < deadline => may::coroutine::sleep(WRITE_RETRY_PAUSE),
            io::ErrorKind::Interrupted => {}
            _ => return Err(err),
        }
    }
    Ok(())
}
