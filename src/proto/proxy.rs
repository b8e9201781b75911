//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a TCP
//! balancer sends before anything else on a connection it relays, naming
//! the client and the address the client connected to
//! (<https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>).
//!
//! [`parse`] reads a header from the start of what has arrived, and says
//! how long it is, so that exactly its bytes are taken from the socket and
//! what follows (HTTP, or a TLS handshake) is left to the layer above.
//! Where it may be used, and from whom, is the server's business.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::io::{Io, TcpIo};

/// The longest version 1 header, CRLF included (the specification's).
pub const V1_MAX: usize = 107;
/// The version 2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The version 2 fixed part: signature, version and command, family,
/// length.
const V2_FIXED: usize = 16;
/// The longest version 2 header accepted: the fixed part, then addresses
/// and TLVs (the balancer's extras: AWS's endpoint id, TLS facts) of up to
/// 2 KiB, ten times what balancers send; this server's bound (HAProxy
/// takes up to its buffer size), so that a header fits on the coroutine's
/// stack.
pub const V2_MAX: usize = 2048 + V2_FIXED;
/// The longest header of either version: what a reader must be able to
/// hold.
pub const MAX: usize = V2_MAX;

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A relayed connection.
    Proxied {
        /// The client's address.
        source: SocketAddr,
        /// The address the client connected to (the balancer's).
        destination: SocketAddr,
    },
    /// The balancer's own connection (version 2 LOCAL, a health check), or
    /// one it cannot describe (version 1 UNKNOWN, a family other than TCP
    /// over IPv4 or IPv6): the connection's own addresses stand.
    Local,
}

/// What the bytes so far hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header.
    Complete {
        /// What it says.
        header: Header,
        /// Its length in bytes.
        len: usize,
    },
    /// The start of a header: more bytes are needed.
    Partial,
}

/// Why the bytes are not a PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Neither signature: the peer speaks something else (HTTP, TLS).
    NotProxy,
    /// A header that breaks the specification; says how.
    Malformed(&'static str),
    /// Longer than [`V1_MAX`] or [`V2_MAX`].
    TooLong,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotProxy => f.write_str("no PROXY protocol header"),
            Error::Malformed(what) => write!(f, "malformed PROXY protocol header: {what}"),
            Error::TooLong => f.write_str("PROXY protocol header too long"),
        }
    }
}

impl std::error::Error for Error {}

/// Why no header was read from a connection.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// What arrived is not a valid header.
    #[error(transparent)]
    Header(#[from] Error),
    /// The peer ended (or the sweep cut the connection) before a whole
    /// header arrived.
    #[error("the connection ended before its PROXY protocol header")]
    Ended,
    /// The socket failed.
    #[error("reading a PROXY protocol header")]
    Io(#[source] io::Error),
}

impl ReadError {
    /// Whether the peer simply left before a whole header came.
    pub fn peer_left(&self) -> bool {
        match self {
            ReadError::Ended => true,
            ReadError::Io(e) => super::io::peer_left(e),
            ReadError::Header(_) => false,
        }
    }
}

/// Reads the header a connection begins with, and only it: the socket is
/// peeked at until a whole header is there, then exactly its bytes are
/// taken, so what follows (the first request, or a TLS handshake) is left
/// for the layer above. Parks while the header is incomplete.
pub fn read_header(tcp: &mut TcpIo) -> Result<Header, ReadError> {
    let mut buf = [0u8; MAX];
    loop {
        // The peer's end seen before this peek: what it shows is all there
        // will be (no event follows a FIN).
        let ended = tcp.peer_ending();
        let seen = match tcp.peek(&mut buf) {
            Ok(0) => return Err(ReadError::Ended),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Io(e)),
        };
        if seen > 0 {
            if let Parsed::Complete { header, len } = parse(&buf[..seen])? {
                tcp.take(&mut buf[..len]).map_err(ReadError::Io)?;
                return Ok(header);
            }
        }
        if ended {
            return Err(ReadError::Ended);
        }
        tcp.wait();
    }
}

/// Reads the header at the start of `buf` (all that has arrived so far).
pub fn parse(buf: &[u8]) -> Result<Parsed, Error> {
    if starts(buf, V2_SIGNATURE) {
        v2(buf)
    } else if starts(buf, b"PROXY ") {
        v1(buf)
    } else {
        Err(Error::NotProxy)
    }
}

/// Whether `buf` begins with `prefix`, or with a start of it (then the
/// rest may still come).
fn starts(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

/// `PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\n`, `PROXY TCP6 ...`, or
/// `PROXY UNKNOWN...\r\n`.
fn v1(buf: &[u8]) -> Result<Parsed, Error> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return match buf.len() >= V1_MAX {
            true => Err(Error::TooLong),
            false => Ok(Parsed::Partial),
        };
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| Error::Malformed("not text"))?;
    let len = end + 2;
    let mut fields = line.split(' ');
    fields.next(); // "PROXY"
    let family = fields.next().ok_or(Error::Malformed("no family"))?;
    if family == "UNKNOWN" {
        return Ok(Parsed::Complete {
            header: Header::Local,
            len,
        });
    }
    let v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(Error::Malformed("unknown family")),
    };
    let mut next = || fields.next().ok_or(Error::Malformed("missing field"));
    let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
    if fields.next().is_some() {
        return Err(Error::Malformed("extra fields"));
    }
    let source = SocketAddr::new(v1_ip(src, v6)?, v1_port(sport)?);
    let destination = SocketAddr::new(v1_ip(dst, v6)?, v1_port(dport)?);
    Ok(Parsed::Complete {
        header: Header::Proxied {
            source,
            destination,
        },
        len,
    })
}

fn v1_ip(text: &str, v6: bool) -> Result<IpAddr, Error> {
    let ip = match v6 {
        true => text.parse::<Ipv6Addr>().map(IpAddr::V6),
        false => text.parse::<Ipv4Addr>().map(IpAddr::V4),
    };
    ip.map_err(|_| Error::Malformed("bad address"))
}

/// A port: decimal digits without a leading zero, as the specification
/// asks.
fn v1_port(text: &str) -> Result<u16, Error> {
    let plain =
        text.bytes().all(|b| b.is_ascii_digit()) && !(text.len() > 1 && text.starts_with('0'));
    match plain {
        true => text.parse().map_err(|_| Error::Malformed("bad port")),
        false => Err(Error::Malformed("bad port")),
    }
}

/// The binary header: signature, version 2 and a command, the family, the
/// length of what follows, the addresses, then TLVs (skipped).
fn v2(buf: &[u8]) -> Result<Parsed, Error> {
    if buf.len() < V2_FIXED {
        return Ok(Parsed::Partial);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(Error::Malformed("not version 2"));
    }
    let rest = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = V2_FIXED + rest;
    if len > V2_MAX {
        return Err(Error::TooLong);
    }
    if buf.len() < len {
        return Ok(Parsed::Partial);
    }
    let body = &buf[V2_FIXED..len];
    let header = match command {
        0 => Header::Local,
        1 => v2_addresses(buf[13], body)?,
        _ => return Err(Error::Malformed("unknown command")),
    };
    Ok(Parsed::Complete { header, len })
}

/// The addresses of a PROXY command, by family and transport: TCP over
/// IPv4 or IPv6 name the client; UNSPEC, UDP and Unix sockets, which name
/// no TCP client, leave the connection's own (as LOCAL does); any other
/// value is refused, as the specification asks.
fn v2_addresses(family: u8, body: &[u8]) -> Result<Header, Error> {
    const TCP4: u8 = 0x11;
    const TCP6: u8 = 0x21;
    const UNSPEC: u8 = 0x00;
    const UDP4: u8 = 0x12;
    const UDP6: u8 = 0x22;
    const UNIX_STREAM: u8 = 0x31;
    const UNIX_DGRAM: u8 = 0x32;
    let ip_len = match family {
        TCP4 => 4,
        TCP6 => 16,
        UNSPEC | UDP4 | UDP6 | UNIX_STREAM | UNIX_DGRAM => return Ok(Header::Local),
        _ => return Err(Error::Malformed("unknown address family")),
    };
    if body.len() < 2 * ip_len + 4 {
        return Err(Error::Malformed("addresses cut short"));
    }
    let ip = |at: usize| -> IpAddr {
        let bytes = &body[at..at + ip_len];
        match <[u8; 4]>::try_from(bytes) {
            Ok(v4) => IpAddr::from(v4),
            Err(_) => IpAddr::from(<[u8; 16]>::try_from(bytes).expect("16 bytes")),
        }
    };
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    Ok(Header::Proxied {
        source: SocketAddr::new(ip(0), port(2 * ip_len)),
        destination: SocketAddr::new(ip(ip_len), port(2 * ip_len + 2)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxied(source: &str, destination: &str) -> Header {
        Header::Proxied {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    /// A version 2 header: command, family, then `body`.
    fn v2_bytes(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn version_1_names_the_client_and_its_length() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(line),
            Ok(Parsed::Complete {
                header: proxied("192.0.2.1:56324", "198.51.100.2:443"),
                len: 45
            })
        );
        let v6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        assert_eq!(
            parse(v6),
            Ok(Parsed::Complete {
                header: proxied("[2001:db8::1]:1", "[2001:db8::2]:2"),
                len: v6.len()
            })
        );
        let unknown = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
        assert_eq!(
            parse(unknown),
            Ok(Parsed::Complete {
                header: Header::Local,
                len: unknown.len()
            })
        );
    }

    #[test]
    fn a_start_of_either_header_asks_for_more() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
        for n in 0..line.len() {
            assert_eq!(parse(&line[..n]), Ok(Parsed::Partial), "{n} bytes");
        }
        let binary = v2_bytes(1, 0x11, &[192, 0, 2, 1, 198, 51, 100, 2, 0, 80, 1, 187]);
        for n in 0..binary.len() {
            assert_eq!(parse(&binary[..n]), Ok(Parsed::Partial), "{n} bytes");
        }
    }

    #[test]
    fn bad_version_1_headers_are_refused() {
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 9\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 056324 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 443\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY  TCP4 192.0.2.1 198.51.100.2 1 2\r\n",
        ];
        for line in bad {
            assert!(
                matches!(parse(line), Err(Error::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        let long = [b"PROXY ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(parse(&long), Err(Error::TooLong));
        assert_eq!(parse(b"PROXY\r\n"), Err(Error::NotProxy));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(Error::NotProxy));
        assert_eq!(parse(b"\x16\x03\x01"), Err(Error::NotProxy));
    }

    #[test]
    fn version_2_names_the_client_and_skips_its_tlvs() {
        let mut body = vec![192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb];
        // A TLV (type 0x04, NOOP) the parser must step over.
        body.extend_from_slice(&[0x04, 0x00, 0x02, 0xaa, 0xbb]);
        let mut bytes = v2_bytes(1, 0x11, &body);
        let len = bytes.len();
        bytes.extend_from_slice(b"GET /");
        assert_eq!(
            parse(&bytes),
            Ok(Parsed::Complete {
                header: proxied("192.0.2.1:56324", "198.51.100.2:443"),
                len
            })
        );
        let mut v6 = [0u8; 36];
        v6[15] = 1;
        v6[31] = 2;
        v6[32..].copy_from_slice(&[0, 1, 0, 2]);
        let bytes = v2_bytes(1, 0x21, &v6);
        assert_eq!(
            parse(&bytes),
            Ok(Parsed::Complete {
                header: proxied("[::1]:1", "[::2]:2"),
                len: bytes.len()
            })
        );
    }

    #[test]
    fn version_2_local_and_other_families_keep_the_connections_address() {
        let local = v2_bytes(0, 0x00, &[]);
        assert_eq!(
            parse(&local),
            Ok(Parsed::Complete {
                header: Header::Local,
                len: 16
            })
        );
        // TCP over a Unix socket (0x31) names no IP address.
        let unix = v2_bytes(1, 0x31, &[0; 216]);
        assert_eq!(
            parse(&unix),
            Ok(Parsed::Complete {
                header: Header::Local,
                len: 16 + 216
            })
        );
    }

    #[test]
    fn version_1_is_at_most_107_bytes() {
        let line = |len: usize| {
            let mut l = b"PROXY UNKNOWN ".to_vec();
            l.resize(len - 2, b'x');
            l.extend_from_slice(b"\r\n");
            l
        };
        assert_eq!(
            parse(&line(107)),
            Ok(Parsed::Complete {
                header: Header::Local,
                len: 107
            })
        );
        assert_eq!(parse(&line(108)), Err(Error::TooLong));
    }

    #[test]
    fn version_2_lengths_are_honoured() {
        // LOCAL with a body (TLVs): all of it is the header's.
        let local = v2_bytes(0, 0x00, &[0; 20]);
        assert_eq!(
            parse(&local),
            Ok(Parsed::Complete {
                header: Header::Local,
                len: 36
            })
        );
        let largest = v2_bytes(1, 0x11, &vec![0; V2_MAX - V2_FIXED]);
        assert!(matches!(
            parse(&largest),
            Ok(Parsed::Complete { len: V2_MAX, .. })
        ));
        let over = v2_bytes(1, 0x11, &vec![0; V2_MAX - V2_FIXED + 1]);
        assert_eq!(parse(&over), Err(Error::TooLong));
    }

    #[test]
    fn bad_version_2_headers_are_refused() {
        for family in [0x13, 0x41, 0xff] {
            assert!(
                matches!(
                    parse(&v2_bytes(1, family, &[0; 36])),
                    Err(Error::Malformed(_))
                ),
                "family {family:#x}"
            );
        }
        let mut wrong_version = v2_bytes(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert!(matches!(parse(&wrong_version), Err(Error::Malformed(_))));
        assert!(matches!(
            parse(&v2_bytes(2, 0x11, &[0; 12])),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            parse(&v2_bytes(1, 0x11, &[0; 8])),
            Err(Error::Malformed(_))
        ));
        assert_eq!(parse(&v2_bytes(1, 0x11, &[0; 4000])), Err(Error::TooLong));
    }
}
