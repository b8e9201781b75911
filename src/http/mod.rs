//! The HTTP layer on may_minihttp: one [`Connection`] service per TCP
//! connection, framing checks and request limits before any body byte is
//! read, routing, and responses. Errors become statuses in one place
//! (`response`).
//!
//! may_minihttp cannot close a connection after a response. When one must
//! be closed (framing errors, `Connection: close`, HTTP/1.0, a large
//! response, a draining worker), the handler writes the whole response on
//! the socket itself, shuts down the write side and marks the connection:
//! no later request on it is executed, and may_minihttp's own write of the
//! placeholder response then fails, which closes the connection.

pub mod connections;
pub mod framing;
pub mod list;
pub mod response;
pub mod routes;

use std::io::{self, Read};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use may_minihttp::{HttpService, HttpServiceFactory, Request, Response};

use crate::store::{Store, StoreError};
use connections::{ConnState, Registry};
use response::{encode_closing, ApiError, Reply, CONTENT_TYPE_HEADER};
use routes::ListLimits;

/// How long a closing response may take to write before it is abandoned.
const CLOSING_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between tries when the socket's send buffer is full.
const WRITE_RETRY_PAUSE: Duration = Duration::from_millis(1);
/// How long a request accepted before the store is open waits for it.
const STORE_OPEN_WAIT: Duration = Duration::from_secs(10);
/// Pause between checks while waiting for the store to open.
const STORE_OPEN_POLL: Duration = Duration::from_millis(5);

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
    /// Longest request line (method, target, version).
    pub limit_request_line: usize,
    /// Most request headers.
    pub limit_request_fields: usize,
    /// Longest header line (name, colon, space, value).
    pub limit_request_field_size: usize,
    /// Most open connections; over it a new one gets a 503 and is closed.
    pub worker_connections: usize,
    /// Ask to be recycled after this many requests (0: never).
    pub max_requests: u64,
}

/// Counters and flags shared by a worker's connections and its lifecycle.
#[derive(Debug, Default)]
pub struct ServerState {
    /// Set when the worker stops: every response closes its connection.
    draining: AtomicBool,
    /// Open connections.
    pub registry: Registry,
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
    /// Requests handled since start.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// What every connection of a worker shares.
pub struct App {
    /// The store, set once it is open (a worker binds before it opens the
    /// store, so it can drop privileges in between).
    pub store: OnceLock<Box<dyn Store>>,
    /// Limits.
    pub limits: HttpLimits,
    /// Lifecycle state.
    pub state: ServerState,
    /// Test-only routes under `/__test/` (env `ORDERS_TEST_HOOKS=1`).
    pub test_hooks: bool,
}

/// Env var that enables the test-only routes. Never set it in production.
pub const TEST_HOOKS_ENV: &str = "ORDERS_TEST_HOOKS";

impl App {
    /// The store; a request that arrives while it opens waits for it.
    fn store(&self) -> Result<&dyn Store, ApiError> {
        let deadline = Instant::now() + STORE_OPEN_WAIT;
        loop {
            if let Some(s) = self.store.get() {
                return Ok(s.as_ref());
            }
            if Instant::now() > deadline {
                return Err(ApiError::Store(StoreError::Unavailable("store not open".into())));
            }
            may::coroutine::sleep(STORE_OPEN_POLL);
        }
    }
}

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
        let fd = fd as RawFd;
        let over_capacity = self.app.state.registry.len() >= self.app.limits.worker_connections;
        let conn = self.app.state.registry.register(fd);
        let mut c = Connection { app: self.app.clone(), fd, conn, closed: false };
        if over_capacity {
            log::warn!("worker_connections ({}) reached: refusing a connection", self.app.limits.worker_connections);
            c.write_and_close(&Reply::error(&ApiError::TooManyConnections));
        }
        c
    }
}

/// The per-connection service.
pub struct Connection {
    app: Arc<App>,
    /// The socket (may_minihttp passes it as the service id).
    fd: RawFd,
    /// What the sweeper sees of this connection.
    conn: Arc<ConnState>,
    /// A response that closes the connection was sent: execute nothing more.
    closed: bool,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.app.state.registry.unregister(self.fd);
    }
}

impl HttpService for Connection {
    fn call(&mut self, req: Request, rsp: &mut Response) -> io::Result<()> {
        if self.closed || self.conn.is_closing() {
            // Bytes after a closing response (an unread body, pipelined
            // requests) or on a connection being closed: never executed,
            // and this placeholder is never sent.
            self.closed = true;
            rsp.status_code(503, "Service Unavailable");
            return Ok(());
        }
        self.conn.begin_request();
        let reply = self.serve(req);
        self.send(reply, rsp);
        self.conn.end_request();
        self.app.state.requests.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Connection {
    /// Checks framing and limits, reads the body, routes and handles one request.
    fn serve(&mut self, req: Request) -> Reply {
        let limits = &self.app.limits;
        if let Err(e) = check_limits(&req, limits) {
            return Reply::error(&e);
        }
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
        let buffer_limit = limits.close_after_response_bytes;
        let mut sink = StreamSink { fd: self.fd, closed: &mut self.closed };
        let handled = routed.and_then(|route| routes::handle(self.app.store()?, route, &body, buffer_limit, &mut sink));
        let mut reply = match handled {
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
        if reply.already_sent {
            rsp.status_code(503, "Service Unavailable");
            return;
        }
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

/// Streams a list straight to the connection's socket (a `GET /orders`
/// larger than `close_after_response_bytes`).
struct StreamSink<'a> {
    fd: RawFd,
    /// The connection's `closed` flag: set once the head is sent.
    closed: &'a mut bool,
}

impl list::ChunkSink for StreamSink<'_> {
    fn start(&mut self) -> io::Result<()> {
        *self.closed = true;
        write_all_fd(self.fd, &response::encode_chunked_head())
    }

    fn chunk(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut framed = Vec::with_capacity(bytes.len() + 16);
        framed.extend_from_slice(format!("{:x}\r\n", bytes.len()).as_bytes());
        framed.extend_from_slice(bytes);
        framed.extend_from_slice(b"\r\n");
        write_all_fd(self.fd, &framed)
    }

    fn finish(&mut self) -> io::Result<()> {
        let sent = write_all_fd(self.fd, b"0\r\n\r\n");
        // SAFETY: the connection's own open socket (see write_and_close).
        unsafe { libc::shutdown(self.fd, libc::SHUT_WR) };
        sent
    }

    fn abort(&mut self) {
        *self.closed = true;
        // SAFETY: the connection's own open socket.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
    }
}

/// The request line and header limits (may_minihttp enforces none but a
/// hard cap of 16 headers).
fn check_limits(req: &Request, limits: &HttpLimits) -> Result<(), ApiError> {
    // "METHOD SP TARGET SP HTTP/1.x"
    let line = req.method().len() + 1 + req.path().len() + 1 + "HTTP/1.1".len();
    if line > limits.limit_request_line {
        return Err(ApiError::RequestLineTooLong(limits.limit_request_line));
    }
    let headers = req.headers();
    if headers.len() > limits.limit_request_fields {
        return Err(ApiError::TooManyHeaders(limits.limit_request_fields));
    }
    if headers.iter().any(|h| h.name.len() + 2 + h.value.len() > limits.limit_request_field_size) {
        return Err(ApiError::HeaderTooLong(limits.limit_request_field_size));
    }
    Ok(())
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
