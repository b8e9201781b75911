//! Sockets and descriptors, the one way each is done: a socket bound into
//! the port's SO_REUSEPORT group (the master's reservation, each worker's
//! listeners, the bridge systemd keeps across a restart), a bound socket
//! handed to may as a listener, the accept loop of a listener
//! ([`Acceptor`], for the API and the metrics alike), and close-on-exec on
//! any descriptor; and which peers are trusted ([`Peers`]).
//!
//! Every socket is close-on-exec from birth and sets SO_REUSEADDR (as may's
//! own bind does: a restart must not fail on connections in TIME_WAIT).
//!
//! The accept loop never spins. When the process is out of descriptors or
//! memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) it backs off, 10 ms doubling to
//! 1 s, logging at most once a second with a count, while the connections
//! it has go on being served.

use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::coroutine::JoinHandle;
use may::net::{TcpListener, TcpStream};
use socket2::{Domain, SockRef, Socket, Type};

/// First pause after an accept failed for want of resources.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between accept attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Least time between two log lines about the same trouble.
pub const LOG_EVERY: Duration = Duration::from_secs(1);

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
pub fn listen(socket: Socket, backlog: i32) -> io::Result<TcpListener> {
    socket.listen(backlog)?;
    // SAFETY: the descriptor is the listening socket just released by
    // socket2; the may listener takes sole ownership of it.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// A listener's accept loop, in a coroutine of its own until [`Acceptor::stop`].
pub struct Acceptor {
    listener: Arc<TcpListener>,
    stopping: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Acceptor {
    /// Accepts on `listener` in a coroutine named `name`, handing each
    /// connection to `admit`.
    pub fn start(
        listener: TcpListener,
        name: &str,
        mut admit: impl FnMut(TcpStream) + Send + 'static,
    ) -> io::Result<Acceptor> {
        let listener = Arc::new(listener);
        let stopping = Arc::new(AtomicBool::new(false));
        let (accepting, stop) = (listener.clone(), stopping.clone());
        // may's spawn is unsafe because a coroutine must not keep a
        // thread-local across a yield (it may resume on another thread);
        // this loop keeps none.
        let handle = may::go!(
            may::coroutine::Builder::new().name(name.to_string()),
            move || {
                let mut backoff = Backoff::default();
                while !stop.load(Ordering::SeqCst) {
                    match accepting.accept() {
                        Ok((stream, _)) => {
                            backoff.reset();
                            admit(stream);
                        }
                        Err(_) if stop.load(Ordering::SeqCst) => break,
                        Err(e) if out_of_resources(&e) => backoff.pause(&e),
                        Err(e) => log::debug!("accept failed: {e}"),
                    }
                }
            }
        )?;
        Ok(Acceptor {
            listener,
            stopping,
            handle,
        })
    }

    /// Stops accepting and closes the listener: the kernel sends new
    /// connections to the other listeners of the port (and, with
    /// `net.ipv4.tcp_migrate_req`, moves the ones waiting in this queue).
    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Shutting a listening socket down wakes the parked accept with an
        // error; the loop then ends. The socket closes when the last
        // reference to it goes, at the end of this function.
        let _ = SockRef::from(self.listener.inner()).shutdown(Shutdown::Read);
        let _ = self.handle.join();
    }
}

/// Failures that mean "no descriptor or memory now": retrying at once
/// would spin.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Growing pauses between accept attempts while resources are short.
#[derive(Default)]
struct Backoff {
    delay: Option<Duration>,
    log: Throttle,
}

impl Backoff {
    fn pause(&mut self, e: &io::Error) {
        let delay = self.next_delay();
        self.log.note(|n| {
            log::warn!("accept failed {n} times ({e}): pausing accepts, serving open connections")
        });
        may::coroutine::sleep(delay);
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.delay.map_or(BACKOFF_MIN, |d| (d * 2).min(BACKOFF_MAX));
        self.delay = Some(delay);
        delay
    }

    fn reset(&mut self) {
        self.delay = None;
    }
}

/// Logs a recurring event at most once per [`LOG_EVERY`], with a count.
#[derive(Default)]
pub struct Throttle {
    last: Option<Instant>,
    count: u64,
}

impl Throttle {
    /// Counts one event; calls `log` with the count of those not logged
    /// yet, when the last line is older than [`LOG_EVERY`].
    pub fn note(&mut self, log: impl FnOnce(u64)) {
        self.note_many(1, log);
    }

    /// Counts `n` events at once, as [`Throttle::note`] counts one.
    pub fn note_many(&mut self, n: u64, log: impl FnOnce(u64)) {
        self.count += n;
        if self.last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            log(self.count);
            self.count = 0;
            self.last = Some(Instant::now());
        }
    }
}

/// Peers trusted to name the client (`forwarded_allow_ips`,
/// `proxy_allow_ips`): `*`, or addresses and networks (`10.0.0.0/8`,
/// `fd00::/8`) separated by commas. An IPv4 client seen on an IPv6 socket
/// (`::ffff:192.0.2.1`) is matched as the IPv4 address it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Peers {
    /// `*`: every peer.
    Any,
    /// These addresses and networks.
    Only(Vec<Network>),
}

/// An address, or a network: an address and how many of its leading bits
/// a peer's must share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Peers {
    /// Parses a list as the settings write it.
    pub fn parse(text: &str) -> Result<Peers, String> {
        if text.trim() == "*" {
            return Ok(Peers::Any);
        }
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Network::parse)
            .collect::<Result<_, _>>()
            .map(Peers::Only)
    }

    /// Whether `peer` is one of them.
    pub fn allows(&self, peer: IpAddr) -> bool {
        match self {
            Peers::Any => true,
            Peers::Only(networks) => networks.iter().any(|n| n.contains(peer.to_canonical())),
        }
    }
}

impl Network {
    fn parse(text: &str) -> Result<Network, String> {
        let bad = || format!("{text:?} is not an IP address or network");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits.parse::<u8>().map_err(|_| bad())?)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        // An IPv4-mapped network (`::ffff:10.0.0.0/104`) is the IPv4 one;
        // one shorter than the mapping's 96 bits is not.
        let canonical = addr.to_canonical();
        let prefix = match addr.is_ipv6() && canonical.is_ipv4() {
            true => prefix.checked_sub(96).ok_or_else(bad)?,
            false => prefix,
        };
        Ok(Network {
            addr: canonical,
            prefix,
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let (net, ip, width) = match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n).into(), u32::from(i).into(), 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let host_bits = width - u32::from(self.prefix);
        // A shift by the whole width (a /0) would overflow: no bit is kept.
        let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
        (net ^ ip) & mask == 0
    }
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
    fn peers_are_addresses_and_networks() {
        let peers = Peers::parse("127.0.0.1, 10.0.0.0/8, fd00::/8, ::1").unwrap();
        for ip in ["127.0.0.1", "10.1.2.3", "fd12::1", "::1", "::ffff:10.9.9.9"] {
            assert!(peers.allows(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.2",
            "11.0.0.1",
            "fe80::1",
            "::2",
            "::ffff:127.0.0.2",
        ] {
            assert!(!peers.allows(ip.parse().unwrap()), "{ip}");
        }
        let everyone = Peers::parse("0.0.0.0/0").unwrap();
        assert!(everyone.allows("192.0.2.1".parse().unwrap()));
        assert!(!everyone.allows("2001:db8::1".parse().unwrap()));
        assert_eq!(Peers::parse("*").unwrap(), Peers::Any);
        let mapped = Peers::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(mapped.allows("10.1.1.1".parse().unwrap()));
        assert!(!mapped.allows("11.1.1.1".parse().unwrap()));
        for bad in [
            "nope",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/x",
            "10.0.0.0/",
            "::ffff:0:0/80",
        ] {
            assert!(Peers::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_to_a_second() {
        let mut b = Backoff::default();
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(out_of_resources(&e));
        assert!(!out_of_resources(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
        let delays: Vec<Duration> = (0..9).map(|_| b.next_delay()).collect();
        assert_eq!(delays[0], BACKOFF_MIN);
        assert_eq!(delays[1], BACKOFF_MIN * 2);
        assert_eq!(*delays.last().unwrap(), BACKOFF_MAX);
        b.reset();
        assert!(b.delay.is_none());
    }

    #[test]
    fn throttle_logs_once_per_interval_with_a_count() {
        let mut t = Throttle::default();
        let mut logged = Vec::new();
        for _ in 0..5 {
            t.note(|n| logged.push(n));
        }
        assert_eq!(logged, vec![1], "the first at once, the rest counted");
        t.last = Some(Instant::now() - LOG_EVERY);
        t.note(|n| logged.push(n));
        assert_eq!(logged, vec![1, 5]);
    }

    #[test]
    fn two_reuseport_sockets_share_a_port() {
        let first = bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap().as_socket().unwrap();
        let second = bind_reuseport(addr).unwrap();
        assert_eq!(second.local_addr().unwrap().as_socket(), Some(addr));
    }
}
