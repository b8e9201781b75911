//! Worker heartbeats in shared memory: one slot per worker in an anonymous
//! shared mapping made by the master before it forks. A worker's heartbeat
//! coroutine stores the monotonic time into its slot every 500 ms; if the
//! worker's scheduler hangs, the coroutine stops running and the slot goes
//! stale, which the master sees without any message from the worker.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::monotonic_ms;

/// Slots in the region (at most this many workers alive at once).
pub const SLOTS: usize = 4096;

/// The shared region: never unmapped, so it lives as long as the process
/// (and, inherited across fork, as long as each worker).
pub struct Heartbeats {
    slots: &'static [AtomicU64],
    free: Vec<usize>,
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
        let len = SLOTS * std::mem::size_of::<AtomicU64>();
        let ptr = crate::shared_memory::map(len)?;
        // SAFETY: the mapping is `len` bytes of zeroed memory (a valid
        // AtomicU64 is any 8 bytes), page-aligned, shared only through
        // atomics, and never unmapped: a `'static` slice of it is sound.
        let slots = unsafe { std::slice::from_raw_parts(ptr.cast::<AtomicU64>(), SLOTS) };
        Ok(Heartbeats { slots, free: (0..SLOTS).rev().collect() })
    }

    /// Takes a free slot for a new worker, stamped now.
    pub fn allocate(&mut self) -> Option<(usize, Beat)> {
        let index = self.free.pop()?;
        let beat = Beat { slot: &self.slots[index] };
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
}
