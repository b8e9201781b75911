//! Routing: the two paths of the API and the two health checks, the
//! methods each allows, and the handlers that turn a request into a store
//! call and a JSON reply.
//!
//! `GET /healthz`: the worker serves (200, without touching the store).
//! `GET /readyz`: the store answers a ping within [`READY_TIMEOUT`] and the
//! worker is not draining (200), else 503: what a load balancer asks before
//! it sends traffic.

use bson::oid::ObjectId;

use super::list::{self, ChunkSink, ListReply};
use super::response::{ApiError, Reply};
use super::ServerState;
use crate::orders::{self, ListQuery};
use crate::store::{Store, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};

/// `Allow` of `/orders`.
const ALLOW_COLLECTION: &str = "Allow: GET, POST";
/// `Allow` of `/orders/<id>`.
const ALLOW_ITEM: &str = "Allow: GET, PUT, DELETE";
/// `Allow` of the health checks.
const ALLOW_HEALTH: &str = "Allow: GET";
/// How long `/readyz` waits for the store.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1000);
/// How long a readiness answer is reused: a flood of `/readyz` (it needs no
/// token) asks the store at most once per this, per worker.
pub const READY_CACHE_MS: u64 = 1000;

/// The worker's last readiness answer and when it was found (coarse
/// milliseconds, shifted left once, with the low bit set when ready).
#[derive(Debug, Default)]
pub struct ReadyCache(AtomicU64);

impl ReadyCache {
    /// The store's readiness: a fresh ping, or the last answer when it is
    /// younger than [`READY_CACHE_MS`].
    pub fn check(&self, store: &dyn Store) -> Result<(), ApiError> {
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
}

impl Route {
    /// Whether it only reads.
    pub fn is_read(&self) -> bool {
        matches!(self, Route::List(_) | Route::Get(_))
    }

    /// `/healthz` or `/readyz`: never needs a token (a load balancer asks).
    pub fn is_health_check(&self) -> bool {
        matches!(self, Route::Health | Route::Ready)
    }
}

/// Maps method and path (with query) to a [`Route`]. Unknown path: 404;
/// known path, other method: 405; then the id and query are checked (400).
pub fn route(method: &str, target: &str, limits: &ListLimits) -> Result<Route, ApiError> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path == "/healthz" || path == "/readyz" {
        return match method {
            "GET" if path == "/healthz" => Ok(Route::Health),
            "GET" => Ok(Route::Ready),
            _ => Err(ApiError::MethodNotAllowed(ALLOW_HEALTH)),
        };
    }
    if path == "/orders" {
        return match method {
            "GET" => Ok(Route::List(list_query(query, limits)?)),
            "POST" => Ok(Route::Create),
            _ => Err(ApiError::MethodNotAllowed(ALLOW_COLLECTION)),
        };
    }
    let id = match path.strip_prefix("/orders/") {
        Some(id) if !id.is_empty() && !id.contains('/') => id,
        _ => return Err(ApiError::NoRoute),
    };
    let make: fn(ObjectId) -> Route = match method {
        "GET" => Route::Get,
        "PUT" => Route::Update,
        "DELETE" => Route::Delete,
        _ => return Err(ApiError::MethodNotAllowed(ALLOW_ITEM)),
    };
    Ok(make(orders::parse_id(id)?))
}

/// The route label of a request target for the metrics: one of the
/// paths above (with `{id}` for any id), or `other`; never the raw path.
pub fn label(target: &str) -> &'static str {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    match path {
        "/orders" => "/orders",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        p if p.starts_with("/orders/") => "/orders/{id}",
        _ => "other",
    }
}

fn list_query(query: &str, limits: &ListLimits) -> Result<ListQuery, ApiError> {
    let mut q = orders::parse_list_query(query, limits.max_page_size)?;
    if limits.cap_unpaged_list && q.limit.is_none() {
        q.limit = Some(limits.max_page_size);
    }
    Ok(q)
}

/// Runs a routed request against the store. A list larger than
/// `buffer_limit` bytes is streamed to `sink` (see `list`); the reply then
/// says it was sent already (and, if the stream broke off, that the
/// connection must close).
pub fn handle(
    store: &dyn Store,
    route: Route,
    body: &[u8],
    buffer_limit: usize,
    state: &ServerState,
    sink: &mut dyn ChunkSink,
) -> Result<Reply, ApiError> {
    match route {
        Route::Health => Ok(Reply::ok(b"{\"status\":\"ok\"}".to_vec())),
        Route::Ready if state.is_draining() => Err(ApiError::Draining),
        Route::Ready => {
            state.ready.check(store)?;
            Ok(Reply::ok(b"{\"status\":\"ready\"}".to_vec()))
        }
        Route::List(q) => match list::respond(store, &q, buffer_limit, sink)? {
            ListReply::Buffered(reply) => Ok(reply),
            ListReply::Streamed => Ok(Reply::streamed()),
            ListReply::Aborted => Ok(Reply::aborted()),
        },
        Route::Get(id) => {
            let doc = store.get(&id)?.ok_or(ApiError::OrderNotFound)?;
            Ok(Reply::wrapped(b"{\"order\":", doc.0, b"}"))
        }
        Route::Create => {
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
            let doc = store.update(&id, fields)?.ok_or(ApiError::OrderNotFound)?;
            Ok(Reply::wrapped(
                b"{\"message\":\"Order updated successfully\",\"order\":",
                doc.0,
                b"}",
            ))
        }
        Route::Delete(id) => match store.delete(&id)? {
            true => Ok(Reply::ok(
                b"{\"message\":\"Order deleted successfully\"}".to_vec(),
            )),
            false => Err(ApiError::OrderNotFound),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: ListLimits = ListLimits {
        max_page_size: 10,
        cap_unpaged_list: false,
    };

    #[test]
    fn routes_and_their_errors() {
        assert!(matches!(route("GET", "/orders", &L), Ok(Route::List(_))));
        assert!(matches!(route("POST", "/orders", &L), Ok(Route::Create)));
        assert!(matches!(
            route("HEAD", "/orders", &L),
            Err(ApiError::MethodNotAllowed(_))
        ));
        assert!(matches!(
            route("GET", "/orders/", &L),
            Err(ApiError::NoRoute)
        ));
        assert!(matches!(route("GET", "/other", &L), Err(ApiError::NoRoute)));
        assert!(matches!(
            route("GET", "/orders/abc", &L),
            Err(ApiError::Order(_))
        ));
        assert!(matches!(
            route("PATCH", "/orders/abc", &L),
            Err(ApiError::MethodNotAllowed(_))
        ));
        assert!(matches!(
            route("DELETE", "/orders/6566f0c2a1b2c3d4e5f60718", &L),
            Ok(Route::Delete(_))
        ));
        assert!(matches!(
            route("GET", "/orders?limit=0", &L),
            Err(ApiError::Order(_))
        ));
        assert!(matches!(route("GET", "/healthz", &L), Ok(Route::Health)));
        assert!(matches!(route("GET", "/readyz?x", &L), Ok(Route::Ready)));
        assert!(matches!(
            route("POST", "/readyz", &L),
            Err(ApiError::MethodNotAllowed(_))
        ));
    }

    #[test]
    fn metrics_labels_never_carry_the_raw_path() {
        assert_eq!(label("/orders?limit=5"), "/orders");
        assert_eq!(label("/orders/6566f0c2a1b2c3d4e5f60718"), "/orders/{id}");
        assert_eq!(label("/orders/anything/else"), "/orders/{id}");
        assert_eq!(label("/healthz"), "/healthz");
        assert_eq!(label("/etc/passwd"), "other");
    }

    #[test]
    fn capped_bare_list_is_paged() {
        let capped = ListLimits {
            cap_unpaged_list: true,
            ..L
        };
        let Ok(Route::List(q)) = route("GET", "/orders", &capped) else {
            panic!()
        };
        assert_eq!(q.limit, Some(10));
        assert!(q.is_paged());
    }
}
