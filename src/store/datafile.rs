//! The embedded store's data file checked against its own account of its
//! size, before anything maps it.
//!
//! LMDB maps `data.mdb` and reads pages past the end of a truncated file
//! as a SIGBUS, which the coroutine library's signal handler turns into a
//! hang (docs/design.md); and it takes an existing empty file for a new,
//! empty store, silently hiding every order. So the master (before any
//! fork, without opening LMDB) and each worker (before it opens the store)
//! read the two meta pages at the start of the file (LMDB's format: a
//! 16-byte page header, then `mm_magic`, `mm_version`, `mm_address`,
//! `mm_mapsize`, two `MDB_db` records of which the first's `md_pad` holds
//! the page size, `mm_last_pg` and `mm_txnid`), take the newer one, and
//! require the file to hold every page up to its last used one.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The data file's name in `data_dir`.
pub const DATA_FILE: &str = "data.mdb";
/// LMDB's meta page magic.
const MAGIC: u32 = 0xBEEF_C0DE;
/// Offsets in a meta page (64-bit LMDB).
const MAGIC_AT: usize = 16;
const PAGE_SIZE_AT: usize = 40;
const LAST_PAGE_AT: usize = 136;
const TXNID_AT: usize = 144;
/// Page sizes LMDB may use.
const PAGE_SIZES: std::ops::RangeInclusive<u64> = 512..=65536;

/// Why the data file cannot be served from.
#[derive(Debug, thiserror::Error)]
pub enum DamagedStore {
    /// It cannot be read at all.
    #[error("data file {}: cannot be read", .0.display())]
    Unreadable(PathBuf, #[source] io::Error),
    /// It exists but holds nothing.
    #[error(
        "data file {} exists but is empty: its orders are gone, and serving from it would hide that. \
         Restore it from a backup (made with `orders-server backup`), or move it away to start a new, empty store",
        .0.display()
    )]
    Empty(PathBuf),
    /// It is not an LMDB data file, or its meta pages are damaged.
    #[error(
        "data file {} is not an LMDB data file (or its first pages are damaged): restore it from a backup (`orders-server backup`)",
        .0.display()
    )]
    NotLmdb(PathBuf),
    /// It is shorter than its last used page says.
    #[error(
        "data file {} is truncated: {len} bytes, but its pages reach {needed} bytes. \
         Restore it from a backup (made with `orders-server backup`); serving it would crash on the missing pages",
        .path.display()
    )]
    Truncated {
        path: PathBuf,
        len: u64,
        needed: u64,
    },
}

/// Checks `data_dir`'s data file: Ok when it is whole, or when there is
/// none (a new store).
pub fn check(data_dir: &Path) -> Result<(), DamagedStore> {
    let path = data_dir.join(DATA_FILE);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(DamagedStore::Unreadable(path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| DamagedStore::Unreadable(path.clone(), e))?
        .len();
    if len == 0 {
        return Err(DamagedStore::Empty(path));
    }
    // The two meta pages: at most two of the largest pages.
    let mut head = Vec::new();
    (&mut file)
        .take(2 * PAGE_SIZES.end())
        .read_to_end(&mut head)
        .map_err(|e| DamagedStore::Unreadable(path.clone(), e))?;
    let Some(first) = meta(&head) else {
        return Err(DamagedStore::NotLmdb(path));
    };
    let second = head.get(first.page_size as usize..).and_then(meta);
    let newest = second.filter(|s| s.txnid > first.txnid).unwrap_or(first);
    let needed = (newest.last_page + 1).saturating_mul(newest.page_size);
    if len < needed {
        return Err(DamagedStore::Truncated { path, len, needed });
    }
    Ok(())
}

/// What a meta page says.
#[derive(Debug, Clone, Copy)]
struct Meta {
    page_size: u64,
    last_page: u64,
    txnid: u64,
}

/// Reads a meta page; None when it is not one.
fn meta(page: &[u8]) -> Option<Meta> {
    let u32_at = |at: usize| {
        page.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |at: usize| {
        page.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    if u32_at(MAGIC_AT)? != MAGIC {
        return None;
    }
    let page_size = u64::from(u32_at(PAGE_SIZE_AT)?);
    if !PAGE_SIZES.contains(&page_size) || !page_size.is_power_of_two() {
        return None;
    }
    Some(Meta {
        page_size,
        last_page: u64_at(LAST_PAGE_AT)?,
        txnid: u64_at(TXNID_AT)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    /// A real store with some orders, closed.
    fn store_with_data(dir: &Path) -> u64 {
        // SAFETY: a fresh environment in a temp dir, opened once.
        let env = unsafe {
            heed::EnvOpenOptions::new()
                .map_size(1 << 24)
                .max_dbs(2)
                .open(dir)
        }
        .unwrap();
        let wtxn = env.write_txn().unwrap();
        env.create_databases_and_commit(wtxn, |opener, wtxn| -> Result<_, heed::Error> {
            let db: heed::Database<heed::types::Bytes, heed::types::Bytes> =
                opener.create_database(wtxn, Some("orders"))?;
            for i in 0u32..2000 {
                db.put(wtxn, &i.to_be_bytes(), &[7u8; 100])?;
            }
            Ok(heed::CommitOrAbort::<_, ()>::Commit(()))
        })
        .unwrap();
        drop(env);
        std::fs::metadata(dir.join(DATA_FILE)).unwrap().len()
    }

    #[test]
    fn whole_missing_empty_short_and_foreign_files() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(check(tmp.path()).is_ok(), "no file: a new store");
        let len = store_with_data(tmp.path());
        assert!(check(tmp.path()).is_ok(), "a whole file");
        let file = OpenOptions::new()
            .write(true)
            .open(tmp.path().join(DATA_FILE))
            .unwrap();
        file.set_len(len - 4096).unwrap();
        assert!(matches!(
            check(tmp.path()),
            Err(DamagedStore::Truncated { .. })
        ));
        file.set_len(8192).unwrap();
        assert!(matches!(
            check(tmp.path()),
            Err(DamagedStore::Truncated { .. })
        ));
        file.set_len(0).unwrap();
        let e = check(tmp.path()).unwrap_err();
        assert!(matches!(e, DamagedStore::Empty(_)));
        assert!(e.to_string().contains("orders-server backup"), "{e}");
        std::fs::write(
            tmp.path().join(DATA_FILE),
            b"not a database at all, just text",
        )
        .unwrap();
        assert!(matches!(check(tmp.path()), Err(DamagedStore::NotLmdb(_))));
    }
}
