//! Binary upgrade (SIGUSR2), as nginx does it: the old master starts the
//! executable (the file at the path it was started from, now possibly a new
//! build) as a new master with the same arguments. The new master joins the
//! old one's address (SO_REUSEPORT, same user), starts its workers and, once
//! they serve, writes one byte on a pipe inherited from the old master;
//! only then does the old master retire its workers and exit. A new binary
//! that fails leaves the old master serving. Under systemd the new master
//! sends `MAINPID=` with `READY=1` (the unit needs `NotifyAccess=all`).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::supervisor::Pid;

/// Env var: the descriptor the new master reports readiness on.
pub const UPGRADE_FD_ENV: &str = "ORDERS_UPGRADE_FD";
/// Env var: the concrete address the new master must join.
pub const UPGRADE_ADDR_ENV: &str = "ORDERS_UPGRADE_ADDR";
/// The byte the new master writes once its workers serve.
const READY: u8 = b'R';

static EXECUTABLE: OnceLock<PathBuf> = OnceLock::new();
/// The arguments the master was started with.
static ARGUMENTS: OnceLock<Vec<std::ffi::OsString>> = OnceLock::new();

/// Records the path of the running executable at start, before a package
/// upgrade can replace the file (then /proc/self/exe names a deleted file),
/// and its arguments, before the process title overwrites the memory that
/// `std::env::args_os` reads them from (`title`).
pub fn remember_executable() {
    if let Ok(path) = std::env::current_exe() {
        let _ = EXECUTABLE.set(path);
    }
    let _ = ARGUMENTS.set(std::env::args_os().skip(1).collect());
}

/// In a new master: what the old one handed over.
pub struct Inherited {
    fd: OwnedFd,
    /// The address to join.
    pub addr: SocketAddr,
}

impl Inherited {
    /// Reads (and removes, so workers don't see them) the upgrade variables.
    /// A descriptor that is not an open pipe is not the old master's: the
    /// variables are then ignored (logged), and this starts as a new server.
    pub fn from_env() -> Option<Inherited> {
        let fd = std::env::var(UPGRADE_FD_ENV).ok();
        let addr = std::env::var(UPGRADE_ADDR_ENV).ok();
        std::env::remove_var(UPGRADE_FD_ENV);
        std::env::remove_var(UPGRADE_ADDR_ENV);
        let fd: RawFd = fd?.parse().ok()?;
        let addr: SocketAddr = addr?.parse().ok()?;
        if !is_pipe(fd) {
            log::warn!("{UPGRADE_FD_ENV}={fd} is not an open pipe: ignoring the binary upgrade variables");
            return None;
        }
        // SAFETY: `fd` is an open pipe that the old master passed us for
        // this purpose; nothing else in this process owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Some(Inherited { fd, addr })
    }

    /// The pipe's descriptor (a forked worker closes it).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Tells the old master that this one serves.
    pub fn report_ready(self) {
        let _ = nix::unistd::write(&self.fd, &[READY]);
    }
}

/// Whether `fd` is an open descriptor of a pipe (the upgrade's).
fn is_pipe(fd: RawFd) -> bool {
    nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO)
}

/// In the old master: the new master it started.
pub struct Child {
    pid: Pid,
    ready: OwnedFd,
}

impl Child {
    /// Starts the executable again with the same arguments.
    pub fn spawn(addr: SocketAddr) -> io::Result<Child> {
        let exe = EXECUTABLE.get().cloned().map(Ok).unwrap_or_else(std::env::current_exe)?;
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        let write_fd = write.as_raw_fd();
        let mut cmd = Command::new(&exe);
        cmd.args(ARGUMENTS.get().into_iter().flatten())
            .env(UPGRADE_FD_ENV, write_fd.to_string())
            .env(UPGRADE_ADDR_ENV, addr.to_string());
        // SAFETY: between fork and exec only async-signal-safe fcntl calls:
        // the pipe's write end must survive exec (and block for a 1-byte write).
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(write_fd, libc::F_SETFD, 0) != 0 || libc::fcntl(write_fd, libc::F_SETFL, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(write);
        Ok(Child { pid: child.id() as Pid, ready: read })
    }

    /// The new master's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The descriptor to poll.
    pub fn ready_fd(&self) -> BorrowedFd<'_> {
        self.ready.as_fd()
    }

    /// Some(true): it serves; Some(false): it exited first; None: not yet.
    pub fn read_ready(&mut self) -> Option<bool> {
        let mut b = [0u8; 1];
        match nix::unistd::read(self.ready.as_raw_fd(), &mut b) {
            Ok(1) => Some(b[0] == READY),
            Ok(_) => Some(false),
            Err(nix::errno::Errno::EAGAIN) => None,
            Err(_) => Some(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    #[test]
    fn only_a_pipe_is_taken_for_the_upgrade_pipe() {
        let (read, _write) = nix::unistd::pipe().unwrap();
        assert!(super::is_pipe(read.as_raw_fd()));
        assert!(!super::is_pipe(0x7fff_fff0), "not open");
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(!super::is_pipe(file.as_raw_fd()), "not a pipe");
    }
}
