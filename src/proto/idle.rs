//! Connections between requests, without a coroutine: a worker's idle set.
//!
//! A keep-alive connection that has been idle for a while (the sweep
//! decides: `sweep::PARK_AFTER`) gives up its coroutine: its loop returns
//! it (`connection::Idle`), and it is parked here, in an epoll instance of
//! the set's own, with nothing but its socket and its registration: no
//! stack, no buffer. When bytes (or the peer's end, or the sweep's
//! shutdown of an expired connection) arrive, the reactor (one coroutine
//! waiting on the epoll instance through may's event loop, as the MongoDB
//! runtime's epoll is waited on) takes it out and hands it to `resume`,
//! which gives it a coroutine again.
//!
//! The set remembers the order connections were parked in, so that a
//! worker short of descriptors or memory can close the longest idle first
//! ([`IdleSet::take_longest_idle`]).
//!
//! The set is generic over what is parked: anything with a descriptor. The
//! application decides what a parked connection carries.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use may::io::{CoIo, WaitIo};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

/// Events taken from the epoll instance at once.
const EVENTS: usize = 256;

/// The parked connections of a worker.
pub struct IdleSet<T> {
    epoll: Epoll,
    parked: Mutex<Parked<T>>,
    /// How many: read without the lock (metrics, tests).
    count: AtomicUsize,
}

/// The parked items, by descriptor and by the order they were parked in.
struct Parked<T> {
    by_fd: HashMap<RawFd, (u64, T)>,
    by_age: BTreeMap<u64, RawFd>,
    /// The next parking's sequence number.
    next: u64,
}

impl<T: AsRawFd + Send + 'static> IdleSet<T> {
    /// An empty set.
    pub fn new() -> io::Result<Arc<IdleSet<T>>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        Ok(Arc::new(IdleSet {
            epoll,
            parked: Mutex::new(Parked {
                by_fd: HashMap::new(),
                by_age: BTreeMap::new(),
                next: 0,
            }),
            count: AtomicUsize::new(0),
        }))
    }

    /// Connections parked now.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether none is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parks `item` until its socket has something to read (bytes, the
    /// peer's end, an error): then the reactor resumes it. On failure the
    /// item is given back.
    pub fn park(&self, item: T) -> Result<(), (T, io::Error)> {
        let fd = item.as_raw_fd();
        // Level-triggered and one-shot: bytes that arrived before this
        // call are reported at once, and one event takes the item out.
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLONESHOT;
        // Registered under the lock, so that no one can take the item (and
        // close its descriptor) between its insertion and its registration.
        let mut parked = self.lock();
        // SAFETY: `item` owns the descriptor and is alive: it is open.
        let socket = unsafe { BorrowedFd::borrow_raw(fd) };
        if let Err(e) = self.epoll.add(socket, EpollEvent::new(flags, fd as u64)) {
            return Err((item, e.into()));
        }
        let seq = parked.next;
        parked.next += 1;
        parked.by_fd.insert(fd, (seq, item));
        parked.by_age.insert(seq, fd);
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Takes out the item parked longest ago, if any (its socket is no
    /// longer watched; dropping the item closes it). Whoever takes it
    /// counts it out of any metric it was counted in when parked.
    pub fn take_longest_idle(&self) -> Option<T> {
        let mut parked = self.lock();
        let (_, fd) = parked.by_age.pop_first()?;
        let (_, item) = parked.by_fd.remove(&fd)?;
        self.unwatch(&item);
        Some(item)
    }

    /// Starts the reactor: a coroutine that waits for parked connections to
    /// become readable and hands each to `resume` (which must give it a
    /// coroutine of its own, and not block).
    pub fn start(self: &Arc<Self>, resume: impl Fn(T) + Send + 'static) -> io::Result<()> {
        let set = self.clone();
        let io = CoIo::new(RawEpoll(self.epoll.0.as_raw_fd()))?;
        // SAFETY: may's spawn is unsafe because a coroutine must not keep a
        // thread-local across a yield; the reactor keeps none.
        let spawned = may::go!(
            may::coroutine::Builder::new().name("idle-reactor".to_string()),
            move || loop {
                // may's registration of the epoll descriptor is
                // edge-triggered: take every ready event before waiting.
                if set.dispatch_ready(&resume) < EVENTS {
                    io.wait_io();
                }
            }
        );
        spawned.map(drop)
    }

    /// Takes out the items whose sockets are ready (at most [`EVENTS`]),
    /// hands each to `resume`, and says how many events there were.
    fn dispatch_ready(&self, resume: &impl Fn(T)) -> usize {
        let mut events = [EpollEvent::empty(); EVENTS];
        let ready = match self.epoll.wait(&mut events, EpollTimeout::ZERO) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => return EVENTS,
            Err(e) => {
                // Cannot happen for a valid epoll instance (if it did, the
                // parked connections would stay parked until the worker
                // exits).
                log::error!("idle connections: epoll_wait failed: {e}");
                0
            }
        };
        for event in &events[..ready] {
            if let Some(item) = self.take(event.data() as RawFd) {
                resume(item);
            }
        }
        ready
    }

    /// Takes a parked item out of the set (and its descriptor out of the
    /// epoll instance, so the descriptor can be reused once it closes).
    fn take(&self, fd: RawFd) -> Option<T> {
        let mut parked = self.lock();
        let (seq, item) = parked.by_fd.remove(&fd)?;
        parked.by_age.remove(&seq);
        self.unwatch(&item);
        Some(item)
    }

    /// Forgets a taken item's descriptor (called under the lock).
    fn unwatch(&self, item: &T) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: the item still owns the descriptor: it is open.
        let socket = unsafe { BorrowedFd::borrow_raw(item.as_raw_fd()) };
        let _ = self.epoll.delete(socket);
    }

    fn lock(&self) -> MutexGuard<'_, Parked<T>> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The epoll instance's descriptor, registered in may's event loop (which
/// does not own it: the `Epoll` does, and outlives the reactor).
struct RawEpoll(RawFd);

impl AsRawFd for RawEpoll {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;
    use std::time::Duration;

    /// How long a test waits for the reactor.
    const PATIENCE: Duration = Duration::from_secs(10);
    /// How long a quiet socket is watched not to be resumed.
    const QUIET: Duration = Duration::from_millis(200);

    #[test]
    fn a_parked_socket_is_resumed_when_bytes_arrive_and_not_before() {
        let set = IdleSet::new().unwrap();
        let (tx, rx) = mpsc::channel();
        set.start(move |s: UnixStream| tx.send(s).unwrap()).unwrap();
        let (quiet, _quiet_peer) = UnixStream::pair().unwrap();
        let (talking, mut talking_peer) = UnixStream::pair().unwrap();
        let talking_fd = talking.as_raw_fd();
        set.park(quiet).map_err(|(_, e)| e).unwrap();
        set.park(talking).map_err(|(_, e)| e).unwrap();
        assert_eq!(set.len(), 2);
        talking_peer.write_all(b"GET").unwrap();
        let resumed = rx.recv_timeout(PATIENCE).expect("resumed");
        assert_eq!(resumed.as_raw_fd(), talking_fd);
        assert_eq!(set.len(), 1);
        assert!(rx.recv_timeout(QUIET).is_err());
    }

    #[test]
    fn bytes_that_came_before_parking_resume_at_once() {
        let set = IdleSet::new().unwrap();
        let (tx, rx) = mpsc::channel();
        set.start(move |s: UnixStream| tx.send(s).unwrap()).unwrap();
        let (early, mut peer) = UnixStream::pair().unwrap();
        peer.write_all(b"x").unwrap();
        set.park(early).map_err(|(_, e)| e).unwrap();
        rx.recv_timeout(PATIENCE).expect("resumed");
        assert!(set.is_empty());
    }

    #[test]
    fn the_peers_end_resumes_a_parked_socket() {
        let set = IdleSet::new().unwrap();
        let (tx, rx) = mpsc::channel();
        set.start(move |s: UnixStream| tx.send(s).unwrap()).unwrap();
        let (parked, peer) = UnixStream::pair().unwrap();
        set.park(parked).map_err(|(_, e)| e).unwrap();
        drop(peer);
        rx.recv_timeout(PATIENCE).expect("resumed");
    }

    #[test]
    fn the_longest_idle_is_taken_first() {
        let set = IdleSet::new().unwrap();
        let pairs: Vec<_> = (0..3).map(|_| UnixStream::pair().unwrap()).collect();
        let fds: Vec<RawFd> = pairs.iter().map(|(a, _)| a.as_raw_fd()).collect();
        let mut peers = Vec::new();
        for (a, b) in pairs {
            set.park(a).map_err(|(_, e)| e).unwrap();
            peers.push(b);
        }
        let first = set.take_longest_idle().unwrap();
        assert_eq!(first.as_raw_fd(), fds[0]);
        // Parked again, it is now the most recent.
        set.park(first).map_err(|(_, e)| e).unwrap();
        let order: Vec<RawFd> = std::iter::from_fn(|| set.take_longest_idle())
            .map(|s| s.as_raw_fd())
            .collect();
        assert_eq!(order, vec![fds[1], fds[2], fds[0]]);
        assert!(set.is_empty());
    }
}
