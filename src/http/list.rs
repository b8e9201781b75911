//! `GET /orders` with bounded memory.
//!
//! The seed's bare `GET /orders` returns every order, so a response grows
//! with the store (a 40,000-order list is ~5 MB). Building such a body per
//! request, for hundreds of requests in flight, held gigabytes. Instead the
//! list is read from the store in chunks of [`CHUNK_DOCS`] (each chunk its
//! own short read, in `_id` order, resuming after the last id): a list that
//! fits in `buffer_limit` bytes is answered normally (keep-alive), a larger
//! one is streamed with chunked transfer encoding and the connection closed
//! after it. A streamed list is not one snapshot: an order created or
//! deleted while it streams may or may not appear, as with a MongoDB cursor.
//! A store failure after the head was sent aborts the connection, so the
//! client sees a truncated body, never a wrong one.

use std::io;

use bson::oid::ObjectId;

use super::response::{ApiError, Reply};
use crate::orders::ListQuery;
use crate::store::Store;

/// Documents read from the store per chunk.
pub const CHUNK_DOCS: usize = 1000;

/// Where a streamed list goes (the connection's socket).
pub trait ChunkSink {
    /// Sends the response head (200, chunked, `Connection: close`).
    fn start(&mut self) -> io::Result<()>;
    /// Sends one chunk.
    fn chunk(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Sends the last chunk and closes the write side.
    fn finish(&mut self) -> io::Result<()>;
    /// Drops the connection (the body stays visibly incomplete).
    fn abort(&mut self);
}

/// How the list was answered.
#[derive(Debug)]
pub enum ListReply {
    /// Small enough: a normal response to send.
    Buffered(Reply),
    /// Already streamed to the sink (the connection is closing).
    Streamed,
}

/// Answers a list query, streaming it once the body passes `buffer_limit`.
pub fn respond(store: &dyn Store, query: &ListQuery, buffer_limit: usize, sink: &mut dyn ChunkSink) -> Result<ListReply, ApiError> {
    let want = query.limit.unwrap_or(usize::MAX);
    let mut body = b"{\"orders\":[".to_vec();
    let (mut count, mut after, mut streaming) = (0usize, query.after, false);
    loop {
        let page = match store.list(&ListQuery { after, limit: Some(CHUNK_DOCS.min(want - count)) }) {
            Ok(page) => page,
            Err(e) if streaming => {
                log::warn!("store error while streaming a list: {e}");
                sink.abort();
                return Ok(ListReply::Streamed);
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
            finish_body(&mut body, query.is_paged(), if more { page.next } else { None });
            if !streaming {
                return Ok(ListReply::Buffered(Reply::ok(body)));
            }
            let sent = sink.chunk(&body).and_then(|_| sink.finish());
            if sent.is_err() {
                sink.abort();
            }
            return Ok(ListReply::Streamed);
        }
        after = page.next;
        if !streaming && body.len() > buffer_limit {
            streaming = true;
            if sink.start().is_err() {
                sink.abort();
                return Ok(ListReply::Streamed);
            }
        }
        if streaming {
            if sink.chunk(&body).is_err() {
                sink.abort();
                return Ok(ListReply::Streamed);
            }
            body.clear();
        }
    }
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
    use crate::store::{Doc, Page, StoreError};
    use std::sync::Mutex;

    /// A store of `n` small documents with ids 1..=n.
    struct Numbers(u32, Mutex<usize>);

    fn id(i: u32) -> ObjectId {
        let mut b = [0u8; 12];
        b[8..].copy_from_slice(&i.to_be_bytes());
        ObjectId::from_bytes(b)
    }

    impl Store for Numbers {
        fn get(&self, _: &ObjectId) -> Result<Option<Doc>, StoreError> {
            unimplemented!()
        }
        fn list(&self, q: &ListQuery) -> Result<Page, StoreError> {
            *self.1.lock().unwrap() += 1;
            let start = q.after.map(|a| u32::from_be_bytes(a.bytes()[8..].try_into().unwrap())).unwrap_or(0) + 1;
            let limit = q.limit.unwrap() as u32;
            let end = (start + limit - 1).min(self.0);
            let docs = (start..=end).map(|i| Doc(format!("{{\"n\":{i}}}").into_bytes())).collect();
            Ok(Page { docs, next: (end < self.0).then(|| id(end)) })
        }
        fn create(&self, _: Fields) -> Result<Doc, StoreError> {
            unimplemented!()
        }
        fn update(&self, _: &ObjectId, _: Fields) -> Result<Option<Doc>, StoreError> {
            unimplemented!()
        }
        fn delete(&self, _: &ObjectId) -> Result<bool, StoreError> {
            unimplemented!()
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
        fn abort(&mut self) {}
    }

    fn parse(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn small_lists_are_buffered() {
        let store = Numbers(10, Mutex::new(0));
        let mut sink = Sink::default();
        let r = respond(&store, &ListQuery::default(), 1 << 20, &mut sink).unwrap();
        let ListReply::Buffered(reply) = r else { panic!("streamed") };
        assert_eq!(parse(&reply.body)["orders"].as_array().unwrap().len(), 10);
        assert!(!sink.started);
    }

    #[test]
    fn large_lists_stream_in_chunks_and_stay_valid_json() {
        let store = Numbers(3500, Mutex::new(0));
        let mut sink = Sink::default();
        let r = respond(&store, &ListQuery::default(), 4096, &mut sink).unwrap();
        assert!(matches!(r, ListReply::Streamed));
        assert!(sink.started && sink.finished);
        assert!(sink.chunks.len() >= 4, "{} chunks", sink.chunks.len());
        assert!(sink.chunks.iter().all(|c| c.len() < CHUNK_DOCS * 20), "bounded chunks");
        let whole: Vec<u8> = sink.chunks.concat();
        let v = parse(&whole);
        let orders = v["orders"].as_array().unwrap();
        assert_eq!(orders.len(), 3500);
        assert_eq!(orders[3499]["n"], 3500);
        assert!(v.get("next").is_none());
        assert_eq!(*store.1.lock().unwrap(), 4, "one store read per chunk");
    }

    #[test]
    fn a_paged_stream_stops_at_the_limit_with_next() {
        let store = Numbers(5000, Mutex::new(0));
        let mut sink = Sink::default();
        let q = ListQuery { limit: Some(2500), after: None };
        respond(&store, &q, 4096, &mut sink).unwrap();
        let v = parse(&sink.chunks.concat());
        assert_eq!(v["orders"].as_array().unwrap().len(), 2500);
        assert_eq!(v["next"], id(2500).to_hex());
        // Exactly the rest: next is null.
        let mut sink = Sink::default();
        let q = ListQuery { limit: Some(2500), after: Some(id(2500)) };
        respond(&store, &q, 4096, &mut sink).unwrap();
        let v = parse(&sink.chunks.concat());
        assert_eq!(v["orders"].as_array().unwrap().len(), 2500);
        assert_eq!(v["next"], serde_json::Value::Null);
    }
}
