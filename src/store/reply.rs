//! Waiting in a coroutine for an answer computed on another thread (the
//! embedded store's writer), with a deadline, without paying for it on
//! every call.
//!
//! The obvious way, a may channel per call and `recv_timeout`, costs a
//! timer per call; removing it wakes may's timer thread, so on a busy
//! worker every write paid a futex wake and a context switch, and every
//! answer sent from the other thread paid an eventfd write to wake the
//! scheduler. Measured on one core: POST /orders went from ~16 to ~11 µs of
//! CPU without them. Instead:
//! - a call waits on its channel with no timer; its deadline is kept in a
//!   table that one coroutine per worker checks every [`DEADLINE_TICK`],
//!   answering `Timeout` for calls past it (the first answer wins); with
//!   no call in flight the checker sleeps without a timer until the next
//!   call wakes it (an idle worker does not tick);
//! - the other thread hands its answers over in batches ([`Courier`]): one
//!   wake-up of the scheduler per batch; a coroutine then passes each on.
//!   Work done on a scheduler thread itself (the MongoDB driver's runtime,
//!   `runtime.rs`) answers in place ([`Replies::answered_in_place`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use may::sync::mpsc::{channel, Receiver, Sender};

use super::StoreError;

/// How often deadlines are checked: a late call is answered within its
/// deadline plus this.
pub const DEADLINE_TICK: Duration = Duration::from_millis(50);

/// An answer: the value, or why there is none.
pub type Answer<T> = Result<T, StoreError>;

/// Where the other thread sends one call's answer.
pub struct ReplyTo<T>(Sender<Answer<T>>);

/// One call waiting for its answer.
pub struct Awaiting<T> {
    id: u64,
    answer: Receiver<Answer<T>>,
    table: Arc<Deadlines<T>>,
}

/// Each call in flight by id: its deadline and where its answer goes.
type Calls<T> = HashMap<u64, (Instant, Sender<Answer<T>>)>;

/// Calls in flight and their deadlines.
struct Deadlines<T> {
    calls: Mutex<Calls<T>>,
    next_id: AtomicU64,
    /// The deadline coroutine sleeps without a timer while no call is in
    /// flight (an idle worker has no tick); the first call wakes it.
    checker_asleep: AtomicBool,
    wake_checker: Sender<()>,
}

impl<T> Deadlines<T> {
    fn lock(&self) -> MutexGuard<'_, Calls<T>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For the checker: whether it may sleep until woken (no call in
    /// flight). The flag is raised under the lock a new call inserts
    /// under, so a call either is seen here or finds the flag raised.
    fn sleep_if_idle(&self) -> bool {
        let calls = self.lock();
        let idle = calls.is_empty();
        if idle {
            self.checker_asleep.store(true, Ordering::SeqCst);
        }
        idle
    }
}

/// The calls of one worker to one other thread.
pub struct Replies<T> {
    table: Arc<Deadlines<T>>,
    timeout: Duration,
}

/// Hands answers from the other thread to the waiting coroutines in batches.
pub struct Courier<T>(Sender<Vec<(ReplyTo<T>, Answer<T>)>>);

impl<T: Send + 'static> Replies<T> {
    /// Calls answered within `timeout` (or `Timeout`), and the courier the
    /// other thread answers through. Starts the deadline and delivery
    /// coroutines.
    pub fn new(timeout: Duration) -> (Replies<T>, Courier<T>) {
        let replies = Replies::answered_in_place(timeout);
        let (batches, inbox) = channel::<Vec<(ReplyTo<T>, Answer<T>)>>();
        // Ends once the store is gone (no strong reference to the table).
        let delivered = Arc::downgrade(&replies.table);
        may::go!(move || {
            for batch in inbox {
                for (to, answer) in batch {
                    to.send(answer);
                }
            }
            // The other thread is gone (it dropped its courier): nothing
            // it was asked will be answered.
            if let Some(table) = delivered.upgrade() {
                answer_where(
                    &table,
                    |_| true,
                    || StoreError::unavailable_because("store thread stopped"),
                );
            }
        });
        (replies, Courier(batches))
    }

    /// Calls answered within `timeout` (or `Timeout`) through
    /// [`ReplyTo::send`] on a scheduler thread, where waking a coroutine is
    /// cheap: no courier. Starts the deadline coroutine.
    pub fn answered_in_place(timeout: Duration) -> Replies<T> {
        let (wake_checker, wakes) = channel();
        let table = Arc::new(Deadlines {
            calls: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            checker_asleep: AtomicBool::new(false),
            wake_checker,
        });
        // Ends once the store is gone (no strong reference to the table,
        // and with it the sender of `wakes`).
        let watched = Arc::downgrade(&table);
        may::go!(move || loop {
            may::coroutine::sleep(DEADLINE_TICK);
            let Some(table) = watched.upgrade() else {
                return;
            };
            answer_where(
                &table,
                |deadline| deadline <= Instant::now(),
                || StoreError::Timeout,
            );
            if table.sleep_if_idle() {
                drop(table);
                if wakes.recv().is_err() {
                    return;
                }
            }
        });
        Replies { table, timeout }
    }

    /// Starts a call: where to answer it, and the wait for the answer.
    pub fn call(&self) -> (ReplyTo<T>, Awaiting<T>) {
        self.call_within(self.timeout)
    }

    /// Starts a call with a deadline of its own.
    pub fn call_within(&self, timeout: Duration) -> (ReplyTo<T>, Awaiting<T>) {
        let (tx, answer) = channel();
        let id = self.table.next_id.fetch_add(1, Ordering::Relaxed);
        self.table
            .lock()
            .insert(id, (Instant::now() + timeout, tx.clone()));
        // Once per sleep of the checker, not per call.
        if self.table.checker_asleep.swap(false, Ordering::SeqCst) {
            let _ = self.table.wake_checker.send(());
        }
        (
            ReplyTo(tx),
            Awaiting {
                id,
                answer,
                table: self.table.clone(),
            },
        )
    }
}

impl<T> Awaiting<T> {
    /// The answer, or `Timeout` past the deadline (the work may still be
    /// done later: a create that timed out may yet be committed).
    pub fn wait(self) -> Answer<T> {
        self.answer
            .recv()
            .unwrap_or_else(|_| Err(StoreError::unavailable_because("store thread stopped")))
    }
}

impl<T> Drop for Awaiting<T> {
    fn drop(&mut self) {
        self.table.lock().remove(&self.id);
    }
}

impl<T> ReplyTo<T> {
    /// Answers the call (the first answer wins).
    pub fn send(self, answer: Answer<T>) {
        // A call that timed out has stopped listening.
        let _ = self.0.send(answer);
    }
}

impl<T> Courier<T> {
    /// Delivers a batch of answers with one wake-up of the scheduler.
    pub fn deliver(&self, batch: Vec<(ReplyTo<T>, Answer<T>)>) {
        let _ = self.0.send(batch);
    }
}

/// Answers `error()` to every call whose deadline matches, and forgets it.
fn answer_where<T>(
    table: &Deadlines<T>,
    matches: impl Fn(Instant) -> bool,
    error: impl Fn() -> StoreError,
) {
    table.lock().retain(|_, (deadline, to)| {
        if !matches(*deadline) {
            return true;
        }
        let _ = to.send(Err(error()));
        false
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_arrive_in_batches_and_late_calls_time_out() {
        let (replies, courier) = Replies::<u32>::new(Duration::from_millis(200));
        let (to_a, a) = replies.call();
        let (to_b, b) = replies.call();
        let (_never, c) = replies.call();
        // Delivered from another thread, which keeps the courier (its end
        // would fail the remaining calls at once).
        let _courier = std::thread::spawn(move || {
            courier.deliver(vec![(to_a, Ok(1)), (to_b, Err(StoreError::Full))]);
            courier
        })
        .join()
        .unwrap();
        assert_eq!(a.wait(), Ok(1));
        assert_eq!(b.wait(), Err(StoreError::Full));
        let started = Instant::now();
        assert_eq!(c.wait(), Err(StoreError::Timeout));
        assert!(started.elapsed() < Duration::from_millis(200) + DEADLINE_TICK * 4);
        assert!(
            replies.table.lock().is_empty(),
            "finished calls leave the table"
        );
    }

    #[test]
    fn calls_fail_at_once_when_the_other_thread_is_gone() {
        let (replies, courier) = Replies::<u32>::new(Duration::from_secs(60));
        let (_to, waiting) = replies.call();
        drop(courier);
        let started = Instant::now();
        assert!(matches!(waiting.wait(), Err(StoreError::Unavailable(_))));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "not at the deadline"
        );
    }
}
