//! Request bodies in bounded memory.
//!
//! A body buffer grows with the bytes that arrive, never reserved from the
//! Content-Length a client claims. Every byte a worker buffers for request
//! bodies is counted in one [`BodyMemory`] budget (`max_buffered_body_bytes`):
//! a body that would pass it waits for others to finish, and after
//! [`BUDGET_WAIT`] is answered 503. So `worker_connections` x
//! `max_body_size` can never be reached, whatever clients claim or trickle.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Error;

/// Longest a body waits for room in the budget before its request gets a 503.
pub const BUDGET_WAIT: Duration = Duration::from_secs(1);
/// Pause between tries while the budget is full.
const BUDGET_POLL: Duration = Duration::from_millis(5);

/// The bytes of request bodies one worker may hold at once.
#[derive(Debug)]
pub struct BodyMemory {
    used: AtomicUsize,
    limit: usize,
}

impl BodyMemory {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> BodyMemory {
        BodyMemory {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes if they fit.
    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |used| {
                used.checked_add(n).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    /// Takes `n` bytes, waiting (without blocking the scheduler thread) up
    /// to [`BUDGET_WAIT`] for others to give theirs back.
    fn take(&self, n: usize) -> Result<(), Error> {
        let deadline = Instant::now() + BUDGET_WAIT;
        while !self.try_take(n) {
            if Instant::now() >= deadline {
                return Err(Error::BodyMemoryFull);
            }
            may::coroutine::sleep(BUDGET_POLL);
        }
        Ok(())
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// A request body being received; its bytes are counted in the worker's
/// budget until it is dropped.
#[derive(Debug)]
pub struct Body<'a> {
    bytes: Vec<u8>,
    memory: &'a BodyMemory,
    /// Bytes taken from the budget (the buffer's capacity).
    counted: usize,
    /// The most this body may hold (its Content-Length, or `max_body_size`).
    max_len: usize,
    /// Where the room of the last [`Body::spare`] began.
    spare_from: usize,
}

impl<'a> Body<'a> {
    /// An empty body of at most `max_len` bytes (the caller checks the
    /// length against it).
    pub fn new(memory: &'a BodyMemory, max_len: usize) -> Body<'a> {
        Body {
            bytes: Vec::new(),
            memory,
            counted: 0,
            max_len,
            spare_from: 0,
        }
    }

    /// Appends `data`.
    pub fn extend(&mut self, data: &[u8]) -> Result<(), Error> {
        self.make_room(data.len())?;
        self.bytes.extend_from_slice(data);
        Ok(())
    }

    /// Room for `want` more bytes at the end, for a read straight from the
    /// socket; pass [`Body::filled`] what the read wrote there.
    pub fn spare(&mut self, want: usize) -> Result<&mut [u8], Error> {
        self.make_room(want)?;
        let len = self.bytes.len();
        self.bytes.resize(len + want, 0);
        self.spare_from = len;
        Ok(&mut self.bytes[len..])
    }

    /// Keeps `n` bytes of the room [`Body::spare`] gave.
    pub fn filled(&mut self, n: usize) {
        self.bytes.truncate(self.spare_from + n);
    }

    /// Grows the buffer within the budget so `extra` more bytes fit. It
    /// at most doubles (never past `max_len`), so it stays within twice
    /// what arrived.
    fn make_room(&mut self, extra: usize) -> Result<(), Error> {
        let needed = self.bytes.len().saturating_add(extra);
        if needed > self.max_len {
            return Err(Error::BodyTooLarge(self.max_len as u64));
        }
        if needed > self.counted {
            let grow_to = needed
                .max(self.counted * 2)
                .max(MIN_BODY_CAPACITY)
                .min(self.max_len);
            self.memory.take(grow_to - self.counted)?;
            self.counted = grow_to;
            self.bytes.reserve_exact(grow_to - self.bytes.len());
        }
        Ok(())
    }

    /// Bytes received so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing was received.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The body.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }
}

/// The first allocation of a body: small orders fit in one.
const MIN_BODY_CAPACITY: usize = 512;

impl Drop for Body<'_> {
    fn drop(&mut self) {
        self.memory.give_back(self.counted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_counted_while_they_live() {
        let memory = BodyMemory::new(4096);
        let mut a = Body::new(&memory, 1 << 20);
        a.extend(&[1; 100]).unwrap();
        assert_eq!(memory.used(), MIN_BODY_CAPACITY);
        a.extend(&[1; 1000]).unwrap();
        assert!(
            memory.used() >= 1100 && memory.used() <= 2200,
            "{}",
            memory.used()
        );
        assert_eq!(a.len(), 1100);
        a.spare(50).unwrap()[..3].copy_from_slice(b"abc");
        a.filled(3);
        assert_eq!(a.len(), 1103);
        assert_eq!(&a.as_slice()[1100..], b"abc");
        drop(a);
        assert_eq!(memory.used(), 0);
    }

    #[test]
    fn a_body_never_passes_its_length() {
        let memory = BodyMemory::new(4096);
        let mut a = Body::new(&memory, 10);
        a.extend(&[1; 10]).unwrap();
        assert!(matches!(a.extend(&[1]), Err(Error::BodyTooLarge(10))));
        assert!(matches!(a.spare(usize::MAX), Err(Error::BodyTooLarge(10))));
    }

    #[test]
    fn a_full_budget_refuses_after_waiting() {
        let memory = BodyMemory::new(1024);
        let mut a = Body::new(&memory, 1 << 20);
        a.extend(&[1; 1024]).unwrap();
        let mut b = Body::new(&memory, 1 << 20);
        let started = Instant::now();
        assert!(matches!(b.extend(&[1; 10]), Err(Error::BodyMemoryFull)));
        assert!(started.elapsed() >= BUDGET_WAIT);
        drop(a);
        b.extend(&[1; 10]).unwrap();
    }
}
