//! Connections parked between requests: per core, a table of records (a connection's state and
//! the receive armed on it) with no task of their own. A completed receive hands its record
//! back to a new task; the idle deadline or the listener's close drops it.
//!
//! Why: a task costs its whole future (~480 bytes for an idle plaintext HTTP/1 connection, plus
//! the listener's close signal and a timer entry); a parked record is the connection's state
//! and its armed receive in a slab, one heap entry for its deadline, and no waker allocation.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::mem;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::thread::LocalKey;
use std::time::Instant;

use slab::Slab;

use crate::timer;

/// What a table holds.
pub trait Record: Sized + 'static {
    /// What the record's armed receive completes with.
    type Woken;
    /// Polls the armed receive.
    fn poll_woken(&mut self, cx: &mut Context<'_>) -> Poll<Self::Woken>;
    /// Hands the record back to a task of its own.
    fn resume(self, woken: Self::Woken);
    /// Its listener is closing: the record is dropped (the connection closes).
    fn is_closing(&self) -> bool;
}

struct Entry<R> {
    record: R,
    /// Tells this record's deadline from a deadline left by an earlier record of the same key.
    stamp: u32,
}

/// One core's parked records. One table per thread: the keys its wakers carry go to this
/// thread's list of woken keys.
pub struct Table<R> {
    entries: RefCell<Slab<Entry<R>>>,
    /// Idle deadlines (milliseconds since `base`), soonest first, with their record's key and
    /// stamp: 16 bytes each. A record that leaves (resumed, closed) leaves its deadline
    /// behind: skipped when it comes up, and swept out when they outnumber the records.
    deadlines: RefCell<BinaryHeap<Reverse<(u64, u32, u32)>>>,
    base: Cell<Option<Instant>>,
    stamps: Cell<u32>,
    /// The deadline the driver sleeps until, if any.
    alarm: Cell<Option<u64>>,
    /// Records parked so far.
    parks: Cell<u64>,
}

thread_local! {
    /// Keys whose receive completed since the driver last ran.
    static WOKEN: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// The driver's task, while it waits.
    static DRIVER: RefCell<Option<Waker>> = const { RefCell::new(None) };
}

impl<R: Record> Default for Table<R> {
    fn default() -> Table<R> {
        Table::new()
    }
}

impl<R: Record> Table<R> {
    pub const fn new() -> Table<R> {
        Table {
            entries: RefCell::new(Slab::new()),
            deadlines: RefCell::new(BinaryHeap::new()),
            base: Cell::new(None),
            stamps: Cell::new(0),
            alarm: Cell::new(None),
            parks: Cell::new(0),
        }
    }

    /// Records parked since the table began (the worker trims the allocator after many: each
    /// left a task's memory behind).
    pub fn parks(&self) -> u64 {
        self.parks.get()
    }

    /// `at` in milliseconds since the table's first park (rounded up: never early).
    fn millis(&self, at: Instant) -> u64 {
        let base = match self.base.get() {
            Some(base) => base,
            None => {
                let now = timer::now();
                self.base.set(Some(now));
                now
            }
        };
        let since = at.saturating_duration_since(base);
        since.as_millis() as u64 + u64::from(!since.subsec_nanos().is_multiple_of(1_000_000))
    }

    fn instant(&self, millis: u64) -> Option<Instant> {
        Some(self.base.get()? + std::time::Duration::from_millis(millis))
    }

    /// Records parked now.
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record under `key`, if its receive completed.
    fn poll(&self, key: u32) -> Option<(R, R::Woken)> {
        let mut entries = self.entries.borrow_mut();
        let entry = entries.get_mut(key as usize)?;
        let waker = key_waker(key);
        let Poll::Ready(woken) = entry.record.poll_woken(&mut Context::from_waker(&waker)) else {
            return None;
        };
        Some((entries.remove(key as usize).record, woken))
    }

    /// Takes out the records whose deadline passed, into `out`.
    fn expire(&self, now: Instant, out: &mut Vec<R>) {
        let Some(base) = self.base.get() else {
            return; // Nothing was ever parked.
        };
        let now = now.saturating_duration_since(base).as_millis() as u64;
        let mut deadlines = self.deadlines.borrow_mut();
        let mut entries = self.entries.borrow_mut();
        while let Some(&Reverse((at, key, stamp))) = deadlines.peek() {
            if at > now {
                break;
            }
            deadlines.pop();
            if entries
                .get(key as usize)
                .is_some_and(|entry| entry.stamp == stamp)
            {
                out.push(entries.remove(key as usize).record);
            }
        }
        if entries.is_empty() {
            // A burst of parked connections leaves no table behind it.
            entries.shrink_to_fit();
            deadlines.clear();
            deadlines.shrink_to_fit();
        }
        // Deadlines of records that left: past twice the records, keep only the live ones (a
        // busy core parks and resumes far more often than deadlines come due).
        if deadlines.len() > 2 * entries.len() + 64 {
            deadlines.retain(|Reverse((_, key, stamp))| {
                entries
                    .get(*key as usize)
                    .is_some_and(|entry| entry.stamp == *stamp)
            });
        }
    }

    /// Takes out the records whose listener is closing, into `out`.
    fn closing(&self, out: &mut Vec<R>) {
        let mut entries = self.entries.borrow_mut();
        let keys: Vec<usize> = entries
            .iter()
            .filter(|(_, entry)| entry.record.is_closing())
            .map(|(key, _)| key)
            .collect();
        out.extend(keys.into_iter().map(|key| entries.remove(key).record));
        if entries.is_empty() {
            // A burst of parked connections leaves no table behind it.
            entries.shrink_to_fit();
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        self.deadlines
            .borrow()
            .peek()
            .map(|Reverse((at, _, _))| *at)
    }
}

/// Parks `record` until its receive completes (it resumes), `deadline` passes (it is dropped)
/// or its listener closes ([`close`]). It is polled once at once: the receive may have
/// completed already, and from then on its completion wakes the table, not the task that
/// armed it.
pub fn park<R: Record>(table: &'static LocalKey<Table<R>>, mut record: R, deadline: Instant) {
    let key = table.with(|t| t.entries.borrow().vacant_key());
    let Ok(key32) = u32::try_from(key) else {
        return; // Four billion parked connections on one core: not reached; dropped (closed).
    };
    let waker = key_waker(key32);
    if let Poll::Ready(woken) = record.poll_woken(&mut Context::from_waker(&waker)) {
        return record.resume(woken);
    }
    let earlier = table.with(|t| {
        let stamp = t.stamps.get().wrapping_add(1);
        t.stamps.set(stamp);
        t.parks.set(t.parks.get() + 1);
        t.entries.borrow_mut().insert(Entry { record, stamp });
        let deadline = t.millis(deadline);
        t.deadlines
            .borrow_mut()
            .push(Reverse((deadline, key32, stamp)));
        t.alarm.get().is_none_or(|alarm| deadline < alarm)
    });
    if earlier {
        wake_driver();
    }
}

/// Drops the records whose listener is closing (their connections close).
pub fn close<R: Record>(table: &'static LocalKey<Table<R>>) {
    let mut closing = Vec::new();
    table.with(|t| t.closing(&mut closing));
    // Dropped outside the table's borrow: a connection's end touches its listener's state.
    drop(closing);
}

/// Runs a table on this core: resumes the records whose receive completed and drops those
/// whose deadline passed, and tells `count` how many are left after each round. Spawned once
/// per worker.
pub async fn drive<R: Record>(table: &'static LocalKey<Table<R>>, count: impl Fn(usize)) {
    let mut keys = Vec::new();
    let mut expired = Vec::new();
    loop {
        let alarm = table.with(|t| {
            let next = t.next_deadline();
            t.alarm.set(next);
            next.and_then(|at| t.instant(at))
        });
        let woken = std::future::poll_fn(|cx| {
            if WOKEN.with(|w| !w.borrow().is_empty()) {
                return Poll::Ready(());
            }
            DRIVER.with(|d| {
                let mut driver = d.borrow_mut();
                if !driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *driver = Some(cx.waker().clone());
                }
            });
            // Woken for an earlier deadline than the one it sleeps until (a record parked).
            match table.with(|t| t.next_deadline() != t.alarm.get()) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        });
        match alarm {
            Some(at) => {
                let _ = timer::until(at, woken).await;
            }
            None => woken.await,
        }
        WOKEN.with(|w| mem::swap(&mut *w.borrow_mut(), &mut keys));
        for key in keys.drain(..) {
            // Resumed outside the table's borrow: resuming spawns the connection's task.
            if let Some((record, woken)) = table.with(|t| t.poll(key)) {
                record.resume(woken);
            }
        }
        table.with(|t| t.expire(timer::now(), &mut expired));
        expired.clear();
        count(table.with(Table::len));
    }
}

fn wake_driver() {
    if let Some(driver) = DRIVER.with(|d| d.borrow_mut().take()) {
        driver.wake();
    }
}

/// A waker that carries a record's key and, woken, files the key for the driver. No
/// allocation: an `Arc` waker per record would add an allocation and ~40 bytes to every
/// parked connection (~10% of it).
fn key_waker(key: u32) -> Waker {
    fn clone(data: *const ()) -> RawWaker {
        RawWaker::new(data, &VTABLE)
    }
    fn wake(data: *const ()) {
        let key = data.addr() as u32;
        WOKEN.with(|w| w.borrow_mut().push(key));
        wake_driver();
    }
    fn drop(_: *const ()) {}
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake, drop);
    let data = std::ptr::without_provenance::<()>(key as usize);
    // SAFETY: the data pointer is the key itself, never dereferenced, so every function of the
    // vtable is sound for any value and from any thread (clone copies it, drop does nothing).
    // Woken on another thread, the key would go to that thread's list: the runtime wakes an
    // operation's waker only on the thread that owns its ring, this table's thread.
    unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) }
}
