//! Connection tracking, and the policy that closes idle, slow and draining
//! connections (may_minihttp has no timeouts of its own).
//!
//! Every connection registers its socket here when accepted and unregisters
//! in its service's `Drop`, under the same lock [`Registry::sweep`] takes:
//! may_minihttp drops the service before it closes the socket, so a sweep
//! never touches a descriptor number that was closed and reused.
//!
//! A sweep tells three cases apart:
//! - idle: no request running and no byte pending. Closed after `keepalive`
//!   (a draining worker sweeps with a short one): marked first (a request
//!   arriving now is not run), write side shut (the client sees EOF), read
//!   side shut after a linger.
//! - mid-request: no request running, but bytes arrived (FIONREAD, or
//!   TCP_INFO's byte count grew since the last sweep while no request
//!   started: a partial request sits in may_minihttp's private buffer,
//!   invisible to FIONREAD). A slow client: cut off once pending for longer
//!   than `client_timeout`. (Bytes of a partial request that arrive in the
//!   same sweep interval as a completed request are not told apart from
//!   idleness; such a connection is closed at `keepalive` instead.)
//! - inside a request for longer than `client_timeout` (a body trickling in,
//!   a response the client does not read): cut off.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Time between the write-side and the full shutdown of an idle connection.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Milliseconds on the system-wide monotonic clock (same in every process).
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the valid timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// What a connection's coroutine and the sweeper share.
#[derive(Debug)]
pub struct ConnState {
    fd: RawFd,
    /// When the last request completed (or the connection opened).
    last_done_ms: AtomicU64,
    /// Requests started on this connection.
    requests_started: AtomicU64,
    /// The sweeper's last look: bytes received, and requests started.
    swept_bytes: AtomicU64,
    swept_requests: AtomicU64,
    /// When the current request started; 0 when none runs.
    busy_since_ms: AtomicU64,
    /// When a sweep first saw bytes pending outside a request; 0 when not.
    pending_since_ms: AtomicU64,
    /// When the sweeper began closing it; 0 when not.
    closing_since_ms: AtomicU64,
    /// Shut down for good.
    cut: AtomicBool,
}

impl ConnState {
    /// Marks the start of a request.
    pub fn begin_request(&self) {
        self.requests_started.fetch_add(1, Ordering::Relaxed);
        self.pending_since_ms.store(0, Ordering::Relaxed);
        self.busy_since_ms.store(monotonic_ms().max(1), Ordering::Relaxed);
    }

    /// Marks the end of a request.
    pub fn end_request(&self) {
        self.last_done_ms.store(monotonic_ms(), Ordering::Relaxed);
        self.busy_since_ms.store(0, Ordering::Relaxed);
    }

    /// Whether the sweeper is closing this connection: run nothing more on it.
    pub fn is_closing(&self) -> bool {
        self.closing_since_ms.load(Ordering::Relaxed) != 0 || self.cut.load(Ordering::Relaxed)
    }
}

/// How a sweep treats connections.
#[derive(Debug, Clone, Copy)]
pub struct SweepPolicy {
    /// Idle time before an idle connection is closed.
    pub keepalive: Duration,
    /// Time a client may take to send one request.
    pub client_timeout: Duration,
}

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepStats {
    /// Idle connections closed.
    pub idle_closed: usize,
    /// Slow clients cut off.
    pub slow_cut: usize,
    /// Connections still open.
    pub open: usize,
}

/// The open connections of a worker.
#[derive(Debug, Default)]
pub struct Registry {
    conns: Mutex<HashMap<RawFd, Arc<ConnState>>>,
}

impl Registry {
    /// Tracks a new connection.
    pub fn register(&self, fd: RawFd) -> Arc<ConnState> {
        let state = Arc::new(ConnState {
            fd,
            last_done_ms: AtomicU64::new(monotonic_ms()),
            requests_started: AtomicU64::new(0),
            swept_bytes: AtomicU64::new(0),
            swept_requests: AtomicU64::new(0),
            busy_since_ms: AtomicU64::new(0),
            pending_since_ms: AtomicU64::new(0),
            closing_since_ms: AtomicU64::new(0),
            cut: AtomicBool::new(false),
        });
        self.lock().insert(fd, state.clone());
        state
    }

    /// Forgets a connection (from its service's `Drop`, before the socket closes).
    pub fn unregister(&self, fd: RawFd) {
        self.lock().remove(&fd);
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
        let now = monotonic_ms();
        let conns = self.lock();
        let mut stats = SweepStats { open: conns.len(), ..SweepStats::default() };
        for c in conns.values() {
            match sweep_one(c, policy, now) {
                Verdict::Keep => {}
                Verdict::ClosedIdle => stats.idle_closed += 1,
                Verdict::Cut => stats.slow_cut += 1,
            }
        }
        stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RawFd, Arc<ConnState>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum Verdict {
    Keep,
    ClosedIdle,
    Cut,
}

/// Decides for one connection; called with the registry locked (the fd is open).
fn sweep_one(c: &ConnState, policy: &SweepPolicy, now: u64) -> Verdict {
    let ms = |d: Duration| d.as_millis() as u64;
    if c.cut.load(Ordering::Relaxed) {
        return Verdict::Keep;
    }
    let closing_since = c.closing_since_ms.load(Ordering::Relaxed);
    if closing_since != 0 {
        if now.saturating_sub(closing_since) >= ms(CLOSE_LINGER) {
            cut(c);
        }
        return Verdict::Keep;
    }
    let busy_since = c.busy_since_ms.load(Ordering::Relaxed);
    if busy_since != 0 {
        if now.saturating_sub(busy_since) > ms(policy.client_timeout) {
            cut(c);
            return Verdict::Cut;
        }
        return Verdict::Keep;
    }
    let idle_for = now.saturating_sub(c.last_done_ms.load(Ordering::Relaxed));
    if bytes_pending(c) {
        let since = c.pending_since_ms.load(Ordering::Relaxed);
        if since == 0 {
            c.pending_since_ms.store(now, Ordering::Relaxed);
        } else if now.saturating_sub(since) > ms(policy.client_timeout) {
            cut(c);
            return Verdict::Cut;
        }
        return Verdict::Keep;
    }
    c.pending_since_ms.store(0, Ordering::Relaxed);
    if idle_for > ms(policy.keepalive) {
        c.closing_since_ms.store(now.max(1), Ordering::Relaxed);
        // SAFETY: the registry lock is held, so `fd` is this connection's
        // open socket; shutting its write side sends FIN.
        unsafe { libc::shutdown(c.fd, libc::SHUT_WR) };
        return Verdict::ClosedIdle;
    }
    Verdict::Keep
}

/// Shuts both directions: may_minihttp's read fails and the connection ends.
fn cut(c: &ConnState) {
    c.cut.store(true, Ordering::Relaxed);
    // SAFETY: called with the registry lock held: `fd` is open and ours.
    unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
}

/// Whether a request has (partly) arrived on a connection where none runs:
/// bytes in the socket, or bytes received since the last sweep while no
/// request started (they sit in may_minihttp's buffer). Once pending, a
/// connection stays pending until a request starts.
fn bytes_pending(c: &ConnState) -> bool {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `n`; fd is open (lock held).
    let in_socket = unsafe { libc::ioctl(c.fd, libc::FIONREAD, &mut n) } == 0 && n > 0;
    let requests = c.requests_started.load(Ordering::Relaxed);
    let bytes = bytes_received(c.fd).unwrap_or(0);
    let same_request = c.swept_requests.swap(requests, Ordering::Relaxed) == requests;
    let grew = bytes > c.swept_bytes.swap(bytes, Ordering::Relaxed);
    let was_pending = c.pending_since_ms.load(Ordering::Relaxed) != 0;
    in_socket || (same_request && (grew || was_pending))
}

/// TCP_INFO's tcpi_bytes_received (Linux 4.1+): bytes received so far.
fn bytes_received(fd: RawFd) -> Option<u64> {
    // Offset of tcpi_bytes_received in struct tcp_info (linux/tcp.h): 8
    // one-byte fields, 24 u32 fields, then pacing_rate, max_pacing_rate and
    // bytes_acked (u64 each). libc's tcp_info stops before it.
    const OFFSET: usize = 8 + 24 * 4 + 3 * 8;
    let mut buf = [0u8; 256];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `buf`; fd is open.
    let rc = unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, buf.as_mut_ptr().cast(), &mut len) };
    if rc != 0 || (len as usize) < OFFSET + 8 {
        return None;
    }
    Some(u64::from_ne_bytes(buf[OFFSET..OFFSET + 8].try_into().ok()?))
}
