//! Request heads: parsed with httparse from the connection's buffer,
//! checked against the limits and framed ([`framing`]) before any body byte
//! is read. A [`Head`] is the protocol's facts of a request (method,
//! target, version, framing, headers) and nothing of what the application
//! makes of them. Its headers borrow the buffer, so [`parse`] hands the head
//! to the caller's closure, which takes what it needs; the buffer can then
//! be consumed to read the body.
//!
//! [`framing`]: super::framing

use std::mem::MaybeUninit;

use httparse::{Header, ParserConfig, Status};

use super::framing::{self, Framing};
use super::Error;

/// The longest request head (request line and headers) a connection
/// buffers, whatever the per-line limits allow: 64 KiB (nginx allows 32).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Headers parsed into an array on the coroutine's stack; more go to the heap.
const STACK_HEADERS: usize = 128;

/// The limits a request is checked against.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Longest request line (method, target, version).
    pub line: usize,
    /// Most headers (and trailer lines of a chunked body).
    pub fields: usize,
    /// Longest header line (name, colon, space, value).
    pub field_size: usize,
    /// Largest body.
    pub max_body: u64,
}

/// The HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: answered, then the connection closes; no chunked coding.
    Http10,
    /// HTTP/1.1.
    Http11,
}

/// A complete, checked request head, borrowing the connection's buffer.
#[derive(Debug)]
pub struct Head<'a> {
    /// The method, as sent.
    pub method: &'a str,
    /// The request target, as sent.
    pub target: &'a str,
    /// The version.
    pub version: Version,
    /// How the body is framed (and `Connection`, `Expect`).
    pub framing: Framing,
    /// Every header, in order.
    pub headers: &'a [Header<'a>],
}

impl<'a> Head<'a> {
    /// The target's path and query in origin form (`/orders?limit=1`),
    /// also from an absolute-form target (`http://host/orders`), which
    /// servers must accept (RFC 9112 §3.2.2).
    pub fn path(&self) -> &'a str {
        origin_form(self.target)
    }

    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// What the connection keeps of a head once its bytes are consumed: their
/// length, the version and framing, and what the caller took from it.
#[derive(Debug)]
pub struct Parsed<T> {
    /// Bytes of the head in the buffer, blank line included.
    pub len: usize,
    /// The version.
    pub version: Version,
    /// A HEAD request: its answer has no body, whatever its status.
    pub head_only: bool,
    /// How the body is framed.
    pub framing: Framing,
    /// What the closure given to [`parse`] returned.
    pub taken: T,
}

/// Parses the head at the start of `buf`: `Ok(None)` while it is
/// incomplete; once complete and within the limits, `take` sees it.
pub fn parse<T>(
    buf: &[u8],
    limits: &HeadLimits,
    take: impl FnOnce(&Head<'_>) -> T,
) -> Result<Option<Parsed<T>>, Error> {
    let mut stack: [MaybeUninit<Header<'_>>; STACK_HEADERS] =
        [const { MaybeUninit::uninit() }; STACK_HEADERS];
    let mut heap;
    // httparse answers TooManyHeaders for a header beyond the slots.
    let slots = limits.fields;
    let headers = if slots <= STACK_HEADERS {
        &mut stack[..slots]
    } else {
        heap = vec![MaybeUninit::uninit(); slots];
        &mut heap[..]
    };
    let mut req = httparse::Request::new(&mut []);
    match ParserConfig::default().parse_request_with_uninit_headers(&mut req, buf, headers) {
        Ok(Status::Complete(len)) => {
            if len > MAX_HEAD_BYTES {
                return Err(Error::HeadTooLarge(MAX_HEAD_BYTES));
            }
            let method = req.method.unwrap_or_default();
            let target = req.path.unwrap_or_default();
            let version = match req.version {
                Some(0) => Version::Http10,
                _ => Version::Http11,
            };
            check_limits(method, target, req.headers, limits)?;
            check_target(method, target)?;
            let framing = framing::check(req.headers, limits.max_body, version == Version::Http10)?;
            let head = Head {
                method,
                target,
                version,
                framing,
                headers: req.headers,
            };
            Ok(Some(Parsed {
                len,
                version,
                head_only: method == "HEAD",
                framing,
                taken: take(&head),
            }))
        }
        Ok(Status::Partial) => check_partial(buf, limits).map(|()| None),
        Err(httparse::Error::TooManyHeaders) => Err(Error::TooManyHeaders(limits.fields)),
        Err(httparse::Error::Version) => Err(version_error(buf)),
        Err(e) => Err(Error::Malformed(describe(e))),
    }
}

/// The request line and header limits of a complete head.
fn check_limits(
    method: &str,
    target: &str,
    headers: &[Header<'_>],
    limits: &HeadLimits,
) -> Result<(), Error> {
    // "METHOD SP TARGET SP HTTP/1.x"
    if method.len() + 1 + target.len() + 1 + "HTTP/1.1".len() > limits.line {
        return Err(Error::RequestLineTooLong(limits.line));
    }
    if headers
        .iter()
        .any(|h| h.name.len() + 2 + h.value.len() > limits.field_size)
    {
        return Err(Error::HeaderTooLong(limits.field_size));
    }
    Ok(())
}

/// The forms of request target a server answers (RFC 9112 §3.2): a path
/// (origin-form), an absolute URI (absolute-form, with an http or https
/// scheme), and `*` for OPTIONS only. The authority-form belongs to
/// CONNECT, which this server does not tunnel; anything else (a path
/// without its leading slash) is no target at all.
fn check_target(method: &str, target: &str) -> Result<(), Error> {
    if target.starts_with('/') || absolute_form_path(target).is_some() {
        return Ok(());
    }
    Err(Error::Malformed(match target {
        "*" if method == "OPTIONS" => return Ok(()),
        "*" => "the request target * is only for OPTIONS",
        _ => "the request target is neither a path nor an absolute http(s) URI",
    }))
}

/// Limits that an incomplete head already breaks: a request line with no
/// end in sight, or more bytes than any head may have.
fn check_partial(buf: &[u8], limits: &HeadLimits) -> Result<(), Error> {
    let start = buf
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(buf.len());
    let first_line = &buf[start..];
    // The line plus its CRLF.
    if first_line.len() > limits.line + 2 && !first_line[..limits.line + 2].contains(&b'\n') {
        return Err(Error::RequestLineTooLong(limits.line));
    }
    if buf.len() > MAX_HEAD_BYTES {
        return Err(Error::HeadTooLarge(MAX_HEAD_BYTES));
    }
    Ok(())
}

/// httparse says "version" both for `HTTP/1.2` (505) and for a request line
/// with no version at all (400).
fn version_error(buf: &[u8]) -> Error {
    let line = buf
        .split(|b| *b == b'\n')
        .find(|l| !l.trim_ascii().is_empty())
        .unwrap_or_default();
    let version = line
        .trim_ascii()
        .rsplit(|b| *b == b' ')
        .next()
        .unwrap_or_default();
    // Three parts, one space apart: a fourth (a space in the target) makes
    // httparse read a piece of the target as the version.
    let parts = line.trim_ascii().split(|b| *b == b' ').count();
    let looks_like_http = parts == 3
        && version.len() >= 8
        && version.starts_with(b"HTTP/")
        && version[5].is_ascii_digit()
        && version[6] == b'.'
        && version[7].is_ascii_digit();
    if looks_like_http {
        Error::VersionNotSupported
    } else {
        Error::Malformed("invalid HTTP version in the request line")
    }
}

fn describe(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => {
            "invalid header name (a header without a colon, or a folded line)"
        }
        httparse::Error::HeaderValue => "invalid byte in a header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Token => "invalid request line",
        _ => "unparsable request",
    }
}

/// The path of an origin-form target (`/orders?limit=1`), also from an
/// absolute-form one (`http://host/orders`); `*` as it is.
fn origin_form(target: &str) -> &str {
    if target.starts_with('/') {
        return target;
    }
    absolute_form_path(target).unwrap_or(target)
}

/// The path of an absolute-form target with an http or https scheme and
/// an authority (`/` when it has no path).
fn absolute_form_path(target: &str) -> Option<&str> {
    let rest = ["http://", "https://"].iter().find_map(|scheme| {
        let head = target.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme)
            .then(|| &target[scheme.len()..])
    })?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    // An http(s) URI must name a host (RFC 9110 §4.2.1).
    let authority = &rest.as_bytes()[..end];
    if authority.trim_ascii().is_empty() || !super::framing::is_authority(authority) {
        return None;
    }
    Some(match rest.as_bytes().get(end) {
        Some(b'/') => &rest[end..],
        _ => "/",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::framing::BodyKind;

    const LIMITS: HeadLimits = HeadLimits {
        line: 100,
        fields: 3,
        field_size: 40,
        max_body: 1000,
    };

    /// The parsed head's method, target and version, owned.
    type Facts = (String, String, Version);

    fn parse_str(s: &str) -> Result<Option<Parsed<Facts>>, Error> {
        parse(s.as_bytes(), &LIMITS, |h| {
            (h.method.to_string(), h.path().to_string(), h.version)
        })
    }

    #[test]
    fn a_complete_head_is_framed() {
        let head = parse_str("POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(
            head.len,
            "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n".len()
        );
        assert_eq!(head.framing.body, BodyKind::Length(5));
        assert_eq!(
            head.taken,
            ("POST".to_string(), "/orders".to_string(), Version::Http11)
        );
        assert!(
            parse_str("GET /orders HTTP/1.1\r\nHost: x\r\n")
                .unwrap()
                .is_none(),
            "partial"
        );
        let head = parse(
            b"GET / HTTP/1.0\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
            &LIMITS,
            |h| h.header("X-a").map(<[u8]>::to_vec),
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.version, Version::Http10);
        assert_eq!(
            head.taken.as_deref(),
            Some(&b"1"[..]),
            "the first of its name"
        );
    }

    #[test]
    fn malformed_heads() {
        for bad in [
            "GARBAGE\r\n\r\n",
            "GET /orders\r\n\r\n",
            "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            "\0\0\0\0\r\n\r\n",
        ] {
            assert!(
                matches!(parse_str(bad), Err(Error::Malformed(_))),
                "{bad:?}"
            );
        }
        assert!(
            matches!(
                parse_str("GET /a b HTTP/1.1\r\n\r\n"),
                Err(Error::Malformed(_))
            ),
            "a space in the target is a bad request line, not a version"
        );
        for version in [
            "GET / HTTP/1.2\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/3.0\r\n\r\n",
        ] {
            assert!(
                matches!(parse_str(version), Err(Error::VersionNotSupported)),
                "{version:?}"
            );
        }
    }

    #[test]
    fn limits() {
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100));
        assert!(matches!(
            parse_str(&long_line),
            Err(Error::RequestLineTooLong(100))
        ));
        let unfinished = format!("GET /{}", "a".repeat(200));
        assert!(
            matches!(parse_str(&unfinished), Err(Error::RequestLineTooLong(100))),
            "caught before the line ends"
        );
        let three = "GET / HTTP/1.1\r\nHost: x\r\nB: 2\r\nC: 3\r\n\r\n";
        assert!(parse_str(three).unwrap().is_some(), "at the limit");
        let four = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        assert!(matches!(parse_str(four), Err(Error::TooManyHeaders(3))));
        let long_header = format!("GET / HTTP/1.1\r\nA: {}\r\n\r\n", "v".repeat(50));
        assert!(matches!(
            parse_str(&long_header),
            Err(Error::HeaderTooLong(40))
        ));
        let many = HeadLimits {
            fields: 200,
            ..LIMITS
        };
        let head: String = (0..150).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(
            parse(
                format!("GET /orders HTTP/1.1\r\nHost: x\r\n{head}\r\n").as_bytes(),
                &many,
                |h| h.headers.len()
            )
            .unwrap()
            .is_some_and(|p| p.taken == 151),
            "more headers than the stack array"
        );
        let endless = format!(
            "GET / HTTP/1.1\r\n{}",
            "A: b\r\n".repeat(MAX_HEAD_BYTES / 6 + 1)
        );
        let wide = HeadLimits {
            fields: 100_000,
            ..LIMITS
        };
        assert!(matches!(
            parse(endless.as_bytes(), &wide, |_| ()),
            Err(Error::HeadTooLarge(_))
        ));
    }

    #[test]
    fn absolute_form_targets() {
        assert_eq!(origin_form("/orders?limit=1"), "/orders?limit=1");
        assert_eq!(
            origin_form("http://example.com/orders?limit=1"),
            "/orders?limit=1"
        );
        assert_eq!(
            origin_form("HTTPS://example.com:8443/orders/abc"),
            "/orders/abc"
        );
        assert_eq!(origin_form("http://example.com"), "/");
        assert_eq!(origin_form("http://example.com?x"), "/");
        assert_eq!(origin_form("*"), "*");
        let head = parse_str("GET http://h/orders HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.taken.1, "/orders");
    }

    /// RFC 9112 §3.2: origin-form and absolute-form; `*` for OPTIONS only;
    /// no authority-form (CONNECT is not served) and no relative paths.
    #[test]
    fn only_the_forms_of_target_a_server_answers() {
        for ok in [
            "GET /orders HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET http://h/orders HTTP/1.1\r\nHost: h\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert!(parse_str(ok).unwrap().is_some(), "{ok:?}");
        }
        for bad in [
            "GET * HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n",
            "CONNECT example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET foo/bar HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET http:///orders HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET ftp://h/orders HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET http://:80/orders HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET http://x:abc/orders HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET http://x:99999/orders HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert!(
                matches!(parse_str(bad), Err(Error::Malformed(_))),
                "{bad:?}"
            );
        }
        let head = parse(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", &LIMITS, |_| ())
            .unwrap()
            .unwrap();
        assert!(head.head_only);
    }
}
