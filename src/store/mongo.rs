//! The MongoDB backend: the seed's `orders_db.orders` through the official
//! async driver, bridged to coroutines.
//!
//! Each worker (after fork) runs one tokio runtime that owns the `Client`
//! (the driver spawns its monitors on it), driven by a coroutine on the
//! worker's own scheduler thread (`runtime.rs`: no thread crossings). A
//! coroutine hands each operation to the runtime and waits for its answer
//! through `reply` (no may timer per operation); the operation is bounded
//! on the tokio side too (`tokio::time::timeout` drops it), so during an
//! outage abandoned operations do not pile up, and each request gets a 503
//! within `store_timeout_ms`. The driver's own server selection (30 s by
//! default) is capped to the same deadline unless the URI sets it.
//!
//! Writes are acknowledged only once the database has them in its journal
//! (`j: true`), unless the URI chooses its own write concern (`w=` or
//! `journal=`): with MongoDB's default (`j: false`) a database that crashes
//! loses the writes of its last moments although it acknowledged them, and
//! orders-server never tells a client an order is stored when it may not be.
//!
//! Documents keep app.py's shape; a stored document of another shape is
//! rendered as stored (ObjectIds as 24 hex characters, other BSON types as
//! their relaxed extended-JSON form), never a 500.
//!
//! A write with preconditions (`If-Match`, `If-None-Match`) reads the
//! document, compares its tag, and then writes only if the document is
//! still exactly the one compared: the write's filter is `_id` plus
//! `$expr: {$eq: ["$$ROOT", {$literal: <the document read>}]}`, so the
//! comparison and the write are one atomic step on the database, whatever
//! other hosts do. If the document changed in between, the preconditions
//! are evaluated again on the new one.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{doc, Bson, Document, RawBsonRef, RawDocument, RawDocumentBuf};
use mongodb::options::{ClientOptions, ReturnDocument, WriteConcern};
use mongodb::{Client, Collection, Database};
use serde_json::{Map, Value};

use super::reply::Replies;
use super::runtime::CoRuntime;
use super::{tag_of, Doc, Outcome, Page, Store, StoreError, Written};
use crate::orders::{Fields, ListQuery};
use crate::proto::etag::Preconditions;

/// Extra time the coroutine waits beyond the tokio-side deadline, so the
/// runtime's own timeout (which cancels the operation) normally fires first.
const REPLY_GRACE: Duration = Duration::from_millis(200);
/// Connections per worker unless the URI sets `maxPoolSize`: the driver's
/// own default, stated here so that a driver upgrade cannot change it
/// silently (README, "Connection pool", has the arithmetic).
const POOL_SIZE: u32 = 10;
/// Documents per round trip when streaming a list.
const LIST_BATCH_SIZE: u32 = 1000;
/// How many times a conditional write compares and tries again when the
/// document changed between its read and its write; then the client is
/// told to retry (503).
const CAS_ATTEMPTS: usize = 8;

/// Where the orders are.
#[derive(Debug, Clone)]
pub struct MongoTarget {
    /// The connection string (may carry credentials: never log it as is).
    pub uri: String,
    /// Database name.
    pub database: String,
    /// Collection name.
    pub collection: String,
}

/// The MongoDB-backed store of one worker process.
pub struct Mongo {
    runtime: CoRuntime,
    /// Calls waiting for the runtime, and where the runtime answers them.
    replies: Replies<Box<dyn Any + Send>>,
    database: Database,
    orders: Collection<Document>,
    /// The same collection, read as raw BSON (rendered to JSON directly).
    raw: Collection<RawDocumentBuf>,
    timeout: Duration,
    /// The URI's password, removed from any error text before it is logged.
    password: Option<Arc<str>>,
}

impl Mongo {
    /// Starts the runtime and builds the client. Does not wait for the
    /// database: while it is unreachable, requests get 503 and service
    /// resumes by itself once it answers.
    pub fn open(target: &MongoTarget, timeout: Duration) -> Result<Mongo, StoreError> {
        let password = mongodb::options::ConnectionString::parse(&target.uri)
            .ok()
            .and_then(|c| c.credential)
            .and_then(|c| c.password)
            .map(Arc::from);
        let redact = |e: mongodb::error::Error| {
            StoreError::unavailable_because(redact(&e.to_string(), password.as_deref()))
        };
        let (runtime, client) = CoRuntime::start(async {
            let mut options = ClientOptions::parse(&target.uri).await.map_err(redact)?;
            options.server_selection_timeout.get_or_insert(timeout);
            options.connect_timeout.get_or_insert(timeout);
            options
                .app_name
                .get_or_insert_with(|| "orders-server".to_string());
            options.max_pool_size.get_or_insert(POOL_SIZE);
            // Acknowledged means journaled (see the module comment).
            options
                .write_concern
                .get_or_insert_with(|| WriteConcern::builder().journal(true).build());
            Client::with_options(options).map_err(redact)
        })
        .map_err(StoreError::unavailable)?;
        let client = client?;
        let database = client.database(&target.database);
        let orders = database.collection::<Document>(&target.collection);
        let replies = Replies::answered_in_place(timeout + REPLY_GRACE);
        let raw = orders.clone_with_type::<RawDocumentBuf>();
        Ok(Mongo {
            runtime,
            replies,
            database,
            orders,
            raw,
            timeout,
            password,
        })
    }

    /// Runs `op` on the runtime within `store_timeout_ms`.
    fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, mongodb::error::Error>> + Send + 'static,
    {
        self.run_within(self.timeout, op)
    }

    /// Runs `op` on the runtime, bounded there by `timeout` (which cancels
    /// it), and waits for its answer from a coroutine, with no may timer
    /// (the deadline table of `reply` watches it).
    fn run_within<T, F>(&self, timeout: Duration, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, mongodb::error::Error>> + Send + 'static,
    {
        let (reply_to, awaiting) = self.replies.call_within(timeout + REPLY_GRACE);
        let password = self.password.clone();
        self.runtime.submit(async move {
            let answer = match tokio::time::timeout(timeout, op).await {
                Ok(Ok(v)) => Ok(Box::new(v) as Box<dyn Any + Send>),
                Ok(Err(e)) => Err(StoreError::unavailable_because(redact(
                    &e.to_string(),
                    password.as_deref(),
                ))),
                Err(_) => Err(StoreError::Timeout),
            };
            reply_to.send(answer);
        });
        let value = awaiting.wait()?;
        Ok(*value
            .downcast::<T>()
            .expect("an operation answers with its own type"))
    }
}

impl Store for Mongo {
    fn get(&self, id: &ObjectId) -> Result<Option<Doc>, StoreError> {
        self.get_raw(id)?.map(|d| render_raw(&d)).transpose()
    }

    fn list(&self, query: &ListQuery, max_bytes: usize) -> Result<Page, StoreError> {
        let orders = self.raw.clone();
        let filter = match query.after {
            Some(after) => doc! { "_id": { "$gt": after } },
            None => doc! {},
        };
        let limit = query.limit.unwrap_or(usize::MAX);
        let (docs, more) = self.run(async move {
            let mut find = orders
                .find(filter)
                .sort(doc! { "_id": 1 })
                .batch_size(LIST_BATCH_SIZE);
            if limit != usize::MAX {
                // Look one document ahead to know whether more follow.
                find = find.limit(limit as i64 + 1);
            }
            let mut cursor = find.await?;
            let (mut docs, mut bytes) = (Vec::new(), 0);
            while cursor.advance().await? {
                if docs.len() == limit || bytes >= max_bytes {
                    // One document beyond the page: more follow.
                    return Ok((docs, true));
                }
                bytes += cursor.current().as_bytes().len();
                docs.push(cursor.current().to_raw_document_buf());
            }
            Ok((docs, false))
        })?;
        let next = if more {
            docs.last().and_then(|d| d.get_object_id("_id").ok())
        } else {
            None
        };
        Ok(Page {
            docs: docs
                .iter()
                .map(|d| render_raw(d))
                .collect::<Result<_, _>>()?,
            next,
        })
    }

    fn create(&self, fields: Fields) -> Result<Doc, StoreError> {
        let orders = self.orders.clone();
        let mut document = doc! { "_id": ObjectId::new() };
        for (k, v) in fields {
            document.insert(k, to_bson(v));
        }
        let stored = document.clone();
        self.run(async move { orders.insert_one(document).await })?;
        Ok(render(stored))
    }

    fn update(&self, id: &ObjectId, fields: Fields, pre: &Preconditions) -> Outcome<Doc> {
        let set: Document = fields.into_iter().map(|(k, v)| (k, to_bson(v))).collect();
        let update = doc! { "$set": set };
        self.conditionally(id, pre, |filter| {
            let orders = self.orders.clone();
            let update = update.clone();
            let after = self.run(async move {
                orders
                    .find_one_and_update(filter, update)
                    .return_document(ReturnDocument::After)
                    .await
            })?;
            Ok(after.map(render))
        })
    }

    /// The `ping` command, within the shorter of `timeout` and the store's deadline.
    fn ping(&self, timeout: Duration) -> Result<(), StoreError> {
        let database = self.database.clone();
        self.run_within(timeout.min(self.timeout), async move {
            database.run_command(doc! { "ping": 1 }).await.map(drop)
        })
    }

    fn delete(&self, id: &ObjectId, pre: &Preconditions) -> Outcome<()> {
        self.conditionally(id, pre, |filter| {
            let orders = self.orders.clone();
            let result = self.run(async move { orders.delete_one(filter).await })?;
            Ok((result.deleted_count > 0).then_some(()))
        })
    }
}

impl Mongo {
    /// Runs `write` (given its filter; None: nothing matched) on the
    /// document `id`: at once without preconditions, else as a
    /// compare-and-set on the document whose tag met them.
    fn conditionally<T>(
        &self,
        id: &ObjectId,
        pre: &Preconditions,
        write: impl Fn(Document) -> Result<Option<T>, StoreError>,
    ) -> Outcome<T> {
        if pre.is_empty() {
            return Ok(match write(doc! { "_id": *id })? {
                Some(done) => Written::Done(done),
                None => Written::NotFound,
            });
        }
        for _ in 0..CAS_ATTEMPTS {
            let current = self.get_raw(id)?;
            let tag = match &current {
                Some(raw) => Some(tag_of(&render_raw(raw)?.0)),
                None => None,
            };
            if !pre.allow_write(tag) {
                return Ok(Written::PreconditionFailed(tag));
            }
            let Some(raw) = current else {
                return Ok(Written::NotFound);
            };
            let seen = raw.to_document().map_err(|e| {
                StoreError::unavailable_because(format!(
                    "malformed document from the database: {e}"
                ))
            })?;
            let filter = doc! {
                "_id": *id,
                "$expr": { "$eq": ["$$ROOT", { "$literal": seen }] },
            };
            if let Some(done) = write(filter)? {
                return Ok(Written::Done(done));
            }
            // Changed (or deleted) since it was read: compare again.
        }
        Err(StoreError::unavailable_because(
            "the order kept changing during a conditional write",
        ))
    }

    /// The stored document `id`, as raw BSON.
    fn get_raw(&self, id: &ObjectId) -> Result<Option<RawDocumentBuf>, StoreError> {
        let orders = self.raw.clone();
        let filter = doc! { "_id": *id };
        self.run(async move { orders.find_one(filter).await })
    }
}

/// A validated field as BSON: integers as int32 when they fit (as pymongo
/// stored app.py's), else int64.
fn to_bson(v: Value) -> Bson {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => i32::try_from(i).map(Bson::Int32).unwrap_or(Bson::Int64(i)),
            None => Bson::Double(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => Bson::String(s),
        other => Bson::try_from(other).unwrap_or(Bson::Null),
    }
}

/// A stored document as JSON: ObjectIds as hex, everything else as stored.
fn render(d: Document) -> Doc {
    let json = Value::Object(
        d.into_iter()
            .map(|(k, v)| (k, to_json(v)))
            .collect::<Map<_, _>>(),
    );
    Doc(serde_json::to_vec(&json).expect("a JSON value always serializes"))
}

fn to_json(v: Bson) -> Value {
    match v {
        Bson::ObjectId(id) => Value::String(id.to_hex()),
        Bson::String(s) => Value::String(s),
        Bson::Int32(i) => Value::from(i),
        Bson::Int64(i) => Value::from(i),
        Bson::Double(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Bson::Boolean(b) => Value::Bool(b),
        Bson::Null | Bson::Undefined => Value::Null,
        Bson::Array(a) => Value::Array(a.into_iter().map(to_json).collect()),
        Bson::Document(d) => Value::Object(d.into_iter().map(|(k, v)| (k, to_json(v))).collect()),
        other => other.into_relaxed_extjson(),
    }
}

/// A stored document as JSON straight from its BSON bytes, with no
/// `Document` or `serde_json::Value` in between (a read's allocations were
/// a tenth of its CPU): the same output as `render`.
fn render_raw(d: &RawDocument) -> Result<Doc, StoreError> {
    let mut out = Vec::with_capacity(d.as_bytes().len() + d.as_bytes().len() / 2);
    write_document(d, &mut out).map_err(|e| {
        StoreError::unavailable_because(format!("malformed document from the database: {e}"))
    })?;
    Ok(Doc(out))
}

fn write_document(d: &RawDocument, out: &mut Vec<u8>) -> Result<(), bson::raw::Error> {
    out.push(b'{');
    for (i, element) in d.iter().enumerate() {
        let (key, value) = element?;
        if i > 0 {
            out.push(b',');
        }
        write_json(&key, out);
        out.push(b':');
        write_value(value, out)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_value(v: RawBsonRef<'_>, out: &mut Vec<u8>) -> Result<(), bson::raw::Error> {
    match v {
        RawBsonRef::ObjectId(id) => write_json(&id.to_hex(), out),
        RawBsonRef::String(s) => write_json(&s, out),
        RawBsonRef::Int32(i) => write_json(&i, out),
        RawBsonRef::Int64(i) => write_json(&i, out),
        RawBsonRef::Double(f) => match serde_json::Number::from_f64(f) {
            Some(n) => write_json(&n, out),
            None => out.extend_from_slice(b"null"),
        },
        RawBsonRef::Boolean(b) => write_json(&b, out),
        RawBsonRef::Null | RawBsonRef::Undefined => out.extend_from_slice(b"null"),
        RawBsonRef::Document(d) => write_document(d, out)?,
        RawBsonRef::Array(a) => {
            out.push(b'[');
            for (i, item) in a.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item?, out)?;
            }
            out.push(b']');
        }
        // Types JSON lacks: their relaxed extended-JSON form, as `to_json`.
        other => match Bson::try_from(other.to_raw_bson()) {
            Ok(b) => write_json(&b.into_relaxed_extjson(), out),
            Err(_) => out.extend_from_slice(b"null"),
        },
    }
    Ok(())
}

fn write_json(value: &impl serde::Serialize, out: &mut Vec<u8>) {
    serde_json::to_writer(out, value).expect("writing JSON to memory cannot fail");
}

/// Replaces the password (and any `user:password@` in a URI) in a message.
pub fn redact(text: &str, password: Option<&str>) -> String {
    let mut out = redact_uri(text);
    if let Some(p) = password.filter(|p| !p.is_empty()) {
        out = out.replace(p, "****");
    }
    out
}

/// `mongodb://user:secret@host/db` -> `mongodb://user:****@host/db`,
/// wherever a URI appears in `text`.
pub fn redact_uri(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '?')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":****");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_lose_their_passwords() {
        let t = "cannot reach mongodb://app:s3cr%40t@db1:27017,db2/orders_db?tls=true now";
        let r = redact_uri(t);
        assert_eq!(
            r,
            "cannot reach mongodb://app:****@db1:27017,db2/orders_db?tls=true now"
        );
        assert_eq!(
            redact("auth failed for s3cret", Some("s3cret")),
            "auth failed for ****"
        );
        assert_eq!(redact_uri("mongodb://host/db"), "mongodb://host/db");
    }

    #[test]
    fn raw_rendering_is_the_same_as_rendering_a_document() {
        let id = ObjectId::new();
        let d = doc! {
            "_id": id, "product": "P \"q\" \u{e9}", "quantity": 2_i32, "big": 1_099_511_627_776_i64, "f": 2.0,
            "half": 2.5, "nan": f64::NAN, "nil": Bson::Null, "yes": true, "list": [1_i32, "two", { "x": Bson::Null }],
            "when": bson::DateTime::from_millis(1_704_164_645_000), "nested": { "a": { "b": [] } },
        };
        let raw = RawDocumentBuf::from_document(&d).unwrap();
        assert_eq!(
            String::from_utf8(render_raw(&raw).unwrap().0).unwrap(),
            String::from_utf8(render(d).0).unwrap()
        );
    }

    #[test]
    fn stored_documents_render_as_stored() {
        let id = ObjectId::new();
        let d = doc! { "_id": id, "quantity": "two", "extra": [1_i64, { "x": Bson::Null }] };
        let v: Value = serde_json::from_slice(&render(d).0).unwrap();
        assert_eq!(v["_id"], id.to_hex());
        assert_eq!(v["quantity"], "two");
        assert_eq!(v["extra"][0], 1);
    }
}
