//! Sockets and descriptors, the one way each is done: a socket bound into
//! the port's SO_REUSEPORT group (the master's reservation, each worker's
//! listeners, the bridge systemd keeps across a restart), a bound socket
//! handed to may as a listener, and close-on-exec on any descriptor.
//!
//! Every socket is close-on-exec from birth and sets SO_REUSEADDR (as may's
//! own bind does: a restart must not fail on connections in TIME_WAIT).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};

use socket2::{Domain, Socket, Type};

/// A new TCP socket for `addr` (close-on-exec, SO_REUSEADDR), unbound.
pub fn socket_for(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    socket.set_reuse_address(true)?;
    Ok(socket)
}

/// A socket bound to `addr` in the port's SO_REUSEPORT group, not yet
/// listening (until it listens, the kernel sends it no connection).
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<Socket> {
    let socket = socket_for(addr)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Starts `socket` listening with `backlog` (the kernel caps it at
/// `net.core.somaxconn`) and hands it to may.
pub fn listen(socket: Socket, backlog: i32) -> io::Result<may::net::TcpListener> {
    socket.listen(backlog)?;
    // SAFETY: the descriptor is the listening socket just released by
    // socket2; the may listener takes sole ownership of it.
    Ok(unsafe { may::net::TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// Sets or clears close-on-exec on `fd` (a descriptor handed on across a
/// binary upgrade's exec is cleared for it, then set again).
pub fn set_close_on_exec(fd: RawFd, on: bool) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_reuseport_sockets_share_a_port() {
        let first = bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap().as_socket().unwrap();
        let second = bind_reuseport(addr).unwrap();
        assert_eq!(second.local_addr().unwrap().as_socket(), Some(addr));
    }
}
