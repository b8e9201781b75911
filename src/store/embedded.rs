//! The embedded store (default): LMDB through heed, shared by every worker.
//!
//! On disk, `data_dir` holds LMDB's `data.mdb` and `lock.mdb`. Two named
//! databases: `orders` maps the 12 bytes of an ObjectId (big-endian, so key
//! order is `_id` order) to the document's JSON; `meta` holds the id
//! high-water mark (`id_high_water`), so ids never go backwards or repeat,
//! even after the newest order is deleted.
//!
//! Reads run in the calling coroutine: a read transaction (no thread-local
//! storage, since may moves coroutines between threads), copied out and
//! closed before any yield. Writes go to one writer thread per worker, which
//! takes the first queued operation, drains what else is queued, applies all
//! in one transaction (each in a nested transaction, so one failure is
//! isolated), commits once with fsync, then hands every result back in one
//! batch (`reply`), which wakes each waiting coroutine (group commit). Ids are assigned inside the transaction,
//! strictly above the high-water mark: key order is commit order across all
//! workers.

use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use bson::oid::ObjectId;
use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions, MdbError, RwTxn, WithoutTls};
use serde_json::Value;

use super::reply::{Courier, Replies, ReplyTo};
use super::{render_new, tag_of, Doc, Outcome, Page, Store, StoreError, Written};
use crate::orders::{Fields, ListQuery};
use crate::proto::etag::Preconditions;

/// Most write operations applied in one transaction.
const MAX_BATCH: usize = 1024;
/// LMDB reader slots (shared by all processes on the environment).
const MAX_READERS: u32 = 4096;
/// Free space under which a filesystem counts as full (a failed commit's
/// EIO is then a short write, not damage).
const FULL_DISK_BYTES: u64 = 1024 * 1024;
/// Key of the id high-water mark in `meta`.
const HIGH_WATER_KEY: &[u8] = b"id_high_water";

type Db = Database<'static, Bytes, Bytes>;

/// A write, as sent to the writer thread.
enum WriteKind {
    Create(Fields),
    Update(ObjectId, Fields, Preconditions),
    Delete(ObjectId, Preconditions),
}

/// What a write produced.
enum WriteResult {
    Created(Doc),
    Updated(Written<Doc>),
    Deleted(Written<()>),
}

struct WriteOp {
    kind: WriteKind,
    reply: ReplyTo<WriteResult>,
}

/// Counters of the writer, for the log and the benchmarks.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Write operations applied.
    pub ops: AtomicU64,
    /// Transactions committed.
    pub commits: AtomicU64,
}

/// The LMDB-backed store of one worker process.
pub struct Embedded {
    env: &'static Env<WithoutTls>,
    orders: Db,
    meta: Db,
    /// Set by the writer once a write found the file damaged.
    damaged: Arc<std::sync::Mutex<Option<StoreError>>>,
    writer: std_mpsc::Sender<WriteOp>,
    replies: Replies<WriteResult>,
    stats: Arc<WriterStats>,
}

impl Embedded {
    /// Opens (creating if needed) the environment in `dir` and starts the
    /// writer thread. Call once per process, after fork.
    pub fn open(dir: &Path, map_size: usize, timeout: Duration) -> Result<Embedded, StoreError> {
        // SAFETY: the environment is opened once per process, after fork, and
        // its files are only modified through LMDB (multi-process locking).
        let env = unsafe { env_options(map_size).open(dir) }.map_err(store_error)?;
        // The environment lives as long as the worker process: leaking it
        // gives the 'static lifetime heed's database handles need.
        let env: &'static Env<WithoutTls> = Box::leak(Box::new(env));
        let cleared = env.clear_stale_readers().map_err(store_error)?;
        if cleared > 0 {
            log::info!("store: cleared {cleared} stale LMDB reader slots");
        }
        let wtxn = env.write_txn().map_err(store_error)?;
        let (orders, meta) = env
            .create_databases_and_commit(wtxn, |opener, wtxn| -> Result<_, heed::Error> {
                let orders: Db = opener.create_database(wtxn, Some("orders"))?;
                let meta: Db = opener.create_database(wtxn, Some("meta"))?;
                Ok(heed::CommitOrAbort::<_, ()>::Commit((orders, meta)))
            })
            .map_err(store_error)?
            .unwrap_commit();
        let (tx, rx) = std_mpsc::channel();
        let stats = Arc::new(WriterStats::default());
        let (replies, courier) = Replies::new(timeout);
        let damaged = Arc::new(std::sync::Mutex::new(None));
        let writer = Writer {
            env,
            orders,
            meta,
            stats: stats.clone(),
            courier,
            damaged: damaged.clone(),
        };
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(StoreError::unavailable)?;
        Ok(Embedded {
            env,
            orders,
            meta,
            damaged,
            writer: tx,
            replies,
            stats,
        })
    }

    /// Hands a write to the writer thread and waits for its commit (or
    /// the store's deadline).
    fn write(&self, kind: WriteKind) -> Result<WriteResult, StoreError> {
        let (reply, answer) = self.replies.call();
        self.writer
            .send(WriteOp { kind, reply })
            .map_err(|_| StoreError::unavailable_because("writer thread stopped"))?;
        answer.wait()
    }
}

impl Store for Embedded {
    fn get(&self, id: &ObjectId) -> Result<Option<Doc>, StoreError> {
        let rtxn = self.env.read_txn().map_err(store_error)?;
        let doc = self.orders.get(&rtxn, &id.bytes()).map_err(store_error)?;
        Ok(doc.map(|bytes| Doc(bytes.to_vec())))
    }

    fn list(&self, query: &ListQuery, max_bytes: usize) -> Result<Page, StoreError> {
        let rtxn = self.env.read_txn().map_err(store_error)?;
        let after = query.after.map(|id| id.bytes());
        let lower = match &after {
            Some(key) => Bound::Excluded(&key[..]),
            None => Bound::Unbounded,
        };
        let range = (lower, Bound::Unbounded);
        let mut page = Page::default();
        let limit = query.limit.unwrap_or(usize::MAX);
        let mut last_key: Option<[u8; 12]> = None;
        let mut bytes = 0;
        for item in self.orders.range(&rtxn, &range).map_err(store_error)? {
            let (key, value) = item.map_err(store_error)?;
            if page.docs.len() == limit || bytes >= max_bytes {
                // One document beyond the page: more follow.
                page.next = last_key.map(ObjectId::from_bytes);
                break;
            }
            last_key = key.try_into().ok();
            bytes += value.len();
            page.docs.push(Doc(value.to_vec()));
        }
        Ok(page)
    }

    fn create(&self, fields: Fields) -> Result<Doc, StoreError> {
        match self.write(WriteKind::Create(fields))? {
            WriteResult::Created(doc) => Ok(doc),
            _ => unreachable!("the writer answers a create with Created"),
        }
    }

    fn update(&self, id: &ObjectId, fields: Fields, pre: &Preconditions) -> Outcome<Doc> {
        match self.write(WriteKind::Update(*id, fields, pre.clone()))? {
            WriteResult::Updated(written) => Ok(written),
            _ => unreachable!("the writer answers an update with Updated"),
        }
    }

    fn delete(&self, id: &ObjectId, pre: &Preconditions) -> Outcome<()> {
        match self.write(WriteKind::Delete(*id, pre.clone()))? {
            WriteResult::Deleted(written) => Ok(written),
            _ => unreachable!("the writer answers a delete with Deleted"),
        }
    }

    /// What requests need: no write found the file damaged, and a read of
    /// data pages works (the newest order and the id high-water mark: a
    /// read transaction alone touches only the meta pages, which survive
    /// damage further in the file).
    fn ping(&self, _timeout: std::time::Duration) -> Result<(), StoreError> {
        if let Some(e) = self
            .damaged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Err(e);
        }
        read_data_pages(self.env, self.orders, self.meta)
    }

    /// Two reads in this process: as cheap as a GET.
    fn ping_is_cheap(&self) -> bool {
        true
    }

    fn stats(&self) -> Option<String> {
        let ops = self.stats.ops.load(Ordering::Relaxed);
        let commits = self.stats.commits.load(Ordering::Relaxed);
        let mean = if commits > 0 {
            ops as f64 / commits as f64
        } else {
            0.0
        };
        Some(format!(
            "{ops} writes in {commits} commits (mean batch {mean:.1})"
        ))
    }
}

/// How every process opens the environment: read transactions without
/// thread-local storage (may moves coroutines between threads), and the
/// same limits whoever opens it.
fn env_options(map_size: usize) -> EnvOpenOptions<WithoutTls> {
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options
        .map_size(map_size)
        .max_dbs(4)
        .max_readers(MAX_READERS);
    options
}

/// Why a backup could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The source is damaged.
    #[error(transparent)]
    Damaged(#[from] super::datafile::DamagedStore),
    /// There is no store to copy.
    #[error("no store in {}", .0.display())]
    NoStore(std::path::PathBuf),
    /// The destination already holds a store.
    #[error("{} already holds a store: choose a new or empty directory", .0.display())]
    DestinationInUse(std::path::PathBuf),
    /// Creating the destination, or copying, failed.
    #[error("backup to {} failed", .0.display())]
    Copy(std::path::PathBuf, #[source] std::io::Error),
    /// LMDB refused.
    #[error("backup of {} failed", .0.display())]
    Lmdb(std::path::PathBuf, #[source] heed::Error),
}

/// Copies the store in `dir` into `dest` (compacted, one consistent read
/// transaction, while servers go on writing); returns the copy's size.
/// LMDB is multi-process: this opens the environment beside the workers.
pub fn backup(dir: &Path, map_size: usize, dest: &Path) -> Result<u64, BackupError> {
    super::datafile::check(dir)?;
    let source = dir.join(super::datafile::DATA_FILE);
    if !source.exists() {
        return Err(BackupError::NoStore(dir.to_path_buf()));
    }
    let target = dest.join(super::datafile::DATA_FILE);
    if target.exists() {
        return Err(BackupError::DestinationInUse(dest.to_path_buf()));
    }
    std::fs::create_dir_all(dest).map_err(|e| BackupError::Copy(dest.to_path_buf(), e))?;
    // SAFETY: opened once in this process, which only reads through it.
    let env = unsafe { env_options(map_size).open(dir) }
        .map_err(|e| BackupError::Lmdb(dir.to_path_buf(), e))?;
    let file = env
        .copy_to_path(&target, heed::CompactionOption::Enabled)
        .map_err(|e| BackupError::Lmdb(dir.to_path_buf(), e))?;
    file.sync_all()
        .map_err(|e| BackupError::Copy(target.clone(), e))?;
    file.metadata()
        .map(|m| m.len())
        .map_err(|e| BackupError::Copy(target, e))
}

/// The writer thread's state.
struct Writer {
    env: &'static Env<WithoutTls>,
    orders: Db,
    meta: Db,
    stats: Arc<WriterStats>,
    courier: Courier<WriteResult>,
    /// Set once a write found the file damaged: no later write touches it
    /// (shared with the store's readiness check).
    damaged: Arc<std::sync::Mutex<Option<StoreError>>>,
}

impl Writer {
    /// Group commit loop: runs until every sender is gone.
    fn run(self, rx: std_mpsc::Receiver<WriteOp>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let damaged = self
                .damaged
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let results: Vec<_> = match damaged {
                Some(e) => batch.iter().map(|_| Err(e.clone())).collect(),
                None => self.apply(&mut batch),
            };
            let found = results.iter().find_map(|r| {
                r.as_ref()
                    .err()
                    .filter(|e| matches!(e, StoreError::Damaged(_)))
            });
            if let Some(e) = found {
                *self.damaged.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.clone());
            }
            self.courier
                .deliver(batch.into_iter().map(|op| op.reply).zip(results).collect());
        }
    }

    /// Applies a batch in one transaction; one result per operation.
    fn apply(&self, batch: &mut [WriteOp]) -> Vec<Result<WriteResult, StoreError>> {
        let n = batch.len();
        let started = std::time::Instant::now();
        let fail_all = |e: StoreError| (0..n).map(|_| Err(e.clone())).collect();
        let mut wtxn = match self.env.write_txn() {
            Ok(t) => t,
            Err(e) => return fail_all(store_error(e)),
        };
        let mut high_water = match self.high_water(&wtxn) {
            Ok(h) => h,
            Err(e) => return fail_all(e),
        };
        let start_high_water = high_water;
        let mut results = Vec::with_capacity(batch.len());
        for op in batch.iter_mut() {
            results.push(self.apply_one(&mut wtxn, &mut op.kind, &mut high_water));
        }
        if high_water != start_high_water {
            if let Err(e) = self
                .meta
                .put(&mut wtxn, HIGH_WATER_KEY, &high_water.bytes())
            {
                return fail_all(store_error(e));
            }
        }
        if let Err(e) = wtxn.commit() {
            crate::log_repeated!(log::Level::Error, "store: commit failed: {e}");
            let check = || read_data_pages(self.env, self.orders, self.meta);
            return fail_all(commit_error(e, self.env.path(), check));
        }
        self.stats
            .ops
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        crate::metrics::commit(n, started.elapsed());
        results
    }

    /// One operation in a nested transaction, so a failure leaves the rest
    /// of the batch intact.
    fn apply_one(
        &self,
        parent: &mut RwTxn<'static>,
        kind: &mut WriteKind,
        high_water: &mut ObjectId,
    ) -> Result<WriteResult, StoreError> {
        let mut txn = self.env.nested_write_txn(parent).map_err(store_error)?;
        let result = match kind {
            WriteKind::Create(fields) => {
                let id = next_id(*high_water);
                let doc = render_new(&id, fields);
                self.orders
                    .put(&mut txn, &id.bytes(), &doc.0)
                    .map_err(store_error)?;
                *high_water = id;
                WriteResult::Created(doc)
            }
            WriteKind::Update(id, fields, pre) => {
                let key = id.bytes();
                let old = self.orders.get(&txn, &key).map_err(store_error)?;
                // Compared inside the write transaction: no other write
                // can come between the comparison and this one.
                let current = old.map(tag_of);
                if !pre.allow_write(current) {
                    return Ok(WriteResult::Updated(Written::PreconditionFailed(current)));
                }
                let Some(old) = old else {
                    return Ok(WriteResult::Updated(Written::NotFound));
                };
                let doc = apply_patch(old, fields)?;
                self.orders
                    .put(&mut txn, &key, &doc.0)
                    .map_err(store_error)?;
                WriteResult::Updated(Written::Done(doc))
            }
            WriteKind::Delete(id, pre) => {
                let key = id.bytes();
                if !pre.is_empty() {
                    let current = self
                        .orders
                        .get(&txn, &key)
                        .map_err(store_error)?
                        .map(tag_of);
                    if !pre.allow_write(current) {
                        return Ok(WriteResult::Deleted(Written::PreconditionFailed(current)));
                    }
                }
                match self.orders.delete(&mut txn, &key).map_err(store_error)? {
                    true => WriteResult::Deleted(Written::Done(())),
                    false => WriteResult::Deleted(Written::NotFound),
                }
            }
        };
        txn.commit().map_err(store_error)?;
        Ok(result)
    }

    fn high_water(&self, txn: &RwTxn<'static>) -> Result<ObjectId, StoreError> {
        match self.meta.get(txn, HIGH_WATER_KEY).map_err(store_error)? {
            Some(bytes) => {
                let bytes: [u8; 12] = bytes
                    .try_into()
                    .map_err(|_| StoreError::unavailable_because("corrupt id high-water mark"))?;
                Ok(ObjectId::from_bytes(bytes))
            }
            None => Ok(ObjectId::from_bytes([0; 12])),
        }
    }
}

/// A fresh ObjectId, or `high_water + 1` when the fresh one would not sort
/// after it (same second on another process, or a clock that went back).
fn next_id(high_water: ObjectId) -> ObjectId {
    let fresh = ObjectId::new();
    if fresh > high_water {
        return fresh;
    }
    let n = u128::from_be_bytes(pad16(high_water.bytes())) + 1;
    let bytes = n.to_be_bytes();
    let mut id = [0u8; 12];
    id.copy_from_slice(&bytes[4..]);
    ObjectId::from_bytes(id)
}

fn pad16(b: [u8; 12]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[4..].copy_from_slice(&b);
    out
}

/// Sets `fields` on a stored document, keeping every other field as stored.
fn apply_patch(stored: &[u8], fields: &mut Fields) -> Result<Doc, StoreError> {
    let mut doc: serde_json::Map<String, Value> =
        serde_json::from_slice(stored).map_err(StoreError::unavailable)?;
    for (k, v) in std::mem::take(fields) {
        doc.insert(k, v);
    }
    Ok(Doc(
        serde_json::to_vec(&doc).expect("a JSON map always serializes")
    ))
}

/// Every LMDB error of the embedded store passes here. An environment that
/// cannot be used any more is `Damaged`: answering from damaged pages, or
/// writing over them, could lose or garble acknowledged orders, so the
/// writer stops writing and the worker ends (`worker`); its replacements
/// check the file before they open it. A full map is `Full`; the rest
/// (a full disk among them: it clears once space is freed, and reads go
/// on) `Unavailable`.
fn store_error(e: heed::Error) -> StoreError {
    match e {
        e if is_corruption(&e) => StoreError::damaged(e),
        heed::Error::Mdb(MdbError::MapFull) => StoreError::Full,
        other => StoreError::unavailable(other),
    }
}

/// What requests need of the file: a read transaction, and reads of data
/// pages (the newest order and the id high-water mark; a transaction
/// alone touches only the meta pages, which survive damage further in).
fn read_data_pages(env: &Env<WithoutTls>, orders: Db, meta: Db) -> Result<(), StoreError> {
    let rtxn = env.read_txn().map_err(store_error)?;
    orders.last(&rtxn).map_err(store_error)?;
    meta.get(&rtxn, HIGH_WATER_KEY).map_err(store_error)?;
    Ok(())
}

/// A failed commit's error. LMDB reports any short write as EIO: a full
/// disk (a tmpfs that fills up shows it), a quota, a file-size limit, a
/// passing device error, or an I/O error that damaged the file. So EIO is
/// `Damaged` only when `check` (a fresh read of data pages) then fails as
/// damage; otherwise `Unavailable` (a 503; it may clear by itself).
fn commit_error(
    e: heed::Error,
    dir: &Path,
    check: impl FnOnce() -> Result<(), StoreError>,
) -> StoreError {
    if !matches!(&e, heed::Error::Io(io) if io.raw_os_error() == Some(libc::EIO)) {
        return store_error(e);
    }
    if disk_full(dir) {
        return StoreError::unavailable(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!("the disk of {} is full (LMDB: {e})", dir.display()),
        ));
    }
    match check() {
        Err(damaged @ StoreError::Damaged(_)) => damaged,
        _ => StoreError::unavailable(e),
    }
}

/// Whether the filesystem of `dir` has less than [`FULL_DISK_BYTES`] free.
fn disk_full(dir: &Path) -> bool {
    nix::sys::statvfs::statvfs(dir)
        .is_ok_and(|s| s.blocks_available().saturating_mul(s.fragment_size()) < FULL_DISK_BYTES)
}

/// LMDB's verdicts of an environment that will not work again: a damaged
/// file (`MDB_CORRUPTED`, `MDB_PAGE_NOTFOUND`), a fatal error
/// (`MDB_PANIC`), and transactions refused from then on (`MDB_BAD_TXN`:
/// what reads answered once the pages behind the meta pages were
/// overwritten; each of ours is a fresh transaction, so it is not the echo
/// of an earlier failure in the same one). Also `MDB_MAP_RESIZED`: the
/// file no longer fits this process's map, either because the meta pages
/// were damaged (seen: every request answered 503 for good) or because
/// another process grew the map; in both cases only a new worker, which
/// maps the file afresh (and refuses a damaged one), can go on. An I/O
/// error writing the map is judged in [`commit_error`].
fn is_corruption(e: &heed::Error) -> bool {
    matches!(
        e,
        heed::Error::Mdb(
            MdbError::Corrupted
                | MdbError::PageNotFound
                | MdbError::Panic
                | MdbError::BadTxn
                | MdbError::MapResized,
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruption_is_told_from_other_failures() {
        assert!(is_corruption(&heed::Error::Mdb(MdbError::Corrupted)));
        assert!(is_corruption(&heed::Error::Mdb(MdbError::PageNotFound)));
        assert!(is_corruption(&heed::Error::Mdb(MdbError::BadTxn)));
        assert!(is_corruption(&heed::Error::Mdb(MdbError::MapResized)));
        assert!(!is_corruption(&heed::Error::Mdb(MdbError::MapFull)));
        assert!(!is_corruption(&heed::Error::Mdb(MdbError::ReadersFull)));
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(!is_corruption(&heed::Error::Io(full)), "a full disk clears");
    }

    #[test]
    fn corruption_is_damage_and_a_full_map_is_full() {
        assert!(matches!(
            store_error(heed::Error::Mdb(MdbError::Corrupted)),
            StoreError::Damaged(_)
        ));
        assert_eq!(
            store_error(heed::Error::Mdb(MdbError::MapFull)),
            StoreError::Full
        );
        assert!(matches!(
            store_error(heed::Error::Mdb(MdbError::ReadersFull)),
            StoreError::Unavailable(_)
        ));
    }

    /// A commit's EIO ends the worker only when the data can no longer be
    /// read; a full disk, or an error that left the data readable, is a 503.
    #[test]
    fn a_commits_eio_is_damage_only_if_the_data_is_unreadable() {
        let eio = || heed::Error::Io(std::io::Error::from_raw_os_error(libc::EIO));
        let here = Path::new(".");
        let readable = commit_error(eio(), here, || Ok(()));
        assert!(
            matches!(readable, StoreError::Unavailable(_)),
            "{readable:?}"
        );
        let damaged = || Err(StoreError::damaged(std::io::Error::other("MDB_CORRUPTED")));
        assert!(matches!(
            commit_error(eio(), here, damaged),
            StoreError::Damaged(_)
        ));
        let full = commit_error(heed::Error::Mdb(MdbError::MapFull), here, damaged);
        assert_eq!(full, StoreError::Full, "not an EIO: no check");
    }

    #[test]
    fn next_id_is_strictly_increasing() {
        let far_future =
            ObjectId::from_bytes([0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        let next = next_id(far_future);
        assert!(next > far_future);
        assert_eq!(next.bytes()[9..], [1, 0, 0]);
        let zero = ObjectId::from_bytes([0; 12]);
        assert!(next_id(zero) > zero);
    }

    #[test]
    fn patch_keeps_other_fields() {
        let mut f = Fields::new();
        f.insert("quantity".into(), 5.into());
        let doc = apply_patch(br#"{"_id":"x","quantity":1,"product":"P"}"#, &mut f).unwrap();
        let v: Value = serde_json::from_slice(&doc.0).unwrap();
        assert_eq!(v["quantity"], 5);
        assert_eq!(v["product"], "P");
        assert_eq!(v["_id"], "x");
    }
}
