//! The open connections of a worker, and the sweep that enforces the
//! connection timeouts.
//!
//! Each connection coroutine publishes its phase (idle between requests,
//! receiving a request, busy in a handler, blocked sending a response) and
//! when it entered it. The worker's main thread sweeps every connection
//! twice a second, without timers on the hot path:
//! - idle longer than `keepalive` (a draining worker: a moment): the read
//!   side is shut, the coroutine reads end-of-file and closes the
//!   connection cleanly (a request that raced in is still read and
//!   answered, with `Connection: close`);
//! - receiving one request for longer than `client_timeout` (slowloris, a
//!   body that trickles): the read side is shut and the coroutine answers
//!   408 and closes;
//! - receiving a body that brought fewer than `min_body_rate` bytes a
//!   second over the last `body_rate_grace` (a body that started fast,
//!   took its share of the worker's body memory, then stalled): the same,
//!   and its memory goes back at once;
//! - blocked for longer than `client_timeout` on a client that does not
//!   read its response: both sides are shut and the coroutine drops it;
//! - idle for [`PARK_AFTER`] with its coroutine waiting: the coroutine is
//!   woken and asked to park the connection in the worker's idle set
//!   (`idle`), giving up its stack and buffers until bytes arrive. A busy
//!   connection never pays for this: only one that has been idle a while.
//!
//! A connection unregisters (in [`Registration`]'s `Drop`, under the lock a
//! sweep holds) before its socket is closed, so a sweep never touches a
//! descriptor number that was closed and reused.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use may::io::WaitIoWaker;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{shutdown, Shutdown};

use crate::clock::coarse_ms;

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Waiting for the next request; nothing of it received.
    Idle = 0,
    /// Part of a request has arrived; waiting for the rest.
    Receiving = 1,
    /// Running a handler (the store has its own deadline).
    Busy = 2,
    /// Blocked writing a response the client does not read.
    Sending = 3,
}

/// How long a connection waits for its next request in its coroutine
/// before the sweep asks it to park without one (`idle`), at first.
pub const PARK_AFTER: Duration = Duration::from_secs(1);
/// The longest a connection waits before it is parked. A connection
/// resumed sooner after parking than it waited before parking waits twice
/// as long the next time, up to this; one that stays parked longer goes
/// back to [`PARK_AFTER`]. A client that thinks for a second or three
/// between requests (the seed's users) so stops parking after a few
/// requests: each park and resume costs a coroutine's exit and start and
/// two epoll changes, which at 30,000 such users took the CPU per request
/// up by a third (BENCHMARKS.md), while an idle connection still parks
/// after a second.
pub const PARK_AFTER_MAX: Duration = Duration::from_secs(8);

/// Bits of the packed state that hold the phase; the rest hold the time.
const PHASE_BITS: u32 = 2;

/// What the sweep has shut down.
const SHUT_NONE: u8 = 0;
const SHUT_READ: u8 = 1;
const SHUT_BOTH: u8 = 2;

/// What a connection's coroutine and the sweep share.
pub struct ConnState {
    fd: RawFd,
    /// The phase and when it began (coarse monotonic ms), packed in one
    /// word so the sweep never reads a new phase with an old time.
    phase_since: AtomicU64,
    /// What the sweep shut down for a timeout.
    shut: AtomicU8,
    /// When the body being received began to be read (coarse ms), 0 when
    /// none is.
    body_since: AtomicU64,
    /// Bytes of that body received so far.
    body_bytes: AtomicU64,
    /// The sweep's last look at that body: when, and how many bytes it had
    /// then (written by the sweep only, under the registry lock).
    mark_ms: AtomicU64,
    mark_bytes: AtomicU64,
    /// Wakes the connection's coroutine while it waits between requests
    /// (set once, by the coroutine; none for a connection that cannot park).
    waker: OnceLock<WaitIoWaker>,
    /// The sweep asked the coroutine to park the connection.
    park_asked: AtomicBool,
    /// The coroutine may wait on one of may's I/O timers from now on (a
    /// closing connection lingers): the sweep must never wake it, since
    /// may's waker touches the timer from the sweep's thread.
    unwakeable: AtomicBool,
    /// Chosen to make room for a new connection ([`Registry::evict_idle`]),
    /// and counted in the registry's `evicting` until it unregisters.
    evicted: AtomicBool,
    /// Its coroutine was asked to close it (to make room) when it next
    /// waits for a request with nothing received.
    close_asked: AtomicBool,
    /// Parked in the worker's idle set, without a coroutine (from the
    /// moment its loop gives it up until a new coroutine resumes it).
    parked: AtomicBool,
    /// How long it waits idle in its coroutine before it is parked (ms):
    /// [`PARK_AFTER`], doubled for a client that comes back quickly.
    park_after_ms: AtomicU64,
    /// When it was last parked (coarse ms).
    parked_at: AtomicU64,
    /// No byte of a request has arrived yet: a new client's request may
    /// still be on its way (eviction waits out the grace for these only).
    fresh: AtomicBool,
}

impl ConnState {
    fn new(fd: RawFd) -> ConnState {
        ConnState {
            fd,
            phase_since: AtomicU64::new(pack(Phase::Idle, coarse_ms())),
            shut: AtomicU8::new(SHUT_NONE),
            body_since: AtomicU64::new(0),
            body_bytes: AtomicU64::new(0),
            mark_ms: AtomicU64::new(0),
            mark_bytes: AtomicU64::new(0),
            waker: OnceLock::new(),
            park_asked: AtomicBool::new(false),
            unwakeable: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            close_asked: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            park_after_ms: AtomicU64::new(PARK_AFTER.as_millis() as u64),
            parked_at: AtomicU64::new(0),
            fresh: AtomicBool::new(true),
        }
    }

    /// Lets the sweep wake the connection's coroutine to park it.
    pub fn set_waker(&self, waker: WaitIoWaker) {
        let _ = self.waker.set(waker);
    }

    /// Enters Idle now, ready to be asked to park again.
    pub fn enter_idle(&self) {
        self.park_asked.store(false, Ordering::Relaxed);
        self.enter(Phase::Idle);
    }

    /// Whether the connection's coroutine was asked to close it, to make
    /// room for a new one: it closes the next time it waits for a request
    /// and nothing has arrived (a request that came first is served).
    pub fn close_asked(&self) -> bool {
        // SeqCst with `set_parked` and the eviction's pair: a connection
        // is either seen parked by the eviction, or sees its request.
        self.close_asked.load(Ordering::SeqCst)
    }

    /// Whether the connection is parked without a coroutine.
    pub fn parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }

    /// The connection is parked without a coroutine (true), or a coroutine
    /// serves it again (false). Eviction leaves parked connections to the
    /// idle set's owner. Resumed sooner than it waited before parking, it
    /// waits twice as long the next time (up to [`PARK_AFTER_MAX`]);
    /// later, it goes back to [`PARK_AFTER`].
    pub fn set_parked(&self, parked: bool) {
        let was_parked = self.parked.swap(parked, Ordering::SeqCst);
        let now = coarse_ms();
        if parked {
            self.parked_at.store(now, Ordering::Relaxed);
        } else if was_parked {
            let waited = self.park_after_ms.load(Ordering::Relaxed);
            let parked_for = now.saturating_sub(self.parked_at.load(Ordering::Relaxed));
            let next = match parked_for < waited {
                true => (waited * 2).min(PARK_AFTER_MAX.as_millis() as u64),
                false => PARK_AFTER.as_millis() as u64,
            };
            self.park_after_ms.store(next, Ordering::Relaxed);
        }
    }

    /// Whether the sweep asked the coroutine to park the connection (since
    /// it last entered Idle).
    pub fn park_asked(&self) -> bool {
        self.park_asked.load(Ordering::Relaxed)
    }

    /// A body starts to be read: its data rate is watched from now.
    pub fn body_started(&self) {
        self.body_bytes.store(0, Ordering::Relaxed);
        self.body_since.store(coarse_ms().max(1), Ordering::Relaxed);
    }

    /// `n` more bytes of the body arrived.
    pub fn body_received(&self, n: usize) {
        self.body_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The body is complete (or given up): no rate is watched.
    pub fn body_done(&self) {
        self.body_since.store(0, Ordering::Relaxed);
    }

    /// Enters `phase` now.
    pub fn enter(&self, phase: Phase) {
        self.phase_since
            .store(pack(phase, coarse_ms()), Ordering::Relaxed);
    }

    /// Enters `phase` keeping the time of the previous one (for Busy: no
    /// timeout applies, the clock need not be read). Only the connection's
    /// own coroutine writes the state, so load-then-store loses nothing.
    pub fn set(&self, phase: Phase) {
        let since = self.phase_since.load(Ordering::Relaxed) >> PHASE_BITS;
        self.phase_since
            .store(pack(phase, since), Ordering::Relaxed);
    }

    /// Enters Receiving, unless a request is being received already (its
    /// time counts from its first wait). The connection is no longer fresh.
    pub fn receiving(&self) {
        if self.phase() != Phase::Receiving {
            self.enter(Phase::Receiving);
        }
        if self.fresh.load(Ordering::Relaxed) {
            self.fresh.store(false, Ordering::Relaxed);
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        unpack(self.phase_since.load(Ordering::Relaxed)).0
    }

    /// Whether the sweep shut this connection down for a timeout.
    pub fn expired(&self) -> bool {
        self.shut.load(Ordering::Relaxed) != SHUT_NONE
    }
}

impl std::fmt::Debug for ConnState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (phase, since) = unpack(self.phase_since.load(Ordering::Relaxed));
        f.debug_struct("ConnState")
            .field("fd", &self.fd)
            .field("phase", &phase)
            .field("since_ms", &since)
            .field("park_asked", &self.park_asked)
            .finish_non_exhaustive()
    }
}

fn pack(phase: Phase, since_ms: u64) -> u64 {
    since_ms << PHASE_BITS | phase as u64
}

fn unpack(word: u64) -> (Phase, u64) {
    let phase = match word & ((1 << PHASE_BITS) - 1) {
        0 => Phase::Idle,
        1 => Phase::Receiving,
        2 => Phase::Busy,
        _ => Phase::Sending,
    };
    (phase, word >> PHASE_BITS)
}

/// How a sweep treats connections.
#[derive(Debug, Clone, Copy)]
pub struct SweepPolicy {
    /// Idle time before an idle connection is closed.
    pub keepalive: Duration,
    /// Time a client may take to send one request, or stay blocked on
    /// reading a response.
    pub client_timeout: Duration,
    /// Fewest bytes a second a body must bring, over each period of
    /// `body_rate_grace` (0: no minimum).
    pub min_body_rate: u64,
    /// The period over which a body's rate is measured (the first one
    /// after it starts is its grace).
    pub body_rate_grace: Duration,
}

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepStats {
    /// Idle connections closed.
    pub idle_closed: usize,
    /// Slow clients cut off.
    pub slow_cut: usize,
    /// Idle connections asked to park.
    pub parked: usize,
}

/// What [`Registry::evict_idle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eviction {
    /// Connections chosen (asked to close, or shut).
    pub shut: usize,
    /// When one more new connection (waiting for its first request, but
    /// not for the whole grace yet) becomes one that may be closed; None if
    /// none will.
    pub next_after: Option<Duration>,
}

/// The open connections of a worker.
#[derive(Debug)]
pub struct Registry {
    conns: Mutex<HashMap<RawFd, Arc<ConnState>>>,
    /// How many: read on every accept, without the lock.
    count: AtomicUsize,
    /// How many of them were shut by [`Registry::evict_idle`] and have not
    /// closed yet.
    evicting: AtomicUsize,
    /// Readable when the first connection came or the last one left, so a
    /// worker with no connection needs no periodic sweep (it waits on
    /// this instead).
    activity: EventFd,
}

impl Registry {
    /// An empty registry (it needs an eventfd).
    pub fn new() -> std::io::Result<Registry> {
        let flags = EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC;
        Ok(Registry {
            conns: Mutex::default(),
            count: AtomicUsize::new(0),
            evicting: AtomicUsize::new(0),
            activity: EventFd::from_value_and_flags(0, flags)?,
        })
    }
}

/// A connection's entry in the registry; unregisters when dropped. Drop it
/// before the socket is closed.
pub struct Registration {
    registry: Arc<Registry>,
    state: Arc<ConnState>,
}

impl Registration {
    /// The shared state of this connection.
    pub fn state(&self) -> &ConnState {
        &self.state
    }

    /// The coroutine is about to wait with a timer of may's (a lingering
    /// close): the sweep never wakes it again. Taken under the registry's
    /// lock, which a sweep holds from its verdict to its wake-up, so no
    /// wake-up decided before can land during the timed wait.
    pub fn forbid_wakeups(&self) {
        let _sweep = self.registry.lock();
        self.state.unwakeable.store(true, Ordering::Relaxed);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.state.fd);
        if self.state.evicted.load(Ordering::Relaxed) {
            self.registry.evicting.fetch_sub(1, Ordering::Relaxed);
        }
        if self.registry.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.registry.note_activity();
        }
    }
}

impl Registry {
    /// Tracks a new connection (idle from now).
    pub fn register(self: &Arc<Self>, fd: RawFd) -> Registration {
        let state = Arc::new(ConnState::new(fd));
        self.lock().insert(fd, state.clone());
        if self.count.fetch_add(1, Ordering::Relaxed) == 0 {
            self.note_activity();
        }
        Registration {
            registry: self.clone(),
            state,
        }
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Open connections that are not closing to make room (those
    /// [`Registry::evict_idle`] shut and that have not closed yet).
    pub fn staying(&self) -> usize {
        self.len()
            .saturating_sub(self.evicting.load(Ordering::Relaxed))
    }

    /// Connections shut to make room that have not closed yet.
    pub fn evicting(&self) -> usize {
        self.evicting.load(Ordering::Relaxed)
    }

    /// Closes connections that wait in their coroutines for a request with
    /// nothing of it received (between requests, or before the first), idle
    /// for at least `grace`, the longest idle first: as many as `share`
    /// says of how many there are.
    /// Connections inside a request, and parked ones (their owner closes
    /// those), are never chosen. A coroutine waiting in the connection loop
    /// is woken and closes the connection if nothing has arrived (else it
    /// serves the request that came, then closes); one not in the loop yet
    /// (reading a PROXY header, a TLS handshake's first byte) has its read
    /// side shut. Those chosen count in [`Registry::evicting`] until they
    /// close.
    pub fn evict_idle(&self, share: impl Fn(usize) -> usize, grace: Duration) -> Eviction {
        let now = coarse_ms();
        let grace_ms = grace.as_millis() as u64;
        let conns = self.lock();
        let mut next_ms: Option<u64> = None;
        let mut idle: Vec<(u64, &Arc<ConnState>)> = Vec::new();
        for c in conns.values() {
            // Parked first (SeqCst, as `set_parked` stores it after the
            // phase): a connection resumed is seen parked, or inside a
            // request.
            if c.parked.load(Ordering::SeqCst) {
                continue;
            }
            let (phase, since) = unpack(c.phase_since.load(Ordering::Relaxed));
            let chosen_before = c.evicted.load(Ordering::Relaxed);
            let shut = c.shut.load(Ordering::Relaxed) != SHUT_NONE;
            if phase != Phase::Idle || chosen_before || shut {
                continue;
            }
            let waited = now.saturating_sub(since);
            match grace_ms.checked_sub(waited) {
                None | Some(0) => idle.push((since, c)),
                // Worth waiting for only if it is a new client's: a client
                // between requests is back in a moment, and idle again
                // for a moment after, forever.
                Some(left) if c.fresh.load(Ordering::Relaxed) => {
                    next_ms = Some(next_ms.map_or(left, |n| n.min(left)))
                }
                Some(_) => {}
            }
        }
        let most = share(idle.len());
        if idle.len() > most {
            // Only the `most` longest idle need to be in order.
            idle.select_nth_unstable_by_key(most, |(since, _)| *since);
            idle.truncate(most);
        }
        let mut chosen = 0;
        for (_, c) in &idle {
            match c.waker.get() {
                Some(waker) if !c.unwakeable.load(Ordering::Relaxed) => {
                    // Asked first, then checked: the coroutine marks itself
                    // parked first, then checks (both SeqCst), so either
                    // this sees it parked (and leaves it to the idle set's
                    // owner) or it sees the request and closes. When both
                    // see each other, the coroutine closes an idle
                    // connection this did not count: one more room than
                    // asked, never a request lost.
                    c.close_asked.store(true, Ordering::SeqCst);
                    if c.parked.load(Ordering::SeqCst) {
                        c.close_asked.store(false, Ordering::SeqCst);
                        continue;
                    }
                    waker.wakeup();
                }
                _ => expire(c, SHUT_READ),
            }
            c.evicted.store(true, Ordering::Relaxed);
            self.evicting.fetch_add(1, Ordering::Relaxed);
            chosen += 1;
        }
        Eviction {
            shut: chosen,
            next_after: next_ms.map(Duration::from_millis),
        }
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Readable after the first connection came or the last one left
    /// (clear it with [`Registry::take_activity`]).
    pub fn activity(&self) -> BorrowedFd<'_> {
        self.activity.as_fd()
    }

    /// Clears what [`Registry::activity`] signalled.
    pub fn take_activity(&self) {
        let _ = self.activity.read();
    }

    fn note_activity(&self) {
        let _ = self.activity.write(1);
    }

    /// Applies the policy to every connection.
    pub fn sweep(&self, policy: &SweepPolicy) -> SweepStats {
        let now = coarse_ms();
        let conns = self.lock();
        let mut stats = SweepStats::default();
        for c in conns.values() {
            match verdict(c, policy, now) {
                Verdict::Keep => {}
                Verdict::CloseIdle => {
                    expire(c, SHUT_READ);
                    stats.idle_closed += 1;
                }
                Verdict::CutReceiving => {
                    expire(c, SHUT_READ);
                    stats.slow_cut += 1;
                }
                Verdict::CutSending => {
                    expire(c, SHUT_BOTH);
                    stats.slow_cut += 1;
                }
                Verdict::Park => {
                    if let Some(waker) = c.waker.get() {
                        c.park_asked.store(true, Ordering::Relaxed);
                        waker.wakeup();
                        stats.parked += 1;
                    }
                }
            }
        }
        stats
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RawFd, Arc<ConnState>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Keep,
    CloseIdle,
    CutReceiving,
    CutSending,
    Park,
}

/// Decides for one connection. One whose read side was shut already is
/// only cut further if it then blocks on a client that does not read (its
/// last answer, a 408 or a response, must not hold the connection forever).
fn verdict(c: &ConnState, policy: &SweepPolicy, now: u64) -> Verdict {
    let shut = c.shut.load(Ordering::Relaxed);
    let (phase, since) = unpack(c.phase_since.load(Ordering::Relaxed));
    let over = |limit: Duration| u128::from(now.saturating_sub(since)) > limit.as_millis();
    match (phase, shut) {
        (_, SHUT_BOTH) => Verdict::Keep,
        (Phase::Sending, _) if over(policy.client_timeout) => Verdict::CutSending,
        (_, SHUT_READ) => Verdict::Keep,
        (Phase::Idle, _) if over(policy.keepalive) => Verdict::CloseIdle,
        (Phase::Idle, _)
            if over(Duration::from_millis(
                c.park_after_ms.load(Ordering::Relaxed),
            )) && c.waker.get().is_some()
                && !c.park_asked.load(Ordering::Relaxed)
                && !c.unwakeable.load(Ordering::Relaxed) =>
        {
            Verdict::Park
        }
        (Phase::Receiving, _) if over(policy.client_timeout) => Verdict::CutReceiving,
        (Phase::Receiving, _) if body_too_slow(c, policy, now) => Verdict::CutReceiving,
        _ => Verdict::Keep,
    }
}

/// Whether the body being received brought fewer than `min_body_rate`
/// bytes a second since the sweep last looked at it, once a whole
/// `body_rate_grace` has passed since then (the first look is the body's
/// start). Measured per period rather than since the start, so a body that
/// came fast at first and then stalled is caught a period after it stalled.
fn body_too_slow(c: &ConnState, policy: &SweepPolicy, now: u64) -> bool {
    let since = c.body_since.load(Ordering::Relaxed);
    if policy.min_body_rate == 0 || since == 0 {
        return false;
    }
    let bytes = c.body_bytes.load(Ordering::Relaxed);
    let (mut mark_ms, mut mark_bytes) = (
        c.mark_ms.load(Ordering::Relaxed),
        c.mark_bytes.load(Ordering::Relaxed),
    );
    if mark_ms <= since {
        // A body the sweep has not looked at yet (a mark made in the very
        // millisecond it began was the previous body's): its period starts
        // with it.
        (mark_ms, mark_bytes) = (since, 0);
        c.mark_ms.store(mark_ms, Ordering::Relaxed);
        c.mark_bytes.store(mark_bytes, Ordering::Relaxed);
    }
    let elapsed = now.saturating_sub(mark_ms);
    if u128::from(elapsed) < policy.body_rate_grace.as_millis() {
        return false;
    }
    let needed = policy.min_body_rate.saturating_mul(elapsed) / 1000;
    if bytes.saturating_sub(mark_bytes) < needed {
        return true;
    }
    c.mark_ms.store(now, Ordering::Relaxed);
    c.mark_bytes.store(bytes, Ordering::Relaxed);
    false
}

/// Marks what is shut, then shuts it: the connection's coroutine wakes up
/// (end of file on read, an error on write) and closes the connection.
fn expire(c: &ConnState, level: u8) {
    c.shut.store(level, Ordering::Relaxed);
    let how = if level == SHUT_BOTH {
        Shutdown::Both
    } else {
        Shutdown::Read
    };
    // The registry lock is held, so `fd` is this connection's open socket.
    let _ = shutdown(c.fd, how);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(phase: Phase, since_ms: u64) -> ConnState {
        let c = ConnState::new(-1);
        c.phase_since
            .store(pack(phase, since_ms), Ordering::Relaxed);
        c
    }

    const POLICY: SweepPolicy = SweepPolicy {
        keepalive: Duration::from_secs(5),
        client_timeout: Duration::from_secs(2),
        min_body_rate: 0,
        body_rate_grace: Duration::from_secs(5),
    };

    /// A client that comes back soon after its connection was parked waits
    /// longer before the next parking (doubling up to PARK_AFTER_MAX); one
    /// that stays away goes back to PARK_AFTER.
    #[test]
    fn a_client_that_comes_back_soon_parks_later() {
        let c = ConnState::new(-1);
        let delay = || Duration::from_millis(c.park_after_ms.load(Ordering::Relaxed));
        let cycle = |parked_for_ms: u64| {
            c.set_parked(true);
            let at = c.parked_at.load(Ordering::Relaxed);
            c.parked_at
                .store(at.saturating_sub(parked_for_ms), Ordering::Relaxed);
            c.set_parked(false);
        };
        assert_eq!(delay(), PARK_AFTER);
        cycle(200);
        assert_eq!(delay(), PARK_AFTER * 2);
        for _ in 0..5 {
            cycle(200);
        }
        assert_eq!(delay(), PARK_AFTER_MAX);
        cycle(60_000);
        assert_eq!(delay(), PARK_AFTER);
        // The sweep asks it to park only once it has waited its delay.
        cycle(200);
        let socket = may::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_waker(may::io::WaitIo::waker(&socket));
        let start = 100_000;
        c.phase_since
            .store(pack(Phase::Idle, start), Ordering::Relaxed);
        let after = |ms| verdict(&c, &POLICY, start + ms);
        assert_eq!(after(1500), Verdict::Keep, "waits 2 s now");
        assert_eq!(after(2500), Verdict::Park);
    }

    /// Eviction takes the longest idle first, never a connection inside a
    /// request or one idle for less than the grace, and counts what it shut
    /// until it closes.
    #[test]
    fn eviction_shuts_the_longest_idle_and_never_a_request_or_a_parked_one() {
        let registry = Arc::new(Registry::new().unwrap());
        let now = coarse_ms();
        // Descriptor numbers no test opens: the shutdowns fail harmlessly.
        let make = |fd: RawFd, phase: Phase, since: u64| {
            let r = registry.register(fd);
            r.state
                .phase_since
                .store(pack(phase, since), Ordering::Relaxed);
            r
        };
        let oldest = make(1_000_001, Phase::Idle, now - 3_000);
        let older = make(1_000_002, Phase::Idle, now - 2_000);
        let _receiving = make(1_000_003, Phase::Receiving, now - 9_000);
        let _busy = make(1_000_004, Phase::Busy, now - 9_000);
        let parked = make(1_000_006, Phase::Idle, now - 9_000);
        parked.state().set_parked(true);
        // Entered Idle "in the future": a clock read after this one.
        let fresh = make(1_000_005, Phase::Idle, now + 1_000);
        let grace = Duration::from_millis(500);
        let first = registry.evict_idle(|_| 1, grace);
        assert_eq!(first.shut, 1);
        assert!(oldest.state().expired() && !older.state().expired());
        assert_eq!((registry.evicting(), registry.staying()), (1, 5));
        let second = registry.evict_idle(|_| 5, grace);
        assert_eq!(second.shut, 1, "only the older one is left");
        assert!(older.state().expired() && !parked.state().expired());
        // The fresh one may be shut once it has waited out the grace.
        let third = registry.evict_idle(|_| 5, grace);
        assert_eq!(third.shut, 0);
        // It has not waited at all yet: the whole grace is left.
        assert_eq!(third.next_after, Some(grace));
        // A client between requests is not waited for: it is idle for a
        // moment again and again.
        fresh.state().receiving();
        fresh
            .state
            .phase_since
            .store(pack(Phase::Idle, now + 1_000), Ordering::Relaxed);
        assert_eq!(registry.evict_idle(|_| 5, grace).next_after, None);
        drop(oldest);
        assert_eq!(
            (registry.len(), registry.evicting(), registry.staying()),
            (5, 1, 4)
        );
    }

    /// A body that came fast and stalled is cut a period after it stalled;
    /// one that keeps the rate is not.
    #[test]
    fn a_body_must_keep_a_minimum_rate_over_each_period() {
        let policy = SweepPolicy {
            client_timeout: Duration::from_secs(3600),
            min_body_rate: 240,
            ..POLICY
        };
        let c = conn(Phase::Receiving, 1);
        c.body_since.store(10_000, Ordering::Relaxed);
        c.body_bytes.store(600_000, Ordering::Relaxed);
        assert_eq!(verdict(&c, &policy, 14_000), Verdict::Keep, "in its grace");
        assert_eq!(verdict(&c, &policy, 15_500), Verdict::Keep, "fast so far");
        c.body_bytes.fetch_add(240 * 5, Ordering::Relaxed);
        assert_eq!(verdict(&c, &policy, 20_500), Verdict::Keep, "at the rate");
        c.body_bytes.fetch_add(100, Ordering::Relaxed);
        assert_eq!(verdict(&c, &policy, 23_000), Verdict::Keep, "mid-period");
        assert_eq!(
            verdict(&c, &policy, 25_600),
            Verdict::CutReceiving,
            "stalled for a period: 600 KB at first does not buy time"
        );
        let off = SweepPolicy {
            min_body_rate: 0,
            ..policy
        };
        assert_eq!(verdict(&c, &off, 99_000), Verdict::Keep);
        c.body_done();
        assert_eq!(verdict(&c, &policy, 99_000), Verdict::Keep, "no body");
    }

    #[test]
    fn each_phase_has_its_timeout() {
        let policy = POLICY;
        let now = 100_000;
        assert_eq!(
            verdict(&conn(Phase::Idle, now - 4_000), &policy, now),
            Verdict::Keep
        );
        assert_eq!(
            verdict(&conn(Phase::Idle, now - 6_000), &policy, now),
            Verdict::CloseIdle
        );
        assert_eq!(
            verdict(&conn(Phase::Receiving, now - 1_000), &policy, now),
            Verdict::Keep
        );
        assert_eq!(
            verdict(&conn(Phase::Receiving, now - 3_000), &policy, now),
            Verdict::CutReceiving
        );
        assert_eq!(
            verdict(&conn(Phase::Sending, now - 3_000), &policy, now),
            Verdict::CutSending
        );
        assert_eq!(
            verdict(&conn(Phase::Busy, now - 60_000), &policy, now),
            Verdict::Keep,
            "handlers have the store's deadline"
        );
    }

    #[test]
    fn a_connection_is_acted_on_once_unless_it_then_blocks_sending() {
        let policy = POLICY;
        let now = 100_000;
        let idle = conn(Phase::Idle, 0);
        idle.shut.store(SHUT_READ, Ordering::Relaxed);
        assert_eq!(verdict(&idle, &policy, now), Verdict::Keep, "acted on once");
        let answering = conn(Phase::Sending, now - 3_000);
        answering.shut.store(SHUT_READ, Ordering::Relaxed);
        assert_eq!(
            verdict(&answering, &policy, now),
            Verdict::CutSending,
            "its 408 is not read either"
        );
        answering.shut.store(SHUT_BOTH, Ordering::Relaxed);
        assert_eq!(verdict(&answering, &policy, now), Verdict::Keep);
    }

    #[test]
    fn an_idle_connection_is_asked_to_park_once_and_still_closed_at_keepalive() {
        let start = 100_000;
        let c = conn(Phase::Idle, start);
        let after = |ms| verdict(&c, &POLICY, start + ms);
        assert_eq!(after(1500), Verdict::Keep, "no waker: it cannot park");
        let socket = may::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_waker(may::io::WaitIo::waker(&socket));
        assert_eq!(after(500), Verdict::Keep, "idle for less than PARK_AFTER");
        assert_eq!(after(1500), Verdict::Park);
        c.park_asked.store(true, Ordering::Relaxed);
        assert_eq!(after(2000), Verdict::Keep, "asked once");
        assert_eq!(after(5500), Verdict::CloseIdle, "parked, it still expires");
        c.enter_idle();
        assert!(!c.park_asked(), "a new idle time may be asked again");
        c.phase_since
            .store(pack(Phase::Idle, start), Ordering::Relaxed);
        assert_eq!(after(1500), Verdict::Park);
        c.unwakeable.store(true, Ordering::Relaxed);
        assert_eq!(after(1500), Verdict::Keep, "lingering: never woken");
    }

    #[test]
    fn phase_and_time_are_one_word() {
        let c = conn(Phase::Idle, 1234);
        c.set(Phase::Busy);
        assert_eq!(
            unpack(c.phase_since.load(Ordering::Relaxed)),
            (Phase::Busy, 1234)
        );
        c.receiving();
        let (phase, since) = unpack(c.phase_since.load(Ordering::Relaxed));
        assert_eq!(phase, Phase::Receiving);
        assert!(since > 1234);
        c.set(Phase::Receiving);
        c.receiving();
        assert_eq!(
            unpack(c.phase_since.load(Ordering::Relaxed)).1,
            since,
            "kept while receiving"
        );
    }
}
