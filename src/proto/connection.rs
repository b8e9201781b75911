//! One connection: the HTTP/1.1 keep-alive loop, in its own coroutine,
//! generic over the connection ([`Io`]) and the application ([`Service`]).
//!
//! Requests are read into one buffer, their heads parsed (`request`), their
//! bodies read in bounded memory (`body`; `chunked` decodes that coding),
//! handed to the service, and the responses appended to one output buffer
//! in request order. The output is written when no complete request is
//! left in the input (so pipelined requests are answered with one write),
//! before any wait for the client, and when it grows past [`WRITE_BATCH`].
//! A response that closes the connection is written after every earlier
//! one; no later request is executed. A closed connection lingers: its
//! write side is shut and what the client still sends is discarded for a
//! while, so the close does not reset the connection and destroy the
//! response in flight.
//!
//! Timeouts come from the worker's sweep (`sweep`), which shuts a socket
//! down to wake its coroutine: the loop publishes its phase there and has
//! no timers of its own.
//!
//! Between requests, once the sweep asks (the connection has been idle for
//! `sweep::PARK_AFTER`), the loop gives the connection back as [`Idle`]:
//! its socket and registration, no buffer and no coroutine. The caller
//! parks it (`idle`) and, when bytes arrive, [`Idle::resume`]s it in a
//! coroutine again.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use super::body::{Body, BodyMemory};
use super::chunked::{self, Decoder};
use super::framing::{BodyKind, Framing};
use super::io::Io;
use super::request::{self, Head, HeadLimits, Parsed, Version};
use super::response::{self, ChunkSink, Reply, CONTINUE, LAST_CHUNK};
use super::sweep::{ConnState, Phase, Registration};
use super::Error;

/// Bytes a connection reads into between requests, on its coroutine's
/// stack; a heap buffer replaces it for long heads and bodies, until it is
/// empty again.
const READ_BUFFER: usize = 4 * 1024;
/// Room asked for before each read of a head.
const MIN_READ: usize = 1024;
/// Most bytes read at once while a body arrives.
const BODY_READ: usize = 64 * 1024;
/// Most bytes the first read of a body's own asks room for (later reads
/// ask for as much as arrived before them, up to [`BODY_READ`]).
const BODY_FIRST_READ: usize = 4 * 1024;
/// Output collected from pipelined requests before it is written.
const WRITE_BATCH: usize = 64 * 1024;
/// An output buffer larger than this is freed once written.
const KEEP_WRITE_BUFFER: usize = 64 * 1024;
/// An output buffer larger than this is freed when the connection waits
/// for its next request.
const KEEP_IDLE_WRITE_BUFFER: usize = 4 * 1024;

/// After a response that closes the connection, how long the client has
/// to close its side (its unread bytes are discarded meanwhile). Closing
/// with unread bytes would reset the connection and could destroy the
/// response before the client reads it.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes discarded while lingering.
const LINGER_BYTES: usize = 1024 * 1024;
/// Scratch space for bytes read only to be discarded.
const SCRATCH: usize = 4096;

/// What the connection asks of the application, request by request. The
/// loop owns the bytes (framing, bodies, order, closing); the service owns
/// the meaning (routing, answers, errors' statuses, counting, logging).
pub trait Service {
    /// What the service keeps of one request, from its head to its answer
    /// (dropped unanswered if the client leaves first).
    type Exchange;

    /// A complete head arrived (it borrows the input; take what is needed).
    fn begin(&self, head: &Head<'_>) -> Self::Exchange;

    /// The answer to a request refused before its body is read, if it is:
    /// the connection then closes without reading the body.
    fn refuse_early(&self, exchange: &Self::Exchange, framing: &Framing) -> Option<Reply>;

    /// Answers the request. A long answer may be streamed to `stream`
    /// (then `Reply::streamed`).
    fn respond(
        &self,
        exchange: &mut Self::Exchange,
        body: &[u8],
        stream: &mut dyn ChunkSink,
    ) -> Reply;

    /// The answer to a request that broke the protocol or its limits (the
    /// connection closes after it).
    fn reject(&self, error: Error) -> Reply;

    /// The id echoed in every response to this request, if any.
    fn request_id(&self, exchange: &Self::Exchange) -> Option<String>;

    /// A response was queued: `exchange` is its request (None: one refused
    /// before its head could be read).
    fn finish(&self, exchange: Option<Self::Exchange>, reply: &Reply);

    /// Whether every response now closes its connection (the worker stops).
    fn draining(&self) -> bool;
}

/// Serves one accepted connection until it closes (None) or goes idle
/// when the sweep asks (its [`Idle`] to park). `registration` is the
/// connection's entry with the sweep (dropped before `io`, so the sweep
/// never touches a closed socket); bodies are held in `memory`.
pub fn serve<I: Io, S: Service>(
    io: I,
    service: &S,
    registration: Registration,
    limits: &HeadLimits,
    memory: &BodyMemory,
) -> Option<Idle<I>> {
    Idle::new(io, registration).resume(service, limits, memory)
}

/// A connection between requests, given up by its coroutine: its entry
/// with the sweep and its socket, nothing else (no request is pending, no
/// byte unread in the engine, no output unwritten).
pub struct Idle<I> {
    /// Declared before `io`: unregistered before the socket closes.
    registration: Registration,
    io: I,
}

impl<I: Io> Idle<I> {
    /// A connection that has not served a request yet, to be served by
    /// [`Idle::resume`] (its [`Io::waker`] lets the sweep park it).
    pub fn new(io: I, registration: Registration) -> Idle<I> {
        if let Some(waker) = io.waker() {
            registration.state().set_waker(waker);
        }
        Idle { registration, io }
    }

    /// Serves the connection again (bytes arrived, or the sweep shut it):
    /// until it closes (None) or goes idle again.
    pub fn resume<S: Service>(
        self,
        service: &S,
        limits: &HeadLimits,
        memory: &BodyMemory,
    ) -> Option<Idle<I>> {
        let Idle { registration, io } = self;
        if registration.state().parked() {
            // Resumed because something arrived: inside a request (never
            // closable to make room) before it is seen unparked.
            registration.state().receiving();
            registration.state().set_parked(false);
        }
        let mut small = [0; READ_BUFFER];
        Connection {
            service,
            limits,
            memory,
            registration,
            io,
            peer_closed: false,
            input: ReadBuf::new(&mut small),
            output: Vec::new(),
            pending: None,
            head_only: false,
        }
        .run()
    }
}

impl<I: AsRawFd> AsRawFd for Idle<I> {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

/// Why a connection stops.
enum Stop {
    /// The request broke the protocol or a limit: the service's `reject`
    /// answers it after the earlier responses, then the connection closes.
    Rejected(Error),
    /// Close without another byte (the client left, or the socket failed).
    Drop,
    /// Idle, and the sweep asked for the connection to be parked.
    Park,
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Rejected(e)
    }
}

struct Connection<'a, I: Io, S: Service> {
    service: &'a S,
    limits: &'a HeadLimits,
    memory: &'a BodyMemory,
    /// Declared before `io`, so it is dropped (unregistered) before the
    /// connection is closed.
    registration: Registration,
    io: I,
    /// A read saw the end of input.
    peer_closed: bool,
    input: ReadBuf<'a>,
    output: Vec<u8>,
    /// The request being handled.
    pending: Option<S::Exchange>,
    /// It is a HEAD request: its answer, whatever it is, has no body.
    head_only: bool,
}

impl<'a, I: Io, S: Service> Connection<'a, I, S> {
    /// Serves until the connection closes (None) or parks.
    fn run(mut self) -> Option<Idle<I>> {
        loop {
            match self.next_request() {
                Ok(true) => {}
                Ok(false) => break,
                Err(Stop::Rejected(e)) => {
                    let reply = self.service.reject(e);
                    self.answer_and_close(reply);
                    break;
                }
                Err(Stop::Drop) => return None,
                Err(Stop::Park) => {
                    let Connection {
                        registration, io, ..
                    } = self;
                    registration.state().set_parked(true);
                    // Asked to close to make room meanwhile (eviction saw
                    // it unparked): closed, not parked.
                    if registration.state().close_asked() {
                        return None;
                    }
                    return Some(Idle { registration, io });
                }
            }
        }
        if self.flush().is_ok() && !self.peer_closed && !self.state().expired() {
            self.registration.forbid_wakeups();
            linger(&mut self.io);
        }
        None
    }

    fn state(&self) -> &ConnState {
        self.registration.state()
    }

    /// Queues the last response of the connection, after every earlier one.
    fn answer_and_close(&mut self, mut reply: Reply) {
        let pending = self.pending.take();
        reply.request_id = pending.as_ref().and_then(|e| self.service.request_id(e));
        // A head refused before it could be parsed may still be a HEAD's:
        // its answer then has no body either.
        let head_only = match pending {
            Some(_) => self.head_only,
            None => starts_a_head_request(self.input.data()),
        };
        response::encode(&reply, true, head_only, &mut self.output);
        self.service.finish(pending, &reply);
    }

    /// Waits for the next request with nothing pending: the buffers shrink,
    /// the sweep times the connection as idle, and may ask it to park
    /// (then `Stop::Park`). Returns the bytes read; 0 at the end of input.
    fn wait_for_request(&mut self) -> Result<usize, Stop> {
        self.input.shrink();
        // Written already. A small buffer is kept for the next answer (a
        // malloc and a free per request cost 4% of a GET by id); parking
        // frees it with the rest of the coroutine's state, so an idle
        // connection holds none for more than `sweep::PARK_AFTER`.
        if self.output.capacity() > KEEP_IDLE_WRITE_BUFFER {
            self.output = Vec::new();
        }
        self.state().enter_idle();
        loop {
            // Asked to make room: between requests, with nothing received,
            // closing loses nothing.
            if self.state().close_asked() {
                return Err(Stop::Drop);
            }
            let room = self.input.spare(MIN_READ);
            let n = match self.io.read_idle(room).transpose() {
                Some(read) => took(read, &mut self.peer_closed)?,
                None if self.state().close_asked() => return Err(Stop::Drop),
                None if self.state().park_asked() => return Err(Stop::Park),
                // Woken late, by a request for an earlier idle time (or
                // by an eviction that then left the connection alone).
                None => continue,
            };
            if n > 0 {
                // Inside a request from its first byte: never closed to
                // make room, and timed by `client_timeout`.
                self.state().receiving();
            }
            self.input.filled(n);
            return Ok(n);
        }
    }

    /// Reads, runs and answers one request. Ok(false): the connection
    /// closes (after the output is written); also at a clean end of input.
    fn next_request(&mut self) -> Result<bool, Stop> {
        let Some(parsed) = self.read_head()? else {
            return Ok(false);
        };
        let Parsed {
            len,
            version,
            head_only,
            framing,
            taken: exchange,
        } = parsed;
        self.head_only = head_only;
        self.input.consume(len);
        self.state().set(Phase::Busy);
        let exchange = self.pending.insert(exchange);
        if let Some(reply) = self.service.refuse_early(exchange, &framing) {
            self.answer_and_close(reply);
            return Ok(false);
        }
        let body = self.read_body(&framing)?;
        self.state().set(Phase::Busy);
        let http10 = version == Version::Http10;
        // The connection closes after this response when the client asked
        // (or speaks HTTP/1.0), when the worker drains (also if the drain
        // began while the body arrived), or when the request raced an idle
        // close: it is still answered.
        // ... or when the connection was asked to close to make room while
        // this request arrived: answered, then closed the usual way.
        let close = http10
            || framing.close_requested
            || self.service.draining()
            || self.state().expired()
            || self.state().close_asked();
        let mut exchange = self.pending.take().expect("the request being handled");
        let request_id = self.service.request_id(&exchange);
        let mut stream = Stream {
            io: &mut self.io,
            output: &mut self.output,
            state: self.registration.state(),
            chunked: !http10,
            close,
            head_only,
            started: false,
            request_id: request_id.as_deref(),
        };
        let mut reply = self
            .service
            .respond(&mut exchange, body.as_slice(), &mut stream);
        drop(body);
        if !reply.streamed {
            reply.request_id = request_id;
            response::encode(&reply, close || reply.close, head_only, &mut self.output);
        }
        self.service.finish(Some(exchange), &reply);
        if self.output.len() >= WRITE_BATCH {
            self.flush()?;
        }
        Ok(!(close || reply.close))
    }

    /// The next complete head, taken by the service; None at a clean end
    /// of input. Writes the pending output before it waits for the client.
    fn read_head(&mut self) -> Result<Option<Parsed<S::Exchange>>, Stop> {
        loop {
            if !self.input.is_empty() {
                let service = self.service;
                match request::parse(self.input.data(), self.limits, |head| service.begin(head)) {
                    Ok(Some(parsed)) => return Ok(Some(parsed)),
                    Ok(None) => {}
                    Err(e) => {
                        log::debug!("malformed request: {e}");
                        return Err(e.into());
                    }
                }
            }
            self.flush()?;
            let n = if self.input.is_empty() {
                self.wait_for_request()?
            } else {
                self.state().receiving();
                self.read_input(MIN_READ)?
            };
            if n == 0 {
                // The client closed, or the sweep did (idle, or too slow).
                let slow = !self.input.is_empty() && self.state().expired();
                return if slow {
                    Err(Error::ClientTimeout.into())
                } else {
                    Ok(None)
                };
            }
        }
    }

    /// Reads the body as framed, in bounded memory; sends `100 Continue`
    /// first when the client waits for it. The sweep watches its rate.
    fn read_body(&mut self, framing: &Framing) -> Result<Body<'a>, Stop> {
        if framing.body != BodyKind::None {
            self.state().body_started();
        }
        let body = self.read_framed_body(framing);
        self.state().body_done();
        body
    }

    fn read_framed_body(&mut self, framing: &Framing) -> Result<Body<'a>, Stop> {
        let memory = self.memory;
        let max_body = self.limits.max_body;
        match framing.body {
            BodyKind::None => Ok(Body::new(memory, 0)),
            BodyKind::Length(len) => {
                let mut body = Body::new(memory, len as usize);
                self.send_continue(framing)?;
                self.read_exact_into(&mut body, len as usize)?;
                Ok(body)
            }
            BodyKind::Chunked => {
                let mut body = Body::chunked(memory, max_body as usize);
                self.send_continue(framing)?;
                self.read_chunked(&mut body)?;
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
        body.extend(&self.input.data()[..take])?;
        self.input.consume(take);
        let mut remaining = len - take;
        while remaining > 0 {
            self.await_request()?;
            // Room for what has arrived so far again (at least a small
            // read): memory grows with the bytes that come, never with the
            // length a client claims.
            let want = remaining
                .min(BODY_READ)
                .min(body.len().max(BODY_FIRST_READ));
            let room = body.spare(want)?;
            let n = read(&mut self.io, room, &mut self.peer_closed)?;
            body.filled(n);
            self.registration.state().body_received(n);
            if n == 0 {
                return Err(self.truncated());
            }
            remaining -= n;
        }
        Ok(())
    }

    /// Decodes a chunked body into `body` (`chunked`).
    fn read_chunked(&mut self, body: &mut Body<'_>) -> Result<(), Stop> {
        let mut decoder = Decoder::new(self.limits);
        loop {
            let (used, next) = decoder.step(self.input.data())?;
            self.input.consume(used);
            match next {
                chunked::Next::Data(n) => self.read_exact_into(body, n)?,
                chunked::Next::More => self.fill_request()?,
                chunked::Next::Done => return Ok(()),
            }
        }
    }

    /// Reads more of the current request (a chunked body) into the input
    /// buffer.
    fn fill_request(&mut self) -> Result<(), Stop> {
        self.await_request()?;
        let n = self.read_input(MIN_READ)?;
        if n == 0 {
            return Err(self.truncated());
        }
        self.state().body_received(n);
        Ok(())
    }

    /// Reads into the input buffer (with room for at least `want` bytes);
    /// 0 at the end of input.
    fn read_input(&mut self, want: usize) -> Result<usize, Stop> {
        let n = read(&mut self.io, self.input.spare(want), &mut self.peer_closed)?;
        self.input.filled(n);
        Ok(n)
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
        Stop::Rejected(if self.state().expired() {
            Error::ClientTimeout
        } else {
            Error::IncompleteBody
        })
    }

    /// Writes the pending output.
    fn flush(&mut self) -> Result<(), Stop> {
        if self.output.is_empty() {
            return Ok(());
        }
        if let Err(e) = write_all(&mut self.io, &self.output, self.registration.state()) {
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

/// Whether the unparsed bytes of a request begin with the HEAD method
/// (after the empty lines RFC 9112 §2.2 lets a client send first).
fn starts_a_head_request(input: &[u8]) -> bool {
    let start = input
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(input.len());
    input[start..].starts_with(b"HEAD ")
}

/// Reads into `buf` (what it gave, as [`took`] says).
fn read<I: Io>(io: &mut I, buf: &mut [u8], peer_closed: &mut bool) -> Result<usize, Stop> {
    took(io.read(buf), peer_closed)
}

/// What a read gave: 0 at the end of input (noted in `peer_closed`); a
/// failed read drops the connection.
fn took(read: io::Result<usize>, peer_closed: &mut bool) -> Result<usize, Stop> {
    match read {
        Ok(n) => {
            *peer_closed = n == 0;
            Ok(n)
        }
        Err(e) => {
            log::debug!("connection read failed: {e}");
            Err(Stop::Drop)
        }
    }
}

/// Writes all of `bytes`, parking while the client does not read (the
/// sweep cuts it off after `client_timeout` without progress).
fn write_all<I: Io>(io: &mut I, mut bytes: &[u8], state: &ConnState) -> io::Result<()> {
    let (mut blocked, mut progressed) = (false, true);
    // The bytes, then what the connection itself holds of them (TLS).
    let mut flushed = false;
    while !flushed {
        let wrote = match bytes.is_empty() {
            false => io.try_write(bytes).map(Some),
            true => io.try_flush().map(|()| None),
        };
        match wrote {
            Ok(Some(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Some(n)) => {
                bytes = &bytes[n..];
                progressed = true;
            }
            Ok(None) => flushed = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The time counts from the last progress: a wake-up for
                // anything else (the client sending) restarts nothing.
                if progressed {
                    state.enter(Phase::Sending);
                    progressed = false;
                }
                blocked = true;
                io.wait();
            }
            Err(e) => return Err(e),
        }
    }
    if blocked {
        state.set(Phase::Busy);
    }
    Ok(())
}

/// Closes gracefully after a response that ends the connection: shuts the
/// write side (the client reads everything, then end of file), and
/// discards what the client still sends until it closes, for a while.
fn linger<I: Io>(io: &mut I) {
    if io.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut scratch = [0u8; SCRATCH];
    let mut discarded = 0;
    while discarded < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match io.read_timeout(&mut scratch, left) {
            Ok(0) | Err(_) => return,
            Ok(n) => discarded += n,
        }
    }
}

/// A response streamed on the connection: the head and chunk-size lines go
/// through the output buffer (after any earlier pipelined responses), the
/// chunks themselves straight to the socket. An HTTP/1.0 client, which
/// knows no chunked encoding, gets the raw body ended by the close.
struct Stream<'s, I: Io> {
    io: &'s mut I,
    output: &'s mut Vec<u8>,
    state: &'s ConnState,
    /// Chunked encoding (HTTP/1.1).
    chunked: bool,
    close: bool,
    /// A HEAD request: the head only, no chunk.
    head_only: bool,
    /// The head was queued.
    started: bool,
    /// Echoed in the head.
    request_id: Option<&'s str>,
}

impl<I: Io> ChunkSink for Stream<'_, I> {
    fn start(&mut self) -> io::Result<()> {
        self.started = true;
        response::encode_streamed_head(self.chunked, self.close, self.request_id, self.output);
        Ok(())
    }

    fn chunk(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() || self.head_only {
            return Ok(());
        }
        if self.chunked {
            response::encode_chunk_size(bytes.len(), self.output);
        }
        write_all(self.io, self.output, self.state)?;
        self.output.clear();
        write_all(self.io, bytes, self.state)?;
        if self.chunked {
            self.output.extend_from_slice(b"\r\n");
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.chunked && !self.head_only {
            self.output.extend_from_slice(LAST_CHUNK);
        }
        Ok(())
    }

    fn started(&self) -> bool {
        self.started
    }

    fn wants_body(&self) -> bool {
        !self.head_only
    }
}

/// The connection's input: bytes received and not yet consumed. The first
/// [`READ_BUFFER`] bytes are the coroutine's own (on its stack, lent by
/// [`Idle::resume`]): a connection holds no heap memory for its input, and
/// gives the memory back with its coroutine, unless a long head or body
/// needs more (then a heap buffer, dropped once it is empty).
struct ReadBuf<'b> {
    small: &'b mut [u8],
    /// The buffer in use when `small` was not enough.
    large: Option<Vec<u8>>,
    start: usize,
    end: usize,
}

impl<'b> ReadBuf<'b> {
    fn new(small: &'b mut [u8]) -> ReadBuf<'b> {
        ReadBuf {
            small,
            large: None,
            start: 0,
            end: 0,
        }
    }

    fn buf(&self) -> &[u8] {
        self.large.as_deref().unwrap_or(self.small)
    }

    fn buf_mut(&mut self) -> &mut [u8] {
        match &mut self.large {
            Some(large) => large,
            None => self.small,
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf()[self.start..self.end]
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
    /// to the front, or into a larger buffer, when needed).
    fn spare(&mut self, want: usize) -> &mut [u8] {
        if self.buf().len() - self.end < want {
            let (start, end) = (self.start, self.end);
            self.buf_mut().copy_within(start..end, 0);
            self.end -= start;
            self.start = 0;
            if self.buf().len() - self.end < want {
                self.grow(self.end + want);
            }
        }
        let end = self.end;
        &mut self.buf_mut()[end..]
    }

    /// Makes the buffer `len` bytes long (the data is at the front).
    fn grow(&mut self, len: usize) {
        match &mut self.large {
            Some(large) => large.resize(len, 0),
            None => {
                let mut large = vec![0; len];
                large[..self.end].copy_from_slice(&self.small[..self.end]);
                self.large = Some(large);
            }
        }
    }

    fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// Gives back the memory a long head or body needed (when empty).
    fn shrink(&mut self) {
        if self.is_empty() {
            self.large = None;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The loop driven by scripted bytes, without a socket: what a client
    //! sends, step by step, and what the loop wrote, read and shut.

    use super::*;
    use crate::proto::response::Reply;
    use crate::proto::status;
    use crate::proto::sweep::Registry;
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;
    use std::sync::Arc;

    /// One step of a client.
    enum Step {
        /// These bytes arrive (one read may take only part of them).
        Send(&'static [u8]),
        /// The client waits until the server wrote this (a read before
        /// that fails the test: the server waited when it should have
        /// answered).
        AwaitOutput(&'static str),
    }

    /// What the server did to the connection.
    #[derive(Default)]
    struct Seen {
        output: Vec<u8>,
        /// Calls of `try_write` that wrote something.
        writes: usize,
        shut: Vec<Shutdown>,
        /// Whether the loop read after the end of input while lingering.
        lingered: bool,
    }

    /// A connection that plays `steps`, then ends its input.
    struct Scripted {
        steps: VecDeque<Step>,
        arrived: Vec<u8>,
        /// Most bytes one read returns.
        read_size: usize,
        /// Most bytes one write takes; every other write would block.
        write_size: usize,
        block_next: bool,
        seen: Rc<RefCell<Seen>>,
    }

    impl Scripted {
        fn new(steps: Vec<Step>) -> (Scripted, Rc<RefCell<Seen>>) {
            let seen = Rc::default();
            let io = Scripted {
                steps: steps.into(),
                arrived: Vec::new(),
                read_size: usize::MAX,
                write_size: usize::MAX,
                block_next: false,
                seen: Rc::clone(&seen),
            };
            (io, seen)
        }
    }

    impl Io for Scripted {
        fn read_or_woken(&mut self, buf: &mut [u8], _: bool) -> io::Result<Option<usize>> {
            while self.arrived.is_empty() {
                match self.steps.pop_front() {
                    Some(Step::Send(bytes)) => self.arrived.extend_from_slice(bytes),
                    Some(Step::AwaitOutput(text)) => {
                        let out = String::from_utf8_lossy(&self.seen.borrow().output).into_owned();
                        assert!(
                            out.contains(text),
                            "read before {text:?} was written: {out:?}"
                        );
                    }
                    None => return Ok(Some(0)),
                }
            }
            let n = buf.len().min(self.arrived.len()).min(self.read_size);
            buf[..n].copy_from_slice(&self.arrived[..n]);
            self.arrived.drain(..n);
            Ok(Some(n))
        }

        fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if std::mem::replace(&mut self.block_next, self.write_size < usize::MAX) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.write_size);
            let mut seen = self.seen.borrow_mut();
            seen.output.extend_from_slice(&buf[..n]);
            seen.writes += 1;
            Ok(n)
        }

        fn wait(&mut self) {
            self.block_next = false;
        }

        fn read_timeout(&mut self, buf: &mut [u8], _: Duration) -> io::Result<usize> {
            self.seen.borrow_mut().lingered = true;
            self.read(buf)
        }

        fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
            self.seen.borrow_mut().shut.push(how);
            Ok(())
        }
    }

    /// An application that answers `PATH:BODY`; `/stream` streams two
    /// chunks, `/refuse` is refused before its body.
    #[derive(Default)]
    struct Echo {
        finished: RefCell<Vec<(Option<String>, u16)>>,
    }

    impl Service for Echo {
        type Exchange = String;

        fn begin(&self, head: &Head<'_>) -> String {
            head.path().to_string()
        }

        fn refuse_early(&self, path: &String, _: &Framing) -> Option<Reply> {
            (path == "/refuse").then(|| Reply {
                status: status::UNAUTHORIZED,
                ..Reply::ok(b"no".to_vec())
            })
        }

        fn respond(&self, path: &mut String, body: &[u8], stream: &mut dyn ChunkSink) -> Reply {
            if path == "/stream" {
                stream.start().unwrap();
                stream.chunk(b"ab").unwrap();
                stream.chunk(b"cde").unwrap();
                stream.finish().unwrap();
                return Reply::streamed();
            }
            let mut answer = format!("{path}:").into_bytes();
            answer.extend_from_slice(body);
            Reply::ok(answer)
        }

        fn reject(&self, error: Error) -> Reply {
            Reply {
                status: status::BAD_REQUEST,
                ..Reply::ok(error.to_string().into_bytes())
            }
        }

        fn request_id(&self, _: &String) -> Option<String> {
            None
        }

        fn finish(&self, path: Option<String>, reply: &Reply) {
            self.finished.borrow_mut().push((path, reply.status.code));
        }

        fn draining(&self) -> bool {
            false
        }
    }

    const LIMITS: HeadLimits = HeadLimits {
        line: 1000,
        fields: 20,
        field_size: 1000,
        max_body: 1000,
    };

    /// Runs the loop over `io`; the output as text and the service.
    fn serve_script(io: Scripted, seen: &Rc<RefCell<Seen>>) -> (String, Echo) {
        let registry = Arc::new(Registry::new().unwrap());
        let memory = BodyMemory::new(1 << 20);
        let echo = Echo::default();
        serve(io, &echo, registry.register(-1), &LIMITS, &memory);
        assert!(registry.is_empty(), "unregistered at the end");
        assert_eq!(memory.used(), 0, "every body given back");
        let out = String::from_utf8(seen.borrow().output.clone()).unwrap();
        (out, echo)
    }

    /// The bodies of the responses in `out`, in order.
    fn bodies(out: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        let mut rest = out;
        while let Some(head_end) = rest.find("\r\n\r\n") {
            let head = &rest[..head_end];
            let body_start = head_end + 4;
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |n| n.parse().unwrap());
            bodies.push(rest[body_start..body_start + len].to_string());
            rest = &rest[body_start + len..];
        }
        bodies
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_with_one_write() {
        let (io, seen) = Scripted::new(vec![Step::Send(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET /c HTTP/1.1\r\nHost: x\r\n\r\n",
        )]);
        let (out, echo) = serve_script(io, &seen);
        assert_eq!(bodies(&out), ["/a:", "/b:hi", "/c:"]);
        assert_eq!(seen.borrow().writes, 1, "one write for the batch");
        assert_eq!(echo.finished.borrow().len(), 3);
        assert!(
            seen.borrow().shut.is_empty(),
            "a client that leaves is not lingered on"
        );
    }

    #[test]
    fn a_protocol_error_is_answered_after_the_earlier_responses_then_closes() {
        let (io, seen) = Scripted::new(vec![Step::Send(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nContent-Length: x\r\n\r\nGET /never HTTP/1.1\r\n\r\n",
        )]);
        let (out, echo) = serve_script(io, &seen);
        assert_eq!(bodies(&out), ["/a:", "Invalid Content-Length header"]);
        let last = &out[out.rfind("HTTP/1.1 ").unwrap()..];
        assert!(last.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{last}");
        assert!(last.contains("\r\nConnection: close\r\n"), "{last}");
        assert_eq!(
            *echo.finished.borrow(),
            [(Some("/a".to_string()), 200), (None, 400)],
            "the broken head is no request; the one after it never runs"
        );
        let seen = seen.borrow();
        assert_eq!(seen.shut, [Shutdown::Write], "then it lingers");
        assert!(seen.lingered);
    }

    #[test]
    fn continue_is_sent_before_the_body_is_awaited() {
        let (io, seen) = Scripted::new(vec![
            Step::Send(
                b"POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
            ),
            Step::AwaitOutput("HTTP/1.1 100 Continue\r\n\r\n"),
            Step::Send(b"body"),
        ]);
        let (out, _) = serve_script(io, &seen);
        assert!(
            out.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
            "{out}"
        );
        assert_eq!(
            bodies(&out.replacen("HTTP/1.1 100 Continue\r\n\r\n", "", 1)),
            ["/up:body"]
        );
    }

    #[test]
    fn a_request_refused_before_its_body_closes_without_reading_it() {
        let (io, seen) = Scripted::new(vec![
            Step::Send(
                b"POST /refuse HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
            ),
            Step::AwaitOutput("\r\n\r\nno"),
        ]);
        let (out, _) = serve_script(io, &seen);
        assert!(!out.contains("100 Continue"), "{out}");
        assert!(out.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{out}");
        assert!(out.contains("Connection: close\r\n"), "{out}");
    }

    #[test]
    fn chunked_bodies_with_trailers_and_what_follows_them() {
        let (io, seen) = Scripted::new(vec![Step::Send(
            b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nX-Sum: 5\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n",
        )]);
        let (out, _) = serve_script(io, &seen);
        assert_eq!(bodies(&out), ["/c:abcde", "/next:"]);
    }

    #[test]
    fn short_reads_and_short_writes_lose_nothing() {
        let request: &[u8] = b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /s HTTP/1.1\r\nHost: x\r\n\r\n";
        let (mut io, seen) = Scripted::new(vec![Step::Send(request)]);
        io.read_size = 1;
        io.write_size = 3;
        let (out, _) = serve_script(io, &seen);
        assert_eq!(bodies(&out), ["/slow:hello", "/s:"]);
    }

    #[test]
    fn a_peer_that_half_closes_gets_its_answer() {
        // The request, then the end of the client's input: answered, and
        // the connection ends without lingering on a peer that has gone.
        let (io, seen) = Scripted::new(vec![Step::Send(b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n")]);
        let (out, _) = serve_script(io, &seen);
        assert_eq!(bodies(&out), ["/last:"]);
        assert!(!out.contains("Connection: close"), "{out}");
        let seen = seen.borrow();
        assert!(seen.shut.is_empty() && !seen.lingered);
    }

    #[test]
    fn a_closing_answer_lingers_for_the_clients_last_bytes() {
        let (io, seen) = Scripted::new(vec![
            Step::Send(b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            Step::AwaitOutput("/bye:"),
            Step::Send(b"GET /ignored HTTP/1.1\r\n"),
        ]);
        let (out, echo) = serve_script(io, &seen);
        assert_eq!(bodies(&out), ["/bye:"]);
        assert!(out.contains("Connection: close\r\n"));
        assert_eq!(
            echo.finished.borrow().len(),
            1,
            "nothing after a close runs"
        );
        let seen = seen.borrow();
        assert_eq!(seen.shut, [Shutdown::Write], "the write side first");
        assert!(
            seen.lingered,
            "what the client still sent was read and discarded"
        );
    }

    #[test]
    fn a_body_cut_short_is_an_incomplete_body() {
        let (io, seen) = Scripted::new(vec![Step::Send(
            b"POST /cut HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        )]);
        let (out, echo) = serve_script(io, &seen);
        assert_eq!(bodies(&out), ["Request body ended before it was complete"]);
        assert_eq!(
            *echo.finished.borrow(),
            [(Some("/cut".to_string()), 400)],
            "counted as the request it was"
        );
    }

    #[test]
    fn streamed_answers_are_chunked_in_http_1_1_and_raw_in_1_0() {
        let (io, seen) = Scripted::new(vec![Step::Send(
            b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n",
        )]);
        let (out, _) = serve_script(io, &seen);
        let body_at = out.find("\r\n\r\n").unwrap() + 4;
        assert!(
            out[..body_at].contains("Transfer-Encoding: chunked\r\n"),
            "{out}"
        );
        assert!(
            out[body_at..].starts_with("2\r\nab\r\n3\r\ncde\r\n0\r\n\r\nHTTP/1.1 200 OK"),
            "{out}"
        );
        assert!(out.ends_with("/after:"), "the connection goes on: {out}");

        let (io, seen) = Scripted::new(vec![Step::Send(b"GET /stream HTTP/1.0\r\n\r\n")]);
        let (out, _) = serve_script(io, &seen);
        assert!(out.contains("Connection: close\r\n\r\nabcde"), "{out}");
        assert!(!out.contains("Transfer-Encoding"), "{out}");
    }

    #[test]
    fn the_read_buffer_compacts_grows_and_shrinks() {
        let mut small = [0; 16];
        let mut b = ReadBuf::new(&mut small);
        b.spare(10)[..10].copy_from_slice(b"0123456789");
        b.filled(10);
        b.consume(4);
        assert_eq!(b.data(), b"456789");
        assert!(b.spare(8).len() >= 8);
        assert!(b.large.is_none(), "moved to the front of the small buffer");
        assert_eq!(b.data(), b"456789", "moved to the front, kept");
        let room = b.spare(READ_BUFFER).len();
        assert!(room >= READ_BUFFER);
        assert!(b.large.is_some(), "grown onto the heap");
        assert_eq!(b.data(), b"456789", "kept when it grew");
        b.consume(6);
        assert!(b.is_empty());
        b.shrink();
        assert!(b.large.is_none(), "back to the small buffer");
    }
}
