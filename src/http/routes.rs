//! Routing and handlers: a request's method and target become a [`Route`]
//! (by the one route table, `api`), and a route with its body becomes a
//! store call and a JSON reply.
//!
//! `GET /healthz`: the worker serves (200, without touching the store).
//! `GET /readyz`: the store can serve (the embedded store: no write found
//! it damaged, and a read of its data pages works; MongoDB: it answers a
//! ping) within [`READY_TIMEOUT`], and the worker is not draining (200),
//! else 503: what a load balancer asks before it sends traffic.

use bson::oid::ObjectId;

use std::sync::atomic::{AtomicU64, Ordering};

use super::error::ApiError;
use super::list::{self, ListReply};
use super::ServerState;
use crate::api::{self, RouteId};
use crate::orders::{self, ListQuery};
use crate::proto::etag::{Current, Preconditions, Verdict};
use crate::proto::response::{ChunkSink, Reply};
use crate::store::{tag_of, Store, StoreError, Written};

/// How long `/readyz` waits for the store.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1000);
/// How long a readiness answer is reused when the store's ping costs more
/// than a request: a flood of `/readyz` (it needs no token) asks such a
/// store at most once per this, per worker.
pub const READY_CACHE_MS: u64 = 1000;

/// The worker's last readiness answer and when it was found (coarse
/// milliseconds, shifted left once, with the low bit set when ready).
#[derive(Debug, Default)]
pub struct ReadyCache(AtomicU64);

impl ReadyCache {
    /// The store's readiness: a fresh ping, or, for a store whose ping
    /// costs more than a request (a database across the network), the last
    /// answer when it is younger than [`READY_CACHE_MS`].
    pub fn check(&self, store: &dyn Store) -> Result<(), ApiError> {
        if store.ping_is_cheap() {
            return store.ping(READY_TIMEOUT).map_err(ApiError::Store);
        }
        let now = crate::clock::coarse_ms();
        let last = self.0.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last >> 1) < READY_CACHE_MS {
            return match last & 1 {
                1 => Ok(()),
                _ => Err(ApiError::Store(StoreError::unavailable_because(
                    "not ready (the last ping failed)",
                ))),
            };
        }
        let result = store.ping(READY_TIMEOUT);
        self.0
            .store((now << 1) | u64::from(result.is_ok()), Ordering::Relaxed);
        result.map_err(ApiError::Store)
    }
}

/// Settings the handlers need.
#[derive(Debug, Clone, Copy)]
pub struct ListLimits {
    /// Largest `limit`.
    pub max_page_size: usize,
    /// Apply `max_page_size` to a bare `GET /orders`.
    pub cap_unpaged_list: bool,
}

/// A request, routed and with its arguments parsed (all owned, so the
/// connection's buffer can be consumed to read the body afterwards).
#[derive(Debug)]
pub enum Route {
    List(ListQuery),
    Create,
    Get(ObjectId),
    Update(ObjectId),
    Delete(ObjectId),
    /// `GET /healthz`.
    Health,
    /// `GET /readyz`.
    Ready,
    /// `OPTIONS`: a 204 with this `Allow` line.
    Options(&'static str),
    /// `OPTIONS /orders/ID`: a 204 with this `Allow` line when the order
    /// exists (else a 404, as for any method of a missing order: so it is
    /// a read, and needs a token when reads do).
    OrderOptions(ObjectId, &'static str),
}

impl Route {
    /// Whether it only reads (GET, HEAD, OPTIONS).
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            Route::List(_) | Route::Get(_) | Route::OrderOptions(..)
        )
    }

    /// `/healthz`, `/readyz` (a load balancer asks) and OPTIONS of a path
    /// that is not an order (it tells only what docs/api.md does): never
    /// need a token.
    pub fn is_public(&self) -> bool {
        matches!(self, Route::Health | Route::Ready | Route::Options(_))
    }
}

/// A request target, routed.
#[derive(Debug)]
pub struct Routed {
    /// The API route its path takes, if any (the metrics label).
    pub id: Option<RouteId>,
    /// Where it goes, or why it goes nowhere.
    pub route: Result<Route, ApiError>,
}

/// Maps method and target (path with query) to a [`Route`] by the route
/// table. Unknown path: 404; known path, a method the table does not list:
/// 405; then the id and query are checked (400). `OPTIONS *` asks about
/// the server as a whole (the protocol refuses `*` with any other method).
pub fn route(method: &str, target: &str, limits: &ListLimits) -> Routed {
    if target == "*" && method == "OPTIONS" {
        return Routed {
            id: None,
            route: Ok(Route::Options(api::SERVER_ALLOW)),
        };
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let Some((api_route, id)) = api::find(path) else {
        return Routed {
            id: None,
            route: Err(ApiError::NoRoute),
        };
    };
    let route = if api_route.methods.contains(&method) {
        handler(api_route, method, id.unwrap_or_default(), query, limits)
    } else {
        Err(ApiError::MethodNotAllowed(api_route.allow))
    };
    Routed {
        id: Some(api_route.id),
        route,
    }
}

/// The route of a method the table allows on `api_route`, with its id or
/// query parsed.
fn handler(
    api_route: &api::Route,
    method: &str,
    id: &str,
    query: &str,
    limits: &ListLimits,
) -> Result<Route, ApiError> {
    // HEAD is GET without the body (the protocol drops it).
    Ok(match (api_route.id, method) {
        (RouteId::Order, "OPTIONS") => Route::OrderOptions(orders::parse_id(id)?, api_route.allow),
        (_, "OPTIONS") => Route::Options(api_route.allow),
        (RouteId::Orders, "GET" | "HEAD") => Route::List(list_query(query, limits)?),
        (RouteId::Orders, "POST") => Route::Create,
        (RouteId::Order, "GET" | "HEAD") => Route::Get(orders::parse_id(id)?),
        (RouteId::Order, "PUT") => Route::Update(orders::parse_id(id)?),
        (RouteId::Order, "DELETE") => Route::Delete(orders::parse_id(id)?),
        (RouteId::Health, "GET" | "HEAD") => Route::Health,
        (RouteId::Ready, "GET" | "HEAD") => Route::Ready,
        // A method the table lists that no handler takes: none (a test
        // routes every method of every route).
        _ => return Err(ApiError::MethodNotAllowed(api_route.allow)),
    })
}

fn list_query(query: &str, limits: &ListLimits) -> Result<ListQuery, ApiError> {
    let mut q = orders::parse_list_query(query, limits.max_page_size)?;
    if limits.cap_unpaged_list && q.limit.is_none() {
        q.limit = Some(limits.max_page_size);
    }
    Ok(q)
}

/// What a handler gets besides its route: the request's body and
/// preconditions, and where a long answer goes.
pub struct Request<'a> {
    /// The body (empty without one).
    pub body: &'a [u8],
    /// `If-Match` and `If-None-Match`.
    pub pre: &'a Preconditions,
    /// Where a list longer than `buffer_limit` bytes is streamed (see
    /// `list`); the reply then says it was sent already (and, if the
    /// stream broke off, that the connection must close).
    pub sink: &'a mut dyn ChunkSink,
    /// Largest answer built in memory.
    pub buffer_limit: usize,
}

/// Runs a routed request against the store. Reads carry their tag (`ETag`)
/// and are answered `304` or `412` as their preconditions say; writes
/// compare the preconditions with the stored order atomically (`store`).
pub fn handle(
    store: &dyn Store,
    route: Route,
    request: Request<'_>,
    state: &ServerState,
) -> Result<Reply, ApiError> {
    let Request {
        body,
        pre,
        sink,
        buffer_limit,
    } = request;
    // The answers without a tag evaluate their preconditions too (RFC 9110
    // §13.1.1): against a representation that exists but has no tag.
    match &route {
        Route::Health | Route::Ready => match pre.for_read(Current::Untagged) {
            Verdict::Proceed => {}
            Verdict::NotModified => return Ok(Reply::not_modified(None)),
            Verdict::Failed => return Err(ApiError::PreconditionFailed(None)),
        },
        Route::Options(_) | Route::OrderOptions(..) if !pre.allow_write(Current::Untagged) => {
            return Err(ApiError::PreconditionFailed(None));
        }
        _ => {}
    }
    match route {
        Route::Health => Ok(Reply::ok(b"{\"status\":\"ok\"}".to_vec())),
        Route::Ready if state.is_draining() => Err(ApiError::Draining),
        Route::Ready => {
            state.ready.check(store)?;
            Ok(Reply::ok(b"{\"status\":\"ready\"}".to_vec()))
        }
        Route::Options(allow) => Ok(Reply {
            headers: vec![allow],
            ..Reply::no_content()
        }),
        Route::OrderOptions(id, allow) => {
            store.get(&id)?.ok_or(ApiError::OrderNotFound)?;
            Ok(Reply {
                headers: vec![allow],
                ..Reply::no_content()
            })
        }
        Route::List(q) => match list::respond(store, &q, pre, buffer_limit, sink)? {
            ListReply::Buffered(reply) => Ok(reply),
            ListReply::Streamed => Ok(Reply::streamed()),
            ListReply::Aborted => Ok(Reply::aborted()),
        },
        Route::Get(id) => {
            let doc = store.get(&id)?;
            let tag = doc.as_ref().map(|d| tag_of(&d.0));
            match pre.for_read(tag) {
                Verdict::Proceed => {}
                Verdict::NotModified => return Ok(Reply::not_modified(tag)),
                Verdict::Failed => return Err(ApiError::PreconditionFailed(tag)),
            }
            let doc = doc.ok_or(ApiError::OrderNotFound)?;
            Ok(Reply::wrapped(b"{\"order\":", doc.0, b"}").revalidated(tag))
        }
        Route::Create => {
            // The collection always exists and has no tag: `If-None-Match:
            // *` or an `If-Match` naming tags can never hold.
            if !pre.allow_write(Current::Untagged) {
                return Err(ApiError::PreconditionFailed(None));
            }
            let fields = orders::parse_new(body)?;
            let doc = store.create(fields)?;
            Ok(Reply::wrapped(
                b"{\"message\":\"Order created successfully\",\"order\":",
                doc.0,
                b"}",
            ))
        }
        Route::Update(id) => {
            let fields = orders::parse_patch(body)?;
            let doc = written(store.update(&id, fields, pre)?)?;
            let etag = Some(tag_of(&doc.0));
            Ok(Reply {
                etag,
                ..Reply::wrapped(
                    b"{\"message\":\"Order updated successfully\",\"order\":",
                    doc.0,
                    b"}",
                )
            })
        }
        Route::Delete(id) => {
            written(store.delete(&id, pre)?)?;
            Ok(Reply::ok(
                b"{\"message\":\"Order deleted successfully\"}".to_vec(),
            ))
        }
    }
}

/// A conditional write's result, or the error it answers.
fn written<T>(w: Written<T>) -> Result<T, ApiError> {
    match w {
        Written::Done(done) => Ok(done),
        Written::NotFound => Err(ApiError::OrderNotFound),
        Written::PreconditionFailed(tag) => Err(ApiError::PreconditionFailed(tag)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: ListLimits = ListLimits {
        max_page_size: 10,
        cap_unpaged_list: false,
    };

    fn route_of(method: &str, target: &str) -> Result<Route, ApiError> {
        route(method, target, &L).route
    }

    #[test]
    fn routes_and_their_errors() {
        assert!(matches!(route_of("GET", "/orders"), Ok(Route::List(_))));
        assert!(matches!(route_of("POST", "/orders"), Ok(Route::Create)));
        assert!(matches!(route_of("HEAD", "/orders"), Ok(Route::List(_))));
        assert!(matches!(
            route_of("OPTIONS", "/orders/6566f0c2a1b2c3d4e5f60718"),
            Ok(Route::OrderOptions(..))
        ));
        assert!(matches!(
            route_of("OPTIONS", "/orders/abc"),
            Err(ApiError::Order(_))
        ));
        assert!(matches!(
            route_of("OPTIONS", "*"),
            Ok(Route::Options(api::SERVER_ALLOW))
        ));
        assert!(matches!(
            route_of("TRACE", "/orders"),
            Err(ApiError::MethodNotAllowed(_))
        ));
        assert!(matches!(
            route_of("GET", "/orders/"),
            Err(ApiError::NoRoute)
        ));
        assert!(matches!(
            route_of("PATCH", "/orders/"),
            Err(ApiError::NoRoute)
        ));
        assert!(matches!(route_of("GET", "/other"), Err(ApiError::NoRoute)));
        assert!(matches!(
            route_of("GET", "/orders/abc"),
            Err(ApiError::Order(_))
        ));
        assert!(matches!(
            route_of("PATCH", "/orders/abc"),
            Err(ApiError::MethodNotAllowed(_))
        ));
        assert!(matches!(
            route_of("DELETE", "/orders/6566f0c2a1b2c3d4e5f60718"),
            Ok(Route::Delete(_))
        ));
        assert!(matches!(
            route_of("GET", "/orders?limit=0"),
            Err(ApiError::Order(_))
        ));
        assert!(matches!(route_of("GET", "/healthz"), Ok(Route::Health)));
        assert!(matches!(route_of("GET", "/readyz?x"), Ok(Route::Ready)));
        assert!(matches!(
            route_of("POST", "/readyz"),
            Err(ApiError::MethodNotAllowed(_))
        ));
    }

    #[test]
    fn every_method_of_the_table_has_a_handler() {
        for r in api::ROUTES {
            let target = r.path.replace("{id}", "6566f0c2a1b2c3d4e5f60718");
            for method in r.methods {
                assert!(route_of(method, &target).is_ok(), "{method} {}", r.path);
            }
        }
    }

    #[test]
    fn metrics_labels_never_carry_the_raw_path() {
        let id = |target| route("GET", target, &L).id;
        assert_eq!(id("/orders?limit=5"), Some(RouteId::Orders));
        assert_eq!(id("/orders/6566f0c2a1b2c3d4e5f60718"), Some(RouteId::Order));
        assert_eq!(id("/orders/nothex"), Some(RouteId::Order));
        assert_eq!(id("/healthz"), Some(RouteId::Health));
        assert_eq!(id("/etc/passwd"), None);
        assert_eq!(
            id("/orders/anything/else"),
            None,
            "no route takes it: other"
        );
    }

    #[test]
    fn capped_bare_list_is_paged() {
        let capped = ListLimits {
            cap_unpaged_list: true,
            ..L
        };
        let Ok(Route::List(q)) = route("GET", "/orders", &capped).route else {
            panic!()
        };
        assert_eq!(q.limit, Some(10));
        assert!(q.is_paged());
    }
}
