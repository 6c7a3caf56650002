//! The upstream HTTP/1.1 codec: connect with a timeout, keep a read armed on a pooled idle
//! connection (so that anything it receives retires it; over plain TCP one multishot receive
//! for the connection's life, taken back before a long response body), encode and write the
//! request, read the response head (handing interim 1xx heads to the caller) and pull body
//! bytes through the body decoder.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{ErrorKind, ProxyError};
use crate::h1::body::{BodyDecoder, BodyEncoder, Framing};
use crate::h1::head::{self, Parsed};
use crate::message::{Headers, RequestHead, ResponseHead};
use crate::rt::{self, Received, Stream};
use crate::stats::EndpointStats;
use crate::timer;
use crate::tls::ClientTls;
use crate::transport::Transport;

/// Bytes of upstream response head accepted; larger heads are a bad response.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Header fields accepted in an upstream response.
const MAX_RESPONSE_HEADERS: usize = 256;
/// Least free space offered to a read.
const MIN_READ: usize = 4096;

/// A read armed on an idle TLS connection: it completes when the upstream sends anything or
/// closes. It borrows the stream, so it is boxed (plain TCP connections keep a multishot
/// receive armed instead: [`UpstreamConn::ahead`]).
type ArmedRead = Pin<Box<dyn Future<Output = io::Result<Option<Received>>>>>;

/// An open connection to an endpoint, idle in a pool or serving one exchange.
pub struct UpstreamConn {
    stream: Transport,
    /// A TLS connection's read, set while the connection idles in a pool and until the
    /// response's first bytes are taken from it: the upstream's next bytes land in a buffer of
    /// the core's ring only when they arrive, so an idle connection holds no buffer. In a cell:
    /// the response side takes it while the request side writes.
    armed: Cell<Option<ArmedRead>>,
    /// A plain connection's receive, armed when it first idles in a pool and kept across the
    /// requests it carries (one multishot receive, rt::ReadAhead): it reads the responses, and
    /// anything that arrives while the connection idles retires it. Taken back before a
    /// response body that does not come in its first read (when no request bytes are in
    /// flight), so that a body is read only as fast as the client takes it.
    ahead: rt::ReadAhead,
    /// A write of the request is in flight: the receive cannot be taken back now (cancelling
    /// by descriptor would cancel the write too).
    writing: Cell<bool>,
    /// Counts the connection in its endpoint's `upstream_cx_active` while it is open.
    active: Option<Active>,
}

/// Holds a connection in its endpoint's `upstream_cx_active` gauge (on the connection's own
/// core: single writer).
struct Active(Arc<EndpointStats>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.upstream_cx_active.dec();
    }
}

impl std::fmt::Debug for UpstreamConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConn")
            .field("stream", &self.stream)
            .field("armed", &"..")
            .finish()
    }
}

/// What an idle connection received while it waited in the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Nothing: it can carry a request.
    Clean,
    /// Bytes nobody asked for (a late body, an unsolicited response): reusing it would hand them
    /// to the next request as its response.
    Stray,
    /// End of stream or an error: the upstream closed it.
    Closed,
}

/// Why a connection to an endpoint could not be made.
#[derive(Debug)]
pub enum ConnectError {
    /// The TCP connect failed or timed out.
    Connect(io::Error),
    /// The TLS handshake failed (or did not finish within the connect timeout).
    Tls(io::Error),
}

impl UpstreamConn {
    /// Connects to `addr`, with a TLS handshake when the cluster has `tls`; both within
    /// `limit`.
    pub async fn connect(
        addr: SocketAddr,
        limit: Duration,
        tls: Option<&ClientTls>,
    ) -> Result<UpstreamConn, ConnectError> {
        let started = timer::now();
        let tcp = rt::connect(addr, limit)
            .await
            .map_err(ConnectError::Connect)?;
        let stream = match tls {
            None => Transport::Plain(tcp),
            Some(tls) => {
                let left = limit.saturating_sub(started.elapsed());
                match timer::within(left, Box::pin(tls.connect(tcp, addr.ip()))).await {
                    Some(Ok(stream)) => Transport::Tls(stream),
                    Some(Err(e)) => return Err(ConnectError::Tls(e)),
                    None => {
                        let e = io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out");
                        return Err(ConnectError::Tls(e));
                    }
                }
            }
        };
        Ok(UpstreamConn {
            stream,
            armed: Cell::new(None),
            ahead: rt::ReadAhead::new(),
            writing: Cell::new(false),
            active: None,
        })
    }

    /// The stream the connection runs on (a clone sharing it).
    pub fn transport(&self) -> &Transport {
        &self.stream
    }

    /// Whether the connection speaks HTTP/2: ALPN agreed on `h2` (TLS), or `assume` (h2c).
    pub fn speaks_h2(&self, assume: bool) -> bool {
        match &self.stream {
            Transport::Tls(s) => s.agreed_h2(),
            Transport::Plain(_) => assume,
        }
    }

    /// Counts the connection as open for `stats`' endpoint until it is dropped.
    pub fn counted(mut self, stats: &Arc<EndpointStats>) -> UpstreamConn {
        stats.upstream_cx_active.inc();
        self.active = Some(Active(stats.clone()));
        self
    }

    /// Arms a read before the connection idles in a pool (nginx and HAProxy keep a read event
    /// on idle upstream connections for the same reason). The read is submitted now (a plain
    /// connection's multishot receive stays armed from its last checkin); its completion is
    /// looked at by [`check`](Self::check) and, if it never completes while idle, it reads the
    /// next response: no extra operation per request.
    ///
    /// Err: the connection cannot idle, because the read completed at once: a TLS session can
    /// hold what came after the response (a close_notify, stray records) before any new read.
    ///
    /// `watch` is woken when the read completes while the connection idles, so that the core
    /// closes it at once (a multishot receive would go on filling the core's buffer ring with
    /// whatever a misbehaving upstream sends).
    pub fn park(mut self, watch: &Waker) -> Result<UpstreamConn, Idle> {
        match &self.stream {
            Transport::Plain(tcp) => {
                // Kept armed from the last checkin unless a body took it back; armed again if
                // a cancellation refused at first ends it only now.
                for _ in 0..2 {
                    self.ahead.arm(tcp);
                    if let Some(received) = self.ahead.peek(watch) {
                        return Err(idle_verdict(received));
                    }
                    if self.ahead.is_armed() {
                        return Ok(self);
                    }
                }
                // No receive could be armed: nothing would see the upstream close it.
                return Err(Idle::Closed);
            }
            Transport::Tls(_) if self.armed.get_mut().is_none() => {
                let stream = self.stream.clone();
                let mut read: ArmedRead = Box::pin(async move { stream.wait_pooled(true).await });
                // The first poll submits the receive.
                if let Poll::Ready(received) = read.as_mut().poll(&mut Context::from_waker(watch)) {
                    return Err(idle_verdict(received));
                }
                *self.armed.get_mut() = Some(read);
            }
            Transport::Tls(_) => {}
        }
        Ok(self)
    }

    /// Whether the connection can carry a request: nothing arrived while it was idle. A
    /// connection for which this is not [`Idle::Clean`] must be dropped. `watch` as for
    /// [`park`](Self::park).
    pub fn check(&mut self, watch: &Waker) -> Idle {
        if let Some(received) = self.ahead.peek(watch) {
            return idle_verdict(received);
        }
        let Some(read) = self.armed.get_mut().as_mut() else {
            return Idle::Clean;
        };
        let Poll::Ready(received) = read.as_mut().poll(&mut Context::from_waker(watch)) else {
            return Idle::Clean;
        };
        // Done: it must not be polled again.
        *self.armed.get_mut() = None;
        idle_verdict(received)
    }

    /// Reads once, appending to `buf`: the armed read's bytes first, if it is still pending.
    async fn read(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        if let Transport::Plain(tcp) = &self.stream {
            return self.ahead.read_some(tcp, buf, MIN_READ).await;
        }
        if let Some(armed) = self.armed.take() {
            match armed.await {
                Ok(Some(bytes)) => {
                    buf.extend_from_slice(&bytes);
                    return Ok(bytes.len());
                }
                Ok(None) => return Ok(0),
                // The ring ran dry when the bytes came: read them into our own buffer.
                Err(e) if rt::out_of_buffers(&e) => {}
                Err(e) => return Err(e),
            }
        }
        self.stream.read_some(buf, MIN_READ).await
    }

    /// Takes a plain connection's armed receive back before more of a response body is read,
    /// appending what it had received to `buf`, unless a write of the request is in flight.
    async fn settle(&self, buf: &mut Vec<u8>) {
        if let Transport::Plain(tcp) = &self.stream
            && !self.writing.get()
        {
            self.ahead.settle(tcp, buf).await;
        }
    }

    /// Writes `bytes` (kept with `keep`, for a retry), marked as in flight while it runs.
    async fn write(&self, bytes: &mut Vec<u8>, keep: bool) -> io::Result<()> {
        /// Clears the mark however the write ends (it may be dropped by a timeout).
        struct Writing<'a>(&'a Cell<bool>);
        impl Drop for Writing<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        self.writing.set(true);
        let _writing = Writing(&self.writing);
        if keep {
            self.stream.write_kept(bytes).await
        } else {
            self.stream.write_all(bytes).await
        }
    }
}

/// What a read that completed on an idle connection means.
fn idle_verdict(received: io::Result<Option<Received>>) -> Idle {
    match received {
        Ok(Some(bytes)) if !bytes.is_empty() => Idle::Stray,
        // The ring was empty when bytes arrived: they are still in the socket.
        Err(e) if rt::out_of_buffers(&e) => Idle::Stray,
        _ => Idle::Closed,
    }
}

/// Whether an I/O failure on a reused connection means the upstream closed it while idle
/// (so the request never reached the application).
fn stale(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

/// A response cut because the upstream paused longer than the body (or route idle) timeout.
pub fn idle_timeout() -> ProxyError {
    let timed_out = io::Error::from(io::ErrorKind::TimedOut);
    ProxyError::upstream(ErrorKind::Aborted).caused_by(&timed_out)
}

/// The request as it goes to the upstream: the encoded bytes not yet written, and how far the
/// body got.
#[derive(Debug)]
pub struct UpstreamRequest {
    bytes: Vec<u8>,
    /// Where the head ends in `bytes` and the body begins.
    head_len: usize,
    encoder: BodyEncoder,
    /// Every body byte (and the end of the body) is encoded.
    encoded: bool,
    /// ... and written: only then may the connection carry another request.
    sent: bool,
    /// Request body bytes taken from the client.
    pub body_bytes: u64,
    /// Most body bytes allowed (413 beyond).
    body_limit: Option<u64>,
}

impl UpstreamRequest {
    /// Encodes the head for an HTTP/1.1 upstream. `fallback_host` is the Host of a request
    /// without one (an HTTP/1.0 client); a body longer than `body_limit` is refused.
    pub fn new(
        head: &RequestHead,
        fallback_host: &[u8],
        body_limit: Option<u64>,
    ) -> UpstreamRequest {
        let framing = Framing::for_length(head.body, Framing::Chunked);
        // A body is encoded after the head in the same buffer: a full-size one then.
        let mut bytes = match head.body.is_empty() {
            true => rt::take_small_buffer(),
            false => rt::take_buffer(),
        };
        head::encode_request(head, fallback_host, framing, &mut bytes);
        UpstreamRequest {
            head_len: bytes.len(),
            bytes,
            encoder: BodyEncoder::new(framing),
            encoded: head.body.is_empty(),
            sent: false,
            body_bytes: 0,
            body_limit,
        }
    }

    /// Encodes `head` again in place of the one encoded, keeping the body (a retry whose head
    /// changed). Only for a request not yet sent, or kept whole for sending again.
    pub fn rehead(&mut self, head: &RequestHead, fallback_host: &[u8]) {
        let framing = Framing::for_length(head.body, Framing::Chunked);
        let mut bytes = match head.body.is_empty() {
            true => rt::take_small_buffer(),
            false => rt::take_buffer(),
        };
        head::encode_request(head, fallback_host, framing, &mut bytes);
        let head_len = bytes.len();
        bytes.extend_from_slice(self.bytes.get(self.head_len..).unwrap_or_default());
        rt::recycle_buffer(std::mem::replace(&mut self.bytes, bytes));
        self.head_len = head_len;
    }

    /// Encodes request body bytes.
    pub fn push(&mut self, data: &[u8]) -> Result<(), ProxyError> {
        self.body_bytes += data.len() as u64;
        if self.body_limit.is_some_and(|limit| self.body_bytes > limit) {
            return Err(ProxyError::downstream(ErrorKind::PayloadTooLarge));
        }
        self.encoder
            .encode(data, &mut self.bytes)
            .map_err(|_| ProxyError::bad_request("request body longer than announced\n"))
    }

    /// Ends the request body, with the client's trailer fields if it sent any.
    pub fn finish(&mut self, trailers: Option<&Headers>) -> Result<(), ProxyError> {
        self.encoder
            .finish(trailers, &mut self.bytes)
            .map_err(|_| ProxyError::bad_request("request body shorter than announced\n"))?;
        self.encoded = true;
        Ok(())
    }

    /// Whether the whole request is encoded (it may not all be written yet).
    pub fn is_encoded(&self) -> bool {
        self.encoded
    }

    /// Whether the whole request was written: a connection whose request was cut short (its
    /// write dropped or failed) must never carry another one.
    pub fn is_sent(&self) -> bool {
        self.sent
    }

    /// Writes what is encoded, within `limit` (an upstream that stops reading is cut). With
    /// `keep`, the bytes stay for a retry on another connection. A failure is retryable when
    /// the connection was found closed: nothing of a response exists.
    pub async fn send(
        &mut self,
        conn: &UpstreamConn,
        keep: bool,
        limit: Duration,
    ) -> Result<(), ProxyError> {
        match timer::within(limit, conn.write(&mut self.bytes, keep)).await {
            Some(Ok(())) => {
                self.sent = self.encoded;
                Ok(())
            }
            Some(Err(e)) => {
                let err = ProxyError::upstream(ErrorKind::UpstreamClosed).caused_by(&e);
                Err(if stale(&e) { err.retryable() } else { err })
            }
            None => Err(ProxyError::upstream(ErrorKind::UpstreamSendTimeout)),
        }
    }

    pub fn recycle(self) {
        rt::recycle_buffer(self.bytes);
    }
}

/// A response head as [`ResponseReader::read_head`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// An interim 1xx (not 100 or 101) the caller may pass on; the final head comes later.
    Interim,
    /// The final response head.
    Final(Parsed),
}

/// Reading side of one response: the bytes received and how far they are consumed.
#[derive(Debug)]
pub struct ResponseReader {
    buf: Vec<u8>,
    pos: usize,
    /// How far `buf[pos..]` was searched for the end of a head.
    scanned: usize,
    /// Whether any response byte arrived (a failure after that cannot be retried).
    received: bool,
    decoder: BodyDecoder,
    /// Set once the body is complete and no stray bytes followed it.
    clean_end: bool,
}

impl Default for ResponseReader {
    fn default() -> Self {
        ResponseReader {
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
            received: false,
            decoder: BodyDecoder::new(Framing::None, 0),
            clean_end: false,
        }
    }
}

impl ResponseReader {
    pub fn new() -> ResponseReader {
        ResponseReader {
            buf: rt::take_buffer(),
            ..ResponseReader::default()
        }
    }

    /// Reads the next response head before `deadline` (if any). 100 Continue is skipped (the
    /// proxy answers Expect itself); 101 is a bad response (no upgrade was asked for); other
    /// 1xx are returned as [`Head::Interim`] in `head`. A failure before any byte arrived is
    /// marked retryable.
    pub async fn read_head(
        &mut self,
        conn: &UpstreamConn,
        head_request: bool,
        deadline: Option<Instant>,
        head: &mut ResponseHead,
    ) -> Result<Head, ProxyError> {
        loop {
            let unparsed = &self.buf[self.pos..];
            // Bytes not looked at yet are parsed at once (a head usually arrives whole); after
            // that, only once the empty line that ends the head is in, so that a head trickling
            // in is scanned once rather than parsed again with every read.
            let complete = match self.scanned {
                0 => !unparsed.is_empty(),
                scanned => head::head_end(unparsed, scanned.saturating_sub(2)).is_some(),
            };
            let parsed = if complete {
                head::parse_response(unparsed, MAX_RESPONSE_HEADERS, head_request, head)?
            } else {
                None
            };
            if let Some(parsed) = parsed {
                self.pos += parsed.head_len;
                self.scanned = 0;
                match head.status {
                    100 => continue,
                    101 => {
                        return Err(ProxyError::bad_response(
                            "unexpected 101 Switching Protocols from upstream\n",
                        ));
                    }
                    102..=199 => return Ok(Head::Interim),
                    _ => {
                        self.decoder = BodyDecoder::new(parsed.framing, MAX_RESPONSE_HEAD);
                        return Ok(Head::Final(parsed));
                    }
                }
            }
            self.scanned = unparsed.len();
            if self.buf.len() - self.pos > MAX_RESPONSE_HEAD {
                return Err(ProxyError::bad_response(
                    "upstream response head too large\n",
                ));
            }
            self.compact();
            let read = conn.read(&mut self.buf);
            let got = match deadline {
                Some(deadline) => timer::until(deadline, read).await,
                None => Some(read.await),
            };
            match got {
                None => return Err(ProxyError::upstream(ErrorKind::UpstreamTimeout)),
                Some(Ok(n)) if n > 0 => self.received = true,
                Some(res) => {
                    let err = ProxyError::upstream(ErrorKind::UpstreamClosed);
                    let err = match res {
                        Err(e) => err.caused_by(&e),
                        Ok(_) => err,
                    };
                    return Err(if self.received { err } else { err.retryable() });
                }
            }
        }
    }

    fn compact(&mut self) {
        rt::compact(&mut self.buf, &mut self.pos);
    }

    /// Hands every body byte already received to `f`; true when the body is complete.
    pub fn take_body<F>(&mut self, f: F) -> Result<bool, ProxyError>
    where
        F: FnMut(&[u8]) -> Result<(), ProxyError>,
    {
        let (consumed, done) = self.decoder.drain(&self.buf[self.pos..], f, |_| {
            ProxyError::upstream(ErrorKind::Aborted)
        })?;
        self.pos += consumed;
        if done {
            self.clean_end = self.pos == self.buf.len();
        }
        Ok(done)
    }

    /// The trailer fields of a chunked response body, once it is complete.
    pub fn trailers(&self) -> Option<&Headers> {
        self.decoder.trailers()
    }

    /// Reads more body bytes, waiting at most `limit`. End of stream completes a close-delimited
    /// body; anywhere else it is a truncation and the exchange is aborted.
    pub async fn fill(&mut self, conn: &UpstreamConn, limit: Duration) -> Result<(), ProxyError> {
        self.compact();
        // The body goes on past the first read: read on only as fast as the client takes it.
        let held = self.buf.len();
        conn.settle(&mut self.buf).await;
        if self.buf.len() > held {
            return Ok(());
        }
        match timer::within(limit, conn.read(&mut self.buf)).await {
            Some(Ok(0)) => self
                .decoder
                .eof()
                .map_err(|_| ProxyError::upstream(ErrorKind::Aborted)),
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(ProxyError::upstream(ErrorKind::Aborted).caused_by(&e)),
            None => Err(idle_timeout()),
        }
    }

    /// Forgets a failed exchange, keeping the buffer, before the request is sent again.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.scanned = 0;
        self.received = false;
        self.decoder = BodyDecoder::new(Framing::None, 0);
        self.clean_end = false;
    }

    /// Whether the connection can serve another request: the body ended by its framing (not by
    /// close) and nothing unexpected followed it.
    pub fn reusable(&self) -> bool {
        self.clean_end && self.decoder.is_done()
    }

    pub fn recycle(self) {
        rt::recycle_buffer(self.buf);
    }
}
