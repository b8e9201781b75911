//! systemd's notification protocol (`Type=notify`), implemented directly:
//! one datagram to the socket named by `NOTIFY_SOCKET`. Without that
//! variable (not under systemd) every call does nothing.
//!
//! `READY=1` also carries the address every worker serves, as
//! `X_ORDERS_ADDRESS=HOST:PORT` (sd_notify's convention for a variable of
//! the application's own; systemd ignores it): the machine-readable way to
//! learn the port of a server started on port 0 (the test harness uses it).

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;

/// Env var systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Sends `state` (e.g. `READY=1`) to systemd; returns whether it was sent.
pub fn notify(state: &str) -> bool {
    notify_with_fds(state, &[])
}

/// Whether systemd listens for notifications (`NOTIFY_SOCKET` is set).
pub fn under_systemd() -> bool {
    std::env::var_os(NOTIFY_SOCKET_ENV).is_some()
}

/// Sends `state` with descriptors attached (`FDSTORE=1`: systemd keeps
/// copies of them); returns whether it was sent.
pub fn notify_with_fds(state: &str, fds: &[std::os::fd::RawFd]) -> bool {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    use std::os::fd::AsRawFd;
    let Ok(path) = std::env::var(NOTIFY_SOCKET_ENV) else {
        return false;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return false;
    };
    let addr = match path.strip_prefix('@') {
        Some(name) => UnixAddr::new_abstract(name.as_bytes()),
        None => UnixAddr::new(path.as_str()),
    };
    let iov = [std::io::IoSlice::new(state.as_bytes())];
    let rights = [ControlMessage::ScmRights(fds)];
    let control: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    let sent = addr
        .and_then(|addr| {
            sendmsg(
                socket.as_raw_fd(),
                &iov,
                control,
                MsgFlags::empty(),
                Some(&addr),
            )
        })
        .map_err(std::io::Error::from);
    if let Err(e) = &sent {
        log::warn!("sd_notify {state:?} failed: {e}");
    }
    sent.is_ok()
}

/// The variable of `READY=1` that carries the address.
pub const ADDRESS_VAR: &str = "X_ORDERS_ADDRESS";

/// The variable of `READY=1` that carries the metrics address, when served.
pub const METRICS_ADDRESS_VAR: &str = "X_ORDERS_METRICS_ADDRESS";

/// `READY=1` with this process as the main pid, the address and the
/// metrics address.
pub fn ready(addr: SocketAddr, metrics: Option<SocketAddr>) {
    let mut state = format!(
        "READY=1\nMAINPID={}\nSTATUS=serving on {addr}\n{ADDRESS_VAR}={addr}",
        std::process::id()
    );
    if let Some(m) = metrics {
        state.push_str(&format!("\n{METRICS_ADDRESS_VAR}={m}"));
    }
    notify(&state);
}

/// `RELOADING=1` with the monotonic timestamp systemd requires for `Type=notify-reload`.
pub fn reloading() {
    let usec = crate::clock::monotonic_ms() * 1000;
    notify(&format!(
        "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading"
    ));
}

/// `STOPPING=1`.
pub fn stopping() {
    notify("STOPPING=1\nSTATUS=stopping");
}

#[cfg(test)]
mod tests {
    #[test]
    fn datagrams_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        std::env::set_var(super::NOTIFY_SOCKET_ENV, &path);
        assert!(super::notify("READY=1"));
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::env::remove_var(super::NOTIFY_SOCKET_ENV);
    }
}
