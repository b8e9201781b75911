//! Signals as a typed enum, and the master's signal source: signal-hook
//! flags plus a self-pipe the master loop polls (no thread, no runtime).
//! The source is a trait so tests can drive the master with scripted
//! signals.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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

/// Every signal the master handles, with its meaning.
pub const HANDLED: [(i32, Signal); 9] = [
    (SIGTERM, Signal::GracefulStop),
    (SIGINT, Signal::FastStop),
    (SIGQUIT, Signal::FastStop),
    (SIGHUP, Signal::Reload),
    (SIGTTIN, Signal::ScaleUp),
    (SIGTTOU, Signal::ScaleDown),
    (SIGUSR1, Signal::ReopenLogs),
    (SIGUSR2, Signal::Upgrade),
    (SIGCHLD, Signal::ChildExited),
];

/// Where the master loop gets its signals from.
pub trait SignalSource {
    /// A descriptor that becomes readable when signals are pending.
    fn wake_fd(&self) -> RawFd;
    /// Takes the pending signals.
    fn take(&mut self) -> Vec<Signal>;
    /// Descriptors a forked worker must close.
    fn fds(&self) -> Vec<RawFd>;
}

/// Real signals through signal-hook: one flag per signal plus a wake-up pipe.
pub struct PipeSignals {
    flags: Vec<(Arc<AtomicBool>, Signal)>,
    read: OwnedFd,
    write: OwnedFd,
}

impl PipeSignals {
    /// Installs the handlers of [`HANDLED`].
    pub fn install() -> std::io::Result<PipeSignals> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        let mut flags = Vec::new();
        for (number, signal) in HANDLED {
            let flag = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(number, flag.clone())?;
            signal_hook::low_level::pipe::register_raw(number, write.as_raw_fd())?;
            flags.push((flag, signal));
        }
        Ok(PipeSignals { flags, read, write })
    }
}

impl SignalSource for PipeSignals {
    fn wake_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    fn take(&mut self) -> Vec<Signal> {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(self.read.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
        let mut out = Vec::new();
        for (flag, signal) in &self.flags {
            if flag.swap(false, Ordering::SeqCst) && !out.contains(signal) {
                out.push(*signal);
            }
        }
        out
    }

    fn fds(&self) -> Vec<RawFd> {
        vec![self.read.as_raw_fd(), self.write.as_raw_fd()]
    }
}
