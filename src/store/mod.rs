//! Storage: the [`Store`] trait the HTTP layer calls, and its backends.
//!
//! The trait deals in stored documents, rendered as JSON objects exactly as
//! stored (`_id` as 24 hex characters), not in a validated order type: a
//! backend may meet documents of other shapes (MongoDB data written by the
//! seed's app.py) and returns them unchanged.

pub mod embedded;
pub mod mongo;
pub mod reply;

use std::fmt;

use bson::oid::ObjectId;

use crate::orders::{Fields, ListQuery};

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

/// Why a store could not answer. Each is a 503 to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The operation did not finish before its deadline (it may still
    /// complete: a create that timed out may have been committed).
    Timeout,
    /// The store is unreachable or failing; the text is for the log only.
    Unavailable(String),
    /// The store is full (LMDB map size reached).
    Full,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Timeout => f.write_str("store operation timed out"),
            StoreError::Unavailable(why) => write!(f, "store unavailable: {why}"),
            StoreError::Full => f.write_str("store is full (raise map_size)"),
        }
    }
}

impl std::error::Error for StoreError {}

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
    /// Sets the given fields; the whole document after the update, or None
    /// when no document has this id.
    fn update(&self, id: &ObjectId, fields: Fields) -> Result<Option<Doc>, StoreError>;
    /// Removes the document; false when no document has this id.
    fn delete(&self, id: &ObjectId) -> Result<bool, StoreError>;
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
