//! How the process ends: its exit statuses, and the one place errors map
//! to them (as `http::response` is the one place errors map to HTTP
//! statuses).

use std::error::Error as StdError;
use std::path::PathBuf;

use crate::config::ConfigError;
use crate::master::MasterError;
use crate::worker::BootError;

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
/// A worker's main thread panicked (a bug), as an uncaught Rust panic exits.
pub const PANIC: i32 = 101;
/// A worker touched a page of the store's data file that is not there
/// (SIGBUS: the file was truncated or damaged while it served).
pub const STORE_FAULT: i32 = 4;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The log file cannot be opened.
    #[error("log_file {}", .0.display())]
    LogFile(PathBuf, #[source] std::io::Error),
    /// The master.
    #[error(transparent)]
    Master(#[from] MasterError),
    /// `orders-server backup`.
    #[error(transparent)]
    Backup(#[from] crate::store::embedded::BackupError),
}

impl Error {
    /// The exit status of this error.
    pub fn status(&self) -> i32 {
        match self {
            Error::Master(MasterError::GaveUp { .. }) => BOOT_FAILURE,
            Error::Config(_) | Error::LogFile(..) | Error::Master(_) | Error::Backup(_) => UNUSABLE,
        }
    }
}

/// The exit status of a worker that ran (its error logged first).
pub fn of_worker(outcome: std::thread::Result<Result<(), BootError>>) -> i32 {
    match outcome {
        Ok(Ok(())) => SUCCESS,
        Ok(Err(e)) => {
            log::error!("{}", chain(&e));
            BOOT_FAILURE
        }
        // The panic hook has logged it.
        Err(_) => PANIC,
    }
}

/// An error and its causes on one line: `outer: cause: root cause`.
pub fn chain(e: &dyn StdError) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_and_statuses() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = Error::LogFile("/x/log".into(), io);
        assert_eq!(chain(&e), "log_file /x/log: No such file");
        assert_eq!(e.status(), UNUSABLE);
        assert_eq!(
            Error::Master(MasterError::GaveUp { failures: 5 }).status(),
            BOOT_FAILURE
        );
    }
}
