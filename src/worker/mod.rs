//! A worker process: configures may after fork, binds the shared address
//! with SO_REUSEPORT, drops privileges, opens the store, starts listening
//! and accepting (`http::server`), tells the master it serves, then
//! watches its signals, its connections (idle, slow) and its request count.
//!
//! Phases: Starting -> Serving -> Draining -> Exited. TERM drains: the
//! listener closes (the kernel sends new connections to the other
//! listeners), each connection's next response carries `Connection: close`,
//! idle connections are closed, and the worker exits once no connection is
//! left or `graceful_timeout` passes. INT and QUIT exit at once: a write is
//! acknowledged only after its commit, so none is lost.

pub mod damage;
pub mod privileges;

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::config::{Config, ProcessConfig};
use crate::http::access_log::{self, AccessLog};
use crate::http::{server, App, HttpConfig, ServerState};
use crate::lifecycle::heartbeat::{self, Beat};
use crate::lifecycle::signals::{in_worker, worker_set, InWorker};
use crate::lifecycle::Report;
use crate::metrics::{endpoint, Region};
use crate::proto::idle::IdleSet;
use crate::proto::sweep::{Registry, SweepPolicy};
use crate::store::{self, Backend, StoreError};

/// How often the worker sweeps its connections while serving.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);
/// How often a draining worker sweeps and checks for open connections.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// While draining, a connection idle this long is closed (a client that
/// keeps sending is answered with `Connection: close` instead).
const DRAIN_IDLE: Duration = Duration::from_millis(100);
/// How long may's event loop waits for events when no I/O timer is due
/// (may polls every 10 ms by default: 100 wake-ups a second per idle
/// worker). Work for a scheduler thread wakes it at once (an eventfd), so
/// nothing waits for this.
const MAY_POLL_TIMEOUT: Duration = Duration::from_secs(60);
/// Finished coroutines may keeps, stacks and all, for the next ones (its
/// default, 1,000, makes 1,000 stacks at start and keeps each one's
/// touched pages, ~20 KiB, resident for good). A new coroutine beyond them
/// costs a stack mapping; connections that wait park without one.
const COROUTINE_POOL: usize = 128;

/// What the master hands a new worker.
pub struct Spec<'a> {
    /// The settings of this worker's generation.
    pub config: &'a Config,
    /// The concrete address to bind.
    pub addr: SocketAddr,
    /// The concrete metrics address to bind, if metrics are served.
    pub metrics_addr: Option<SocketAddr>,
    /// Write end of the status pipe to the master.
    pub status: OwnedFd,
    /// This worker's heartbeat slot.
    pub beat: Beat,
}

/// Why a worker could not start (`main` maps it to an exit status).
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The address cannot be bound.
    #[error("cannot bind {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// The configured user cannot be served as.
    #[error("cannot serve as the configured user")]
    Privileges(#[from] privileges::PrivilegeError),
    /// A test asked for it (`faults`).
    #[error("test hook: failing at boot")]
    TestHook,
    /// The store cannot be opened.
    #[error("cannot open the store ({0})")]
    Store(String, #[source] StoreError),
    /// The embedded store's data file is damaged (checked again at every
    /// worker start: it may have been damaged since the master checked).
    #[error(transparent)]
    Damaged(#[from] crate::store::datafile::DamagedStore),
    /// The access log cannot be opened.
    #[error("cannot open the access log {0}")]
    AccessLog(String, #[source] std::io::Error),
    /// The bound socket cannot listen.
    #[error("cannot listen on {0}")]
    Listen(SocketAddr, #[source] std::io::Error),
    /// The worker's sets of connections cannot be made (an eventfd, an
    /// epoll instance, the coroutine resuming parked connections).
    #[error("cannot set up the worker's connection tracking")]
    Connections(#[source] std::io::Error),
    /// The master cannot be told.
    #[error("cannot report readiness to the master")]
    Report(#[source] std::io::Error),
    /// The worker's signals cannot be read.
    #[error("cannot read the worker's signals")]
    Signals(#[source] nix::Error),
}

/// Runs a worker until it is stopped.
pub fn run(spec: Spec<'_>) -> Result<(), BootError> {
    let Spec {
        config,
        addr,
        metrics_addr,
        status,
        beat,
    } = spec;
    let mut status = File::from(status);
    let signals = Signals::new().map_err(BootError::Signals)?;
    let Config {
        process,
        http,
        store: store_config,
        ..
    } = config;
    configure_may(process.threads, process.coroutine_stack_size);
    log_panics();
    let bound = server::bind(addr).map_err(|e| BootError::Bind(addr, e))?;
    let metrics = match metrics_addr {
        Some(m) => Some(endpoint::bind(m, http.backlog).map_err(|e| BootError::Bind(m, e))?),
        None => None,
    };
    privileges::drop_to(process.user.as_deref(), process.group.as_deref())?;
    let data_dir = &store_config.data_dir;
    if crate::faults::boot_must_fail(data_dir) {
        return Err(BootError::TestHook);
    }
    if crate::faults::boot_must_hang(data_dir) {
        std::thread::sleep(Duration::from_secs(3600));
    }
    if let Backend::Embedded = store_config.backend {
        crate::store::datafile::check(data_dir)?;
    }
    let store = store::open(store_config)
        .map_err(|e| BootError::Store(store::describe(store_config), e))?;
    let store = Box::new(damage::EndOnDamage(store));
    let access = start_access_log(http)?;
    let app = Arc::new(App {
        store,
        limits: http.limits,
        state: ServerState::new(&http.limits).map_err(BootError::Connections)?,
        tokens: http.tokens.clone(),
        access,
        idle: IdleSet::new().map_err(BootError::Connections)?,
        proxy_protocol: http.proxy_protocol.clone(),
        tls: http.tls.clone(),
    });
    server::resume_parked(&app).map_err(BootError::Connections)?;
    let acceptor = bound
        .serve(http.backlog, app.clone())
        .map_err(|e| BootError::Listen(addr, e))?;
    let metrics = match (metrics, Region::get()) {
        (Some(listener), Some(region)) => Some(
            endpoint::serve(listener, region)
                .map_err(|e| BootError::Listen(metrics_addr.unwrap_or(addr), e))?,
        ),
        _ => None,
    };
    damage::exit_on_sigbus();
    start_heartbeat(beat, heartbeat::interval(process.timeout));
    status
        .write_all(&[Report::Ready.byte()])
        .map_err(BootError::Report)?;
    log::info!("serving on {addr}");
    let graceful = serve_until_stopped(
        http,
        &signals,
        &app.state,
        max_requests_with_jitter(process),
        &mut status,
    );
    if graceful {
        log::info!("draining ({} connections open)", app.state.registry.len());
        acceptor.stop();
        if let Some(m) = metrics {
            m.stop();
        }
        app.state.start_draining();
        drain(http, process.graceful_timeout, &signals, &app.state);
    }
    log::info!(
        "exiting ({}): {} requests",
        if graceful { "graceful" } else { "fast" },
        app.state.requests(),
    );
    if let Some(stats) = app.store.stats() {
        log::info!("store: {stats}");
    }
    access_log::flush();
    Ok(())
}

/// Opens the access log and starts its writer thread, when there is one.
fn start_access_log(config: &HttpConfig) -> Result<Option<AccessLog>, BootError> {
    let Some(c) = &config.access_log else {
        return Ok(None);
    };
    let what = c
        .path
        .as_ref()
        .map_or("standard output".to_string(), |p| p.display().to_string());
    access_log::start(c.path.clone()).map_err(|e| BootError::AccessLog(what, e))?;
    Ok(Some(c.log.clone()))
}

/// Waits for a stop signal while sweeping connections and watching the
/// request count against `max_requests` (0: never). Returns true for a
/// graceful stop (TERM).
fn serve_until_stopped(
    config: &HttpConfig,
    signals: &Signals,
    state: &ServerState,
    max_requests: u64,
    status: &mut File,
) -> bool {
    let policy = config.sweep;
    let mut asked_to_retire = false;
    loop {
        // With no connection there is nothing to sweep: wait for a signal,
        // or for the first connection.
        let timeout = (!state.registry.is_empty()).then_some(SWEEP_INTERVAL);
        match signals.wait(timeout, &state.registry) {
            Some(InWorker::Drain) => return true,
            Some(InWorker::Exit) => return false,
            Some(InWorker::ReopenLogs) => {
                crate::logging::reopen();
                access_log::reopen();
            }
            Some(InWorker::Ignore) | None => {}
        }
        let swept = state.registry.sweep(&policy);
        if swept.idle_closed + swept.slow_cut > 0 {
            log::debug!(
                "closed {} idle and {} slow connections",
                swept.idle_closed,
                swept.slow_cut
            );
        }
        if !asked_to_retire && max_requests > 0 && state.requests() >= max_requests {
            asked_to_retire = true;
            log::info!(
                "max_requests reached ({} requests): asking to be replaced",
                state.requests()
            );
            if status.write_all(&[Report::Retire.byte()]).is_err() {
                return true;
            }
        }
    }
}

/// Closes idle connections as they become idle; returns when none is left
/// or at the graceful timeout (INT or QUIT cut it short).
fn drain(config: &HttpConfig, graceful_timeout: Duration, signals: &Signals, state: &ServerState) {
    let deadline = Instant::now() + graceful_timeout;
    let policy = SweepPolicy {
        keepalive: DRAIN_IDLE.min(config.sweep.keepalive),
        ..config.sweep
    };
    while !state.registry.is_empty() && Instant::now() < deadline {
        state.registry.sweep(&policy);
        if let Some(InWorker::Exit) = signals.wait(Some(DRAIN_POLL), &state.registry) {
            log::info!("fast stop while draining");
            return;
        }
    }
    if !state.registry.is_empty() {
        log::warn!(
            "graceful timeout: {} connections still open",
            state.registry.len()
        );
    }
}

/// The worker's signals (the table's worker set, blocked since the fork),
/// read from a signalfd.
struct Signals(SignalFd);

impl Signals {
    fn new() -> nix::Result<Signals> {
        let flags = SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC;
        SignalFd::with_flags(&worker_set(), flags).map(Signals)
    }

    /// Waits up to `timeout` (None: as long as it takes) for a signal or
    /// for the first connection to come or the last to leave (`registry`);
    /// what the worker does with a signal.
    fn wait(&self, timeout: Option<Duration>, registry: &Registry) -> Option<InWorker> {
        let timeout = match timeout {
            Some(t) => PollTimeout::from(u16::try_from(t.as_millis()).unwrap_or(u16::MAX)),
            None => PollTimeout::NONE,
        };
        let mut fds = [
            PollFd::new(std::os::fd::AsFd::as_fd(&self.0), PollFlags::POLLIN),
            PollFd::new(registry.activity(), PollFlags::POLLIN),
        ];
        if poll(&mut fds, timeout).ok()? == 0 {
            return None;
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            registry.take_activity();
        }
        let info = self.0.read_signal().ok()??;
        in_worker(info.ssi_signo as i32)
    }
}

/// may settings, before may's first use: thread count, stack size, and no
/// CPU pinning (may pins thread N to CPU N: every worker would share CPU 0).
fn configure_may(threads: usize, stack_size: usize) {
    may::config()
        .set_workers(threads)
        .set_stack_size(stack_size / std::mem::size_of::<usize>())
        .set_pool_capacity(COROUTINE_POOL)
        .set_worker_pin(false);
    may::config().set_timeout_ns(MAY_POLL_TIMEOUT.as_nanos() as u64);
}

/// Beats every `interval` from a coroutine, sampling the worker's memory and
/// descriptors for the metrics with each beat: if the scheduler hangs, the
/// heartbeat stops and the master replaces the worker.
///
/// may resumes a coroutine whose sleep expired on its timer thread, not on
/// a scheduler thread; the `yield_now` after each sleep moves the coroutine
/// back onto the scheduler's queue, so the beat proves that a scheduler
/// thread runs. (With `threads` > 1, a hang is seen once every scheduler
/// thread is stuck.)
fn start_heartbeat(beat: Beat, interval: Duration) {
    beat.beat();
    may::go!(move || loop {
        crate::metrics::sample_worker();
        may::coroutine::sleep(interval);
        may::coroutine::yield_now();
        beat.beat();
    });
}

/// Panics are bugs: log them as one line through the logger (a panic in
/// a handler costs its request a 500, never the worker).
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        log::error!("panic{place}: {message}");
    }));
}

/// max_requests plus a random share of the jitter, so workers started
/// together do not all recycle at once.
fn max_requests_with_jitter(config: &ProcessConfig) -> u64 {
    if config.max_requests == 0 {
        return 0;
    }
    let jitter = if config.max_requests_jitter > 0 {
        // The pid and the clock are random enough to spread workers apart.
        let seed = u64::from(std::process::id()) ^ crate::clock::monotonic_ms().rotate_left(17);
        seed % (config.max_requests_jitter + 1)
    } else {
        0
    };
    config.max_requests + jitter
}
