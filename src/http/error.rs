//! Every error a request can end in, and the one place where errors become
//! HTTP statuses ([`ApiError::status`]) and error responses
//! ([`ApiError::reply`]): a JSON `{"message": ...}` body, with `Allow`,
//! `WWW-Authenticate`, `ETag` or `Retry-After` where the status calls for
//! it, and `Cache-Control: no-store` (an error is never cached). A
//! client's mistake is always a 4xx; only a bug is a 500.

use std::fmt;

use crate::orders::OrderError;
use crate::proto::etag::EntityTag;
use crate::proto::response::Reply;
use crate::proto::status::{self, Status};
use crate::proto::Error as ProtocolError;
use crate::store::StoreError;

/// Seconds a client is told to wait after a 503.
const RETRY_AFTER_HEADER: &str = "Retry-After: 1";

/// Everything that turns into an error response.
#[derive(Debug)]
pub enum ApiError {
    /// The request broke HTTP/1.1 or a request limit (`proto`).
    Protocol(ProtocolError),
    /// The client sent an unacceptable order, id or query.
    Order(OrderError),
    /// No order with that id.
    OrderNotFound,
    /// `If-Match` or `If-None-Match` (named) is neither `*` nor a list of
    /// entity tags.
    BadPrecondition(&'static str),
    /// `If-Match` or `If-None-Match` is false; carries the current tag,
    /// when there is a current representation with one.
    PreconditionFailed(Option<EntityTag>),
    /// The request needs an API token it did not present.
    Unauthorized,
    /// No such path.
    NoRoute,
    /// Known path, other method; carries the `Allow` header line.
    MethodNotAllowed(&'static str),
    /// The store could not answer.
    Store(StoreError),
    /// The worker holds `worker_connections` connections already.
    TooManyConnections,
    /// The worker is stopping (`/readyz` says so: send traffic elsewhere).
    Draining,
    /// A handler panicked: a bug, never the client's mistake.
    Internal,
}

impl ApiError {
    /// The HTTP status of this error: the single mapping of errors to statuses.
    pub fn status(&self) -> Status {
        match self {
            ApiError::Protocol(e) => match e {
                ProtocolError::Malformed(_)
                | ProtocolError::BadContentLength
                | ProtocolError::IncompleteBody => status::BAD_REQUEST,
                ProtocolError::ClientTimeout => status::REQUEST_TIMEOUT,
                ProtocolError::BodyTooLarge(_) => status::PAYLOAD_TOO_LARGE,
                ProtocolError::RequestLineTooLong(_) => status::URI_TOO_LONG,
                ProtocolError::UnsupportedExpectation => status::EXPECTATION_FAILED,
                ProtocolError::TooManyHeaders(_)
                | ProtocolError::HeaderTooLong(_)
                | ProtocolError::HeadTooLarge(_) => status::HEADERS_TOO_LARGE,
                ProtocolError::UnsupportedTransferEncoding => status::NOT_IMPLEMENTED,
                ProtocolError::BodyMemoryFull => status::SERVICE_UNAVAILABLE,
                ProtocolError::VersionNotSupported => status::VERSION_NOT_SUPPORTED,
            },
            ApiError::Order(_) | ApiError::BadPrecondition(_) => status::BAD_REQUEST,
            ApiError::PreconditionFailed(_) => status::PRECONDITION_FAILED,
            ApiError::OrderNotFound | ApiError::NoRoute => status::NOT_FOUND,
            ApiError::Unauthorized => status::UNAUTHORIZED,
            ApiError::MethodNotAllowed(_) => status::METHOD_NOT_ALLOWED,
            ApiError::Internal => status::INTERNAL_SERVER_ERROR,
            ApiError::Store(_) | ApiError::TooManyConnections | ApiError::Draining => {
                status::SERVICE_UNAVAILABLE
            }
        }
    }

    /// Whether the connection must be closed after this error: the rest of
    /// the bytes cannot be trusted (framing errors), or were not read.
    pub fn closes_connection(&self) -> bool {
        !matches!(
            self,
            ApiError::Order(_)
                | ApiError::BadPrecondition(_)
                | ApiError::OrderNotFound
                | ApiError::PreconditionFailed(_)
                | ApiError::Unauthorized
                | ApiError::NoRoute
                | ApiError::MethodNotAllowed(_)
                | ApiError::Store(_)
        )
    }

    /// The error's response: its status, `{"message": ...}` body and headers.
    pub fn reply(&self) -> Reply {
        let mut reply = Reply {
            status: self.status(),
            close: self.closes_connection(),
            ..Reply::ok(message_body(&self.to_string()))
        };
        match self {
            ApiError::MethodNotAllowed(allow) => reply.headers.push(allow),
            ApiError::Unauthorized => reply.headers.push("WWW-Authenticate: Bearer"),
            ApiError::PreconditionFailed(tag) => reply.etag = *tag,
            _ => {}
        }
        if reply.status == status::SERVICE_UNAVAILABLE {
            reply.headers.push(RETRY_AFTER_HEADER);
        }
        reply
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Protocol(e) => e.fmt(f),
            ApiError::Order(e) => e.fmt(f),
            ApiError::OrderNotFound => f.write_str("Order not found"),
            ApiError::BadPrecondition(name) => {
                write!(f, "{name} must be * or a list of entity tags (\"...\" or W/\"...\")")
            }
            ApiError::PreconditionFailed(_) => f.write_str(
                "Precondition failed: the order is not in the state If-Match or If-None-Match asks for",
            ),
            ApiError::Unauthorized => {
                f.write_str("This request needs an API token: Authorization: Bearer <token>")
            }
            ApiError::NoRoute => f.write_str("Not found"),
            ApiError::MethodNotAllowed(_) => f.write_str("Method not allowed"),
            // Never the store's own text: it may hold internals.
            ApiError::Store(_) => f.write_str("Service temporarily unavailable, retry later"),
            ApiError::TooManyConnections => {
                f.write_str("Server busy: too many connections, retry later")
            }
            ApiError::Draining => f.write_str("This worker is stopping, retry elsewhere"),
            ApiError::Internal => f.write_str("Internal server error"),
        }
    }
}

impl From<ProtocolError> for ApiError {
    fn from(e: ProtocolError) -> Self {
        ApiError::Protocol(e)
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

/// `{"message": "..."}`.
pub fn message_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "message": message }))
        .expect("a JSON object always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_mistakes_are_4xx_and_the_rest_5xx() {
        let client = [
            ProtocolError::Malformed("x"),
            ProtocolError::BadContentLength,
            ProtocolError::BodyTooLarge(1),
            ProtocolError::ClientTimeout,
            ProtocolError::HeadTooLarge(1),
            ProtocolError::UnsupportedExpectation,
        ];
        for e in client.map(ApiError::Protocol) {
            assert!((400..500).contains(&e.status().code), "{e:?}");
            assert!(e.closes_connection(), "{e:?}");
        }
        assert!(!ApiError::OrderNotFound.closes_connection());
        assert_eq!(
            ApiError::Protocol(ProtocolError::VersionNotSupported)
                .status()
                .code,
            505
        );
    }

    #[test]
    fn error_replies_carry_their_headers() {
        let busy = ApiError::TooManyConnections.reply();
        assert_eq!(busy.status.code, 503);
        assert_eq!(busy.headers, ["Retry-After: 1"]);
        assert!(busy.close);
        let wrong = ApiError::MethodNotAllowed("Allow: GET").reply();
        assert_eq!(wrong.headers, ["Allow: GET"]);
        assert!(!wrong.close);
        assert_eq!(wrong.body, br#"{"message":"Method not allowed"}"#);
        assert_eq!(
            ApiError::Unauthorized.reply().headers,
            ["WWW-Authenticate: Bearer"]
        );
    }
}
