//! The master process: settles the address and data dir, forks workers,
//! supervises them and turns signals into lifecycle actions.
//!
//! The master forks before anything starts a thread, a coroutine runtime or
//! a store handle, and stays single-threaded: signals arrive through
//! signal-hook flags and a self-pipe, polled together with the workers'
//! ready pipes. Decisions are made by the pure [`supervisor::Supervisor`];
//! this module only carries them out.

pub mod listener;
pub mod signals;
pub mod supervisor;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal as NixSignal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid as NixPid};

use crate::config::{Backend, Config, UriSource};
use crate::worker;
use listener::{ListenError, Reservation};
use signals::{PipeSignals, Signal, SignalSource, HANDLED};
use supervisor::{Action, Event, Pid, StopKind, Supervisor};

/// Longest the master sleeps between checks when no timer is due.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Why the master stopped with an error.
#[derive(Debug)]
pub enum MasterError {
    /// The data directory cannot be created or written.
    DataDir(PathBuf, io::Error),
    /// The address cannot be used.
    Listen(ListenError),
    /// Signal handlers could not be installed.
    Signals(io::Error),
    /// Workers kept dying at start-up.
    GaveUp(String),
}

impl MasterError {
    /// The process exit status for this error: 2 for an unusable setting
    /// (before any fork), 3 when workers cannot start, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            MasterError::DataDir(..) | MasterError::Listen(_) => 2,
            MasterError::GaveUp(_) => worker::EXIT_BOOT_FAILURE,
            MasterError::Signals(_) => 1,
        }
    }
}

impl fmt::Display for MasterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterError::DataDir(p, e) => write!(f, "data_dir {}: {e}", p.display()),
            MasterError::Listen(e) => e.fmt(f),
            MasterError::Signals(e) => write!(f, "cannot install signal handlers: {e}"),
            MasterError::GaveUp(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for MasterError {}

/// Runs the server: returns when the master stops.
pub fn run(config: Config) -> Result<(), MasterError> {
    if let Backend::Mongo(target) = &config.backend {
        if config.mongo_uri_source == Some(UriSource::CommandLine) && crate::config::uri_has_password(&target.uri) {
            log::warn!(
                "--mongo-uri carries a password, visible to every local user in the process list; \
                 put it in ORDERS_MONGO_URI in an env file readable only by the service user"
            );
        }
    } else {
        prepare_data_dir(&config.data_dir)?;
    }
    let reservation = listener::reserve(config.bind).map_err(MasterError::Listen)?;
    let mut signals = PipeSignals::install().map_err(MasterError::Signals)?;
    Master { config, reservation, ready_pipes: HashMap::new() }.run(&mut signals)
}

/// Creates the data directory if needed and checks that it is writable.
fn prepare_data_dir(dir: &Path) -> Result<(), MasterError> {
    let fail = |e| MasterError::DataDir(dir.to_path_buf(), e);
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)
}

struct Master {
    config: Config,
    reservation: Reservation,
    /// Read ends of the ready pipes of workers that do not serve yet.
    ready_pipes: HashMap<Pid, OwnedFd>,
}

impl Master {
    fn run(&mut self, signals: &mut dyn SignalSource) -> Result<(), MasterError> {
        log::info!(
            "starting {} workers on {} (store: {})",
            self.config.workers,
            self.reservation.addr,
            worker::describe_backend(&self.config)
        );
        let (mut sup, initial) = Supervisor::new(self.config.workers, self.config.graceful_timeout);
        let mut queue: VecDeque<Action> = initial.into();
        loop {
            while let Some(action) = queue.pop_front() {
                match action {
                    Action::Exit { code: 0, .. } => {
                        log::info!("stopped");
                        return Ok(());
                    }
                    Action::Exit { reason, .. } => {
                        return Err(MasterError::GaveUp(reason.unwrap_or_else(|| "workers failed".into())))
                    }
                    other => queue.extend(self.execute(other, &mut sup, signals)),
                }
            }
            for event in self.wait(&sup, signals) {
                queue.extend(sup.handle(event, Instant::now()));
            }
        }
    }

    /// Carries out one action; returns follow-up actions.
    fn execute(&mut self, action: Action, sup: &mut Supervisor, signals: &dyn SignalSource) -> Vec<Action> {
        match action {
            Action::Spawn { slot } => match self.spawn(slot, signals) {
                Ok((pid, ready)) => {
                    log::info!("worker {slot} started (pid {pid})");
                    sup.spawned(slot, pid);
                    self.ready_pipes.insert(pid, ready);
                    Vec::new()
                }
                Err(e) => {
                    log::error!("cannot fork worker {slot}: {e}");
                    sup.spawn_failed(slot, Instant::now())
                }
            },
            Action::Stop { pid, how } => {
                let sig = match how {
                    StopKind::Graceful => NixSignal::SIGTERM,
                    StopKind::Fast => NixSignal::SIGQUIT,
                    StopKind::Kill => {
                        log::warn!("killing worker pid {pid}: it did not stop in time");
                        NixSignal::SIGKILL
                    }
                };
                let _ = signal::kill(NixPid::from_raw(pid), sig);
                Vec::new()
            }
            Action::AnnounceListening => {
                log::info!("listening on {}", self.reservation.addr);
                Vec::new()
            }
            Action::Exit { .. } => unreachable!("handled by the loop"),
        }
    }

    /// Waits for signals, ready workers, exits or the next timer.
    fn wait(&mut self, sup: &Supervisor, signals: &mut dyn SignalSource) -> Vec<Event> {
        let timeout = sup
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(IDLE_POLL)
            .min(IDLE_POLL);
        let pids: Vec<Pid> = self.ready_pipes.keys().copied().collect();
        let mut fds: Vec<libc::pollfd> = std::iter::once(signals.wake_fd())
            .chain(pids.iter().map(|p| self.ready_pipes[p].as_raw_fd()))
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout.as_millis().max(1) as i32) };

        let mut events = Vec::new();
        if fds[0].revents != 0 {
            for s in signals.take() {
                if s != Signal::ChildExited {
                    log::info!("signal: {s:?}");
                    events.push(Event::Signal(s));
                }
            }
        }
        for (pid, pfd) in pids.iter().zip(&fds[1..]) {
            if pfd.revents != 0 {
                if let Some(ready) = self.read_ready(*pid) {
                    events.push(ready);
                }
            }
        }
        events.extend(reap_children());
        events.push(Event::Tick);
        events
    }

    /// Reads a worker's ready pipe: its byte means it serves; EOF means it
    /// died first (its exit is reaped separately).
    fn read_ready(&mut self, pid: Pid) -> Option<Event> {
        let pipe = self.ready_pipes.remove(&pid)?;
        let mut byte = [0u8; 1];
        match nix::unistd::read(pipe.as_raw_fd(), &mut byte) {
            Ok(1) if byte[0] == worker::READY_BYTE => Some(Event::WorkerReady(pid)),
            _ => None,
        }
    }

    /// Forks a worker for `slot`. Signals stay blocked across fork so the
    /// child never runs the master's handlers.
    fn spawn(&self, slot: usize, signals: &dyn SignalSource) -> io::Result<(Pid, OwnedFd)> {
        let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let mut old_mask = SigSet::empty();
        signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut old_mask))?;
        let master_pid = nix::unistd::getpid();
        // SAFETY: the master is single-threaded (no runtime, no store, no
        // helper thread), so the child inherits no lock held by another thread.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(ready_read);
                let mut inherited = signals.fds();
                inherited.push(self.reservation.fd());
                inherited.extend(self.ready_pipes.values().map(|p| p.as_raw_fd()));
                become_worker(master_pid, slot, &inherited);
                let code = worker::run(&self.config, self.reservation.addr, ready_write);
                std::process::exit(code);
            }
            Ok(ForkResult::Parent { child }) => {
                signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None)?;
                Ok((child.as_raw(), ready_read))
            }
            Err(e) => {
                signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None)?;
                Err(e.into())
            }
        }
    }
}

/// In a freshly forked child: drop the master's signal handling and
/// descriptors, die with the master, and block the signals the worker waits
/// for (threads started later inherit the mask).
fn become_worker(master_pid: NixPid, slot: usize, inherited: &[RawFd]) {
    for (number, _) in HANDLED {
        if let Ok(sig) = NixSignal::try_from(number) {
            // SAFETY: restoring the default disposition is always sound.
            let _ = unsafe { signal::signal(sig, SigHandler::SigDfl) };
        }
    }
    for &fd in inherited {
        // SAFETY: these descriptors belong to the master; the child owns
        // copies it never uses, and nothing else refers to them here.
        unsafe { libc::close(fd) };
    }
    let _ = nix::sys::prctl::set_pdeathsig(NixSignal::SIGTERM);
    if nix::unistd::getppid() != master_pid {
        std::process::exit(0); // the master died before prctl took effect
    }
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&worker::signal_set()), None);
    crate::logging::set_role(&format!("worker {slot} pid {}", std::process::id()));
}

/// Reaps every exited child without blocking.
fn reap_children() -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                let level = if code == 0 { log::Level::Info } else { log::Level::Warn };
                log::log!(level, "worker pid {pid} exited with status {code}");
                events.push(Event::WorkerExited { pid: pid.as_raw(), clean: code == 0 });
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                log::warn!("worker pid {pid} killed by {sig}");
                events.push(Event::WorkerExited { pid: pid.as_raw(), clean: false });
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return events,
            Ok(_) => {}
        }
    }
}
