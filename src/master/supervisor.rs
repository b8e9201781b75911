//! The master's lifecycle as data: a pure state machine from [`Event`]s to
//! [`Action`]s. It forks nothing and sends no signal itself, so every
//! transition is visible here and tested without processes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::signals::Signal;

/// Consecutive workers that may die before serving before the master gives up.
pub const MAX_BOOT_FAILURES: u32 = 5;
/// First respawn delay after a boot failure; doubles each time.
pub const BOOT_BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest respawn delay.
pub const BOOT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a fast stop waits before killing workers outright.
pub const FAST_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// A worker process id.
pub type Pid = i32;

/// What the master loop observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A signal reached the master.
    Signal(Signal),
    /// A worker reported that it serves.
    WorkerReady(Pid),
    /// A worker exited; `clean` when it exited with status 0.
    WorkerExited { pid: Pid, clean: bool },
    /// Time passed (timers: backoff, stop deadline).
    Tick,
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
    /// Fork a worker for this slot.
    Spawn { slot: usize },
    /// Stop a worker.
    Stop { pid: Pid, how: StopKind },
    /// All workers serve for the first time: log `listening on ADDR`.
    AnnounceListening,
    /// Exit the master with this status.
    Exit { code: i32, reason: Option<String> },
}

#[derive(Debug, Clone, Copy)]
struct Worker {
    slot: usize,
    ready: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Stopping every worker; kill what remains at the deadline.
    Stopping { deadline: Instant, code: i32 },
}

/// The master's state.
#[derive(Debug)]
pub struct Supervisor {
    target: usize,
    workers: BTreeMap<Pid, Worker>,
    /// Slots waiting to be respawned, with the time they are due.
    pending: Vec<(usize, Instant)>,
    boot_failures: u32,
    announced: bool,
    phase: Phase,
    graceful_timeout: Duration,
    give_up_reason: Option<String>,
}

impl Supervisor {
    /// A supervisor for `workers` workers; returns the initial spawns.
    pub fn new(workers: usize, graceful_timeout: Duration) -> (Supervisor, Vec<Action>) {
        let s = Supervisor {
            target: workers,
            workers: BTreeMap::new(),
            pending: Vec::new(),
            boot_failures: 0,
            announced: false,
            phase: Phase::Running,
            graceful_timeout,
            give_up_reason: None,
        };
        (s, (0..workers).map(|slot| Action::Spawn { slot }).collect())
    }

    /// Records a forked worker.
    pub fn spawned(&mut self, slot: usize, pid: Pid) {
        self.workers.insert(pid, Worker { slot, ready: false });
    }

    /// Records a fork that failed: counted like a worker dying at boot.
    pub fn spawn_failed(&mut self, slot: usize, now: Instant) -> Vec<Action> {
        self.boot_failed(slot, now)
    }

    /// Number of live workers.
    pub fn live(&self) -> usize {
        self.workers.len()
    }

    /// The next instant a timer fires, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let respawn = self.pending.iter().map(|(_, due)| *due).min();
        let stop = match self.phase {
            Phase::Stopping { deadline, .. } => Some(deadline),
            Phase::Running => None,
        };
        respawn.into_iter().chain(stop).min()
    }

    /// Handles one event.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        match event {
            Event::Signal(signal) => self.on_signal(signal, now),
            Event::WorkerReady(pid) => self.on_ready(pid),
            Event::WorkerExited { pid, clean } => self.on_exit(pid, clean, now),
            Event::Tick => self.on_tick(now),
        }
    }

    fn on_signal(&mut self, signal: Signal, now: Instant) -> Vec<Action> {
        match signal {
            Signal::GracefulStop => self.stop(StopKind::Graceful, now + self.graceful_timeout, 0),
            Signal::FastStop => self.stop(StopKind::Fast, now + FAST_STOP_TIMEOUT, 0),
            Signal::ScaleUp if self.phase == Phase::Running => {
                self.target += 1;
                vec![Action::Spawn { slot: self.target - 1 }]
            }
            Signal::ScaleDown if self.phase == Phase::Running && self.target > 1 => {
                self.target -= 1;
                let slot = self.target;
                self.pending.retain(|(s, _)| *s != slot);
                self.pids_in_slot(slot).map(|pid| Action::Stop { pid, how: StopKind::Graceful }).collect()
            }
            _ => Vec::new(),
        }
    }

    fn on_ready(&mut self, pid: Pid) -> Vec<Action> {
        let Some(worker) = self.workers.get_mut(&pid) else { return Vec::new() };
        worker.ready = true;
        self.boot_failures = 0;
        let all_ready = self.workers.values().filter(|w| w.ready).count() >= self.target;
        if !self.announced && all_ready && self.phase == Phase::Running {
            self.announced = true;
            return vec![Action::AnnounceListening];
        }
        Vec::new()
    }

    fn on_exit(&mut self, pid: Pid, clean: bool, now: Instant) -> Vec<Action> {
        let Some(worker) = self.workers.remove(&pid) else { return Vec::new() };
        if let Phase::Stopping { code, .. } = self.phase {
            return self.exit_if_done(code);
        }
        if worker.slot >= self.target {
            return Vec::new(); // retired by ScaleDown
        }
        if !worker.ready {
            return self.boot_failed(worker.slot, now);
        }
        let _ = clean;
        vec![Action::Spawn { slot: worker.slot }]
    }

    fn boot_failed(&mut self, slot: usize, now: Instant) -> Vec<Action> {
        self.boot_failures += 1;
        if self.boot_failures >= MAX_BOOT_FAILURES {
            self.give_up_reason = Some(format!(
                "workers failed to start {} times in a row; giving up (see the worker errors above)",
                self.boot_failures
            ));
            return self.stop(StopKind::Graceful, now + self.graceful_timeout, 3);
        }
        let factor = 1u32 << (self.boot_failures - 1).min(16);
        let delay = BOOT_BACKOFF_BASE.saturating_mul(factor).min(BOOT_BACKOFF_MAX);
        self.pending.push((slot, now + delay));
        Vec::new()
    }

    fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        match self.phase {
            Phase::Running => {
                let (due, later): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|(_, at)| *at <= now);
                self.pending = later;
                due.into_iter().map(|(slot, _)| Action::Spawn { slot }).collect()
            }
            Phase::Stopping { deadline, .. } if now >= deadline => {
                self.workers.keys().map(|&pid| Action::Stop { pid, how: StopKind::Kill }).collect()
            }
            Phase::Stopping { .. } => Vec::new(),
        }
    }

    fn stop(&mut self, how: StopKind, deadline: Instant, code: i32) -> Vec<Action> {
        let deadline = match self.phase {
            // A second stop signal can only hurry the first.
            Phase::Stopping { deadline: old, .. } => old.min(deadline),
            Phase::Running => deadline,
        };
        let code = match self.phase {
            Phase::Stopping { code, .. } => code,
            Phase::Running => code,
        };
        self.phase = Phase::Stopping { deadline, code };
        self.pending.clear();
        let mut actions: Vec<Action> = self.workers.keys().map(|&pid| Action::Stop { pid, how }).collect();
        actions.extend(self.exit_if_done(code));
        actions
    }

    fn exit_if_done(&mut self, code: i32) -> Vec<Action> {
        if self.workers.is_empty() {
            return vec![Action::Exit { code, reason: self.give_up_reason.clone() }];
        }
        Vec::new()
    }

    fn pids_in_slot(&self, slot: usize) -> impl Iterator<Item = Pid> + '_ {
        self.workers.iter().filter(move |(_, w)| w.slot == slot).map(|(&pid, _)| pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(n: usize) -> (Supervisor, Instant) {
        let (mut s, actions) = Supervisor::new(n, Duration::from_secs(30));
        assert_eq!(actions.len(), n);
        for slot in 0..n {
            s.spawned(slot, 100 + slot as Pid);
        }
        (s, Instant::now())
    }

    #[test]
    fn announces_once_all_workers_serve() {
        let (mut s, now) = start(2);
        assert!(s.handle(Event::WorkerReady(100), now).is_empty());
        assert_eq!(s.handle(Event::WorkerReady(101), now), vec![Action::AnnounceListening]);
    }

    #[test]
    fn a_dead_worker_is_replaced() {
        let (mut s, now) = start(2);
        s.handle(Event::WorkerReady(100), now);
        s.handle(Event::WorkerReady(101), now);
        let a = s.handle(Event::WorkerExited { pid: 101, clean: false }, now);
        assert_eq!(a, vec![Action::Spawn { slot: 1 }]);
    }

    #[test]
    fn boot_failures_back_off_then_give_up() {
        let (mut s, mut now) = start(1);
        let mut pid = 100;
        for i in 1..MAX_BOOT_FAILURES {
            assert!(s.handle(Event::WorkerExited { pid, clean: false }, now).is_empty());
            let due = s.next_deadline().expect("a respawn is scheduled");
            assert!(due > now, "failure {i} respawns later");
            assert!(s.handle(Event::Tick, now).is_empty(), "not before the backoff");
            now = due;
            assert_eq!(s.handle(Event::Tick, now), vec![Action::Spawn { slot: 0 }]);
            pid += 1;
            s.spawned(0, pid);
        }
        let a = s.handle(Event::WorkerExited { pid, clean: false }, now);
        assert!(matches!(a.as_slice(), [Action::Exit { code: 3, reason: Some(_) }]), "{a:?}");
    }

    #[test]
    fn graceful_stop_waits_for_workers_then_exits_zero() {
        let (mut s, now) = start(2);
        let a = s.handle(Event::Signal(Signal::GracefulStop), now);
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|x| matches!(x, Action::Stop { how: StopKind::Graceful, .. })));
        assert!(s.handle(Event::WorkerExited { pid: 100, clean: true }, now).is_empty());
        let a = s.handle(Event::WorkerExited { pid: 101, clean: true }, now);
        assert_eq!(a, vec![Action::Exit { code: 0, reason: None }]);
    }

    #[test]
    fn stragglers_are_killed_at_the_deadline() {
        let (mut s, now) = start(1);
        s.handle(Event::Signal(Signal::GracefulStop), now);
        let later = now + Duration::from_secs(31);
        assert_eq!(s.handle(Event::Tick, later), vec![Action::Stop { pid: 100, how: StopKind::Kill }]);
    }

    #[test]
    fn scale_up_and_down() {
        let (mut s, now) = start(1);
        assert_eq!(s.handle(Event::Signal(Signal::ScaleUp), now), vec![Action::Spawn { slot: 1 }]);
        s.spawned(1, 200);
        let a = s.handle(Event::Signal(Signal::ScaleDown), now);
        assert_eq!(a, vec![Action::Stop { pid: 200, how: StopKind::Graceful }]);
        assert!(s.handle(Event::WorkerExited { pid: 200, clean: true }, now).is_empty());
        assert!(s.handle(Event::Signal(Signal::ScaleDown), now).is_empty(), "never below one worker");
    }
}
