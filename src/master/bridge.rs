//! The listening socket that bridges a `systemctl restart`.
//!
//! A restart is a stop, then a start: between the old workers closing their
//! listeners and the new ones opening theirs, connections to the port would
//! be refused. So at a stop under systemd the master first opens one more
//! listener in the port's SO_REUSEPORT group (the bridge) and hands it to
//! systemd's file descriptor store (`FDSTORE=1`, the unit's
//! `FileDescriptorStoreMax=`), before its workers drain: connections that
//! arrive while no worker listens wait in the bridge's queue. systemd keeps
//! the store across a restart and passes the bridge to the new master
//! (`LISTEN_FDS`, named [`FDNAME`]); once the new workers serve, the master
//! removes it from the store and closes it, and the kernel moves the
//! connections still queued in it to the workers' listeners
//! (`net.ipv4.tcp_migrate_req = 1`, as tuning/ sets; without it they are
//! reset). After a plain `systemctl stop` systemd empties the store: what
//! waited in the bridge is reset then.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use socket2::Socket;

use super::notify;

/// The name systemd keeps the bridge under (`FDNAME=`, `LISTEN_FDNAMES`).
pub const FDNAME: &str = "orders-bridge";
/// systemd's first passed descriptor (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// At a stop under systemd: opens the bridge on `addr` and hands it to
/// systemd's store. Returns whether systemd was sent it.
pub fn hand_to_systemd(addr: SocketAddr, backlog: i32) -> io::Result<bool> {
    if !notify::under_systemd() {
        return Ok(false);
    }
    let socket = crate::net::bind_reuseport(addr)?;
    socket.listen(backlog)?;
    // systemd keeps its own copy; ours closes when `socket` drops.
    Ok(notify::notify_with_fds(
        &format!("FDSTORE=1\nFDNAME={FDNAME}"),
        &[socket.as_raw_fd()],
    ))
}

/// At start: the bridge systemd passed back, if it did (`LISTEN_PID` is
/// this process and `LISTEN_FDNAMES` names it). The `LISTEN_*` variables
/// are removed so workers and upgrades never see them.
pub fn take_from_systemd() -> Option<Bridge> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    if pid?.parse::<u32>().ok()? != std::process::id() {
        return None;
    }
    let count: RawFd = count?.parse().ok()?;
    let ours = names
        .split(':')
        .position(|n| n == FDNAME)
        .map(|i| i as RawFd);
    let mut bridge = None;
    for index in 0..count {
        let fd = LISTEN_FDS_START + index;
        // SAFETY: systemd passed descriptors 3..3+LISTEN_FDS to this
        // process (LISTEN_PID); nothing else here owns them. Each is either
        // taken or closed, so none leaks into workers or an upgrade.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = crate::net::set_close_on_exec(fd, true);
        if Some(index) == ours {
            bridge = Bridge::from_fd(owned);
        } else {
            log::warn!("systemd passed descriptor {fd}, not ours ({FDNAME}): closing it");
        }
    }
    bridge
}

/// A bridge passed back by systemd, held until the new workers serve.
pub struct Bridge {
    socket: Socket,
    /// The address it listens on.
    pub addr: SocketAddr,
}

impl Bridge {
    /// The bridge in `fd`, if it is a listening TCP socket (else closed, logged).
    fn from_fd(fd: OwnedFd) -> Option<Bridge> {
        let socket = Socket::from(fd);
        let listening = socket.is_listener().unwrap_or(false);
        match socket.local_addr().ok().and_then(|a| a.as_socket()) {
            Some(addr) if listening => Some(Bridge { socket, addr }),
            _ => {
                log::warn!(
                    "systemd passed {FDNAME}, but it is no listening TCP socket: closing it"
                );
                None
            }
        }
    }

    /// Its descriptor (a forked worker closes it).
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Stops it listening (the socket is shared with systemd's copy: this
    /// takes both out of the port's group, even if the removal below were
    /// lost, so it can never hold connections nobody accepts), removes it
    /// from systemd's store and closes it. Its queued connections move to
    /// the workers' listeners (`tcp_migrate_req`).
    pub fn release(self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Read);
        notify::notify(&format!("FDSTOREREMOVE=1\nFDNAME={FDNAME}"));
        drop(self.socket);
    }
}
