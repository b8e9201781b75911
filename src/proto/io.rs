//! What the connection loop needs of a connection ([`Io`]), and the plain
//! TCP socket's implementation ([`TcpIo`]). A TLS stream (`tls`) is a
//! second implementation; the loop's unit tests drive it with scripted
//! bytes.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use may::io::{WaitIo, WaitIoWaker};
use may::net::TcpStream;

/// A connection as the loop uses it. Reads park the coroutine until bytes
/// arrive; writes never park: a write that would block says so, and the
/// loop waits ([`Io::wait`]) while it times the client.
pub trait Io {
    /// Reads what the peer sent into `buf`, parking until something
    /// arrives; 0 at the end of input. With `wakeable`, a wake-up by the
    /// [`Io::waker`] that finds nothing to read returns None (otherwise it
    /// is one more wait: a wake-up that comes late, once the coroutine is
    /// busy again, is harmless).
    fn read_or_woken(&mut self, buf: &mut [u8], wakeable: bool) -> io::Result<Option<usize>>;
    /// Reads what the peer sent into `buf`, parking until something
    /// arrives; 0 at the end of input.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(n) = self.read_or_woken(buf, false)? {
                return Ok(n);
            }
        }
    }
    /// Writes what fits of `buf` now, without parking: `WouldBlock` when
    /// nothing does.
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Sends what the connection itself still holds of earlier writes (a
    /// TLS stream's records), without parking: `WouldBlock` while some is
    /// left. A socket holds nothing.
    fn try_flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Parks until the connection can make progress: readable, writable,
    /// or its peer ending.
    fn wait(&mut self);
    /// Reads, parking at most `timeout` (then an error): what a closing
    /// connection discards while the client takes its last response.
    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize>;
    /// Shuts one or both directions down.
    fn shutdown(&mut self, how: Shutdown) -> io::Result<()>;
    /// What wakes a [`Io::read_idle`] from another thread (the sweep's
    /// request to park the connection); None: the connection never parks.
    fn waker(&self) -> Option<WaitIoWaker> {
        None
    }
    /// Like [`Io::read`], between requests: None when the [`Io::waker`]
    /// woke it and nothing had arrived.
    fn read_idle(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        self.read_or_woken(buf, true)
    }
}

/// Whether a socket error only says the peer left (reset the connection).
pub fn peer_left(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Events of a wait that mean the peer will send nothing more (or the
/// socket failed): after them a short read no longer proves the socket
/// drained, since the read that took the last bytes also took the FIN,
/// and no event follows a FIN.
const END_EVENTS: usize = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as usize;
/// The bit may's `WaitIoWaker::wakeup` adds to the events a wait returns.
const WOKEN: usize = 0x8000_0000;

/// A TCP socket on may's event loop: non-blocking and registered with
/// may's edge-triggered epoll, so reads and writes are plain system calls
/// and the coroutine parks on `wait_io` only when the socket has nothing.
/// A read that did not fill its buffer has drained the socket, so the next
/// read waits first: one `recv` and one `send` per request, no `recv` that
/// returns EAGAIN. Any wait resets that knowledge (a wait for writing
/// consumes the read event as well), and so does a wait that reports the
/// peer's end (EPOLLRDHUP): the read that takes the last bytes takes the
/// FIN with them, and no event follows a FIN.
pub struct TcpIo {
    stream: TcpStream,
    /// The last read drained the socket, and no wait has happened since.
    must_wait: bool,
    /// A wait reported the peer's end of input (or an error): every read
    /// from now on goes to the socket.
    peer_ending: bool,
}

impl TcpIo {
    /// The accepted socket `stream`.
    pub fn new(stream: TcpStream) -> TcpIo {
        TcpIo {
            stream,
            must_wait: false,
            peer_ending: false,
        }
    }
}

impl TcpIo {
    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.stream.peer_addr()
    }

    /// Parks until at least one byte has arrived (true), or the peer ended
    /// without sending any (false); takes nothing. What a connection that
    /// must begin with something other than a request (a PROXY protocol
    /// header, a TLS handshake) waits for before it is timed.
    pub fn await_bytes(&mut self) -> io::Result<bool> {
        let mut one = [0u8; 1];
        loop {
            match self.peek(&mut one) {
                Ok(n) => return Ok(n > 0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Copies what has arrived into `buf` without taking it: `WouldBlock`
    /// when nothing has.
    pub(super) fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.inner().peek(buf)
    }

    /// Takes `buf.len()` bytes that a peek saw.
    pub(super) fn take(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.stream.inner_mut().read_exact(buf)
    }

    /// The socket itself, for a layer above that writes to it (TLS).
    pub(super) fn socket(&mut self) -> &mut std::net::TcpStream {
        self.stream.inner_mut()
    }

    /// Whether a wait reported the peer's end of input (or an error, or
    /// the read side shut here).
    pub(super) fn peer_ending(&self) -> bool {
        self.peer_ending
    }

    /// Parks until an event, and returns them (may's epoll events, plus
    /// [`WOKEN`]).
    fn wait_events(&mut self) -> usize {
        let events = self.stream.wait_io();
        self.must_wait = false;
        self.peer_ending |= events & END_EVENTS != 0;
        events
    }
}

impl AsRawFd for TcpIo {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

impl Io for TcpIo {
    /// Waits first when the socket was drained.
    fn read_or_woken(&mut self, buf: &mut [u8], wakeable: bool) -> io::Result<Option<usize>> {
        // Kept across a read interrupted after the wait.
        let mut woken = false;
        loop {
            if self.must_wait {
                woken = self.wait_events() & WOKEN != 0;
            }
            match self.stream.inner_mut().read(buf) {
                Ok(n) => {
                    // A short read took everything the socket had: an event
                    // comes when more arrives (unless the peer is ending).
                    self.must_wait = n > 0 && n < buf.len() && !self.peer_ending;
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.must_wait = true;
                    if woken && wakeable {
                        return Ok(None);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn waker(&self) -> Option<WaitIoWaker> {
        Some(self.stream.waker())
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.stream.inner_mut().write(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    fn wait(&mut self) {
        self.wait_events();
    }

    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(timeout))?;
        self.stream.read(buf)
    }

    fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        self.stream.shutdown(how)
    }
}
