//! The listening address, settled before any fork.
//!
//! Workers bind the address themselves with SO_REUSEPORT. Two things make
//! that safe: the master first binds the address without SO_REUSEPORT, so a
//! port another process already holds fails with EADDRINUSE instead of
//! silently sharing traffic; and for port 0 the master binds one
//! SO_REUSEPORT socket (never listening) to learn a concrete port, keeps it
//! open, and hands that port to every worker.

use std::io;
use std::net::SocketAddr;

use socket2::Socket;

/// Why the address cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Another process holds the address.
    #[error("bind {0}: address already in use (is another server running?)")]
    InUse(SocketAddr),
    /// Binding failed otherwise (not a local address, no permission...).
    #[error("bind {0}")]
    Bind(SocketAddr, #[source] io::Error),
}

/// A reserved address: the concrete port, held for the master's lifetime.
pub struct Reservation {
    /// The address every worker binds (port never 0).
    pub addr: SocketAddr,
    socket: Socket,
}

impl Reservation {
    /// The reserving socket's descriptor (a worker closes it after fork).
    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.socket.as_raw_fd()
    }
}

/// Checks that `bind` is free (unless `exclusive` is false: after a binary
/// upgrade the adopted workers hold the port, after a restart the bridge
/// systemd kept does) and reserves a concrete port for it.
pub fn reserve(bind: SocketAddr, exclusive: bool) -> Result<Reservation, ListenError> {
    if exclusive && bind.port() != 0 {
        probe_exclusive(bind)?;
    }
    let socket = crate::net::bind_reuseport(bind).map_err(|e| bind_error(bind, e))?;
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| ListenError::Bind(bind, io::Error::other("no local address")))?;
    Ok(Reservation { addr, socket })
}

/// Binds once without SO_REUSEPORT: fails if anyone holds the address.
fn probe_exclusive(bind: SocketAddr) -> Result<(), ListenError> {
    let probe = crate::net::socket_for(bind).map_err(|e| ListenError::Bind(bind, e))?;
    probe.bind(&bind.into()).map_err(|e| bind_error(bind, e))
}

fn bind_error(addr: SocketAddr, e: io::Error) -> ListenError {
    if e.kind() == io::ErrorKind::AddrInUse {
        ListenError::InUse(addr)
    } else {
        ListenError::Bind(addr, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_gets_a_concrete_port() {
        let r = reserve("127.0.0.1:0".parse().unwrap(), true).unwrap();
        assert_ne!(r.addr.port(), 0);
    }

    #[test]
    fn a_held_port_is_refused() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        assert!(matches!(reserve(addr, true), Err(ListenError::InUse(_))));
    }
}
