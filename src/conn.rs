//! One downstream HTTP/1.x connection from accept to close: read heads under their limits and
//! timeouts, hand each request to the proxy, answer errors, keep-alive and pipelining.

use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};
use tracing::debug;

use crate::config::Limits;
use crate::error::{ErrorKind, ProxyError};
use crate::h1::body::{BodyDecoder, BodyEncoder, Framing, Step};
use crate::h1::head::{
    CONTINUE, Persistence, RequestMeta, encode_local_response, encode_response, parse_request,
};
use crate::io::{self as rt, Stream};
use crate::message::{BodyLength, RequestHead, ResponseHead, Version};
use crate::proxy::{self, Context, Downstream};
use crate::worker::{ListenerSlot, Worker};

/// Least free space offered to a read.
const MIN_READ: usize = 4096;
/// How long a closing connection keeps draining what the client still sends, so that its
/// unread bytes do not turn our close into a reset that destroys the response in flight.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes drained while lingering.
const LINGER_BYTES: usize = 1 << 20;

/// Serves one accepted connection to its end.
pub async fn serve<S: Stream>(worker: Rc<Worker>, slot: Rc<ListenerSlot>, io: S, peer: SocketAddr) {
    worker.stats.connections_accepted.inc();
    worker.stats.connections_active.inc();
    let client_ip = peer.ip().to_string();
    let mut conn = H1 {
        io,
        worker: worker.clone(),
        slot: slot.clone(),
        rbuf: rt::take_buffer(),
        pos: 0,
        wbuf: Vec::new(),
        body: BodyDecoder::new(Framing::None, 0),
        expect_continue: false,
        body_timeout: Duration::from_secs(60),
        encoder: BodyEncoder::new(Framing::None),
        response_started: false,
        keep_alive: false,
        version: Version::HTTP_11,
    };
    let cx = Context {
        worker: &worker,
        listener: &slot,
        client_ip: client_ip.as_bytes(),
    };
    let end = conn.run(&cx).await;
    match end {
        End::Clean => {}
        End::Linger => conn.linger().await,
        End::Abort => conn.io.abort(),
    }
    rt::recycle_buffer(std::mem::take(&mut conn.rbuf));
    worker.stats.connections_active.dec();
}

/// How a connection ends.
enum End {
    /// Nothing more is expected from the client.
    Clean,
    /// The client may still be sending: drain before closing.
    Linger,
    /// A response was cut short: reset.
    Abort,
}

/// The HTTP/1 downstream codec state of one connection.
struct H1<S> {
    io: S,
    worker: Rc<Worker>,
    slot: Rc<ListenerSlot>,
    /// Bytes received; `rbuf[pos..]` are not yet consumed.
    rbuf: Vec<u8>,
    pos: usize,
    wbuf: Vec<u8>,
    /// The current request's body.
    body: BodyDecoder,
    expect_continue: bool,
    body_timeout: Duration,
    /// The current response's body.
    encoder: BodyEncoder,
    response_started: bool,
    /// Whether the connection stays open after the current exchange.
    keep_alive: bool,
    version: Version,
}

impl<S: Stream> H1<S> {
    async fn run(&mut self, cx: &Context<'_>) -> End {
        let mut head = RequestHead::default();
        let mut first = true;
        loop {
            let result = match self.next_request(&mut head, first).await {
                Ok(false) => return End::Clean,
                Ok(true) => proxy::forward(cx, &mut head, self).await,
                Err(e) => Err(e),
            };
            first = false;
            let status = match result {
                Ok(status) => Some(status),
                Err(e) => {
                    debug!(error = %e, "request failed");
                    self.answer(e).await
                }
            };
            self.record(status);
            if status.is_none() {
                return End::Abort;
            }
            if !self.keep_alive {
                // Unread bytes mean the client sent more than we answered (pipelining after
                // Connection: close, or a body we did not read).
                return if self.pos < self.rbuf.len() || !self.body.is_done() {
                    End::Linger
                } else {
                    End::Clean
                };
            }
            if self.wbuf.capacity() > 4 * rt::BUF_SIZE {
                self.wbuf = Vec::new();
            }
        }
    }

    /// Reads the next request head and prepares the exchange. Ok(false): the connection ends
    /// quietly.
    async fn next_request(
        &mut self,
        head: &mut RequestHead,
        first: bool,
    ) -> Result<bool, ProxyError> {
        let generation = self.worker.generation();
        let limits = &generation.snapshot.limits;
        self.response_started = false;
        self.body = BodyDecoder::new(Framing::None, 0);
        let meta = match self.read_head(head, limits, first).await {
            Ok(Some(meta)) => meta,
            Ok(None) => return Ok(false),
            Err(e) => {
                self.keep_alive = false;
                return Err(e);
            }
        };
        self.pos += meta.head_len;
        self.body = BodyDecoder::new(meta.framing, limits.max_request_head_bytes);
        self.body_timeout = limits.body_timeout;
        self.expect_continue = meta.expect_continue;
        self.keep_alive = meta.keep_alive;
        self.version = head.version;
        Ok(true)
    }

    /// The one place where every finished request is counted: its status, or None when it
    /// ended without a complete response.
    fn record(&self, status: Option<u16>) {
        let stats = &self.worker.stats;
        stats.requests.inc();
        match status {
            Some(status) => stats.record_status(status),
            None => stats.requests_aborted.inc(),
        }
    }

    /// Answers a failed request if no response has started. Returns the status sent, or None
    /// when the connection must be aborted.
    async fn answer(&mut self, e: ProxyError) -> Option<u16> {
        let status = e.status().filter(|_| !self.response_started)?;
        // A small body that came with the head can be skipped, keeping the connection; one
        // still on the way cannot, so the connection closes after the answer.
        if !e.closes_connection() && !self.body.is_done() && !self.expect_continue {
            let _ = self.take_body(|_| Ok(()));
        }
        self.keep_alive =
            self.keep_alive && !e.closes_connection() && self.body.is_done() && !self.closing();
        let persistence = self.persistence();
        self.wbuf.clear();
        encode_local_response(status, e.body(), persistence, &mut self.wbuf);
        self.flush().await.ok()?;
        Some(status)
    }

    /// Whether the connection must close after this exchange for reasons of the proxy itself.
    fn closing(&self) -> bool {
        self.worker.stopping.get() || self.slot.draining.get()
    }

    fn persistence(&self) -> Persistence {
        match (self.keep_alive, self.version) {
            (false, _) => Persistence::Close,
            (true, Version::HTTP_10) => Persistence::KeepAlive,
            (true, _) => Persistence::Default,
        }
    }

    /// Reads and parses the next request head. Ok(None): the connection ends quietly (the
    /// client closed, or stayed idle past the keep-alive timeout).
    async fn read_head(
        &mut self,
        head: &mut RequestHead,
        limits: &Limits,
        first: bool,
    ) -> Result<Option<RequestMeta>, ProxyError> {
        if self.pos == self.rbuf.len() {
            self.rbuf.clear();
            self.pos = 0;
            // A new connection gets the header timeout to send anything; an idle keep-alive
            // connection gets the idle timeout. Either way silence ends it quietly.
            let wait = if first {
                limits.header_timeout
            } else {
                limits.idle_timeout
            };
            let read = pin!(rt::within(
                wait,
                rt::read_some(&mut self.io, &mut self.rbuf, MIN_READ)
            ));
            match select(read, pin!(self.worker.stopped())).await {
                Either::Left((Some(Ok(n)), _)) if n > 0 => {}
                _ => return Ok(None),
            }
        }
        let deadline = Instant::now() + limits.header_timeout;
        loop {
            let unparsed = &self.rbuf[self.pos..];
            if let Some(meta) = parse_request(unparsed, limits.max_headers, head)? {
                if meta.head_len > limits.max_request_head_bytes {
                    return Err(ProxyError::downstream(ErrorKind::HeadTooLarge));
                }
                return Ok(Some(meta));
            }
            if unparsed.len() >= limits.max_request_head_bytes {
                return Err(ProxyError::downstream(ErrorKind::HeadTooLarge));
            }
            self.compact();
            match rt::until(
                deadline,
                rt::read_some(&mut self.io, &mut self.rbuf, MIN_READ),
            )
            .await
            {
                None => return Err(ProxyError::downstream(ErrorKind::RequestTimeout)),
                Some(Ok(n)) if n > 0 => {}
                // The client closed mid-head: nobody to answer.
                _ => return Err(ProxyError::client_gone()),
            }
        }
    }

    /// Moves unconsumed bytes to the front of the read buffer.
    fn compact(&mut self) {
        if self.pos == self.rbuf.len() {
            self.rbuf.clear();
        } else if self.pos > 0 {
            self.rbuf.drain(..self.pos);
        }
        self.pos = 0;
    }

    /// Closes the sending side, then drains what the client still sends for a short while.
    async fn linger(&mut self) {
        if rt::within(LINGER, self.io.shutdown()).await.is_none() {
            return;
        }
        let deadline = Instant::now() + LINGER;
        let mut drained = 0;
        while drained < LINGER_BYTES {
            self.rbuf.clear();
            match rt::until(
                deadline,
                rt::read_some(&mut self.io, &mut self.rbuf, MIN_READ),
            )
            .await
            {
                Some(Ok(n)) if n > 0 => drained += n,
                _ => return,
            }
        }
    }
}

impl<S: Stream> Downstream for H1<S> {
    fn take_body<F>(&mut self, mut f: F) -> Result<bool, ProxyError>
    where
        F: FnMut(&[u8]) -> Result<(), ProxyError>,
    {
        loop {
            let input = &self.rbuf[self.pos..];
            let (consumed, step) = self
                .body
                .decode(input)
                .map_err(|_| ProxyError::bad_request("invalid chunked request body\n"))?;
            match step {
                Step::Data(range) => {
                    f(&input[range])?;
                    self.pos += consumed;
                }
                Step::NeedMore => {
                    self.pos += consumed;
                    return Ok(false);
                }
                Step::Done => {
                    self.pos += consumed;
                    return Ok(true);
                }
            }
        }
    }

    async fn fill_body(&mut self) -> Result<(), ProxyError> {
        if self.expect_continue {
            self.expect_continue = false;
            self.wbuf.extend_from_slice(CONTINUE);
            self.flush().await?;
        }
        self.compact();
        match rt::within(
            self.body_timeout,
            rt::read_some(&mut self.io, &mut self.rbuf, MIN_READ),
        )
        .await
        {
            None => Err(ProxyError::downstream(ErrorKind::RequestTimeout)),
            Some(Ok(n)) if n > 0 => Ok(()),
            _ => Err(ProxyError::client_gone()),
        }
    }

    fn start_response(&mut self, head: &ResponseHead) {
        let framing = match head.body {
            BodyLength::Empty => Framing::None,
            BodyLength::Known(n) => Framing::Length(n),
            // A 1.0 client cannot read chunked: the body ends with the connection.
            BodyLength::Unknown if self.version == Version::HTTP_10 => Framing::Close,
            BodyLength::Unknown => Framing::Chunked,
        };
        self.keep_alive =
            self.keep_alive && framing != Framing::Close && self.body.is_done() && !self.closing();
        encode_response(head, framing, self.persistence(), &mut self.wbuf);
        self.encoder = BodyEncoder::new(framing);
        self.response_started = true;
    }

    fn push_body(&mut self, data: &[u8]) -> Result<(), ProxyError> {
        self.encoder
            .encode(data, &mut self.wbuf)
            .map_err(|_| ProxyError::bad_response("upstream body longer than announced\n"))
    }

    fn end_body(&mut self) -> Result<(), ProxyError> {
        self.encoder
            .finish(&mut self.wbuf)
            .map_err(|_| ProxyError::bad_response("upstream body shorter than announced\n"))
    }

    fn pending(&self) -> usize {
        self.wbuf.len()
    }

    async fn flush(&mut self) -> Result<(), ProxyError> {
        match rt::within(
            self.body_timeout,
            rt::write_all(&mut self.io, &mut self.wbuf),
        )
        .await
        {
            Some(Ok(())) => Ok(()),
            _ => Err(ProxyError::client_gone()),
        }
    }
}
