//! The HTTP statuses the server sends: the one table of them, each with
//! its standard reason phrase. Responses take their status line from it;
//! the metrics label requests by it (`metrics::STATUSES`).

/// An HTTP status, with its status line (code and standard reason phrase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The numeric code.
    pub code: u16,
    /// `HTTP/1.1 <code> <reason>\r\n`.
    line: &'static str,
}

impl Status {
    /// `HTTP/1.1 <code> <reason>\r\n`.
    pub fn line(&self) -> &'static str {
        self.line
    }
}

macro_rules! statuses {
    ($($name:ident = $code:literal $reason:literal;)*) => {
        $(
            #[allow(missing_docs)]
            pub const $name: Status = Status {
                code: $code,
                line: concat!("HTTP/1.1 ", $code, " ", $reason, "\r\n"),
            };
        )*
        /// Every status the server sends, in order of code.
        pub const ALL: &[Status] = &[$($name),*];
    };
}

statuses! {
    OK = 200 "OK";
    NO_CONTENT = 204 "No Content";
    NOT_MODIFIED = 304 "Not Modified";
    BAD_REQUEST = 400 "Bad Request";
    UNAUTHORIZED = 401 "Unauthorized";
    NOT_FOUND = 404 "Not Found";
    METHOD_NOT_ALLOWED = 405 "Method Not Allowed";
    REQUEST_TIMEOUT = 408 "Request Timeout";
    PRECONDITION_FAILED = 412 "Precondition Failed";
    PAYLOAD_TOO_LARGE = 413 "Payload Too Large";
    URI_TOO_LONG = 414 "URI Too Long";
    EXPECTATION_FAILED = 417 "Expectation Failed";
    HEADERS_TOO_LARGE = 431 "Request Header Fields Too Large";
    INTERNAL_SERVER_ERROR = 500 "Internal Server Error";
    NOT_IMPLEMENTED = 501 "Not Implemented";
    SERVICE_UNAVAILABLE = 503 "Service Unavailable";
    VERSION_NOT_SUPPORTED = 505 "HTTP Version Not Supported";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_order_with_standard_lines() {
        assert!(ALL.windows(2).all(|w| w[0].code < w[1].code));
        assert_eq!(
            VERSION_NOT_SUPPORTED.line(),
            "HTTP/1.1 505 HTTP Version Not Supported\r\n"
        );
        for s in ALL {
            assert!(s.line().starts_with(&format!("HTTP/1.1 {} ", s.code)));
        }
    }
}
