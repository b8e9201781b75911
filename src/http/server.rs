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
use std::time::{Duration, Instant};

use may::net::TcpStream;
use socket2::Socket;

use super::dispatch::Dispatch;
use super::error::ApiError;
use super::App;
use crate::metrics;
use crate::net::{self, Acceptor, Throttle};
use crate::proto::connection::Idle;
use crate::proto::io::TcpIo;
use crate::proto::proxy;
use crate::proto::response;
use crate::proto::sweep::{ConnState, Registration};
use crate::proto::tls::TlsIo;

/// Reads of what a refused client already sent, before the close.
const REFUSE_DRAIN_READS: usize = 16;
/// The most idle connections closed at once to make room (nginx's 32; an
/// eighth of the connections when that is fewer). Also the most
/// connections that may be closing to make room at any time, which is how
/// far the open connections may exceed `worker_connections` for a moment.
pub const EVICT_BATCH: usize = 32;
/// The share of the idle connections closed at once: one in this many.
const EVICT_SHARE: usize = 8;
/// How long a connection must have waited for a request, with nothing of
/// it received, before it may be closed to make room: a new client's
/// request gets the time to arrive.
const EVICT_GRACE: Duration = Duration::from_millis(100);
/// The longest the accept loop waits for an idle connection to become
/// closable, or for those asked to close to do so, before refusing.
const ROOM_WAIT: Duration = Duration::from_millis(200);
/// How long the accept loop waits at a time for connections asked to
/// close.
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
    idle: IdleConn,
    /// The client's address, when the access log wants it.
    peer: Option<IpAddr>,
}

/// An idle connection, plain or TLS (the loop is compiled for each).
enum IdleConn {
    Plain(Idle<TcpIo>),
    /// Boxed: rustls' state is a kilobyte, which a plain connection must
    /// not pay for in the idle set.
    Tls(Box<Idle<TlsIo>>),
}

impl AsRawFd for Parked {
    fn as_raw_fd(&self) -> RawFd {
        match &self.idle {
            IdleConn::Plain(idle) => idle.as_raw_fd(),
            IdleConn::Tls(idle) => idle.as_raw_fd(),
        }
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

/// What the accept loop logs, once a second each.
#[derive(Default)]
struct Pressure {
    evicted: Throttle,
    refused: Throttle,
    not_allowed: Throttle,
}

/// Starts a connection's coroutine; or closes it at once when it comes
/// from a peer not allowed to send the PROXY protocol, or when the worker
/// is at `worker_connections` and no idle connection can make room.
fn admit(app: &Arc<App>, stream: TcpStream, pressure: &mut Pressure) {
    match allowed(app, &stream, &mut pressure.not_allowed) {
        Allowed::Yes => {}
        Allowed::No => {
            metrics::proxy_header_refused();
            return;
        }
        // Gone already (reset): nothing to count.
        Allowed::Gone => return,
    }
    let limit = app.limits.worker_connections;
    let why = match make_room(app, &mut pressure.evicted) {
        Room::Made => None,
        Room::Full => Some("with every connection in a request"),
        Room::Closing => Some("and idle connections closed too slowly"),
    };
    if let Some(why) = why {
        pressure.refused.note(|n| {
            log::warn!("worker_connections ({limit}) reached {why}: refused {n} connections")
        });
        metrics::connection_refused();
        match app.tls {
            // A 503 in clear would be garbage to a TLS client, and the
            // handshake is what the slots are short of: closed, as nginx
            // closes at worker_connections.
            Some(_) => drop(stream),
            None => refuse(stream),
        }
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

/// Whether a connection may be served.
enum Allowed {
    Yes,
    /// From a peer not allowed to send the PROXY protocol.
    No,
    /// The peer is gone already.
    Gone,
}

/// Whether the connection may be served: with the PROXY protocol, only
/// from a peer in `proxy_allow_ips` (checked before it takes a slot, so an
/// outsider cannot make the worker close idle connections).
fn allowed(app: &App, stream: &TcpStream, log: &mut Throttle) -> Allowed {
    let Some(peers) = &app.proxy_protocol else {
        return Allowed::Yes;
    };
    match stream.peer_addr() {
        Ok(peer) if peers.allows(peer.ip()) => Allowed::Yes,
        Ok(peer) => {
            log.note(|n| {
                log::warn!(
                    "refused {n} connections from peers not in proxy_allow_ips (the last from {})",
                    peer.ip()
                )
            });
            Allowed::No
        }
        Err(_) => Allowed::Gone,
    }
}

/// Whether a new connection found room.
enum Room {
    Made,
    /// Every connection is inside a request.
    Full,
    /// Connections asked to close to make room had not closed in time.
    Closing,
}

/// Makes room for a new connection under `worker_connections` when there
/// is none: up to [`EVICT_BATCH`] idle connections are closed, parked ones
/// first, longest idle first ([`evict_parked`]); then ones waiting in their
/// coroutines for a request with nothing of it received, which are asked
/// to close and do so in a moment (counted as gone meanwhile, at most a
/// batch of them at a time). When none can go yet but one soon can (a new
/// client's, waiting for its first byte for less than [`EVICT_GRACE`], or
/// one closing), the accept loop waits for it, at most [`ROOM_WAIT`].
fn make_room(app: &Arc<App>, log: &mut Throttle) -> Room {
    let (limit, registry) = (app.limits.worker_connections, &app.state.registry);
    let deadline = Instant::now() + ROOM_WAIT;
    loop {
        if registry.staying() < limit {
            return Room::Made;
        }
        // An eighth of those that may go: of the parked ones, then of those
        // idle in their coroutines.
        let mut evicted = evict_parked(app, eviction_batch(app.idle.len()));
        let mut next_after = None;
        let room = EVICT_BATCH.saturating_sub(evicted + registry.evicting());
        if evicted == 0 && room > 0 {
            let eviction = registry.evict_idle(|n| eviction_batch(n).min(room), EVICT_GRACE);
            evicted += eviction.shut;
            next_after = eviction.next_after;
        }
        if evicted > 0 {
            metrics::connections_evicted(evicted);
            log.note_many(evicted as u64, |n| {
                log::warn!("worker_connections ({limit}) reached: closed {n} idle connections to admit new ones")
            });
            continue;
        }
        let closing = registry.evicting() > 0;
        let wait = match (next_after, closing) {
            (Some(next), true) => next.min(CLOSING_WAIT),
            (Some(next), false) => next,
            (None, true) => CLOSING_WAIT,
            (None, false) => return Room::Full,
        };
        if Instant::now() + wait > deadline {
            return if closing { Room::Closing } else { Room::Full };
        }
        may::coroutine::sleep(wait);
    }
}

/// How many of `idle` connections that may be closed to close at once: an
/// eighth, at least one, at most [`EVICT_BATCH`] (nginx's
/// `ngx_drain_connections`): the accepts that follow find room without
/// looking again, and a worker does not drop its idle clients by the dozen
/// for one new one.
fn eviction_batch(idle: usize) -> usize {
    (idle / EVICT_SHARE).clamp(1, EVICT_BATCH)
}

/// Closes up to `most` parked connections, the longest idle first, and
/// says how many. One whose request has just arrived (the idle set had not
/// resumed it yet) is resumed instead: a client that has sent a request is
/// never the one closed.
fn evict_parked(app: &Arc<App>, most: usize) -> usize {
    let mut closed = 0;
    for _ in 0..most {
        let Some(parked) = app.idle.take_longest_idle() else {
            break;
        };
        metrics::connections_parked(-1);
        if has_bytes(&parked) {
            spawn(app.clone(), Start::Resumed(parked));
            continue;
        }
        drop(parked);
        metrics::connections(-1);
        closed += 1;
    }
    closed
}

/// Whether bytes of a request wait unread on a parked connection's socket
/// (its end, or an error, counts as none).
fn has_bytes(parked: &Parked) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    let mut one = [0u8; 1];
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    matches!(recv(parked.as_raw_fd(), &mut one, flags), Ok(n) if n > 0)
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
    let (idle, peer) = match start {
        Start::Accepted(accepted) => match open(app, accepted) {
            Some(opened) => opened,
            // Closed before its first request.
            None => {
                metrics::connections(-1);
                return;
            }
        },
        Start::Resumed(Parked { idle, peer }) => (idle, peer),
    };
    match serve_requests(app, idle, peer) {
        Some(idle) => park(app, Parked { idle, peer }),
        None => metrics::connections(-1),
    }
}

/// Opens a new connection for requests: its PROXY protocol header, then
/// its TLS handshake, when the worker expects them; with the client's
/// address when the access log wants it. None when it was closed instead
/// (and counted).
fn open(
    app: &App,
    Accepted {
        registration,
        stream,
    }: Accepted,
) -> Option<(IdleConn, Option<IpAddr>)> {
    let mut tcp = TcpIo::new(stream);
    if app.proxy_protocol.is_some() || app.tls.is_some() {
        // Idle (so closable to make room) until its first byte; then timed
        // like a request, by `client_timeout`.
        if !matches!(tcp.await_bytes(), Ok(true)) {
            close(registration, tcp);
            return None;
        }
        registration.state().receiving();
    }
    let peer = match client_address(app, &mut tcp) {
        Ok(peer) => peer,
        Err(e) => {
            if failed(e.peer_left(), registration.state()) {
                metrics::proxy_header_refused();
            }
            log::debug!("closing a connection: {}", crate::logging::chain(&e));
            close(registration, tcp);
            return None;
        }
    };
    let Some(config) = &app.tls else {
        registration.state().enter_idle();
        return Some((IdleConn::Plain(Idle::new(tcp, registration)), peer));
    };
    let mut tls = match TlsIo::new(tcp, config.clone()) {
        Ok(tls) => tls,
        Err((tcp, e)) => {
            log::error!("cannot start a TLS connection: {e}");
            close(registration, tcp);
            return None;
        }
    };
    if let Err(e) = tls.handshake() {
        if failed(e.peer_left(), registration.state()) {
            metrics::tls_handshake_failed();
        }
        log::debug!("closing a connection: {}", crate::logging::chain(&e));
        close(registration, tls);
        return None;
    }
    registration.state().enter_idle();
    let idle = Box::new(Idle::new(tls, registration));
    Some((IdleConn::Tls(idle), peer))
}

/// Whether a PROXY header or TLS handshake that did not complete counts as
/// failed: a peer that left on its own (a load generator's reset, a
/// balancer's health check) does not; one cut at `client_timeout` does.
fn failed(peer_left: bool, state: &ConnState) -> bool {
    !peer_left || state.expired()
}

/// Closes a connection that never served a request: unregistered first,
/// then the socket closed (as `Accepted` drops them).
fn close(registration: Registration, socket: impl Sized) {
    drop(registration);
    drop(socket);
}

/// Serves a connection's requests (new, or parked and resumed) until it
/// closes (None) or goes idle again.
fn serve_requests(app: &App, idle: IdleConn, peer: Option<IpAddr>) -> Option<IdleConn> {
    let service = Dispatch::new(app, peer);
    let (limits, memory) = (&app.limits.head, &app.state.body_memory);
    match idle {
        IdleConn::Plain(idle) => idle.resume(&service, limits, memory).map(IdleConn::Plain),
        IdleConn::Tls(idle) => {
            let idle = idle.resume(&service, limits, memory);
            idle.map(|idle| IdleConn::Tls(Box::new(idle)))
        }
    }
}

/// The client's address as the access log sees it: with the PROXY
/// protocol, the one its header names (the connection's own for a LOCAL
/// or UNKNOWN header), read before anything else; otherwise the peer's.
/// Looked up only when an access log is written, since nothing else uses
/// it; the header is read whatever the log.
fn client_address(app: &App, tcp: &mut TcpIo) -> Result<Option<IpAddr>, proxy::ReadError> {
    let logged = app.access.is_some();
    if app.proxy_protocol.is_none() {
        return Ok(tcp_peer(tcp).filter(|_| logged));
    }
    let client = match proxy::read_header(tcp)? {
        proxy::Header::Proxied { source, .. } => Some(source.ip()),
        proxy::Header::Local => tcp_peer(tcp),
    };
    Ok(client.filter(|_| logged))
}

fn tcp_peer(tcp: &TcpIo) -> Option<IpAddr> {
    tcp.peer_addr().ok().map(|a| a.ip())
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
