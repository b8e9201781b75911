//! Logging to stderr, one line per event, each saying which process wrote
//! it: `2026-11-26T15:47:23Z INFO [master 1234] message` or
//! `... [worker 2 gen 1 pid 1240] ...`. systemd's journal (or a redirect)
//! collects stderr.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use log::{LevelFilter, Log, Metadata, Record};

/// Log verbosity (the `log_level` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl std::str::FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<LogLevel, String> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Ok(LogLevel::Error),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            _ => Err(format!("{s:?} is not one of error, warn, info, debug")),
        }
    }
}

/// An error and its causes on one line: `outer: cause: root cause` (a log
/// line, or the one line a failed start prints).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}

/// How long a repeated message stays quiet after it was logged: the
/// repeats of the interval are counted and said with the next line.
pub const REPEAT_INTERVAL_MS: u64 = 10_000;

/// One message that may repeat many times a second while something stays
/// broken (a full disk, a failing store): the first is logged, the rest of
/// the next [`REPEAT_INTERVAL_MS`] only counted, and the next one logged
/// after it says how many there were. Metrics still count every one. Use
/// through [`log_repeated!`](crate::log_repeated), one per call site.
#[derive(Debug, Default)]
pub struct Repeated(Mutex<(u64, u64)>);

impl Repeated {
    /// A message not logged yet.
    pub const fn new() -> Repeated {
        Repeated(Mutex::new((0, 0)))
    }

    /// Whether to log the message now, with how many were held back since
    /// the last one that was (None: hold this one back).
    pub fn take(&self, now_ms: u64) -> Option<u64> {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (logged_at, held) = &mut *state;
        if *logged_at != 0 && now_ms.saturating_sub(*logged_at) < REPEAT_INTERVAL_MS {
            *held += 1;
            return None;
        }
        *logged_at = now_ms.max(1);
        Some(std::mem::take(held))
    }
}

/// `log::log!` for a message that may repeat without end: logged once per
/// [`REPEAT_INTERVAL_MS`] at most, with the count of the repeats held back
/// since the last line (`... (and 41237 more like it since the last such
/// line)`; a count is said only when the message comes again).
#[macro_export]
macro_rules! log_repeated {
    ($level:expr, $($arg:tt)+) => {{
        static REPEATED: $crate::logging::Repeated = $crate::logging::Repeated::new();
        if log::log_enabled!($level) {
            if let Some(held) = REPEATED.take($crate::clock::coarse_ms()) {
                match held {
                    0 => log::log!($level, $($arg)+),
                    n => log::log!(
                        $level,
                        "{} (and {n} more like it since the last such line)",
                        format_args!($($arg)+)
                    ),
                }
            }
        }
    }};
}

/// Which process this is, printed on every line.
static ROLE: Mutex<String> = Mutex::new(String::new());
/// The log file, when logs do not go to stderr.
static FILE: Mutex<Option<(PathBuf, File)>> = Mutex::new(None);

struct Logger;

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // The coroutine library logs its own internals under `may`: not an
        // operator's concern.
        metadata.level() <= log::max_level() && !metadata.target().starts_with("may")
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let role = ROLE.lock().map(|r| r.clone()).unwrap_or_default();
        let time = humantime_utc(SystemTime::now());
        let line = format!("{time} {:<5} [{role}] {}\n", record.level(), record.args());
        // One write per line (O_APPEND for a file), so lines of several
        // processes don't interleave.
        if let Ok(mut file) = FILE.lock() {
            if let Some((_, f)) = file.as_mut() {
                let _ = f.write_all(line.as_bytes());
                return;
            }
        }
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger; `role` names this process. With `file`, lines are
/// appended to it instead of stderr.
pub fn init(level: LogLevel, role: &str, file: Option<&Path>) -> std::io::Result<()> {
    set_role(role);
    if let Some(path) = file {
        let f = open(path)?;
        *FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some((path.to_path_buf(), f));
    }
    let _ = log::set_logger(&Logger);
    set_level(level);
    Ok(())
}

/// Changes the verbosity (a reload).
pub fn set_level(level: LogLevel) {
    let filter = match level {
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warn => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
    };
    log::set_max_level(filter);
}

/// Reopens the log file (SIGUSR1, after logrotate moved it away).
pub fn reopen() {
    let mut guard = FILE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((path, file)) = guard.as_mut() {
        match open(path) {
            Ok(f) => *file = f,
            Err(e) => eprintln!("cannot reopen log file {}: {e}", path.display()),
        }
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Changes the process name printed on each line (a forked worker).
pub fn set_role(role: &str) {
    if let Ok(mut r) = ROLE.lock() {
        *r = role.to_string();
    }
}

/// RFC 3339 UTC time with seconds, without a date crate.
fn humantime_utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = crate::clock::civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_message_is_logged_once_an_interval_with_its_count() {
        let r = Repeated::new();
        assert_eq!(r.take(1_000), Some(0));
        for t in 1_001..1_500 {
            assert_eq!(r.take(t), None);
        }
        assert_eq!(r.take(1_000 + REPEAT_INTERVAL_MS), Some(499));
        assert_eq!(r.take(1_001 + REPEAT_INTERVAL_MS), None);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(crate::clock::civil_from_days(0), (1970, 1, 1));
        assert_eq!(crate::clock::civil_from_days(20_418), (2025, 11, 26));
    }

    #[test]
    fn chains_and_levels() {
        #[derive(Debug, thiserror::Error)]
        #[error("log_file /x/log")]
        struct LogFile(#[source] std::io::Error);
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        assert_eq!(chain(&LogFile(io)), "log_file /x/log: No such file");
        assert_eq!("WARNING".parse(), Ok(LogLevel::Warn));
        assert!("loud".parse::<LogLevel>().unwrap_err().contains("loud"));
    }
}
