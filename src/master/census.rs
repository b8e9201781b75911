//! The master's count of its workers for the metrics: each worker's state
//! (booting, serving, retiring) and why workers were replaced (crash,
//! timeout, max_requests, reload), followed from the same events and
//! actions the supervisor sees. Pure bookkeeping: tests drive it without
//! processes; the master publishes it to the shared metrics region.

use std::collections::HashMap;

use super::supervisor::{Action, Event, Generation};
use crate::metrics::{RestartCause, RESTART_CAUSES, WORKER_STATES};

/// A worker's state as the metrics show it (WORKER_STATES, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Booting = 0,
    Serving = 1,
    Retiring = 2,
}

#[derive(Debug)]
struct Entry {
    state: State,
    generation: Generation,
    /// The master ended it (stop, kill): its exit is no crash.
    ended: bool,
    /// A restart cause was counted for it already.
    counted: bool,
}

/// Workers by state and restarts by cause.
#[derive(Debug, Default)]
pub struct Census {
    workers: HashMap<i32, Entry>,
    restarts: [u64; RESTART_CAUSES.len()],
}

impl Census {
    /// A census that goes on from restarts counted before a binary upgrade,
    /// with the serving workers the new image adopts.
    pub fn resume(restarts: [u64; RESTART_CAUSES.len()], adopted: &[(i32, Generation)]) -> Census {
        let workers = adopted
            .iter()
            .map(|&(pid, generation)| {
                (
                    pid,
                    Entry {
                        state: State::Serving,
                        generation,
                        ended: false,
                        counted: false,
                    },
                )
            })
            .collect();
        Census { workers, restarts }
    }

    /// A worker was forked.
    pub fn spawned(&mut self, pid: i32, generation: Generation) {
        self.workers.insert(
            pid,
            Entry {
                state: State::Booting,
                generation,
                ended: false,
                counted: false,
            },
        );
    }

    /// Follows an event the supervisor is about to handle.
    pub fn event(&mut self, event: &Event) {
        match event {
            Event::WorkerReady(pid) => self.set(*pid, State::Serving),
            Event::WorkerRetiring(pid) => self.count_once(*pid, RestartCause::MaxRequests),
            Event::WorkerStale(pid) => self.end(*pid, RestartCause::Timeout),
            Event::WorkerExited { pid }
                if self
                    .workers
                    .remove(pid)
                    .is_some_and(|w| !w.ended && !w.counted) =>
            {
                self.count(RestartCause::Crash)
            }
            _ => {}
        }
    }

    /// Follows an action the master carries out.
    pub fn action(&mut self, action: &Action) {
        match action {
            Action::Stop { pid, .. } => {
                if let Some(w) = self.workers.get_mut(pid) {
                    w.ended = true;
                    w.state = State::Retiring;
                }
            }
            Action::BootTimedOut { pid } => self.end(*pid, RestartCause::Timeout),
            Action::ReloadDone { generation } => {
                // The supervisor has already asked these to stop (its Stop
                // actions come first): what was not counted yet is a reload.
                let old: Vec<i32> = self
                    .workers
                    .iter()
                    .filter(|(_, w)| w.generation < *generation)
                    .map(|(p, _)| *p)
                    .collect();
                for pid in old {
                    self.count_once(pid, RestartCause::Reload);
                }
            }
            _ => {}
        }
    }

    /// Workers in each state (WORKER_STATES, in order).
    pub fn by_state(&self) -> [u64; WORKER_STATES.len()] {
        let mut counts = [0; WORKER_STATES.len()];
        for w in self.workers.values() {
            counts[w.state as usize] += 1;
        }
        counts
    }

    /// Workers replaced, by cause (RESTART_CAUSES, in order).
    pub fn restarts(&self) -> [u64; RESTART_CAUSES.len()] {
        self.restarts
    }

    fn set(&mut self, pid: i32, state: State) {
        if let Some(w) = self.workers.get_mut(&pid) {
            w.state = state;
        }
    }

    /// The master ends the worker for `cause`.
    fn end(&mut self, pid: i32, cause: RestartCause) {
        if let Some(w) = self.workers.get_mut(&pid) {
            w.ended = true;
        }
        self.count_once(pid, cause);
    }

    /// Counts `cause` for the worker, unless a cause was counted for it.
    fn count_once(&mut self, pid: i32, cause: RestartCause) {
        if let Some(w) = self.workers.get_mut(&pid).filter(|w| !w.counted) {
            w.counted = true;
            self.count(cause);
        }
    }

    fn count(&mut self, cause: RestartCause) {
        self.restarts[cause as usize] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::supervisor::StopKind;

    #[test]
    fn states_follow_the_lifecycle() {
        let mut c = Census::default();
        c.spawned(10, 1);
        c.spawned(11, 1);
        assert_eq!(c.by_state(), [2, 0, 0]);
        c.event(&Event::WorkerReady(10));
        assert_eq!(c.by_state(), [1, 1, 0]);
        c.action(&Action::Stop {
            pid: 10,
            how: StopKind::Graceful,
        });
        assert_eq!(c.by_state(), [1, 0, 1]);
        c.event(&Event::WorkerExited { pid: 10 });
        assert_eq!(c.by_state(), [1, 0, 0]);
        assert_eq!(c.restarts(), [0; 4], "a stop is no restart");
    }

    #[test]
    fn each_cause_is_counted_once() {
        let mut c = Census::default();
        for pid in 1..=6 {
            c.spawned(pid, 1);
            c.event(&Event::WorkerReady(pid));
        }
        c.event(&Event::WorkerExited { pid: 1 }); // crash
        c.event(&Event::WorkerStale(2)); // timeout, then killed
        c.action(&Action::Stop {
            pid: 2,
            how: StopKind::Kill,
        });
        c.event(&Event::WorkerExited { pid: 2 });
        c.event(&Event::WorkerRetiring(3)); // max_requests, then stopped
        c.action(&Action::Stop {
            pid: 3,
            how: StopKind::Graceful,
        });
        c.event(&Event::WorkerExited { pid: 3 });
        // A reload, in the supervisor's order: the new generation serves,
        // the old workers are asked to stop, then ReloadDone.
        c.spawned(7, 2);
        c.event(&Event::WorkerReady(7));
        for pid in 4..=6 {
            c.action(&Action::Stop {
                pid,
                how: StopKind::Graceful,
            });
        }
        c.action(&Action::ReloadDone { generation: 2 }); // 4, 5, 6 replaced
        assert_eq!(c.restarts(), [1, 1, 1, 3]);
        for pid in 4..=6 {
            c.event(&Event::WorkerExited { pid });
        }
        assert_eq!(c.restarts(), [1, 1, 1, 3], "their exits are no crashes");
        c.spawned(8, 2);
        c.action(&Action::BootTimedOut { pid: 8 });
        c.event(&Event::WorkerExited { pid: 8 });
        assert_eq!(c.restarts()[RestartCause::Timeout as usize], 2);
    }
}
