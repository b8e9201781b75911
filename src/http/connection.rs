//! One connection: an HTTP/1.1 keep-alive loop in its own coroutine.
//!
//! Requests are read into one buffer, parsed (`request`), their bodies read
//! in bounded memory (`body`), handled (`routes`), and their responses
//! appended to one output buffer in request order. The output is written
//! when no complete request is left in the input (so pipelined requests
//! are answered with one write), before any wait for the client, and when
//! it grows past [`WRITE_BATCH`]. A response that closes the connection is
//! written after every earlier one; no later request is executed.
//!
//! The socket is non-blocking and registered with may's event loop: reads
//! and writes are plain system calls, and the coroutine parks on
//! `wait_io` only when the socket has nothing for it. A read that did not
//! fill the buffer has drained the socket, so the next read waits first:
//! one read and one write per request, no read that returns EAGAIN. Not
//! once the peer is ending (a wait reported its FIN): the read that takes
//! the last bytes takes the FIN too, and no event follows it.
//!
//! Timeouts come from the worker's sweep (`connections`), which shuts a
//! socket down to wake its coroutine: this loop has no timers of its own.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use httparse::Status;
use may::io::WaitIo;
use may::net::TcpStream;

use super::access_log;
use super::body::Body;
use super::framing::{BodyKind, Framing};
use super::list::ChunkSink;
use super::request::{self, Captured, Head};
use super::response::{self, ApiError, Reply, CONTINUE, LAST_CHUNK};
use super::routes::{self, Route};
use super::sweep::{ConnState, Phase, Registration};
use super::App;
use crate::faults::{self, Fault};
use crate::metrics::{self, RequestLabels};
use crate::store::Counted;

/// Bytes a connection reads into between requests; grows for long heads
/// and bodies, and shrinks back once the buffer is empty.
const READ_BUFFER: usize = 4 * 1024;
/// Room asked for before each read of a head.
const MIN_READ: usize = 1024;
/// Most bytes read at once while a body arrives.
const BODY_READ: usize = 64 * 1024;
/// Longest chunk-size line (size and extensions) of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
/// Output collected from pipelined requests before it is written.
const WRITE_BATCH: usize = 64 * 1024;
/// An output buffer larger than this is freed once written.
const KEEP_WRITE_BUFFER: usize = 64 * 1024;
/// After a response that closes the connection, how long the client has
/// to close its side (its unread bytes are discarded meanwhile). Closing
/// with unread bytes would reset the connection and could destroy the
/// response before the client reads it.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes discarded while lingering.
const LINGER_BYTES: usize = 1024 * 1024;
/// Scratch space for bytes read only to be discarded.
const SCRATCH: usize = 4096;

/// Serves one accepted connection until it closes.
pub fn serve(app: &App, stream: TcpStream, registration: Registration) {
    metrics::connections(1);
    let peer = app
        .access
        .as_ref()
        .and(stream.peer_addr().ok())
        .map(|a| a.ip());
    let mut conn = Connection {
        app,
        peer,
        registration,
        io: Io {
            stream,
            must_wait: false,
            peer_ending: false,
            peer_closed: false,
        },
        input: ReadBuf::new(),
        output: Vec::new(),
        pending: None,
    };
    conn.run();
    if conn.pending.take().is_some() {
        metrics::in_flight(-1);
    }
    metrics::connections(-1);
}

/// Why a connection stops.
enum Stop {
    /// Answer this error after the earlier responses, then close.
    Reply(ApiError),
    /// Close without another byte (the client left, or the socket failed).
    Drop,
}

struct Connection<'a> {
    app: &'a App,
    /// Declared before `io`, so it is dropped (unregistered) before the
    /// socket is closed.
    registration: Registration,
    io: Io,
    input: ReadBuf,
    output: Vec<u8>,
    /// The request being handled.
    pending: Option<Pending>,
    /// The client's address, for the access log (only kept when it is on).
    peer: Option<IpAddr>,
}

/// The request being handled, from its complete head to its response.
struct Pending {
    /// Its metrics labels.
    labels: RequestLabels,
    /// When its head was complete.
    started: Instant,
    http10: bool,
    /// With the access log on: what it logs of the head, the request id
    /// (the client's `X-Request-Id` or a new one, echoed in the response)
    /// and the name of the API token that authorized it.
    captured: Option<Captured>,
    request_id: Option<String>,
    user: Option<String>,
}

impl<'a> Connection<'a> {
    fn run(&mut self) {
        loop {
            match self.next_request() {
                Ok(true) => {}
                Ok(false) => break,
                Err(Stop::Reply(e)) => {
                    let reply = Reply {
                        request_id: self.request_id(),
                        ..Reply::error(&e)
                    };
                    response::encode(&reply, true, &mut self.output);
                    self.request_done(&reply);
                    break;
                }
                Err(Stop::Drop) => return,
            }
        }
        if self.flush().is_ok() && !self.io.peer_closed && !self.registration.state().expired() {
            self.io.linger();
        }
    }

    fn state(&self) -> &ConnState {
        self.registration.state()
    }

    /// Reads, runs and answers one request. Ok(false): the connection
    /// closes (after the output is written); also at a clean end of input.
    fn next_request(&mut self) -> Result<bool, Stop> {
        let Some(head) = self.read_head()? else {
            return Ok(false);
        };
        self.input.consume(head.len);
        self.state().set(Phase::Busy);
        self.app.state.count_request();
        let Head {
            http10,
            framing,
            route,
            fault,
            authorization,
            labels,
            captured,
            ..
        } = head;
        let request_id = captured.as_ref().map(|c| {
            let theirs = c.headers[access_log::REQUEST_ID]
                .as_deref()
                .and_then(access_log::valid_request_id);
            theirs.map_or_else(access_log::new_request_id, str::to_string)
        });
        self.pending = Some(Pending {
            labels,
            started: Instant::now(),
            http10,
            captured,
            request_id,
            user: None,
        });
        metrics::in_flight(1);
        let route = self.authorize(route, authorization.as_deref());
        if matches!(route, Err(ApiError::Unauthorized)) && framing.body != BodyKind::None {
            // Never buffer a body for a client that may not write.
            return Err(Stop::Reply(ApiError::Unauthorized));
        }
        if framing.expect_continue {
            // Refused before the body is sent: it is never read.
            if let Err(e) = route {
                return Err(Stop::Reply(e));
            }
        }
        let body = self.read_body(&framing)?;
        self.state().set(Phase::Busy);
        // The connection closes after this response when the client asked
        // (or speaks HTTP/1.0), when the worker drains (also if the drain
        // began while the body arrived), or when the request raced an idle
        // close: it is still answered.
        let close = http10
            || framing.close_requested
            || self.app.state.is_draining()
            || self.state().expired();
        let mut reply = self.handle(route, fault, body.as_slice(), http10, close);
        drop(body);
        if !reply.streamed {
            reply.request_id = self.request_id();
            response::encode(&reply, close || reply.close, &mut self.output);
        }
        self.request_done(&reply);
        if self.output.len() >= WRITE_BATCH {
            self.flush()?;
        }
        Ok(!(close || reply.close))
    }

    /// The request id of the request being handled (access log on).
    fn request_id(&self) -> Option<String> {
        self.pending.as_ref().and_then(|p| p.request_id.clone())
    }

    /// Counts the request being handled (or, when none is, one refused
    /// before its head could be read) in the metrics, and logs it in the
    /// access log when that is on.
    fn request_done(&mut self, reply: &Reply) {
        let status = reply.status.code;
        let Some(p) = self.pending.take() else {
            metrics::request_done(RequestLabels::unrouted(), status, Duration::ZERO);
            return;
        };
        let took = p.started.elapsed();
        metrics::request_done(p.labels, status, took);
        metrics::in_flight(-1);
        if let (Some(log), Some(c)) = (&self.app.access, &p.captured) {
            log.record(&access_log::Entry {
                peer: self.peer,
                method: &c.method,
                target: &c.target,
                http10: p.http10,
                status,
                bytes: (!reply.streamed)
                    .then(|| reply.prefix.len() + reply.body.len() + reply.suffix.len()),
                took,
                user: p.user.as_deref(),
                headers: &c.headers,
                request_id: p.request_id.as_deref().unwrap_or("-"),
            });
        }
    }

    /// With API tokens on, a request that needs one and presents none of
    /// ours becomes a 401.
    fn authorize(
        &mut self,
        route: Result<Route, ApiError>,
        authorization: Option<&[u8]>,
    ) -> Result<Route, ApiError> {
        let (Some(tokens), Ok(r)) = (&self.app.tokens, &route) else {
            return route;
        };
        if r.is_health_check() || !tokens.required_for(r.is_read()) {
            return route;
        }
        match authorization.and_then(|a| tokens.check(a)) {
            Some(name) => {
                log::debug!("request authorized by token {name}");
                if let Some(p) = self.pending.as_mut().filter(|p| p.captured.is_some()) {
                    p.user = Some(name.to_string());
                }
                route
            }
            None => Err(ApiError::Unauthorized),
        }
    }

    /// Runs the handler; a panic in it becomes a 500 (or, mid-stream, a
    /// closed connection) and costs nothing else.
    fn handle(
        &mut self,
        route: Result<Route, ApiError>,
        fault: Option<Fault>,
        body: &[u8],
        http10: bool,
        close: bool,
    ) -> Reply {
        let app = self.app;
        let request_id = self.request_id();
        let mut sink = Sink {
            request_id: request_id.as_deref(),
            io: &mut self.io,
            output: &mut self.output,
            state: self.registration.state(),
            chunked: !http10,
            close,
            started: false,
        };
        let handled = catch_unwind(AssertUnwindSafe(|| {
            if let Some(fault) = fault {
                faults::run(fault);
            }
            let store = Counted(app.store.as_ref());
            route.and_then(|r| {
                routes::handle(
                    &store,
                    r,
                    body,
                    app.limits.response_buffer,
                    &app.state,
                    &mut sink,
                )
            })
        }));
        match handled {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                if let ApiError::Store(cause) = &e {
                    log::warn!("store error: {}", crate::logging::chain(cause));
                }
                Reply::error(&e)
            }
            // The panic hook has logged it.
            Err(_) if sink.started => Reply::aborted(),
            Err(_) => Reply::error(&ApiError::Internal),
        }
    }

    /// The next complete head; None at a clean end of input. Writes the
    /// pending output before it waits for the client.
    fn read_head(&mut self) -> Result<Option<Head>, Stop> {
        loop {
            if !self.input.is_empty() {
                match request::parse(self.input.data(), &self.app.limits.head) {
                    Ok(Some(head)) => return Ok(Some(head)),
                    Ok(None) => {}
                    Err(e) => {
                        log::debug!("malformed request ({}): {e}", e.status().code);
                        return Err(Stop::Reply(e));
                    }
                }
            }
            self.flush()?;
            if self.input.is_empty() {
                self.input.shrink();
                self.state().enter(Phase::Idle);
            } else {
                self.state().receiving();
            }
            if self.io.read(&mut self.input, MIN_READ)? == 0 {
                // The client closed, or the sweep did (idle, or too slow).
                let slow = !self.input.is_empty() && self.state().expired();
                return if slow {
                    Err(Stop::Reply(ApiError::ClientTimeout))
                } else {
                    Ok(None)
                };
            }
        }
    }

    /// Reads the body as framed, in bounded memory; sends `100 Continue`
    /// first when the client waits for it.
    fn read_body(&mut self, framing: &Framing) -> Result<Body<'a>, Stop> {
        let max_body = self.app.limits.head.max_body;
        let memory = &self.app.state.body_memory;
        match framing.body {
            BodyKind::None => Ok(Body::new(memory, 0)),
            BodyKind::Length(len) => {
                let mut body = Body::new(memory, len as usize);
                self.send_continue(framing)?;
                self.read_exact_into(&mut body, len as usize)?;
                Ok(body)
            }
            BodyKind::Chunked => {
                let mut body = Body::new(memory, max_body as usize);
                self.send_continue(framing)?;
                self.read_chunked(&mut body, max_body)?;
                Ok(body)
            }
        }
    }

    /// `100 Continue`, unless the body has started arriving already.
    fn send_continue(&mut self, framing: &Framing) -> Result<(), Stop> {
        if framing.expect_continue && self.input.is_empty() {
            self.output.extend_from_slice(CONTINUE);
            self.flush()?;
        }
        Ok(())
    }

    /// Moves `len` body bytes from the connection into `body`: what the
    /// input buffer holds, then straight from the socket into the body
    /// (so a body's bytes are only ever held, and counted, once).
    fn read_exact_into(&mut self, body: &mut Body<'_>, len: usize) -> Result<(), Stop> {
        let take = len.min(self.input.len());
        body.extend(&self.input.data()[..take])
            .map_err(Stop::Reply)?;
        self.input.consume(take);
        let mut remaining = len - take;
        while remaining > 0 {
            self.await_request()?;
            let room = body.spare(remaining.min(BODY_READ)).map_err(Stop::Reply)?;
            let n = self.io.read_into(room)?;
            body.filled(n);
            if n == 0 {
                return Err(self.truncated());
            }
            remaining -= n;
        }
        Ok(())
    }

    /// Decodes a chunked body (RFC 9112 §7.1) into `body`, at most `max` bytes.
    fn read_chunked(&mut self, body: &mut Body<'_>, max: u64) -> Result<(), Stop> {
        loop {
            let size = self.chunk_size()?;
            if size == 0 {
                return self.skip_trailers();
            }
            if size > max.saturating_sub(body.len() as u64) {
                return Err(Stop::Reply(ApiError::BodyTooLarge(max)));
            }
            self.read_exact_into(body, size as usize)?;
            while self.input.len() < 2 {
                self.fill_request()?;
            }
            if &self.input.data()[..2] != b"\r\n" {
                return Err(Stop::Reply(ApiError::Malformed(
                    "chunk data not followed by CRLF",
                )));
            }
            self.input.consume(2);
        }
    }

    /// The next chunk-size line: the size (extensions are ignored).
    fn chunk_size(&mut self) -> Result<u64, Stop> {
        let invalid = || Stop::Reply(ApiError::Malformed("invalid chunk size line"));
        loop {
            match httparse::parse_chunk_size(self.input.data()) {
                Ok(Status::Complete((used, size))) => {
                    // httparse takes an empty line for 0, and any byte in an
                    // extension, a bare LF included: a proxy in front might
                    // end the line there and frame the body differently.
                    let line = &self.input.data()[..used - 2];
                    if !line.first().is_some_and(u8::is_ascii_hexdigit)
                        || line.iter().any(|b| is_ctl(*b))
                    {
                        return Err(invalid());
                    }
                    self.input.consume(used);
                    return Ok(size);
                }
                Ok(Status::Partial) if self.input.len() > MAX_CHUNK_LINE => return Err(invalid()),
                Ok(Status::Partial) => self.fill_request()?,
                Err(_) => return Err(invalid()),
            }
        }
    }

    /// Discards the trailer section after the last chunk, within the head limits.
    fn skip_trailers(&mut self) -> Result<(), Stop> {
        let limits = &self.app.limits.head;
        let mut lines = 0;
        loop {
            let data = self.input.data();
            match data.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    let blank = end == 1 && data[0] == b'\r';
                    if !blank && !is_field_line(&data[..end]) {
                        return Err(Stop::Reply(ApiError::Malformed("invalid trailer line")));
                    }
                    self.input.consume(end + 1);
                    if blank {
                        return Ok(());
                    }
                    lines += 1;
                    if lines > limits.fields {
                        return Err(Stop::Reply(ApiError::TooManyHeaders(limits.fields)));
                    }
                    if end + 1 > limits.field_size + 2 {
                        return Err(Stop::Reply(ApiError::HeaderTooLong(limits.field_size)));
                    }
                }
                None if data.len() > limits.field_size + 2 => {
                    return Err(Stop::Reply(ApiError::HeaderTooLong(limits.field_size)))
                }
                None => self.fill_request()?,
            }
        }
    }

    /// Reads more of the current request into the input buffer.
    fn fill_request(&mut self) -> Result<(), Stop> {
        self.await_request()?;
        if self.io.read(&mut self.input, MIN_READ)? == 0 {
            return Err(self.truncated());
        }
        Ok(())
    }

    /// Before waiting for more of a request: the pending output goes out,
    /// and the sweep starts timing the client.
    fn await_request(&mut self) -> Result<(), Stop> {
        self.flush()?;
        self.state().receiving();
        Ok(())
    }

    /// The request ended early: the client closed, or the sweep cut it off
    /// for being too slow.
    fn truncated(&self) -> Stop {
        Stop::Reply(if self.state().expired() {
            ApiError::ClientTimeout
        } else {
            ApiError::IncompleteBody
        })
    }

    /// Writes the pending output.
    fn flush(&mut self) -> Result<(), Stop> {
        if self.output.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.io.write_all(&self.output, self.registration.state()) {
            log::debug!("connection write failed: {e}");
            return Err(Stop::Drop);
        }
        self.output.clear();
        if self.output.capacity() > KEEP_WRITE_BUFFER {
            self.output = Vec::new();
        }
        Ok(())
    }
}

/// Events of a wait that mean the peer will send nothing more (or the
/// socket failed): after them a short read no longer proves the socket
/// drained, since the read that took the last bytes also took the FIN,
/// and no event follows a FIN.
const END_EVENTS: usize = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as usize;

/// The socket, and whether it must be waited on before the next read.
struct Io {
    stream: TcpStream,
    /// The last read drained the socket, and no wait has happened since.
    must_wait: bool,
    /// A wait reported the peer's end of input (or an error): every read
    /// from now on goes to the socket.
    peer_ending: bool,
    /// A read saw the end of input.
    peer_closed: bool,
}

impl Io {
    /// Parks until the socket has an event (readable, writable, or the
    /// peer ending). The wait consumes the event, whichever it was: the
    /// next read goes to the socket.
    fn wait(&mut self) {
        let events = self.stream.wait_io();
        self.must_wait = false;
        self.peer_ending |= events & END_EVENTS != 0;
    }

    /// Reads into `input` (with room for at least `want` bytes); 0 at the
    /// end of input.
    fn read(&mut self, input: &mut ReadBuf, want: usize) -> Result<usize, Stop> {
        let n = self.read_into(input.spare(want))?;
        input.filled(n);
        Ok(n)
    }

    /// Reads into `buf`, waiting for the socket when it has nothing; 0 at
    /// the end of input.
    fn read_into(&mut self, buf: &mut [u8]) -> Result<usize, Stop> {
        loop {
            if self.must_wait {
                self.wait();
            }
            match self.stream.inner_mut().read(buf) {
                Ok(n) => {
                    self.peer_closed = n == 0;
                    // A short read took everything the socket had: an event
                    // comes when more arrives (unless the peer is ending).
                    self.must_wait = n > 0 && n < buf.len() && !self.peer_ending;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.must_wait = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("connection read failed: {e}");
                    return Err(Stop::Drop);
                }
            }
        }
    }

    /// Writes all of `bytes`, parking while the client does not read (the
    /// sweep cuts it off after `client_timeout` without progress).
    fn write_all(&mut self, mut bytes: &[u8], state: &ConnState) -> io::Result<()> {
        let (mut blocked, mut progressed) = (false, true);
        while !bytes.is_empty() {
            match self.stream.inner_mut().write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    bytes = &bytes[n..];
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The time counts from the last progress: a wake-up
                    // for anything else (the client sending) restarts
                    // nothing.
                    if progressed {
                        state.enter(Phase::Sending);
                        progressed = false;
                    }
                    blocked = true;
                    self.wait();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if blocked {
            state.set(Phase::Busy);
        }
        Ok(())
    }

    /// Closes gracefully after a response that ends the connection: shuts
    /// the write side (the client reads everything, then end of file), and
    /// discards what the client still sends until it closes, for a while.
    fn linger(&mut self) {
        if self.stream.shutdown(std::net::Shutdown::Write).is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER;
        let mut scratch = [0u8; SCRATCH];
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                return;
            }
            match self.stream.read(&mut scratch) {
                Ok(0) | Err(_) => return,
                Ok(n) => discarded += n,
            }
        }
    }
}

/// Streams a long list on the connection: the head and chunk-size lines go
/// through the output buffer (after any earlier pipelined responses), the
/// chunks themselves straight to the socket. An HTTP/1.0 client, which
/// knows no chunked encoding, gets the raw body ended by the close.
struct Sink<'s> {
    io: &'s mut Io,
    output: &'s mut Vec<u8>,
    state: &'s ConnState,
    /// Chunked encoding (HTTP/1.1).
    chunked: bool,
    close: bool,
    /// The head was queued: a failure now can only cut the connection.
    started: bool,
    /// Echoed in the head (access log on).
    request_id: Option<&'s str>,
}

impl ChunkSink for Sink<'_> {
    fn start(&mut self) -> io::Result<()> {
        self.started = true;
        response::encode_streamed_head(self.chunked, self.close, self.request_id, self.output);
        Ok(())
    }

    fn chunk(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.chunked {
            response::encode_chunk_size(bytes.len(), self.output);
        }
        self.io.write_all(self.output, self.state)?;
        self.output.clear();
        self.io.write_all(bytes, self.state)?;
        if self.chunked {
            self.output.extend_from_slice(b"\r\n");
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.chunked {
            self.output.extend_from_slice(LAST_CHUNK);
        }
        Ok(())
    }
}

/// A control character other than horizontal tab.
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// A header field line as the head's parser accepts one (the trailer
/// section gets the same rules): `name: value` ending in CRLF, the name a
/// token, no control byte, no folded continuation.
fn is_field_line(line: &[u8]) -> bool {
    let Some(line) = line.strip_suffix(b"\r") else {
        return false;
    };
    let Some(colon) = line.iter().position(|b| *b == b':') else {
        return false;
    };
    let name = &line[..colon];
    !name.is_empty()
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
        && !line.iter().any(|b| is_ctl(*b))
}

/// The connection's input: bytes received and not yet consumed.
struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    fn new() -> ReadBuf {
        ReadBuf {
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Free space after the data, at least `want` bytes (moving the data
    /// to the front, or growing, when needed).
    fn spare(&mut self, want: usize) -> &mut [u8] {
        if self.buf.len() - self.end < want {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < want {
                self.buf.resize(self.end + want, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// Gives back the memory a long head or body needed (when empty).
    fn shrink(&mut self) {
        if self.buf.len() > READ_BUFFER && self.is_empty() {
            self.buf = vec![0; READ_BUFFER];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_buffer_compacts_grows_and_shrinks() {
        let mut b = ReadBuf::new();
        b.spare(10)[..10].copy_from_slice(b"0123456789");
        b.filled(10);
        b.consume(4);
        assert_eq!(b.data(), b"456789");
        let room = b.spare(READ_BUFFER).len();
        assert!(room >= READ_BUFFER);
        assert_eq!(b.data(), b"456789", "moved to the front, kept");
        b.consume(6);
        assert!(b.is_empty());
        b.shrink();
        assert_eq!(b.buf.len(), READ_BUFFER);
    }
}
