//! Responses: the [`Reply`] a service produces, and the one encoder that
//! turns it into bytes on the wire ([`encode`], and for a body streamed in
//! chunks [`encode_streamed_head`] and [`encode_chunk_size`]). Every
//! response carries the same `Server` header and standard reason phrases
//! (`status`).

use std::cell::RefCell;
use std::io;
use std::time::{Duration, UNIX_EPOCH};

use nix::time::{clock_gettime, ClockId};

use super::status::{self, Status};

/// The last chunk of a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// The `Server` header of every response.
const SERVER_HEADER: &str = "Server: orders-server";
/// The content type of every response.
const CONTENT_TYPE_HEADER: &str = "Content-Type: application/json";
/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A response ready to be sent.
#[derive(Debug)]
pub struct Reply {
    /// Its status.
    pub status: Status,
    /// The JSON body: `prefix`, `body`, `suffix` (a stored document is
    /// wrapped as it is written, not copied into a new buffer first).
    pub body: Vec<u8>,
    /// Bytes before `body`.
    pub prefix: &'static [u8],
    /// Bytes after `body`.
    pub suffix: &'static [u8],
    /// Extra header lines (`Allow`, `Retry-After`).
    pub headers: Vec<&'static str>,
    /// Close the connection after this response.
    pub close: bool,
    /// The response was already written as a chunked stream (a long list).
    pub streamed: bool,
    /// Echoed as `X-Request-Id` (with the access log on).
    pub request_id: Option<String>,
}

impl Reply {
    /// A 200 with this JSON body.
    pub fn ok(body: Vec<u8>) -> Reply {
        Reply::wrapped(b"", body, b"")
    }

    /// A 200 whose JSON body is `prefix`, `body`, `suffix`.
    pub fn wrapped(prefix: &'static [u8], body: Vec<u8>, suffix: &'static [u8]) -> Reply {
        Reply {
            status: status::OK,
            body,
            prefix,
            suffix,
            headers: Vec::new(),
            close: false,
            streamed: false,
            request_id: None,
        }
    }

    /// Marks a response that the handler has already streamed.
    pub fn streamed() -> Reply {
        Reply {
            streamed: true,
            ..Reply::ok(Vec::new())
        }
    }

    /// Marks a stream that broke off after its head: the connection must
    /// close, leaving the body visibly incomplete.
    pub fn aborted() -> Reply {
        Reply {
            close: true,
            ..Reply::streamed()
        }
    }

    /// Bytes of its body.
    pub fn body_len(&self) -> usize {
        self.prefix.len() + self.body.len() + self.suffix.len()
    }
}

/// Where a response body streamed in chunks goes (the connection): its
/// head, then each chunk as it is made, then the end.
pub trait ChunkSink {
    /// Sends the response head (200, chunked).
    fn start(&mut self) -> io::Result<()>;
    /// Sends one chunk.
    fn chunk(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Ends the body (the last, empty chunk).
    fn finish(&mut self) -> io::Result<()>;
    /// Whether the head was sent: from then on a failure can only cut the
    /// connection.
    fn started(&self) -> bool;
}

/// Appends the whole response (head and body) to `out`.
pub fn encode(reply: &Reply, close: bool, out: &mut Vec<u8>) {
    head_start(
        out,
        reply.status,
        &reply.headers,
        reply.request_id.as_deref(),
        close,
    );
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, reply.body_len());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(reply.prefix);
    out.extend_from_slice(&reply.body);
    out.extend_from_slice(reply.suffix);
}

/// Appends the head of a 200 whose body is streamed: in chunks, or for an
/// HTTP/1.0 client (which knows no chunks) as raw bytes ended by the close.
pub fn encode_streamed_head(
    chunked: bool,
    close: bool,
    request_id: Option<&str>,
    out: &mut Vec<u8>,
) {
    head_start(out, status::OK, &[], request_id, close || !chunked);
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the size line of a chunk of `len` bytes.
pub fn encode_chunk_size(len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
}

/// Status line, Server, Date, Content-Type, extra headers, X-Request-Id
/// and Connection.
fn head_start(
    out: &mut Vec<u8>,
    status: Status,
    headers: &[&str],
    request_id: Option<&str>,
    close: bool,
) {
    out.extend_from_slice(status.line().as_bytes());
    out.extend_from_slice(SERVER_HEADER.as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    push_date(out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(CONTENT_TYPE_HEADER.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(id) = request_id {
        out.extend_from_slice(b"X-Request-Id: ");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
}

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Length of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
const DATE_LEN: usize = 29;

thread_local! {
    /// The Date header value of the current second, per scheduler thread:
    /// formatting a date costs more than the rest of a small response head.
    static DATE: RefCell<(u64, [u8; DATE_LEN])> = const { RefCell::new((u64::MAX, [0; DATE_LEN])) };
}

/// Appends the current time as an HTTP date. The second is read from the
/// coarse real-time clock (a memory read, no timestamp counter): the date
/// only changes once a second.
fn push_date(out: &mut Vec<u8>) {
    let secs = clock_gettime(ClockId::CLOCK_REALTIME_COARSE)
        .map(|t| t.tv_sec() as u64)
        .unwrap_or(0);
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            if text.len() == DATE_LEN {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = secs;
            } else {
                out.extend_from_slice(text.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_have_one_server_header_and_standard_reasons() {
        let mut out = Vec::new();
        encode(&Reply::ok(b"{}".to_vec()), false, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\nServer: orders-server\r\nDate: "),
            "{text}"
        );
        assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"), "{text}");
        assert!(!text.contains("Connection"));

        let mut out = Vec::new();
        let busy = Reply {
            status: status::SERVICE_UNAVAILABLE,
            headers: vec!["Retry-After: 1"],
            ..Reply::ok(b"{}".to_vec())
        };
        encode(&busy, true, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\nRetry-After: 1\r\nConnection: close\r\n"),
            "{text}"
        );
    }

    #[test]
    fn decimal() {
        for n in [0usize, 7, 10, 12345, usize::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }
}
