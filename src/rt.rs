//! The seam to the runtime: the stream traits, owned-buffer reads and writes, spawning, the
//! timerfd the timer wheel ticks from, and the per-core buffer recycler. Everything else reaches
//! compio through here, so the runtime can change in this one file.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::mem;
use std::time::Duration;

use compio::buf::BufResult;
/// A buffer lent by this core's io_uring buffer ring; dropping it gives it back.
pub use compio::driver::BufferRef as PooledBuf;
pub use compio::io::{AsyncRead, AsyncWrite};
use compio::io::{AsyncReadExt, AsyncWriteExt};
pub use compio::net::{TcpListener, TcpStream};

mod ahead;
pub use ahead::{ClientTcp, ReadAhead};

/// A byte stream the proxy can serve: plain TCP, or TLS over TCP (`tls`). One read and one
/// write may be in flight at once (a response is written while the request body is still being
/// read). Buffers are owned and lent to each operation, as the completion model wants. Its
/// futures never leave their core.
#[allow(async_fn_in_trait)]
pub trait Stream: 'static {
    /// Waits for bytes and returns them in a buffer of this core's io_uring buffer ring, chosen
    /// by the kernel only when data arrives: a connection waiting for its next request holds
    /// no buffer (a TLS stream hands over the plaintext in a recycled buffer). Ok(None): end of
    /// stream. An error for which [`out_of_buffers`] holds means the ring was empty: read with
    /// [`read_some`](Stream::read_some) instead.
    async fn read_pooled(&self) -> io::Result<Option<Received>>;

    /// [`read_pooled`](Stream::read_pooled) for a connection waiting for its next request;
    /// `empty`: it was read dry (keep-alive), so the kernel arms a poll at once rather than
    /// trying a receive that would find nothing.
    async fn wait_pooled(&self, empty: bool) -> io::Result<Option<Received>> {
        let _ = empty;
        self.read_pooled().await
    }

    /// Waits until a read would find something (bytes, the end of the stream, an error),
    /// holding no buffer; a stream that cannot tell returns at once.
    async fn readable(&self) -> io::Result<()> {
        Ok(())
    }

    /// Reads once, appending to `buf` (grown to at least `min_spare` free bytes first). Returns
    /// the number of bytes read; 0 means end of stream.
    async fn read_some(&self, buf: &mut Vec<u8>, min_spare: usize) -> io::Result<usize>;

    /// Writes all of `buf` and leaves it intact, so that the same bytes can be sent again (a
    /// retry on a fresh connection).
    async fn write_kept(&self, buf: &mut Vec<u8>) -> io::Result<()>;

    /// Writes all of `buf`, then clears it (keeping its capacity).
    async fn write_all(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        let res = self.write_kept(buf).await;
        buf.clear();
        res
    }

    /// Stops reading ahead of the requests served: bytes a stream received before they were
    /// asked for are appended to `into`, and from here on it is read only when asked. Called
    /// before a body or pipelined bytes are read, when no write is in flight.
    async fn settle(&self, into: &mut Vec<u8>) {
        let _ = into;
    }

    /// Ends the sending direction (after a TLS close_notify).
    async fn shutdown(&self) -> io::Result<()>;

    /// Makes the coming close abortive: the peer sees a reset, not a clean end of stream. Used
    /// when a response was cut short, so that a close-delimited body is never taken for
    /// complete.
    fn abort(&self);
}

impl Stream for TcpStream {
    async fn read_pooled(&self) -> io::Result<Option<Received>> {
        recv_pooled(self, false).await
    }

    async fn wait_pooled(&self, empty: bool) -> io::Result<Option<Received>> {
        recv_pooled(self, empty).await
    }

    async fn readable(&self) -> io::Result<()> {
        use compio::driver::ToSharedFd;
        use compio::driver::op::{Interest, PollOnce};
        let poll = PollOnce::new(self.to_shared_fd(), Interest::Readable);
        compio::runtime::submit(poll).await.0.map(drop)
    }

    async fn read_some(&self, buf: &mut Vec<u8>, min_spare: usize) -> io::Result<usize> {
        read_some(self, buf, min_spare).await
    }

    async fn write_kept(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        write_kept(self, buf).await
    }

    async fn shutdown(&self) -> io::Result<()> {
        let mut stream = self;
        AsyncWrite::shutdown(&mut stream).await
    }

    fn abort(&self) {
        let _ = self.set_zero_linger();
    }
}

/// One receive into a buffer of the core's ring, submitted as compio's `read_managed` does but
/// without its layers of futures: this future is what every idle connection holds while it
/// waits (~100 bytes here against 272 through `read_managed`; loadtest idle-memory), and a
/// waiting socket is known to be empty, so `poll_first` skips the receive attempt that would
/// find nothing.
async fn recv_pooled(tcp: &TcpStream, poll_first: bool) -> io::Result<Option<Received>> {
    // Bound first: a temporary Result would be kept across the await (88 bytes more).
    let armed = ArmedRecv::new(tcp, poll_first)?;
    armed.await
}

type RecvOp = compio::driver::op::RecvManaged<compio::driver::SharedFd<socket2::Socket>>;

/// A receive into a buffer of the core's ring, submitted on its first poll. It owns what it
/// needs (a handle on the socket, not a borrow), so it can be held without a box: a client
/// connection waits on one for its first requests (then on a receive armed ahead,
/// [`ClientTcp`]).
pub struct ArmedRecv(compio::runtime::Submit<RecvOp>);

impl ArmedRecv {
    pub fn new(tcp: &TcpStream, poll_first: bool) -> io::Result<ArmedRecv> {
        use compio::driver::op::RecvFlags;
        use compio::driver::{PollFirst, ToSharedFd};
        compio::runtime::Runtime::with_current(|rt| {
            let pool = rt.buffer_pool()?;
            let mut op = RecvOp::new(tcp.to_shared_fd(), &pool, 0, RecvFlags::empty())?;
            if poll_first {
                op.poll_first();
            }
            Ok(ArmedRecv(rt.submit(op)))
        })
    }
}

impl Future for ArmedRecv {
    type Output = io::Result<Option<Received>>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use compio::driver::ResultTakeBuffer;
        let done = std::task::ready!(std::pin::Pin::new(&mut self.0).poll(cx));
        // SAFETY: `done` is the completion of this receive: its result is the number of bytes
        // the kernel wrote into the buffer it selected, which is what take_buffer advances the
        // buffer's length to (compio's own read_managed does the same).
        let buf = unsafe { done.take_buffer() };
        std::task::Poll::Ready(buf.map(|b| b.map(Received::Ring)))
    }
}

/// What taking an armed receive back came to.
pub enum Withdrawn {
    /// Cancelled before anything arrived: nothing is in flight on the socket any more.
    Cancelled,
    /// It completed first (bytes, the end of the stream, an error): its result.
    Completed(io::Result<Option<Received>>),
    /// It could not be cancelled (a kernel without cancel-by-descriptor, Linux < 5.19, or a
    /// receive already running in the kernel's workers): it is still armed.
    Armed,
}

/// Cancels every operation in flight on a descriptor (`IORING_ASYNC_CANCEL_FD` with
/// `IORING_ASYNC_CANCEL_ALL`, Linux 5.19, the floor COOP_TASKRUN already sets). compio cancels
/// only the operation a dropped future held, and then drops whatever it completed with.
struct CancelFd(std::os::fd::RawFd);

// SAFETY: OpCode's contract is that the entry stays valid until the operation completes; this
// entry refers to no memory at all (a descriptor number and flags), so nothing can dangle, and
// its result is a count or an errno with no buffer to hand back.
unsafe impl compio::driver::OpCode for CancelFd {
    type Control = ();

    fn create_entry(&mut self, _: &mut ()) -> compio::driver::OpEntry {
        use io_uring::{opcode::AsyncCancel2, types};
        AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(self.0)).all())
            .build()
            .into()
    }
}

/// Bytes one read delivered: in a buffer of the core's ring (plain TCP), or in a buffer of the
/// core's free list (plaintext a TLS stream decrypted). Dropping it gives the buffer back.
pub enum Received {
    Ring(PooledBuf),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Received {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Received::Ring(buf) => buf,
            Received::Owned(buf) => buf,
        }
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        if let Received::Owned(buf) = self {
            recycle_buffer(mem::take(buf));
        }
    }
}

/// Size of a recycled I/O buffer. 16 KiB holds a typical request head plus a small body in one
/// read, and matches the TLS record size so a TLS layer can use the same buffers.
pub const BUF_SIZE: usize = 16 * 1024;

/// Buffers kept per core for reuse; beyond this they are freed.
const MAX_FREE_BUFFERS: usize = 1024;

/// This core's spare buffers, and the fewest it held since the last trim: that many were not
/// needed in the meantime.
struct FreeBuffers {
    list: Vec<Vec<u8>>,
    low: usize,
}

thread_local! {
    static FREE_BUFFERS: RefCell<FreeBuffers> =
        const { RefCell::new(FreeBuffers { list: Vec::new(), low: 0 }) };
    static FREE_SMALL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Size of a small recycled buffer: an encoded request head (most are a few hundred bytes)
/// without a 16 KiB buffer held per request in flight (in loadtest idle-memory's bursts of 500
/// requests, those buffers were ~0.5 KB of every idle connection's share).
pub const SMALL_BUF_SIZE: usize = 2048;

/// Small buffers kept per core for reuse.
const MAX_FREE_SMALL: usize = 1024;

/// An empty buffer with at least SMALL_BUF_SIZE capacity, from this core's free list when it
/// has one; it grows as any Vec if more is written, and [`recycle_buffer`] files it by size.
pub fn take_small_buffer() -> Vec<u8> {
    FREE_SMALL
        .with(|free| free.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(SMALL_BUF_SIZE))
}

/// An empty buffer with at least BUF_SIZE capacity, from this core's free list when it has one.
pub fn take_buffer() -> Vec<u8> {
    FREE_BUFFERS
        .with(|free| {
            let mut free = free.borrow_mut();
            let buf = free.list.pop();
            free.low = free.low.min(free.list.len());
            buf
        })
        .unwrap_or_else(|| Vec::with_capacity(BUF_SIZE))
}

/// Returns a buffer to this core's free list; oversized ones (grown for a large head) are
/// freed so that a burst of big heads does not pin memory.
pub fn recycle_buffer(mut buf: Vec<u8>) {
    buf.clear();
    let keep = |list: &mut Vec<Vec<u8>>, max: usize, buf: Vec<u8>| {
        if list.len() < max {
            list.push(buf);
        }
    };
    match buf.capacity() {
        c if (SMALL_BUF_SIZE..BUF_SIZE).contains(&c) => {
            FREE_SMALL.with(|free| keep(&mut free.borrow_mut(), MAX_FREE_SMALL, buf))
        }
        c if (BUF_SIZE..=4 * BUF_SIZE).contains(&c) => {
            FREE_BUFFERS.with(|free| keep(&mut free.borrow_mut().list, MAX_FREE_BUFFERS, buf))
        }
        _ => {}
    }
}

/// Frees the spare buffers that no request needed since the last call (the worker calls it
/// once a second): a burst of requests leaves no 16 KiB buffers behind it, and a steady load
/// keeps as many as it uses at once. Without it, the 10,000 one-request connections of
/// loadtest idle-memory (opened 500 at a time) left ~800 spare buffers: 1.3 KB per idle
/// connection. Returns how many were freed.
pub fn trim_buffers() -> usize {
    FREE_BUFFERS.with(|free| {
        let mut free = free.borrow_mut();
        let unused = free.low.min(free.list.len());
        free.list.drain(..unused);
        let left = free.list.len();
        free.list.shrink_to(left.max(16));
        free.low = left;
        unused
    })
}

/// Frees the spare buffers past `keep` (big and small alike): called as connections park, so
/// that a burst's buffers go with it instead of at the second trim after it. In loadtest
/// idle-memory, the trims' one-second lag left ~300 upstream response buffers and ~400 small
/// ones in the free lists when the proxy's RSS was taken: ~5 MB, touched.
pub fn shrink_buffers(keep: usize) {
    FREE_BUFFERS.with(|free| {
        let mut free = free.borrow_mut();
        if free.list.len() > keep {
            free.list.truncate(keep);
            free.low = free.low.min(keep);
        }
    });
    FREE_SMALL.with(|free| free.borrow_mut().truncate(keep));
}

/// Spare buffers freed at once after which the allocator is asked to give free pages back.
const TRIM_AFTER: usize = 64;

/// Frees the spare buffers no request needed since the last call ([`trim_buffers`]) and,
/// after a burst (at least 64 of them, 1 MiB), asks the allocator to return its free pages
/// to the kernel: glibc keeps freed memory mapped, so the peak of a burst would otherwise
/// stay in the process for good (HAProxy trims after its pools shrink for the same reason).
/// In loadtest idle-memory, 9,900 connections opened 500 at a time (with the smaller head
/// buffers) leave ~1,050 bytes each instead of ~1,300. `freed`: the caller knows of memory
/// freed in a burst (connections that parked and left their tasks): trim anyway. Called by
/// the worker once a second.
pub fn release_memory(freed: bool) {
    // Spare busy-state boxes are ~7 KiB: as many bytes as 64 buffers in ~150 of them.
    let boxes = crate::spare::trim();
    if trim_buffers() >= TRIM_AFTER || boxes >= 2 * TRIM_AFTER || freed {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim takes no pointer and only walks the allocator's own free lists
        // under its locks; it may be called from any thread at any time.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// io_uring submission queue entries per worker ring.
const RING_ENTRIES: u32 = 4096;
/// Rounds of ready tasks run back to back before completions are reaped anyway.
const RUN_ROUNDS: u32 = 8;

/// One core's runtime: a compio runtime on an io_uring ring of its own.
pub struct Runtime(compio::runtime::Runtime);

impl Runtime {
    pub fn new() -> io::Result<Runtime> {
        let mut proactor = compio::driver::ProactorBuilder::new();
        // COOP_TASKRUN: completions are reaped when the worker enters the kernel anyway,
        // instead of interrupting it with an IPI per completion: about -30% CPU per proxied
        // request.
        proactor
            .capacity(RING_ENTRIES)
            .coop_taskrun(true)
            .taskrun_flag(true)
            .buffer_pool_size(std::num::NonZeroU16::MIN.saturating_add(RING_BUFFERS - 1))
            .buffer_pool_buffer_len(RING_BUFFER_SIZE);
        compio::runtime::RuntimeBuilder::new()
            .with_proactor(proactor)
            .build()
            .map(Runtime)
    }

    /// Runs `fut` to completion on this thread, with the tasks it spawns.
    ///
    /// The loop is ours rather than compio's `block_on`, which reaps completions with a
    /// zero-timeout wait whenever tasks are still ready: each such `io_uring_enter` arms and
    /// cancels a kernel hrtimer (VM exits on this kind of machine), a quarter of the proxy's
    /// CPU with a new connection per request. Here ready tasks run a few more rounds first;
    /// when none are left the ring waits without a timeout (timers tick from a timerfd).
    pub fn run<F: Future>(&self, fut: F) -> F::Output {
        let rt = &self.0;
        rt.enter(|| {
            let waker = rt.waker();
            let mut cx = std::task::Context::from_waker(&waker);
            let mut fut = std::pin::pin!(fut);
            let mut rounds = 0;
            loop {
                if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                    return out;
                }
                if rt.run() {
                    rounds += 1;
                    if rounds < RUN_ROUNDS {
                        continue;
                    }
                    // Still busy: reap what has completed, without sleeping.
                    rt.poll_with(Some(Duration::ZERO));
                } else {
                    rt.poll();
                }
                rounds = 0;
            }
        })
    }
}

/// Buffers in each core's io_uring buffer ring, and their size. Reads that wait for a request
/// head use them, so a waiting connection holds no memory of its own; 256 x 4 KiB = 1 MiB per
/// core. A burst that empties the ring falls back to owned buffers.
pub const RING_BUFFERS: u16 = 256;
pub const RING_BUFFER_SIZE: usize = 4096;

/// Whether a pooled read failed only because the buffer ring was empty (compio reports the
/// kernel's ENOBUFS as ResourceBusy, which a recv cannot otherwise return).
pub fn out_of_buffers(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ResourceBusy || e.raw_os_error() == Some(libc::ENOBUFS)
}

/// Reads once, appending to `buf` (growing it to at least `min_spare` free bytes first).
/// Returns the number of bytes read; 0 means end of stream.
async fn read_some<S: AsyncRead>(
    mut io: S,
    buf: &mut Vec<u8>,
    min_spare: usize,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < min_spare {
        buf.reserve(min_spare);
    }
    let owned = mem::take(buf);
    let BufResult(res, owned) = io.append(owned).await;
    *buf = owned;
    res
}

/// Writes all of `buf` and leaves it intact.
async fn write_kept<S: AsyncWrite>(mut io: S, buf: &mut Vec<u8>) -> io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let owned = mem::take(buf);
    let BufResult(res, owned) = io.write_all(owned).await;
    *buf = owned;
    res
}

/// Moves the unconsumed bytes of a read buffer (`buf[*pos..]`) to its front.
pub fn compact(buf: &mut Vec<u8>, pos: &mut usize) {
    if *pos >= buf.len() {
        buf.clear();
    } else if *pos > 0 {
        buf.drain(..*pos);
    }
    *pos = 0;
}

/// Sleeps on the runtime's own timer: only where the core's timer wheel cannot tick (no
/// timerfd), since a pending runtime timer puts a timeout on every ring wait.
pub async fn runtime_sleep(d: Duration) {
    compio::time::sleep(d).await
}

/// A periodic timerfd read through the ring: the tick source of the core's timer wheel.
pub struct TickFd(compio::runtime::fd::AsyncFd<std::os::fd::OwnedFd>);

impl TickFd {
    pub fn new() -> io::Result<TickFd> {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        // Blocking on purpose: io_uring returns EAGAIN for a non-blocking fd instead of waiting.
        let fd = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC)?;
        Ok(TickFd(compio::runtime::fd::AsyncFd::new(fd)?))
    }

    /// Fires every `period` from now on; zero disarms it.
    pub fn set(&self, period: Duration) -> io::Result<()> {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        let ts = Timespec {
            tv_sec: period.as_secs() as _,
            tv_nsec: period.subsec_nanos() as _,
        };
        let spec = Itimerspec {
            it_interval: ts,
            it_value: ts,
        };
        timerfd_settime(&*self.0, TimerfdTimerFlags::empty(), &spec)?;
        Ok(())
    }

    /// Waits for the next expiry; `buf` (8 bytes of capacity) is lent to the read.
    pub async fn wait(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        let mut fd = &self.0;
        let BufResult(res, b) = fd.read(mem::take(buf)).await;
        *buf = b;
        res.map(drop)
    }
}

/// Panics caught in tasks (and anywhere else in the process) since it started.
static PANICS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many panics the process has had (`server.panics`).
pub fn panics() -> u64 {
    PANICS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Logs and counts every panic, once installed (once per process). A panic in a task ends
/// that task alone: the runtime catches it where it polls the task (compio wraps each poll in
/// `catch_unwind`), so one connection's bug closes that connection, and its guards (the
/// connection counts, the pooled upstream) are dropped as the stack unwinds. The worker and
/// every other connection go on.
pub fn count_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Rare, and from any thread: a locked increment is fine here.
            PANICS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("?");
            tracing::error!(thread = name, "panic: {info}");
            previous(info);
        }));
    });
}

/// Runs a task on this core until it ends; it never moves to another core.
pub fn spawn<F: Future<Output = ()> + 'static>(fut: F) {
    compio::runtime::spawn(fut).detach();
}

/// A task that is cancelled when this handle is dropped.
pub struct Task(compio::runtime::JoinHandle<()>);

impl Task {
    /// Lets the task run on without this handle.
    pub fn detach(self) {
        self.0.detach();
    }
}

/// Resolves when the task has ended (a panic in it included).
impl Future for Task {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

/// Runs a task on this core until it ends or its handle is dropped.
pub fn spawn_handle<F: Future<Output = ()> + 'static>(fut: F) -> Task {
    Task(compio::runtime::spawn(fut))
}

/// Connects to `addr` within `limit`, with Nagle off (requests are written whole).
pub async fn connect(addr: std::net::SocketAddr, limit: Duration) -> io::Result<TcpStream> {
    match crate::timer::within(limit, TcpStream::connect(addr)).await {
        Some(Ok(stream)) => {
            stream.set_nodelay(true)?;
            Ok(stream)
        }
        Some(Err(e)) => Err(e),
        None => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// Counts its drops: stands for a connection's guards.
    struct Guard(Rc<Cell<u32>>);

    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn spare_buffers_no_request_needed_for_a_whole_interval_are_freed() {
        trim_buffers();
        let bufs: Vec<Vec<u8>> = (0..4).map(|_| take_buffer()).collect();
        bufs.into_iter().for_each(recycle_buffer);
        // Put back during this interval: not known to be unneeded yet.
        assert_eq!(trim_buffers(), 0);
        // One taken again during the next interval: the other three were not needed.
        recycle_buffer(take_buffer());
        assert_eq!(trim_buffers(), 3);
        assert_eq!(trim_buffers(), 1, "then the last one, left unused too");
        assert_eq!(trim_buffers(), 0);
    }

    #[test]
    fn a_panicking_task_ends_alone_and_is_counted() {
        count_panics();
        let before = panics();
        let rt = Runtime::new().expect("runtime");
        let dropped = Rc::new(Cell::new(0));
        let served = rt.run(async {
            let guard = Guard(dropped.clone());
            let failing = spawn_handle(async move {
                let _guard = guard;
                let bug: Option<u32> = None;
                // A bug in one connection's task.
                #[allow(clippy::unnecessary_literal_unwrap)]
                let _ = bug.expect("a bug");
            });
            failing.await;
            // The runtime and other tasks go on.
            let other = spawn_handle(async {});
            other.await;
            true
        });
        assert!(served);
        assert_eq!(dropped.get(), 1, "the task's guards were dropped");
        assert!(panics() > before, "counted");
    }
}
