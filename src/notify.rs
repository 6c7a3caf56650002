//! A core-local one-shot broadcast: any number of tasks wait on it (each wait is a slot in a
//! slab, so waiting allocates nothing in steady state), and all of them wake when it fires.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use slab::Slab;

#[derive(Debug, Default)]
pub struct Notify {
    fired: Cell<bool>,
    /// One entry per pending wait; emptied (not removed) when fired, removed when the wait is
    /// dropped.
    waiters: RefCell<Slab<Option<Waker>>>,
}

impl Notify {
    pub fn new() -> Notify {
        Notify::default()
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Wakes every waiter; later waits complete at once.
    pub fn fire(&self) {
        self.fired.set(true);
        let wakers: Vec<Waker> = self
            .waiters
            .borrow_mut()
            .iter_mut()
            .filter_map(|(_, w)| w.take())
            .collect();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Resolves once fired.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            notify: self,
            slot: None,
        }
    }
}

/// Future of [`Notify::wait`].
pub struct Wait<'a> {
    notify: &'a Notify,
    slot: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let notify = self.notify;
        if notify.fired.get() {
            return Poll::Ready(());
        }
        let mut waiters = notify.waiters.borrow_mut();
        match self.slot {
            Some(i) => {
                if let Some(entry) = waiters.get_mut(i)
                    && !entry.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
                {
                    *entry = Some(cx.waker().clone());
                }
            }
            None => self.slot = Some(waiters.insert(Some(cx.waker().clone()))),
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            self.notify.waiters.borrow_mut().try_remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn fire_wakes_waiters_and_slots_are_reused() {
        let n = Notify::new();
        let count = Arc::new(Count(0.into()));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            let mut w = Box::pin(n.wait());
            assert!(w.as_mut().poll(&mut cx).is_pending());
            assert_eq!(w.slot, Some(0), "the slot of a dropped wait is reused");
        }
        assert_eq!(n.waiters.borrow().len(), 0, "dropped waits free their slot");
        let mut a = Box::pin(n.wait());
        let mut b = Box::pin(n.wait());
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert!(b.as_mut().poll(&mut cx).is_pending());
        n.fire();
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(a.as_mut().poll(&mut cx).is_ready());
        assert!(Box::pin(n.wait()).as_mut().poll(&mut cx).is_ready());
    }
}
