//! Binary upgrade (SIGUSR2) in place: the master re-executes the executable
//! (the file at the path it was started from, now possibly a new build)
//! with the same arguments and the same pid. Its workers stay its children
//! and keep serving throughout; the new image adopts them (their pids,
//! slots, status pipes, and the shared heartbeat and metrics regions, all
//! handed on as inherited descriptors named in [`STATE_ENV`]), then starts a
//! new generation with the new code and retires the adopted one exactly as
//! a reload does. Under systemd the main pid never changes, so a later
//! `systemctl stop` is the ordinary graceful stop.
//!
//! Before it execs, the master re-reads the configuration (an upgrade, like
//! a reload, refuses changes to settings that need a restart) and runs the
//! new file as `<file> <arguments> check-config` with [`FORMAT_ENV`] set: the
//! new file must accept the configuration, open the log file, use the data
//! dir and user, and read this build's handover (its format and the layout
//! of the shared regions). A file that fails leaves this master serving
//! (`binary upgrade failed` in the log): once exec'd, the new image has no
//! way back, so whatever can fail is tried first. A stop or reload signal
//! that arrives during the check abandons the upgrade and is handled. If
//! the new generation dies before serving, the adopted workers keep
//! serving, as after a failed reload.

use std::ffi::{CString, OsString};
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::supervisor::{Generation, Pid};

/// Env var: what the old image hands to the new one.
pub const STATE_ENV: &str = "ORDERS_UPGRADE_STATE";
/// Env var for `check-config`: the handover format the new file must read.
pub const FORMAT_ENV: &str = "ORDERS_UPGRADE_FORMAT";
/// The handover line's version; with the shared regions' sizes it makes
/// [`format`], the line's first field.
const STATE_VERSION: &str = "v1";
/// How long the new file may take to check the configuration.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the check's exit is polled.
const CHECK_POLL: Duration = Duration::from_millis(20);

/// This build's handover format: the line's version and the layout of the
/// shared regions it maps again (a build whose regions differ cannot adopt).
pub fn format() -> String {
    format!(
        "{STATE_VERSION}/h{}/m{}",
        crate::lifecycle::heartbeat::LEN,
        crate::metrics::Region::LEN
    )
}

/// In `check-config`: whether this build can take over from the server that
/// asks ([`FORMAT_ENV`]); unset when an operator runs the check.
pub fn check_format_from_env() -> Result<(), HandoverError> {
    match std::env::var(FORMAT_ENV) {
        Ok(theirs) if theirs != format() => Err(HandoverError::Format(theirs)),
        _ => Ok(()),
    }
}

/// A handover line this build cannot read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandoverError {
    /// Another build's format (version or region layout).
    #[error("handover format {0:?}, this build reads {f:?}; restart instead of upgrading in place", f = format())]
    Format(String),
    /// Not the line's shape.
    #[error("expected 7 fields, got {0}")]
    Fields(usize),
    /// A field that does not parse.
    #[error("{0} {1:?}")]
    Field(&'static str, String),
}

/// The executable's path and the arguments, as started.
struct Invocation {
    exe: PathBuf,
    argv0: OsString,
    args: Vec<OsString>,
}

static INVOCATION: OnceLock<Invocation> = OnceLock::new();

/// Records the path of the running executable at start, before a package
/// upgrade can replace the file (then /proc/self/exe names a deleted file),
/// and its arguments, before the process title overwrites the memory that
/// `std::env::args_os` reads them from (`title`).
pub fn remember_executable() {
    let mut argv = std::env::args_os();
    let argv0 = argv.next().unwrap_or_else(|| "orders-server".into());
    if let Ok(exe) = std::env::current_exe() {
        let _ = INVOCATION.set(Invocation {
            exe,
            argv0,
            args: argv.collect(),
        });
    }
}

/// Why an upgrade did not happen (this master keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The executable's path was not recorded at start.
    #[error("the executable's path is unknown")]
    NoExecutable,
    /// The new file could not be run.
    #[error("cannot run {}", .0.display())]
    Run(PathBuf, #[source] io::Error),
    /// The configuration cannot be read, or changes a setting that needs a restart.
    #[error("{0}")]
    Refused(String),
    /// The new file refused the configuration or failed.
    #[error("{} check-config failed ({status}): {output}", .exe.display())]
    Check {
        exe: PathBuf,
        status: String,
        output: String,
    },
    /// The new file did not answer in time.
    #[error("{} check-config did not finish within {} s", .0.display(), CHECK_TIMEOUT.as_secs())]
    CheckTimedOut(PathBuf),
    /// exec(2) itself failed.
    #[error("exec {}", .0.display())]
    Exec(PathBuf, #[source] io::Error),
}

/// One serving worker handed from the old image to the new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandedWorker {
    /// Its process id (a child of the master, before and after exec).
    pub pid: Pid,
    /// Its slot in the supervisor.
    pub slot: usize,
    /// Its heartbeat (and metrics) slot.
    pub heartbeat: usize,
    /// The read end of its status pipe, if still open.
    pub status: Option<RawFd>,
}

/// What the old image hands to the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// The generation the workers belong to.
    pub generation: Generation,
    /// The concrete address they serve (port never 0).
    pub addr: SocketAddr,
    /// The concrete metrics address, when served.
    pub metrics_addr: Option<SocketAddr>,
    /// The memfd of the heartbeats.
    pub heartbeats: RawFd,
    /// The memfd of the metrics region.
    pub metrics: RawFd,
    /// The serving workers.
    pub workers: Vec<HandedWorker>,
}

impl Handover {
    /// One line: `FORMAT GEN ADDR METRICS|- HEARTBEATS_FD METRICS_FD PID:SLOT:HB:FD|-,...`.
    pub fn encode(&self) -> String {
        let workers: Vec<String> = self
            .workers
            .iter()
            .map(|w| {
                format!(
                    "{}:{}:{}:{}",
                    w.pid,
                    w.slot,
                    w.heartbeat,
                    w.status.map_or("-".into(), |f| f.to_string())
                )
            })
            .collect();
        let metrics = self.metrics_addr.map_or("-".into(), |a| a.to_string());
        format!(
            "{} {} {} {metrics} {} {} {}",
            format(),
            self.generation,
            self.addr,
            self.heartbeats,
            self.metrics,
            workers.join(",")
        )
    }

    /// Parses [`Handover::encode`]'s line.
    pub fn decode(line: &str) -> Result<Handover, HandoverError> {
        let fields: Vec<&str> = line.split(' ').collect();
        let [version, generation, addr, metrics, heartbeats, metrics_fd, workers] = fields[..]
        else {
            return Err(HandoverError::Fields(fields.len()));
        };
        if version != format() {
            return Err(HandoverError::Format(version.to_string()));
        }
        let workers = workers
            .split(',')
            .filter(|w| !w.is_empty())
            .map(decode_worker)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Handover {
            generation: parse("generation", generation)?,
            addr: parse("address", addr)?,
            metrics_addr: if metrics == "-" {
                None
            } else {
                Some(parse("metrics address", metrics)?)
            },
            heartbeats: parse("heartbeats fd", heartbeats)?,
            metrics: parse("metrics fd", metrics_fd)?,
            workers,
        })
    }

    /// In the new image: the handover, if this process was started by an
    /// upgrade. The variable is removed (workers must not see it). A line
    /// this build cannot read is logged and ignored, and the process starts
    /// as a new server: the check before exec ([`FORMAT_ENV`]) makes that
    /// unreachable short of a file swapped between the check and the exec.
    pub fn from_env() -> Option<Handover> {
        let line = std::env::var(STATE_ENV).ok()?;
        std::env::remove_var(STATE_ENV);
        match Handover::decode(&line) {
            Ok(h) => Some(h),
            Err(e) => {
                log::error!("binary upgrade: cannot read {STATE_ENV} ({e}); starting afresh");
                None
            }
        }
    }

    /// Every descriptor the new image must inherit.
    fn fds(&self) -> Vec<RawFd> {
        let status = self.workers.iter().filter_map(|w| w.status);
        [self.heartbeats, self.metrics]
            .into_iter()
            .chain(status)
            .collect()
    }
}

/// One `PID:SLOT:HEARTBEAT:FD|-` entry.
fn decode_worker(w: &str) -> Result<HandedWorker, HandoverError> {
    let parts: Vec<&str> = w.split(':').collect();
    let [pid, slot, heartbeat, status] = parts[..] else {
        return Err(HandoverError::Field("worker", w.to_string()));
    };
    let heartbeat: usize = parse("heartbeat", heartbeat)?;
    if heartbeat >= crate::lifecycle::heartbeat::SLOTS {
        return Err(HandoverError::Field("heartbeat", w.to_string()));
    }
    Ok(HandedWorker {
        pid: parse("pid", pid)?,
        slot: parse("slot", slot)?,
        heartbeat,
        status: if status == "-" {
            None
        } else {
            Some(parse("status fd", status)?)
        },
    })
}

fn parse<T: std::str::FromStr>(what: &'static str, text: &str) -> Result<T, HandoverError> {
    text.parse()
        .map_err(|_| HandoverError::Field(what, text.to_string()))
}

/// The file to upgrade to: the path this process was started from.
pub fn executable() -> Result<PathBuf, UpgradeError> {
    INVOCATION
        .get()
        .map(|i| i.exe.to_path_buf())
        .ok_or(UpgradeError::NoExecutable)
}

/// Runs `exe <arguments> check-config` and waits (up to [`CHECK_TIMEOUT`])
/// for it to accept the configuration.
pub fn check(exe: &Path) -> Result<(), UpgradeError> {
    let args = INVOCATION.get().map(|i| i.args.clone()).unwrap_or_default();
    // The check's errors go to a memfd, read after it exits: a pipe could
    // fill up and stall it while this (single-threaded) master waits.
    let errors = crate::shared_memory::scratch_file("check-config")
        .map_err(|e| UpgradeError::Run(exe.to_path_buf(), e))?;
    let stderr = errors
        .try_clone()
        .map_err(|e| UpgradeError::Run(exe.to_path_buf(), e))?;
    let mut child = Command::new(exe)
        .args(args)
        .arg("check-config")
        .env(FORMAT_ENV, format())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| UpgradeError::Run(exe.to_path_buf(), e))?;
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let status = loop {
        // The master's own reaping (waitpid(-1)) does not run while this waits.
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(CHECK_POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(UpgradeError::CheckTimedOut(exe.to_path_buf()));
            }
            Err(e) => return Err(UpgradeError::Run(exe.to_path_buf(), e)),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut output = String::new();
    let mut errors = errors;
    let _ = io::Seek::rewind(&mut errors);
    let _ = io::Read::read_to_string(&mut io::Read::take(&mut errors, 64 * 1024), &mut output);
    let output = output.trim().lines().last().unwrap_or("").to_string();
    Err(UpgradeError::Check {
        exe: exe.to_path_buf(),
        status: status.to_string(),
        output,
    })
}

/// Re-executes `exe` in place with the handover. The caller has blocked
/// the master's signals (`signals::block`). Returns only if exec(2)
/// failed, with every descriptor as it was.
pub fn exec(exe: &Path, handover: &Handover) -> UpgradeError {
    let invocation = INVOCATION.get();
    let to_c = |s: &std::ffi::OsStr| CString::new(s.as_bytes()).unwrap_or_default();
    let path = to_c(exe.as_os_str());
    let argv: Vec<CString> = invocation
        .map(|i| {
            std::iter::once(to_c(&i.argv0))
                .chain(i.args.iter().map(|a| to_c(a)))
                .collect()
        })
        .unwrap_or_else(|| vec![path.clone()]);
    let fds = handover.fds();
    for &fd in &fds {
        let _ = crate::net::set_close_on_exec(fd, false);
    }
    std::env::set_var(STATE_ENV, handover.encode());
    let error = match nix::unistd::execv(&path, &argv) {
        Err(e) => io::Error::from(e),
        Ok(never) => match never {},
    };
    std::env::remove_var(STATE_ENV);
    for &fd in &fds {
        let _ = crate::net::set_close_on_exec(fd, true);
    }
    UpgradeError::Exec(exe.to_path_buf(), error)
}

/// In the new image, once its signal handlers are installed: unblocks the
/// signals the old image blocked before exec (`signals::block` of the
/// table's set: one that arrived meanwhile stayed pending across exec, where
/// TERM's default action would have killed the master mid-switch, and is
/// delivered now).
pub fn unblock_signals() {
    let _ = crate::lifecycle::signals::master_set().thread_unblock();
}

/// Whether `fd` is an open pipe (a handed-on status pipe).
pub fn is_pipe(fd: RawFd) -> bool {
    nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn the_handover_survives_its_own_encoding() {
        let h = Handover {
            generation: 7,
            addr: "127.0.0.1:8000".parse().unwrap(),
            metrics_addr: Some("[::1]:9180".parse().unwrap()),
            heartbeats: 5,
            metrics: 6,
            workers: vec![
                HandedWorker {
                    pid: 100,
                    slot: 0,
                    heartbeat: 3,
                    status: Some(9),
                },
                HandedWorker {
                    pid: 101,
                    slot: 1,
                    heartbeat: 4,
                    status: None,
                },
            ],
        };
        assert_eq!(Handover::decode(&h.encode()), Ok(h.clone()));
        let none = Handover {
            metrics_addr: None,
            workers: Vec::new(),
            ..h
        };
        assert_eq!(Handover::decode(&none.encode()), Ok(none));
    }

    #[test]
    fn a_handover_this_build_cannot_read_is_refused() {
        let f = format();
        let err = |line: &str| Handover::decode(line).unwrap_err().to_string();
        assert!(
            err("v0/h1/m1 1 127.0.0.1:1 - 5 6 ").contains("v0/h1/m1"),
            "another build's format"
        );
        assert_eq!(
            Handover::decode(&format!("{f} 1 127.0.0.1:1 - 5")),
            Err(HandoverError::Fields(5))
        );
        assert!(err(&format!("{f} x 127.0.0.1:1 - 5 6 ")).contains("generation"));
        assert!(err(&format!("{f} 1 127.0.0.1:1 - 5 6 1:2")).contains("worker"));
        assert!(
            err(&format!("{f} 1 127.0.0.1:1 - 5 6 1:2:99999:-")).contains("heartbeat"),
            "slot out of range"
        );
    }

    #[test]
    fn only_a_pipe_is_taken_for_a_status_pipe() {
        let (read, _write) = nix::unistd::pipe().unwrap();
        assert!(is_pipe(read.as_raw_fd()));
        assert!(!is_pipe(0x7fff_fff0), "not open");
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(!is_pipe(file.as_raw_fd()), "not a pipe");
    }
}
