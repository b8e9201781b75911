//! A worker's API listener and the admission of its connections.
//!
//! The socket is bound (`net::bind_reuseport`) while the worker still has
//! the master's privileges, and only listens once the store is open: until
//! then the kernel sends this worker no connection. One coroutine accepts
//! (`net::Acceptor`, which backs off when descriptors run out); each
//! connection gets a coroutine of its own that runs the HTTP/1.1 loop
//! (`proto::connection`) with this worker's [`Dispatch`]. A connection over
//! `worker_connections` is answered 503 and closed at once;
//! `worker_connections` itself is kept below the open-file limit
//! (`config`), so the store, logs and pipes always have descriptors left.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use may::net::TcpStream;
use socket2::Socket;

use super::dispatch::Dispatch;
use super::error::ApiError;
use super::App;
use crate::net::{self, Acceptor, Throttle};
use crate::proto::connection;
use crate::proto::io::TcpIo;
use crate::proto::response;
use crate::proto::sweep::Registration;

/// Reads of what a refused client already sent, before the close.
const REFUSE_DRAIN_READS: usize = 16;

/// A bound socket, not yet listening.
pub struct Bound(Socket);

/// Binds `addr` with SO_REUSEPORT (joining the port's group of worker
/// sockets), without listening yet.
pub fn bind(addr: SocketAddr) -> io::Result<Bound> {
    net::bind_reuseport(addr).map(Bound)
}

impl Bound {
    /// Starts listening with `backlog` and accepting into `app`.
    pub fn serve(self, backlog: i32, app: Arc<App>) -> io::Result<Acceptor> {
        let listener = net::listen(self.0, backlog)?;
        let mut refusals = Throttle::default();
        Acceptor::start(listener, "accept", move |stream| {
            admit(&app, stream, &mut refusals)
        })
    }
}

/// Starts a connection's coroutine, or refuses it over `worker_connections`.
fn admit(app: &Arc<App>, stream: TcpStream, refusals: &mut Throttle) {
    let limit = app.limits.worker_connections;
    if app.state.registry.len() >= limit {
        refusals
            .note(|n| log::warn!("worker_connections ({limit}) reached: refused {n} connections"));
        crate::metrics::connection_refused();
        refuse(stream);
        return;
    }
    let _ = stream.set_nodelay(true);
    let accepted = Accepted {
        registration: app.state.registry.register(stream.as_raw_fd()),
        stream,
    };
    let app = app.clone();
    // may's spawn is unsafe because a coroutine must not keep a
    // thread-local across a yield (it may resume on another thread); the
    // engine's coroutines keep none.
    let spawned = may::go!(may::coroutine::Builder::new(), move || {
        let Accepted {
            registration,
            stream,
        } = accepted;
        crate::metrics::connections(1);
        let peer = app
            .access
            .as_ref()
            .and_then(|_| stream.peer_addr().ok())
            .map(|a| a.ip());
        connection::serve(
            TcpIo::new(stream),
            &Dispatch::new(&app, peer),
            registration,
            &app.limits.head,
            &app.state.body_memory,
        );
        crate::metrics::connections(-1);
    });
    if let Err(e) = spawned {
        crate::log_repeated!(
            log::Level::Warn,
            "cannot start a connection's coroutine: {e}"
        );
    }
}

/// An accepted connection on its way to its coroutine. The fields drop in
/// order (if the coroutine cannot start): unregistered, then closed.
struct Accepted {
    registration: Registration,
    stream: TcpStream,
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
