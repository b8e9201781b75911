//! Metrics of the whole server, for Prometheus.
//!
//! The numbers live in one shared mapping (a memfd, `shared_memory`) that
//! the master makes before it forks ([`Region::install`]): a block the
//! master writes (workers by state, restarts, generation) and one slot per
//! worker process, taken with the worker's heartbeat slot and given back
//! when it is reaped. A worker
//! updates only its own slot, with relaxed atomic adds on cache lines no
//! other process writes, so counting costs a few nanoseconds a request.
//! Whoever renders (`render`, any worker serving `/metrics` on
//! `metrics_bind`, see `endpoint`) sums every slot ever used.
//!
//! Counters never go backwards: a slot keeps its counts when its worker
//! exits, and the next worker to take it adds to them. Gauges (connections
//! open, requests in flight) are zeroed when the master reaps the slot's
//! worker. The label values are fixed tables (the `*` constants below), so
//! the layout is fixed and a label can never come from a client.

pub mod endpoint;
pub mod render;

use std::io;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::api::{self, RouteId};
use crate::proto::status;

/// Method labels; anything else counts as `other`.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "other"];
/// Route labels: the paths of the route table (`api::ROUTES`, `{id}` for
/// any id: never the raw path), and `other` for paths no route takes.
pub const ROUTES: [&str; api::ROUTES.len() + 1] = route_labels();
/// Status labels: the statuses the server sends (`proto::status::ALL`);
/// the last entry, 0, is any other.
pub const STATUSES: [u16; status::ALL.len() + 1] = status_labels();
/// Upper bounds (seconds) of the request duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Store operations.
pub const STORE_OPS: [&str; 5] = ["get", "list", "create", "update", "delete"];
/// Results of a store operation (an order not found is `ok`).
pub const STORE_RESULTS: [&str; 3] = ["ok", "error", "timeout"];
/// Kinds of store error.
pub const STORE_ERRORS: [&str; 3] = ["timeout", "unavailable", "full"];
/// Upper bounds of the embedded store's commit batch size histogram.
pub const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Upper bounds (seconds) of the commit duration histogram.
pub const COMMIT_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];
/// Why a worker was replaced.
pub const RESTART_CAUSES: [&str; 4] = ["crash", "timeout", "max_requests", "reload"];
/// Worker states the master knows.
pub const WORKER_STATES: [&str; 3] = ["booting", "serving", "retiring"];
/// Worker slots, as many as heartbeat slots (`lifecycle::heartbeat`).
pub const SLOTS: usize = crate::lifecycle::heartbeat::SLOTS;
/// Whether updates count: off only in the `metrics-off` benchmark baseline.
const ENABLED: bool = !cfg!(feature = "metrics-off");
/// Buckets a histogram can hold (the longest table above, plus +Inf).
const MAX_BUCKETS: usize = 13;

const fn route_labels() -> [&'static str; api::ROUTES.len() + 1] {
    let mut labels = ["other"; api::ROUTES.len() + 1];
    let mut i = 0;
    while i < api::ROUTES.len() {
        labels[i] = api::ROUTES[i].path;
        i += 1;
    }
    labels
}

const fn status_labels() -> [u16; status::ALL.len() + 1] {
    let mut labels = [0; status::ALL.len() + 1];
    let mut i = 0;
    while i < status::ALL.len() {
        labels[i] = status::ALL[i].code;
        i += 1;
    }
    labels
}

/// A histogram: a count per bucket (not cumulative: `render` adds them up)
/// and the sum of the observations in millionths (microseconds for
/// durations).
#[repr(C)]
pub struct Histogram {
    counts: [AtomicU64; MAX_BUCKETS],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records `value` (seconds, or a plain number) against `bounds`.
    fn observe(&self, bounds: &[f64], value: f64) {
        let i = bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }
}

/// One worker's numbers, on cache lines of their own (no two workers'
/// slots share a line).
#[repr(C, align(64))]
pub struct Slot {
    requests: [AtomicU64; METHODS.len() * ROUTES.len() * STATUSES.len()],
    durations: [Histogram; ROUTES.len()],
    connections_open: AtomicI64,
    /// Open connections parked between requests (no coroutine).
    connections_parked: AtomicI64,
    /// Coroutines serving a connection.
    connection_coroutines: AtomicI64,
    connections_refused: AtomicU64,
    /// Idle connections closed to make room for new ones.
    connections_evicted: AtomicU64,
    /// Connections closed for want of a valid PROXY protocol header.
    proxy_refused: AtomicU64,
    /// TLS handshakes that failed.
    tls_handshake_failures: AtomicU64,
    in_flight: AtomicI64,
    store_ops: [AtomicU64; STORE_OPS.len() * STORE_RESULTS.len()],
    store_errors: [AtomicU64; STORE_ERRORS.len()],
    commit_batch: Histogram,
    commit_duration: Histogram,
    /// The worker's own resident memory and open descriptors, sampled
    /// by its heartbeat.
    resident_bytes: AtomicU64,
    open_fds: AtomicU64,
}

/// What the master writes (aligned like a slot, so the slots after it are).
#[repr(C, align(64))]
pub struct MasterBlock {
    /// Slots in use so far: render sums `slots[..high_water]`.
    high_water: AtomicU64,
    generation: AtomicU64,
    workers: [AtomicU64; WORKER_STATES.len()],
    restarts: [AtomicU64; RESTART_CAUSES.len()],
    /// The master's pid and its start (Unix seconds).
    master_pid: AtomicU64,
    start_time: AtomicU64,
    /// The master's own resident memory and open descriptors.
    resident_bytes: AtomicU64,
    open_fds: AtomicU64,
}

/// The shared region.
#[derive(Clone, Copy)]
pub struct Region {
    master: &'static MasterBlock,
    slots: &'static [Slot],
    /// The memfd behind it (handed on by a binary upgrade).
    fd: std::os::fd::RawFd,
}

/// The region this process uses (set by the master before it forks).
static REGION: OnceLock<Region> = OnceLock::new();
/// This worker's slot (set in the worker after fork).
static SLOT: OnceLock<&'static Slot> = OnceLock::new();

impl Region {
    /// Maps the region and makes it this process's. Call in the master
    /// before any fork.
    pub fn install() -> io::Result<Region> {
        if let Some(r) = REGION.get() {
            return Ok(*r);
        }
        let region = Region::over(crate::shared_memory::map("metrics", Self::LEN)?);
        region
            .master
            .master_pid
            .store(std::process::id().into(), Ordering::Relaxed);
        region
            .master
            .start_time
            .store(crate::clock::unix_seconds(), Ordering::Relaxed);
        Ok(*REGION.get_or_init(|| region))
    }

    /// Maps the region a master handed on through a binary upgrade and
    /// makes it this process's: every counter goes on from where it was.
    pub fn inherit(fd: std::os::fd::RawFd) -> io::Result<Region> {
        let region = Region::over(crate::shared_memory::map_inherited(fd, Self::LEN)?);
        Ok(*REGION.get_or_init(|| region))
    }

    /// The region's size in bytes (part of the binary upgrade's format).
    pub const LEN: usize = std::mem::size_of::<MasterBlock>() + SLOTS * std::mem::size_of::<Slot>();

    fn over(mapping: crate::shared_memory::Mapping) -> Region {
        let ptr = mapping.ptr;
        // SAFETY: the mapping is `LEN` bytes (zeroed when new), page-aligned,
        // never unmapped; both types are `repr(C)` arrays of atomics, for
        // which all-zero bytes are valid, shared between processes only
        // through atomic operations. The slots start right after the master
        // block, whose size is a multiple of the slots' alignment (both
        // align(64); the mapping itself is page-aligned).
        unsafe {
            let master = &*ptr.cast::<MasterBlock>();
            let first = ptr.add(std::mem::size_of::<MasterBlock>()).cast::<Slot>();
            Region {
                master,
                slots: std::slice::from_raw_parts(first, SLOTS),
                fd: mapping.fd,
            }
        }
    }

    /// The memfd behind the region.
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.fd
    }

    /// The restarts published so far (a master that inherits the region
    /// goes on counting from them).
    pub fn restarts(&self) -> [u64; RESTART_CAUSES.len()] {
        std::array::from_fn(|i| self.master.restarts[i].load(Ordering::Relaxed))
    }

    /// The region of this process, if the master installed one.
    pub fn get() -> Option<Region> {
        REGION.get().copied()
    }

    /// Master: a worker is about to use slot `index` (after fork, the
    /// worker calls [`use_slot`] with it).
    pub fn slot_taken(&self, index: usize) {
        self.master
            .high_water
            .fetch_max(index as u64 + 1, Ordering::Relaxed);
    }

    /// Master: the worker of slot `index` is gone; its gauges drop to zero
    /// (its counters stay).
    pub fn slot_released(&self, index: usize) {
        let slot = &self.slots[index];
        for gauge in [&slot.resident_bytes, &slot.open_fds] {
            gauge.store(0, Ordering::Relaxed);
        }
        for gauge in [
            &slot.connections_open,
            &slot.connections_parked,
            &slot.connection_coroutines,
            &slot.in_flight,
        ] {
            gauge.store(0, Ordering::Relaxed);
        }
    }

    /// Master: samples its own memory and descriptors.
    pub fn sample_master(&self) {
        let (rss, fds) = process_sample();
        self.master.resident_bytes.store(rss, Ordering::Relaxed);
        self.master.open_fds.store(fds, Ordering::Relaxed);
    }

    /// Master: the serving generation, workers by state (WORKER_STATES)
    /// and restarts by cause so far (RESTART_CAUSES).
    pub fn publish(
        &self,
        generation: u64,
        by_state: [u64; WORKER_STATES.len()],
        restarts: [u64; RESTART_CAUSES.len()],
    ) {
        self.master.generation.store(generation, Ordering::Relaxed);
        for (gauge, n) in self.master.workers.iter().zip(by_state) {
            gauge.store(n, Ordering::Relaxed);
        }
        for (counter, n) in self.master.restarts.iter().zip(restarts) {
            counter.store(n, Ordering::Relaxed);
        }
    }

    fn used(&self) -> &[Slot] {
        let n = (self.master.high_water.load(Ordering::Relaxed) as usize).min(SLOTS);
        &self.slots[..n]
    }
}

/// A worker's state as the metrics show it (WORKER_STATES, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShownState {
    /// Forked, not serving yet.
    Booting = 0,
    /// Serving (also one that reached max_requests, until its replacement
    /// serves and it is told to stop).
    Serving = 1,
    /// Told to stop: draining, or being killed.
    Retiring = 2,
}

/// Why a worker was replaced (RESTART_CAUSES, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartCause {
    /// It died without being asked to stop.
    Crash = 0,
    /// Its heartbeat or boot went stale and the master killed it.
    Timeout = 1,
    /// It reached `max_requests`.
    MaxRequests = 2,
    /// A reload replaced its generation.
    Reload = 3,
}

/// Worker, after fork: counts go to slot `index` from now on.
pub fn use_slot(index: usize) {
    if let Some(region) = Region::get() {
        let _ = SLOT.set(&region.slots[index]);
    }
}

/// This process's slot: the worker's own, or (outside a worker, e.g. in
/// unit tests) a slot nobody reads.
fn slot() -> &'static Slot {
    static UNUSED: OnceLock<Box<Slot>> = OnceLock::new();
    if let Some(s) = SLOT.get() {
        return s;
    }
    UNUSED.get_or_init(|| {
        // SAFETY: a Slot is repr(C) atomics, valid when all zero.
        unsafe { Box::<Slot>::new_zeroed().assume_init() }
    })
}

/// Worker: samples its own memory and descriptors (from its heartbeat).
pub fn sample_worker() {
    let (rss, fds) = process_sample();
    let s = slot();
    s.resident_bytes.store(rss, Ordering::Relaxed);
    s.open_fds.store(fds, Ordering::Relaxed);
}

/// This process's resident bytes and open descriptors, from /proc.
fn process_sample() -> (u64, u64) {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    (pages * page, fds)
}

/// Index of `value` in `table`, or the last entry (the `other` label).
fn index_of<T: PartialEq>(table: &[T], value: &T) -> usize {
    table
        .iter()
        .position(|t| t == value)
        .unwrap_or(table.len() - 1)
}

/// A request's labels, found once when it is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLabels {
    method: usize,
    route: usize,
}

impl RequestLabels {
    /// Labels for `method` on `route` (None: no route takes the path).
    pub fn new(method: &str, route: Option<RouteId>) -> RequestLabels {
        RequestLabels {
            method: index_of(&METHODS, &method),
            route: route.map_or(ROUTES.len() - 1, |r| r as usize),
        }
    }

    /// A request that could not be read far enough to be routed.
    pub fn unrouted() -> RequestLabels {
        RequestLabels {
            method: METHODS.len() - 1,
            route: ROUTES.len() - 1,
        }
    }
}

/// Counts a finished request: its status and how long it took.
pub fn request_done(labels: RequestLabels, status: u16, took: Duration) {
    if !ENABLED {
        return;
    }
    let s = slot();
    let status = index_of(&STATUSES, &status);
    let i = (labels.method * ROUTES.len() + labels.route) * STATUSES.len() + status;
    s.requests[i].fetch_add(1, Ordering::Relaxed);
    s.durations[labels.route].observe(&DURATION_BUCKETS, took.as_secs_f64());
}

/// A request started (+1) or finished (-1) being handled.
pub fn in_flight(delta: i64) {
    if !ENABLED {
        return;
    }
    slot().in_flight.fetch_add(delta, Ordering::Relaxed);
}

/// A connection was accepted (+1) or closed (-1).
pub fn connections(delta: i64) {
    if !ENABLED {
        return;
    }
    slot().connections_open.fetch_add(delta, Ordering::Relaxed);
}

/// A connection was parked between requests (+1), or resumed (-1).
pub fn connections_parked(delta: i64) {
    if !ENABLED {
        return;
    }
    slot()
        .connections_parked
        .fetch_add(delta, Ordering::Relaxed);
}

/// A coroutine serving a connection, counted while it lives.
pub struct ConnectionCoroutine(());

impl ConnectionCoroutine {
    /// Counts the calling coroutine until the value is dropped.
    pub fn start() -> ConnectionCoroutine {
        if ENABLED {
            slot().connection_coroutines.fetch_add(1, Ordering::Relaxed);
        }
        ConnectionCoroutine(())
    }
}

impl Drop for ConnectionCoroutine {
    fn drop(&mut self) {
        if ENABLED {
            slot().connection_coroutines.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A connection was refused (over `worker_connections`).
pub fn connection_refused() {
    if !ENABLED {
        return;
    }
    slot().connections_refused.fetch_add(1, Ordering::Relaxed);
}

/// `n` idle connections were closed to admit new ones (at
/// `worker_connections`).
pub fn connections_evicted(n: usize) {
    if !ENABLED {
        return;
    }
    slot()
        .connections_evicted
        .fetch_add(n as u64, Ordering::Relaxed);
}

/// A connection was closed without a valid PROXY protocol header (or from
/// a peer not allowed to send one).
pub fn proxy_header_refused() {
    if !ENABLED {
        return;
    }
    slot().proxy_refused.fetch_add(1, Ordering::Relaxed);
}

/// A TLS handshake failed (the connection was closed).
pub fn tls_handshake_failed() {
    if !ENABLED {
        return;
    }
    slot()
        .tls_handshake_failures
        .fetch_add(1, Ordering::Relaxed);
}

/// How a store operation ended, as the metrics tell it: its result
/// (STORE_RESULTS) and, for a failure, its kind (STORE_ERRORS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// It answered (an order not found included).
    Ok,
    /// It did not answer before its deadline.
    Timeout,
    /// The store is unreachable, failing or damaged.
    Unavailable,
    /// The store is full.
    Full,
}

impl StoreOutcome {
    /// Index in STORE_RESULTS.
    fn result(self) -> usize {
        match self {
            StoreOutcome::Ok => 0,
            StoreOutcome::Unavailable | StoreOutcome::Full => 1,
            StoreOutcome::Timeout => 2,
        }
    }

    /// Index in STORE_ERRORS, for a failure.
    fn error(self) -> Option<usize> {
        match self {
            StoreOutcome::Ok => None,
            StoreOutcome::Timeout => Some(0),
            StoreOutcome::Unavailable => Some(1),
            StoreOutcome::Full => Some(2),
        }
    }
}

/// A store operation (STORE_OPS index) ended so.
pub fn store_op(op: StoreOp, outcome: StoreOutcome) {
    if !ENABLED {
        return;
    }
    let s = slot();
    s.store_ops[op as usize * STORE_RESULTS.len() + outcome.result()]
        .fetch_add(1, Ordering::Relaxed);
    if let Some(kind) = outcome.error() {
        s.store_errors[kind].fetch_add(1, Ordering::Relaxed);
    }
}

/// Store operations (STORE_OPS, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Get = 0,
    List = 1,
    Create = 2,
    Update = 3,
    Delete = 4,
}

/// The embedded store committed `batch` writes in `took`.
pub fn commit(batch: usize, took: Duration) {
    if !ENABLED {
        return;
    }
    let s = slot();
    s.commit_batch.observe(&BATCH_BUCKETS, batch as f64);
    s.commit_duration
        .observe(&COMMIT_BUCKETS, took.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_fit_the_histogram_and_end_in_other() {
        for bounds in [&DURATION_BUCKETS[..], &BATCH_BUCKETS, &COMMIT_BUCKETS] {
            assert!(bounds.len() < MAX_BUCKETS);
            assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        }
        assert_eq!(METHODS[METHODS.len() - 1], "other");
        assert_eq!(ROUTES[ROUTES.len() - 1], "other");
        assert_eq!(STATUSES[STATUSES.len() - 1], 0);
        assert_eq!(
            std::mem::size_of::<MasterBlock>() % std::mem::align_of::<Slot>(),
            0
        );
        assert_eq!(std::mem::size_of::<Slot>() % 64, 0);
    }

    #[test]
    fn labels_fall_back_to_other() {
        assert_eq!(RequestLabels::new("PATCH", None), RequestLabels::unrouted());
        assert_eq!(
            RequestLabels::new("GET", Some(RouteId::Orders)),
            RequestLabels {
                method: 0,
                route: 0
            }
        );
        assert_eq!(
            ROUTES,
            ["/orders", "/orders/{id}", "/healthz", "/readyz", "other"]
        );
        assert_eq!(
            STATUSES,
            [
                200, 204, 304, 400, 401, 404, 405, 408, 412, 413, 414, 417, 431, 500, 501, 503,
                505, 0
            ]
        );
        assert_eq!(index_of(&STATUSES, &418), STATUSES.len() - 1);
    }
}
