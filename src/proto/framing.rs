//! How a request's body is framed, decided from its headers before any body
//! byte is read (RFC 9112 §6): `Transfer-Encoding: chunked`, or a
//! `Content-Length` of plain digits given once, or no body. Anything
//! ambiguous (both headers, a repeated length, a coding other than chunked
//! last) is refused, so no byte of a body can ever be read as a request.
//! Also reads `Connection` and `Expect`, and checks `Host` (RFC 9112 §3.2:
//! exactly one in an HTTP/1.1 request, at most one in HTTP/1.0, and a valid
//! authority) and `Content-Type` (at most one: two could be read two ways).

use httparse::Header;

use super::Error;

/// How the body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    None,
    /// Exactly this many bytes (already checked against the limit).
    Length(u64),
    /// Chunked transfer coding; the decoded size is checked as it arrives.
    Chunked,
}

/// What the headers say about framing and the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// The body.
    pub body: BodyKind,
    /// The client asked for the connection to be closed (`Connection: close`).
    pub close_requested: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
}

/// Checks Transfer-Encoding, Content-Length (plain ASCII digits, at most
/// once, at most `max_body`), Connection and Expect. `http10`: chunked is
/// not HTTP/1.0 and `Expect` is ignored there.
pub fn check(headers: &[Header<'_>], max_body: u64, http10: bool) -> Result<Framing, Error> {
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut close_requested = false;
    let mut expect_continue = false;
    let mut hosts = 0;
    let mut content_types = 0;
    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            if content_length.is_some() {
                return Err(Error::BadContentLength);
            }
            content_length = Some(parse_content_length(h.value)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = transfer_coding_is_chunked(h.value, chunked)?;
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if !is_authority(h.value) {
                return Err(Error::Malformed(
                    "the Host header is not a valid host[:port]",
                ));
            }
        } else if name.eq_ignore_ascii_case(b"content-type") {
            content_types += 1;
        } else if name.eq_ignore_ascii_case(b"connection") {
            close_requested |= has_token(h.value, b"close");
        } else if name.eq_ignore_ascii_case(b"expect") && !http10 {
            if !h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                return Err(Error::UnsupportedExpectation);
            }
            expect_continue = true;
        }
    }
    match hosts {
        0 if !http10 => return Err(Error::Malformed("an HTTP/1.1 request needs a Host header")),
        0 | 1 => {}
        _ => return Err(Error::Malformed("more than one Host header")),
    }
    if content_types > 1 {
        return Err(Error::Malformed("more than one Content-Type header"));
    }
    let body = match (chunked, content_length) {
        (true, Some(_)) => {
            return Err(Error::Malformed(
                "both Transfer-Encoding and Content-Length",
            ))
        }
        (true, None) if http10 => {
            return Err(Error::Malformed("Transfer-Encoding in an HTTP/1.0 request"))
        }
        (true, None) => BodyKind::Chunked,
        (false, Some(n)) if n > max_body => return Err(Error::BodyTooLarge(max_body)),
        (false, Some(0)) | (false, None) => BodyKind::None,
        (false, Some(n)) => BodyKind::Length(n),
    };
    Ok(Framing {
        body,
        close_requested,
        expect_continue: expect_continue && body != BodyKind::None,
    })
}

/// One Transfer-Encoding header (there may be several, applied in order):
/// whether chunked is the last coding so far. Only `chunked`, once, last, is
/// accepted; another known coding is 501, chunked not last is 400.
fn transfer_coding_is_chunked(value: &[u8], chunked_before: bool) -> Result<bool, Error> {
    let mut chunked = chunked_before;
    for coding in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
        if coding.is_empty() {
            continue;
        }
        if chunked {
            return Err(Error::Malformed(
                "chunked must be the last Transfer-Encoding",
            ));
        }
        if !coding.eq_ignore_ascii_case(b"chunked") {
            return Err(Error::UnsupportedTransferEncoding);
        }
        chunked = true;
    }
    if !chunked {
        return Err(Error::Malformed("empty Transfer-Encoding"));
    }
    Ok(chunked)
}

/// Plain ASCII digits, nothing else. A value too big for u64 is simply
/// too large (413), not malformed.
fn parse_content_length(value: &[u8]) -> Result<u64, Error> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(Error::BadContentLength);
    }
    let mut n: u64 = 0;
    for d in value {
        n = n.saturating_mul(10).saturating_add(u64::from(d - b'0'));
    }
    Ok(n)
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Whether a Host value is `uri-host [":" port]` (RFC 9112 §3.2, RFC 3986
/// §3.2.2): a reg-name or IPv4 address of unreserved, percent-encoded and
/// sub-delimiter characters, or an IP literal in brackets; a port of at
/// most 65535. Empty is valid (a target without authority), but not an
/// empty host before a port.
pub(super) fn is_authority(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    let (host, port) = match value.iter().rposition(|b| *b == b':') {
        // A colon inside brackets belongs to an IPv6 literal.
        Some(i) if !value[i..].contains(&b']') => (&value[..i], Some(&value[i + 1..])),
        _ => (value, None),
    };
    let port_ok = port.is_none_or(|p| {
        p.len() <= 5
            && p.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(p).is_ok_and(|p| p.is_empty() || p.parse::<u16>().is_ok())
    });
    let host_ok = match host {
        [] => port.is_none(),
        [b'[', literal @ .., b']'] => {
            !literal.is_empty()
                && literal
                    .iter()
                    .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        }
        _ => is_reg_name(host),
    };
    port_ok && host_ok
}

/// A reg-name: unreserved and sub-delimiter characters, and `%` with two
/// hex digits.
fn is_reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        let b = host[i];
        if b == b'%' {
            let hex = host.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
            continue;
        }
        let allowed = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        if !allowed {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a str) -> Header<'a> {
        Header {
            name,
            value: value.as_bytes(),
        }
    }

    const HOST: Header<'static> = Header {
        name: "Host",
        value: b"x",
    };

    /// `check` of an HTTP/1.1 request with a Host header and these.
    fn check11(headers: &[Header<'_>], max_body: u64) -> Result<Framing, Error> {
        let all: Vec<Header<'_>> = std::iter::once(HOST)
            .chain(headers.iter().copied())
            .collect();
        check(&all, max_body, false)
    }

    fn body(headers: &[Header<'_>]) -> Result<BodyKind, Error> {
        check11(headers, 100).map(|f| f.body)
    }

    #[test]
    fn host_rules() {
        assert!(
            matches!(check(&[], 10, false), Err(Error::Malformed(_))),
            "HTTP/1.1 without Host"
        );
        assert!(check(&[], 10, true).is_ok(), "HTTP/1.0 without Host");
        assert!(
            matches!(check(&[HOST, HOST], 10, true), Err(Error::Malformed(_))),
            "two Hosts"
        );
        for good in [
            "a%20b",
            "x:",
            "example.com",
            "example.com:8080",
            "127.0.0.1:80",
            "[::1]:8000",
            "[::1]",
            "",
        ] {
            assert!(is_authority(good.as_bytes()), "{good:?}");
        }
        for bad in [
            "a b/c",
            "a/b",
            "h:p",
            "user@h",
            "h?x",
            "h#x",
            "\"h\"",
            "[]",
            "[]:80",
            "%zz",
            "x:999999999999999999999",
            "x:65536",
            ":80",
        ] {
            assert!(!is_authority(bad.as_bytes()), "{bad:?}");
        }
        let content_type = Header {
            name: "Content-Type",
            value: b"application/json",
        };
        assert!(
            matches!(
                check(&[HOST, content_type, content_type], 10, false),
                Err(Error::Malformed(_))
            ),
            "two Content-Types"
        );
    }

    #[test]
    fn content_length_rules() {
        assert_eq!(
            body(&[h("Content-Length", "12")]).unwrap(),
            BodyKind::Length(12)
        );
        assert_eq!(body(&[h("Content-Length", "0")]).unwrap(), BodyKind::None);
        for bad in ["", " 12", "+12", "-1", "1 2", "0x10", "12a"] {
            assert!(
                matches!(
                    body(&[h("Content-Length", bad)]),
                    Err(Error::BadContentLength)
                ),
                "{bad:?}"
            );
        }
        let twice = [h("content-length", "1"), h("Content-Length", "1")];
        assert!(matches!(body(&twice), Err(Error::BadContentLength)));
        assert!(matches!(
            body(&[h("Content-Length", "101")]),
            Err(Error::BodyTooLarge(100))
        ));
        assert!(matches!(
            body(&[h("Content-Length", "99999999999999999999999")]),
            Err(Error::BodyTooLarge(_))
        ));
    }

    #[test]
    fn transfer_encoding_rules() {
        assert_eq!(
            body(&[h("Transfer-Encoding", "chunked")]).unwrap(),
            BodyKind::Chunked
        );
        assert_eq!(
            body(&[h("Transfer-Encoding", " Chunked ")]).unwrap(),
            BodyKind::Chunked
        );
        assert!(matches!(
            body(&[h("Transfer-Encoding", "gzip, chunked")]),
            Err(Error::UnsupportedTransferEncoding)
        ));
        assert!(matches!(
            body(&[h("Transfer-Encoding", "chunked, gzip")]),
            Err(Error::Malformed(_))
        ));
        let twice = [
            h("Transfer-Encoding", "chunked"),
            h("Transfer-Encoding", "chunked"),
        ];
        assert!(matches!(body(&twice), Err(Error::Malformed(_))));
        let both = [h("Transfer-Encoding", "chunked"), h("Content-Length", "3")];
        assert!(matches!(body(&both), Err(Error::Malformed(_))));
        assert!(matches!(
            check(&[HOST, h("Transfer-Encoding", "chunked")], 100, true),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            body(&[h("Transfer-Encoding", "")]),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn connection_and_expect() {
        assert!(
            check11(&[h("Connection", "keep-alive, Close")], 1)
                .unwrap()
                .close_requested
        );
        assert!(
            !check11(&[h("Connection", "keep-alive")], 1)
                .unwrap()
                .close_requested
        );
        let f = check11(&[h("Expect", "100-Continue"), h("Content-Length", "5")], 10).unwrap();
        assert!(f.expect_continue);
        let f = check11(&[h("Expect", "100-continue")], 10).unwrap();
        assert!(!f.expect_continue, "no body: nothing to wait for");
        assert!(matches!(
            check11(&[h("Expect", "x")], 10),
            Err(Error::UnsupportedExpectation)
        ));
        assert!(
            check(&[h("Expect", "x")], 10, true).is_ok(),
            "HTTP/1.0 ignores Expect"
        );
    }
}
