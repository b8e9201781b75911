//! Signals: one table ([`SIGNALS`]) says, per signal, what the master
//! does with it and what a worker does, as gunicorn's `SIGNALS` with its
//! `handle_<name>` methods: the master's meaning is a [`Signal`] (handled
//! by `Supervisor::on_signal`, or by the master itself for the ones that
//! need I/O: reload, logs, upgrade), a worker's an [`InWorker`]. The
//! worker's signal set, the set the master blocks across an upgrade, and
//! the dispositions a forked worker resets are all derived from the table.

use nix::sys::signal::{SigSet, Signal as NixSignal};
use signal_hook::consts::*;

/// A signal, as the master understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// TERM: graceful stop.
    GracefulStop,
    /// INT, QUIT: fast stop.
    FastStop,
    /// HUP: reload the configuration.
    Reload,
    /// TTIN: one worker more.
    ScaleUp,
    /// TTOU: one worker fewer.
    ScaleDown,
    /// USR1: reopen log files.
    ReopenLogs,
    /// USR2: binary upgrade.
    Upgrade,
    /// CHLD: a worker changed state.
    ChildExited,
}

/// What a worker does with a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InWorker {
    /// Stop accepting, finish what is in flight, exit.
    Drain,
    /// Exit at once (every acknowledged write is committed already).
    Exit,
    /// Reopen the log file (the master forwards its USR1).
    ReopenLogs,
    /// Nothing: the signal is the master's. Blocked, so a stray one (HUP's
    /// default action is to terminate) never kills a worker.
    Ignore,
}

/// One signal: its number, what the master does, what a worker does
/// (`None`: a worker leaves it at its default action).
#[derive(Debug, Clone, Copy)]
pub struct SignalRow {
    pub number: i32,
    pub master: Signal,
    pub worker: Option<InWorker>,
}

const fn row(number: i32, master: Signal, worker: Option<InWorker>) -> SignalRow {
    SignalRow {
        number,
        master,
        worker,
    }
}

/// Every signal the server handles.
pub const SIGNALS: [SignalRow; 9] = [
    row(SIGTERM, Signal::GracefulStop, Some(InWorker::Drain)),
    row(SIGINT, Signal::FastStop, Some(InWorker::Exit)),
    row(SIGQUIT, Signal::FastStop, Some(InWorker::Exit)),
    row(SIGHUP, Signal::Reload, Some(InWorker::Ignore)),
    row(SIGTTIN, Signal::ScaleUp, Some(InWorker::Ignore)),
    row(SIGTTOU, Signal::ScaleDown, Some(InWorker::Ignore)),
    row(SIGUSR1, Signal::ReopenLogs, Some(InWorker::ReopenLogs)),
    row(SIGUSR2, Signal::Upgrade, Some(InWorker::Ignore)),
    row(SIGCHLD, Signal::ChildExited, None),
];

/// The signals a worker takes itself. The master blocks them in the child
/// before any thread starts, so they stay pending for `sigtimedwait`.
pub fn worker_set() -> SigSet {
    let mut set = SigSet::empty();
    for r in SIGNALS.iter().filter(|r| r.worker.is_some()) {
        set.add(NixSignal::try_from(r.number).expect("a signal of the table"));
    }
    set
}

/// Every signal of the table: blocked across a binary upgrade's exec, so
/// none arrives while no handler is installed (TERM's default would kill
/// the master and, with it, the workers); the new image unblocks them once
/// its handlers are in place and takes what came meanwhile.
pub fn master_set() -> SigSet {
    let mut set = SigSet::empty();
    for r in SIGNALS {
        set.add(NixSignal::try_from(r.number).expect("a signal of the table"));
    }
    set
}

/// What a worker does with signal `number`.
pub fn in_worker(number: i32) -> Option<InWorker> {
    SIGNALS
        .iter()
        .find(|r| r.number == number)
        .and_then(|r| r.worker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_set_follows_the_table() {
        let set = worker_set();
        for r in SIGNALS {
            let signal = NixSignal::try_from(r.number).unwrap();
            assert_eq!(set.contains(signal), r.worker.is_some(), "{signal}");
        }
        assert_eq!(in_worker(SIGTERM), Some(InWorker::Drain));
        assert_eq!(in_worker(SIGHUP), Some(InWorker::Ignore));
        assert_eq!(in_worker(SIGCHLD), None);
    }
}
