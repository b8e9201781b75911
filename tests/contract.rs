//! docs/openapi.yaml against the running server: every operation and every
//! status the file lists is exercised over real HTTP, each answer's status
//! is one the file lists for that operation (or its `default`), and each
//! body matches the schema the file gives for it. Methods the file does not
//! list on its paths are answered 405, and the server's route table lists
//! exactly the file's paths and methods.

use orders_harness as support;

use std::collections::BTreeSet;

use serde_json::Value;

use support::{order_json, Backend, Client, Resp, Server};

fn spec() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml")).unwrap();
    serde_norway::from_str(&text).expect("docs/openapi.yaml parses")
}

/// The statuses of the HTTP layer, which `default` stands for (docs/api.md).
const PROTOCOL_STATUSES: [u16; 9] = [400, 408, 413, 414, 417, 431, 500, 501, 505];

/// One request made, and what the spec says about it.
struct Exchange {
    path: &'static str,
    method: &'static str,
    resp: Resp,
}

/// Requests exercising every documented status of every operation.
fn exchanges() -> Vec<Exchange> {
    let s = Server::start(&["--max-body-size", "1024"]);
    let id = s.create("first");
    s.create("second");
    let missing = "0123456789abcdef01234567";
    let big = format!(
        r#"{{"product":"{}","quantity":1,"customer_name":"N","customer_address":"A"}}"#,
        "x".repeat(2000)
    );
    let mut c = s.connect();
    let mut out = Vec::new();
    let mut exh = |c: &mut Client,
                   path,
                   method: &'static str,
                   target: &str,
                   headers: &[&str],
                   body: Option<&str>| {
        let resp = c.request_with(method, target, headers, body);
        out.push(Exchange { path, method, resp });
    };
    // HEAD and OPTIONS of every path; 304 and 412 of the conditional ones.
    let tag = c
        .request("GET", &format!("/orders/{id}"), None)
        .header("etag")
        .unwrap()
        .to_string();
    let page_tag = c
        .request("GET", "/orders", None)
        .header("etag")
        .unwrap()
        .to_string();
    let stale = "If-Match: \"0000000000000000\"";
    for (path, target) in [
        ("/orders", "/orders".to_string()),
        ("/orders/{id}", format!("/orders/{id}")),
        ("/healthz", "/healthz".to_string()),
        ("/readyz", "/readyz".to_string()),
    ] {
        exh(&mut c, path, "HEAD", &target, &[], None);
        exh(&mut c, path, "OPTIONS", &target, &[], None);
    }
    for (path, target, tag) in [
        ("/orders", "/orders".to_string(), &page_tag),
        ("/orders/{id}", format!("/orders/{id}"), &tag),
    ] {
        for method in ["GET", "HEAD"] {
            exh(
                &mut c,
                path,
                method,
                &target,
                &[&format!("If-None-Match: {tag}")],
                None,
            );
            exh(&mut c, path, method, &target, &[stale], None);
        }
    }
    exh(&mut c, "/orders/{id}", "HEAD", "/orders/nothex", &[], None);
    exh(
        &mut c,
        "/orders/{id}",
        "OPTIONS",
        "/orders/nothex",
        &[],
        None,
    );
    exh(
        &mut c,
        "/orders/{id}",
        "OPTIONS",
        &format!("/orders/{missing}"),
        &[],
        None,
    );
    exh(
        &mut c,
        "/orders/{id}",
        "HEAD",
        &format!("/orders/{missing}"),
        &[],
        None,
    );
    exh(&mut c, "/orders", "HEAD", "/orders?limit=0", &[], None);
    exh(
        &mut c,
        "/orders",
        "POST",
        "/orders",
        &["If-None-Match: *"],
        Some(&order_json("no", 1)),
    );
    exh(
        &mut c,
        "/orders/{id}",
        "PUT",
        &format!("/orders/{id}"),
        &[stale],
        Some(r#"{"quantity":9}"#),
    );
    exh(
        &mut c,
        "/orders/{id}",
        "DELETE",
        &format!("/orders/{id}"),
        &[stale],
        None,
    );
    let mut ex = |c: &mut Client, path, method: &'static str, target: &str, body: Option<&str>| {
        exh(c, path, method, target, &[], body)
    };
    ex(&mut c, "/orders", "GET", "/orders", None);
    ex(&mut c, "/healthz", "GET", "/healthz", None);
    ex(&mut c, "/readyz", "GET", "/readyz", None);
    ex(&mut c, "/orders", "GET", "/orders?limit=1", None);
    ex(
        &mut c,
        "/orders",
        "GET",
        &format!("/orders?after={id}"),
        None,
    );
    ex(&mut c, "/orders", "GET", "/orders?limit=0", None);
    ex(
        &mut c,
        "/orders",
        "POST",
        "/orders",
        Some(&order_json("created", 3)),
    );
    ex(
        &mut c,
        "/orders",
        "POST",
        "/orders",
        Some(r#"{"product":"P"}"#),
    );
    ex(
        &mut c,
        "/orders/{id}",
        "GET",
        &format!("/orders/{id}"),
        None,
    );
    ex(&mut c, "/orders/{id}", "GET", "/orders/nothex", None);
    ex(
        &mut c,
        "/orders/{id}",
        "GET",
        &format!("/orders/{missing}"),
        None,
    );
    ex(
        &mut c,
        "/orders/{id}",
        "PUT",
        &format!("/orders/{id}"),
        Some(r#"{"quantity":9}"#),
    );
    ex(
        &mut c,
        "/orders/{id}",
        "PUT",
        &format!("/orders/{id}"),
        Some(r#"{"quantity":0}"#),
    );
    ex(
        &mut c,
        "/orders/{id}",
        "PUT",
        &format!("/orders/{missing}"),
        Some(r#"{"quantity":9}"#),
    );
    ex(
        &mut c,
        "/orders/{id}",
        "DELETE",
        &format!("/orders/{id}"),
        None,
    );
    ex(&mut c, "/orders/{id}", "DELETE", "/orders/nothex", None);
    ex(
        &mut c,
        "/orders/{id}",
        "DELETE",
        &format!("/orders/{id}"),
        None,
    );
    // 413 closes the connection: one each.
    ex(&mut s.connect(), "/orders", "POST", "/orders", Some(&big));
    ex(
        &mut s.connect(),
        "/orders/{id}",
        "PUT",
        &format!("/orders/{missing}"),
        Some(&big),
    );
    // The default (protocol) responses: an unsupported expectation (417).
    let mut c = s.connect();
    let resp = c.request_with("POST", "/orders", &["Expect: nothing"], Some("{}"));
    let expectation = Exchange {
        path: "/orders",
        method: "POST",
        resp,
    };

    // 503: the MongoDB backend with its database stopped.
    let mut m = Server::start_with(Backend::Mongo, &["--store-timeout-ms", "300"]);
    let mongo_id = m.create("m");
    m.mongo.as_mut().unwrap().stop();
    let mut c = m.connect();
    ex(&mut c, "/orders", "GET", "/orders", None);
    ex(
        &mut c,
        "/orders",
        "POST",
        "/orders",
        Some(&order_json("down", 1)),
    );
    ex(
        &mut c,
        "/orders/{id}",
        "GET",
        &format!("/orders/{mongo_id}"),
        None,
    );
    ex(
        &mut c,
        "/orders/{id}",
        "PUT",
        &format!("/orders/{mongo_id}"),
        Some(r#"{"quantity":2}"#),
    );
    ex(
        &mut c,
        "/orders/{id}",
        "DELETE",
        &format!("/orders/{mongo_id}"),
        None,
    );
    ex(&mut c, "/readyz", "GET", "/readyz", None);
    ex(&mut c, "/readyz", "HEAD", "/readyz", None);
    ex(&mut c, "/orders", "HEAD", "/orders", None);
    ex(
        &mut c,
        "/orders/{id}",
        "HEAD",
        &format!("/orders/{mongo_id}"),
        None,
    );

    // 401: API tokens, reads included.
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), "ci:0123456789abcdef0123\n").unwrap();
    let file = tokens.path().to_str().unwrap();
    let t = Server::start(&["--api-tokens-file", file, "--api-tokens-for-reads", "true"]);
    let mut c = t.connect();
    for (path, method, target, body) in [
        ("/orders", "GET", "/orders".to_string(), None),
        ("/orders", "HEAD", "/orders".to_string(), None),
        (
            "/orders",
            "POST",
            "/orders".to_string(),
            Some(order_json("t", 1)),
        ),
        ("/orders/{id}", "GET", format!("/orders/{missing}"), None),
        ("/orders/{id}", "HEAD", format!("/orders/{missing}"), None),
        (
            "/orders/{id}",
            "PUT",
            format!("/orders/{missing}"),
            Some(r#"{"quantity":1}"#.to_string()),
        ),
        ("/orders/{id}", "DELETE", format!("/orders/{missing}"), None),
    ] {
        // A refused body is not read: the connection closes after a 401 with one.
        let c = if body.is_some() {
            &mut t.connect()
        } else {
            &mut c
        };
        ex(c, path, method, &target, body.as_deref());
    }
    out.push(expectation);
    out
}

#[test]
fn every_documented_operation_and_status_matches_the_server() {
    let spec = spec();
    let exchanges = exchanges();
    let mut documented = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            for status in op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "default")
            {
                documented.insert((path.clone(), method.to_uppercase(), status.clone()));
            }
        }
    }
    let mut exercised = BTreeSet::new();
    for e in &exchanges {
        let op = &spec["paths"][e.path][e.method.to_lowercase()];
        assert!(
            op.is_object(),
            "{} {} is not in docs/openapi.yaml",
            e.method,
            e.path
        );
        let status = e.resp.status.to_string();
        let (response, key) = match op["responses"].get(&status) {
            Some(r) => (r, status.clone()),
            None => {
                assert!(
                    PROTOCOL_STATUSES.contains(&e.resp.status),
                    "{} {} answered {status}: not in the spec",
                    e.method,
                    e.path
                );
                (&op["responses"]["default"], "default".to_string())
            }
        };
        let response = resolve(&spec, response);
        assert!(
            response.is_object(),
            "{} {} answered {status}, which the spec does not allow",
            e.method,
            e.path
        );
        if key != "default" {
            exercised.insert((e.path.to_string(), e.method.to_string(), status.clone()));
        }
        for (name, header) in response["headers"].as_object().into_iter().flatten() {
            let header = resolve(&spec, header);
            let value = e.resp.header(name);
            if header["required"] == true {
                assert!(
                    value.is_some(),
                    "{} {} {status}: no {name} header",
                    e.method,
                    e.path
                );
            }
            if let (Some(v), Some(schema)) = (value, header.get("schema")) {
                let v = match schema["type"].as_str() {
                    Some("integer") => Value::from(v.parse::<i64>().unwrap_or(-1)),
                    _ => Value::String(v.into()),
                };
                if let Err(why) = validate(&spec, schema, &v, name) {
                    panic!("{} {} {status}: {why}", e.method, e.path);
                }
            }
        }
        // HEAD, 204 and 304 have no body (a HEAD error has the GET's
        // Content-Type); a response without `content` has no Content-Type.
        let bodiless = e.method == "HEAD" || matches!(e.resp.status, 204 | 304);
        if bodiless || response.get("content").is_none() {
            assert!(
                e.resp.body.is_empty(),
                "{} {} {status}: a body",
                e.method,
                e.path
            );
            if response.get("content").is_none() && e.method != "HEAD" {
                assert_eq!(
                    e.resp.header("content-type"),
                    None,
                    "{} {} {status}",
                    e.method,
                    e.path
                );
            }
            continue;
        }
        assert_eq!(
            e.resp.header("content-type"),
            Some("application/json"),
            "{} {} {status}",
            e.method,
            e.path
        );
        let schema = &response["content"]["application/json"]["schema"];
        let body: Value = serde_json::from_slice(&e.resp.body)
            .unwrap_or_else(|err| panic!("{err}: {}", e.resp.text()));
        if let Err(why) = validate(&spec, schema, &body, "$") {
            panic!("{} {} {status}: {why}\nbody: {body}", e.method, e.path);
        }
    }
    let missing: Vec<_> = documented.difference(&exercised).collect();
    assert!(
        missing.is_empty(),
        "documented but never answered: {missing:?}"
    );
}

/// The server's route table (`api::ROUTES`: what it routes, labels in its
/// metrics and lists in `Allow`) is the spec's paths and their methods.
#[test]
fn the_route_table_is_the_specs_paths_and_methods() {
    let spec = spec();
    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
                .map(move |m| (path.clone(), m.to_uppercase()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = orders_server::api::ROUTES
        .iter()
        .flat_map(|r| {
            r.methods
                .iter()
                .map(|m| (r.path.to_string(), m.to_string()))
        })
        .collect();
    assert_eq!(routed, documented);
}

#[test]
fn methods_not_documented_are_405() {
    let spec = spec();
    let s = Server::start(&[]);
    let id = s.create("x");
    for (path, item) in spec["paths"].as_object().unwrap() {
        let target = path.replace("{id}", &id);
        let allowed: Vec<String> = item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "parameters")
            .map(|k| k.to_uppercase())
            .collect();
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"] {
            if allowed.iter().any(|m| m == method) {
                continue;
            }
            let r = s.connect().request(method, &target, None);
            assert_eq!(r.status, 405, "{method} {path}");
            let allow = r.header("allow").expect("an Allow header");
            let mut listed: Vec<&str> = allow.split(", ").collect();
            listed.sort();
            let mut expected: Vec<&str> = allowed.iter().map(String::as_str).collect();
            expected.sort();
            assert_eq!(listed, expected, "Allow of {path} matches the spec");
        }
    }
}

/// Follows a `$ref` (within this file).
fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("local $ref");
            resolve(
                spec,
                spec.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {r}")),
            )
        }
        None => v,
    }
}

/// Keywords that only describe.
const ANNOTATIONS: [&str; 4] = ["description", "title", "example", "format"];

/// A JSON Schema check of the keywords docs/openapi.yaml uses; any other
/// keyword fails loudly rather than passing unchecked.
fn validate(spec: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(spec, schema);
    for (key, rule) in schema.as_object().expect("a schema object") {
        match key.as_str() {
            "type" => {
                let types: Vec<&str> = match rule {
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    other => vec![other.as_str().unwrap()],
                };
                if !types.iter().any(|t| has_type(v, t)) {
                    return Err(format!("{at}: {v} is not {types:?}"));
                }
            }
            "required" => {
                for name in rule.as_array().unwrap() {
                    if v.get(name.as_str().unwrap()).is_none() {
                        return Err(format!("{at}: missing {name}"));
                    }
                }
            }
            "properties" => {
                for (name, sub) in rule.as_object().unwrap() {
                    if let Some(field) = v.get(name) {
                        validate(spec, sub, field, &format!("{at}.{name}"))?;
                    }
                }
            }
            "items" => {
                for (i, item) in v.as_array().into_iter().flatten().enumerate() {
                    validate(spec, rule, item, &format!("{at}[{i}]"))?;
                }
            }
            "minimum" => {
                if v.as_f64().is_some_and(|n| n < rule.as_f64().unwrap()) {
                    return Err(format!("{at}: {v} < {rule}"));
                }
            }
            "maximum" => {
                // Compared as integers where both are (i64::MAX is no f64).
                let over = match (v.as_i64(), rule.as_u64()) {
                    (Some(n), Some(max)) => n as i128 > max as i128,
                    _ => v.as_f64().is_some_and(|n| n > rule.as_f64().unwrap()),
                };
                if over {
                    return Err(format!("{at}: {v} > {rule}"));
                }
            }
            "minLength" => {
                if v.as_str()
                    .is_some_and(|s| (s.chars().count() as u64) < rule.as_u64().unwrap())
                {
                    return Err(format!("{at}: {v} is too short"));
                }
            }
            "minProperties" => {
                if v.as_object()
                    .is_some_and(|o| (o.len() as u64) < rule.as_u64().unwrap())
                {
                    return Err(format!("{at}: too few properties"));
                }
            }
            "const" => {
                if v != rule {
                    return Err(format!("{at}: {v} is not {rule}"));
                }
            }
            "enum" => {
                if !rule.as_array().unwrap().contains(v) {
                    return Err(format!("{at}: {v} is not one of {rule}"));
                }
            }
            "pattern" => {
                // An ObjectId, or an entity tag (the same digits, quoted).
                let (quoted, digits) = match rule.as_str() {
                    Some("^[0-9a-f]{24}$") => (false, 24),
                    Some("^\"[0-9a-f]{16}\"$") => (true, 16),
                    _ => panic!("the validator does not know the pattern {rule}"),
                };
                if let Some(s) = v.as_str() {
                    let inner = match quoted {
                        true => s.strip_prefix('"').and_then(|s| s.strip_suffix('"')),
                        false => Some(s),
                    };
                    let ok = inner.is_some_and(|i| {
                        i.len() == digits
                            && i.bytes()
                                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                    });
                    if !ok {
                        return Err(format!("{at}: {s:?} does not match {rule}"));
                    }
                }
            }
            k if ANNOTATIONS.contains(&k) => {}
            other => panic!("the contract test does not check the keyword {other:?}: add it"),
        }
    }
    Ok(())
}

fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unknown type {other}"),
    }
}
