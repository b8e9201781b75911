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
//! - blocked for longer than `client_timeout` on a client that does not
//!   read its response: both sides are shut and the coroutine drops it.
//!
//! A connection unregisters (in [`Registration`]'s `Drop`, under the lock a
//! sweep holds) before its socket is closed, so a sweep never touches a
//! descriptor number that was closed and reused.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::socket::{shutdown, Shutdown};
use nix::time::{clock_gettime, ClockId};

/// Milliseconds on the system-wide monotonic clock (same in every process).
pub fn monotonic_ms() -> u64 {
    clock_ms(ClockId::CLOCK_MONOTONIC)
}

/// The monotonic clock at its coarse (few-millisecond) resolution: cheaper,
/// and precise enough for timeouts counted in seconds.
fn coarse_ms() -> u64 {
    clock_ms(ClockId::CLOCK_MONOTONIC_COARSE)
}

fn clock_ms(clock: ClockId) -> u64 {
    clock_gettime(clock).map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000).unwrap_or(0)
}

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

/// What a connection's coroutine and the sweep share.
#[derive(Debug)]
pub struct ConnState {
    fd: RawFd,
    phase: AtomicU8,
    /// When the current phase began (coarse monotonic ms).
    since_ms: AtomicU64,
    /// The sweep shut this connection down for a timeout.
    expired: AtomicBool,
}

impl ConnState {
    /// Enters `phase` now.
    pub fn enter(&self, phase: Phase) {
        self.since_ms.store(coarse_ms(), Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// Enters `phase` keeping the time of the previous one (a handler
    /// runs: no timeout applies, the time is not read).
    pub fn set(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Idle,
            1 => Phase::Receiving,
            2 => Phase::Busy,
            _ => Phase::Sending,
        }
    }

    /// Whether the sweep shut this connection down for a timeout.
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::Relaxed)
    }
}

/// How a sweep treats connections.
#[derive(Debug, Clone, Copy)]
pub struct SweepPolicy {
    /// Idle time before an idle connection is closed.
    pub keepalive: Duration,
    /// Time a client may take to send one request, or stay blocked on
    /// reading a response.
    pub client_timeout: Duration,
}

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepStats {
    /// Idle connections closed.
    pub idle_closed: usize,
    /// Slow clients cut off.
    pub slow_cut: usize,
    /// Connections open.
    pub open: usize,
}

/// The open connections of a worker.
#[derive(Debug, Default)]
pub struct Registry {
    conns: Mutex<HashMap<RawFd, Arc<ConnState>>>,
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
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.state.fd);
    }
}

impl Registry {
    /// Tracks a new connection (idle from now).
    pub fn register(self: &Arc<Self>, fd: RawFd) -> Registration {
        let state = Arc::new(ConnState {
            fd,
            phase: AtomicU8::new(Phase::Idle as u8),
            since_ms: AtomicU64::new(coarse_ms()),
            expired: AtomicBool::new(false),
        });
        self.lock().insert(fd, state.clone());
        Registration { registry: self.clone(), state }
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies the policy to every connection.
    pub fn sweep(&self, policy: &SweepPolicy) -> SweepStats {
        let now = coarse_ms();
        let conns = self.lock();
        let mut stats = SweepStats { open: conns.len(), ..SweepStats::default() };
        for c in conns.values() {
            match verdict(c, policy, now) {
                Verdict::Keep => {}
                Verdict::CloseIdle => {
                    expire(c, Shutdown::Read);
                    stats.idle_closed += 1;
                }
                Verdict::CutReceiving => {
                    expire(c, Shutdown::Read);
                    stats.slow_cut += 1;
                }
                Verdict::CutSending => {
                    expire(c, Shutdown::Both);
                    stats.slow_cut += 1;
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
}

/// Decides for one connection.
fn verdict(c: &ConnState, policy: &SweepPolicy, now: u64) -> Verdict {
    if c.expired() {
        return Verdict::Keep;
    }
    let for_ms = now.saturating_sub(c.since_ms.load(Ordering::Relaxed));
    let over = |limit: Duration| u128::from(for_ms) > limit.as_millis();
    match c.phase() {
        Phase::Idle if over(policy.keepalive) => Verdict::CloseIdle,
        Phase::Receiving if over(policy.client_timeout) => Verdict::CutReceiving,
        Phase::Sending if over(policy.client_timeout) => Verdict::CutSending,
        _ => Verdict::Keep,
    }
}

/// Marks the connection expired, then shuts `how`: its coroutine wakes up
/// (end of file on read, an error on write) and closes it.
fn expire(c: &ConnState, how: Shutdown) {
    c.expired.store(true, Ordering::Relaxed);
    // The registry lock is held, so `fd` is this connection's open socket.
    let _ = shutdown(c.fd, how);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(phase: Phase, since_ms: u64) -> ConnState {
        ConnState {
            fd: -1,
            phase: AtomicU8::new(phase as u8),
            since_ms: AtomicU64::new(since_ms),
            expired: AtomicBool::new(false),
        }
    }

    #[test]
    fn each_phase_has_its_timeout() {
        let policy = SweepPolicy { keepalive: Duration::from_secs(5), client_timeout: Duration::from_secs(2) };
        let now = 100_000;
        assert_eq!(verdict(&conn(Phase::Idle, now - 4_000), &policy, now), Verdict::Keep);
        assert_eq!(verdict(&conn(Phase::Idle, now - 6_000), &policy, now), Verdict::CloseIdle);
        assert_eq!(verdict(&conn(Phase::Receiving, now - 1_000), &policy, now), Verdict::Keep);
        assert_eq!(verdict(&conn(Phase::Receiving, now - 3_000), &policy, now), Verdict::CutReceiving);
        assert_eq!(verdict(&conn(Phase::Sending, now - 3_000), &policy, now), Verdict::CutSending);
        assert_eq!(verdict(&conn(Phase::Busy, now - 60_000), &policy, now), Verdict::Keep, "handlers have the store's deadline");
        let done = conn(Phase::Idle, 0);
        done.expired.store(true, Ordering::Relaxed);
        assert_eq!(verdict(&done, &policy, now), Verdict::Keep, "acted on once");
    }
}
