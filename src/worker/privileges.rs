//! What a worker does between binding and serving: raise the listener's
//! accept backlog, and drop root privileges.
//!
//! Linux admits a socket to a SO_REUSEPORT group only if its owner has the
//! same effective uid as the sockets already in it, so every worker binds
//! as the master's user (root, for port 80) and only then becomes the
//! unprivileged user.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use nix::unistd::{Group, User};

/// Why privileges could not be dropped.
#[derive(Debug)]
pub struct PrivilegeError(String);

impl fmt::Display for PrivilegeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PrivilegeError {}

/// The uid and gid a user/group pair names (group defaults to the user's).
pub fn resolve(user: &str, group: Option<&str>) -> Result<(nix::unistd::Uid, nix::unistd::Gid), PrivilegeError> {
    let u = User::from_name(user)
        .map_err(|e| PrivilegeError(format!("user {user}: {e}")))?
        .ok_or_else(|| PrivilegeError(format!("user {user}: no such user")))?;
    let gid = match group {
        Some(g) => {
            Group::from_name(g)
                .map_err(|e| PrivilegeError(format!("group {g}: {e}")))?
                .ok_or_else(|| PrivilegeError(format!("group {g}: no such group")))?
                .gid
        }
        None => u.gid,
    };
    Ok((u.uid, gid))
}

/// Becomes `user`/`group` (no-op when `user` is None). glibc applies
/// setuid/setgid to every thread of the process.
pub fn drop_to(user: Option<&str>, group: Option<&str>) -> Result<(), PrivilegeError> {
    let Some(user) = user else { return Ok(()) };
    let (uid, gid) = resolve(user, group)?;
    if nix::unistd::geteuid() == uid {
        return Ok(());
    }
    nix::unistd::setgroups(&[gid]).map_err(|e| PrivilegeError(format!("setgroups({gid}): {e}")))?;
    nix::unistd::setgid(gid).map_err(|e| PrivilegeError(format!("setgid({gid}): {e}")))?;
    nix::unistd::setuid(uid).map_err(|e| PrivilegeError(format!("setuid({uid}): {e}")))?;
    log::info!("serving as {user} (uid {uid}, gid {gid})");
    Ok(())
}

/// may binds with a backlog of 1024; calling listen() again on the
/// listening socket sets the configured one (the kernel caps it at
/// net.core.somaxconn).
pub fn raise_backlog(addr: SocketAddr, backlog: i32) -> std::io::Result<()> {
    let fd = find_listener(addr).ok_or_else(|| std::io::Error::other("listening socket not found"))?;
    // SAFETY: `fd` is a listening TCP socket of this process.
    if unsafe { libc::listen(fd, backlog) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The descriptor of this process's listening socket bound to `addr`.
fn find_listener(addr: SocketAddr) -> Option<RawFd> {
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else { continue };
        if is_listener_on(fd, addr) {
            return Some(fd);
        }
    }
    None
}

fn is_listener_on(fd: RawFd, addr: SocketAddr) -> bool {
    let mut accepting: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid pointers; a non-socket fd simply fails with ENOTSOCK.
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN, (&mut accepting as *mut libc::c_int).cast(), &mut len)
    };
    if rc != 0 || accepting == 0 {
        return false;
    }
    // SAFETY: `fd` is open for the duration of this call (listed in /proc/self/fd).
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let local = socket2::SockRef::from(&borrowed).local_addr().ok().and_then(|a| a.as_socket());
    local == Some(addr)
}
