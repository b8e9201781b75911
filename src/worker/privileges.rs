//! Dropping root privileges, between binding and serving.
//!
//! Linux admits a socket to a SO_REUSEPORT group only if its owner has the
//! same effective uid as the sockets already in it, so every worker binds
//! as the master's user (root, for port 80) and only then becomes the
//! unprivileged user.

use std::fmt;

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
