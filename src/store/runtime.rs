//! The MongoDB driver's tokio runtime, driven by a coroutine on the
//! worker's own scheduler thread.
//!
//! The driver is async and needs tokio. Running tokio on a thread of its own
//! made every operation cross threads twice (coroutine to runtime, answer
//! back), each crossing an eventfd or futex wake-up and a context switch on
//! the worker's one core: a sixth of a GET's CPU went to switching (BENCHMARKS.md,
//! "The MongoDB backend"). Here a current-thread runtime is run in turns by
//! one coroutine (the driving coroutine) instead:
//! - a coroutine hands its operation over by queueing it and waking the
//!   driving coroutine (no syscall when it is already awake);
//! - the driving coroutine spawns what is queued and runs the runtime until
//!   it has nothing left to do (`Idle`, told by the runtime's park hook),
//!   then waits, as any coroutine waits for a socket, for tokio's own epoll
//!   descriptor to become readable (registered in may's event loop: a reply
//!   from the database wakes it), for a new operation, or for a tick;
//! - answers go to their coroutines from the same thread.
//!
//! The runtime never blocks the thread: its park hook wakes `Idle`, so when
//! tokio runs out of work it polls its drivers without waiting and returns.
//! An I/O event seen in that last poll wakes a task that runs only in the
//! next turn; operations mark their wake-ups (`Tracked`) so that a turn does
//! not end while one of them is ready, and the driver's own background tasks
//! (monitors, connection setup) wait at most one [`BUSY_TICK`] for theirs.
//! tokio's timers (the operations' deadlines, the driver's heartbeats) are
//! checked at each turn, so they fire at most a tick late.

use std::future::Future;
#[cfg(test)]
use std::os::fd::AsRawFd;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use may::io::{CoIo, WaitIo, WaitIoWaker};
use tokio::runtime::Runtime;

/// How often the runtime gets a turn while operations are in flight, at
/// the least: the longest a background task of the driver waits for an
/// event seen at the very end of a turn.
pub const BUSY_TICK: Duration = Duration::from_millis(1);
/// How often it gets a turn while nothing is in flight (the driver's
/// monitors and pool maintenance run on timers of 500 ms and more).
pub const IDLE_TICK: Duration = Duration::from_millis(50);
/// Stack of the driving coroutine: the driver's futures are polled on it.
const DRIVER_STACK_BYTES: usize = 2 << 20;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A tokio runtime run by a coroutine of the calling worker.
pub struct CoRuntime {
    shared: Arc<Shared>,
}

/// What the submitting coroutines and the driving and ticking coroutines
/// share.
struct Shared {
    runtime: Runtime,
    /// Operations handed over, not yet spawned.
    queue: Mutex<Vec<Job>>,
    /// Wakes the driving coroutine.
    wake: WaitIoWaker,
    turns: Arc<Turns>,
}

/// The state of the turns, shared with the runtime's park hook and the
/// operations' wakers.
#[derive(Default)]
struct Turns {
    /// The runtime ran out of work (set by its park hook).
    parked: AtomicBool,
    /// An operation was woken since the runtime last ran out of work.
    op_woken: AtomicBool,
    /// Wakes the turn's `Idle`.
    idle: Mutex<Option<Waker>>,
    /// Operations handed over and not finished.
    in_flight: AtomicUsize,
}

impl CoRuntime {
    /// Builds the runtime and starts the coroutines that drive it.
    pub fn start() -> std::io::Result<CoRuntime> {
        let turns = Arc::new(Turns::default());
        let hook = turns.clone();
        let before = epoll_descriptors();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(move || hook.parked())
            .build()?;
        let epoll = CoIo::new(tokio_epoll(&before)?).map_err(std::io::Error::from)?;
        let shared = Arc::new(Shared {
            runtime,
            queue: Mutex::new(Vec::new()),
            wake: epoll.waker(),
            turns,
        });
        spawn_driver(Arc::downgrade(&shared), epoll)?;
        spawn_ticker(Arc::downgrade(&shared));
        Ok(CoRuntime { shared })
    }

    /// Runs `future` to completion, blocking the calling thread: only for
    /// setting up, before the worker serves.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.shared.runtime.block_on(future)
    }

    /// Hands `job` to the runtime: it starts in the driving coroutine's
    /// next turn.
    pub fn submit(&self, job: impl Future<Output = ()> + Send + 'static) {
        let shared = &self.shared;
        shared.turns.in_flight.fetch_add(1, Ordering::Relaxed);
        let job: Job = Box::pin(Tracked {
            job: Box::pin(job),
            turns: shared.turns.clone(),
        });
        lock(&shared.queue).push(job);
        shared.wake.wakeup();
    }
}

impl Drop for CoRuntime {
    /// Lets the driving coroutine see that the runtime is gone, and end.
    fn drop(&mut self) {
        self.shared.wake.wakeup();
    }
}

/// A lock that a panic elsewhere does not poison for good.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Turns {
    /// The park hook: the runtime has no task left to run. (It polls its
    /// I/O and timers once more, without waiting, before `Idle` is polled.)
    fn parked(&self) {
        self.op_woken.store(false, Ordering::Release);
        self.parked.store(true, Ordering::Release);
        if let Some(idle) = lock(&self.idle).as_ref() {
            idle.wake_by_ref();
        }
    }
}

/// Ready once the runtime has run out of work and its last poll of I/O and
/// timers woke none of the operations.
struct Idle(Arc<Turns>);

impl Future for Idle {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let turns = &self.0;
        if turns.parked.swap(false, Ordering::AcqRel) && !turns.op_woken.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        *lock(&turns.idle) = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// An operation whose wake-ups are noted (so that a turn does not end with
/// it ready to run) and whose end is counted.
struct Tracked {
    job: Job,
    turns: Arc<Turns>,
}

/// The waker `Tracked` gives its operation.
struct NoteWake {
    inner: Waker,
    turns: Arc<Turns>,
}

impl Wake for NoteWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.turns.op_woken.store(true, Ordering::Release);
        self.inner.wake_by_ref();
    }
}

impl Future for Tracked {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let waker = Waker::from(Arc::new(NoteWake {
            inner: cx.waker().clone(),
            turns: self.turns.clone(),
        }));
        let done = self.job.as_mut().poll(&mut Context::from_waker(&waker));
        if done.is_ready() {
            self.turns.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        done
    }
}

/// The driving coroutine: a turn of the runtime, then a wait for its epoll
/// descriptor, a new operation or a tick; until the runtime is dropped (the
/// runtime is dropped in the coroutine when a turn held the last reference,
/// outside `block_on`, as tokio requires).
fn spawn_driver(shared: Weak<Shared>, epoll: CoIo<OwnedFd>) -> std::io::Result<()> {
    let builder = may::coroutine::Builder::new()
        .name("mongo-driver".to_string())
        .stack_size(DRIVER_STACK_BYTES / std::mem::size_of::<usize>());
    // SAFETY: may's `spawn` is unsafe because a coroutine must not hold a
    // thread-local across a yield; this one holds none (tokio's context is
    // entered and left within each `block_on`, which never yields).
    let spawned = unsafe {
        builder.spawn(move || loop {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            turn(&shared);
            drop(shared);
            epoll.wait_io();
        })
    };
    spawned.map(drop)
}

/// Spawns the queued operations and runs the runtime until it is idle.
fn turn(shared: &Shared) {
    let jobs = std::mem::take(&mut *lock(&shared.queue));
    let idle = Idle(shared.turns.clone());
    shared.runtime.block_on(async move {
        for job in jobs {
            tokio::spawn(job);
        }
        idle.await
    });
}

/// Wakes the driving coroutine every tick (see [`BUSY_TICK`]).
fn spawn_ticker(shared: Weak<Shared>) {
    may::go!(move || loop {
        let tick = match shared.upgrade() {
            Some(s) if s.turns.in_flight.load(Ordering::Relaxed) > 0 => BUSY_TICK,
            Some(_) => IDLE_TICK,
            None => return,
        };
        may::coroutine::sleep(tick);
        match shared.upgrade() {
            Some(s) => s.wake.wakeup(),
            None => return,
        }
    });
}

/// The epoll descriptors this process has open.
fn epoll_descriptors() -> Vec<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .map(|l| l.as_os_str() == "anon_inode:[eventpoll]")
                .unwrap_or(false)
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// tokio's I/O driver's epoll instance (a copy of its descriptor): the
/// epoll instance that building the runtime added. tokio does not expose it;
/// it is found this way because being woken by it is what lets the runtime
/// share the worker's thread (see the module comment). mio keeps two
/// descriptors of the one instance (its registry is a duplicate): every new
/// descriptor must watch the same descriptors, or this is not the instance.
fn tokio_epoll(before: &[RawFd]) -> std::io::Result<OwnedFd> {
    let added: Vec<RawFd> = epoll_descriptors()
        .into_iter()
        .filter(|fd| !before.contains(fd))
        .collect();
    let watched: Vec<String> = added.iter().map(|fd| watched_by(*fd)).collect();
    match (added.first(), watched.first()) {
        (Some(&fd), Some(first)) if watched.iter().all(|w| w == first) => {
            // SAFETY: `fd` is open (just listed) and owned by the runtime,
            // which outlives this call; it is only borrowed to duplicate it.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            borrowed.try_clone_to_owned()
        }
        _ => Err(std::io::Error::other(format!(
            "cannot tell the tokio runtime's epoll descriptor ({} new)",
            added.len()
        ))),
    }
}

/// What the epoll instance behind `fd` watches, from /proc/self/fdinfo.
fn watched_by(fd: RawFd) -> String {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("tfd:"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn operations_from_many_coroutines_finish_with_timers_and_io() {
        let runtime = Arc::new(CoRuntime::start().unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        // A peer that answers each connection after a while: the jobs wait
        // on tokio's timers and on its sockets, never on the submitting
        // coroutines.
        let peer = std::thread::spawn(move || {
            for stream in listener.incoming().take(50) {
                let mut stream = stream.unwrap();
                std::thread::sleep(Duration::from_millis(2));
                std::io::Write::write_all(&mut stream, b"x").unwrap();
            }
        });
        let (answers, answered) = may::sync::mpsc::channel();
        let started = Instant::now();
        for n in 0..100usize {
            let (runtime, answers) = (runtime.clone(), answers.clone());
            may::go!(move || {
                let (reply, wait) = may::sync::mpsc::channel();
                runtime.submit(async move {
                    if n % 2 == 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    } else {
                        use tokio::io::AsyncReadExt;
                        let mut s = tokio::net::TcpStream::connect(address).await.unwrap();
                        let mut byte = [0u8; 1];
                        s.read_exact(&mut byte).await.unwrap();
                    }
                    reply.send(n).unwrap();
                });
                answers.send(wait.recv().unwrap()).unwrap();
            });
        }
        let mut got: Vec<usize> = (0..100)
            .map(|_| answered.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(runtime.shared.turns.in_flight.load(Ordering::Relaxed), 0);
        peer.join().unwrap();
    }

    #[test]
    fn the_epoll_descriptor_found_is_the_runtimes() {
        let before = epoll_descriptors();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let epoll = tokio_epoll(&before).unwrap();
        // A socket registered with the runtime shows up in that instance.
        let watched_before = watched_by(epoll.as_raw_fd());
        let _socket =
            runtime.block_on(async { tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap() });
        assert_ne!(watched_by(epoll.as_raw_fd()), watched_before);
    }
}
