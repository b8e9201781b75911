//! The API's surface as data: each route's path (as docs/openapi.yaml
//! writes it), the methods it allows and its `Allow` header. Every route
//! with GET has HEAD (RFC 9110 §9.1), and every route has OPTIONS. The one route
//! table: `http::routes` routes by it, the metrics label requests by it
//! (a fixed set of labels, never a raw path), and the contract test
//! compares it with docs/openapi.yaml.

/// The routes, in the order of [`ROUTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteId {
    /// `/orders`: the list, and new orders.
    Orders = 0,
    /// `/orders/{id}`: one order.
    Order = 1,
    /// `/healthz`: the worker serves.
    Health = 2,
    /// `/readyz`: the worker can take traffic.
    Ready = 3,
}

/// One route of the API.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// Which one.
    pub id: RouteId,
    /// Its path, `{id}` standing for an order id (the metrics label).
    pub path: &'static str,
    /// The methods it allows.
    pub methods: &'static [&'static str],
    /// Its `Allow` header line (a 405 sends it): `methods`, joined.
    pub allow: &'static str,
}

/// Every route of the API.
pub const ROUTES: [Route; 4] = [
    Route {
        id: RouteId::Orders,
        path: "/orders",
        methods: &["GET", "HEAD", "POST", "OPTIONS"],
        allow: "Allow: GET, HEAD, POST, OPTIONS",
    },
    Route {
        id: RouteId::Order,
        path: "/orders/{id}",
        methods: &["GET", "HEAD", "PUT", "DELETE", "OPTIONS"],
        allow: "Allow: GET, HEAD, PUT, DELETE, OPTIONS",
    },
    Route {
        id: RouteId::Health,
        path: "/healthz",
        methods: &["GET", "HEAD", "OPTIONS"],
        allow: "Allow: GET, HEAD, OPTIONS",
    },
    Route {
        id: RouteId::Ready,
        path: "/readyz",
        methods: &["GET", "HEAD", "OPTIONS"],
        allow: "Allow: GET, HEAD, OPTIONS",
    },
];

/// The `Allow` line of `OPTIONS *`: every method some route allows.
pub const SERVER_ALLOW: &str = "Allow: GET, HEAD, POST, PUT, DELETE, OPTIONS";

/// The prefix of `/orders/{id}`.
const ORDER_PREFIX: &str = "/orders/";

/// The route a path (without its query) takes, and for `/orders/{id}` the
/// id as sent (a single non-empty segment; its syntax is the handler's).
pub fn find(path: &str) -> Option<(&'static Route, Option<&str>)> {
    if let Some(id) = path.strip_prefix(ORDER_PREFIX) {
        let single_segment = !id.is_empty() && !id.contains('/');
        return single_segment.then_some((&ROUTES[RouteId::Order as usize], Some(id)));
    }
    ROUTES
        .iter()
        .find(|r| r.id != RouteId::Order && r.path == path)
        .map(|r| (r, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_consistent() {
        for (i, r) in ROUTES.iter().enumerate() {
            assert_eq!(r.id as usize, i, "{} in its place", r.path);
            assert_eq!(
                r.allow,
                format!("Allow: {}", r.methods.join(", ")),
                "{}",
                r.path
            );
        }
    }

    #[test]
    fn get_brings_head_and_every_route_has_options() {
        for r in &ROUTES {
            assert_eq!(
                r.methods.contains(&"GET"),
                r.methods.contains(&"HEAD"),
                "{}",
                r.path
            );
            assert!(r.methods.contains(&"OPTIONS"), "{}", r.path);
            for m in r.methods {
                assert!(SERVER_ALLOW.contains(m), "{m}");
            }
        }
    }

    #[test]
    fn paths_find_their_route() {
        let id = |p| find(p).map(|(r, segment)| (r.id, segment));
        assert_eq!(id("/orders"), Some((RouteId::Orders, None)));
        assert_eq!(
            id("/orders/6566f0c2a1b2c3d4e5f60718"),
            Some((RouteId::Order, Some("6566f0c2a1b2c3d4e5f60718")))
        );
        assert_eq!(id("/orders/nothex"), Some((RouteId::Order, Some("nothex"))));
        assert_eq!(id("/healthz"), Some((RouteId::Health, None)));
        assert_eq!(id("/readyz"), Some((RouteId::Ready, None)));
        for none in ["/orders/", "/orders/a/b", "/", "/other", "/orders/x/"] {
            assert!(find(none).is_none(), "{none}");
        }
    }
}
