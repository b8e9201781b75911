//! HTTP/1.1 as a protocol, on may coroutines: everything between the bytes
//! of a connection and a request the application answers, and nothing of
//! the application (as hyper's `proto::h1` never sees its service). It
//! knows no order, store, route or metric: the application is a
//! [`connection::Service`] it calls, `http::dispatch` the one there is.
//!
//! - [`connection`]: the keep-alive loop of one connection, generic over
//!   its [`io::Io`] (the plain TCP socket, a TLS stream, scripted bytes in
//!   tests) and its service;
//! - [`idle`]: connections parked between requests, without a coroutine;
//! - [`io`]: what the loop needs of a connection, and the TCP socket's;
//! - [`proxy`]: the PROXY protocol header a TCP balancer sends first;
//! - [`request`]: request heads, parsed with httparse: method, target,
//!   version, framing, headers (protocol facts only);
//! - [`framing`]: how a body is delimited, from the headers;
//! - [`chunked`]: the chunked transfer coding's decoder;
//! - [`body`]: request bodies in bounded memory;
//! - [`etag`]: entity tags, and the preconditions that compare them;
//! - [`response`]: replies and their encoding on the wire;
//! - [`status`]: the table of statuses;
//! - [`sweep`]: the connection timeouts, enforced without a timer per request;
//! - [`tls`]: TLS on a connection (rustls), a second [`io::Io`].
//!
//! Its errors ([`Error`]) are the client's mistakes and the connection's
//! limits; which status each gets is the application's one mapping
//! (`http::error`).

pub mod body;
pub mod chunked;
pub mod connection;
pub mod etag;
pub mod framing;
pub mod idle;
pub mod io;
pub mod proxy;
pub mod request;
pub mod response;
pub mod status;
pub mod sweep;
pub mod tls;

use std::fmt;

/// Why a request cannot be taken as HTTP/1.1 allows, or within the limits:
/// the connection answers it and closes (its remaining bytes cannot be
/// trusted, or were not read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The request is not HTTP/1.x as the RFCs define it; says what is wrong.
    Malformed(&'static str),
    /// An HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
    /// Content-Length above the largest body (or a chunked body growing past it).
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
    /// The request line is longer than `limit_request_line`.
    RequestLineTooLong(usize),
    /// More headers than `limit_request_fields`.
    TooManyHeaders(usize),
    /// A header line longer than `limit_request_field_size`.
    HeaderTooLong(usize),
    /// The whole head is longer than the engine buffers.
    HeadTooLarge(usize),
    /// The worker's request-body memory (`max_buffered_body_bytes`) stayed
    /// full for too long.
    BodyMemoryFull,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Malformed(what) => write!(f, "Malformed request: {what}"),
            Error::VersionNotSupported => f.write_str("Only HTTP/1.0 and HTTP/1.1 are supported"),
            Error::BodyTooLarge(limit) => write!(f, "Request body is larger than {limit} bytes"),
            Error::BadContentLength => f.write_str("Invalid Content-Length header"),
            Error::IncompleteBody => f.write_str("Request body ended before it was complete"),
            Error::UnsupportedTransferEncoding => {
                f.write_str("Only the chunked Transfer-Encoding is supported")
            }
            Error::UnsupportedExpectation => f.write_str("Only Expect: 100-continue is supported"),
            Error::ClientTimeout => f.write_str("Request not received in time"),
            Error::RequestLineTooLong(n) => write!(f, "Request line is longer than {n} bytes"),
            Error::TooManyHeaders(n) => write!(f, "Request has more than {n} headers"),
            Error::HeaderTooLong(n) => write!(f, "A request header is longer than {n} bytes"),
            Error::HeadTooLarge(n) => write!(f, "Request head is longer than {n} bytes"),
            Error::BodyMemoryFull => {
                f.write_str("Server busy: too many request bodies in flight, retry later")
            }
        }
    }
}

impl std::error::Error for Error {}
