//! A small, strict MongoDB wire-protocol server for tests: in memory, OP_MSG
//! only, answering the driver's legacy-hello handshake (without `helloOk`
//! and `topologyVersion`, so the driver keeps polling with isMaster) and the
//! commands orders-server's operations send: insert, find, getMore,
//! findAndModify, delete, killCursors, endSessions, ping. Anything else — another
//! command, or a filter/update shape these operations never send — is an
//! error reply and is recorded, so a change in what the driver sends shows
//! up as a failing test. It can be stopped, restarted on the same port and
//! slowed down.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{doc, Bson, Document};

const OP_MSG: i32 = 2013;
const CHECKSUM_PRESENT: u32 = 1;
const MAX_MESSAGE: usize = 48_000_000;

#[derive(Default)]
struct Inner {
    docs: Mutex<BTreeMap<[u8; 12], Document>>,
    cursors: Mutex<HashMap<i64, VecDeque<Document>>>,
    next_cursor: AtomicI64,
    next_request: AtomicI32,
    delay_ms: AtomicU64,
    running: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
    /// Every command name received, in order.
    commands: Mutex<Vec<String>>,
    /// What was refused as unknown.
    unknown: Mutex<Vec<String>>,
}

/// The test server. Stops when dropped.
pub struct MockMongo {
    inner: Arc<Inner>,
    pub port: u16,
    accept: Option<JoinHandle<()>>,
}

impl MockMongo {
    /// Starts on a free loopback port.
    pub fn start() -> MockMongo {
        MockMongo::serving(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    /// A port nothing listens on yet; `start_on` it later (start-up with the database down).
    pub fn reserve_port() -> u16 {
        crate::secantus::reserve_port()
    }

    /// Starts on a given port.
    pub fn start_on(port: u16) -> MockMongo {
        MockMongo::serving(TcpListener::bind(("127.0.0.1", port)).unwrap())
    }

    /// Serves on `listener`.
    fn serving(listener: TcpListener) -> MockMongo {
        let port = listener.local_addr().unwrap().port();
        let mut m = MockMongo {
            inner: Arc::new(Inner::default()),
            port,
            accept: None,
        };
        m.inner.next_cursor.store(1000, Ordering::SeqCst);
        m.serve(listener);
        m
    }

    /// A URI for this server: database `db`, fast heartbeats.
    pub fn uri(&self, db: &str) -> String {
        format!(
            "mongodb://127.0.0.1:{}/{db}?heartbeatFrequencyMS=500&serverSelectionTimeoutMS=1000",
            self.port
        )
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// Closes the listener and every connection (the database goes down). Data is kept.
    pub fn stop(&mut self) {
        self.inner.running.store(false, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            t.join().unwrap();
        }
        for c in self.inner.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Listens again on the same port, with the same data.
    pub fn restart(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        self.serve(listener);
    }

    /// Delays every reply (a slow database).
    pub fn set_delay(&self, d: Duration) {
        self.inner
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Commands refused as unknown (should stay empty).
    pub fn unknown(&self) -> Vec<String> {
        self.inner.unknown.lock().unwrap().clone()
    }

    /// Names of all commands received.
    pub fn commands(&self) -> Vec<String> {
        self.inner.commands.lock().unwrap().clone()
    }

    /// Stores a document directly (data written by another application).
    pub fn insert_raw(&self, d: Document) {
        let id = d.get_object_id("_id").expect("an ObjectId _id");
        self.inner.docs.lock().unwrap().insert(id.bytes(), d);
    }

    /// Number of stored documents.
    pub fn count(&self) -> usize {
        self.inner.docs.lock().unwrap().len()
    }

    fn serve(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        self.inner.running.store(true, Ordering::SeqCst);
        let inner = self.inner.clone();
        self.accept = Some(std::thread::spawn(move || {
            while inner.running.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        inner
                            .conns
                            .lock()
                            .unwrap()
                            .push(stream.try_clone().unwrap());
                        let inner = inner.clone();
                        std::thread::spawn(move || {
                            let _ = connection(&inner, stream);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
        }));
    }
}

impl Drop for MockMongo {
    fn drop(&mut self) {
        self.stop();
    }
}

fn connection(inner: &Inner, mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    loop {
        let mut header = [0u8; 16];
        stream.read_exact(&mut header)?;
        let len = i32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
        let request_id = i32::from_le_bytes(header[4..8].try_into().unwrap());
        let op = i32::from_le_bytes(header[12..16].try_into().unwrap());
        if !(16..=MAX_MESSAGE).contains(&len) {
            return Err(io::Error::other("bad message length"));
        }
        let mut body = vec![0u8; len - 16];
        stream.read_exact(&mut body)?;
        if op != OP_MSG {
            inner.unknown.lock().unwrap().push(format!("opcode {op}"));
            return Err(io::Error::other("only OP_MSG is spoken here"));
        }
        let command = parse_op_msg(&body)?;
        let delay = inner.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        if !inner.running.load(Ordering::SeqCst) {
            return Ok(());
        }
        let reply = handle(inner, command);
        let mut payload = Vec::new();
        payload.extend_from_slice(&0u32.to_le_bytes());
        payload.push(0);
        reply.to_writer(&mut payload).unwrap();
        let total = (16 + payload.len()) as i32;
        let mut out = Vec::with_capacity(total as usize);
        out.extend_from_slice(&total.to_le_bytes());
        out.extend_from_slice(
            &inner
                .next_request
                .fetch_add(1, Ordering::SeqCst)
                .to_le_bytes(),
        );
        out.extend_from_slice(&request_id.to_le_bytes());
        out.extend_from_slice(&OP_MSG.to_le_bytes());
        out.extend_from_slice(&payload);
        stream.write_all(&out)?;
    }
}

/// The body document, with document sequences (kind 1) merged in as arrays.
fn parse_op_msg(body: &[u8]) -> io::Result<Document> {
    let flags = u32::from_le_bytes(body[0..4].try_into().unwrap());
    let end = if flags & CHECKSUM_PRESENT != 0 {
        body.len() - 4
    } else {
        body.len()
    };
    let mut pos = 4;
    let mut command: Option<Document> = None;
    let mut sequences: Vec<(String, Vec<Document>)> = Vec::new();
    while pos < end {
        let kind = body[pos];
        pos += 1;
        match kind {
            0 => {
                let size = i32::from_le_bytes(body[pos..pos + 4].try_into().unwrap()) as usize;
                command =
                    Some(Document::from_reader(&body[pos..pos + size]).map_err(io::Error::other)?);
                pos += size;
            }
            1 => {
                let size = i32::from_le_bytes(body[pos..pos + 4].try_into().unwrap()) as usize;
                let section_end = pos + size;
                let mut p = pos + 4;
                let nul = body[p..].iter().position(|b| *b == 0).unwrap();
                let ident = String::from_utf8_lossy(&body[p..p + nul]).into_owned();
                p += nul + 1;
                let mut docs = Vec::new();
                while p < section_end {
                    let dsize = i32::from_le_bytes(body[p..p + 4].try_into().unwrap()) as usize;
                    docs.push(
                        Document::from_reader(&body[p..p + dsize]).map_err(io::Error::other)?,
                    );
                    p += dsize;
                }
                sequences.push((ident, docs));
                pos = section_end;
            }
            k => return Err(io::Error::other(format!("unknown section kind {k}"))),
        }
    }
    let mut command = command.ok_or_else(|| io::Error::other("no body section"))?;
    for (ident, docs) in sequences {
        command.insert(
            ident,
            docs.into_iter().map(Bson::Document).collect::<Vec<_>>(),
        );
    }
    Ok(command)
}

fn error(inner: &Inner, what: String) -> Document {
    inner.unknown.lock().unwrap().push(what.clone());
    doc! { "ok": 0.0, "errmsg": what, "code": 59, "codeName": "CommandNotFound" }
}

fn handle(inner: &Inner, command: Document) -> Document {
    let name = command.keys().next().cloned().unwrap_or_default();
    inner.commands.lock().unwrap().push(name.clone());
    match name.as_str() {
        "isMaster" | "ismaster" => doc! {
            "ismaster": true,
            "maxBsonObjectSize": 16_777_216,
            "maxMessageSizeBytes": MAX_MESSAGE as i32,
            "maxWriteBatchSize": 100_000,
            "localTime": bson::DateTime::now(),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": 1,
            "minWireVersion": 0,
            "maxWireVersion": 17,
            "readOnly": false,
            "ok": 1.0,
        },
        "insert" => insert(inner, &command),
        "find" => find(inner, &command),
        "getMore" => get_more(inner, &command),
        "killCursors" => {
            let ids = command.get_array("cursors").cloned().unwrap_or_default();
            let mut cursors = inner.cursors.lock().unwrap();
            for id in &ids {
                if let Some(id) = id.as_i64() {
                    cursors.remove(&id);
                }
            }
            doc! { "cursorsKilled": ids, "cursorsNotFound": [], "cursorsAlive": [], "cursorsUnknown": [], "ok": 1.0 }
        }
        "findAndModify" => find_and_modify(inner, &command),
        "delete" => delete(inner, &command),
        "endSessions" => doc! { "ok": 1.0 },
        "ping" => doc! { "ok": 1.0 },
        other => error(inner, format!("unknown command {other}")),
    }
}

fn id_filter(filter: &Document) -> Option<ObjectId> {
    if filter.len() == 1 {
        filter.get_object_id("_id").ok()
    } else {
        None
    }
}

/// A write's filter: `{_id}`, or the compare-and-set of a conditional
/// write, `{_id, $expr: {$eq: ["$$ROOT", {$literal: DOC}]}}`: the id, and
/// the whole document it must still be.
fn write_filter(filter: &Document) -> Option<(ObjectId, Option<Document>)> {
    if let Some(id) = id_filter(filter) {
        return Some((id, None));
    }
    if filter.len() != 2 {
        return None;
    }
    let id = filter.get_object_id("_id").ok()?;
    let eq = filter.get_document("$expr").ok()?.get_array("$eq").ok()?;
    match eq.as_slice() {
        [Bson::String(root), Bson::Document(literal)] if root == "$$ROOT" && literal.len() == 1 => {
            Some((id, Some(literal.get_document("$literal").ok()?.clone())))
        }
        _ => None,
    }
}

fn insert(inner: &Inner, c: &Document) -> Document {
    let Ok(docs) = c.get_array("documents") else {
        return error(inner, "insert without documents".into());
    };
    let mut store = inner.docs.lock().unwrap();
    let mut n = 0;
    let mut write_errors = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let Some(d) = d.as_document() else {
            return error(inner, "insert of a non-document".into());
        };
        let Ok(id) = d.get_object_id("_id") else {
            return error(inner, "insert without an ObjectId _id".into());
        };
        if store.contains_key(&id.bytes()) {
            write_errors.push(
                doc! { "index": i as i32, "code": 11000, "errmsg": "E11000 duplicate key error" },
            );
            continue;
        }
        store.insert(id.bytes(), d.clone());
        n += 1;
    }
    let mut reply = doc! { "n": n, "ok": 1.0 };
    if !write_errors.is_empty() {
        reply.insert("writeErrors", write_errors);
    }
    reply
}

fn find(inner: &Inner, c: &Document) -> Document {
    let filter = c.get_document("filter").cloned().unwrap_or_default();
    if let Ok(sort) = c.get_document("sort") {
        if sort != &doc! { "_id": 1 } {
            return error(inner, format!("find with sort {sort}"));
        }
    }
    let store = inner.docs.lock().unwrap();
    let matched: Vec<Document> = if filter.is_empty() {
        store.values().cloned().collect()
    } else if let Some(id) = id_filter(&filter) {
        store.get(&id.bytes()).cloned().into_iter().collect()
    } else if let Some(after) = filter
        .get_document("_id")
        .ok()
        .and_then(|f| f.get_object_id("$gt").ok())
    {
        store
            .range((
                std::ops::Bound::Excluded(after.bytes()),
                std::ops::Bound::Unbounded,
            ))
            .map(|(_, d)| d.clone())
            .collect()
    } else {
        return error(inner, format!("find with filter {filter}"));
    };
    drop(store);
    let limit = number(c.get("limit"))
        .map(|l| l.unsigned_abs() as usize)
        .filter(|l| *l > 0);
    let mut matched: VecDeque<Document> = matched
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    let single =
        c.get_bool("singleBatch").unwrap_or(false) || number(c.get("limit")).is_some_and(|l| l < 0);
    let batch = number(c.get("batchSize"))
        .map(|b| b as usize)
        .unwrap_or(101);
    let first: Vec<Document> = matched.drain(..batch.min(matched.len())).collect();
    let ns = format!(
        "{}.{}",
        c.get_str("$db").unwrap_or("test"),
        c.get_str("find").unwrap_or("orders")
    );
    let id = if matched.is_empty() || single {
        0
    } else {
        let id = inner.next_cursor.fetch_add(1, Ordering::SeqCst);
        inner.cursors.lock().unwrap().insert(id, matched);
        id
    };
    doc! { "cursor": { "firstBatch": first, "id": id, "ns": ns }, "ok": 1.0 }
}

fn get_more(inner: &Inner, c: &Document) -> Document {
    let Some(id) = number(c.get("getMore")) else {
        return error(inner, "getMore without a cursor id".into());
    };
    let batch = number(c.get("batchSize"))
        .map(|b| b as usize)
        .unwrap_or(usize::MAX);
    let mut cursors = inner.cursors.lock().unwrap();
    let Some(rest) = cursors.get_mut(&id) else {
        return doc! { "ok": 0.0, "errmsg": format!("cursor id {id} not found"), "code": 43, "codeName": "CursorNotFound" };
    };
    let next: Vec<Document> = rest.drain(..batch.min(rest.len())).collect();
    let out_id = if rest.is_empty() {
        cursors.remove(&id);
        0
    } else {
        id
    };
    let ns = format!(
        "{}.{}",
        c.get_str("$db").unwrap_or("test"),
        c.get_str("collection").unwrap_or("orders")
    );
    doc! { "cursor": { "nextBatch": next, "id": out_id, "ns": ns }, "ok": 1.0 }
}

fn find_and_modify(inner: &Inner, c: &Document) -> Document {
    let query = c.get_document("query").cloned().unwrap_or_default();
    let Some((id, expected)) = write_filter(&query) else {
        return error(inner, format!("findAndModify with query {query}"));
    };
    let update = c.get_document("update").cloned().unwrap_or_default();
    let (Ok(set), 1) = (update.get_document("$set"), update.len()) else {
        return error(inner, format!("findAndModify with update {update}"));
    };
    let new = c.get_bool("new").unwrap_or(false);
    let mut store = inner.docs.lock().unwrap();
    let found = store.get_mut(&id.bytes());
    let Some(d) = found.filter(|d| expected.as_ref().is_none_or(|e| *d == e)) else {
        return doc! { "lastErrorObject": { "n": 0, "updatedExisting": false }, "value": Bson::Null, "ok": 1.0 };
    };
    let before = d.clone();
    for (k, v) in set {
        d.insert(k.clone(), v.clone());
    }
    let value = if new { d.clone() } else { before };
    doc! { "lastErrorObject": { "n": 1, "updatedExisting": true }, "value": value, "ok": 1.0 }
}

fn delete(inner: &Inner, c: &Document) -> Document {
    let Ok(deletes) = c.get_array("deletes") else {
        return error(inner, "delete without deletes".into());
    };
    let mut n = 0;
    for d in deletes {
        let Some(q) = d.as_document().and_then(|d| d.get_document("q").ok()) else {
            return error(inner, "delete without q".into());
        };
        let Some((id, expected)) = write_filter(q) else {
            return error(inner, format!("delete with query {q}"));
        };
        let mut store = inner.docs.lock().unwrap();
        let matches = store
            .get(&id.bytes())
            .is_some_and(|d| expected.as_ref().is_none_or(|e| d == e));
        if matches && store.remove(&id.bytes()).is_some() {
            n += 1;
        }
    }
    doc! { "n": n, "ok": 1.0 }
}

fn number(b: Option<&Bson>) -> Option<i64> {
    match b? {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(f) => Some(*f as i64),
        _ => None,
    }
}
