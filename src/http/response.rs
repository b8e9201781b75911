//! Responses: the [`Reply`] a handler produces, the one place where errors
//! become HTTP statuses ([`ApiError::status`]), and the raw encoding used
//! when a connection must be closed after the response.

use std::fmt;
use std::time::SystemTime;

use crate::orders::OrderError;
use crate::store::StoreError;

/// Seconds a client is told to wait after a 503.
pub const RETRY_AFTER_HEADER: &str = "Retry-After: 1";
/// The content type of every response.
pub const CONTENT_TYPE_HEADER: &str = "Content-Type: application/json";

/// An HTTP status with its reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub code: usize,
    pub reason: &'static str,
}

/// Statuses the server sends.
pub mod status {
    use super::Status;
    pub const OK: Status = Status { code: 200, reason: "OK" };
    pub const BAD_REQUEST: Status = Status { code: 400, reason: "Bad Request" };
    pub const NOT_FOUND: Status = Status { code: 404, reason: "Not Found" };
    pub const METHOD_NOT_ALLOWED: Status = Status { code: 405, reason: "Method Not Allowed" };
    pub const PAYLOAD_TOO_LARGE: Status = Status { code: 413, reason: "Payload Too Large" };
    pub const URI_TOO_LONG: Status = Status { code: 414, reason: "URI Too Long" };
    pub const HEADERS_TOO_LARGE: Status = Status { code: 431, reason: "Request Header Fields Too Large" };
    pub const NOT_IMPLEMENTED: Status = Status { code: 501, reason: "Not Implemented" };
    pub const SERVICE_UNAVAILABLE: Status = Status { code: 503, reason: "Service Unavailable" };
}

/// Everything that turns into an error response.
#[derive(Debug)]
pub enum ApiError {
    /// The client sent an unacceptable order, id or query.
    Order(OrderError),
    /// No order with that id.
    OrderNotFound,
    /// No such path.
    NoRoute,
    /// Known path, other method; carries the `Allow` header line.
    MethodNotAllowed(&'static str),
    /// Content-Length above `max_body_size`.
    BodyTooLarge(u64),
    /// Content-Length unusable (not digits, or repeated).
    BadContentLength,
    /// The body ended before Content-Length bytes arrived.
    IncompleteBody,
    /// A Transfer-Encoding header (chunked bodies are not supported).
    TransferEncoding,
    /// The store could not answer.
    Store(StoreError),
    /// The request line is longer than `limit_request_line`.
    RequestLineTooLong(usize),
    /// More headers than `limit_request_fields`.
    TooManyHeaders(usize),
    /// A header line longer than `limit_request_field_size`.
    HeaderTooLong(usize),
    /// The worker holds `worker_connections` connections already.
    TooManyConnections,
}

impl ApiError {
    /// The HTTP status of this error: the single mapping of errors to statuses.
    pub fn status(&self) -> Status {
        match self {
            ApiError::Order(_) | ApiError::BadContentLength | ApiError::IncompleteBody => status::BAD_REQUEST,
            ApiError::OrderNotFound | ApiError::NoRoute => status::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => status::METHOD_NOT_ALLOWED,
            ApiError::BodyTooLarge(_) => status::PAYLOAD_TOO_LARGE,
            ApiError::TransferEncoding => status::NOT_IMPLEMENTED,
            ApiError::Store(_) | ApiError::TooManyConnections => status::SERVICE_UNAVAILABLE,
            ApiError::RequestLineTooLong(_) => status::URI_TOO_LONG,
            ApiError::TooManyHeaders(_) | ApiError::HeaderTooLong(_) => status::HEADERS_TOO_LARGE,
        }
    }

    /// Whether the connection must be closed after this error (framing
    /// errors: the rest of the bytes cannot be trusted or are not read).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ApiError::BodyTooLarge(_)
                | ApiError::BadContentLength
                | ApiError::IncompleteBody
                | ApiError::TransferEncoding
                | ApiError::RequestLineTooLong(_)
                | ApiError::TooManyHeaders(_)
                | ApiError::HeaderTooLong(_)
                | ApiError::TooManyConnections
        )
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Order(e) => e.fmt(f),
            ApiError::OrderNotFound => f.write_str("Order not found"),
            ApiError::NoRoute => f.write_str("Not found"),
            ApiError::MethodNotAllowed(_) => f.write_str("Method not allowed"),
            ApiError::BodyTooLarge(limit) => write!(f, "Request body is larger than {limit} bytes"),
            ApiError::BadContentLength => f.write_str("Invalid Content-Length header"),
            ApiError::IncompleteBody => f.write_str("Request body is shorter than its Content-Length"),
            ApiError::TransferEncoding => f.write_str("Transfer-Encoding is not supported; send a Content-Length"),
            // Never the store's own text: it may hold internals.
            ApiError::Store(_) => f.write_str("Service temporarily unavailable, retry later"),
            ApiError::RequestLineTooLong(n) => write!(f, "Request line is longer than {n} bytes"),
            ApiError::TooManyHeaders(n) => write!(f, "Request has more than {n} headers"),
            ApiError::HeaderTooLong(n) => write!(f, "A request header is longer than {n} bytes"),
            ApiError::TooManyConnections => f.write_str("Server busy: too many connections, retry later"),
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
    pub status: Status,
    /// The JSON body.
    pub body: Vec<u8>,
    /// Extra header lines (`Allow`, `Retry-After`).
    pub headers: Vec<&'static str>,
    /// Close the connection after this response.
    pub close: bool,
    /// The response was already written to the socket (a streamed list).
    pub already_sent: bool,
}

impl Reply {
    /// A 200 with this JSON body.
    pub fn ok(body: Vec<u8>) -> Reply {
        Reply { status: status::OK, body, headers: Vec::new(), close: false, already_sent: false }
    }

    /// Marks a response that was streamed to the socket already.
    pub fn streamed() -> Reply {
        Reply { status: status::OK, body: Vec::new(), headers: Vec::new(), close: true, already_sent: true }
    }

    /// The error's status, `{"message": ...}` body and headers.
    pub fn error(e: &ApiError) -> Reply {
        let mut reply = Reply {
            status: e.status(),
            body: message_body(&e.to_string()),
            headers: Vec::new(),
            close: e.closes_connection(),
            already_sent: false,
        };
        match e {
            ApiError::MethodNotAllowed(allow) => reply.headers.push(allow),
            ApiError::Store(_) | ApiError::TooManyConnections => reply.headers.push(RETRY_AFTER_HEADER),
            _ => {}
        }
        reply
    }
}

/// `{"message": "..."}`.
pub fn message_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "message": message })).expect("a JSON object always serializes")
}

/// Status line, Server, Date and Content-Type lines of a response written
/// by the server itself (not by may_minihttp).
fn head_start(out: &mut Vec<u8>, status: Status) {
    let date = httpdate::fmt_http_date(SystemTime::now());
    out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", status.code, status.reason).as_bytes());
    out.extend_from_slice(format!("Server: orders-server\r\nDate: {date}\r\n").as_bytes());
    out.extend_from_slice(CONTENT_TYPE_HEADER.as_bytes());
}

/// The head of a streamed 200 (chunked, then the connection closes).
pub fn encode_chunked_head() -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    head_start(&mut out, status::OK);
    out.extend_from_slice(b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    out
}

/// The whole response as bytes, with `Connection: close`, for a connection
/// that is closed after it (may_minihttp cannot close after a response).
pub fn encode_closing(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::with_capacity(reply.body.len() + 256);
    head_start(&mut out, reply.status);
    out.extend_from_slice(format!("\r\nContent-Length: {}\r\nConnection: close\r\n", reply.body.len()).as_bytes());
    for h in &reply.headers {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&reply.body);
    out
}
