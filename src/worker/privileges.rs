//! Dropping root privileges, between binding and serving.
//!
//! Linux admits a socket to a SO_REUSEPORT group only if its owner has the
//! same effective uid as the sockets already in it, so every worker binds
//! as the master's user (root, for port 80) and only then becomes the
//! unprivileged user.

use nix::errno::Errno;
use nix::unistd::{Gid, Group, Uid, User};

/// Why a user cannot be served as.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// The user or group database could not be read.
    #[error("looking up {what} {name}")]
    Lookup {
        what: &'static str,
        name: String,
        source: Errno,
    },
    /// No such user or group.
    #[error("{what} {name}: no such {what}")]
    Unknown { what: &'static str, name: String },
    /// setgroups, setgid or setuid failed.
    #[error("{call}({id})")]
    Switch {
        call: &'static str,
        id: u32,
        source: Errno,
    },
}

/// The uid and gid a user/group pair names (group defaults to the user's).
pub fn resolve(user: &str, group: Option<&str>) -> Result<(Uid, Gid), PrivilegeError> {
    let lookup = |what, name: &str, source| PrivilegeError::Lookup {
        what,
        name: name.to_string(),
        source,
    };
    let unknown = |what, name: &str| PrivilegeError::Unknown {
        what,
        name: name.to_string(),
    };
    let u = User::from_name(user)
        .map_err(|e| lookup("user", user, e))?
        .ok_or_else(|| unknown("user", user))?;
    let gid = match group {
        Some(g) => {
            Group::from_name(g)
                .map_err(|e| lookup("group", g, e))?
                .ok_or_else(|| unknown("group", g))?
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
    let switch = |call, id: u32| move |source| PrivilegeError::Switch { call, id, source };
    nix::unistd::setgroups(&[gid]).map_err(switch("setgroups", gid.as_raw()))?;
    nix::unistd::setgid(gid).map_err(switch("setgid", gid.as_raw()))?;
    nix::unistd::setuid(uid).map_err(switch("setuid", uid.as_raw()))?;
    log::info!("serving as {user} (uid {uid}, gid {gid})");
    Ok(())
}
