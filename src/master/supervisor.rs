//! The master's lifecycle as data: a pure state machine from [`Event`]s to
//! [`Action`]s. It forks nothing and sends no signal itself, so every
//! transition is visible here and tested without processes.
//!
//! Each worker is one record ([`Worker`]): its slot, generation,
//! [`WorkerState`] and whatever the master keeps of its process (`P`: the
//! heartbeat slot and status pipe; `()` in tests). The counts the metrics
//! show (workers by state, restarts by cause) are read from these records
//! and the transitions ([`Supervisor::census`]).
//!
//! Workers belong to a generation. A reload starts generation g+1 beside g
//! and retires g only once every new worker serves; if a new worker dies
//! before serving, the reload is abandoned and g keeps serving. A worker
//! that asks to retire (max_requests) gets its replacement first, and is
//! stopped once the replacement serves: capacity never drops to zero.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::lifecycle::signals::Signal;
use crate::metrics::{RestartCause, ShownState, RESTART_CAUSES, WORKER_STATES};

/// Consecutive workers that may die before serving before the master gives up.
pub const MAX_BOOT_FAILURES: u32 = 5;
/// First respawn delay after a boot failure; doubles each time.
pub const BOOT_BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest respawn delay.
pub const BOOT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a fast stop waits before killing workers outright.
pub const FAST_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Workers that may end on damage to the store (`Event::WorkerFaulted`)
/// within [`FAULT_WINDOW`] before the master gives up: replacements that
/// serve from a damaged file would only meet the damage again.
pub const MAX_FAULTS: usize = 5;
/// See [`MAX_FAULTS`].
pub const FAULT_WINDOW: Duration = Duration::from_secs(60);

/// A worker process id.
pub type Pid = i32;
/// A worker generation (1 at start, +1 per reload).
pub type Generation = u64;

/// What the master loop observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A signal the supervisor acts on (stop, scale).
    Signal(Signal),
    /// A validated reload: start a new generation of this many workers,
    /// with these deadlines from then on.
    Reload { workers: usize, timeouts: Timeouts },
    /// A worker reported that it serves.
    WorkerReady(Pid),
    /// A worker asked to be replaced (it reached max_requests).
    WorkerRetiring(Pid),
    /// A worker's heartbeat went stale (hung).
    WorkerStale(Pid),
    /// A worker ended on damage to the store (it exited with the store-fault
    /// status, or was killed by SIGBUS or SIGSEGV); its exit follows.
    WorkerFaulted(Pid),
    /// A worker exited (how is logged where it is reaped).
    WorkerExited { pid: Pid },
    /// Time passed (timers: backoff, stop deadline).
    Tick,
}

/// The supervisor's deadlines, from the settings of the current generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a graceful stop may take (`graceful_timeout`).
    pub graceful: Duration,
    /// How long a new worker may take to report ready (`boot_timeout`).
    pub boot: Duration,
}

/// How to stop a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// SIGTERM: finish in-flight requests, then exit.
    Graceful,
    /// SIGQUIT: exit now.
    Fast,
    /// SIGKILL.
    Kill,
}

/// What the master loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fork a worker for this slot of this generation.
    Spawn { slot: usize, generation: Generation },
    /// Stop a worker.
    Stop { pid: Pid, how: StopKind },
    /// All workers serve for the first time: log `listening on ADDR`.
    AnnounceListening,
    /// Every worker of the new generation serves; the old one is retiring.
    ReloadDone { generation: Generation },
    /// A new worker died before serving: the new generation is stopped and
    /// the old one keeps serving.
    ReloadFailed { generation: Generation },
    /// Exit the master.
    Exit(Outcome),
    /// A signal was refused (logged, so an operator knows).
    Ignored { signal: Signal, why: &'static str },
    /// A worker did not report ready within `boot_timeout`: kill it (its
    /// exit then counts as a boot failure).
    BootTimedOut { pid: Pid },
}

/// How the master ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped by a signal, every worker gone.
    Stopped,
    /// Workers failed to start this many times in a row.
    GaveUp { failures: u32 },
    /// Workers ended on damage to the store this many times within
    /// [`FAULT_WINDOW`].
    Faulted { faults: usize },
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Not serving yet; `timed_out` once it was killed for not serving
    /// within `boot_timeout`.
    Booting { timed_out: bool },
    /// Serves.
    Serving,
    /// Serves until its replacement does (it reached max_requests).
    Retiring,
    /// Told to stop (`how`): its exit is expected. `served`: it had served
    /// (its heartbeat is watched until it is killed). `refill`: its slot is
    /// filled again when it exits (a hung worker killed), rather than left
    /// to a new generation, a replacement or a smaller target.
    Stopping {
        how: StopKind,
        served: bool,
        refill: bool,
    },
}

/// One worker: what the supervisor decides with, and the master's `process`.
#[derive(Debug)]
pub struct Worker<P> {
    /// Its slot (0..workers) in its generation.
    pub slot: usize,
    /// The generation it was started for.
    pub generation: Generation,
    /// When it was forked (or adopted).
    pub started: Instant,
    /// Where it is in its life.
    pub state: WorkerState,
    /// What the master keeps of its process.
    pub process: P,
}

impl<P> Worker<P> {
    fn serves(&self) -> bool {
        matches!(self.state, WorkerState::Serving | WorkerState::Retiring)
    }

    fn booting(&self) -> bool {
        matches!(self.state, WorkerState::Booting { .. })
    }

    /// Whether it must report ready by `started` + `boot_timeout` or be
    /// killed: it never served and was not killed yet (a worker asked to
    /// stop while booting reads no signal until it serves).
    fn boot_watched(&self) -> bool {
        match self.state {
            WorkerState::Booting { timed_out } => !timed_out,
            WorkerState::Stopping { how, served, .. } => !served && how != StopKind::Kill,
            WorkerState::Serving | WorkerState::Retiring => false,
        }
    }

    /// Whether its heartbeat is watched: it served, and was not killed.
    fn watched(&self) -> bool {
        match self.state {
            WorkerState::Serving | WorkerState::Retiring => true,
            WorkerState::Stopping { how, served, .. } => served && how != StopKind::Kill,
            WorkerState::Booting { .. } => false,
        }
    }
}

/// What the metrics show of the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    /// Workers by state (WORKER_STATES: booting, serving, retiring).
    pub by_state: [u64; WORKER_STATES.len()],
    /// Workers replaced so far, by cause (RESTART_CAUSES).
    pub restarts: [u64; RESTART_CAUSES.len()],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// A new generation is starting beside `from`, which had `target`
    /// workers.
    Reloading {
        from: Generation,
        target: usize,
    },
    /// Stopping every worker; kill what remains at the deadline.
    Stopping {
        deadline: Instant,
        outcome: Outcome,
    },
}

/// The master's state.
#[derive(Debug)]
pub struct Supervisor<P = ()> {
    target: usize,
    generation: Generation,
    workers: BTreeMap<Pid, Worker<P>>,
    /// Slots waiting to be respawned, with the time they are due.
    pending: Vec<(usize, Instant)>,
    boot_failures: u32,
    announced: bool,
    phase: Phase,
    timeouts: Timeouts,
    /// Workers replaced so far, by cause.
    restarts: [u64; RESTART_CAUSES.len()],
    /// When workers last ended on damage to the store (within the window).
    faults: VecDeque<Instant>,
}

impl<P> Supervisor<P> {
    /// A supervisor for `workers` workers; returns the initial spawns.
    pub fn new(workers: usize, timeouts: Timeouts) -> (Supervisor<P>, Vec<Action>) {
        let s = Supervisor {
            target: workers,
            generation: 1,
            workers: BTreeMap::new(),
            pending: Vec::new(),
            boot_failures: 0,
            announced: false,
            phase: Phase::Running,
            timeouts,
            restarts: [0; RESTART_CAUSES.len()],
            faults: VecDeque::new(),
        };
        let spawns = s.spawn_all();
        (s, spawns)
    }

    /// A supervisor that takes over serving workers of `generation` (a
    /// binary upgrade: the new image adopts the workers the old one forked,
    /// given as `(pid, slot, process)`), already announced, its restart
    /// counts going on from `restarts`. A reload then replaces them with
    /// workers of the new binary.
    pub fn adopt(
        workers: Vec<(Pid, usize, P)>,
        generation: Generation,
        timeouts: Timeouts,
        restarts: [u64; RESTART_CAUSES.len()],
        now: Instant,
    ) -> Supervisor<P> {
        let target = workers.len().max(1);
        let adopted = workers.into_iter().map(|(pid, slot, process)| {
            let state = WorkerState::Serving;
            (
                pid,
                Worker {
                    slot,
                    generation,
                    started: now,
                    state,
                    process,
                },
            )
        });
        Supervisor {
            target,
            generation,
            workers: adopted.collect(),
            pending: Vec::new(),
            boot_failures: 0,
            announced: true,
            phase: Phase::Running,
            timeouts,
            restarts,
            faults: VecDeque::new(),
        }
    }

    /// Records a forked worker.
    pub fn spawned(
        &mut self,
        slot: usize,
        generation: Generation,
        pid: Pid,
        process: P,
        now: Instant,
    ) {
        let worker = Worker {
            slot,
            generation,
            started: now,
            state: WorkerState::Booting { timed_out: false },
            process,
        };
        self.workers.insert(pid, worker);
    }

    /// Records a fork that failed: counted like a worker dying at boot.
    pub fn spawn_failed(
        &mut self,
        slot: usize,
        generation: Generation,
        now: Instant,
    ) -> Vec<Action> {
        if let Phase::Reloading { from, target } = self.phase {
            if generation == self.generation {
                return self.abandon_reload(from, target);
            }
        }
        self.boot_failed(slot, now)
    }

    /// The current generation.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Every worker, by pid.
    pub fn workers(&self) -> impl Iterator<Item = (Pid, &Worker<P>)> + '_ {
        self.workers.iter().map(|(&p, w)| (p, w))
    }

    /// One worker's record.
    pub fn worker_mut(&mut self, pid: Pid) -> Option<&mut Worker<P>> {
        self.workers.get_mut(&pid)
    }

    /// One worker's record.
    pub fn worker(&self, pid: Pid) -> Option<&Worker<P>> {
        self.workers.get(&pid)
    }

    /// Workers whose heartbeat is watched: they served and were not killed.
    pub fn watched(&self) -> impl Iterator<Item = (Pid, &Worker<P>)> + '_ {
        self.workers().filter(|(_, w)| w.watched())
    }

    /// Generations that still have live workers.
    pub fn live_generations(&self) -> BTreeSet<Generation> {
        self.workers.values().map(|w| w.generation).collect()
    }

    /// What the metrics show: workers by state and restarts by cause.
    pub fn census(&self) -> Census {
        let mut by_state = [0; WORKER_STATES.len()];
        for w in self.workers.values() {
            let shown = match w.state {
                WorkerState::Booting { .. } => ShownState::Booting,
                WorkerState::Serving | WorkerState::Retiring => ShownState::Serving,
                WorkerState::Stopping { .. } => ShownState::Retiring,
            };
            by_state[shown as usize] += 1;
        }
        Census {
            by_state,
            restarts: self.restarts,
        }
    }

    /// Whether every worker serves and none is starting, retiring or due
    /// to be respawned, with no reload or stop under way: the state a binary
    /// upgrade can hand on as one serving generation.
    pub fn is_settled(&self) -> bool {
        self.phase == Phase::Running
            && self.pending.is_empty()
            && self
                .workers
                .values()
                .all(|w| w.state == WorkerState::Serving && w.generation == self.generation)
    }

    /// Whether a reload may start now.
    pub fn can_reload(&self) -> bool {
        self.phase == Phase::Running
    }

    /// The next instant a timer fires, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let respawn = self.pending.iter().map(|(_, due)| *due).min();
        let stop = match self.phase {
            Phase::Stopping { deadline, .. } => Some(deadline),
            _ => None,
        };
        let boot = self
            .workers
            .values()
            .filter(|w| w.boot_watched())
            .map(|w| w.started + self.timeouts.boot);
        respawn.into_iter().chain(stop).chain(boot).min()
    }

    /// Handles one event.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        match event {
            Event::Signal(signal) => self.on_signal(signal, now),
            Event::Reload { workers, timeouts } => self.on_reload(workers, timeouts),
            Event::WorkerReady(pid) => self.on_ready(pid),
            Event::WorkerRetiring(pid) => self.on_retiring(pid),
            Event::WorkerStale(pid) => self.on_stale(pid),
            Event::WorkerFaulted(_) => self.on_fault(now),
            Event::WorkerExited { pid } => self.on_exit(pid, now),
            Event::Tick => self.on_tick(now),
        }
    }

    fn on_signal(&mut self, signal: Signal, now: Instant) -> Vec<Action> {
        match signal {
            Signal::GracefulStop => self.stop(
                StopKind::Graceful,
                now + self.timeouts.graceful,
                Outcome::Stopped,
            ),
            Signal::FastStop => {
                self.stop(StopKind::Fast, now + FAST_STOP_TIMEOUT, Outcome::Stopped)
            }
            Signal::ScaleUp if self.phase == Phase::Running => {
                self.target += 1;
                vec![Action::Spawn {
                    slot: self.target - 1,
                    generation: self.generation,
                }]
            }
            Signal::ScaleDown if self.phase == Phase::Running && self.target > 1 => {
                self.target -= 1;
                let slot = self.target;
                self.pending.retain(|(s, _)| *s != slot);
                let pids: Vec<Pid> = self
                    .current()
                    .filter(|(_, w)| w.slot == slot)
                    .map(|(p, _)| p)
                    .collect();
                pids.into_iter()
                    .map(|pid| self.stop_one(pid, StopKind::Graceful, false))
                    .collect()
            }
            Signal::ScaleDown if self.phase == Phase::Running => {
                vec![Action::Ignored {
                    signal,
                    why: "already at one worker",
                }]
            }
            Signal::ScaleUp | Signal::ScaleDown => {
                vec![Action::Ignored {
                    signal,
                    why: "a reload, upgrade or stop is in progress",
                }]
            }
            _ => Vec::new(),
        }
    }

    fn on_reload(&mut self, workers: usize, timeouts: Timeouts) -> Vec<Action> {
        if self.phase != Phase::Running {
            return Vec::new();
        }
        self.phase = Phase::Reloading {
            from: self.generation,
            target: self.target,
        };
        self.generation += 1;
        self.target = workers;
        self.timeouts = timeouts;
        self.pending.clear();
        self.spawn_all()
    }

    fn on_ready(&mut self, pid: Pid) -> Vec<Action> {
        let Some(worker) = self.workers.get_mut(&pid) else {
            return Vec::new();
        };
        match &mut worker.state {
            WorkerState::Booting { .. } => worker.state = WorkerState::Serving,
            // Asked to stop while booting: it reads that signal now.
            WorkerState::Stopping { served, .. } => *served = true,
            WorkerState::Serving | WorkerState::Retiring => {}
        }
        let (slot, generation) = (worker.slot, worker.generation);
        self.boot_failures = 0;
        let mut actions = Vec::new();
        // A replacement serves: stop the worker it replaces.
        let replaced: Vec<Pid> = self
            .workers
            .iter()
            .filter(|(&p, w)| {
                p != pid
                    && w.state == WorkerState::Retiring
                    && w.slot == slot
                    && w.generation == generation
            })
            .map(|(&p, _)| p)
            .collect();
        for p in replaced {
            actions.push(self.stop_one(p, StopKind::Graceful, false));
        }

        let current_ready = self.current().filter(|(_, w)| w.serves()).count();
        if let Phase::Reloading { .. } = self.phase {
            if generation == self.generation && current_ready >= self.target {
                self.phase = Phase::Running;
                actions.extend(self.retire_generations_before(generation));
                actions.push(Action::ReloadDone { generation });
            }
        }
        if !self.announced && self.phase == Phase::Running && current_ready >= self.target {
            self.announced = true;
            actions.push(Action::AnnounceListening);
        }
        actions
    }

    /// A reload is done: every worker of an older generation stops; those
    /// not already replaced for another cause count as replaced by it.
    fn retire_generations_before(&mut self, generation: Generation) -> Vec<Action> {
        let old: Vec<(Pid, WorkerState)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.generation < generation)
            .map(|(&p, w)| (p, w.state))
            .collect();
        let mut actions = Vec::new();
        for (pid, state) in old {
            if matches!(
                state,
                WorkerState::Serving | WorkerState::Booting { timed_out: false }
            ) {
                self.count(RestartCause::Reload);
            }
            if let WorkerState::Stopping { .. } = state {
                continue; // asked already (scaled down, or killed)
            }
            actions.push(self.stop_one(pid, StopKind::Graceful, false));
        }
        actions
    }

    fn on_retiring(&mut self, pid: Pid) -> Vec<Action> {
        if self.phase != Phase::Running {
            return Vec::new();
        }
        let (generation, target) = (self.generation, self.target);
        let Some(worker) = self.workers.get_mut(&pid) else {
            return Vec::new();
        };
        if worker.state != WorkerState::Serving
            || worker.generation != generation
            || worker.slot >= target
        {
            return Vec::new();
        }
        worker.state = WorkerState::Retiring;
        let spawn = Action::Spawn {
            slot: worker.slot,
            generation: worker.generation,
        };
        self.count(RestartCause::MaxRequests);
        vec![spawn]
    }

    fn on_stale(&mut self, pid: Pid) -> Vec<Action> {
        let Some(worker) = self.workers.get(&pid).filter(|w| w.watched()) else {
            return Vec::new();
        };
        // A worker already replaced for another cause is not counted twice.
        let (serving, refill) = match worker.state {
            WorkerState::Serving => (true, true),
            _ => (false, false),
        };
        if serving {
            self.count(RestartCause::Timeout);
        }
        vec![self.stop_one(pid, StopKind::Kill, refill)]
    }

    /// A worker ended on store damage: too many within the window, and the
    /// master gives up (the damage is in the file every replacement opens).
    fn on_fault(&mut self, now: Instant) -> Vec<Action> {
        self.faults.push_back(now);
        while self
            .faults
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > FAULT_WINDOW)
        {
            self.faults.pop_front();
        }
        let faults = self.faults.len();
        match self.phase {
            Phase::Stopping { .. } => Vec::new(),
            _ if faults >= MAX_FAULTS => self.stop(
                StopKind::Graceful,
                now + self.timeouts.graceful,
                Outcome::Faulted { faults },
            ),
            _ => Vec::new(),
        }
    }

    /// Asks one worker to stop (`refill`: its slot is filled again when it
    /// exits, with no boot failure counted).
    fn stop_one(&mut self, pid: Pid, how: StopKind, refill: bool) -> Action {
        if let Some(w) = self.workers.get_mut(&pid) {
            let served =
                w.serves() || matches!(w.state, WorkerState::Stopping { served: true, .. });
            let refill = refill || matches!(w.state, WorkerState::Stopping { refill: true, .. });
            w.state = WorkerState::Stopping {
                how,
                served,
                refill,
            };
        }
        Action::Stop { pid, how }
    }

    fn on_exit(&mut self, pid: Pid, now: Instant) -> Vec<Action> {
        let Some(worker) = self.workers.remove(&pid) else {
            return Vec::new();
        };
        let unexpected = match worker.state {
            WorkerState::Serving => true,
            WorkerState::Booting { timed_out, .. } => !timed_out,
            WorkerState::Retiring | WorkerState::Stopping { .. } => false,
        };
        if unexpected {
            self.count(RestartCause::Crash);
        }
        match self.phase {
            Phase::Stopping { outcome, .. } => return self.exit_if_done(outcome),
            Phase::Reloading { from, target }
                if worker.generation == self.generation && worker.booting() =>
            {
                return self.abandon_reload(from, target);
            }
            _ => {}
        }
        if worker.generation != self.generation || worker.slot >= self.target {
            return Vec::new();
        }
        match worker.state {
            WorkerState::Booting { .. } => self.boot_failed(worker.slot, now),
            WorkerState::Serving | WorkerState::Stopping { refill: true, .. } => {
                vec![Action::Spawn {
                    slot: worker.slot,
                    generation: worker.generation,
                }]
            }
            WorkerState::Retiring | WorkerState::Stopping { refill: false, .. } => Vec::new(),
        }
    }

    /// A new worker died before serving: stop the new generation, go back
    /// to the old one with its `target` workers, and start again those of
    /// its slots that emptied meanwhile (a crash during the reload, a
    /// respawn the reload cancelled).
    fn abandon_reload(&mut self, from: Generation, target: usize) -> Vec<Action> {
        let failed = self.generation;
        let new: Vec<Pid> = self
            .workers
            .iter()
            .filter(|(_, w)| w.generation == failed)
            .map(|(&p, _)| p)
            .collect();
        self.generation = from;
        self.target = target;
        self.phase = Phase::Running;
        let mut actions: Vec<Action> = new
            .into_iter()
            .map(|pid| self.stop_one(pid, StopKind::Fast, false))
            .collect();
        let held: BTreeSet<usize> = self.current().map(|(_, w)| w.slot).collect();
        actions.extend(
            (0..target)
                .filter(|slot| !held.contains(slot))
                .map(|slot| Action::Spawn {
                    slot,
                    generation: from,
                }),
        );
        actions.push(Action::ReloadFailed { generation: failed });
        actions
    }

    fn boot_failed(&mut self, slot: usize, now: Instant) -> Vec<Action> {
        self.boot_failures += 1;
        if self.boot_failures >= MAX_BOOT_FAILURES {
            let outcome = Outcome::GaveUp {
                failures: self.boot_failures,
            };
            return self.stop(StopKind::Graceful, now + self.timeouts.graceful, outcome);
        }
        let factor = 1u32 << (self.boot_failures - 1).min(16);
        let delay = BOOT_BACKOFF_BASE
            .saturating_mul(factor)
            .min(BOOT_BACKOFF_MAX);
        self.pending.push((slot, now + delay));
        Vec::new()
    }

    fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        match self.phase {
            Phase::Running | Phase::Reloading { .. } => {
                let (due, later): (Vec<_>, Vec<_>) =
                    self.pending.drain(..).partition(|(_, at)| *at <= now);
                self.pending = later;
                let generation = self.generation;
                let mut actions: Vec<Action> = due
                    .into_iter()
                    .map(|(slot, _)| Action::Spawn { slot, generation })
                    .collect();
                actions.extend(self.boot_timeouts(now));
                actions
            }
            Phase::Stopping { deadline, .. } if now >= deadline => self
                .workers
                .keys()
                .map(|&pid| Action::Stop {
                    pid,
                    how: StopKind::Kill,
                })
                .collect(),
            // A worker still booting reads no stop signal: its boot
            // deadline holds while the master stops, as `next_deadline`
            // says (else the master would wake for it again and again).
            Phase::Stopping { .. } => self.boot_timeouts(now),
        }
    }

    /// Workers that did not serve within `boot_timeout`: killed, once each.
    fn boot_timeouts(&mut self, now: Instant) -> Vec<Action> {
        let boot = self.timeouts.boot;
        let late: Vec<Pid> = self
            .workers
            .iter()
            .filter(|(_, w)| w.boot_watched() && now.saturating_duration_since(w.started) >= boot)
            .map(|(&p, _)| p)
            .collect();
        for &pid in &late {
            let Some(w) = self.workers.get_mut(&pid) else {
                continue;
            };
            w.state = match w.state {
                WorkerState::Stopping { served, refill, .. } => WorkerState::Stopping {
                    how: StopKind::Kill,
                    served,
                    refill,
                },
                _ => WorkerState::Booting { timed_out: true },
            };
            self.count(RestartCause::Timeout);
        }
        late.into_iter()
            .map(|pid| Action::BootTimedOut { pid })
            .collect()
    }

    fn stop(&mut self, how: StopKind, deadline: Instant, outcome: Outcome) -> Vec<Action> {
        let (deadline, outcome) = match self.phase {
            // A second stop signal can only hurry the first.
            Phase::Stopping {
                deadline: old,
                outcome,
            } => (old.min(deadline), outcome),
            _ => (deadline, outcome),
        };
        self.phase = Phase::Stopping { deadline, outcome };
        self.pending.clear();
        let pids: Vec<Pid> = self.workers.keys().copied().collect();
        let mut actions: Vec<Action> = pids
            .into_iter()
            .map(|pid| self.stop_one(pid, how, false))
            .collect();
        actions.extend(self.exit_if_done(outcome));
        actions
    }

    fn exit_if_done(&mut self, outcome: Outcome) -> Vec<Action> {
        if self.workers.is_empty() {
            return vec![Action::Exit(outcome)];
        }
        Vec::new()
    }

    fn spawn_all(&self) -> Vec<Action> {
        (0..self.target)
            .map(|slot| Action::Spawn {
                slot,
                generation: self.generation,
            })
            .collect()
    }

    fn count(&mut self, cause: RestartCause) {
        self.restarts[cause as usize] += 1;
    }

    /// Workers of the current generation that hold their slot: not being
    /// replaced, nor stopped for good.
    fn current(&self) -> impl Iterator<Item = (Pid, &Worker<P>)> + '_ {
        self.workers
            .iter()
            .filter(move |(_, w)| {
                w.generation == self.generation
                    && match w.state {
                        WorkerState::Booting { .. } | WorkerState::Serving => true,
                        WorkerState::Stopping { refill, .. } => refill,
                        WorkerState::Retiring => false,
                    }
            })
            .map(|(&p, w)| (p, w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        graceful: Duration::from_secs(30),
        boot: Duration::from_secs(30),
    };

    #[test]
    fn a_worker_not_ready_within_boot_timeout_is_killed_once_and_counts_as_a_boot_failure() {
        let (mut s, now) = start(1);
        assert!(s
            .handle(Event::Tick, now + Duration::from_secs(29))
            .is_empty());
        let late = now + TIMEOUTS.boot;
        assert_eq!(
            s.handle(Event::Tick, late),
            vec![Action::BootTimedOut { pid: 100 }]
        );
        assert!(
            s.handle(Event::Tick, late + Duration::from_secs(1))
                .is_empty(),
            "killed once"
        );
        assert!(
            s.handle(Event::WorkerExited { pid: 100 }, late).is_empty(),
            "respawned after a backoff"
        );
        assert_eq!(s.boot_failures, 1);
    }

    fn live(s: &Supervisor) -> usize {
        s.workers().count()
    }

    fn serving_pids(s: &Supervisor) -> Vec<Pid> {
        s.workers()
            .filter(|(_, w)| w.state == WorkerState::Serving)
            .map(|(p, _)| p)
            .collect()
    }

    fn start(n: usize) -> (Supervisor, Instant) {
        let now = Instant::now();
        let (mut s, actions) = Supervisor::new(n, TIMEOUTS);
        assert_eq!(actions.len(), n);
        for slot in 0..n {
            s.spawned(slot, 1, 100 + slot as Pid, (), now);
        }
        (s, now)
    }

    fn serving(n: usize) -> (Supervisor, Instant) {
        let (mut s, now) = start(n);
        for slot in 0..n {
            s.handle(Event::WorkerReady(100 + slot as Pid), now);
        }
        (s, now)
    }

    #[test]
    fn adopted_workers_are_replaced_by_a_reload_like_any_generation() {
        let now = Instant::now();
        let mut s = Supervisor::adopt(vec![(500, 0, ()), (501, 1, ())], 3, TIMEOUTS, [0; 4], now);
        assert_eq!(
            (live(&s), s.generation(), serving_pids(&s)),
            (2, 3, vec![500, 501])
        );
        assert!(s.can_reload());
        let spawns = s.handle(
            Event::Reload {
                workers: 2,
                timeouts: TIMEOUTS,
            },
            now,
        );
        assert_eq!(
            spawns,
            vec![
                Action::Spawn {
                    slot: 0,
                    generation: 4
                },
                Action::Spawn {
                    slot: 1,
                    generation: 4
                }
            ]
        );
        s.spawned(0, 4, 600, (), now);
        s.spawned(1, 4, 601, (), now);
        assert!(s.handle(Event::WorkerReady(600), now).is_empty());
        let done = s.handle(Event::WorkerReady(601), now);
        assert_eq!(
            done,
            vec![
                Action::Stop {
                    pid: 500,
                    how: StopKind::Graceful
                },
                Action::Stop {
                    pid: 501,
                    how: StopKind::Graceful
                },
                Action::ReloadDone { generation: 4 }
            ],
            "no second AnnounceListening: the address was announced before the upgrade"
        );
    }

    #[test]
    fn only_a_settled_supervisor_hands_its_workers_to_an_upgrade() {
        let (mut s, now) = serving(2);
        assert!(s.is_settled());
        s.handle(Event::Signal(Signal::ScaleDown), now);
        assert!(!s.is_settled(), "a scaled-down worker is still draining");
        s.handle(Event::WorkerExited { pid: 101 }, now);
        assert!(s.is_settled());
        s.handle(Event::WorkerStale(100), now);
        assert!(!s.is_settled(), "a stale worker is being killed");
        let respawn = s.handle(Event::WorkerExited { pid: 100 }, now);
        assert_eq!(
            respawn,
            vec![Action::Spawn {
                slot: 0,
                generation: 1
            }]
        );
        s.spawned(0, 1, 102, (), now);
        assert!(!s.is_settled(), "its replacement is starting");
        s.handle(Event::WorkerReady(102), now);
        assert!(s.is_settled());
    }

    #[test]
    fn adopted_workers_keep_serving_when_the_new_binary_cannot() {
        let now = Instant::now();
        let mut s = Supervisor::adopt(vec![(500, 0, ())], 3, TIMEOUTS, [0; 4], now);
        s.handle(
            Event::Reload {
                workers: 1,
                timeouts: TIMEOUTS,
            },
            now,
        );
        s.spawned(0, 4, 600, (), now);
        let failed = s.handle(Event::WorkerExited { pid: 600 }, now);
        assert_eq!(failed, vec![Action::ReloadFailed { generation: 4 }]);
        assert_eq!((s.generation(), serving_pids(&s)), (3, vec![500]));
        // The adopted worker is supervised: if it dies, it is replaced.
        assert_eq!(
            s.handle(Event::WorkerExited { pid: 500 }, now),
            vec![Action::Spawn {
                slot: 0,
                generation: 3
            }]
        );
    }

    #[test]
    fn announces_once_all_workers_serve() {
        let (mut s, now) = start(2);
        assert!(s.handle(Event::WorkerReady(100), now).is_empty());
        assert_eq!(
            s.handle(Event::WorkerReady(101), now),
            vec![Action::AnnounceListening]
        );
    }

    #[test]
    fn a_dead_worker_is_replaced() {
        let (mut s, now) = serving(2);
        let a = s.handle(Event::WorkerExited { pid: 101 }, now);
        assert_eq!(
            a,
            vec![Action::Spawn {
                slot: 1,
                generation: 1
            }]
        );
    }

    #[test]
    fn boot_failures_back_off_then_give_up() {
        let (mut s, mut now) = start(1);
        let mut pid = 100;
        for i in 1..MAX_BOOT_FAILURES {
            assert!(s.handle(Event::WorkerExited { pid }, now).is_empty());
            let due = s.next_deadline().expect("a respawn is scheduled");
            assert!(due > now, "failure {i} respawns later");
            assert!(
                s.handle(Event::Tick, now).is_empty(),
                "not before the backoff"
            );
            now = due;
            assert_eq!(
                s.handle(Event::Tick, now),
                vec![Action::Spawn {
                    slot: 0,
                    generation: 1
                }]
            );
            pid += 1;
            s.spawned(0, 1, pid, (), now);
        }
        let a = s.handle(Event::WorkerExited { pid }, now);
        assert_eq!(
            a,
            vec![Action::Exit(Outcome::GaveUp {
                failures: MAX_BOOT_FAILURES
            })]
        );
    }

    #[test]
    fn graceful_stop_waits_for_workers_then_exits_zero() {
        let (mut s, now) = serving(2);
        let a = s.handle(Event::Signal(Signal::GracefulStop), now);
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|x| matches!(
            x,
            Action::Stop {
                how: StopKind::Graceful,
                ..
            }
        )));
        assert!(s.handle(Event::WorkerExited { pid: 100 }, now).is_empty());
        let a = s.handle(Event::WorkerExited { pid: 101 }, now);
        assert_eq!(a, vec![Action::Exit(Outcome::Stopped)]);
    }

    #[test]
    fn stragglers_are_killed_at_the_deadline() {
        let (mut s, now) = serving(1);
        s.handle(Event::Signal(Signal::GracefulStop), now);
        let later = now + Duration::from_secs(31);
        assert_eq!(
            s.handle(Event::Tick, later),
            vec![Action::Stop {
                pid: 100,
                how: StopKind::Kill
            }]
        );
    }

    #[test]
    fn scale_up_and_down() {
        let (mut s, now) = serving(1);
        assert_eq!(
            s.handle(Event::Signal(Signal::ScaleUp), now),
            vec![Action::Spawn {
                slot: 1,
                generation: 1
            }]
        );
        s.spawned(1, 1, 200, (), now);
        let a = s.handle(Event::Signal(Signal::ScaleDown), now);
        assert_eq!(
            a,
            vec![Action::Stop {
                pid: 200,
                how: StopKind::Graceful
            }]
        );
        assert!(s.handle(Event::WorkerExited { pid: 200 }, now).is_empty());
        assert_eq!(
            s.handle(Event::Signal(Signal::ScaleDown), now),
            vec![Action::Ignored {
                signal: Signal::ScaleDown,
                why: "already at one worker"
            }],
            "never below one worker, and said so"
        );
    }

    #[test]
    fn reload_retires_the_old_generation_only_once_the_new_one_serves() {
        let (mut s, now) = serving(2);
        let a = s.handle(
            Event::Reload {
                workers: 3,
                timeouts: Timeouts {
                    graceful: Duration::from_secs(5),
                    ..TIMEOUTS
                },
            },
            now,
        );
        assert_eq!(a.len(), 3);
        assert!(a
            .iter()
            .all(|x| matches!(x, Action::Spawn { generation: 2, .. })));
        for (slot, pid) in [(0, 300), (1, 301), (2, 302)] {
            s.spawned(slot, 2, pid, (), now);
        }
        assert!(s.handle(Event::WorkerReady(300), now).is_empty());
        assert!(
            s.handle(Event::WorkerReady(301), now).is_empty(),
            "old workers serve until all new ones do"
        );
        let a = s.handle(Event::WorkerReady(302), now);
        assert!(a.contains(&Action::Stop {
            pid: 100,
            how: StopKind::Graceful
        }));
        assert!(a.contains(&Action::Stop {
            pid: 101,
            how: StopKind::Graceful
        }));
        assert!(a.contains(&Action::ReloadDone { generation: 2 }));
        assert!(
            s.handle(Event::WorkerExited { pid: 100 }, now).is_empty(),
            "not respawned"
        );
        assert!(s.handle(Event::WorkerExited { pid: 101 }, now).is_empty());
        assert_eq!(live(&s), 3);
        // The reloaded graceful_timeout (5 s) governs the next stop.
        s.handle(Event::Signal(Signal::GracefulStop), now);
        assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(5)));
    }

    /// `serving(n)`, then a reload to two workers (300, 301) of which the
    /// first dies at boot: what the supervisor answers to that death.
    fn failed_reload(n: usize) -> (Supervisor, Instant, Vec<Action>) {
        let (mut s, now) = serving(n);
        s.handle(
            Event::Reload {
                workers: 2,
                timeouts: TIMEOUTS,
            },
            now,
        );
        s.spawned(0, 2, 300, (), now);
        s.spawned(1, 2, 301, (), now);
        let a = s.handle(Event::WorkerExited { pid: 300 }, now);
        (s, now, a)
    }

    #[test]
    fn a_failing_new_generation_leaves_the_old_one_serving() {
        let (mut s, now, a) = failed_reload(2);
        assert!(a.contains(&Action::Stop {
            pid: 301,
            how: StopKind::Fast
        }));
        assert!(a.contains(&Action::ReloadFailed { generation: 2 }));
        assert!(s.handle(Event::WorkerExited { pid: 301 }, now).is_empty());
        assert_eq!(s.generation(), 1);
        // The old generation is supervised as before.
        assert_eq!(
            s.handle(Event::WorkerExited { pid: 100 }, now),
            vec![Action::Spawn {
                slot: 0,
                generation: 1
            }]
        );
    }

    #[test]
    fn a_retiring_worker_is_stopped_once_its_replacement_serves() {
        let (mut s, now) = serving(1);
        assert_eq!(
            s.handle(Event::WorkerRetiring(100), now),
            vec![Action::Spawn {
                slot: 0,
                generation: 1
            }]
        );
        assert!(
            s.handle(Event::WorkerRetiring(100), now).is_empty(),
            "asked once"
        );
        s.spawned(0, 1, 400, (), now);
        assert_eq!(
            s.handle(Event::WorkerReady(400), now),
            vec![Action::Stop {
                pid: 100,
                how: StopKind::Graceful
            }]
        );
        assert!(s.handle(Event::WorkerExited { pid: 100 }, now).is_empty());
        assert_eq!(live(&s), 1);
    }

    #[test]
    fn a_stale_worker_is_killed_and_replaced() {
        let (mut s, now) = serving(1);
        assert_eq!(
            s.handle(Event::WorkerStale(100), now),
            vec![Action::Stop {
                pid: 100,
                how: StopKind::Kill
            }]
        );
        assert_eq!(
            s.handle(Event::WorkerExited { pid: 100 }, now),
            vec![Action::Spawn {
                slot: 0,
                generation: 1
            }]
        );
    }

    /// Workers that keep ending on store damage make the master give up,
    /// whether or not they served first; slower ones do not.
    #[test]
    fn repeated_store_faults_stop_the_master() {
        let (mut s, now) = serving(1);
        let mut at = now;
        for _ in 0..MAX_FAULTS - 1 {
            assert!(s.handle(Event::WorkerFaulted(1), at).is_empty());
            at += FAULT_WINDOW / 4;
        }
        let later = at + FAULT_WINDOW;
        assert!(
            s.handle(Event::WorkerFaulted(1), later).is_empty(),
            "the old ones are out of the window"
        );
        for _ in 1..MAX_FAULTS - 1 {
            assert!(s.handle(Event::WorkerFaulted(1), later).is_empty());
        }
        let stop = s.handle(Event::WorkerFaulted(1), later);
        assert!(
            stop.iter().any(|a| matches!(a, Action::Stop { .. })),
            "{stop:?}"
        );
        assert_eq!(
            s.handle(Event::WorkerExited { pid: 100 }, later),
            vec![Action::Exit(Outcome::Faulted { faults: MAX_FAULTS })]
        );
    }

    /// An abandoned reload restores the old generation's size, refilling
    /// a slot that crashed while the new generation was starting.
    #[test]
    fn an_abandoned_reload_keeps_the_old_size() {
        let (mut s, now) = serving(3);
        s.handle(
            Event::Reload {
                workers: 3,
                timeouts: TIMEOUTS,
            },
            now,
        );
        for slot in 0..3 {
            s.spawned(slot, 2, 300 + slot as Pid, (), now);
        }
        assert!(
            s.handle(Event::WorkerExited { pid: 101 }, now).is_empty(),
            "an old worker dies during the reload: not refilled yet"
        );
        let a = s.handle(Event::WorkerExited { pid: 300 }, now);
        assert!(a.contains(&Action::ReloadFailed { generation: 2 }));
        assert!(
            a.contains(&Action::Spawn {
                slot: 1,
                generation: 1
            }),
            "{a:?}"
        );
        s.spawned(1, 1, 400, (), now);
        assert_eq!(
            s.handle(Event::WorkerExited { pid: 102 }, now),
            vec![Action::Spawn {
                slot: 2,
                generation: 1
            }],
            "slot 2 is still wanted"
        );
    }

    /// The census the metrics show follows each worker's record: booting,
    /// serving, then retiring once asked to stop; a stop is no restart.
    #[test]
    fn states_follow_the_lifecycle() {
        let now = Instant::now();
        let (mut s, _) = Supervisor::<()>::new(2, TIMEOUTS);
        s.spawned(1, 1, 10, (), now);
        s.spawned(0, 1, 11, (), now);
        assert_eq!(s.census().by_state, [2, 0, 0]);
        s.handle(Event::WorkerReady(10), now);
        assert_eq!(s.census().by_state, [1, 1, 0]);
        assert_eq!(
            s.handle(Event::Signal(Signal::ScaleDown), now),
            vec![Action::Stop {
                pid: 10,
                how: StopKind::Graceful
            }]
        );
        assert_eq!(s.census().by_state, [1, 0, 1]);
        s.handle(Event::WorkerExited { pid: 10 }, now);
        assert_eq!(s.census().by_state, [1, 0, 0]);
        assert_eq!(s.census().restarts, [0; 4], "a stop is no restart");
    }

    /// Restarts by cause (crash, timeout, max_requests, reload), each
    /// worker counted once.
    #[test]
    fn each_cause_is_counted_once() {
        let (mut s, now) = serving(6);
        let pid = |slot: Pid| 100 + slot;
        s.handle(Event::WorkerExited { pid: pid(0) }, now); // crash
        s.handle(Event::WorkerStale(pid(1)), now); // timeout, then killed
        s.handle(Event::WorkerExited { pid: pid(1) }, now);
        s.handle(Event::WorkerRetiring(pid(2)), now); // max_requests
        s.handle(Event::WorkerExited { pid: pid(2) }, now);
        // A reload: the new generation serves, the old workers are
        // asked to stop.
        s.handle(
            Event::Reload {
                workers: 1,
                timeouts: TIMEOUTS,
            },
            now,
        );
        s.spawned(0, 2, 7, (), now);
        let done = s.handle(Event::WorkerReady(7), now);
        assert!(done.contains(&Action::ReloadDone { generation: 2 }));
        assert_eq!(s.census().restarts, [1, 1, 1, 3]);
        for slot in 3..=5 {
            s.handle(Event::WorkerExited { pid: pid(slot) }, now);
        }
        assert_eq!(
            s.census().restarts,
            [1, 1, 1, 3],
            "their exits are no crashes"
        );
        s.handle(Event::Signal(Signal::ScaleUp), now);
        s.spawned(1, 2, 8, (), now);
        let late = now + TIMEOUTS.boot;
        assert_eq!(
            s.handle(Event::Tick, late),
            vec![Action::BootTimedOut { pid: 8 }]
        );
        s.handle(Event::WorkerExited { pid: 8 }, late);
        assert_eq!(s.census().restarts[RestartCause::Timeout as usize], 2);
    }

    /// A worker asked to stop while it boots reads no signal until it
    /// serves: it is killed at the boot deadline all the same.
    #[test]
    fn a_worker_stopped_while_booting_is_killed_at_the_boot_deadline() {
        let (mut s, now, failed) = failed_reload(1);
        assert!(failed.contains(&Action::Stop {
            pid: 301,
            how: StopKind::Fast
        }));
        assert_eq!(s.next_deadline(), Some(now + TIMEOUTS.boot));
        assert_eq!(
            s.handle(Event::Tick, now + TIMEOUTS.boot),
            vec![Action::BootTimedOut { pid: 301 }]
        );
        assert_eq!(s.next_deadline(), None, "killed once");
    }

    /// Regression: a worker booting when the master was asked to stop kept
    /// its boot deadline in `next_deadline`, which no tick acted on while
    /// stopping: once past it, the master woke every millisecond until the
    /// graceful deadline.
    #[test]
    fn a_worker_booting_while_the_master_stops_is_killed_at_its_boot_deadline() {
        let (mut s, now) = start(1);
        let asked = now + Duration::from_secs(10);
        s.handle(Event::Signal(Signal::GracefulStop), asked);
        let boot_deadline = now + TIMEOUTS.boot;
        assert_eq!(s.next_deadline(), Some(boot_deadline));
        assert_eq!(
            s.handle(Event::Tick, boot_deadline),
            vec![Action::BootTimedOut { pid: 100 }]
        );
        let stop_deadline = asked + TIMEOUTS.graceful;
        assert_eq!(
            s.next_deadline(),
            Some(stop_deadline),
            "nothing due before the stop deadline"
        );
    }
}
