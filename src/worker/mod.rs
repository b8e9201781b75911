//! A worker process: configures may after fork, opens the store, binds the
//! shared address with SO_REUSEPORT (inside may_minihttp's `start`), tells
//! the master it serves, and stops on a signal.
//!
//! Phases: Starting -> Serving -> Draining -> Exited. TERM drains: the
//! listener closes (the kernel sends new connections to other workers),
//! every further response closes its connection, and the worker exits once
//! no request is in flight or `graceful_timeout` passes. INT and QUIT exit
//! at once: a write is acknowledged only after its commit, so none is lost.

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use may_minihttp::HttpServiceFactory;
use nix::sys::signal::{SigSet, Signal};

use crate::config::{Backend, Config};
use crate::http::routes::ListLimits;
use crate::http::{App, Factory, HttpLimits, ServerState};
use crate::store::embedded::Embedded;
use crate::store::mongo::Mongo;
use crate::store::Store;

/// Exit status of a worker that could not start (as gunicorn's).
pub const EXIT_BOOT_FAILURE: i32 = 3;
/// How often a draining worker checks for requests still in flight.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// Time left for responses already queued to reach their sockets.
const DRAIN_LINGER: Duration = Duration::from_millis(50);
/// The byte a worker writes on its ready pipe once it serves.
pub const READY_BYTE: u8 = b'R';

/// Lifecycle phases of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Serving,
    Draining,
    Exited,
}

/// Runs a worker; returns its exit status. `ready` is written once the
/// listener is bound.
pub fn run(config: &Config, addr: SocketAddr, ready: OwnedFd) -> i32 {
    enter(Phase::Starting);
    configure_may(config);
    let (app, store_stats) = match build_app(config) {
        Ok(app) => app,
        Err(e) => {
            log::error!("cannot open the store ({}): {e}", describe_backend(config));
            return EXIT_BOOT_FAILURE;
        }
    };
    let state = app.state.clone();
    let server = match Factory::new(app).start(addr) {
        Ok(handle) => handle,
        Err(e) => {
            log::error!("cannot listen on {addr}: {e}");
            return EXIT_BOOT_FAILURE;
        }
    };
    if let Err(e) = std::fs::File::from(ready).write_all(&[READY_BYTE]) {
        log::error!("cannot report readiness to the master: {e}");
        return EXIT_BOOT_FAILURE;
    }
    enter(Phase::Serving);
    log::info!("serving on {addr}");
    let graceful = wait_for_stop();
    if graceful {
        enter(Phase::Draining);
        log::info!("draining ({} connections open)", state.connections());
        // SAFETY: cancelling the accept coroutine only closes the listener;
        // it holds no lock and the connections are separate coroutines.
        unsafe { server.coroutine().cancel() };
        state.start_draining();
        drain(&state, config.graceful_timeout);
    }
    enter(Phase::Exited);
    let (ops, commits) = store_stats();
    log::info!(
        "exiting ({}): {} requests; store: {ops} writes in {commits} commits (mean batch {:.1})",
        if graceful { "graceful" } else { "fast" },
        state.requests(),
        if commits > 0 { ops as f64 / commits as f64 } else { 0.0 }
    );
    0
}

/// Records a phase change in the debug log.
fn enter(phase: Phase) {
    log::debug!("phase {phase:?}");
}

/// The signals a worker waits for. The master blocks them in the child
/// before any thread starts, so they stay pending for [`wait_for_stop`].
pub fn signal_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
    ] {
        set.add(s);
    }
    set
}

/// Blocks until TERM (true: graceful) or INT/QUIT (false: fast). The other
/// signals of [`signal_set`] mean nothing to a worker and are ignored.
fn wait_for_stop() -> bool {
    let set = signal_set();
    loop {
        match set.wait() {
            Ok(Signal::SIGTERM) => return true,
            Ok(Signal::SIGINT | Signal::SIGQUIT) => return false,
            Ok(other) => log::debug!("ignoring {other}"),
            Err(e) => {
                log::error!("sigwait failed: {e}; stopping");
                return false;
            }
        }
    }
}

/// may settings, before may's first use: thread count, stack size, and no
/// CPU pinning (may pins thread N to CPU N: every worker would share CPU 0).
fn configure_may(config: &Config) {
    may::config()
        .set_workers(config.threads)
        .set_stack_size(config.coroutine_stack_size / std::mem::size_of::<usize>())
        .set_worker_pin(false);
}

type StatsFn = Box<dyn Fn() -> (u64, u64)>;

fn build_app(config: &Config) -> Result<(Arc<App>, StatsFn), crate::store::StoreError> {
    let (store, stats_fn): (Box<dyn Store>, StatsFn) = match &config.backend {
        Backend::Embedded => {
            let embedded = Embedded::open(&config.data_dir, config.map_size, config.store_timeout)?;
            let stats = embedded.stats();
            let stats_fn: StatsFn = Box::new(move || {
                use std::sync::atomic::Ordering::Relaxed;
                (stats.ops.load(Relaxed), stats.commits.load(Relaxed))
            });
            (Box::new(embedded), stats_fn)
        }
        Backend::Mongo(target) => (Box::new(Mongo::open(target, config.store_timeout)?), Box::new(|| (0, 0))),
    };
    let limits = HttpLimits {
        max_body_size: config.max_body_size,
        close_after_response_bytes: config.close_after_response_bytes,
        list: ListLimits { max_page_size: config.max_page_size, cap_unpaged_list: config.cap_unpaged_list },
    };
    let test_hooks = std::env::var(crate::http::TEST_HOOKS_ENV).is_ok_and(|v| v == "1");
    if test_hooks {
        log::warn!("test hooks enabled ({}=1): never in production", crate::http::TEST_HOOKS_ENV);
    }
    let app = App { store, limits, state: Arc::new(ServerState::default()), test_hooks };
    Ok((Arc::new(app), stats_fn))
}

/// The store, for log lines (never the URI's password).
pub fn describe_backend(config: &Config) -> String {
    match &config.backend {
        Backend::Embedded => format!("embedded, data_dir {}", config.data_dir.display()),
        Backend::Mongo(t) => format!(
            "mongo {} database {} collection {}",
            crate::store::mongo::redact_uri(&t.uri),
            t.database,
            t.collection
        ),
    }
}

/// Waits until no request is in flight, or the deadline.
fn drain(state: &ServerState, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while state.in_flight() > 0 && Instant::now() < deadline {
        std::thread::sleep(DRAIN_POLL);
    }
    if state.in_flight() > 0 {
        log::warn!("graceful timeout: {} requests still in flight", state.in_flight());
    }
    std::thread::sleep(DRAIN_LINGER);
}
