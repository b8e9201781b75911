//! The exit statuses of orders-server's processes: the one table of them.
//! Which error ends a process with which status is decided in one place,
//! `main.rs` (for the master and for each worker it forks); the only other
//! users are a worker's own ends for a damaged store (`worker`: its SIGBUS
//! handler, and a store that reports damage), which cannot wait for an
//! error to travel up.

/// A stop (or `check` finding nothing to report).
pub const SUCCESS: i32 = 0;
/// `orders-server check`: some kernel settings are below the recommended ones.
pub const CHECK_FOUND: i32 = 1;
/// A setting, the address or the data dir cannot be used (reported on one
/// line before any fork).
pub const UNUSABLE: i32 = 2;
/// Workers cannot start (as gunicorn's): a worker exits with it when it
/// cannot boot, and the master when workers kept failing.
pub const BOOT_FAILURE: i32 = 3;
/// A worker found the store's data file damaged (LMDB reported corruption,
/// or a SIGBUS reading a page that is not there: the file was truncated
/// while it served).
pub const STORE_FAULT: i32 = 4;
/// A worker's main thread panicked (a bug), as an uncaught Rust panic exits.
pub const PANIC: i32 = 101;
