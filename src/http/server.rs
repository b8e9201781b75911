//! A worker's API listener, the admission of its connections, and their
//! coroutines.
//!
//! The socket is bound (`net::bind_reuseport`) while the worker still has
//! the master's privileges, and only listens once the store is open: until
//! then the kernel sends this worker no connection. One coroutine accepts
//! (`net::Acceptor`, which backs off when descriptors run out); each
//! connection gets a coroutine of its own that runs the HTTP/1.1 loop
//! (`proto::connection`) with this worker's [`Dispatch`]. A connection
//! idle long enough gives its coroutine up: it is parked in the worker's
//! idle set (`proto::idle`, [`Parked`]) and gets a new coroutine when bytes
//! arrive.
//!
//! At `worker_connections` the worker makes room as nginx does: it closes
//! a batch of its longest-idle connections (parked ones first, then ones
//! waiting for a request with nothing of it received), so an idle flood
//! cannot keep new clients out. Only when every connection is inside a
//! request is a new one answered 503 and closed at once.
//! `worker_connections` itself is kept below the open-file limit
//! (`config`) by more than [`EVICT_BATCH`], so the store, logs and pipes
//! always have descriptors left, even while evicted connections close.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Weak};
use std::time::Duration;

use may::net::TcpStream;
use socket2::Socket;

use super::dispatch::Dispatch;
use super::error::ApiError;
use super::App;
use crate::metrics;
use crate::net::{self, Acceptor, Throttle};
use crate::proto::connection::{self, Idle};
use crate::proto::io::TcpIo;
use crate::proto::response;
use crate::proto::sweep::Registration;

/// Reads of what a refused client already sent, before the close.
const REFUSE_DRAIN_READS: usize = 16;
/// Idle connections closed at once to make room (nginx closes 32 too):
/// the accepts that follow find room without looking again. Also the most
/// connections that may be closing to make room at any time, which is how
/// far the open connections may exceed `worker_connections` for a moment.
pub const EVICT_BATCH: usize = 32;
/// How long a connection must have waited for a request, with nothing of
/// it received, before it may be closed to make room: a new client's
/// request gets the time to arrive.
const EVICT_GRACE: Duration = Duration::from_millis(100);
/// Looks for room for one new connection (each after waiting for a
/// connection to become one that may be closed, or to close).
const ROOM_TRIES: usize = 3;
/// How long the accept loop waits for connections it shut to close.
const CLOSING_WAIT: Duration = Duration::from_millis(5);

/// A bound socket, not yet listening.
pub struct Bound(Socket);

/// Binds `addr` with SO_REUSEPORT (joining the port's group of worker
/// sockets), without listening yet.
pub fn bind(addr: SocketAddr) -> io::Result<Bound> {
    net::bind_reuseport(addr).map(Bound)
}

/// Starts resuming `app`'s parked connections when they have bytes to read
/// (the idle set's reactor); before the first connection is accepted.
pub fn resume_parked(app: &Arc<App>) -> io::Result<()> {
    let weak = Arc::downgrade(app);
    app.idle.start(move |parked| resume(&weak, parked))
}

impl Bound {
    /// Starts listening with `backlog` and accepting into `app`.
    pub fn serve(self, backlog: i32, app: Arc<App>) -> io::Result<Acceptor> {
        let listener = net::listen(self.0, backlog)?;
        let mut pressure = Pressure::default();
        Acceptor::start(listener, "accept", move |stream| {
            admit(&app, stream, &mut pressure)
        })
    }
}

/// A connection parked between requests (`proto::idle`), with what its
/// next coroutine needs to know of it.
pub struct Parked {
    idle: Idle<TcpIo>,
    /// The client's address, when the access log wants it.
    peer: Option<IpAddr>,
}

impl AsRawFd for Parked {
    fn as_raw_fd(&self) -> RawFd {
        self.idle.as_raw_fd()
    }
}

/// How a connection's coroutine begins.
enum Start {
    /// Just accepted.
    Accepted(Accepted),
    /// Taken from the idle set: bytes arrived (or the sweep shut it).
    Resumed(Parked),
}

/// An accepted connection on its way to its coroutine. The fields drop in
/// order (if the coroutine cannot start): unregistered, then closed.
struct Accepted {
    registration: Registration,
    stream: TcpStream,
}

/// What the accept loop logs at `worker_connections`, once a second.
#[derive(Default)]
struct Pressure {
    evicted: Throttle,
    refused: Throttle,
}

/// Starts a connection's coroutine, or refuses it when the worker is at
/// `worker_connections` and no idle connection can make room.
fn admit(app: &Arc<App>, stream: TcpStream, pressure: &mut Pressure) {
    let limit = app.limits.worker_connections;
    if !make_room(app, &mut pressure.evicted) {
        pressure
            .refused
            .note(|n| log::warn!("worker_connections ({limit}) reached with every connection in a request: refused {n} connections"));
        metrics::connection_refused();
        refuse(stream);
        return;
    }
    let _ = stream.set_nodelay(true);
    metrics::connections(1);
    let accepted = Accepted {
        registration: app.state.registry.register(stream.as_raw_fd()),
        stream,
    };
    spawn(app.clone(), Start::Accepted(accepted));
}

/// Whether a new connection fits under `worker_connections`, making room
/// when it does not: up to [`EVICT_BATCH`] idle connections are closed,
/// parked ones first, longest idle first, closed here; then ones waiting
/// in their coroutines for a request, which are shut and close in a moment
/// (counted as gone meanwhile, at most a batch of them at a time). When
/// none can go yet but one soon can (one waiting for its first byte for
/// less than [`EVICT_GRACE`], or one already closing), the accept loop
/// waits for it rather than refusing: at most [`ROOM_TRIES`] times.
fn make_room(app: &App, log: &mut Throttle) -> bool {
    let (limit, registry) = (app.limits.worker_connections, &app.state.registry);
    for _ in 0..ROOM_TRIES {
        if registry.staying() < limit {
            return true;
        }
        let mut evicted = 0;
        while evicted < EVICT_BATCH {
            let Some(parked) = app.idle.take_longest_idle() else {
                break;
            };
            drop(parked);
            metrics::connections_parked(-1);
            metrics::connections(-1);
            evicted += 1;
        }
        let closing = EVICT_BATCH.saturating_sub(evicted + registry.evicting());
        let eviction = registry.evict_idle(closing, EVICT_GRACE);
        evicted += eviction.shut;
        if evicted > 0 {
            metrics::connections_evicted(evicted);
            log.note_many(evicted as u64, |n| {
                log::warn!("worker_connections ({limit}) reached: closed {n} idle connections to admit new ones")
            });
            continue;
        }
        let wait = match (eviction.next_after, registry.evicting()) {
            (Some(wait), _) => wait,
            (None, closing) if closing > 0 => CLOSING_WAIT,
            (None, _) => return false,
        };
        may::coroutine::sleep(wait);
    }
    registry.staying() < limit
}

/// Gives a parked connection whose bytes arrived a coroutine again (from
/// the idle set's reactor).
fn resume(app: &Weak<App>, parked: Parked) {
    metrics::connections_parked(-1);
    match app.upgrade() {
        Some(app) => spawn(app, Start::Resumed(parked)),
        // The worker is exiting: the connection closes.
        None => metrics::connections(-1),
    }
}

/// Runs a connection in a coroutine of its own.
fn spawn(app: Arc<App>, start: Start) {
    // SAFETY: may's spawn is unsafe because a coroutine must not keep a
    // thread-local across a yield (it may resume on another thread); the
    // engine's coroutines keep none.
    let spawned = may::go!(may::coroutine::Builder::new(), move || serve(&app, start));
    if let Err(e) = spawned {
        // The closure, and the connection with it, was dropped: closed.
        metrics::connections(-1);
        crate::log_repeated!(
            log::Level::Warn,
            "cannot start a connection's coroutine: {e}"
        );
    }
}

/// A connection's coroutine: serves it until it closes, or parks it when
/// it goes idle.
fn serve(app: &App, start: Start) {
    let _running = metrics::ConnectionCoroutine::start();
    let (limits, memory) = (&app.limits.head, &app.state.body_memory);
    let (idle, peer) = match start {
        Start::Accepted(Accepted {
            registration,
            stream,
        }) => {
            let peer = app
                .access
                .as_ref()
                .and_then(|_| stream.peer_addr().ok())
                .map(|a| a.ip());
            let service = Dispatch::new(app, peer);
            let io = TcpIo::new(stream);
            (
                connection::serve(io, &service, registration, limits, memory),
                peer,
            )
        }
        Start::Resumed(Parked { idle, peer }) => {
            let service = Dispatch::new(app, peer);
            (idle.resume(&service, limits, memory), peer)
        }
    };
    match idle {
        Some(idle) => park(app, Parked { idle, peer }),
        None => metrics::connections(-1),
    }
}

/// Parks an idle connection in the worker's idle set (closing it if the
/// set cannot take it).
fn park(app: &App, parked: Parked) {
    // Counted first: the reactor may resume it (and count it out) before
    // `park` returns.
    metrics::connections_parked(1);
    if let Err((parked, e)) = app.idle.park(parked) {
        metrics::connections_parked(-1);
        crate::log_repeated!(
            log::Level::Warn,
            "cannot park an idle connection, closing it: {e}"
        );
        drop(parked);
        metrics::connections(-1);
    }
}

/// Answers 503 and closes at once: the write side first (the client reads
/// the answer, then end of file). What the client already sent is read
/// first so the close does not reset the connection; that is best effort
/// (a request arriving after the close still gets a reset, which may
/// destroy the answer), since a refused connection must not be held.
fn refuse(stream: TcpStream) {
    let mut answer = Vec::with_capacity(256);
    response::encode(
        &ApiError::TooManyConnections.reply(),
        true,
        false,
        &mut answer,
    );
    let mut socket = stream.inner();
    // A fresh socket's send buffer is empty: this write never blocks.
    let _ = socket.write(&answer);
    let _ = socket.shutdown(Shutdown::Write);
    let mut scratch = [0u8; 4096];
    for _ in 0..REFUSE_DRAIN_READS {
        match socket.read(&mut scratch) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}
