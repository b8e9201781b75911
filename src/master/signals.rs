//! The master's side of the signal table (`lifecycle::signals`): its
//! handlers, through signal-hook flags plus a self-pipe its loop polls (no
//! thread, no runtime), and the one way it blocks signals for a while
//! (across a fork, across an upgrade's exec).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};

use crate::lifecycle::signals::{Signal, SignalRow, SIGNALS};

/// Real signals through signal-hook: one flag per signal plus a wake-up pipe.
pub struct PipeSignals {
    flags: Vec<(Arc<AtomicBool>, Signal)>,
    read: OwnedFd,
    write: OwnedFd,
}

impl PipeSignals {
    /// Installs the handlers of [`SIGNALS`].
    pub fn install() -> std::io::Result<PipeSignals> {
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        let mut flags = Vec::new();
        for SignalRow { number, master, .. } in SIGNALS {
            let flag = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(number, flag.clone())?;
            signal_hook::low_level::pipe::register_raw(number, write.as_raw_fd())?;
            flags.push((flag, master));
        }
        Ok(PipeSignals { flags, read, write })
    }

    /// A descriptor that becomes readable when signals are pending.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Takes the pending signals.
    pub fn take(&mut self) -> Vec<Signal> {
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

    /// Descriptors a forked worker must close.
    pub fn fds(&self) -> Vec<RawFd> {
        vec![self.read.as_raw_fd(), self.write.as_raw_fd()]
    }
}

/// Signals held back from this thread until [`Blocked::restore`]: one that
/// arrives meanwhile stays pending (and survives an exec).
#[must_use = "restore the mask once the blocked section ends"]
pub struct Blocked {
    old: SigSet,
}

/// Blocks `set`.
pub fn block(set: &SigSet) -> nix::Result<Blocked> {
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(set), Some(&mut old))?;
    Ok(Blocked { old })
}

impl Blocked {
    /// Puts the mask back as it was before [`block`].
    pub fn restore(self) -> nix::Result<()> {
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None)
    }
}
