//! Request bodies in bounded memory.
//!
//! A body buffer grows with the bytes that arrive, never reserved from the
//! Content-Length a client claims. Every byte a worker buffers for request
//! bodies is counted in one [`BodyMemory`] budget (`max_buffered_body_bytes`):
//! a body that would pass it waits for others to finish, and after
//! [`BUDGET_WAIT`] is answered 503. A body's first share waits in arrival
//! order with the other new bodies of its size class (so a stream of new
//! bodies cannot keep one out for good); a body that holds a share already
//! and needs more to grow does not queue behind new ones (it could wait
//! for memory they would never get). So `worker_connections` x `max_body_size` can never be
//! reached, whatever clients claim or trickle; a body that stalls while
//! holding its share is cut by the sweep's minimum rate (`sweep`).
//!
//! An eighth of the budget is kept for small bodies (at most
//! [`SMALL_BODY`] bytes, an order is ~100): large bodies, which are what
//! can fill the budget, wait in a queue of their own and cannot use it. So
//! clients that keep re-sending large bodies to hold the budget (each cut
//! for its rate, then again) do not stop ordinary writes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Error;

/// Longest a body waits for room in the budget before its request gets a 503.
pub const BUDGET_WAIT: Duration = Duration::from_secs(1);
/// Pause between tries while the budget is full.
const BUDGET_POLL: Duration = Duration::from_millis(5);
/// Bodies at most this long (their Content-Length; a chunked body while it
/// is no longer) may use the part of the budget kept for them. An order
/// is ~100 bytes.
pub const SMALL_BODY: usize = 16 * 1024;
/// The part of the budget kept for small bodies: one eighth.
const SMALL_RESERVE_SHARE: usize = 8;

/// The bytes of request bodies one worker may hold at once.
#[derive(Debug)]
pub struct BodyMemory {
    used: AtomicUsize,
    limit: usize,
    /// Bytes only small bodies may use.
    reserve: usize,
    /// Tickets of the bodies waiting for room, in arrival order: large
    /// bodies, then small ones.
    queues: [Mutex<VecDeque<u64>>; 2],
    /// How many wait, of each kind (read without the lock on every take).
    waiting: [AtomicUsize; 2],
    next_ticket: AtomicU64,
}

impl BodyMemory {
    /// A budget of `limit` bytes, none of it kept for small bodies.
    pub fn new(limit: usize) -> BodyMemory {
        BodyMemory::with_reserve(limit, 0)
    }

    /// A budget of `limit` bytes for bodies of at most `max_body` bytes,
    /// an eighth of it kept for small bodies (less if a body of `max_body`
    /// bytes would not fit in the rest).
    pub fn for_bodies(limit: usize, max_body: usize) -> BodyMemory {
        let reserve = (limit / SMALL_RESERVE_SHARE).min(limit.saturating_sub(max_body));
        BodyMemory::with_reserve(limit, reserve)
    }

    fn with_reserve(limit: usize, reserve: usize) -> BodyMemory {
        BodyMemory {
            used: AtomicUsize::new(0),
            limit,
            reserve,
            queues: Default::default(),
            waiting: Default::default(),
            next_ticket: AtomicU64::new(0),
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes if they fit (a large body's below the reserve).
    fn try_take(&self, n: usize, small: bool) -> bool {
        let limit = match small {
            true => self.limit,
            false => self.limit - self.reserve,
        };
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |used| {
                used.checked_add(n).filter(|total| *total <= limit)
            })
            .is_ok()
    }

    /// Takes `n` bytes, waiting (without blocking the scheduler thread) up
    /// to [`BUDGET_WAIT`] for others to give theirs back. A body's first
    /// share (`first`) waits for its turn among new bodies of its class; a
    /// body growing takes memory whenever it fits.
    fn take(&self, n: usize, small: bool, first: bool) -> Result<(), Error> {
        let kind = usize::from(small);
        if !first {
            return self.take_when_it_fits(n, small);
        }
        if self.waiting[kind].load(Ordering::Acquire) == 0 && self.try_take(n, small) {
            return Ok(());
        }
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        self.queue(kind).push_back(ticket);
        self.waiting[kind].fetch_add(1, Ordering::AcqRel);
        let deadline = Instant::now() + BUDGET_WAIT;
        let taken = loop {
            let at_front = self.queue(kind).front() == Some(&ticket);
            if at_front && self.try_take(n, small) {
                break Ok(());
            }
            if Instant::now() >= deadline {
                break Err(Error::BodyMemoryFull);
            }
            may::coroutine::sleep(BUDGET_POLL);
        };
        self.queue(kind).retain(|t| *t != ticket);
        self.waiting[kind].fetch_sub(1, Ordering::AcqRel);
        taken
    }

    /// Takes `n` bytes as soon as they fit, within [`BUDGET_WAIT`].
    fn take_when_it_fits(&self, n: usize, small: bool) -> Result<(), Error> {
        let deadline = Instant::now() + BUDGET_WAIT;
        while !self.try_take(n, small) {
            if Instant::now() >= deadline {
                return Err(Error::BodyMemoryFull);
            }
            may::coroutine::sleep(BUDGET_POLL);
        }
        Ok(())
    }

    fn queue(&self, kind: usize) -> std::sync::MutexGuard<'_, VecDeque<u64>> {
        self.queues[kind].lock().unwrap_or_else(|e| e.into_inner())
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
    /// Its length was told (Content-Length); a chunked body's was not.
    sized: bool,
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
            sized: true,
            spare_from: 0,
        }
    }

    /// An empty chunked body of at most `max_len` bytes: small (for the
    /// budget's reserve) while it stays within [`SMALL_BODY`].
    pub fn chunked(memory: &'a BodyMemory, max_len: usize) -> Body<'a> {
        let mut body = Body::new(memory, max_len);
        body.sized = false;
        body
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
            let small = match self.sized {
                true => self.max_len <= SMALL_BODY,
                false => grow_to <= SMALL_BODY,
            };
            self.memory
                .take(grow_to - self.counted, small, self.counted == 0)?;
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

    /// A small body that would fit does not pass a larger one that began
    /// to wait before it.
    #[test]
    fn bodies_take_their_turn_in_arrival_order() {
        use std::sync::{Arc, Mutex};
        let memory = Arc::new(BodyMemory::new(1000));
        assert!(memory.try_take(1000, false));
        let order = Arc::new(Mutex::new(Vec::new()));
        let waiter = |n: usize, name: &'static str| {
            let (memory, order) = (memory.clone(), order.clone());
            std::thread::spawn(move || {
                memory.take(n, false, true).unwrap();
                order.lock().unwrap().push(name);
            })
        };
        let large = waiter(800, "large");
        while memory.waiting[0].load(Ordering::Acquire) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let small = waiter(100, "small");
        while memory.waiting[0].load(Ordering::Acquire) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        memory.give_back(200);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            order.lock().unwrap().is_empty(),
            "the small one waits its turn"
        );
        memory.give_back(800);
        large.join().unwrap();
        small.join().unwrap();
        assert_eq!(order.lock().unwrap().len(), 2);
        assert_eq!(memory.used(), 900, "both took their share");
    }

    /// Large bodies cannot take the part kept for small ones.
    #[test]
    fn small_bodies_have_room_that_large_ones_cannot_take() {
        let large_size = 4 * SMALL_BODY;
        let memory = BodyMemory::for_bodies(8 * large_size, large_size);
        let mut large = Vec::new();
        for _ in 0..7 {
            let mut b = Body::new(&memory, large_size);
            b.extend(&vec![1; large_size]).unwrap();
            large.push(b);
        }
        assert!(
            !memory.try_take(large_size, false),
            "an eighth large body does not fit: the rest is kept"
        );
        let mut small = Body::new(&memory, 100);
        small.extend(&[1; 100]).unwrap();
        assert_eq!(memory.used(), 7 * large_size + 100);
        let mut chunked = Body::chunked(&memory, large_size);
        chunked.extend(&[1; 100]).unwrap();
        assert_eq!(
            memory.used(),
            7 * large_size + 100 + MIN_BODY_CAPACITY,
            "small so far"
        );
    }

    /// A body that holds memory and needs more does not wait behind a new
    /// one that waits for memory only the growing body could give back.
    #[test]
    fn a_growing_body_does_not_queue_behind_new_ones() {
        use std::sync::Arc;
        let memory = Arc::new(BodyMemory::new(1000));
        let mut growing = Body::new(&memory, 1000);
        growing.extend(&[1; 600]).unwrap(); // holds 600
        let waiter = {
            let memory = memory.clone();
            std::thread::spawn(move || memory.take(900, false, true))
        };
        while memory.waiting[0].load(Ordering::Acquire) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        growing.extend(&[1; 300]).unwrap(); // grows to 1000 at once
        assert_eq!(memory.used(), 1000);
        drop(growing);
        assert_eq!(
            waiter.join().unwrap(),
            Ok(()),
            "then the new one gets its turn"
        );
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
