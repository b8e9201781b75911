//! Test-only faults, triggered only with the `test-hooks` cargo feature
//! (the test command enables it). Without it, the triggers below are
//! compiled as "never" (`for_path` finds no fault, `boot_must_*` are
//! false): `Fault` and `run` remain but nothing reaches them, and no
//! trigger's path or file name is in the binary (the test command checks
//! that a release build holds no `/__test/` string).
//!
//! - `GET /__test/panic`: the handler panics (a panic must cost one
//!   request a 500, never the worker);
//! - `GET /__test/hang`: the scheduler thread blocks for a minute (a hung
//!   worker, which the master's heartbeat check replaces);
//! - a file named `.test-fail-boot` in `data_dir`: workers fail at boot (a
//!   reload whose new generation cannot start);
//! - a file named `.test-hang-boot` in `data_dir`: workers never report
//!   ready (the master's `boot_timeout`).

use std::path::Path;
use std::time::Duration;

/// A fault a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Panic in the handler.
    Panic,
    /// Block the scheduler thread.
    Hang,
}

/// How long a hang blocks the scheduler thread.
const HANG: Duration = Duration::from_secs(60);

/// The fault a request path asks for, if any.
#[cfg(feature = "test-hooks")]
pub fn for_path(path: &str) -> Option<Fault> {
    match path {
        "/__test/panic" => Some(Fault::Panic),
        "/__test/hang" => Some(Fault::Hang),
        _ => None,
    }
}

/// Without the `test-hooks` feature no path asks for a fault.
#[cfg(not(feature = "test-hooks"))]
pub fn for_path(_path: &str) -> Option<Fault> {
    None
}

/// Whether workers must fail at boot.
#[cfg(feature = "test-hooks")]
pub fn boot_must_fail(data_dir: &Path) -> bool {
    data_dir.join(".test-fail-boot").exists()
}

/// Whether workers must hang at boot.
#[cfg(feature = "test-hooks")]
pub fn boot_must_hang(data_dir: &Path) -> bool {
    data_dir.join(".test-hang-boot").exists()
}

/// Without the `test-hooks` feature workers never hang on purpose.
#[cfg(not(feature = "test-hooks"))]
pub fn boot_must_hang(_data_dir: &Path) -> bool {
    false
}

/// Without the `test-hooks` feature workers never fail on purpose.
#[cfg(not(feature = "test-hooks"))]
pub fn boot_must_fail(_data_dir: &Path) -> bool {
    false
}

/// Runs the fault.
pub fn run(fault: Fault) {
    match fault {
        Fault::Panic => panic!("test hook: panic in a handler"),
        Fault::Hang => std::thread::sleep(HANG),
    }
}
