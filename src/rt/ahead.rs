//! A plaintext client connection whose receives run ahead: one multishot receive stays armed
//! on the socket across its keep-alive requests, instead of one receive submitted per wait.
//!
//! Per keep-alive request this saves a submission, the kernel's arming of a poll on the socket,
//! and compio's record of the operation (an allocation and a hash-set insert and removal):
//! ~10% of the user-space instructions of a proxied keep-alive request (loadtest/instructions:
//! 21,908 -> 19,580). The kernel picks a buffer of the core's ring for each arrival.
//!
//! While the receive is armed, every read of the connection takes its bytes from it, in order:
//! a second receive on the socket could take bytes between two of its completions. It is armed
//! only for a connection that waits for its next keep-alive request (one request per
//! connection never pays for its cancellation at the close), and taken back, its bytes kept,
//! when a request has a body or pipelined bytes behind it ([`ClientTcp::settle`]): the kernel
//! moves arrivals into the core's shared ring as they come, so an upload read at the
//! upstream's pace would otherwise spread over the ring (256 buffers) and leave the core's
//! other connections waiting with buffers of their own. A client that sends while its
//! bodiless request is served can hold at most the ring until the response is written (or
//! its write times out); the other connections then read into buffers of their own
//! (`ring_exhausted`), as they do in any burst that empties the ring.

use std::cell::Cell;
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

/// A plaintext TCP connection from a client, with its receive armed ahead while it waits
/// between keep-alive requests. 8 bytes more than the stream: the receive is boxed, and
/// absent while the connection is busy with a body or parked.
pub struct ClientTcp {
    tcp: TcpStream,
    ahead: Cell<Option<Box<Ahead>>>,
}

/// One completion of the armed receive, as a read reports it: None when none is armed any
/// more (none was, it ended, or a withdrawal ended it: ECANCELED).
type Next = Option<io::Result<Option<Received>>>;

impl ClientTcp {
    pub fn new(tcp: TcpStream) -> ClientTcp {
        ClientTcp {
            tcp,
            ahead: Cell::new(None),
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    fn is_armed(&self) -> bool {
        // Cell<Option<Box>>: look without taking for good.
        let ahead = self.ahead.take();
        let armed = ahead.as_ref().is_some_and(|a| !a.is_over());
        self.ahead.set(ahead);
        armed
    }

    /// The next completion of the armed receive, ECANCELED included. The receive is taken out
    /// of its cell only within each poll, so a read dropped while it waits (a timeout) leaves
    /// it armed with whatever it has received.
    async fn next_raw(&self) -> Next {
        std::future::poll_fn(|cx| {
            let Some(mut ahead) = self.ahead.take() else {
                return Poll::Ready(None);
            };
            let polled = Pin::new(&mut ahead.0).poll_next(cx);
            let over = ahead.is_over();
            if !over || matches!(polled, Poll::Pending) {
                self.ahead.set(Some(ahead));
            }
            match polled {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Ready(Some(Ok(buf))) => {
                    Poll::Ready(Some(Ok(buf.filter(|b| !b.is_empty()).map(Received::Ring))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            }
        })
        .await
    }

    /// [`next_raw`](ClientTcp::next_raw), where a receive a withdrawal ended counts as none.
    async fn next(&self) -> Next {
        match self.next_raw().await {
            Some(Err(e)) if e.raw_os_error() == Some(libc::ECANCELED) => None,
            next => next,
        }
    }

    /// Cancels the armed receive (every operation in flight on the socket: only when no write
    /// is) and waits, within 100 ms, for its first completion after: ECANCELED, or bytes that
    /// beat the cancellation.
    async fn cancel(&self) -> Option<Next> {
        use std::os::fd::AsRawFd;
        let cancel =
            compio::runtime::Runtime::with_current(|rt| rt.submit(CancelFd(self.tcp.as_raw_fd())));
        let BufResult(cancelled, _) = cancel.await;
        match cancelled {
            Ok(_) => {}
            // None in flight: it completed already, and its result waits in the stream.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            // Linux < 5.19, or a receive running in the kernel's workers.
            Err(_) => return None,
        }
        crate::timer::within(Duration::from_millis(100), self.next_raw()).await
    }

    /// Takes the armed receive back from the ring before the connection parks (no write is in
    /// flight): whatever raced the withdrawal is returned, and nothing is lost.
    pub async fn withdraw(&self) -> Withdrawn {
        if !self.is_armed() {
            return Withdrawn::Cancelled;
        }
        match self.cancel().await {
            Some(None) => Withdrawn::Cancelled,
            Some(Some(Err(e))) if e.raw_os_error() == Some(libc::ECANCELED) => Withdrawn::Cancelled,
            // Bytes (or the end of the stream) came first; the receive ends with ECANCELED
            // after them, and reads on from there.
            Some(Some(done)) => Withdrawn::Completed(done),
            None => Withdrawn::Armed,
        }
    }
}

impl AsFd for ClientTcp {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.tcp.as_fd()
    }
}

impl Stream for ClientTcp {
    async fn read_pooled(&self) -> io::Result<Option<Received>> {
        match self.next().await {
            Some(got) => got,
            None => self.tcp.read_pooled().await,
        }
    }

    /// Arms the receive ahead for a keep-alive connection (`empty`), then waits on it.
    async fn wait_pooled(&self, empty: bool) -> io::Result<Option<Received>> {
        if empty && !self.is_armed() {
            // Without it (its box or submission failed), a single receive as before.
            self.ahead.set(Ahead::arm(&self.tcp).ok());
        }
        if let Some(got) = self.next().await {
            return got;
        }
        // Bound first: a temporary Result would be kept across the await.
        let armed = ArmedRecv::new(&self.tcp, empty)?;
        armed.await
    }

    async fn readable(&self) -> io::Result<()> {
        // Armed: the next read takes what it receives (the trait lets a stream that cannot
        // tell return at once).
        if self.is_armed() {
            return Ok(());
        }
        self.tcp.readable().await
    }

    async fn read_some(&self, buf: &mut Vec<u8>, min_spare: usize) -> io::Result<usize> {
        match self.next().await {
            Some(Ok(Some(bytes))) => {
                buf.extend_from_slice(&bytes);
                Ok(bytes.len())
            }
            Some(Ok(None)) => Ok(0),
            // The ring ran dry and ended the receive: a receive into `buf` instead.
            Some(Err(e)) if out_of_buffers(&e) => read_some(&self.tcp, buf, min_spare).await,
            Some(Err(e)) => Err(e),
            None => read_some(&self.tcp, buf, min_spare).await,
        }
    }

    /// Takes the receive back before a body or pipelined bytes are read (no write is in
    /// flight: the last response is out, this one has not begun), appending what it had
    /// received to `into`: from here on the connection is read only as fast as it is served.
    async fn settle(&self, into: &mut Vec<u8>) {
        if !self.is_armed() {
            return;
        }
        let mut next = self.cancel().await;
        let deadline = crate::timer::now() + Duration::from_millis(100);
        while let Some(Some(Ok(Some(bytes)))) = next {
            into.extend_from_slice(&bytes);
            next = crate::timer::until(deadline, self.next_raw()).await;
        }
        // Over (ECANCELED, the end of the stream, an error: a receive of the connection's
        // own finds the end or the error again), or still armed (the cancellation refused or
        // slow): reads go on taking from it, in order, either way.
        if !self.is_armed() {
            self.ahead.set(None);
        }
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
                .wait_pooled(true)
                .await
                .expect("read")
                .expect("bytes");
            assert_eq!(&first[..], b"first");
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
            client.write_all(b"one").expect("send");
            let one = server
                .wait_pooled(true)
                .await
                .expect("read")
                .expect("bytes");
            assert_eq!(&one[..], b"one");
            // Armed, nothing sent: the receive is cancelled.
            let armed = std::pin::pin!(server.wait_pooled(true));
            assert!(futures_util::poll!(armed).is_pending());
            assert!(matches!(server.withdraw().await, Withdrawn::Cancelled));
            assert!(!server.is_armed());
            client.write_all(b"two").expect("send");
            let mut got = Vec::new();
            server.read_some(&mut got, 4096).await.expect("read");
            assert_eq!(got, b"two");
        });
    }
}
