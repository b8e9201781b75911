//! The master process: settles the address and data dir, forks workers,
//! supervises them and turns signals into lifecycle actions.
//!
//! The master forks before anything starts a thread, a coroutine runtime or
//! a store handle, and stays single-threaded: signals arrive through
//! signal-hook flags and a self-pipe, polled together with the workers'
//! status pipes. Decisions are made by the pure [`supervisor::Supervisor`];
//! this module carries them out (fork, kill, reload, upgrade, notify).

pub mod bridge;
pub mod listener;
pub mod notify;
pub mod signals;
pub mod supervisor;
pub mod title;
pub mod upgrade;

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, SigHandler, SigSet, Signal as NixSignal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid as NixPid};

use crate::config::{Config, Settings, UriSource};
use crate::lifecycle::heartbeat::Heartbeats;
use crate::lifecycle::signals::{master_set, Signal, SIGNALS};
use crate::lifecycle::Report;
use crate::logging::chain;
use crate::metrics::Region;
use crate::store::Backend;
use crate::worker;
use listener::{ListenError, Reservation};
use signals::PipeSignals;
use supervisor::{Action, Event, Generation, Outcome, Pid, StopKind, Supervisor, Timeouts};

/// Longest the master sleeps when no deadline is due sooner (a bound, not
/// a tick: it sleeps until a signal, a worker's report or exit, or the
/// next deadline).
const LONGEST_SLEEP: Duration = Duration::from_secs(60);

/// Why the master stopped with an error (`main` maps each to a status).
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// The data directory cannot be created or written.
    #[error("data_dir {}", .0.display())]
    DataDir(PathBuf, #[source] io::Error),
    /// The embedded store's data file is damaged.
    #[error(transparent)]
    DamagedStore(#[from] crate::store::datafile::DamagedStore),
    /// The address cannot be used.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The serving user or group cannot be used.
    #[error(transparent)]
    User(#[from] worker::privileges::PrivilegeError),
    /// The shared memory of the heartbeats or metrics cannot be mapped.
    #[error("shared memory for {0}")]
    SharedMemory(&'static str, #[source] io::Error),
    /// The signal handlers cannot be installed.
    #[error("signal handlers")]
    Signals(#[source] io::Error),
    /// The pid file cannot be written.
    #[error("pid file {}", .0.display())]
    PidFile(PathBuf, #[source] io::Error),
    /// A binary upgrade asked this build to take over from one whose
    /// handover it cannot read (`check-config`).
    #[error(transparent)]
    Handover(#[from] upgrade::HandoverError),
    /// Workers kept dying at start-up.
    #[error("workers failed to start {failures} times in a row; giving up (see the worker errors above)")]
    GaveUp { failures: u32 },
    /// Workers kept ending on damage to the store.
    #[error("workers ended on damage to the store {faults} times within a minute; giving up: restore the store from a backup (made with `orders-server backup`)")]
    StoreFaults { faults: usize },
}

/// What a forked worker process runs: serves as `spec` says and ends the
/// process. The caller (`main`) gives it, so that how a worker's outcome
/// becomes its exit status is decided where the master's own is: the
/// master only forks (as nginx's `ngx_spawn_process` takes the child's
/// cycle function).
pub type WorkerMain = fn(worker::Spec<'_>) -> !;

/// Runs the server: returns when the master stops. `cli` is kept to
/// re-resolve the configuration on reload (SIGHUP); each forked worker runs
/// `worker_main`.
pub fn run(mut config: Config, cli: Settings, worker_main: WorkerMain) -> Result<(), MasterError> {
    upgrade::remember_executable();
    let handover = upgrade::Handover::from_env();
    if let Some(h) = &handover {
        // The workers' concrete addresses (either port may have been 0).
        config.process.bind = h.addr;
        if config.process.metrics_bind.is_some() {
            config.process.metrics_bind = h.metrics_addr;
        }
    }
    warn_about_cli_password(&config);
    raise_nofile(config.process.rlimit_nofile);
    preflight(&config)?;
    let bridge = bridge_for(bridge::take_from_systemd(), config.process.bind);
    if let Some(b) = &bridge {
        config.process.bind = b.addr;
    }
    // After an upgrade the adopted workers hold the address, after a
    // restart the bridge does: join them.
    let exclusive = handover.is_none() && bridge.is_none();
    let reservation = listener::reserve(config.process.bind, exclusive)?;
    let metrics_reservation = match config.process.metrics_bind {
        Some(m) => Some(listener::reserve(m, exclusive)?),
        None => None,
    };
    let (heartbeats, metrics) = shared_regions(handover.as_ref())?;
    let mut signals = PipeSignals::install().map_err(MasterError::Signals)?;
    upgrade::unblock_signals();
    if let Some(pid) = &config.process.pid {
        write_pid_file(pid)?;
    }
    let pid_file = config.process.pid.clone();
    let mut master = Master {
        configs: BTreeMap::from([(1, config)]),
        cli,
        reservation,
        metrics_reservation,
        heartbeats,
        metrics,
        titled: 0,
        bridge,
        bridge_sent: false,
        worker_main,
    };
    let result = master.run(&mut signals, handover);
    if let Some(pid) = pid_file {
        remove_pid_file(&pid);
    }
    result
}

/// What a start needs beyond a valid configuration: the serving user, and
/// the embedded store's data dir, writable and undamaged.
fn preflight(config: &Config) -> Result<(), MasterError> {
    let process = &config.process;
    let owner = match &process.user {
        Some(u) => Some(worker::privileges::resolve(u, process.group.as_deref())?),
        None => None,
    };
    if let Backend::Embedded = config.store.backend {
        prepare_data_dir(&config.store.data_dir, owner)?;
        crate::store::datafile::check(&config.store.data_dir)?;
    }
    Ok(())
}

/// `orders-server check-config`: what a start would check before serving
/// (the configuration is loaded already), and, when a binary upgrade asks,
/// whether this build can take over from the running one.
pub fn check_config(config: &Config) -> Result<(), MasterError> {
    upgrade::check_format_from_env()?;
    preflight(config)
}

/// The bridge systemd passed back, if it listens where this start will
/// (else it is released: the port changed across the restart).
fn bridge_for(
    bridge: Option<bridge::Bridge>,
    bind: std::net::SocketAddr,
) -> Option<bridge::Bridge> {
    let b = bridge?;
    if b.addr == bind || (bind.port() == 0 && b.addr.ip() == bind.ip()) {
        log::info!(
            "restart: took over the listening socket systemd kept on {}",
            b.addr
        );
        return Some(b);
    }
    log::warn!(
        "restart: systemd kept a listening socket on {}, but this start binds {bind}: closing it",
        b.addr
    );
    b.release();
    None
}

/// The heartbeat and metrics regions: new, or mapped again from the
/// descriptors a binary upgrade handed on.
fn shared_regions(
    handover: Option<&upgrade::Handover>,
) -> Result<(Heartbeats, Region), MasterError> {
    let heartbeats = match handover {
        Some(h) => Heartbeats::inherit(
            h.heartbeats,
            &h.workers.iter().map(|w| w.heartbeat).collect::<Vec<_>>(),
        ),
        None => Heartbeats::new(),
    };
    let heartbeats = heartbeats.map_err(|e| MasterError::SharedMemory("heartbeats", e))?;
    let metrics = match handover {
        Some(h) => Region::inherit(h.metrics),
        None => Region::install(),
    };
    let metrics = metrics.map_err(|e| MasterError::SharedMemory("metrics", e))?;
    Ok((heartbeats, metrics))
}

/// What the master keeps of each worker's process, in the supervisor's
/// record of the worker.
#[derive(Debug)]
struct WorkerProcess {
    /// Its heartbeat slot (also its metrics slot).
    heartbeat: usize,
    /// Read end of the worker's status pipe, until it closes.
    status: Option<OwnedFd>,
}

/// The supervisor, with the master's part of each worker's record.
type Sup = Supervisor<WorkerProcess>;

struct Master {
    /// The configuration of each live generation.
    configs: BTreeMap<Generation, Config>,
    cli: Settings,
    reservation: Reservation,
    /// The metrics address, held like the API's (`metrics_bind`).
    metrics_reservation: Option<Reservation>,
    heartbeats: Heartbeats,
    /// The shared metrics region, and what the master publishes to it.
    metrics: Region,
    /// The generation the process title shows.
    titled: Generation,
    /// The listener systemd kept across a restart, until the workers serve.
    bridge: Option<bridge::Bridge>,
    /// Whether this stop handed a bridge to systemd already.
    bridge_sent: bool,
    /// What each forked worker runs.
    worker_main: WorkerMain,
}

impl Master {
    fn config(&self, generation: Generation) -> &Config {
        self.configs
            .get(&generation)
            .or_else(|| self.configs.values().next_back())
            .expect("at least one configuration")
    }

    fn current(&self) -> &Config {
        self.configs
            .values()
            .next_back()
            .expect("at least one configuration")
    }

    fn run(
        &mut self,
        signals: &mut PipeSignals,
        handover: Option<upgrade::Handover>,
    ) -> Result<(), MasterError> {
        let (mut sup, initial) = match handover {
            Some(h) => self.adopt(h),
            None => {
                let config = self.current();
                log::info!(
                    "starting {} workers on {} (store: {})",
                    config.process.workers,
                    self.reservation.addr,
                    crate::store::describe(&config.store)
                );
                Supervisor::new(config.process.workers, timeouts(config))
            }
        };
        let mut queue: VecDeque<Action> = initial.into();
        loop {
            while let Some(action) = queue.pop_front() {
                match action {
                    Action::Exit(Outcome::Stopped) => {
                        log::info!("stopped");
                        return Ok(());
                    }
                    Action::Exit(Outcome::GaveUp { failures }) => {
                        return Err(MasterError::GaveUp { failures })
                    }
                    Action::Exit(Outcome::Faulted { faults }) => {
                        return Err(MasterError::StoreFaults { faults })
                    }
                    other => queue.extend(self.execute(other, &mut sup, signals)),
                }
            }
            self.publish_metrics(&sup);
            for event in self.wait(&mut sup, signals) {
                let events = self.intercept(event, &sup, signals);
                for e in events {
                    queue.extend(sup.handle(e, Instant::now()));
                }
            }
            self.forget_old_configs(&sup);
        }
    }

    /// Tells systemd (or the test harness) that every worker serves, and where.
    fn announce_ready(&self) {
        notify::ready(
            self.reservation.addr,
            self.metrics_reservation.as_ref().map(|r| r.addr),
        );
    }

    /// Writes the master's numbers to the shared metrics region, and its
    /// generation to its process title.
    fn publish_metrics(&mut self, sup: &Sup) {
        if self.titled != sup.generation() {
            self.titled = sup.generation();
            title::set(&format!(
                "orders-server: master [gen {}] {}",
                self.titled, self.reservation.addr
            ));
        }
        let census = sup.census();
        self.metrics
            .publish(sup.generation(), census.by_state, census.restarts);
        self.metrics.sample_master();
    }

    /// Signals that need the master's own work (reading the config, logs,
    /// exec) become supervisor events here.
    fn intercept(&mut self, event: Event, sup: &Sup, signals: &mut PipeSignals) -> Vec<Event> {
        match event {
            Event::Signal(Signal::Reload) => self.reload(sup).into_iter().collect(),
            Event::Signal(Signal::ReopenLogs) => {
                crate::logging::reopen();
                signal_workers(sup, NixSignal::SIGUSR1);
                log::info!("log file reopened");
                Vec::new()
            }
            Event::Signal(Signal::Upgrade) => {
                // Signals that arrived while the upgrade was checked, which
                // abandoned it: handled now, as if they came after.
                let pending = self.upgrade(sup, signals);
                pending
                    .into_iter()
                    .flat_map(|s| self.intercept(Event::Signal(s), sup, signals))
                    .collect()
            }
            Event::Signal(Signal::GracefulStop | Signal::FastStop) => {
                self.hand_bridge_to_systemd();
                notify::stopping();
                vec![event]
            }
            other => vec![other],
        }
    }

    /// At a stop under systemd, before any worker drains: a listener that
    /// waits in systemd's store through a restart (`bridge`).
    fn hand_bridge_to_systemd(&mut self) {
        if std::mem::replace(&mut self.bridge_sent, true) {
            return;
        }
        match bridge::hand_to_systemd(self.reservation.addr, self.current().http.backlog) {
            Ok(true) => log::info!("stopping: handed a listener on {} to systemd for a restart", self.reservation.addr),
            Ok(false) => {}
            Err(e) => log::warn!("stopping: cannot open a listener for a restart ({e}); a restart refuses connections until the new workers listen"),
        }
    }

    /// SIGHUP: re-reads the configuration; a valid one that changes nothing
    /// that needs downtime starts a new generation.
    fn reload(&mut self, sup: &Sup) -> Option<Event> {
        if !sup.can_reload() {
            log::warn!("reload ignored: a reload, upgrade or stop is in progress");
            return None;
        }
        notify::reloading();
        let fresh = match self.fresh_config() {
            Ok(c) => c,
            Err(why) => {
                log::error!("reload refused, old workers keep serving: {why}");
                self.announce_ready();
                return None;
            }
        };
        crate::logging::set_level(fresh.process.log_level);
        let (workers, timeouts) = (fresh.process.workers, timeouts(&fresh));
        self.configs.insert(sup.generation() + 1, fresh);
        log::info!(
            "reloading: starting generation {} ({workers} workers)",
            sup.generation() + 1
        );
        Some(Event::Reload { workers, timeouts })
    }

    /// Carries out one action; returns follow-up actions.
    fn execute(&mut self, action: Action, sup: &mut Sup, signals: &PipeSignals) -> Vec<Action> {
        match action {
            Action::Spawn { slot, generation } => {
                match self.spawn(slot, generation, sup, signals) {
                    Ok((pid, process)) => {
                        log::info!("worker {slot} gen {generation} started (pid {pid})");
                        sup.spawned(slot, generation, pid, process, Instant::now());
                        Vec::new()
                    }
                    Err(e) => {
                        log::error!("cannot fork worker {slot}: {e}");
                        sup.spawn_failed(slot, generation, Instant::now())
                    }
                }
            }
            Action::Stop { pid, how } => {
                let sig = match how {
                    StopKind::Graceful => NixSignal::SIGTERM,
                    StopKind::Fast => NixSignal::SIGQUIT,
                    StopKind::Kill => NixSignal::SIGKILL,
                };
                let _ = signal::kill(NixPid::from_raw(pid), sig);
                Vec::new()
            }
            Action::AnnounceListening => {
                log::info!("listening on {}", self.reservation.addr);
                if let Some(b) = self.bridge.take() {
                    log::info!(
                        "restart: the workers serve; released the listening socket systemd kept"
                    );
                    b.release();
                }
                self.announce_ready();
                Vec::new()
            }
            Action::ReloadDone { generation } => {
                log::info!("reloaded: generation {generation} serves; retiring the previous one");
                self.announce_ready();
                Vec::new()
            }
            Action::ReloadFailed { generation } => {
                log::error!("reload failed: a worker of generation {generation} died before serving; the previous generation keeps serving");
                self.configs.remove(&generation);
                self.announce_ready();
                Vec::new()
            }
            Action::Exit(_) => unreachable!("handled by the loop"),
            Action::BootTimedOut { pid } => {
                let boot = self.config(sup.generation()).process.boot_timeout;
                log::error!(
                    "worker pid {pid} did not report ready within boot_timeout ({} s): killing it",
                    boot.as_secs()
                );
                let _ = signal::kill(NixPid::from_raw(pid), NixSignal::SIGKILL);
                Vec::new()
            }
            Action::Ignored { signal, why } => {
                log::warn!("{signal:?} ignored: {why}");
                Vec::new()
            }
        }
    }

    /// Waits for signals, worker status, exits or the next timer.
    fn wait(&mut self, sup: &mut Sup, signals: &mut PipeSignals) -> Vec<Event> {
        // Sleep until a signal, a worker's report or exit, or the next real
        // deadline: the supervisor's timers, or the moment a worker's
        // heartbeat would be older than its `timeout`.
        let timeout = sup
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .into_iter()
            .chain(self.next_stale_check(sup))
            .min()
            .unwrap_or(LONGEST_SLEEP)
            .min(LONGEST_SLEEP);
        let (ready, watched) = poll(sup, signals, timeout);
        let mut events = Vec::new();
        if ready {
            for s in signals.take() {
                if s != Signal::ChildExited {
                    log::info!("signal: {s:?}");
                    events.push(Event::Signal(s));
                }
            }
        }
        for pid in watched {
            events.extend(read_status(sup, pid));
        }
        let exited: Vec<(Pid, bool)> = reap_children()
            .into_iter()
            .filter(|&(pid, _)| sup.worker(pid).is_some())
            .collect();
        let exited_pids: Vec<Pid> = exited.iter().map(|&(pid, _)| pid).collect();
        // Checked before the exits are handled, without the exited: their
        // heartbeat slots are released below (and their pids may be reused).
        events.extend(self.stale_workers(sup, &exited_pids));
        for (pid, faulted) in exited {
            if let Some(w) = sup.worker(pid) {
                self.heartbeats.release(w.process.heartbeat);
                self.metrics.slot_released(w.process.heartbeat);
            }
            if faulted {
                events.push(Event::WorkerFaulted(pid));
            }
            events.push(Event::WorkerExited { pid });
        }
        events.push(Event::Tick);
        events
    }

    /// How long until the first watched worker's heartbeat would be older
    /// than its `timeout`, if it does not beat before.
    fn next_stale_check(&self, sup: &Sup) -> Option<Duration> {
        sup.watched()
            .map(|(_, w)| {
                let timeout = self.config(w.generation).process.timeout;
                timeout.saturating_sub(self.heartbeats.age(w.process.heartbeat))
            })
            .min()
    }

    /// Serving workers whose heartbeat is older than `timeout` (but for
    /// those that just `exited`).
    fn stale_workers(&self, sup: &Sup, exited: &[Pid]) -> Vec<Event> {
        let mut events = Vec::new();
        for (pid, w) in sup.watched().filter(|(p, _)| !exited.contains(p)) {
            let timeout = self.config(w.generation).process.timeout;
            let age = self.heartbeats.age(w.process.heartbeat);
            if age > timeout {
                log::error!(
                    "worker pid {pid} timed out (no heartbeat for {:.1} s): killing it",
                    age.as_secs_f64()
                );
                events.push(Event::WorkerStale(pid));
            }
        }
        events
    }

    /// SIGUSR2: checks the configuration and the new executable, then
    /// re-executes it in place (`upgrade`). Returns only when the upgrade
    /// did not happen, with the signals that abandoned it, if any.
    fn upgrade(&mut self, sup: &Sup, signals: &mut PipeSignals) -> Vec<Signal> {
        if !sup.is_settled() {
            log::warn!("binary upgrade ignored: a reload, upgrade, stop, or worker start or retirement is in progress; send USR2 again");
            return Vec::new();
        }
        let checked = upgrade::executable().and_then(|exe| {
            self.upgrade_keeps_settings()?;
            upgrade::check(&exe)?;
            Ok(exe)
        });
        let exe = match checked {
            Ok(exe) => exe,
            Err(e) => {
                log::error!("binary upgrade failed: {}; still serving", chain(&e));
                return Vec::new();
            }
        };
        let blocked = match signals::block(&master_set()) {
            Ok(b) => b,
            Err(e) => {
                log::error!("binary upgrade failed: cannot block signals ({e}); still serving");
                return Vec::new();
            }
        };
        let pending: Vec<Signal> = signals
            .take()
            .into_iter()
            .filter(|s| !matches!(s, Signal::ChildExited | Signal::Upgrade))
            .collect();
        if !pending.is_empty() {
            let _ = blocked.restore();
            log::warn!(
                "binary upgrade abandoned: {pending:?} arrived while the new binary was checked"
            );
            return pending;
        }
        log::info!(
            "binary upgrade: {} passed check-config; re-executing it in place (pid {})",
            exe.display(),
            std::process::id()
        );
        notify::reloading();
        let e = upgrade::exec(&exe, &self.handover(sup));
        let _ = blocked.restore();
        log::error!("binary upgrade failed: {}; still serving", chain(&e));
        self.announce_ready();
        Vec::new()
    }

    /// An upgrade keeps the running workers' address, store and user: as
    /// a reload, it refuses a configuration that changes what needs a restart.
    fn upgrade_keeps_settings(&self) -> Result<(), upgrade::UpgradeError> {
        self.fresh_config()
            .map(drop)
            .map_err(upgrade::UpgradeError::Refused)
    }

    /// The configuration read again for a reload or an upgrade, refused
    /// (with the reason, causes included) when it is invalid or changes a
    /// setting that needs a restart.
    fn fresh_config(&self) -> Result<Config, String> {
        let fresh =
            Config::load(self.cli.clone()).map_err(|e| format!("configuration: {}", chain(&e)))?;
        let changed = self.current().settings.fixed_changes(&fresh.settings);
        if !changed.is_empty() {
            return Err(format!(
                "{} cannot change without a restart",
                changed.join(", ")
            ));
        }
        Ok(fresh)
    }

    /// What the new image needs to adopt the workers.
    fn handover(&self, sup: &Sup) -> upgrade::Handover {
        let workers = sup
            .workers()
            .map(|(pid, w)| upgrade::HandedWorker {
                pid,
                slot: w.slot,
                heartbeat: w.process.heartbeat,
                status: w.process.status.as_ref().map(|f| f.as_raw_fd()),
            })
            .collect();
        upgrade::Handover {
            generation: sup.generation(),
            addr: self.reservation.addr,
            metrics_addr: self.metrics_reservation.as_ref().map(|r| r.addr),
            heartbeats: self.heartbeats.fd(),
            metrics: self.metrics.fd(),
            workers,
        }
    }

    /// In the new image of an upgrade: takes the handed-on workers as a
    /// serving generation and starts the next one with this binary.
    fn adopt(&mut self, handover: upgrade::Handover) -> (Sup, Vec<Action>) {
        let generation = handover.generation;
        let mut adopted = Vec::new();
        for w in handover.workers {
            // SAFETY: a descriptor the old image handed on for this worker's
            // status pipe alone (checked to be a pipe); nothing else owns it.
            let status = w
                .status
                .filter(|&fd| upgrade::is_pipe(fd))
                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
            for fd in status.iter() {
                let _ = crate::net::set_close_on_exec(fd.as_raw_fd(), true);
            }
            let process = WorkerProcess {
                heartbeat: w.heartbeat,
                status,
            };
            adopted.push((w.pid, w.slot, process));
        }
        let config = self.current().clone();
        let now = Instant::now();
        let restarts = self.metrics.restarts();
        let mut sup = Supervisor::adopt(adopted, generation, timeouts(&config), restarts, now);
        log::info!(
            "binary upgrade: adopted {} workers of generation {generation}; starting generation {} with the new binary",
            sup.workers().count(),
            generation + 1
        );
        let (workers, timeouts) = (config.process.workers, timeouts(&config));
        self.configs = BTreeMap::from([(generation, config.clone()), (generation + 1, config)]);
        let spawns = sup.handle(Event::Reload { workers, timeouts }, now);
        (sup, spawns)
    }

    /// Drops the settings of generations that have no worker left.
    fn forget_old_configs(&mut self, sup: &Sup) {
        let live = sup.live_generations();
        let current = sup.generation();
        self.configs
            .retain(|g, _| *g >= current || live.contains(g));
    }

    /// Forks a worker for `slot` of `generation`. Signals stay blocked
    /// across fork so the child never runs the master's handlers.
    fn spawn(
        &mut self,
        slot: usize,
        generation: Generation,
        sup: &Sup,
        signals: &PipeSignals,
    ) -> io::Result<(Pid, WorkerProcess)> {
        let (hb_index, beat) = self
            .heartbeats
            .allocate()
            .ok_or_else(|| io::Error::other("too many workers"))?;
        // The worker's metrics slot is its heartbeat slot.
        self.metrics.slot_taken(hb_index);
        let (status_read, status_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let blocked = signals::block(&SigSet::all())?;
        let master_pid = nix::unistd::getpid();
        // SAFETY: the master is single-threaded (no runtime, no store, no
        // helper thread), so the child inherits no lock held by another thread.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(status_read);
                let mut inherited = signals.fds();
                inherited.push(self.reservation.fd());
                inherited.extend(self.metrics_reservation.as_ref().map(|r| r.fd()));
                inherited.extend(
                    sup.workers()
                        .filter_map(|(_, w)| w.process.status.as_ref().map(|f| f.as_raw_fd())),
                );
                inherited.extend([self.heartbeats.fd(), self.metrics.fd()]);
                inherited.extend(self.bridge.as_ref().map(bridge::Bridge::fd));
                become_worker(
                    master_pid,
                    &format!("worker {slot} gen {generation}"),
                    &inherited,
                );
                title::set(&format!("orders-server: worker {slot} [gen {generation}]"));
                crate::metrics::use_slot(hb_index);
                let config = self.config(generation);
                (self.worker_main)(worker::Spec {
                    config,
                    addr: self.reservation.addr,
                    metrics_addr: self.metrics_reservation.as_ref().map(|r| r.addr),
                    status: status_write,
                    beat,
                })
            }
            Ok(ForkResult::Parent { child }) => {
                blocked.restore()?;
                let process = WorkerProcess {
                    heartbeat: hb_index,
                    status: Some(status_read),
                };
                Ok((child.as_raw(), process))
            }
            Err(e) => {
                blocked.restore()?;
                self.heartbeats.release(hb_index);
                Err(e.into())
            }
        }
    }
}

fn signal_workers(sup: &Sup, sig: NixSignal) {
    for (pid, _) in sup.workers() {
        let _ = signal::kill(NixPid::from_raw(pid), sig);
    }
}

/// Waits up to `timeout` for the signal pipe and the workers' status
/// pipes: whether signals are pending, and the workers whose pipe is
/// readable (or closed).
fn poll(sup: &Sup, signals: &PipeSignals, timeout: Duration) -> (bool, Vec<Pid>) {
    let workers: Vec<(Pid, &OwnedFd)> = sup
        .workers()
        .filter_map(|(pid, w)| w.process.status.as_ref().map(|fd| (pid, fd)))
        .collect();
    let mut fds: Vec<PollFd<'_>> = std::iter::once(signals.wake_fd())
        .chain(workers.iter().map(|(_, fd)| fd.as_fd()))
        .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
        .collect();
    let millis = u16::try_from(timeout.as_millis().max(1)).unwrap_or(u16::MAX);
    let _ = nix::poll::poll(&mut fds, PollTimeout::from(millis));
    let readable = |p: &PollFd<'_>| p.revents().is_some_and(|r| !r.is_empty());
    let ready = readable(&fds[0]);
    let watched = workers
        .iter()
        .zip(&fds[1..])
        .filter(|(_, p)| readable(p))
        .map(|((pid, _), _)| *pid)
        .collect();
    (ready, watched)
}

/// Reads a worker's status pipe: `R` serves, `Q` asks to be replaced; EOF
/// means it exited (reaped separately).
fn read_status(sup: &mut Sup, pid: Pid) -> Vec<Event> {
    let Some(w) = sup.worker_mut(pid) else {
        return Vec::new();
    };
    let Some(fd) = w.process.status.as_ref() else {
        return Vec::new();
    };
    let mut buf = [0u8; 8];
    match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
        Ok(0) | Err(_) => {
            w.process.status = None;
            Vec::new()
        }
        Ok(n) => buf[..n]
            .iter()
            .filter_map(|b| match Report::from_byte(*b)? {
                Report::Ready => Some(Event::WorkerReady(pid)),
                Report::Retire => Some(Event::WorkerRetiring(pid)),
            })
            .collect(),
    }
}

fn warn_about_cli_password(config: &Config) {
    if let Backend::Mongo(target) = &config.store.backend {
        if config.mongo_uri_source == Some(UriSource::CommandLine)
            && crate::config::uri_has_password(&target.uri)
        {
            log::warn!(
                "--mongo-uri carries a password, visible to every local user in the process list; \
                 put it in ORDERS_MONGO_URI in an env file readable only by the service user"
            );
        }
    }
}

/// Raises the soft open-file limit (to `want`, or the hard limit).
fn raise_nofile(want: Option<u64>) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let target = want.unwrap_or(hard);
    if target > hard {
        log::warn!("rlimit_nofile {target} is above the hard limit {hard}; using {hard}");
    }
    let target = target.min(hard);
    if target != soft {
        match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
            Ok(()) => log::info!("open-file limit: {target} (hard limit {hard})"),
            Err(e) => log::warn!("cannot set the open-file limit to {target}: {e}"),
        }
    }
}

/// Creates the data directory if needed, gives it to the serving user, and
/// checks that it is writable.
fn prepare_data_dir(
    dir: &Path,
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
) -> Result<(), MasterError> {
    let fail = |e| MasterError::DataDir(dir.to_path_buf(), e);
    std::fs::create_dir_all(dir).map_err(fail)?;
    if let Some((uid, gid)) = owner {
        for entry in std::iter::once(dir.to_path_buf()).chain(
            std::fs::read_dir(dir)
                .map_err(fail)?
                .flatten()
                .map(|e| e.path()),
        ) {
            nix::unistd::chown(&entry, Some(uid), Some(gid)).map_err(|e| fail(e.into()))?;
        }
    }
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)
}

fn write_pid_file(path: &Path) -> Result<(), MasterError> {
    std::fs::write(path, format!("{}\n", std::process::id()))
        .map_err(|e| MasterError::PidFile(path.to_path_buf(), e))
}

/// Removes the pid file if it still names this process (another server
/// may have written it since).
fn remove_pid_file(path: &Path) {
    let ours =
        std::fs::read_to_string(path).is_ok_and(|s| s.trim() == std::process::id().to_string());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

/// In a freshly forked child: drop the master's signal handling and
/// descriptors, die with the master, and block the signals the worker waits
/// for (threads started later inherit the mask).
fn become_worker(master_pid: NixPid, role: &str, inherited: &[RawFd]) {
    for row in SIGNALS {
        if let Ok(sig) = NixSignal::try_from(row.number) {
            // SAFETY: restoring the default disposition is always sound.
            let _ = unsafe { signal::signal(sig, SigHandler::SigDfl) };
        }
    }
    for &fd in inherited {
        // The master's descriptors: the child has copies it never uses.
        let _ = nix::unistd::close(fd);
    }
    let _ = nix::sys::prctl::set_pdeathsig(NixSignal::SIGTERM);
    if nix::unistd::getppid() != master_pid {
        std::process::exit(0); // the master died before prctl took effect
    }
    let _ = crate::lifecycle::signals::worker_set().thread_set_mask();
    crate::logging::set_role(&format!("{role} pid {}", std::process::id()));
}

/// The supervisor's deadlines from a generation's settings.
fn timeouts(config: &Config) -> Timeouts {
    Timeouts {
        graceful: config.process.graceful_timeout,
        boot: config.process.boot_timeout,
    }
}

/// Reaps every exited child without blocking, logging how each ended:
/// each pid, and whether it ended on damage to the store (the store-fault
/// status, or SIGBUS or SIGSEGV: LMDB reading a damaged page).
fn reap_children() -> Vec<(Pid, bool)> {
    let mut exited = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                let level = if code == 0 {
                    log::Level::Info
                } else {
                    log::Level::Warn
                };
                log::log!(level, "process {pid} exited with status {code}");
                exited.push((pid.as_raw(), code == crate::exit::STORE_FAULT));
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                log::warn!("process {pid} killed by {sig}");
                let fault = matches!(sig, NixSignal::SIGBUS | NixSignal::SIGSEGV);
                exited.push((pid.as_raw(), fault));
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return exited,
            Ok(_) => {}
        }
    }
}
