//! The application's side of every request: [`Dispatch`] is the
//! `proto::connection::Service` of an API connection. Once a head is
//! complete it routes it (`routes`, by the route table), authorizes it
//! (`auth`), notes the test-only fault it asks for (`faults`), labels it for
//! the metrics and captures what the access log needs; then it runs the
//! handler (a panic costs its request a 500, never the worker), and counts
//! and logs each answer. Which status an error gets is `error`'s.

use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use super::access_log;
use super::error::ApiError;
use super::routes::{self, Route};
use super::App;
use crate::faults::{self, Fault};
use crate::metrics::{self, RequestLabels};
use crate::proto::etag::Preconditions;
use crate::proto::framing::{BodyKind, Framing};
use crate::proto::request::{Head, Version};
use crate::proto::response::{ChunkSink, Reply};
use crate::proto::{connection::Service, Error as ProtocolError};
use crate::store::Counted;

/// The service of one connection.
pub struct Dispatch<'a> {
    app: &'a App,
    /// The client's address, for the access log (only kept when it is on).
    peer: Option<IpAddr>,
}

impl<'a> Dispatch<'a> {
    /// The service of a connection from `peer` (kept only with the access
    /// log on).
    pub fn new(app: &'a App, peer: Option<IpAddr>) -> Dispatch<'a> {
        Dispatch {
            app,
            peer: app.access.as_ref().and(peer),
        }
    }
}

/// What the access log needs of a request head (kept only when it is on).
#[derive(Debug)]
struct Captured {
    /// The method.
    method: String,
    /// The request target, as sent.
    target: String,
    /// Values of the access log's headers, by index.
    headers: Vec<Option<Vec<u8>>>,
    /// The name of the API token that authorized the request.
    user: Option<String>,
}

/// One request, from its complete head to its answer.
pub struct Exchange {
    route: Result<Route, ApiError>,
    /// `If-Match` and `If-None-Match`.
    pre: Preconditions,
    /// The client's `X-Request-Id` (when usable), else with the access log
    /// on a new one: echoed in the response.
    request_id: Option<String>,
    /// A test-only fault to run (`faults`).
    fault: Option<Fault>,
    /// Method and route labels for the metrics.
    labels: RequestLabels,
    /// When its head was complete.
    started: Instant,
    version: Version,
    /// With the access log on.
    captured: Option<Captured>,
    /// Counts it in `orders_http_requests_in_flight` while it lives.
    _in_flight: InFlight,
}

/// A request being handled, counted in the in-flight gauge until dropped
/// (answered, or abandoned by a client that left).
struct InFlight;

impl InFlight {
    fn start() -> InFlight {
        metrics::in_flight(1);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::in_flight(-1);
    }
}

impl Service for Dispatch<'_> {
    type Exchange = Exchange;

    fn begin(&self, head: &Head<'_>) -> Exchange {
        let app = self.app;
        app.state.count_request();
        let path = head.path();
        let routed = routes::route(head.method, path, &app.limits.list);
        let fields = head.headers.iter().map(|h| (h.name, h.value));
        let (pre, route) = match Preconditions::from_fields(fields) {
            Ok(pre) => (pre, routed.route),
            Err(bad) => (
                Preconditions::default(),
                Err(ApiError::BadPrecondition(bad.0)),
            ),
        };
        let mut exchange = Exchange {
            route,
            pre,
            request_id: request_id(head, app.access.is_some()),
            fault: faults::for_path(path),
            labels: RequestLabels::new(head.method, routed.id),
            started: Instant::now(),
            version: head.version,
            captured: app.access.as_ref().map(|log| capture(head, &log.headers)),
            _in_flight: InFlight::start(),
        };
        self.authorize(&mut exchange, head);
        exchange
    }

    fn refuse_early(&self, exchange: &Exchange, framing: &Framing) -> Option<Reply> {
        match &exchange.route {
            // Never buffer a body for a client that may not write.
            Err(ApiError::Unauthorized) if framing.body != BodyKind::None => {
                Some(ApiError::Unauthorized.reply())
            }
            // Refused before the body is sent: it is never read.
            Err(e) if framing.expect_continue => Some(e.reply()),
            _ => None,
        }
    }

    fn respond(&self, exchange: &mut Exchange, body: &[u8], stream: &mut dyn ChunkSink) -> Reply {
        let app = self.app;
        let route = std::mem::replace(&mut exchange.route, Err(ApiError::Internal));
        let fault = exchange.fault;
        let pre = &exchange.pre;
        let handled = catch_unwind(AssertUnwindSafe(|| {
            if let Some(fault) = fault {
                faults::run(fault);
            }
            let store = Counted(app.store.as_ref());
            let request = routes::Request {
                body,
                pre,
                sink: &mut *stream,
                buffer_limit: app.limits.response_buffer,
            };
            route.and_then(|r| routes::handle(&store, r, request, &app.state))
        }));
        match handled {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                if let ApiError::Store(cause) = &e {
                    let cause = crate::logging::chain(cause);
                    crate::log_repeated!(log::Level::Warn, "store error: {cause}");
                }
                e.reply()
            }
            // The panic hook has logged it.
            Err(_) if stream.started() => Reply::aborted(),
            Err(_) => ApiError::Internal.reply(),
        }
    }

    fn reject(&self, error: ProtocolError) -> Reply {
        ApiError::Protocol(error).reply()
    }

    fn request_id(&self, exchange: &Exchange) -> Option<String> {
        exchange.request_id.clone()
    }

    /// Counts the request (or, with no exchange, one refused before its
    /// head could be read) in the metrics, and logs it in the access log
    /// when that is on.
    fn finish(&self, exchange: Option<Exchange>, reply: &Reply) {
        let status = reply.status.code;
        let Some(exchange) = exchange else {
            metrics::request_done(RequestLabels::unrouted(), status, Duration::ZERO);
            return;
        };
        let took = exchange.started.elapsed();
        metrics::request_done(exchange.labels, status, took);
        if let (Some(log), Some(c)) = (&self.app.access, &exchange.captured) {
            log.record(&access_log::Entry {
                peer: self.peer,
                method: &c.method,
                target: &c.target,
                http10: exchange.version == Version::Http10,
                status,
                bytes: (!reply.streamed).then(|| reply.body_len()),
                took,
                user: c.user.as_deref(),
                headers: &c.headers,
                request_id: exchange.request_id.as_deref().unwrap_or_default(),
            });
        }
    }

    fn draining(&self) -> bool {
        self.app.state.is_draining()
    }
}

impl Dispatch<'_> {
    /// With API tokens on, a request that needs one and presents none of
    /// ours becomes a 401.
    fn authorize(&self, exchange: &mut Exchange, head: &Head<'_>) {
        let (Some(tokens), Ok(route)) = (&self.app.tokens, &exchange.route) else {
            return;
        };
        if route.is_public() || !tokens.required_for(route.is_read()) {
            return;
        }
        match head.header("authorization").and_then(|a| tokens.check(a)) {
            Some(name) => {
                log::debug!("request authorized by token {name}");
                if let Some(c) = exchange.captured.as_mut() {
                    c.user = Some(name.to_string());
                }
            }
            None => exchange.route = Err(ApiError::Unauthorized),
        }
    }
}

/// What the access log keeps of `head`: its method, target and the
/// headers named in `names`.
fn capture(head: &Head<'_>, names: &[String]) -> Captured {
    let headers: Vec<Option<Vec<u8>>> = names
        .iter()
        .map(|n| head.header(n).map(<[u8]>::to_vec))
        .collect();
    Captured {
        method: head.method.to_string(),
        target: head.target.to_string(),
        headers,
        user: None,
    }
}

/// The request id echoed in the response: the client's `X-Request-Id`
/// when it is usable, else (only when the access log is on, where it
/// ties a log line to a response) a new one.
fn request_id(head: &Head<'_>, access_log: bool) -> Option<String> {
    let theirs = head
        .header(access_log::REQUEST_ID_HEADER)
        .and_then(access_log::valid_request_id);
    match theirs {
        Some(id) => Some(id.to_string()),
        None => access_log.then(access_log::new_request_id),
    }
}
