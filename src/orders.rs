//! The order domain: what a client may send (validation of new orders and
//! partial updates), order ids, and the pagination arguments of a list.
//!
//! Validation applies to what clients send; stored documents are returned
//! as stored (see `store`).

use std::fmt;

use bson::oid::ObjectId;
use serde_json::{Map, Value};

// `Sent`, `SentFields` and `Key` deserialize bodies by hand (see parse_body).

/// The four fields of an order, in the order app.py documented them.
pub const FIELDS: [&str; 4] = ["product", "quantity", "customer_name", "customer_address"];

/// What quantity must be (the message of a wrong one, of any kind).
const QUANTITY_RULE: &str = "an integer from 1 to 9223372036854775807";

/// Deepest JSON nesting accepted in a body. Orders are flat; the limit keeps
/// the recursive parser far from the end of a coroutine's stack (an
/// overflow is a segfault that takes the whole worker down).
pub const MAX_JSON_DEPTH: usize = 32;

/// Validated fields of an order (all four for a create, some for an update).
pub type Fields = Map<String, Value>;

/// What a client sent that cannot be accepted; always a 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderError {
    /// The body is not JSON.
    InvalidJson,
    /// The body is JSON but not an object.
    NotAnObject,
    /// The body nests arrays/objects deeper than [`MAX_JSON_DEPTH`].
    TooDeep,
    /// A required field is absent (create).
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    /// A string field is empty.
    EmptyField(&'static str),
    /// quantity is below 1 or too large.
    QuantityOutOfRange,
    /// An update names none of the four fields.
    NoKnownField,
    /// An id is not 24 hex characters.
    InvalidId,
    /// A query parameter is unusable.
    InvalidQuery(String),
}

impl fmt::Display for OrderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrderError::InvalidJson => f.write_str("Request body is not valid JSON"),
            OrderError::NotAnObject => f.write_str("Request body must be a JSON object"),
            OrderError::TooDeep => {
                write!(f, "Request body nests deeper than {MAX_JSON_DEPTH} levels")
            }
            OrderError::MissingField(name) => write!(f, "Missing field: {name}"),
            OrderError::WrongType { field, expected } => {
                write!(f, "Field {field} must be {expected}")
            }
            OrderError::EmptyField(name) => write!(f, "Field {name} must not be empty"),
            OrderError::QuantityOutOfRange => {
                write!(
                    f,
                    "Field quantity must be an integer from 1 to {}",
                    i64::MAX
                )
            }
            OrderError::NoKnownField => write!(
                f,
                "Request body must contain at least one of: {}",
                FIELDS.join(", ")
            ),
            OrderError::InvalidId => {
                f.write_str("Invalid order id: expected 24 hexadecimal characters")
            }
            OrderError::InvalidQuery(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for OrderError {}

/// Parses an order id: exactly 24 hex characters. Decoded in place (it is
/// on the path of every request for one order: no allocation).
pub fn parse_id(s: &str) -> Result<ObjectId, OrderError> {
    let hex = s.as_bytes();
    if hex.len() != 24 {
        return Err(OrderError::InvalidId);
    }
    let mut bytes = [0u8; 12];
    for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
    }
    Ok(ObjectId::from_bytes(bytes))
}

fn hex_value(digit: u8) -> Result<u8, OrderError> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        _ => Err(OrderError::InvalidId),
    }
}

/// Validates the body of `POST /orders`: all four fields, each valid.
/// Extra fields are ignored, as app.py ignored them.
pub fn parse_new(body: &[u8]) -> Result<Fields, OrderError> {
    let mut sent = parse_body(body)?;
    let mut fields = Fields::new();
    for (i, name) in FIELDS.into_iter().enumerate() {
        let value = sent[i].take().ok_or(OrderError::MissingField(name))?;
        fields.insert(name.to_string(), check_field(name, value)?);
    }
    Ok(fields)
}

/// Validates the body of `PUT /orders/<id>`: one or more of the four fields,
/// each following the rules of a create.
pub fn parse_patch(body: &[u8]) -> Result<Fields, OrderError> {
    let mut sent = parse_body(body)?;
    let mut fields = Fields::new();
    for (i, name) in FIELDS.into_iter().enumerate() {
        if let Some(value) = sent[i].take() {
            fields.insert(name.to_string(), check_field(name, value)?);
        }
    }
    if fields.is_empty() {
        return Err(OrderError::NoKnownField);
    }
    Ok(fields)
}

/// The four fields' values as sent (the last of a repeated key, as a JSON
/// object parser keeps), from a body that must be a JSON object. Nothing
/// else is built: other keys and their values are parsed only to check
/// that they are JSON (`IgnoredAny`), and an object or array given for one
/// of the four is skipped the same way, so a body costs about its own size
/// whatever it holds (a generic JSON tree cost ~28 times it).
fn parse_body(body: &[u8]) -> Result<[Option<Sent>; 4], OrderError> {
    check_depth(body)?;
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Not an object: is it JSON at all? (Checked without building it.)
        return match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => Err(OrderError::NotAnObject),
            Err(_) => Err(OrderError::InvalidJson),
        };
    }
    serde_json::from_slice::<SentFields>(body)
        .map(|SentFields(fields)| fields)
        .map_err(|_| OrderError::InvalidJson)
}

/// A field's value, kept only as far as validation needs it.
#[derive(Debug)]
enum Sent {
    String(String),
    /// A JSON integer that fits an i64.
    Int(i64),
    /// A JSON integer above i64::MAX.
    Huge,
    /// A JSON number with a fraction or an exponent (`2.0` included).
    Float,
    /// null, true/false, an array or an object (skipped, not built).
    Other,
}

impl<'de> serde::Deserialize<'de> for Sent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Sent, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Sent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<Sent, E> {
                Ok(Sent::String(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Sent, E> {
                Ok(Sent::String(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Sent, E> {
                Ok(Sent::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Sent, E> {
                Ok(i64::try_from(v).map_or(Sent::Huge, Sent::Int))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Sent, E> {
                Ok(Sent::Float)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Sent, E> {
                Ok(Sent::Other)
            }
            fn visit_unit<E>(self) -> Result<Sent, E> {
                Ok(Sent::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Sent, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Sent::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Sent, A::Error> {
                while a
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Sent::Other)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// A body's values of the four fields (see [`parse_body`]).
struct SentFields([Option<Sent>; 4]);

impl<'de> serde::Deserialize<'de> for SentFields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SentFields, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = SentFields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<SentFields, A::Error> {
                let mut fields: [Option<Sent>; 4] = Default::default();
                while let Some(key) = a.next_key::<Key>()? {
                    match key.0 {
                        Some(i) => fields[i] = Some(a.next_value()?),
                        None => {
                            a.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(SentFields(fields))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A key of the body: the index of one of the four fields, or None (read
/// without being kept).
struct Key(Option<usize>);

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(Key(FIELDS.iter().position(|f| *f == v)))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// Rejects nesting deeper than [`MAX_JSON_DEPTH`] with one linear scan,
/// before the recursive parser sees the body. Brackets inside strings
/// don't count; malformed input is left for the parser to reject.
fn check_depth(body: &[u8]) -> Result<(), OrderError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(OrderError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn check_field(name: &'static str, value: Sent) -> Result<Value, OrderError> {
    if name == "quantity" {
        return check_quantity(value);
    }
    match value {
        Sent::String(s) if s.is_empty() => Err(OrderError::EmptyField(name)),
        Sent::String(s) => Ok(Value::String(s)),
        _ => Err(OrderError::WrongType {
            field: name,
            expected: "a string",
        }),
    }
}

/// quantity: a JSON integer >= 1 (not a string, not a fraction, not `2.0`),
/// at most i64::MAX so it fits MongoDB's 64-bit integer.
fn check_quantity(value: Sent) -> Result<Value, OrderError> {
    match value {
        Sent::Int(q) if q >= 1 => Ok(Value::from(q)),
        Sent::Int(_) | Sent::Huge => Err(OrderError::QuantityOutOfRange),
        _ => Err(OrderError::WrongType {
            field: "quantity",
            expected: QUANTITY_RULE,
        }),
    }
}

/// The arguments of `GET /orders`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListQuery {
    /// Return at most this many orders.
    pub limit: Option<usize>,
    /// Return orders whose id is greater than this one.
    pub after: Option<ObjectId>,
}

impl ListQuery {
    /// Whether the response carries `next` (the request used `limit` or `after`).
    pub fn is_paged(&self) -> bool {
        self.limit.is_some() || self.after.is_some()
    }
}

/// Parses the query string of `GET /orders` (without the `?`). `cap` is the
/// operator's largest `limit`. Unknown or repeated parameters are errors.
pub fn parse_list_query(query: &str, cap: usize) -> Result<ListQuery, OrderError> {
    let mut q = ListQuery::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "limit" if q.limit.is_none() => q.limit = Some(parse_limit(value, cap)?),
            "after" if q.after.is_none() => {
                q.after = Some(parse_id(value).map_err(|_| {
                    OrderError::InvalidQuery(
                        "Parameter after must be an order id (24 hexadecimal characters)".into(),
                    )
                })?)
            }
            "limit" | "after" => {
                return Err(OrderError::InvalidQuery(format!(
                    "Parameter {key} given twice"
                )))
            }
            _ => {
                return Err(OrderError::InvalidQuery(format!(
                    "Unknown query parameter: {}",
                    printable(key)
                )))
            }
        }
    }
    Ok(q)
}

fn parse_limit(value: &str, cap: usize) -> Result<usize, OrderError> {
    let bad = || {
        OrderError::InvalidQuery(format!(
            "Parameter limit must be an integer from 1 to {cap}"
        ))
    };
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match value.parse::<usize>() {
        Ok(n) if (1..=cap).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

/// Echoes a client's parameter name in an error, bounded and printable.
fn printable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_order_needs_all_fields_of_the_right_type() {
        let ok =
            br#"{"product":"P","quantity":2,"customer_name":"B","customer_address":"A","x":1}"#;
        let f = parse_new(ok).unwrap();
        assert_eq!(f.len(), 4);
        assert!(!f.contains_key("x"));
        assert_eq!(
            parse_new(br#"{"product":"P","quantity":2,"customer_name":"B"}"#),
            Err(OrderError::MissingField("customer_address"))
        );
        let bad_q = [
            r#""2""#,
            "2.0",
            "0",
            "-1",
            "1.5",
            "true",
            "null",
            "9223372036854775808",
        ];
        for q in bad_q {
            let body = format!(
                r#"{{"product":"P","quantity":{q},"customer_name":"B","customer_address":"A"}}"#
            );
            assert!(parse_new(body.as_bytes()).is_err(), "quantity {q} accepted");
        }
        let empty = br#"{"product":"","quantity":1,"customer_name":"B","customer_address":"A"}"#;
        assert_eq!(parse_new(empty), Err(OrderError::EmptyField("product")));
        assert_eq!(parse_new(b"[1]"), Err(OrderError::NotAnObject));
        assert_eq!(parse_new(b"{"), Err(OrderError::InvalidJson));
    }

    #[test]
    fn depth_is_bounded_outside_strings() {
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH + 1),
            "]".repeat(MAX_JSON_DEPTH + 1)
        );
        assert_eq!(parse_new(deep.as_bytes()), Err(OrderError::TooDeep));
        let ok = format!(
            r#"{{"product":"{}\"[","quantity":1,"customer_name":"B","customer_address":"A"}}"#,
            "[".repeat(100)
        );
        assert!(parse_new(ok.as_bytes()).is_ok());
    }

    #[test]
    fn patch_needs_one_known_field() {
        assert_eq!(parse_patch(br#"{"x":1}"#), Err(OrderError::NoKnownField));
        assert_eq!(parse_patch(br#"{"quantity":3}"#).unwrap().len(), 1);
        assert!(parse_patch(br#"{"quantity":0}"#).is_err());
    }

    #[test]
    fn ids_are_24_hex() {
        assert!(parse_id("6566f0c2a1b2c3d4e5f60718").is_ok());
        assert!(parse_id("6566F0C2A1B2C3D4E5F60718").is_ok());
        assert!(parse_id("6566f0c2a1b2c3d4e5f6071").is_err());
        assert!(parse_id("6566f0c2a1b2c3d4e5f6071g").is_err());
        assert!(parse_id("+566f0c2a1b2c3d4e5f60718").is_err());
    }

    #[test]
    fn list_query_rules() {
        assert_eq!(parse_list_query("", 10).unwrap(), ListQuery::default());
        assert_eq!(parse_list_query("limit=10", 10).unwrap().limit, Some(10));
        for bad in [
            "limit=0",
            "limit=11",
            "limit=-1",
            "limit=+1",
            "limit=a",
            "limit=",
            "after=zz",
            "x=1",
            "limit=1&limit=2",
        ] {
            assert!(parse_list_query(bad, 10).is_err(), "{bad} accepted");
        }
        let q = parse_list_query("after=6566f0c2a1b2c3d4e5f60718", 10).unwrap();
        assert!(q.after.is_some() && q.limit.is_none() && q.is_paged());
    }
}
