//! A worker ends at once, with `exit::STORE_FAULT`, when its store is
//! damaged: answering from damaged pages, or writing over them, could lose
//! or garble acknowledged orders. It learns of damage two ways, handled
//! side by side here: a SIGBUS (LMDB reading a page of a data file that was
//! truncated while the worker served), and a store operation that answers
//! [`StoreError::Damaged`] (LMDB's own verdict of corruption). The master
//! sees the exit, and a replacement refuses to start on the damaged file
//! (`store::datafile`).
//!
//! These are the only exits a worker chooses for itself, because neither
//! can wait for an error to travel up to `main`: a signal handler may only
//! call async-signal-safe functions, and the coroutine that met the damage
//! is one of many still serving from the same file.

use std::time::Duration;

use bson::oid::ObjectId;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal as NixSignal};

use crate::orders::{Fields, ListQuery};
use crate::proto::etag::Preconditions;
use crate::store::{Doc, Outcome, Page, Store, StoreError};

/// Installs the SIGBUS handler. The coroutine library installs its own
/// handler (for stack overflows) when the first coroutine runs, and it
/// would deadlock on a SIGBUS (docs/design.md): so one coroutine runs
/// first, and this handler then replaces it for SIGBUS (stack overflows are
/// SIGSEGV, which it keeps).
pub fn exit_on_sigbus() {
    extern "C" fn on_sigbus(_: libc::c_int) {
        const MESSAGE: &[u8] = b"orders-server worker: SIGBUS reading the store's data file (truncated or damaged?); exiting\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe.
        unsafe {
            libc::write(libc::STDERR_FILENO, MESSAGE.as_ptr().cast(), MESSAGE.len());
            libc::_exit(crate::exit::STORE_FAULT);
        }
    }
    let _ = may::go!(|| ()).join();
    let action = SigAction::new(
        SigHandler::Handler(on_sigbus),
        SaFlags::SA_ONSTACK,
        SigSet::empty(),
    );
    // SAFETY: the handler only calls async-signal-safe functions.
    if let Err(e) = unsafe { sigaction(NixSignal::SIGBUS, &action) } {
        log::warn!("cannot install the SIGBUS handler: {e}");
    }
}

/// The worker's store: every answer passes through, and a damaged store
/// ends the worker before the answer goes anywhere.
pub struct EndOnDamage(pub Box<dyn Store>);

impl EndOnDamage {
    fn check<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e @ StoreError::Damaged(_)) = &result {
            log::error!(
                "{}: this worker stops; restore the store from a backup (made with `orders-server backup`)",
                crate::logging::chain(e)
            );
            std::process::exit(crate::exit::STORE_FAULT);
        }
        result
    }
}

impl Store for EndOnDamage {
    fn get(&self, id: &ObjectId) -> Result<Option<Doc>, StoreError> {
        self.check(self.0.get(id))
    }
    fn list(&self, query: &ListQuery, max_bytes: usize) -> Result<Page, StoreError> {
        self.check(self.0.list(query, max_bytes))
    }
    fn create(&self, fields: Fields) -> Result<Doc, StoreError> {
        self.check(self.0.create(fields))
    }
    fn update(&self, id: &ObjectId, fields: Fields, pre: &Preconditions) -> Outcome<Doc> {
        self.check(self.0.update(id, fields, pre))
    }
    fn delete(&self, id: &ObjectId, pre: &Preconditions) -> Outcome<()> {
        self.check(self.0.delete(id, pre))
    }
    fn ping(&self, timeout: Duration) -> Result<(), StoreError> {
        self.check(self.0.ping(timeout))
    }
    fn ping_is_cheap(&self) -> bool {
        self.0.ping_is_cheap()
    }
    fn stats(&self) -> Option<String> {
        self.0.stats()
    }
}
