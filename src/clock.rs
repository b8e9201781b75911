//! Monotonic time in milliseconds, comparable across processes (the
//! master reads the heartbeats its workers write).

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
    clock_gettime(clock).map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000).unwrap_or(0)
}

/// Seconds since the Unix epoch (wall clock).
pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
