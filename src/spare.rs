//! Per-core spare allocations for the state of busy connections: the box a connection's
//! request state lives in while requests are under way (~7 KiB) goes back to a core-local
//! list when the busy period ends, and the next busy period takes it from there — one
//! allocation and one free fewer per keep-alive request (tests/allocations.rs), and a burst's
//! boxes are reused instead of scattered through the heap between long-lived records.
//!
//! Spares no busy period needed for a second are freed ([`trim`], with the I/O buffers), and
//! when connections go idle ([`shrink`], as they park) those past the number still busy go at
//! once: a burst's boxes kept until the next trim cost ~80 bytes per idle connection in
//! loadtest idle-memory's window.

use std::alloc::Layout;
use std::cell::RefCell;
use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// Spares kept per core; beyond this they are freed.
const MAX_SPARES: usize = 1024;

/// Spares [`shrink`] keeps beyond the connections busy now.
const SLACK: usize = 8;

/// This core's spare allocations with their layout, the fewest it held since the last trim
/// (that many were not needed in the meantime), and how many connections hold a box now.
struct Spares {
    list: Vec<(Layout, NonNull<u8>)>,
    low: usize,
    busy: usize,
}

thread_local! {
    static SPARES: RefCell<Spares> =
        const { RefCell::new(Spares { list: Vec::new(), low: 0, busy: 0 }) };
}

impl Drop for Spares {
    fn drop(&mut self) {
        for (layout, ptr) in self.list.drain(..) {
            free(layout, ptr);
        }
    }
}

fn free(layout: Layout, ptr: NonNull<u8>) {
    // SAFETY: every spare came from the global allocator through `Box<MaybeUninit<F>>` with
    // exactly this layout (Layout::new::<F>(), never zero-sized: those are not kept), holds no
    // value, and is owned by the list alone: freeing it is what that box's drop would do.
    unsafe { std::alloc::dealloc(ptr.as_ptr(), layout) }
}

/// A pinned future in a box that, when the future is done or dropped, goes back to this
/// core's spares.
pub struct Busy<F> {
    ptr: NonNull<F>,
}

impl<F: Future> Busy<F> {
    /// Builds `make`'s future in a spare box of its size, or a new one.
    #[inline(always)]
    pub fn new(make: impl FnOnce() -> F) -> Busy<F> {
        let layout = Layout::new::<F>();
        let spare = SPARES.with(|s| {
            let mut s = s.borrow_mut();
            s.busy += 1;
            let at = s.list.iter().rposition(|(l, _)| *l == layout)?;
            let (_, ptr) = s.list.swap_remove(at);
            s.low = s.low.min(s.list.len());
            Some(ptr)
        });
        let mut boxed: Box<MaybeUninit<F>> = match spare {
            // SAFETY: a spare of this layout came from a `Box<MaybeUninit<G>>` whose layout is
            // exactly `Layout::new::<F>()`, and holds no value.
            Some(ptr) => unsafe { Box::from_raw(ptr.cast::<MaybeUninit<F>>().as_ptr()) },
            None => Box::new_uninit(),
        };
        // Written in place, as Box::write does: moving the future in copied the whole busy
        // state (~590 instructions of memcpy per request, callgrind).
        boxed.write(make());
        let ptr = NonNull::from(Box::leak(boxed)).cast::<F>();
        Busy { ptr }
    }
}

impl<F: Future> Future for Busy<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the future lives in its own allocation, never moved until it is dropped in
        // place (Drop), so pinning it through the pointer is sound; `Busy` owns it, and
        // `&mut self` makes this the only access.
        unsafe { Pin::new_unchecked(&mut *self.ptr.as_ptr()) }.poll(cx)
    }
}

impl<F> Drop for Busy<F> {
    fn drop(&mut self) {
        let layout = Layout::new::<F>();
        // SAFETY: the future was initialised in `new` and not dropped since; it is dropped in
        // place, where it was pinned.
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        // SAFETY: allocated as a `Box<MaybeUninit<F>>`, now without a value: owned by this
        // box again, or by the list.
        let spare = unsafe { Box::from_raw(self.ptr.cast::<MaybeUninit<F>>().as_ptr()) };
        let _ = SPARES.try_with(|s| {
            let mut s = s.borrow_mut();
            s.busy = s.busy.saturating_sub(1);
            // A zero-sized future has no allocation to keep.
            if s.list.len() < MAX_SPARES && layout.size() > 0 {
                let ptr = NonNull::from(Box::leak(spare)).cast::<u8>();
                s.list.push((layout, ptr));
            }
        });
    }
}

/// Frees the spares no busy period needed since the last call (the worker calls it once a
/// second). Returns how many were freed.
pub fn trim() -> usize {
    SPARES.with(|s| {
        let mut s = s.borrow_mut();
        let unused = s.low.min(s.list.len());
        let freed: Vec<(Layout, NonNull<u8>)> = s.list.drain(..unused).collect();
        let left = s.list.len();
        s.low = left;
        drop(s);
        for (layout, ptr) in freed {
            free(layout, ptr);
        }
        unused
    })
}

/// Frees the spares past the number of connections busy now (and a few): called as
/// connections go idle, so that a burst's boxes do not outlive it. Returns how many are kept
/// (the busy connections and the slack).
pub fn shrink() -> usize {
    SPARES.with(|s| {
        let mut s = s.borrow_mut();
        let keep = s.busy + SLACK;
        while s.list.len() > keep {
            if let Some((layout, ptr)) = s.list.pop() {
                free(layout, ptr);
            }
        }
        s.low = s.low.min(s.list.len());
        keep
    })
}
