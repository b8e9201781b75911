//! Storage: the [`Store`] trait the HTTP layer calls, its backends, and
//! how a worker opens the one its configuration names ([`open`]).
//!
//! The trait deals in stored documents, rendered as JSON objects exactly as
//! stored (`_id` as 24 hex characters), not in a validated order type: a
//! backend may meet documents of other shapes (MongoDB data written by the
//! seed's app.py) and returns them unchanged.

pub mod datafile;
pub mod embedded;
pub mod mongo;
pub mod reply;
pub mod runtime;

use std::error::Error;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bson::oid::ObjectId;

use crate::metrics::{self, StoreOp, StoreOutcome};
use crate::orders::{Fields, ListQuery};
use crate::proto::etag::{EntityTag, Preconditions};

/// What the store layer is told by the configuration (`config` resolves it).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Where orders are stored.
    pub backend: Backend,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// Largest size the embedded store may grow to, in bytes.
    pub map_size: usize,
    /// Deadline of one store operation.
    pub timeout: Duration,
}

/// Where orders are stored.
#[derive(Debug, Clone)]
pub enum Backend {
    /// LMDB in `data_dir` (the default).
    Embedded,
    /// MongoDB.
    Mongo(mongo::MongoTarget),
}

/// Opens the store `config` names (in a worker, after fork).
pub fn open(config: &StoreConfig) -> Result<Box<dyn Store>, StoreError> {
    Ok(match &config.backend {
        Backend::Embedded => Box::new(embedded::Embedded::open(
            &config.data_dir,
            config.map_size,
            config.timeout,
        )?),
        Backend::Mongo(target) => Box::new(mongo::Mongo::open(target, config.timeout)?),
    })
}

/// The store, for log lines (never the URI's password).
pub fn describe(config: &StoreConfig) -> String {
    match &config.backend {
        Backend::Embedded => format!("embedded, data_dir {}", config.data_dir.display()),
        Backend::Mongo(t) => format!(
            "mongo {} database {} collection {}",
            mongo::redact_uri(&t.uri),
            t.database,
            t.collection
        ),
    }
}

/// One stored document as a JSON object (UTF-8 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc(pub Vec<u8>);

/// A page of a list, in `_id` order.
#[derive(Debug, Default)]
pub struct Page {
    /// The documents of this page.
    pub docs: Vec<Doc>,
    /// When more documents follow (the page stopped at the query's `limit`
    /// or at `max_bytes`): the id of the last document here, to pass as
    /// `after`.
    pub next: Option<ObjectId>,
}

/// What a write with preconditions did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written<T> {
    /// Applied: its result.
    Done(T),
    /// The preconditions held, but no document has this id.
    NotFound,
    /// A precondition was false when the write would have applied (the
    /// comparison and the write are one atomic step): nothing changed.
    /// The current document's tag, if there is one.
    PreconditionFailed(Option<EntityTag>),
}

/// What a conditional write answers.
pub type Outcome<T> = Result<Written<T>, StoreError>;

/// The tag of a stored document: of its JSON bytes as served. Every
/// backend, worker and host computes it the same way from the same
/// document, so it survives restarts (docs/design.md).
pub fn tag_of(doc: &[u8]) -> EntityTag {
    EntityTag::of(doc)
}

/// Why a store could not answer. Each is a 503 to the client; the cause
/// is for the log only (its `source()`: log it with `logging::chain`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The operation did not finish before its deadline (it may still
    /// complete: a create that timed out may have been committed).
    #[error("store operation timed out")]
    Timeout,
    /// The store is unreachable or failing.
    #[error("store unavailable")]
    Unavailable(#[source] Cause),
    /// The store is full (LMDB map size reached).
    #[error("store is full (raise map_size)")]
    Full,
    /// The store's data is damaged (LMDB found corruption): nothing read
    /// from it can be trusted, and nothing more is written to it. The
    /// worker ends on seeing it (`worker`), as on a SIGBUS.
    #[error("store damaged")]
    Damaged(#[source] Cause),
}

impl StoreError {
    /// Unavailable because of `cause`.
    pub fn unavailable(cause: impl Error + Send + Sync + 'static) -> StoreError {
        StoreError::Unavailable(Cause(Arc::new(cause)))
    }

    /// Unavailable, for a reason with no error value of its own.
    pub fn unavailable_because(why: impl Into<String>) -> StoreError {
        StoreError::Unavailable(Cause(Arc::new(Reason(why.into()))))
    }

    /// Damaged because of `cause`.
    pub fn damaged(cause: impl Error + Send + Sync + 'static) -> StoreError {
        StoreError::Damaged(Cause(Arc::new(cause)))
    }

    /// How the metrics count it (a damaged store is one unavailable).
    pub fn outcome(&self) -> StoreOutcome {
        match self {
            StoreError::Timeout => StoreOutcome::Timeout,
            StoreError::Unavailable(_) | StoreError::Damaged(_) => StoreOutcome::Unavailable,
            StoreError::Full => StoreOutcome::Full,
        }
    }
}

/// The error behind an unavailable store, shared by every operation of a
/// failed batch (hence `Arc`).
#[derive(Debug, Clone)]
pub struct Cause(Arc<dyn Error + Send + Sync>);

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

/// Two causes are the same when they say the same (for tests).
impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        self.to_string() == other.to_string()
    }
}

/// A reason given as text: a state found wrong, or an error whose own
/// text had to be redacted (a MongoDB error may quote the URI's password).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Reason(String);

/// The operations behind the five endpoints. Implementations are shared by
/// every coroutine of a worker and must never block a scheduler thread for
/// long (hand slow work to a thread or runtime of their own).
pub trait Store: Send + Sync {
    /// The document with this id, if any.
    fn get(&self, id: &ObjectId) -> Result<Option<Doc>, StoreError>;
    /// Documents in `_id` order after `query.after`: at most `query.limit`
    /// of them, and no more once their bytes reach `max_bytes` (at least
    /// one is returned when any follows), so one read stays bounded in
    /// memory whatever the documents' sizes.
    fn list(&self, query: &ListQuery, max_bytes: usize) -> Result<Page, StoreError>;
    /// Stores a new document with the given fields and a new `_id`,
    /// answering only once it is durable.
    fn create(&self, fields: Fields) -> Result<Doc, StoreError>;
    /// Sets the given fields, if the document's current tag meets `pre`
    /// (compared atomically with the write); the whole document after the
    /// update.
    fn update(&self, id: &ObjectId, fields: Fields, pre: &Preconditions) -> Outcome<Doc>;
    /// Removes the document, if its current tag meets `pre` (compared
    /// atomically with the removal).
    fn delete(&self, id: &ObjectId, pre: &Preconditions) -> Outcome<()>;
    /// Whether the store can serve requests, answered within `timeout`
    /// (the readiness check).
    fn ping(&self, timeout: std::time::Duration) -> Result<(), StoreError>;
    /// Whether a ping costs no more than a request does (then `/readyz`
    /// asks the store every time instead of reusing a recent answer).
    fn ping_is_cheap(&self) -> bool {
        false
    }
    /// A line of statistics for the worker's exit log, if the backend keeps any.
    fn stats(&self) -> Option<String> {
        None
    }
}

/// Renders a new document: `_id` first, then the fields.
pub fn render_new(id: &ObjectId, fields: &Fields) -> Doc {
    let rest = serde_json::to_vec(fields).expect("a JSON map always serializes");
    let mut out = Vec::with_capacity(rest.len() + 40);
    out.extend_from_slice(b"{\"_id\":\"");
    out.extend_from_slice(id.to_hex().as_bytes());
    out.push(b'"');
    if rest.len() > 2 {
        out.push(b',');
    }
    out.extend_from_slice(&rest[1..]);
    Doc(out)
}

/// A store whose every operation is counted in the metrics
/// (`orders_store_operations_total`, `orders_store_errors_total`).
pub struct Counted<'a>(pub &'a dyn Store);

impl Counted<'_> {
    fn count<T>(&self, op: StoreOp, result: Result<T, StoreError>) -> Result<T, StoreError> {
        let outcome = match &result {
            Ok(_) => StoreOutcome::Ok,
            Err(e) => e.outcome(),
        };
        metrics::store_op(op, outcome);
        result
    }
}

impl Store for Counted<'_> {
    fn get(&self, id: &ObjectId) -> Result<Option<Doc>, StoreError> {
        self.count(StoreOp::Get, self.0.get(id))
    }
    fn list(&self, query: &ListQuery, max_bytes: usize) -> Result<Page, StoreError> {
        self.count(StoreOp::List, self.0.list(query, max_bytes))
    }
    fn create(&self, fields: Fields) -> Result<Doc, StoreError> {
        self.count(StoreOp::Create, self.0.create(fields))
    }
    fn update(&self, id: &ObjectId, fields: Fields, pre: &Preconditions) -> Outcome<Doc> {
        self.count(StoreOp::Update, self.0.update(id, fields, pre))
    }
    fn delete(&self, id: &ObjectId, pre: &Preconditions) -> Outcome<()> {
        self.count(StoreOp::Delete, self.0.delete(id, pre))
    }
    fn ping(&self, timeout: std::time::Duration) -> Result<(), StoreError> {
        self.0.ping(timeout)
    }
    fn ping_is_cheap(&self) -> bool {
        self.0.ping_is_cheap()
    }
    fn stats(&self) -> Option<String> {
        self.0.stats()
    }
}
