//! `GET /orders` with bounded memory.
//!
//! The seed's bare `GET /orders` returns every order, so a response grows
//! with the store (a 40,000-order list is ~5 MB), and orders may be large
//! (up to `max_body_size` each). The list is read from the store in short
//! reads, each bounded both by [`CHUNK_DOCS`] documents and by the room
//! left in the current chunk of `buffer_limit` bytes (at least one document
//! per read), in `_id` order, resuming after the last id. A list that fits
//! in `buffer_limit` is answered as one response; a longer one is streamed
//! with chunked transfer encoding, one chunk of about `buffer_limit` bytes
//! at a time, each written before the next is read, and the connection
//! stays open after it. A streamed list is not one snapshot: an order
//! created or deleted while it streams may or may not appear, as with a
//! MongoDB cursor. A store failure after the head was sent aborts the
//! connection, so the client sees a truncated body, never a wrong one.
//!
//! A list answered in one piece carries a strong `ETag`, the tag of its
//! bytes, and its preconditions are evaluated against it (`304`, `412`);
//! a streamed list has no tag (its bytes are not known before they are
//! sent), so its preconditions see a representation without one. A HEAD
//! request's stream ends once its head is sent.

use bson::oid::ObjectId;

use super::error::ApiError;
use crate::orders::ListQuery;
use crate::proto::etag::{Current, EntityTag, Preconditions, Verdict};
use crate::proto::response::{ChunkSink, Reply};
use crate::store::Store;

/// Most documents read from the store at once.
pub const CHUNK_DOCS: usize = 1000;

/// How the list was answered.
#[derive(Debug)]
pub enum ListReply {
    /// Small enough: a normal response to send.
    Buffered(Reply),
    /// Streamed to the sink, complete.
    Streamed,
    /// The stream broke off after its head (a store or socket failure):
    /// the connection must be closed, leaving the body visibly incomplete.
    Aborted,
}

/// Answers a list query, streaming it once the body passes `buffer_limit`.
pub fn respond(
    store: &dyn Store,
    query: &ListQuery,
    pre: &Preconditions,
    buffer_limit: usize,
    sink: &mut dyn ChunkSink,
) -> Result<ListReply, ApiError> {
    let want = query.limit.unwrap_or(usize::MAX);
    let mut body = b"{\"orders\":[".to_vec();
    let (mut count, mut after, mut streaming) = (0usize, query.after, false);
    loop {
        let read = ListQuery {
            after,
            limit: Some(CHUNK_DOCS.min(want - count)),
        };
        let room = buffer_limit.saturating_sub(body.len()).max(1);
        let page = match store.list(&read, room) {
            Ok(page) => page,
            Err(e) if streaming => {
                let cause = crate::logging::chain(&e);
                crate::log_repeated!(
                    log::Level::Warn,
                    "store error while streaming a list: {cause}"
                );
                return Ok(ListReply::Aborted);
            }
            Err(e) => return Err(e.into()),
        };
        for doc in &page.docs {
            if count > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&doc.0);
            count += 1;
        }
        // `next` is set when more documents follow this page.
        let more = page.next.is_some();
        if !more || count >= want {
            finish_body(
                &mut body,
                query.is_paged(),
                if more { page.next } else { None },
            );
            if !streaming {
                return buffered(body, pre);
            }
            return Ok(match sink.chunk(&body).and_then(|()| sink.finish()) {
                Ok(()) => ListReply::Streamed,
                Err(_) => ListReply::Aborted,
            });
        }
        after = page.next;
        if body.len() >= buffer_limit {
            if !streaming {
                match pre.for_read(Current::Untagged) {
                    Verdict::Proceed => {}
                    Verdict::NotModified => {
                        return Ok(ListReply::Buffered(Reply::not_modified(None)))
                    }
                    Verdict::Failed => return Err(ApiError::PreconditionFailed(None)),
                }
                if sink.start().is_err() {
                    return Ok(ListReply::Aborted);
                }
                if !sink.wants_body() {
                    return Ok(ListReply::Streamed);
                }
            }
            streaming = true;
            if sink.chunk(&body).is_err() {
                return Ok(ListReply::Aborted);
            }
            body.clear();
        }
    }
}

/// A list answered in one piece: tagged, its preconditions evaluated.
fn buffered(body: Vec<u8>, pre: &Preconditions) -> Result<ListReply, ApiError> {
    let tag = EntityTag::of(&body);
    Ok(ListReply::Buffered(
        match pre.for_read(Current::Tagged(tag)) {
            Verdict::Proceed => Reply::ok(body).revalidated(Some(tag)),
            Verdict::NotModified => Reply::not_modified(Some(tag)),
            Verdict::Failed => return Err(ApiError::PreconditionFailed(Some(tag))),
        },
    ))
}

/// `]`, `"next"` for a paged request, `}`.
fn finish_body(body: &mut Vec<u8>, paged: bool, next: Option<ObjectId>) {
    body.push(b']');
    if paged {
        match next {
            Some(id) => body.extend_from_slice(format!(",\"next\":\"{}\"", id.to_hex()).as_bytes()),
            None => body.extend_from_slice(b",\"next\":null"),
        }
    }
    body.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::Fields;
    use crate::store::{Doc, Outcome, Page, StoreError};
    use std::io;
    use std::sync::Mutex;

    /// A store of `n` documents with ids 1..=n, padded with `pad` bytes.
    struct Numbers(u32, Mutex<usize>, usize);

    fn id(i: u32) -> ObjectId {
        let mut b = [0u8; 12];
        b[8..].copy_from_slice(&i.to_be_bytes());
        ObjectId::from_bytes(b)
    }

    impl Store for Numbers {
        fn get(&self, _: &ObjectId) -> Result<Option<Doc>, StoreError> {
            unimplemented!()
        }
        fn list(&self, q: &ListQuery, max_bytes: usize) -> Result<Page, StoreError> {
            *self.1.lock().unwrap() += 1;
            let start = q
                .after
                .map(|a| u32::from_be_bytes(a.bytes()[8..].try_into().unwrap()))
                .unwrap_or(0)
                + 1;
            let limit = q.limit.unwrap() as u32;
            let mut end = (start + limit - 1).min(self.0);
            let (mut docs, mut bytes) = (Vec::new(), 0);
            for i in start..=end {
                let doc =
                    Doc(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(self.2)).into_bytes());
                bytes += doc.0.len();
                docs.push(doc);
                if bytes >= max_bytes {
                    end = i;
                    break;
                }
            }
            Ok(Page {
                docs,
                next: (end < self.0).then(|| id(end)),
            })
        }
        fn create(&self, _: Fields) -> Result<Doc, StoreError> {
            unimplemented!()
        }
        fn update(&self, _: &ObjectId, _: Fields, _: &Preconditions) -> Outcome<Doc> {
            unimplemented!()
        }
        fn delete(&self, _: &ObjectId, _: &Preconditions) -> Outcome<()> {
            unimplemented!()
        }
        fn ping(&self, _: std::time::Duration) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[derive(Default)]
    struct Sink {
        started: bool,
        chunks: Vec<Vec<u8>>,
        finished: bool,
    }

    impl ChunkSink for Sink {
        fn start(&mut self) -> io::Result<()> {
            self.started = true;
            Ok(())
        }
        fn chunk(&mut self, b: &[u8]) -> io::Result<()> {
            self.chunks.push(b.to_vec());
            Ok(())
        }
        fn finish(&mut self) -> io::Result<()> {
            self.finished = true;
            Ok(())
        }
        fn started(&self) -> bool {
            self.started
        }
    }

    fn parse(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn small_lists_are_buffered() {
        let store = Numbers(10, Mutex::new(0), 0);
        let mut sink = Sink::default();
        let r = respond(
            &store,
            &ListQuery::default(),
            &Preconditions::default(),
            1 << 20,
            &mut sink,
        )
        .unwrap();
        let ListReply::Buffered(reply) = r else {
            panic!("streamed")
        };
        assert_eq!(parse(&reply.body)["orders"].as_array().unwrap().len(), 10);
        assert!(!sink.started);
    }

    #[test]
    fn large_lists_stream_in_chunks_and_stay_valid_json() {
        let store = Numbers(3500, Mutex::new(0), 0);
        let mut sink = Sink::default();
        let r = respond(
            &store,
            &ListQuery::default(),
            &Preconditions::default(),
            4096,
            &mut sink,
        )
        .unwrap();
        assert!(matches!(r, ListReply::Streamed));
        assert!(sink.started && sink.finished);
        assert!(sink.chunks.len() >= 4, "{} chunks", sink.chunks.len());
        // The room left in a chunk bounds the documents' bytes; commas add one per document.
        assert!(
            sink.chunks.iter().all(|c| c.len() < 4096 * 11 / 10),
            "chunks bounded by bytes"
        );
        let whole: Vec<u8> = sink.chunks.concat();
        let v = parse(&whole);
        let orders = v["orders"].as_array().unwrap();
        assert_eq!(orders.len(), 3500);
        assert_eq!(orders[3499]["n"], 3500);
        assert!(v.get("next").is_none());
    }

    #[test]
    fn large_documents_are_read_and_sent_a_few_at_a_time() {
        // 300 documents of ~100 KB against a 256 KB buffer: no read and no
        // chunk holds more than about one buffer, whatever the count.
        let store = Numbers(300, Mutex::new(0), 100_000);
        let mut sink = Sink::default();
        let r = respond(
            &store,
            &ListQuery::default(),
            &Preconditions::default(),
            256 * 1024,
            &mut sink,
        )
        .unwrap();
        assert!(matches!(r, ListReply::Streamed));
        assert!(
            sink.chunks.iter().all(|c| c.len() <= 256 * 1024 + 100_100),
            "{:?}",
            sink.chunks.iter().map(Vec::len).max()
        );
        assert!(*store.1.lock().unwrap() >= 100, "many small reads");
        assert_eq!(
            parse(&sink.chunks.concat())["orders"]
                .as_array()
                .unwrap()
                .len(),
            300
        );
    }

    #[test]
    fn a_paged_stream_stops_at_the_limit_with_next() {
        let store = Numbers(5000, Mutex::new(0), 0);
        let mut sink = Sink::default();
        let q = ListQuery {
            limit: Some(2500),
            after: None,
        };
        respond(&store, &q, &Preconditions::default(), 4096, &mut sink).unwrap();
        let v = parse(&sink.chunks.concat());
        assert_eq!(v["orders"].as_array().unwrap().len(), 2500);
        assert_eq!(v["next"], id(2500).to_hex());
        // Exactly the rest: next is null.
        let mut sink = Sink::default();
        let q = ListQuery {
            limit: Some(2500),
            after: Some(id(2500)),
        };
        respond(&store, &q, &Preconditions::default(), 4096, &mut sink).unwrap();
        let v = parse(&sink.chunks.concat());
        assert_eq!(v["orders"].as_array().unwrap().len(), 2500);
        assert_eq!(v["next"], serde_json::Value::Null);
    }
}
