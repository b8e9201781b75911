//! Framing checks on a request's headers, made before any body byte is
//! read: may_minihttp parses Content-Length with `unwrap()` (a bad value
//! would panic), knows nothing of chunked bodies (chunk bytes would be read
//! as the next request) and has no body limit.

use httparse::Header;

use super::response::ApiError;

/// How the request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// Body length from Content-Length (0 when absent).
    pub body_len: u64,
    /// The client asked for the connection to be closed (`Connection: close`).
    pub close_requested: bool,
}

/// Checks Transfer-Encoding, Content-Length (plain ASCII digits, at most
/// once, at most `max_body`) and the Connection header.
pub fn check(headers: &[Header<'_>], max_body: u64) -> Result<Framing, ApiError> {
    let mut content_length: Option<u64> = None;
    let mut close_requested = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ApiError::TransferEncoding);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Err(ApiError::BadContentLength);
            }
            content_length = Some(parse_content_length(h.value)?);
        } else if h.name.eq_ignore_ascii_case("connection") {
            close_requested |= has_token(h.value, "close");
        }
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > max_body {
        return Err(ApiError::BodyTooLarge(max_body));
    }
    Ok(Framing { body_len, close_requested })
}

/// Plain ASCII digits, nothing else. A value too big for u64 is simply
/// too large (413), not malformed.
fn parse_content_length(value: &[u8]) -> Result<u64, ApiError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(ApiError::BadContentLength);
    }
    let mut n: u64 = 0;
    for d in value {
        n = n.saturating_mul(10).saturating_add(u64::from(d - b'0'));
    }
    Ok(n)
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a str) -> Header<'a> {
        Header { name, value: value.as_bytes() }
    }

    #[test]
    fn content_length_rules() {
        assert_eq!(check(&[h("Content-Length", "12")], 100).unwrap().body_len, 12);
        for bad in ["", " 12", "+12", "-1", "1 2", "0x10", "12a"] {
            assert!(matches!(check(&[h("Content-Length", bad)], 100), Err(ApiError::BadContentLength)), "{bad:?}");
        }
        let twice = [h("content-length", "1"), h("Content-Length", "1")];
        assert!(matches!(check(&twice, 100), Err(ApiError::BadContentLength)));
        assert!(matches!(check(&[h("Content-Length", "101")], 100), Err(ApiError::BodyTooLarge(100))));
        assert!(matches!(
            check(&[h("Content-Length", "99999999999999999999999")], 100),
            Err(ApiError::BodyTooLarge(_))
        ));
        assert!(matches!(check(&[h("Transfer-Encoding", "chunked")], 100), Err(ApiError::TransferEncoding)));
    }

    #[test]
    fn connection_close_token() {
        assert!(check(&[h("Connection", "keep-alive, Close")], 1).unwrap().close_requested);
        assert!(!check(&[h("Connection", "keep-alive")], 1).unwrap().close_requested);
    }
}
