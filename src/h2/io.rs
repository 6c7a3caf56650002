//! The byte stream h2 reads and writes: tokio's `AsyncRead`/`AsyncWrite` over a [`Transport`],
//! with the in-flight receive and send owned by two small tasks of the connection's core.
//!
//! h2 polls for bytes; the ring wants a buffer lent to an operation that completes later. The
//! two meet in [`Shared`]: the receiving task keeps one read armed (in a buffer of the core's
//! ring, taken only when bytes arrive, so an idle connection holds none) and parks what it got
//! until h2 has copied it out; the sending task writes what h2 queued, in one write per batch
//! of frames. Each task's future is allocated once per connection, not once per operation.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::rt::{self, Received, Stream};
use crate::timer;
use crate::transport::Transport;

/// Bytes h2 may queue ahead of the socket before its writes wait: four TLS records, enough
/// for a window's worth of DATA in flight without letting a client that does not read pin
/// more than this per connection.
const MAX_QUEUED: usize = 64 * 1024;
/// Least free space offered to a read when the core's ring is empty.
const MIN_READ: usize = 4096;

/// tokio I/O over a transport, for h2. Dropping it stops the receiving task at once; the
/// sending task finishes writing what was queued (a GOAWAY, the last frames), bounded by the
/// write timeout, then ends.
pub struct H2Io {
    shared: Rc<Shared>,
    _receiving: rt::Task,
}

struct Shared {
    io: Transport,
    /// The longest a write may make no progress before the connection is given up.
    write_timeout: Duration,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    /// Bytes received and not yet read by h2, from `pos` on.
    input: Option<Received>,
    pos: usize,
    /// End of stream (Ok) or the error the receive ended with.
    input_end: Option<Result<(), io::ErrorKind>>,
    /// h2, waiting for bytes; the receiving task, waiting for h2 to take what it has.
    reader: Option<Waker>,
    receiver: Option<Waker>,
    /// Bytes h2 queued for sending.
    output: Vec<u8>,
    /// The sending task failed; later writes fail with this.
    output_error: Option<io::ErrorKind>,
    /// h2 asked for the sending side to end; then it ended.
    shutdown: bool,
    shut: bool,
    /// The H2Io is gone: the sending task ends once the queue is empty.
    dropped: bool,
    /// h2, waiting for room (or the end of the shutdown); the sending task, waiting for bytes.
    writer: Option<Waker>,
    sender: Option<Waker>,
}

impl H2Io {
    /// Starts the two I/O tasks on `io`. `first`: bytes already read from it (the h2c preface
    /// sniffed on a plaintext listener).
    pub fn new(io: Transport, first: Option<Received>, write_timeout: Duration) -> H2Io {
        let shared = Rc::new(Shared {
            io,
            write_timeout,
            state: RefCell::new(State {
                input: first,
                ..State::default()
            }),
        });
        let receiving = rt::spawn_handle(receive(shared.clone()));
        rt::spawn(send(shared.clone()));
        H2Io {
            shared,
            _receiving: receiving,
        }
    }
}

impl Drop for H2Io {
    fn drop(&mut self) {
        let mut st = self.shared.state.borrow_mut();
        st.dropped = true;
        if let Some(w) = st.sender.take() {
            w.wake();
        }
    }
}

/// Keeps one receive armed while h2 has nothing left to read.
async fn receive(shared: Rc<Shared>) {
    loop {
        // Wait until h2 has taken everything received so far.
        poll_fn(|cx| {
            let mut st = shared.state.borrow_mut();
            if st.input.is_none() {
                Poll::Ready(())
            } else {
                st.receiver = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        let got = match shared.io.read_pooled().await {
            Err(e) if rt::out_of_buffers(&e) => {
                let mut buf = rt::take_buffer();
                match shared.io.read_some(&mut buf, MIN_READ).await {
                    Ok(0) => Ok(None),
                    Ok(_) => Ok(Some(Received::Owned(buf))),
                    Err(e) => Err(e),
                }
            }
            got => got,
        };
        let mut st = shared.state.borrow_mut();
        let end = match got {
            Ok(Some(bytes)) if !bytes.is_empty() => {
                st.input = Some(bytes);
                st.pos = 0;
                None
            }
            Ok(_) => Some(Ok(())),
            Err(e) => Some(Err(e.kind())),
        };
        if let Some(w) = st.reader.take() {
            w.wake();
        }
        if let Some(end) = end {
            st.input_end = Some(end);
            return;
        }
    }
}

/// Writes what h2 queued, a batch at a time, until the H2Io is dropped and the queue is empty.
async fn send(shared: Rc<Shared>) {
    let mut batch: Vec<u8> = Vec::new();
    loop {
        let shutdown = poll_fn(|cx| {
            let mut st = shared.state.borrow_mut();
            if !st.output.is_empty() {
                // The emptied batch buffer goes back to h2's side for the next frames.
                std::mem::swap(&mut st.output, &mut batch);
                if let Some(w) = st.writer.take() {
                    w.wake();
                }
                Poll::Ready(Some(false))
            } else if st.shutdown && !st.shut {
                Poll::Ready(Some(true))
            } else if st.dropped {
                Poll::Ready(None)
            } else {
                st.sender = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        let result = match shutdown {
            None => break,
            Some(false) => {
                let write = shared.io.write_all(&mut batch);
                timer::within(shared.write_timeout, write).await
            }
            Some(true) => {
                let done = timer::within(shared.write_timeout, shared.io.shutdown()).await;
                shared.state.borrow_mut().shut = true;
                done
            }
        };
        let failed = match result {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(e.kind()),
            None => Some(io::ErrorKind::TimedOut),
        };
        let mut st = shared.state.borrow_mut();
        if let Some(w) = st.writer.take() {
            w.wake();
        }
        if let Some(kind) = failed {
            st.output_error = Some(kind);
            st.output = Vec::new();
            break;
        }
        // Nothing more queued: an idle connection keeps no write buffer.
        if st.output.is_empty() && batch.capacity() > 0 {
            rt::recycle_buffer(std::mem::take(&mut batch));
        }
    }
    if shared.state.borrow().output_error.is_some() {
        shared.io.abort();
    }
    rt::recycle_buffer(batch);
}

impl State {
    /// Whether h2 may queue more bytes: not after a failed send (Err), nor while the queue is
    /// full (Pending until the sending task takes it).
    fn room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(kind) = self.output_error {
            return Poll::Ready(Err(kind.into()));
        }
        if self.output.len() >= MAX_QUEUED {
            self.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for H2Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = self.shared.state.borrow_mut();
        let pos = st.pos;
        if let Some(input) = &st.input {
            let len = input.len();
            let n = (len - pos).min(buf.remaining());
            buf.put_slice(&input[pos..pos + n]);
            st.pos += n;
            if st.pos >= len {
                // Drained: the ring buffer goes back, and the next receive is armed.
                st.input = None;
                st.pos = 0;
                if let Some(w) = st.receiver.take() {
                    w.wake();
                }
            }
            return Poll::Ready(Ok(()));
        }
        match st.input_end {
            Some(Ok(())) => Poll::Ready(Ok(())),
            Some(Err(kind)) => Poll::Ready(Err(kind.into())),
            None => {
                st.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.shared.state.borrow_mut();
        if let Err(e) = ready!(st.room(cx)) {
            return Poll::Ready(Err(e));
        }
        if st.output.capacity() == 0 {
            st.output = rt::take_buffer();
        }
        st.output.extend_from_slice(data);
        if let Some(w) = st.sender.take() {
            w.wake();
        }
        Poll::Ready(Ok(data.len()))
    }

    /// Queued counts as flushed, as a kernel socket buffer does: the sending task writes it
    /// without h2 waiting for each write's completion (one task hop less per batch); the queue
    /// limit is the back-pressure.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared.state.borrow_mut().room(cx)
    }

    /// Ends the sending side once everything queued is written.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.state.borrow_mut();
        if let Some(kind) = st.output_error {
            return Poll::Ready(Err(kind.into()));
        }
        if st.shut {
            return Poll::Ready(Ok(()));
        }
        st.shutdown = true;
        st.writer = Some(cx.waker().clone());
        if let Some(w) = st.sender.take() {
            w.wake();
        }
        Poll::Pending
    }
}
