//! Property tests: random request heads, bodies and query strings never
//! panic, and every answer is one of the contract's statuses (docs/api.md).

use proptest::prelude::*;

use orders_server::http::error::ApiError;
use orders_server::http::routes::{self, ListLimits};
use orders_server::orders;
use orders_server::proto::request::{self, HeadLimits};

const LIMITS: HeadLimits = HeadLimits {
    line: 4094,
    fields: 100,
    field_size: 8190,
    max_body: 1 << 20,
};
const LIST: ListLimits = ListLimits {
    max_page_size: 1000,
    cap_unpaged_list: false,
};

/// Statuses a request head can be refused with.
const HEAD_STATUSES: [u16; 10] = [400, 404, 405, 413, 414, 417, 431, 501, 503, 505];

fn assert_head_status(e: &ApiError) {
    let code = e.status().code;
    assert!(HEAD_STATUSES.contains(&code), "{e:?} gave {code}");
}

/// Plausible request heads: a method, a target, a version, headers, built
/// from pieces that include the tricky ones.
fn heads() -> impl Strategy<Value = String> {
    let method = prop::sample::select(vec![
        "GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "G\0T", "",
    ]);
    let target = prop::sample::select(vec![
        "/orders".to_string(),
        "/orders?limit=5".to_string(),
        "/orders?limit=0&after=zz".to_string(),
        "/orders/6566f0c2a1b2c3d4e5f60718".to_string(),
        "/orders/xyz".to_string(),
        "http://h/orders".to_string(),
        "*".to_string(),
        "/".to_string(),
    ]);
    let version = prop::sample::select(vec![
        "HTTP/1.1",
        "HTTP/1.0",
        "HTTP/1.2",
        "HTTP/2.0",
        "",
        "HTTP/1.1 extra",
    ]);
    let header = prop::sample::select(vec![
        "Host: x",
        "Content-Length: 5",
        "Content-Length: -1",
        "Content-Length: 99999999999999999999",
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: gzip, chunked",
        "Expect: 100-continue",
        "Expect: nothing",
        "Connection: close",
        "NoColon",
        " folded",
        "X-A: \u{0}",
    ]);
    (method, target, version, prop::collection::vec(header, 0..6)).prop_map(|(m, t, v, hs)| {
        format!(
            "{m} {t} {v}\r\n{}\r\n",
            hs.iter().map(|h| format!("{h}\r\n")).collect::<String>()
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any bytes: a complete head, an incomplete one, or a contract status.
    #[test]
    fn random_bytes_never_panic_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = request::parse(&bytes, &LIMITS, |_| ()) {
            assert_head_status(&e.into());
        }
    }

    /// Built heads: same, and a routed head's refusal is a contract status too.
    #[test]
    fn built_heads_get_contract_statuses(head in heads()) {
        let route = |h: &request::Head<'_>| routes::route(h.method, h.path(), &LIST).route;
        match request::parse(head.as_bytes(), &LIMITS, route) {
            Ok(Some(parsed)) => {
                if let Err(e) = parsed.taken {
                    assert_head_status(&e);
                }
            }
            Ok(None) => {}
            Err(e) => assert_head_status(&e.into()),
        }
    }

    /// Any body: an order, or a 400.
    #[test]
    fn random_bodies_are_orders_or_400(body in prop::collection::vec(any::<u8>(), 0..256)) {
        for result in [orders::parse_new(&body).map(|_| ()), orders::parse_patch(&body).map(|_| ())] {
            if let Err(e) = result {
                assert_eq!(ApiError::from(e).status().code, 400);
            }
        }
    }

    /// JSON objects with the four fields of any JSON type: accepted only
    /// when every field follows the rules.
    #[test]
    fn typed_fields_are_checked(
        product in prop::sample::select(vec!["\"P\"", "\"\"", "1", "null", "[]", "{}"]),
        quantity in prop::sample::select(vec!["1", "0", "-1", "2.0", "1.5", "\"2\"", "9223372036854775807", "9223372036854775808", "true"]),
    ) {
        let body = format!(r#"{{"product":{product},"quantity":{quantity},"customer_name":"N","customer_address":"A"}}"#);
        let ok = product == "\"P\"" && (quantity == "1" || quantity == "9223372036854775807");
        match orders::parse_new(body.as_bytes()) {
            Ok(_) => prop_assert!(ok, "{body} was accepted"),
            Err(e) => {
                prop_assert!(!ok, "{body} was refused: {e}");
                prop_assert_eq!(ApiError::from(e).status().code, 400);
            }
        }
    }

    /// Any query string: pagination arguments within the cap, or a 400.
    #[test]
    fn random_queries_are_pages_or_400(query in "[a-z=&0-9%-]{0,40}") {
        match orders::parse_list_query(&query, 1000) {
            Ok(q) => prop_assert!(q.limit.is_none_or(|l| (1..=1000).contains(&l))),
            Err(e) => prop_assert_eq!(ApiError::from(e).status().code, 400),
        }
    }
}
