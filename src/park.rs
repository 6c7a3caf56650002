//! Connections parked between requests: per core, a table of records (a connection's state,
//! nothing armed on the ring) whose sockets one epoll instance watches. A readable socket
//! hands its record back to a new task; the idle deadline or the listener's close drops it.
//!
//! Why: a task costs its whole future (~480 bytes for an idle plaintext HTTP/1 connection, plus
//! the listener's close signal and a timer entry), and a receive armed on the ring costs the
//! runtime's record of the operation (~150 bytes, heaptrack) and its handle in ours (88). A
//! parked record is the connection's state in a slab and one 16-byte heap entry for its
//! deadline; the kernel keeps its epoll registration, as it does for nginx's connections.

use std::cell::{Cell, OnceCell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::thread::LocalKey;
use std::time::{Duration, Instant};

use rustix::event::epoll;
use slab::Slab;
use tracing::warn;

use crate::timer;

/// What a table holds.
pub trait Record: Sized + 'static {
    /// The socket whose readiness wakes the record.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Its socket turned readable (bytes, the end of the stream or an error): hands the record
    /// back to a task of its own.
    fn resume(self);
    /// Its listener is closing: the record is dropped (the connection closes).
    fn is_closing(&self) -> bool;
}

struct Entry<R> {
    record: R,
    /// Tells this record's deadline and events from those of an earlier record of the same key.
    stamp: u32,
}

/// One core's parked records.
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
    /// The epoll instance the records' sockets are registered with, once the driver runs (no
    /// driver, nothing parks: nobody would wake the records).
    epoll: OnceCell<Rc<OwnedFd>>,
    /// The driver's task, while it waits.
    driver: RefCell<Option<Waker>>,
}

impl<R: Record> Default for Table<R> {
    fn default() -> Table<R> {
        Table::new()
    }
}

/// Events taken from the epoll instance per call.
const EVENTS: usize = 256;

/// What wakes a parked socket: bytes, the end of the stream (RDHUP also tells a half-closed
/// one), errors and hang-ups (always reported). One-shot: a record is woken once.
fn interest() -> epoll::EventFlags {
    epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ONESHOT
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
            epoll: OnceCell::new(),
            driver: RefCell::new(None),
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
        Some(self.base.get()? + Duration::from_millis(millis))
    }

    /// Records parked now.
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the record under `key` out of the table and its socket out of the epoll set, if
    /// `stamp` is still its.
    fn take(&self, key: u32, stamp: u32) -> Option<R> {
        let mut entries = self.entries.borrow_mut();
        if entries.get(key as usize)?.stamp != stamp {
            return None;
        }
        let record = entries.remove(key as usize).record;
        self.forget(&record);
        Some(record)
    }

    /// Takes `record`'s socket out of the epoll set. A one-shot registration stays in the set
    /// after its event, disabled, and a socket parked again is added again; closing the socket
    /// would remove it too, but only once no other descriptor refers to it.
    fn forget(&self, record: &R) {
        if let Some(epoll) = self.epoll.get() {
            let _ = epoll::delete(&**epoll, record.fd());
        }
    }

    /// Takes out the records whose deadline passed, into `out`.
    fn expire(&self, now: Instant, out: &mut Vec<R>) {
        let Some(base) = self.base.get() else {
            return; // Nothing was ever parked.
        };
        let now = now.saturating_duration_since(base).as_millis() as u64;
        let mut deadlines = self.deadlines.borrow_mut();
        while let Some(&Reverse((at, key, stamp))) = deadlines.peek() {
            if at > now {
                break;
            }
            deadlines.pop();
            out.extend(self.take(key, stamp));
        }
        let mut entries = self.entries.borrow_mut();
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
        for key in keys {
            let record = entries.remove(key).record;
            self.forget(&record);
            out.push(record);
        }
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

    fn wake_driver(&self) {
        if let Some(driver) = self.driver.borrow_mut().take() {
            driver.wake();
        }
    }
}

/// A record's key and stamp, as its epoll event carries them.
fn event_data(key: u32, stamp: u32) -> epoll::EventData {
    epoll::EventData::new_u64(u64::from(key) << 32 | u64::from(stamp))
}

/// Parks `record` until its socket turns readable (it resumes), `deadline` passes (it is
/// dropped) or its listener closes ([`close`]). The caller must have nothing in flight on the
/// socket: whatever arrives is read by the task that takes the record up. Gives the record
/// back if it cannot be parked (no driver runs on this core, or the epoll registration
/// failed): its task keeps it.
pub fn park<R: Record>(
    table: &'static LocalKey<Table<R>>,
    record: R,
    deadline: Instant,
) -> Result<(), R> {
    table.with(|t| {
        let Some(epoll) = t.epoll.get() else {
            return Err(record);
        };
        let mut entries = t.entries.borrow_mut();
        let Ok(key) = u32::try_from(entries.vacant_key()) else {
            return Err(record); // Four billion parked connections on one core: not reached.
        };
        let stamp = t.stamps.get().wrapping_add(1);
        if let Err(e) = epoll::add(&**epoll, record.fd(), event_data(key, stamp), interest()) {
            warn!(error = %e, "cannot watch a parked connection; it waits in its task");
            return Err(record);
        }
        t.stamps.set(stamp);
        t.parks.set(t.parks.get() + 1);
        entries.insert(Entry { record, stamp });
        drop(entries);
        let deadline = t.millis(deadline);
        t.deadlines
            .borrow_mut()
            .push(Reverse((deadline, key, stamp)));
        if t.alarm.get().is_none_or(|alarm| deadline < alarm) {
            t.wake_driver();
        }
        Ok(())
    })
}

/// Drops the records whose listener is closing (their connections close).
pub fn close<R: Record>(table: &'static LocalKey<Table<R>>) {
    let mut closing = Vec::new();
    table.with(|t| t.closing(&mut closing));
    // Dropped outside the table's borrow: a connection's end touches its listener's state.
    drop(closing);
}

/// Runs a table on this core: resumes the records whose socket turned readable and drops those
/// whose deadline passed, and tells `count` how many are left after each round. Spawned once
/// per worker; until it runs, nothing parks.
pub async fn drive<R: Record>(table: &'static LocalKey<Table<R>>, count: impl Fn(usize)) {
    let epoll = match epoll::create(epoll::CreateFlags::CLOEXEC) {
        Ok(epoll) => Rc::new(epoll),
        Err(e) => {
            warn!(error = %e, "no epoll instance: idle connections wait in their tasks");
            return;
        }
    };
    let ready = match compio::runtime::fd::PollFd::new(epoll.clone()) {
        Ok(ready) => ready,
        Err(e) => {
            warn!(error = %e, "cannot poll an epoll instance: idle connections wait in their tasks");
            return;
        }
    };
    if table.with(|t| t.epoll.set(epoll.clone())).is_err() {
        return; // Driven already.
    }
    let mut events: Vec<epoll::Event> = Vec::with_capacity(EVENTS);
    let mut woken = Vec::new();
    let mut expired = Vec::new();
    loop {
        let alarm = table.with(|t| {
            let next = t.next_deadline();
            t.alarm.set(next);
            next.and_then(|at| t.instant(at))
        });
        let mut readable = std::pin::pin!(ready.read_ready());
        let waited = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = readable.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            table.with(|t| {
                let mut driver = t.driver.borrow_mut();
                if !driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *driver = Some(cx.waker().clone());
                }
                // Woken for an earlier deadline than the one it sleeps until (a record parked).
                match t.next_deadline() != t.alarm.get() {
                    true => Poll::Ready(Ok(())),
                    false => Poll::Pending,
                }
            })
        });
        let waited = match alarm {
            Some(at) => timer::until(at, waited).await.unwrap_or(Ok(())),
            None => waited.await,
        };
        if let Err(e) = waited {
            // Not seen: polling an epoll instance has no failure of its own. Not a busy loop.
            warn!(error = %e, "polling the parked connections failed");
            timer::sleep(Duration::from_millis(10)).await;
        }
        // Harvested without blocking; a full batch may have more behind it.
        loop {
            events.clear();
            let zero = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // Into the spare capacity: a `&mut Vec` would be read as a slice of its length.
            let into = rustix::buffer::spare_capacity(&mut events);
            if epoll::wait(&*epoll, into, Some(&zero)).is_err() {
                break;
            }
            table.with(|t| {
                for event in &events {
                    let data = event.data.u64();
                    woken.extend(t.take((data >> 32) as u32, data as u32));
                }
            });
            // Resumed outside the table's borrow: resuming spawns the connection's task.
            for record in woken.drain(..) {
                record.resume();
            }
            if events.len() < EVENTS {
                break;
            }
        }
        table.with(|t| t.expire(timer::now(), &mut expired));
        expired.clear();
        count(table.with(Table::len));
    }
}
