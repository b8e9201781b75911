//! Responses: the [`Reply`] a service produces, and the one encoder that
//! turns it into bytes on the wire ([`encode`], and for a body streamed in
//! chunks [`encode_streamed_head`] and [`encode_chunk_size`]). Every
//! response carries the same `Server` header and standard reason phrases
//! (`status`), and a `Cache-Control` ([`Caching`]).
//!
//! The rules of RFC 9110/9112 on bodies are kept here, whatever the
//! service answers: a response to HEAD has the header fields a GET would
//! have and no body; a 204 or 304 has neither body nor `Content-Length`
//! (nor `Content-Type`: there is no content).

use std::cell::RefCell;
use std::io;
use std::time::{Duration, UNIX_EPOCH};

use nix::time::{clock_gettime, ClockId};

use super::etag::EntityTag;
use super::status::{self, Status};

/// The last chunk of a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// The `Server` header of every response.
const SERVER_HEADER: &str = "Server: orders-server";
/// The content type of every response.
const CONTENT_TYPE_HEADER: &str = "Content-Type: application/json";
/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What caches may do with a response (`Cache-Control`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    /// `no-store`: never kept (errors, writes, health checks).
    NoStore,
    /// `no-cache`: a cache may keep it but must revalidate it (with its
    /// `ETag`) before every use, so a changed resource is never served as
    /// fresh. With an `ETag`, also `X-Accel-Expires: @1` (an expiry in the
    /// past), which tells nginx's cache, and only it, to store the response
    /// anyway and revalidate it each time (nginx does not store a
    /// `no-cache` response otherwise, and removes `X-Accel-*` fields from
    /// what it forwards).
    Revalidate,
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
    /// Its `ETag`, if it has one.
    pub etag: Option<EntityTag>,
    /// Its `Cache-Control`.
    pub caching: Caching,
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
            etag: None,
            caching: Caching::NoStore,
            close: false,
            streamed: false,
            request_id: None,
        }
    }

    /// A 304 Not Modified for a representation tagged `etag`: no body,
    /// with the tag and the caching a 200 would have (RFC 9110 §15.4.5).
    pub fn not_modified(etag: Option<EntityTag>) -> Reply {
        Reply {
            status: status::NOT_MODIFIED,
            ..Reply::ok(Vec::new())
        }
        .revalidated(etag)
    }

    /// A 204 No Content.
    pub fn no_content() -> Reply {
        Reply {
            status: status::NO_CONTENT,
            ..Reply::ok(Vec::new())
        }
    }

    /// The reply, tagged `etag` and cacheable on revalidation only
    /// (`Caching::Revalidate`); without a tag there is nothing to
    /// revalidate with, so it is not to be kept (`no-store`).
    pub fn revalidated(self, etag: Option<EntityTag>) -> Reply {
        let caching = match etag {
            Some(_) => Caching::Revalidate,
            None => Caching::NoStore,
        };
        Reply {
            etag,
            caching,
            ..self
        }
    }

    /// Whether its status allows no content at all (RFC 9110 §6.4.1).
    fn has_no_content(&self) -> bool {
        matches!(self.status.code, 204 | 304)
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
    /// Whether the body is wanted at all (not for a HEAD request, whose
    /// answer ends with its head): a producer may stop once `start` is done.
    fn wants_body(&self) -> bool {
        true
    }
}

/// Appends the whole response to `out`: its head, and its body unless it
/// answers a HEAD request (`head_only`) or its status has no content.
pub fn encode(reply: &Reply, close: bool, head_only: bool, out: &mut Vec<u8>) {
    let head = Head {
        status: reply.status,
        content: !reply.has_no_content(),
        headers: &reply.headers,
        etag: reply.etag,
        caching: reply.caching,
        request_id: reply.request_id.as_deref(),
        close,
    };
    head.encode(out);
    if !head.content {
        out.extend_from_slice(b"\r\n");
        return;
    }
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, reply.body_len());
    out.extend_from_slice(b"\r\n\r\n");
    if head_only {
        return;
    }
    out.extend_from_slice(reply.prefix);
    out.extend_from_slice(&reply.body);
    out.extend_from_slice(reply.suffix);
}

/// Appends the head of a 200 whose body is streamed: in chunks, or for an
/// HTTP/1.0 client (which knows no chunks) as raw bytes ended by the close.
/// A streamed body has no tag, so nothing to revalidate it with: caches
/// must not keep it (`no-store`).
pub fn encode_streamed_head(
    chunked: bool,
    close: bool,
    request_id: Option<&str>,
    out: &mut Vec<u8>,
) {
    let head = Head {
        status: status::OK,
        content: true,
        headers: &[],
        etag: None,
        caching: Caching::NoStore,
        request_id,
        close: close || !chunked,
    };
    head.encode(out);
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the size line of a chunk of `len` bytes.
pub fn encode_chunk_size(len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
}

/// The header fields every response starts with.
struct Head<'a> {
    status: Status,
    /// Whether it has content (a `Content-Type`).
    content: bool,
    headers: &'a [&'a str],
    etag: Option<EntityTag>,
    caching: Caching,
    request_id: Option<&'a str>,
    close: bool,
}

impl Head<'_> {
    /// Status line, Server, Date, Content-Type, ETag, caching, extra
    /// headers, X-Request-Id and Connection (not the blank line).
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.status.line().as_bytes());
        out.extend_from_slice(SERVER_HEADER.as_bytes());
        out.extend_from_slice(b"\r\nDate: ");
        push_date(out);
        out.extend_from_slice(b"\r\n");
        if self.content {
            out.extend_from_slice(CONTENT_TYPE_HEADER.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(tag) = self.etag {
            out.extend_from_slice(b"ETag: ");
            tag.write(out);
            out.extend_from_slice(b"\r\n");
        }
        // nginx 1.22 reads X-Accel-Expires only before Cache-Control.
        out.extend_from_slice(match (self.caching, self.etag) {
            (Caching::NoStore, _) => b"Cache-Control: no-store\r\n".as_slice(),
            (Caching::Revalidate, None) => b"Cache-Control: no-cache\r\n",
            (Caching::Revalidate, Some(_)) => b"X-Accel-Expires: @1\r\nCache-Control: no-cache\r\n",
        });
        for h in self.headers {
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(id) = self.request_id {
            out.extend_from_slice(b"X-Request-Id: ");
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
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
///
/// Never inlined: it runs in coroutines, which may move between scheduler
/// threads across a wait, and an optimizer that inlined it into a loop
/// that waits could compute the thread-local's address once, on the first
/// thread, and use another thread's cache after a move (see
/// `store::runtime::drive_turn`). Out of line, each call finds its own.
#[inline(never)]
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
        encode(&Reply::ok(b"{}".to_vec()), false, false, &mut out);
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
        encode(&busy, true, false, &mut out);
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

    fn encoded(reply: &Reply, head_only: bool) -> String {
        let mut out = Vec::new();
        encode(reply, false, head_only, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_head_response_has_the_fields_of_a_get_and_no_body() {
        let reply = Reply::ok(b"{\"a\":1}".to_vec()).revalidated(Some(EntityTag(1)));
        let get = encoded(&reply, false);
        let head = encoded(&reply, true);
        assert!(get.ends_with("\r\n\r\n{\"a\":1}"), "{get}");
        assert_eq!(head, get.trim_end_matches("{\"a\":1}"));
        assert!(head.contains("\r\nContent-Length: 7\r\n"), "{head}");
        assert!(
            head.contains("\r\nETag: \"0000000000000001\"\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nCache-Control: no-cache\r\n"), "{head}");
    }

    #[test]
    fn no_content_statuses_have_no_length_type_or_body() {
        for reply in [Reply::not_modified(Some(EntityTag(2))), Reply::no_content()] {
            let text = encoded(&reply, false);
            assert!(text.ends_with("\r\n\r\n"), "{text}");
            assert!(!text.contains("Content-Length"), "{text}");
            assert!(!text.contains("Content-Type"), "{text}");
        }
        let text = encoded(&Reply::not_modified(Some(EntityTag(2))), false);
        assert!(text.starts_with("HTTP/1.1 304 Not Modified\r\n"), "{text}");
        assert!(text.contains("ETag: \"0000000000000002\"\r\n"), "{text}");
        assert!(encoded(&Reply::ok(Vec::new()), false).contains("Cache-Control: no-store"));
    }
}
