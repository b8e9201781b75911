//! The MongoDB driver's tokio runtime, driven by a coroutine on the
//! worker's own scheduler thread.
//!
//! The driver is async and needs tokio. Running tokio on a thread of its own
//! made every operation cross threads twice (coroutine to runtime, answer
//! back), each crossing an eventfd or futex wake-up and a context switch on
//! the worker's one core: a sixth of a GET's CPU went to switching
//! (BENCHMARKS.md, "The MongoDB backend"). Here a current-thread runtime is
//! run in turns by one coroutine (the driving coroutine) instead:
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
//! checked at each turn, so they fire at most a tick late. A turn is cut
//! after [`MAX_PARKS_PER_TURN`] rounds, so a stream of answers cannot keep
//! the HTTP coroutines waiting.
//!
//! This relies on tokio polling its drivers without waiting when the park
//! hook has woken the `block_on` future: tokio 1.51.4 / 1.52.4 and later
//! (Cargo.toml asks for 1.54); earlier 1.50-1.52 releases skipped the poll,
//! and no turn would ever read a reply.

use std::future::Future;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use may::io::{CoIo, WaitIo, WaitIoWaker};
use may::sync::Semphore;
use tokio::net::UnixDatagram;
use tokio::runtime::Runtime;

/// How often the runtime gets a turn while operations are in flight, at
/// the least: the longest a background task of the driver waits for an
/// event seen at the very end of a turn.
pub const BUSY_TICK: Duration = Duration::from_millis(1);
/// How often it gets a turn while nothing is in flight: the driver's
/// monitors and pool maintenance run on timers of 500 ms and more, so an
/// idle worker wakes twice a second for them, not twenty times. An
/// operation submitted meanwhile ends the wait at once.
pub const IDLE_TICK: Duration = Duration::from_millis(500);
/// Rounds (run what is ready, then poll I/O and timers) in one turn at
/// most, before the HTTP coroutines get the thread back.
pub const MAX_PARKS_PER_TURN: u32 = 4;
/// Stack of the driving coroutine: the driver's futures are polled on it.
const DRIVER_STACK_BYTES: usize = 2 << 20;
/// What /proc/self/fd shows for an epoll descriptor.
const EPOLL_LINK: &str = "anon_inode:[eventpoll]";
/// The line of /proc/self/fdinfo/N naming a descriptor an epoll watches.
const WATCHED_FD_LINE: &str = "tfd:";

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A tokio runtime run by a coroutine of the calling worker.
pub struct CoRuntime {
    /// `None` only while dropping (released before the driver is woken).
    shared: Option<Arc<Shared>>,
    /// Wakes the driving coroutine.
    wake: WaitIoWaker,
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
struct Turns {
    /// The runtime ran out of work (set by its park hook).
    parked: AtomicBool,
    /// An operation was woken since the runtime last ran out of work.
    op_woken: AtomicBool,
    /// Wakes the turn's `Idle`.
    idle: Mutex<Option<Waker>>,
    /// Operations handed over and not finished.
    in_flight: AtomicUsize,
    /// The ticker waits out an [`IDLE_TICK`] (set before it looks at
    /// `in_flight`, so a submit either is seen or sees this).
    ticker_idle: AtomicBool,
    /// Ends the ticker's idle wait.
    ticker_bell: Semphore,
}

impl Default for Turns {
    fn default() -> Turns {
        Turns {
            parked: AtomicBool::new(false),
            op_woken: AtomicBool::new(false),
            idle: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            ticker_idle: AtomicBool::new(false),
            ticker_bell: Semphore::new(0),
        }
    }
}

/// The ticker's next wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tick {
    /// Operations in flight: a [`BUSY_TICK`].
    Busy,
    /// None: an [`IDLE_TICK`], ended early by the next submit.
    Idle,
}

/// How a turn ended.
#[derive(Debug, PartialEq, Eq)]
enum TurnEnd {
    /// Nothing left to run: wait for an event.
    Idle,
    /// Cut at [`MAX_PARKS_PER_TURN`] with work left: another turn follows.
    CutShort,
}

impl CoRuntime {
    /// Builds the runtime, runs `setup` on it (blocking the calling thread:
    /// only before the worker serves), then starts the coroutines that
    /// drive it.
    pub fn start<T>(setup: impl Future<Output = T>) -> std::io::Result<(CoRuntime, T)> {
        let turns = Arc::new(Turns::default());
        let hook = turns.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(move || hook.parked())
            .build()?;
        let epoll = EpollWait::new(tokio_epoll(&runtime)?)?;
        // Before any coroutine drives the runtime: two threads must never
        // `block_on` it at once.
        let set_up = runtime.block_on(setup);
        let wake = epoll.io.waker();
        let shared = Arc::new(Shared {
            runtime,
            queue: Mutex::new(Vec::new()),
            wake: epoll.io.waker(),
            turns,
        });
        spawn_driver(Arc::downgrade(&shared), epoll)?;
        spawn_ticker(Arc::downgrade(&shared), shared.turns.clone());
        let runtime = CoRuntime {
            shared: Some(shared),
            wake,
        };
        Ok((runtime, set_up))
    }

    /// Hands `job` to the runtime: it starts in the driving coroutine's
    /// next turn. A job runs on the worker's scheduler thread: it must not
    /// block, and must not wait on may primitives (sending on a may channel
    /// is fine).
    pub fn submit(&self, job: impl Future<Output = ()> + Send + 'static) {
        let shared = self.shared.as_ref().expect("not dropped");
        shared.turns.in_flight.fetch_add(1, Ordering::SeqCst);
        shared.turns.operation_started();
        let job: Job = Box::pin(Tracked {
            job: Box::pin(job),
            turns: shared.turns.clone(),
            waker: None,
        });
        shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(job);
        shared.wake.wakeup();
    }
}

impl Drop for CoRuntime {
    /// Releases the runtime, then lets the driving coroutine see that it is
    /// gone and end (it drops the runtime itself if a turn still holds it).
    fn drop(&mut self) {
        drop(self.shared.take());
        self.wake.wakeup();
    }
}

impl Turns {
    /// The ticker's next tick: idle while nothing is in flight.
    fn next_tick(&self) -> Tick {
        self.ticker_idle.store(true, Ordering::SeqCst);
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            return Tick::Idle;
        }
        self.ticker_idle.store(false, Ordering::SeqCst);
        Tick::Busy
    }

    /// An operation was submitted: an idle ticker ticks now (once per idle
    /// wait, not per operation).
    fn operation_started(&self) {
        if self.ticker_idle.swap(false, Ordering::SeqCst) {
            self.ticker_bell.post();
        }
    }
    /// The park hook: the runtime has no task left to run. (It polls its
    /// I/O and timers once more, without waiting, before `Idle` is polled.)
    fn parked(&self) {
        self.op_woken.store(false, Ordering::Release);
        self.parked.store(true, Ordering::Release);
        if let Some(idle) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            idle.wake_by_ref();
        }
    }
}

/// Ready once the runtime has run out of work and its last poll of I/O and
/// timers woke none of the operations, or after [`MAX_PARKS_PER_TURN`]
/// rounds.
struct Idle {
    turns: Arc<Turns>,
    parks: u32,
}

impl Idle {
    fn new(turns: Arc<Turns>) -> Idle {
        // A park before this turn (the setup's) says nothing about it.
        turns.parked.store(false, Ordering::Release);
        Idle { turns, parks: 0 }
    }
}

impl Future for Idle {
    type Output = TurnEnd;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TurnEnd> {
        if self.turns.parked.swap(false, Ordering::AcqRel) {
            self.parks += 1;
            // A wake-up from another thread (a blocking task's end) goes to
            // the runtime's global queue, which the operations' marks miss.
            let quiet = !self.turns.op_woken.load(Ordering::Acquire)
                && tokio::runtime::Handle::current()
                    .metrics()
                    .global_queue_depth()
                    == 0;
            if quiet {
                return Poll::Ready(TurnEnd::Idle);
            }
            if self.parks >= MAX_PARKS_PER_TURN {
                return Poll::Ready(TurnEnd::CutShort);
            }
        }
        *self.turns.idle.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// An operation whose wake-ups are noted (so that a turn does not end with
/// it ready to run) and whose end is counted.
struct Tracked {
    job: Job,
    turns: Arc<Turns>,
    /// The waker given to `job`, kept while tokio's waker stays the same.
    waker: Option<(Waker, Waker)>,
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
        let this = &mut *self;
        let stale = match &this.waker {
            Some((theirs, _)) => !theirs.will_wake(cx.waker()),
            None => true,
        };
        if stale {
            let ours = Waker::from(Arc::new(NoteWake {
                inner: cx.waker().clone(),
                turns: this.turns.clone(),
            }));
            this.waker = Some((cx.waker().clone(), ours));
        }
        let (_, ours) = this.waker.as_ref().expect("just set");
        this.job.as_mut().poll(&mut Context::from_waker(ours))
    }
}

impl Drop for Tracked {
    /// Finished, or dropped with the runtime, or after a panic: no longer
    /// in flight.
    fn drop(&mut self) {
        self.turns.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// tokio's epoll descriptor in may's event loop. The registration is made
/// on a copy of the descriptor, and dropped before it is closed.
struct EpollWait {
    io: CoIo<RawDescriptor>,
    _copy: OwnedFd,
}

/// A descriptor number that `CoIo` registers but does not own.
struct RawDescriptor(RawFd);

impl AsRawFd for RawDescriptor {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl EpollWait {
    fn new(copy: OwnedFd) -> std::io::Result<EpollWait> {
        let io = CoIo::new(RawDescriptor(copy.as_raw_fd())).map_err(std::io::Error::from)?;
        Ok(EpollWait { io, _copy: copy })
    }
}

/// The driving coroutine: a turn of the runtime, then a wait for its epoll
/// descriptor, a new operation or a tick; until the runtime is dropped (the
/// runtime is dropped in the coroutine when a turn held the last reference,
/// outside `block_on`, as tokio requires).
fn spawn_driver(shared: Weak<Shared>, epoll: EpollWait) -> std::io::Result<()> {
    let builder = may::coroutine::Builder::new()
        .name("mongo-driver".to_string())
        .stack_size(DRIVER_STACK_BYTES / std::mem::size_of::<usize>());
    // SAFETY: may's `spawn` is unsafe because a coroutine must not hold a
    // thread-local across a yield and must not overflow its stack. This
    // one holds none: tokio's context is entered and left within each
    // `block_on`, which never yields (jobs do not wait on may primitives,
    // see `submit`), and every call that touches tokio's thread-locals is
    // out of line (`drive_turn`), so no address of one is kept across a
    // yield either. Its stack is sized for the driver's futures.
    let spawned = unsafe {
        builder.spawn(move || loop {
            let Some(end) = drive_turn(&shared) else {
                return;
            };
            if end == TurnEnd::Idle {
                epoll.io.wait_io();
            }
            // Let the coroutines the turn answered (and those that came
            // with the event) run first: they may queue more operations.
            may::coroutine::yield_now();
        })
    };
    spawned.map(drop)
}

/// A turn, if the runtime is still there; dropping it when this held the
/// last reference.
///
/// Never inlined, nor is anything that touches tokio's thread-locals
/// (`block_on`, the runtime's drop) from a coroutine: a coroutine moves
/// between scheduler threads across its waits, and the optimizer, which
/// takes a thread-local's address to be constant within a function,
/// computes it once in the caller's loop, on the first thread, and reuses
/// it on the next. `block_on` then sets up tokio's context in another
/// thread's locals and the runtime panics ("no reactor running"), which
/// ends the driving coroutine. Out of line, each call finds its own
/// thread's locals (nothing here yields).
#[inline(never)]
fn drive_turn(shared: &Weak<Shared>) -> Option<TurnEnd> {
    let shared = shared.upgrade()?;
    Some(turn(&shared))
}

/// Spawns the queued operations and runs the runtime until it is idle or
/// the turn is cut short.
fn turn(shared: &Shared) -> TurnEnd {
    let jobs = std::mem::take(&mut *shared.queue.lock().unwrap_or_else(|e| e.into_inner()));
    let idle = Idle::new(shared.turns.clone());
    shared.runtime.block_on(async move {
        for job in jobs {
            tokio::spawn(job);
        }
        idle.await
    })
}

/// Wakes the driving coroutine every tick (see [`BUSY_TICK`]; an idle
/// tick ends early when an operation is submitted).
fn spawn_ticker(shared: Weak<Shared>, turns: Arc<Turns>) {
    may::go!(move || loop {
        match next_tick(&shared) {
            None => return,
            Some(Tick::Idle) => {
                turns.ticker_bell.wait_timeout(IDLE_TICK);
            }
            Some(Tick::Busy) => may::coroutine::sleep(BUSY_TICK),
        }
        // A sleep resumes on may's timer thread: back to a scheduler
        // thread, where dropping the last reference (and the runtime) is
        // allowed to take its time.
        may::coroutine::yield_now();
        if !wake_driver(&shared) {
            return;
        }
    });
}

/// The next tick, if the runtime is still there. Out of line, as is
/// [`wake_driver`]: the runtime may be dropped here (see [`drive_turn`]).
#[inline(never)]
fn next_tick(shared: &Weak<Shared>) -> Option<Tick> {
    let shared = shared.upgrade()?;
    Some(shared.turns.next_tick())
}

/// Wakes the driving coroutine, if the runtime is still there.
#[inline(never)]
fn wake_driver(shared: &Weak<Shared>) -> bool {
    let Some(shared) = shared.upgrade() else {
        return false;
    };
    shared.wake.wakeup();
    true
}

/// tokio's I/O driver's epoll instance (a copy of its descriptor). tokio
/// does not expose it; being woken by it is what lets the runtime share the
/// worker's thread (see the module comment). A probe socket is registered
/// with the runtime, and the instance is the epoll descriptor whose
/// /proc/self/fdinfo lists the probe (mio holds two descriptors of it,
/// either will do).
fn tokio_epoll(runtime: &Runtime) -> std::io::Result<OwnedFd> {
    let probe = {
        let _context = runtime.enter();
        UnixDatagram::unbound()?
    };
    let number = probe.as_raw_fd();
    let found = epoll_descriptors()
        .into_iter()
        .find(|epoll| watched_by(*epoll).contains(&number));
    drop(probe);
    match found {
        Some(fd) => {
            // SAFETY: `fd` is open (just listed) and owned by the runtime,
            // which outlives this call; it is only borrowed to duplicate it.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            borrowed.try_clone_to_owned()
        }
        None => Err(std::io::Error::other(
            "cannot find the tokio runtime's epoll descriptor in /proc/self/fdinfo",
        )),
    }
}

/// The epoll descriptors this process has open.
fn epoll_descriptors() -> Vec<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .map(|l| l.as_os_str() == EPOLL_LINK)
                .unwrap_or(false)
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The descriptors the epoll instance behind `fd` watches.
fn watched_by(fd: RawFd) -> Vec<RawFd> {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == WATCHED_FD_LINE).then(|| words.next()?.parse().ok())?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn operations_from_many_coroutines_finish_with_timers_and_io() {
        let (runtime, ()) = CoRuntime::start(async {}).unwrap();
        let runtime = Arc::new(runtime);
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
        let shared = runtime.shared.as_ref().unwrap();
        assert_eq!(shared.turns.in_flight.load(Ordering::Relaxed), 0);
        peer.join().unwrap();
    }

    #[test]
    fn a_panicking_operation_is_no_longer_in_flight() {
        let (runtime, ()) = CoRuntime::start(async {}).unwrap();
        runtime.submit(async { panic!("an operation's bug") });
        let (reply, wait) = may::sync::mpsc::channel();
        runtime.submit(async move { reply.send(()).unwrap() });
        wait.recv_timeout(Duration::from_secs(5)).unwrap();
        let shared = runtime.shared.as_ref().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while shared.turns.in_flight.load(Ordering::Relaxed) != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(shared.turns.in_flight.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_epoll_descriptor_found_is_the_runtimes() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let epoll = tokio_epoll(&runtime).unwrap();
        // A socket registered with the runtime shows up in that instance.
        let socket =
            runtime.block_on(async { tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap() });
        assert!(watched_by(epoll.as_raw_fd()).contains(&socket.as_raw_fd()));
    }
}
