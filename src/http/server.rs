//! A worker's listening socket and its accept loop.
//!
//! The socket is bound with socket2 (SO_REUSEADDR, SO_REUSEPORT) while the
//! worker still has the master's privileges, and only listens once the
//! store is open: until then the kernel sends this worker no connection.
//! It is then handed to may, and one coroutine accepts: each connection
//! gets a coroutine of its own (`connection`).
//!
//! The accept loop never spins. When the process is out of descriptors or
//! memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) it backs off, 10 ms doubling to
//! 1 s, logging at most once a second with a count, while the existing
//! connections go on being served. A connection over `worker_connections`
//! is answered 503 and closed at once; `worker_connections` itself is kept
//! below the open-file limit (`config`), so the store, logs and pipes
//! always have descriptors left.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::coroutine::JoinHandle;
use may::net::{TcpListener, TcpStream};
use socket2::{SockRef, Socket};

use super::connection;
use super::response::{self, ApiError, Reply};
use super::sweep::Registration;
use super::App;

/// First pause after an accept failed for want of resources.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between accept attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Least time between two log lines about the same trouble.
const LOG_EVERY: Duration = Duration::from_secs(1);
/// Reads of what a refused client already sent, before the close.
const REFUSE_DRAIN_READS: usize = 16;

/// A bound socket, not yet listening.
pub struct Bound(Socket);

/// Binds `addr` with SO_REUSEPORT (joining the port's group of worker
/// sockets), without listening yet.
pub fn bind(addr: SocketAddr) -> io::Result<Bound> {
    crate::net::bind_reuseport(addr).map(Bound)
}

impl Bound {
    /// Starts listening with `backlog` (the kernel caps it at
    /// `net.core.somaxconn`) and accepting into `app`.
    pub fn serve(self, backlog: i32, app: Arc<App>) -> io::Result<Acceptor> {
        let listener = Arc::new(crate::net::listen(self.0, backlog)?);
        let stopping = Arc::new(AtomicBool::new(false));
        let (accepting, stop) = (listener.clone(), stopping.clone());
        // may's spawn is unsafe because a coroutine must not keep a
        // thread-local across a yield (it may resume on another thread);
        // the engine's coroutines keep none.
        let handle = may::go!(
            may::coroutine::Builder::new().name("accept".into()),
            move || { accept_loop(&accepting, &app, &stop) }
        )?;
        Ok(Acceptor {
            listener,
            stopping,
            handle,
        })
    }
}

/// The running accept loop.
pub struct Acceptor {
    listener: Arc<TcpListener>,
    stopping: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Acceptor {
    /// Stops accepting and closes the listener: the kernel sends new
    /// connections to the other workers' listeners (and, with
    /// `net.ipv4.tcp_migrate_req`, moves the ones waiting in this queue).
    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Shutting a listening socket down wakes the parked accept with an
        // error; the loop then ends. The socket closes when the last
        // reference to it goes, at the end of this function.
        let _ = SockRef::from(self.listener.inner()).shutdown(Shutdown::Read);
        let _ = self.handle.join();
    }
}

fn accept_loop(listener: &TcpListener, app: &Arc<App>, stopping: &AtomicBool) {
    let mut backoff = Backoff::default();
    let mut refusals = Throttle::default();
    while !stopping.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                backoff.reset();
                admit(app, stream, &mut refusals);
            }
            Err(_) if stopping.load(Ordering::SeqCst) => break,
            Err(e) if out_of_resources(&e) => backoff.pause(&e),
            Err(e) => log::debug!("accept failed: {e}"),
        }
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
    // See Bound::serve on may's spawn.
    let spawned = may::go!(may::coroutine::Builder::new(), move || {
        let Accepted {
            registration,
            stream,
        } = accepted;
        connection::serve(&app, stream, registration)
    });
    if let Err(e) = spawned {
        log::warn!("cannot start a connection's coroutine: {e}");
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
        &Reply::error(&ApiError::TooManyConnections),
        true,
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

/// Failures that mean "no descriptor or memory now": retrying at once
/// would spin.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Growing pauses between accept attempts while resources are short.
#[derive(Default)]
struct Backoff {
    delay: Option<Duration>,
    log: Throttle,
}

impl Backoff {
    fn pause(&mut self, e: &io::Error) {
        let delay = self.next_delay();
        self.log.note(|n| {
            log::warn!("accept failed {n} times ({e}): pausing accepts, serving open connections")
        });
        may::coroutine::sleep(delay);
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.delay.map_or(BACKOFF_MIN, |d| (d * 2).min(BACKOFF_MAX));
        self.delay = Some(delay);
        delay
    }

    fn reset(&mut self) {
        self.delay = None;
    }
}

/// Logs a recurring event at most once per [`LOG_EVERY`], with a count.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    count: u64,
}

impl Throttle {
    fn note(&mut self, log: impl FnOnce(u64)) {
        self.count += 1;
        if self.last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            log(self.count);
            self.count = 0;
            self.last = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_second() {
        let mut b = Backoff::default();
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(out_of_resources(&e));
        assert!(!out_of_resources(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
        let delays: Vec<Duration> = (0..9).map(|_| b.next_delay()).collect();
        assert_eq!(delays[0], BACKOFF_MIN);
        assert_eq!(delays[1], BACKOFF_MIN * 2);
        assert_eq!(*delays.last().unwrap(), BACKOFF_MAX);
        b.reset();
        assert!(b.delay.is_none());
    }

    #[test]
    fn throttle_logs_once_per_interval_with_a_count() {
        let mut t = Throttle::default();
        let mut logged = Vec::new();
        for _ in 0..5 {
            t.note(|n| logged.push(n));
        }
        assert_eq!(logged, vec![1], "the first at once, the rest counted");
        t.last = Some(Instant::now() - LOG_EVERY);
        t.note(|n| logged.push(n));
        assert_eq!(logged, vec![1, 5]);
    }
}
