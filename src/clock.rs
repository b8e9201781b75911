//! Monotonic time in milliseconds, comparable across processes (the
//! master reads the heartbeats its workers write), and the calendar date
//! of a day count (for log timestamps, without a date crate).

use nix::time::{clock_gettime, ClockId};

/// Milliseconds on the system-wide monotonic clock (same in every process).
pub fn monotonic_ms() -> u64 {
    clock_ms(ClockId::CLOCK_MONOTONIC)
}

/// The monotonic clock at its coarse (few-millisecond) resolution: cheaper
/// to read, and precise enough for timeouts counted in seconds.
pub fn coarse_ms() -> u64 {
    clock_ms(ClockId::CLOCK_MONOTONIC_COARSE)
}

fn clock_ms(clock: ClockId) -> u64 {
    clock_gettime(clock)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch (wall clock).
pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}
