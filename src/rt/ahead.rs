//! Receives that run ahead: one multishot receive armed on a socket across the requests it
//! carries (a plaintext client connection between keep-alive requests, a pooled plain upstream
//! connection between checkins), instead of one receive submitted per read.
//!
//! Per read this saves a submission, the kernel's arming of a poll on the socket, and
//! compio's record of the operation (an allocation, a hash-set insert and removal): a proxied
//! plain keep-alive request went from 22,085 to 19,147 user-space instructions
//! (loadtest/instructions) and from 4.1 to 2.1 allocations (tests/allocations.rs). The kernel
//! picks a buffer of the core's ring for each arrival.
//!
//! While the receive is armed, every read of the socket takes its bytes from it, in order: a
//! second receive could take bytes between two of its completions. The kernel moves arrivals
//! into the core's shared ring as they come, whether or not they are asked for, so the receive
//! is taken back, its bytes kept ([`ReadAhead::settle`]), before a stream is read at someone
//! else's pace: a request body or pipelined bytes (read as fast as the upstream takes them), a
//! response body that goes on past its first read (as fast as the client takes it). Otherwise
//! one upload or download would spread over the ring (256 buffers: read through the receive,
//! one stalled 8 MiB upload held 241 of them) and leave the core's other connections to read
//! into buffers of their own (`ring_exhausted`). What a client sends unasked while its bodiless
//! request is served can still land in the ring, at most until its response is written.
//!
//! A client connection arms it only once it has carried two requests and waits for a third (a
//! connection per request never pays for its cancellation at the close, and one that goes
//! idle after a request or two, the common case for a browser's spare connections, never
//! allocates it: loadtest idle-memory, 9,900 connections of one request each, measured 520-579
//! bytes per idle connection when the first keep-alive wait armed it, the freed records left
//! among the parked ones, and 478-515 this way); a parked connection has none.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use compio::buf::BufResult;
use futures_util::Stream as _;

use super::{
    ArmedRecv, CancelFd, Received, Stream, TcpStream, Withdrawn, out_of_buffers, read_some,
};

type RecvMulti = compio::driver::op::RecvMulti<compio::driver::SharedFd<socket2::Socket>>;

/// The armed multishot receive: compio's stream of its completions, each a buffer of the ring.
struct Ahead(compio::runtime::SubmitMultiManaged<RecvMulti>);

impl Ahead {
    fn arm(tcp: &TcpStream) -> io::Result<Box<Ahead>> {
        use compio::driver::ToSharedFd;
        use compio::driver::op::RecvFlags;
        compio::runtime::Runtime::with_current(|rt| {
            let pool = rt.buffer_pool()?;
            let op = RecvMulti::new(tcp.to_shared_fd(), &pool, 0, RecvFlags::empty())?;
            Ok(Box::new(Ahead(rt.submit_multi(op).into_managed(pool))))
        })
    }

    fn is_over(&self) -> bool {
        futures_util::stream::FusedStream::is_terminated(&self.0)
    }
}

/// A multishot receive armed ahead on a socket, or none: 8 bytes (the receive is boxed, and
/// absent while none is armed). The socket is the caller's, passed to each step.
#[derive(Default)]
pub struct ReadAhead(Cell<Option<Box<Ahead>>>);

/// One completion of the armed receive, as a read reports it: None when none is armed any
/// more (none was, it ended, or a withdrawal ended it: ECANCELED).
type Next = Option<io::Result<Option<Received>>>;

impl ReadAhead {
    pub const fn new() -> ReadAhead {
        ReadAhead(Cell::new(None))
    }

    /// Arms the receive on `tcp` unless one is armed. Without it (its box or submission
    /// failed), reads are single receives, as before it existed.
    pub fn arm(&self, tcp: &TcpStream) {
        if !self.is_armed() {
            self.0.set(Ahead::arm(tcp).ok());
        }
    }

    pub fn is_armed(&self) -> bool {
        // Cell<Option<Box>>: look without taking for good.
        let ahead = self.0.take();
        let armed = ahead.as_ref().is_some_and(|a| !a.is_over());
        self.0.set(ahead);
        armed
    }

    /// The next completion of the armed receive, ECANCELED included. The receive is taken out
    /// of its cell only within each poll, so a read dropped while it waits (a timeout) leaves
    /// it armed with whatever it has received.
    fn poll_raw(&self, cx: &mut std::task::Context<'_>) -> Poll<Next> {
        let Some(mut ahead) = self.0.take() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(&mut ahead.0).poll_next(cx);
        if !ahead.is_over() || polled.is_pending() {
            self.0.set(Some(ahead));
        }
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Ok(buf))) => {
                Poll::Ready(Some(Ok(buf.filter(|b| !b.is_empty()).map(Received::Ring))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
        }
    }

    async fn next_raw(&self) -> Next {
        std::future::poll_fn(|cx| self.poll_raw(cx)).await
    }

    /// [`next_raw`](ReadAhead::next_raw), where a receive a withdrawal ended counts as none.
    pub async fn next(&self) -> Next {
        match self.next_raw().await {
            Some(Err(e)) if e.raw_os_error() == Some(libc::ECANCELED) => None,
            next => next,
        }
    }

    /// What the armed receive has completed with so far, without waiting: Some for bytes, the
    /// end of the stream or an error (a pooled upstream connection that received anything
    /// while idle cannot be reused), None while it waits or when none is armed (a withdrawal
    /// ended it).
    /// `watch` is woken when the receive completes later.
    pub fn peek(&self, watch: &std::task::Waker) -> Next {
        let mut cx = std::task::Context::from_waker(watch);
        match self.poll_raw(&mut cx) {
            Poll::Ready(Some(Err(e))) if e.raw_os_error() == Some(libc::ECANCELED) => None,
            Poll::Ready(next) => next,
            Poll::Pending => None,
        }
    }

    /// Cancels the armed receive (every operation in flight on the socket: only when no write
    /// is) and waits, within 100 ms, for its first completion after: ECANCELED, or bytes that
    /// beat the cancellation.
    async fn cancel(&self, tcp: &TcpStream) -> Option<Next> {
        if !cancel_all(tcp).await {
            return None;
        }
        crate::timer::within(Duration::from_millis(100), self.next_raw()).await
    }

    /// Takes the armed receive back from the ring (no write is in flight on `tcp`): whatever
    /// raced the withdrawal is returned, and nothing is lost.
    pub async fn withdraw(&self, tcp: &TcpStream) -> Withdrawn {
        if !self.is_armed() {
            return Withdrawn::Cancelled;
        }
        match self.cancel(tcp).await {
            Some(None) => Withdrawn::Cancelled,
            Some(Some(Err(e))) if e.raw_os_error() == Some(libc::ECANCELED) => Withdrawn::Cancelled,
            // Bytes (or the end of the stream) came first; the receive ends with ECANCELED
            // after them, and reads on from there.
            Some(Some(done)) => Withdrawn::Completed(done),
            None => Withdrawn::Armed,
        }
    }

    /// Takes the receive back (no write is in flight on `tcp`), appending what it had
    /// received to `into`: from here on `tcp` is read only when asked.
    pub async fn settle(&self, tcp: &TcpStream, into: &mut Vec<u8>) {
        if !self.is_armed() {
            return;
        }
        let mut next = self.cancel(tcp).await;
        let deadline = crate::timer::now() + Duration::from_millis(100);
        while let Some(Some(Ok(Some(bytes)))) = next {
            into.extend_from_slice(&bytes);
            next = crate::timer::until(deadline, self.next_raw()).await;
        }
        // Over (ECANCELED, the end of the stream, an error: a receive of the socket's own
        // finds the end or the error again), or still armed (the cancellation refused or
        // slow): reads go on taking from it, in order, either way.
        if !self.is_armed() {
            self.0.set(None);
        }
    }

    /// Reads once from `tcp`, appending to `buf`: from the armed receive while there is one.
    pub async fn read_some(
        &self,
        tcp: &TcpStream,
        buf: &mut Vec<u8>,
        min_spare: usize,
    ) -> io::Result<usize> {
        match self.next().await {
            Some(Ok(Some(bytes))) => {
                buf.extend_from_slice(&bytes);
                Ok(bytes.len())
            }
            Some(Ok(None)) => Ok(0),
            // The ring ran dry and ended the receive: a receive into `buf` instead.
            Some(Err(e)) if out_of_buffers(&e) => read_some(tcp, buf, min_spare).await,
            Some(Err(e)) => Err(e),
            None => read_some(tcp, buf, min_spare).await,
        }
    }
}

/// Cancels every operation in flight on `tcp` (one `IORING_OP_ASYNC_CANCEL` by descriptor:
/// only when no write is in flight). False when the kernel refused (Linux < 5.19, or a
/// receive running in the kernel's workers): what was armed stays armed.
async fn cancel_all(tcp: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let cancel = compio::runtime::Runtime::with_current(|rt| rt.submit(CancelFd(tcp.as_raw_fd())));
    let BufResult(cancelled, _) = cancel.await;
    match cancelled {
        Ok(_) => true,
        // None in flight: it completed already, and its result waits to be taken.
        Err(e) => e.raw_os_error() == Some(libc::ENOENT),
    }
}

/// What a client connection waiting for its next request has armed, kept across the waits of
/// one idle period (a wait that times out leaves it armed): its receive ahead, or a receive
/// of its own (a connection that has not carried two requests yet).
pub enum Waiting<'a> {
    Ahead(&'a ClientTcp),
    Once(&'a TcpStream, ArmedRecv),
}

/// The first bytes of the next request (Ok(None): the end of the stream). A future of its
/// own, polled through a reference: the idle task holds nothing more than this while it waits
/// (a unit test in conn keeps that task under 512 bytes).
impl Future for Waiting<'_> {
    type Output = io::Result<Option<Received>>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match this {
                Waiting::Ahead(conn) => match conn.ahead.poll_raw(cx) {
                    Poll::Pending => return Poll::Pending,
                    // Ended by a withdrawal that raced its bytes: a receive of its own now.
                    Poll::Ready(None) => {}
                    Poll::Ready(Some(Err(e))) if e.raw_os_error() == Some(libc::ECANCELED) => {}
                    Poll::Ready(Some(got)) => return Poll::Ready(got),
                },
                Waiting::Once(_, recv) => return Pin::new(recv).poll(cx),
            }
            if let Waiting::Ahead(conn) = this {
                let tcp = &conn.tcp;
                *this = Waiting::Once(tcp, ArmedRecv::new(tcp, true)?);
            }
        }
    }
}

impl Waiting<'_> {
    /// Takes what is armed back from the ring before the connection parks (no write is in
    /// flight): whatever raced the withdrawal is returned, and nothing is lost (dropping an
    /// armed receive instead would discard a completion that raced it).
    pub async fn withdraw(&mut self) -> Withdrawn {
        match self {
            Waiting::Ahead(conn) => conn.ahead.withdraw(&conn.tcp).await,
            Waiting::Once(tcp, recv) => {
                if !cancel_all(tcp).await {
                    return Withdrawn::Armed;
                }
                // Its completion is in the ring by now; bounded all the same (one still
                // running in an io-wq worker completes only when bytes come).
                match crate::timer::within(Duration::from_millis(100), &mut *recv).await {
                    Some(Err(e)) if e.raw_os_error() == Some(libc::ECANCELED) => {
                        Withdrawn::Cancelled
                    }
                    Some(done) => Withdrawn::Completed(done),
                    None => Withdrawn::Armed,
                }
            }
        }
    }
}

/// A plaintext TCP connection from a client, with its receive armed ahead while it waits
/// between keep-alive requests.
pub struct ClientTcp {
    tcp: TcpStream,
    ahead: ReadAhead,
}

impl ClientTcp {
    pub fn new(tcp: TcpStream) -> ClientTcp {
        ClientTcp {
            tcp,
            ahead: ReadAhead::new(),
        }
    }

    /// Arms the receive ahead, for a connection that waits for its next keep-alive request
    /// and is read dry.
    pub fn arm_ahead(&self) {
        self.ahead.arm(&self.tcp);
    }

    /// What to wait on for the next request: the receive armed ahead, or else one receive
    /// (`empty`: the socket was read dry, so the kernel polls before receiving).
    pub fn wait(&self, empty: bool) -> io::Result<Waiting<'_>> {
        if self.ahead.is_armed() {
            return Ok(Waiting::Ahead(self));
        }
        Ok(Waiting::Once(&self.tcp, ArmedRecv::new(&self.tcp, empty)?))
    }

    #[cfg(test)]
    fn is_armed(&self) -> bool {
        self.ahead.is_armed()
    }
}

impl AsFd for ClientTcp {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.tcp.as_fd()
    }
}

impl Stream for ClientTcp {
    async fn read_pooled(&self) -> io::Result<Option<Received>> {
        match self.ahead.next().await {
            Some(got) => got,
            None => self.tcp.read_pooled().await,
        }
    }

    async fn readable(&self) -> io::Result<()> {
        // Armed: the next read takes what it receives (the trait lets a stream that cannot
        // tell return at once).
        if self.ahead.is_armed() {
            return Ok(());
        }
        self.tcp.readable().await
    }

    async fn read_some(&self, buf: &mut Vec<u8>, min_spare: usize) -> io::Result<usize> {
        self.ahead.read_some(&self.tcp, buf, min_spare).await
    }

    /// Takes the receive back before a body or pipelined bytes are read (no write is in
    /// flight: the last response is out, this one has not begun): from here on the
    /// connection is read only as fast as it is served.
    async fn settle(&self, into: &mut Vec<u8>) {
        self.ahead.settle(&self.tcp, into).await
    }

    async fn write_kept(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        self.tcp.write_kept(buf).await
    }

    async fn shutdown(&self) -> io::Result<()> {
        self.tcp.shutdown().await
    }

    fn abort(&self) {
        self.tcp.abort()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A served connection and its client's socket, over loopback.
    async fn pair() -> (ClientTcp, std::net::TcpStream) {
        let listener = super::super::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let client = std::net::TcpStream::connect(addr).expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (ClientTcp::new(server), client)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn settling_takes_the_receive_back_and_keeps_every_byte_in_order() {
        let rt = super::super::Runtime::new().expect("runtime");
        rt.run(async {
            let (server, mut client) = pair().await;
            client.write_all(b"first").expect("send");
            let first = server
                .wait_pooled(false)
                .await
                .expect("read")
                .expect("bytes");
            assert_eq!(&first[..], b"first");
            server.arm_ahead();
            assert!(server.is_armed(), "armed ahead for the next request");
            // Sent while the receive is armed ahead: some of it is in its completions.
            let body = pattern(256 << 10);
            let sender = std::thread::spawn(move || client.write_all(&body).map(|()| client));
            let mut got = Vec::new();
            let n = server.read_some(&mut got, 4096).await.expect("read");
            assert!(n > 0);
            server.settle(&mut got).await;
            assert!(!server.is_armed(), "taken back");
            while got.len() < 256 << 10 {
                let n = server.read_some(&mut got, 4096).await.expect("read");
                assert!(n > 0, "end of stream after {} bytes", got.len());
            }
            assert!(got == pattern(256 << 10), "bytes lost or out of order");
            drop(sender.join().expect("sender").expect("sent"));
        });
    }

    #[test]
    fn a_withdrawn_receive_leaves_nothing_armed_and_bytes_are_read_after() {
        let rt = super::super::Runtime::new().expect("runtime");
        rt.run(async {
            let (server, mut client) = pair().await;
            for (round, ahead) in [(0u8, false), (1, true), (2, false), (3, true)] {
                client.write_all(&[b'a' + round]).expect("send");
                let mut got = Vec::new();
                server.read_some(&mut got, 4096).await.expect("read");
                assert_eq!(got, [b'a' + round]);
                // Armed, nothing sent: what is armed is cancelled.
                if ahead {
                    server.arm_ahead();
                }
                let mut waiting = server.wait(true).expect("wait");
                assert_eq!(matches!(waiting, Waiting::Ahead(_)), ahead);
                assert!(futures_util::poll!(&mut waiting).is_pending());
                assert!(matches!(waiting.withdraw().await, Withdrawn::Cancelled));
                assert!(!server.is_armed(), "round {round}");
            }
            client.write_all(b"two").expect("send");
            let mut got = Vec::new();
            server.read_some(&mut got, 4096).await.expect("read");
            assert_eq!(got, b"two");
        });
    }
}
