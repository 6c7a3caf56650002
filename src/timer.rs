//! Per-core coarse timers for I/O deadlines: a hashed wheel of 10 ms ticks, driven by one task
//! per core. A timed read or write costs a slab entry and a slot push (no runtime timer, no
//! clock read), and its future grows by a few words instead of the ~700 bytes of the runtime's
//! `timeout` combinator.
//!
//! Deadlines here guard against stalled peers (header, idle, body and response timeouts);
//! firing up to one tick late is fine for them, and they never fire early.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use pin_project_lite::pin_project;
use slab::Slab;

use crate::rt;

/// Resolution of the wheel (`now()` assumes 10 ms).
pub const TICK: Duration = Duration::from_millis(10);
/// Slots of the wheel: one revolution is 10.24 s; a later deadline waits in its slot for more
/// revolutions.
const SLOTS: u64 = 1024;

#[derive(Debug)]
struct Entry {
    /// Tick at or after which it fires.
    tick: u64,
    /// The wheel's arm count when this entry was armed, so that a stale handle to a reused
    /// entry is recognised.
    generation: u32,
    /// Position in its slot's list (while armed).
    position: u32,
    waker: Option<Waker>,
    /// Fired (taken out of its slot) and not yet released.
    fired: bool,
}

/// A timer's handle: its entry and the entry's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Handle {
    index: u32,
    generation: u32,
}

#[derive(Debug)]
struct Wheel {
    base: Instant,
    /// Ticks since `base` at the last advance.
    tick: Cell<u64>,
    /// Armed and fired timers; an entry lives from arm to release.
    entries: RefCell<Slab<Entry>>,
    /// Arms so far, for entry generations.
    arms: Cell<u32>,
    slots: RefCell<Vec<Vec<u32>>>,
    armed: Cell<usize>,
    /// The driving task, parked while no timer is armed.
    driver: RefCell<Option<Waker>>,
}

thread_local! {
    static WHEEL: Wheel = Wheel::new();
}

impl Wheel {
    fn new() -> Wheel {
        Wheel {
            base: Instant::now(),
            tick: Cell::new(0),
            entries: RefCell::new(Slab::new()),
            arms: Cell::new(0),
            slots: RefCell::new((0..SLOTS).map(|_| Vec::new()).collect()),
            armed: Cell::new(0),
            driver: RefCell::new(None),
        }
    }

    fn tick_of(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.base);
        (since.as_nanos() / TICK.as_nanos()) as u64
    }

    /// The current tick: the coarse clock while the driver runs, the real one otherwise (the
    /// coarse clock is stale while no timer is armed).
    fn now_tick(&self) -> u64 {
        if self.armed.get() == 0 {
            self.tick.set(self.tick_of(Instant::now()));
        }
        self.tick.get()
    }

    fn arm(&self, tick: u64, waker: &Waker) -> Handle {
        let mut entries = self.entries.borrow_mut();
        let mut slots = self.slots.borrow_mut();
        let slot = &mut slots[(tick % SLOTS) as usize];
        let generation = self.arms.get().wrapping_add(1);
        self.arms.set(generation);
        let index = entries.insert(Entry {
            tick,
            generation,
            position: slot.len() as u32,
            waker: Some(waker.clone()),
            fired: false,
        }) as u32;
        slot.push(index);
        let was_idle = self.armed.get() == 0;
        self.armed.set(self.armed.get() + 1);
        if was_idle && let Some(driver) = self.driver.borrow_mut().take() {
            driver.wake();
        }
        Handle { index, generation }
    }

    /// Whether the timer fired; otherwise refreshes its waker.
    fn check(&self, h: Handle, waker: &Waker) -> bool {
        let mut entries = self.entries.borrow_mut();
        match entries.get_mut(h.index as usize) {
            Some(e) if e.generation == h.generation => {
                if e.fired {
                    return true;
                }
                if !e.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    e.waker = Some(waker.clone());
                }
                false
            }
            _ => true,
        }
    }

    /// Releases a timer, armed or fired.
    fn release(&self, h: Handle) {
        let mut entries = self.entries.borrow_mut();
        match entries.get(h.index as usize) {
            Some(e) if e.generation == h.generation => {}
            _ => return,
        }
        let e = entries.remove(h.index as usize);
        if !e.fired {
            let mut slots = self.slots.borrow_mut();
            let slot = &mut slots[(e.tick % SLOTS) as usize];
            let position = e.position as usize;
            slot.swap_remove(position);
            if let Some(moved) = slot
                .get(position)
                .and_then(|&m| entries.get_mut(m as usize))
            {
                moved.position = position as u32;
            }
            self.armed.set(self.armed.get() - 1);
        }
    }

    /// Fires every armed timer whose tick has come.
    fn advance(&self, now: Instant) {
        let target = self.tick_of(now);
        let from = self.tick.get();
        if target <= from {
            return;
        }
        self.tick.set(target);
        let mut wake = Vec::new();
        {
            let mut entries = self.entries.borrow_mut();
            let mut slots = self.slots.borrow_mut();
            let steps = (target - from).min(SLOTS);
            for t in (target + 1 - steps)..=target {
                let slot = &mut slots[(t % SLOTS) as usize];
                let mut i = 0;
                while i < slot.len() {
                    let index = slot[i] as usize;
                    let due = entries[index].tick <= target;
                    if due {
                        slot.swap_remove(i);
                        if let Some(&moved) = slot.get(i) {
                            entries[moved as usize].position = i as u32;
                        }
                        let e = &mut entries[index];
                        e.fired = true;
                        if let Some(w) = e.waker.take() {
                            wake.push(w);
                        }
                        self.armed.set(self.armed.get() - 1);
                    } else {
                        i += 1;
                    }
                }
            }
        }
        for w in wake {
            w.wake();
        }
    }
}

/// Runs this core's wheel: ticks while any timer is armed, parks otherwise. Spawned once per
/// worker; deadlines on a thread without a driver never fire.
///
/// The ticks come from a periodic timerfd read through the ring, not from a runtime timer: a
/// pending runtime timer makes every wait for completions pass a timeout to io_uring_enter,
/// which arms and cancels a kernel hrtimer per wait (a VM exit each on this kind of machine):
/// ~23% of the proxy's CPU with a new connection per request. The timerfd is armed only while
/// timers are.
pub async fn drive() {
    let ticker = match Ticker::new() {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!("no timerfd ({e}); timers tick on the runtime's clock");
            None
        }
    };
    loop {
        std::future::poll_fn(|cx| {
            WHEEL.with(|w| {
                if w.armed.get() > 0 {
                    Poll::Ready(())
                } else {
                    *w.driver.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
        })
        .await;
        match &ticker {
            Some(t) => t.run().await,
            None => {
                rt::runtime_sleep(TICK).await;
                WHEEL.with(|w| w.advance(Instant::now()));
            }
        }
    }
}

/// The wheel's tick source: a timerfd, armed only while timers are.
struct Ticker {
    fd: rt::TickFd,
}

impl Ticker {
    fn new() -> std::io::Result<Ticker> {
        Ok(Ticker {
            fd: rt::TickFd::new()?,
        })
    }

    /// Ticks the wheel until no timer is armed, then disarms the timerfd.
    async fn run(&self) {
        if self.fd.set(TICK).is_err() {
            rt::runtime_sleep(TICK).await;
            WHEEL.with(|w| w.advance(Instant::now()));
            return;
        }
        let mut buf = Vec::with_capacity(8);
        loop {
            if self.fd.wait(&mut buf).await.is_err() {
                break;
            }
            let idle = WHEEL.with(|w| {
                w.advance(Instant::now());
                w.armed.get() == 0
            });
            if idle {
                break;
            }
        }
        let _ = self.fd.set(Duration::ZERO);
    }
}

/// Sleeps for `d` on this core's wheel (at most a tick late).
pub async fn sleep(d: Duration) {
    within(d, std::future::pending::<()>()).await;
}

/// This core's coarse clock: at most a tick old while timers run.
pub fn now() -> Instant {
    WHEEL.with(|w| w.base + Duration::from_millis(w.now_tick() * 10))
}

pin_project! {
    /// A future that gives up at a deadline: Some(output), or None once the deadline passed
    /// (the inner future, and its I/O, are then dropped by the caller).
    pub struct Deadline<F> {
        #[pin]
        fut: F,
        at: At,
        handle: Option<Handle>,
    }

    impl<F> PinnedDrop for Deadline<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(h) = this.project().handle.take() {
                WHEEL.with(|w| w.release(h));
            }
        }
    }
}

/// When a deadline falls: after a duration from first poll, or at an instant.
#[derive(Debug, Clone, Copy)]
enum At {
    After(Duration),
    Instant(Instant),
}

/// Runs `fut` for at most `limit` (counted from its first poll, rounded up to the next tick).
pub fn within<F: Future>(limit: Duration, fut: F) -> Deadline<F> {
    Deadline {
        fut,
        at: At::After(limit),
        handle: None,
    }
}

/// Runs `fut` until `deadline` (rounded up to the next tick).
pub fn until<F: Future>(deadline: Instant, fut: F) -> Deadline<F> {
    Deadline {
        fut,
        at: At::Instant(deadline),
        handle: None,
    }
}

impl<F: Future> Future for Deadline<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            if let Some(h) = this.handle.take() {
                WHEEL.with(|w| w.release(h));
            }
            return Poll::Ready(Some(v));
        }
        WHEEL.with(|w| {
            match *this.handle {
                Some(h) => {
                    if w.check(h, cx.waker()) {
                        w.release(h);
                        *this.handle = None;
                        return Poll::Ready(None);
                    }
                }
                None => {
                    let now = w.now_tick();
                    // Rounded up and one tick more: never early, at most a tick late.
                    let tick = match *this.at {
                        At::After(d) => now + (d.as_nanos().div_ceil(TICK.as_nanos()) as u64) + 1,
                        At::Instant(i) => w.tick_of(i) + 1,
                    };
                    if tick <= now {
                        return Poll::Ready(None);
                    }
                    *this.handle = Some(w.arm(tick, cx.waker()));
                }
            }
            Poll::Pending
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::pending;

    fn run<F: Future>(f: F) -> F::Output {
        rt::Runtime::new().expect("runtime").run(async move {
            rt::spawn(drive());
            f.await
        })
    }

    #[test]
    fn fires_after_the_limit_never_before() {
        let (result, took) = run(async {
            let start = Instant::now();
            let r = within(Duration::from_millis(50), pending::<()>()).await;
            (r, start.elapsed())
        });
        assert_eq!(result, None);
        assert!(took >= Duration::from_millis(50), "{took:?}");
        assert!(took < Duration::from_millis(500), "{took:?}");
    }

    #[test]
    fn ready_future_wins_and_releases_its_entry() {
        let armed = run(async {
            for _ in 0..1000 {
                let v = within(Duration::from_secs(5), async {
                    rt::runtime_sleep(Duration::from_micros(1)).await;
                    7
                })
                .await;
                assert_eq!(v, Some(7));
            }
            WHEEL.with(|w| (w.armed.get(), w.entries.borrow().capacity()))
        });
        assert_eq!(armed.0, 0, "no timer stays armed");
        assert!(armed.1 <= 4, "entries are reused: capacity {}", armed.1);
    }

    #[test]
    fn many_deadlines_fire_in_order_of_their_limits() {
        let order = run(async {
            let order = std::rc::Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            for ms in [120u64, 30, 70, 10, 1500] {
                let order = order.clone();
                tasks.push(rt::spawn_handle(async move {
                    if within(Duration::from_millis(ms), pending::<()>())
                        .await
                        .is_none()
                    {
                        order.borrow_mut().push(ms);
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            order.borrow().clone()
        });
        assert_eq!(order, vec![10, 30, 70, 120, 1500]);
    }

    #[test]
    fn dropped_deadlines_leave_nothing_armed() {
        let armed = run(async {
            for i in 0..100u64 {
                let f = within(Duration::from_millis(1000 + i), pending::<()>());
                let mut f = std::pin::pin!(f);
                let _ = std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await;
            }
            WHEEL.with(|w| w.armed.get())
        });
        assert_eq!(armed, 0);
    }
}
