//! Responses: the [`Reply`] a handler produces, the one place where errors
//! become HTTP statuses ([`ApiError::status`]), and the one encoder that
//! turns a reply into bytes on the wire ([`encode`], [`encode_chunked_head`]).
//! Every response carries the same `Server` header and standard reason
//! phrases.

use std::cell::RefCell;
use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use nix::time::{clock_gettime, ClockId};

use crate::orders::OrderError;
use crate::store::StoreError;

/// Seconds a client is told to wait after a 503.
const RETRY_AFTER_HEADER: &str = "Retry-After: 1";
/// The last chunk of a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// The `Server` header of every response.
const SERVER_HEADER: &str = "Server: orders-server";
/// The content type of every response.
const CONTENT_TYPE_HEADER: &str = "Content-Type: application/json";
/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// An HTTP status, with its status line (code and standard reason phrase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The numeric code.
    pub code: u16,
    /// `HTTP/1.1 <code> <reason>\r\n`.
    line: &'static str,
}

/// Statuses the server sends.
pub mod status {
    use super::Status;

    macro_rules! statuses {
        ($($name:ident = $code:literal $reason:literal;)*) => {
            $(pub const $name: Status = Status { code: $code, line: concat!("HTTP/1.1 ", $code, " ", $reason, "\r\n") };)*
        };
    }

    statuses! {
        OK = 200 "OK";
        BAD_REQUEST = 400 "Bad Request";
        UNAUTHORIZED = 401 "Unauthorized";
        NOT_FOUND = 404 "Not Found";
        METHOD_NOT_ALLOWED = 405 "Method Not Allowed";
        REQUEST_TIMEOUT = 408 "Request Timeout";
        PAYLOAD_TOO_LARGE = 413 "Payload Too Large";
        URI_TOO_LONG = 414 "URI Too Long";
        EXPECTATION_FAILED = 417 "Expectation Failed";
        HEADERS_TOO_LARGE = 431 "Request Header Fields Too Large";
        INTERNAL_SERVER_ERROR = 500 "Internal Server Error";
        NOT_IMPLEMENTED = 501 "Not Implemented";
        SERVICE_UNAVAILABLE = 503 "Service Unavailable";
        VERSION_NOT_SUPPORTED = 505 "HTTP Version Not Supported";
    }
}

/// Everything that turns into an error response.
#[derive(Debug)]
pub enum ApiError {
    /// The client sent an unacceptable order, id or query.
    Order(OrderError),
    /// No order with that id.
    OrderNotFound,
    /// The request needs an API token it did not present.
    Unauthorized,
    /// No such path.
    NoRoute,
    /// Known path, other method; carries the `Allow` header line.
    MethodNotAllowed(&'static str),
    /// The request is not HTTP/1.x as the RFCs define it; says what is wrong.
    Malformed(&'static str),
    /// An HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
    /// Content-Length above `max_body_size` (or a chunked body growing past it).
    BodyTooLarge(u64),
    /// Content-Length unusable (not digits, or repeated).
    BadContentLength,
    /// The body ended before it was complete (Content-Length bytes, or the
    /// last chunk).
    IncompleteBody,
    /// A Transfer-Encoding other than `chunked`.
    UnsupportedTransferEncoding,
    /// An `Expect` other than `100-continue`.
    UnsupportedExpectation,
    /// The client took longer than `client_timeout` to send its request.
    ClientTimeout,
    /// The store could not answer.
    Store(StoreError),
    /// The request line is longer than `limit_request_line`.
    RequestLineTooLong(usize),
    /// More headers than `limit_request_fields`.
    TooManyHeaders(usize),
    /// A header line longer than `limit_request_field_size`.
    HeaderTooLong(usize),
    /// The whole head is longer than the engine buffers.
    HeadTooLarge(usize),
    /// The worker holds `worker_connections` connections already.
    TooManyConnections,
    /// The worker's request-body memory (`max_buffered_body_bytes`) stayed
    /// full for too long.
    BodyMemoryFull,
    /// The worker is stopping (`/readyz` says so: send traffic elsewhere).
    Draining,
    /// A handler panicked: a bug, never the client's mistake.
    Internal,
}

impl ApiError {
    /// The HTTP status of this error: the single mapping of errors to statuses.
    pub fn status(&self) -> Status {
        match self {
            ApiError::Order(_)
            | ApiError::BadContentLength
            | ApiError::IncompleteBody
            | ApiError::Malformed(_) => status::BAD_REQUEST,
            ApiError::OrderNotFound | ApiError::NoRoute => status::NOT_FOUND,
            ApiError::Unauthorized => status::UNAUTHORIZED,
            ApiError::MethodNotAllowed(_) => status::METHOD_NOT_ALLOWED,
            ApiError::ClientTimeout => status::REQUEST_TIMEOUT,
            ApiError::BodyTooLarge(_) => status::PAYLOAD_TOO_LARGE,
            ApiError::RequestLineTooLong(_) => status::URI_TOO_LONG,
            ApiError::UnsupportedExpectation => status::EXPECTATION_FAILED,
            ApiError::TooManyHeaders(_)
            | ApiError::HeaderTooLong(_)
            | ApiError::HeadTooLarge(_) => status::HEADERS_TOO_LARGE,
            ApiError::Internal => status::INTERNAL_SERVER_ERROR,
            ApiError::UnsupportedTransferEncoding => status::NOT_IMPLEMENTED,
            ApiError::Store(_)
            | ApiError::TooManyConnections
            | ApiError::BodyMemoryFull
            | ApiError::Draining => status::SERVICE_UNAVAILABLE,
            ApiError::VersionNotSupported => status::VERSION_NOT_SUPPORTED,
        }
    }

    /// Whether the connection must be closed after this error: the rest of
    /// the bytes cannot be trusted (framing errors), or were not read.
    pub fn closes_connection(&self) -> bool {
        !matches!(
            self,
            ApiError::Order(_)
                | ApiError::OrderNotFound
                | ApiError::Unauthorized
                | ApiError::NoRoute
                | ApiError::MethodNotAllowed(_)
                | ApiError::Store(_)
        )
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Order(e) => e.fmt(f),
            ApiError::OrderNotFound => f.write_str("Order not found"),
            ApiError::Unauthorized => {
                f.write_str("This request needs an API token: Authorization: Bearer <token>")
            }
            ApiError::NoRoute => f.write_str("Not found"),
            ApiError::MethodNotAllowed(_) => f.write_str("Method not allowed"),
            ApiError::Malformed(what) => write!(f, "Malformed request: {what}"),
            ApiError::VersionNotSupported => {
                f.write_str("Only HTTP/1.0 and HTTP/1.1 are supported")
            }
            ApiError::BodyTooLarge(limit) => write!(f, "Request body is larger than {limit} bytes"),
            ApiError::BadContentLength => f.write_str("Invalid Content-Length header"),
            ApiError::IncompleteBody => f.write_str("Request body ended before it was complete"),
            ApiError::UnsupportedTransferEncoding => {
                f.write_str("Only the chunked Transfer-Encoding is supported")
            }
            ApiError::UnsupportedExpectation => {
                f.write_str("Only Expect: 100-continue is supported")
            }
            ApiError::ClientTimeout => f.write_str("Request not received in time"),
            // Never the store's own text: it may hold internals.
            ApiError::Store(_) => f.write_str("Service temporarily unavailable, retry later"),
            ApiError::RequestLineTooLong(n) => write!(f, "Request line is longer than {n} bytes"),
            ApiError::TooManyHeaders(n) => write!(f, "Request has more than {n} headers"),
            ApiError::HeaderTooLong(n) => write!(f, "A request header is longer than {n} bytes"),
            ApiError::HeadTooLarge(n) => write!(f, "Request head is longer than {n} bytes"),
            ApiError::TooManyConnections => {
                f.write_str("Server busy: too many connections, retry later")
            }
            ApiError::BodyMemoryFull => {
                f.write_str("Server busy: too many request bodies in flight, retry later")
            }
            ApiError::Draining => f.write_str("This worker is stopping, retry elsewhere"),
            ApiError::Internal => f.write_str("Internal server error"),
        }
    }
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        ApiError::Order(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Store(e)
    }
}

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

    /// The error's status, `{"message": ...}` body and headers.
    pub fn error(e: &ApiError) -> Reply {
        let mut reply = Reply {
            status: e.status(),
            close: e.closes_connection(),
            ..Reply::ok(message_body(&e.to_string()))
        };
        match e {
            ApiError::MethodNotAllowed(allow) => reply.headers.push(allow),
            ApiError::Unauthorized => reply.headers.push("WWW-Authenticate: Bearer"),
            _ => {}
        }
        if reply.status == status::SERVICE_UNAVAILABLE {
            reply.headers.push(RETRY_AFTER_HEADER);
        }
        reply
    }
}

/// `{"message": "..."}`.
pub fn message_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "message": message }))
        .expect("a JSON object always serializes")
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
    push_decimal(
        out,
        reply.prefix.len() + reply.body.len() + reply.suffix.len(),
    );
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
    out.extend_from_slice(status.line.as_bytes());
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
        encode(&Reply::error(&ApiError::TooManyConnections), true, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\nRetry-After: 1\r\nConnection: close\r\n"),
            "{text}"
        );
        assert_eq!(
            status::VERSION_NOT_SUPPORTED.line,
            "HTTP/1.1 505 HTTP Version Not Supported\r\n"
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

    #[test]
    fn client_mistakes_are_4xx_and_the_rest_5xx() {
        let client = [
            ApiError::Malformed("x"),
            ApiError::BadContentLength,
            ApiError::BodyTooLarge(1),
            ApiError::ClientTimeout,
            ApiError::HeadTooLarge(1),
            ApiError::UnsupportedExpectation,
        ];
        for e in client {
            assert!((400..500).contains(&e.status().code), "{e:?}");
            assert!(e.closes_connection(), "{e:?}");
        }
        assert!(!ApiError::OrderNotFound.closes_connection());
        assert_eq!(ApiError::VersionNotSupported.status().code, 505);
    }
}
