//! TLS on a connection ([`TlsIo`]): rustls over the TCP socket, as a
//! second implementation of [`Io`], so the connection loop serves HTTPS
//! exactly as it serves plain HTTP.
//!
//! The handshake ([`TlsIo::handshake`]) runs in the connection's coroutine
//! before its first request, timed by the sweep like a request
//! (`client_timeout`). Afterwards, reads decrypt what the socket brought;
//! writes encrypt into rustls' outgoing buffer, bounded by
//! [`BUFFER_LIMIT`], and say `WouldBlock` while earlier records are still
//! unsent, so a response the client does not read holds no more memory
//! than in clear. A connection closing sends `close_notify` first.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use may::io::WaitIoWaker;
use rustls::{ServerConfig, ServerConnection};

use super::io::{Io, TcpIo};

/// The most bytes rustls holds for the peer (records not yet sent): the
/// output a response may have in flight, as the socket's own send buffer
/// bounds it in clear.
pub const BUFFER_LIMIT: usize = 64 * 1024;

/// A TLS connection on a TCP socket of may's event loop.
pub struct TlsIo {
    tcp: TcpIo,
    tls: ServerConnection,
    /// `close_notify` was queued: nothing more is encrypted.
    closing: bool,
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer broke the protocol, or offered nothing acceptable (rustls
    /// sent it an alert).
    #[error("TLS handshake failed")]
    Tls(#[source] rustls::Error),
    /// The peer left (or the sweep cut it at `client_timeout`) before the
    /// handshake ended.
    #[error("the connection ended during the TLS handshake")]
    Ended,
    /// The socket failed.
    #[error("TLS handshake")]
    Io(#[source] io::Error),
}

impl HandshakeError {
    /// Whether the peer simply left (ended or reset the connection): not a
    /// failure of the protocol.
    pub fn peer_left(&self) -> bool {
        match self {
            HandshakeError::Ended => true,
            HandshakeError::Io(e) => super::io::peer_left(e),
            HandshakeError::Tls(_) => false,
        }
    }
}

impl TlsIo {
    /// A server-side TLS connection on `tcp`, not yet handshaken (on
    /// failure, `tcp` is given back).
    pub fn new(tcp: TcpIo, config: Arc<ServerConfig>) -> Result<TlsIo, (TcpIo, rustls::Error)> {
        let mut tls = match ServerConnection::new(config) {
            Ok(tls) => tls,
            Err(e) => return Err((tcp, e)),
        };
        tls.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(TlsIo {
            tcp,
            tls,
            closing: false,
        })
    }

    /// Runs the handshake to its end, parking while the peer is slow.
    pub fn handshake(&mut self) -> Result<(), HandshakeError> {
        while self.tls.is_handshaking() {
            self.send_all()?;
            if !self.tls.wants_read() {
                continue;
            }
            match self.receive(false) {
                Ok(Some(0)) => return Err(HandshakeError::Ended),
                Ok(_) => {}
                Err(Received::Tls(e)) => return Err(HandshakeError::Tls(e)),
                Err(Received::Io(e)) => return Err(HandshakeError::Io(e)),
            }
        }
        // The last flight (TLS 1.2's Finished, TLS 1.3's session tickets).
        self.send_all()
    }

    /// The name the client asked for (SNI), if it sent one.
    pub fn server_name(&self) -> Option<&str> {
        self.tls.server_name()
    }

    /// The application protocol agreed on (ALPN), if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.tls.alpn_protocol()
    }

    /// Writes what rustls holds for the peer, parking while the socket is
    /// full; for the handshake only, whose flights a socket's send buffer
    /// takes at once: a peer that reads nothing and ends (or is cut by the
    /// sweep) ends it.
    fn send_all(&mut self) -> Result<(), HandshakeError> {
        loop {
            match self.push() {
                Ok(()) if !self.tls.wants_write() => return Ok(()),
                Ok(()) => {
                    self.tcp.wait();
                    if self.tcp.peer_ending() {
                        return Err(HandshakeError::Ended);
                    }
                }
                Err(e) => return Err(HandshakeError::Io(e)),
            }
        }
    }

    /// Writes what rustls holds for the peer, as far as the socket takes
    /// it now.
    fn push(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(self.tcp.socket()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads records from the socket (parking until some arrive) and
    /// processes them: Some(0) at the end of input, None when `wakeable`
    /// and the waker woke the read with nothing arrived.
    fn receive(&mut self, wakeable: bool) -> Result<Option<usize>, Received> {
        let mut socket = Socket {
            tcp: &mut self.tcp,
            wakeable,
            woken: false,
        };
        let n = match self.tls.read_tls(&mut socket) {
            Ok(n) => n,
            Err(_) if socket.woken => return Ok(None),
            Err(e) => return Err(Received::Io(e)),
        };
        if let Err(e) = self.tls.process_new_packets() {
            // The alert rustls queued for the peer, if the socket takes it.
            let _ = self.push();
            return Err(Received::Tls(e));
        }
        Ok(Some(n))
    }
}

/// Why reading records failed.
enum Received {
    Tls(rustls::Error),
    Io(io::Error),
}

/// The socket as rustls reads it: one read, parking until bytes arrive
/// (or, when `wakeable`, until the waker: then `woken`).
struct Socket<'a> {
    tcp: &'a mut TcpIo,
    wakeable: bool,
    woken: bool,
}

impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.tcp.read_or_woken(buf, self.wakeable)? {
            Some(n) => Ok(n),
            None => {
                self.woken = true;
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
    }
}

impl AsRawFd for TlsIo {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }
}

impl Io for TlsIo {
    /// Reads decrypted bytes, or waits for records.
    fn read_or_woken(&mut self, buf: &mut [u8], wakeable: bool) -> io::Result<Option<usize>> {
        loop {
            match self.tls.reader().read(buf) {
                // 0: the peer's close_notify.
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed without close_notify: an end like any
                // other (HTTP's framing tells a cut request anyway).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Some(0)),
                Err(e) => return Err(e),
            }
            // What rustls owes the peer (a key update's answer) goes out
            // before the wait, as far as the socket takes it.
            self.push()?;
            match self.receive(wakeable) {
                Ok(None) => return Ok(None),
                // Bytes, or the end: the reader says which next.
                Ok(Some(_)) => {}
                Err(Received::Tls(e)) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                Err(Received::Io(e)) => return Err(e),
            }
        }
    }

    fn waker(&self) -> Option<WaitIoWaker> {
        self.tcp.waker()
    }

    /// Encrypts what rustls takes of `buf` once every earlier record is
    /// sent (`WouldBlock` until then), and sends what the socket takes.
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.push()?;
        if self.tls.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.tls.writer().write(buf)?;
        self.push()?;
        match n {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn try_flush(&mut self) -> io::Result<()> {
        self.push()?;
        match self.tls.wants_write() {
            true => Err(io::ErrorKind::WouldBlock.into()),
            false => Ok(()),
        }
    }

    fn wait(&mut self) {
        self.tcp.wait();
    }

    /// Discards records without decrypting them: only a closing connection
    /// reads this way.
    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        self.tcp.read_timeout(buf, timeout)
    }

    fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read {
            self.close_notify();
        }
        self.tcp.shutdown(how)
    }
}

impl TlsIo {
    /// Queues `close_notify` (once) and sends it if the socket takes it.
    fn close_notify(&mut self) {
        if !self.closing {
            self.closing = true;
            self.tls.send_close_notify();
            let _ = self.push();
        }
    }
}

impl Drop for TlsIo {
    /// Every TLS connection ends with `close_notify`, as far as the socket
    /// takes it without waiting.
    fn drop(&mut self) {
        self.close_notify();
    }
}
