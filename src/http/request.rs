//! The request head: parsed with httparse from the connection's buffer,
//! checked against the request limits, framed ([`framing`]) and routed
//! ([`routes`]) before any body byte is read. Everything the rest of the
//! request needs is copied out, so the buffer can be consumed afterwards.
//!
//! [`framing`]: super::framing
//! [`routes`]: super::routes

use std::mem::MaybeUninit;

use httparse::{Header, ParserConfig, Status};

use super::framing::{self, Framing};
use super::response::ApiError;
use super::routes::{self, ListLimits, Route};
use crate::faults::{self, Fault};
use crate::metrics::RequestLabels;

/// The longest request head (request line and headers) a connection
/// buffers, whatever the per-line limits allow: 64 KiB (nginx allows 32).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Headers parsed into an array on the coroutine's stack; more go to the heap.
const STACK_HEADERS: usize = 128;

/// The limits a head is checked against.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Longest request line (method, target, version).
    pub line: usize,
    /// Most headers.
    pub fields: usize,
    /// Longest header line (name, colon, space, value).
    pub field_size: usize,
    /// Largest body.
    pub max_body: u64,
    /// Pagination limits, for routing.
    pub list: ListLimits,
    /// With the access log on: the request headers to keep for it.
    pub capture: Option<&'static [String]>,
}

/// What the access log needs of a request head (kept only when it is on).
#[derive(Debug)]
pub struct Captured {
    /// The method.
    pub method: String,
    /// The request target, as sent.
    pub target: String,
    /// Values of `HeadLimits::capture`'s headers, by index.
    pub headers: Vec<Option<Vec<u8>>>,
}

/// A complete, checked request head.
#[derive(Debug)]
pub struct Head {
    /// Bytes of the head in the buffer, blank line included.
    pub len: usize,
    /// An HTTP/1.0 request (answered, then the connection closes).
    pub http10: bool,
    /// How the body is framed.
    pub framing: Framing,
    /// Where the request goes, or why it goes nowhere.
    pub route: Result<Route, ApiError>,
    /// A test-only fault to run (`faults`).
    pub fault: Option<Fault>,
    /// The `Authorization` header's value, when there is one.
    pub authorization: Option<Vec<u8>>,
    /// Method and route labels for the metrics.
    pub labels: RequestLabels,
    /// For the access log, when it is on.
    pub captured: Option<Captured>,
}

/// Parses the head at the start of `buf`: `Ok(None)` while it is incomplete.
pub fn parse(buf: &[u8], limits: &HeadLimits) -> Result<Option<Head>, ApiError> {
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
                return Err(ApiError::HeadTooLarge(MAX_HEAD_BYTES));
            }
            let method = req.method.unwrap_or_default();
            let target = req.path.unwrap_or_default();
            let http10 = req.version == Some(0);
            check_limits(method, target, req.headers, limits)?;
            let framing = framing::check(req.headers, limits.max_body, http10)?;
            let path = origin_form(target);
            Ok(Some(Head {
                len,
                http10,
                framing,
                route: routes::route(method, path, &limits.list),
                fault: faults::for_path(path),
                labels: RequestLabels::new(method, routes::label(path)),
                captured: limits.capture.map(|names| Captured {
                    method: method.to_string(),
                    target: target.to_string(),
                    headers: names
                        .iter()
                        .map(|n| {
                            req.headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case(n))
                                .map(|h| h.value.to_vec())
                        })
                        .collect(),
                }),
                authorization: req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                    .map(|h| h.value.to_vec()),
            }))
        }
        Ok(Status::Partial) => check_partial(buf, limits).map(|()| None),
        Err(httparse::Error::TooManyHeaders) => Err(ApiError::TooManyHeaders(limits.fields)),
        Err(httparse::Error::Version) => Err(version_error(buf)),
        Err(e) => Err(ApiError::Malformed(describe(e))),
    }
}

/// The request line and header limits of a complete head.
fn check_limits(
    method: &str,
    target: &str,
    headers: &[Header<'_>],
    limits: &HeadLimits,
) -> Result<(), ApiError> {
    // "METHOD SP TARGET SP HTTP/1.x"
    if method.len() + 1 + target.len() + 1 + "HTTP/1.1".len() > limits.line {
        return Err(ApiError::RequestLineTooLong(limits.line));
    }
    if headers
        .iter()
        .any(|h| h.name.len() + 2 + h.value.len() > limits.field_size)
    {
        return Err(ApiError::HeaderTooLong(limits.field_size));
    }
    Ok(())
}

/// Limits that an incomplete head already breaks: a request line with no
/// end in sight, or more bytes than any head may have.
fn check_partial(buf: &[u8], limits: &HeadLimits) -> Result<(), ApiError> {
    let start = buf
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(buf.len());
    let first_line = &buf[start..];
    // The line plus its CRLF.
    if first_line.len() > limits.line + 2 && !first_line[..limits.line + 2].contains(&b'\n') {
        return Err(ApiError::RequestLineTooLong(limits.line));
    }
    if buf.len() > MAX_HEAD_BYTES {
        return Err(ApiError::HeadTooLarge(MAX_HEAD_BYTES));
    }
    Ok(())
}

/// httparse says "version" both for `HTTP/1.2` (505) and for a request line
/// with no version at all (400).
fn version_error(buf: &[u8]) -> ApiError {
    let line = buf
        .split(|b| *b == b'\n')
        .find(|l| !l.trim_ascii().is_empty())
        .unwrap_or_default();
    let version = line
        .trim_ascii()
        .rsplit(|b| *b == b' ')
        .next()
        .unwrap_or_default();
    let looks_like_http = version.len() >= 8
        && version.starts_with(b"HTTP/")
        && version[5].is_ascii_digit()
        && version[6] == b'.'
        && version[7].is_ascii_digit();
    if looks_like_http {
        ApiError::VersionNotSupported
    } else {
        ApiError::Malformed("invalid HTTP version in the request line")
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
/// absolute-form one (`http://host/orders`), which servers must accept
/// (RFC 9112 §3.2.2).
fn origin_form(target: &str) -> &str {
    if target.starts_with('/') {
        return target;
    }
    let after_scheme = ["http://", "https://"].iter().find_map(|scheme| {
        let head = target.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme)
            .then(|| &target[scheme.len()..])
    });
    match after_scheme {
        Some(rest) => match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
            _ => "/",
        },
        // `*` (OPTIONS) or an authority (CONNECT): no route takes them.
        None => target,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::framing::BodyKind;

    const LIMITS: HeadLimits = HeadLimits {
        line: 100,
        fields: 3,
        field_size: 40,
        max_body: 1000,
        list: ListLimits {
            max_page_size: 10,
            cap_unpaged_list: false,
        },
        capture: None,
    };

    fn parse_str(s: &str) -> Result<Option<Head>, ApiError> {
        parse(s.as_bytes(), &LIMITS)
    }

    #[test]
    fn a_complete_head_is_framed_and_routed() {
        let head = parse_str("POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(
            head.len,
            "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n".len()
        );
        assert_eq!(head.framing.body, BodyKind::Length(5));
        assert!(matches!(head.route, Ok(Route::Create)));
        assert!(!head.http10);
        assert!(
            parse_str("GET /orders HTTP/1.1\r\nHost: x\r\n")
                .unwrap()
                .is_none(),
            "partial"
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
                matches!(parse_str(bad), Err(ApiError::Malformed(_))),
                "{bad:?}"
            );
        }
        for version in [
            "GET / HTTP/1.2\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/3.0\r\n\r\n",
        ] {
            assert!(
                matches!(parse_str(version), Err(ApiError::VersionNotSupported)),
                "{version:?}"
            );
        }
    }

    #[test]
    fn limits() {
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100));
        assert!(matches!(
            parse_str(&long_line),
            Err(ApiError::RequestLineTooLong(100))
        ));
        let unfinished = format!("GET /{}", "a".repeat(200));
        assert!(
            matches!(
                parse_str(&unfinished),
                Err(ApiError::RequestLineTooLong(100))
            ),
            "caught before the line ends"
        );
        let three = "GET / HTTP/1.1\r\nHost: x\r\nB: 2\r\nC: 3\r\n\r\n";
        assert!(parse_str(three).unwrap().is_some(), "at the limit");
        let four = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        assert!(matches!(parse_str(four), Err(ApiError::TooManyHeaders(3))));
        let long_header = format!("GET / HTTP/1.1\r\nA: {}\r\n\r\n", "v".repeat(50));
        assert!(matches!(
            parse_str(&long_header),
            Err(ApiError::HeaderTooLong(40))
        ));
        let many = HeadLimits {
            fields: 200,
            ..LIMITS
        };
        let head: String = (0..150).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(
            parse(
                format!("GET /orders HTTP/1.1\r\nHost: x\r\n{head}\r\n").as_bytes(),
                &many
            )
            .unwrap()
            .is_some(),
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
            parse(endless.as_bytes(), &wide),
            Err(ApiError::HeadTooLarge(_))
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
        assert!(matches!(head.route, Ok(Route::List(_))));
    }
}
