//! Worker heartbeats in shared memory: one slot per worker in a shared
//! mapping (`shared_memory`) made by the master before it forks. A worker's
//! heartbeat coroutine stores the monotonic time into its slot every
//! [`interval`] (a fraction of `timeout`: an idle worker wakes for it a
//! few times per `timeout`, no more); if the worker's scheduler hangs, the
//! coroutine stops running and the slot goes stale, which the master sees
//! without any message from the worker. The metrics use the same slots (a worker's
//! metrics slot is its heartbeat slot), so [`SLOTS`] bounds both.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::monotonic_ms;

/// Slots in the region (at most this many workers alive at once).
pub const SLOTS: usize = 4096;
/// Beats per `timeout`: a worker is seen stale after missing this many.
const BEATS_PER_TIMEOUT: u32 = 4;
/// The shortest beat interval (a `timeout` under 0.4 s).
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The longest beat interval (a `timeout` over 40 s).
const MAX_INTERVAL: Duration = Duration::from_secs(10);
/// The region's size in bytes.
pub const LEN: usize = SLOTS * std::mem::size_of::<AtomicU64>();

/// How often a worker whose `timeout` is this beats: a quarter of it
/// (within 0.1 to 10 s), so the master still sees a hung worker within
/// `timeout` and an idle one wakes only a few times per `timeout`.
pub fn interval(timeout: Duration) -> Duration {
    (timeout / BEATS_PER_TIMEOUT).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// The shared region: never unmapped, so it lives as long as the process
/// (and, inherited across fork, as long as each worker).
pub struct Heartbeats {
    slots: &'static [AtomicU64],
    free: Vec<usize>,
    /// The memfd behind the slots (handed on by a binary upgrade).
    fd: std::os::fd::RawFd,
}

/// One worker's slot.
#[derive(Clone, Copy)]
pub struct Beat {
    slot: &'static AtomicU64,
}

impl Beat {
    /// Records that the worker is alive now.
    pub fn beat(&self) {
        self.slot.store(monotonic_ms(), Ordering::Relaxed);
    }
}

impl Heartbeats {
    /// Maps the region. Call in the master before any fork.
    pub fn new() -> io::Result<Heartbeats> {
        Ok(Heartbeats::over(crate::shared_memory::map(
            "heartbeats",
            LEN,
        )?))
    }

    /// Maps the region a master handed on through a binary upgrade; the
    /// slots in `used` belong to the workers it adopts.
    pub fn inherit(fd: std::os::fd::RawFd, used: &[usize]) -> io::Result<Heartbeats> {
        if let Some(bad) = used.iter().find(|&&i| i >= SLOTS) {
            return Err(io::Error::other(format!(
                "heartbeat slot {bad} out of range"
            )));
        }
        let mut heartbeats = Heartbeats::over(crate::shared_memory::map_inherited(fd, LEN)?);
        heartbeats.free.retain(|i| !used.contains(i));
        Ok(heartbeats)
    }

    fn over(mapping: crate::shared_memory::Mapping) -> Heartbeats {
        // SAFETY: the mapping is `LEN` bytes (a valid AtomicU64 is any 8
        // bytes), page-aligned, shared only through atomics, and never
        // unmapped: a `'static` slice of it is sound.
        let slots = unsafe { std::slice::from_raw_parts(mapping.ptr.cast::<AtomicU64>(), SLOTS) };
        Heartbeats {
            slots,
            free: (0..SLOTS).rev().collect(),
            fd: mapping.fd,
        }
    }

    /// The memfd behind the slots.
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.fd
    }

    /// Takes a free slot for a new worker, stamped now.
    pub fn allocate(&mut self) -> Option<(usize, Beat)> {
        let index = self.free.pop()?;
        let beat = Beat {
            slot: &self.slots[index],
        };
        beat.beat();
        Some((index, beat))
    }

    /// Returns a dead worker's slot.
    pub fn release(&mut self, index: usize) {
        if index < SLOTS && !self.free.contains(&index) {
            self.free.push(index);
        }
    }

    /// Time since the worker in `index` last beat.
    pub fn age(&self, index: usize) -> Duration {
        let last = self.slots[index].load(Ordering::Relaxed);
        Duration::from_millis(monotonic_ms().saturating_sub(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_age_and_are_reused() {
        let mut h = Heartbeats::new().unwrap();
        let (i, beat) = h.allocate().unwrap();
        beat.beat();
        assert!(h.age(i) < Duration::from_secs(1));
        h.release(i);
        let (j, _) = h.allocate().unwrap();
        assert_eq!(i, j);
    }

    #[test]
    fn a_worker_beats_a_few_times_per_timeout() {
        let secs = Duration::from_secs;
        assert_eq!(interval(secs(30)), Duration::from_millis(7500));
        assert_eq!(interval(secs(1)), Duration::from_millis(250));
        assert_eq!(
            interval(secs(3600)),
            MAX_INTERVAL,
            "still seen within the hour"
        );
        assert_eq!(interval(Duration::from_millis(200)), MIN_INTERVAL);
    }
}
