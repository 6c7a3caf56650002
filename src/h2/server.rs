//! One downstream HTTP/2 connection from its preface to its close: the h2 server connection
//! polled by the connection's task, each stream proxied by [`proxy::forward`] exactly like an
//! HTTP/1 request, flow control tied to forwarding, and the connection-level defences (stream
//! and header limits, reset floods, PING keep-alive, idle timeout, GOAWAY on drain).

use std::cell::RefCell;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::future::{Either, LocalBoxFuture, select};
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::{self, SendResponse};
use h2::{Ping, PingPong, Reason, RecvStream, SendStream};
use http::{HeaderMap, Request, Response};
use tracing::debug;

use crate::config::{Http2Options, Limits};
use crate::conn::{self, TlsSide, Tracked};
use crate::error::{ErrorKind, ProxyError};
use crate::h2::io::H2Io;
use crate::h2::{self as codec, is_grpc};
use crate::message::{Headers, Method, RequestHead, ResponseHead};
use crate::proxy::{self, Context as ProxyContext, Downstream, Outcome, RequestBody, ResponseSink};
use crate::rt::Received;
use crate::slot::ListenerSlot;
use crate::timer;
use crate::transport::Transport;
use crate::worker::Worker;

/// Response bytes h2 may buffer per stream beyond what the client's window lets out.
const MAX_SEND_BUFFER: usize = 64 * 1024;
/// How long an idle connection that was told GOAWAY may take to close. h2's graceful shutdown
/// waits for the answer to a PING before its final GOAWAY: a client that never answers is
/// closed after this, unless it opened streams meanwhile (a drain has its own deadline).
const IDLE_GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// What every stream of a connection shares: who the client is and where it came in.
struct Client {
    worker: Rc<Worker>,
    slot: Rc<ListenerSlot>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    client_ip: Rc<[u8]>,
    tls: Option<Rc<TlsSide>>,
    limits: Limits,
}

impl Client {
    fn context(&self) -> ProxyContext<'_> {
        let tls = self.tls.as_deref();
        ProxyContext {
            worker: &self.worker,
            listener: self.slot.index.get(),
            peer: self.peer.ip(),
            remote: self.peer,
            local: self.local,
            client_ip: &self.client_ip,
            scheme: if tls.is_some() { b"https" } else { b"http" },
            tls: tls.map(|t| &t.info),
            client_cert: tls.and_then(|t| t.client_cert.as_deref()),
        }
    }
}

/// How a stream ended, as the connection's reset accounting sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamEnd {
    Done,
    /// The client reset it before its response was complete.
    ResetByClient,
    /// The gateway reset it (a response cut short, a malformed request body).
    ResetByUs,
}

/// Serves HTTP/2 on an established connection. `first`: bytes already read (the h2c preface).
pub async fn serve(
    io: Transport,
    first: Option<Received>,
    peer: SocketAddr,
    tls: Option<Rc<TlsSide>>,
    tracked: Tracked,
) {
    let (options, limits) = {
        let generation = tracked.worker.generation();
        let snapshot = &generation.snapshot;
        let spec = snapshot.listeners.get(tracked.slot.index.get());
        let options = spec.and_then(|l| l.http2).unwrap_or_default();
        (options, snapshot.limits.clone())
    };
    let stats = &tracked.slot.stats;
    stats.downstream_cx_http2_total.inc();
    stats.downstream_cx_http2_active.inc();
    let client = Rc::new(Client {
        worker: tracked.worker.clone(),
        slot: tracked.slot.clone(),
        peer,
        local: tracked.local.as_deref().copied(),
        client_ip: peer.ip().to_string().into_bytes().into(),
        tls,
        limits,
    });
    Box::pin(run(&client, io, first, options)).await;
    stats.downstream_cx_http2_active.dec();
    drop(tracked);
}

async fn run(client: &Rc<Client>, io: Transport, first: Option<Received>, options: Http2Options) {
    let limits = &client.limits;
    let mut builder = server::Builder::new();
    builder
        .max_concurrent_streams(options.max_concurrent_streams)
        .initial_window_size(options.initial_stream_window_size)
        .initial_connection_window_size(options.initial_connection_window_size)
        .max_frame_size(options.max_frame_size)
        // The same bound as an HTTP/1 head; h2 also stops CONTINUATION floods at it.
        .max_header_list_size(u32::try_from(limits.max_request_head_bytes).unwrap_or(u32::MAX))
        .max_send_buffer_size(MAX_SEND_BUFFER);
    // h2's own flood limits stay at their defaults: 20 streams reset before they are accepted
    // (rapid reset) and 1,024 streams reset for the client's protocol errors (MadeYouReset)
    // end the connection with GOAWAY ENHANCE_YOUR_CALM.
    let io = H2Io::new(io, first, limits.body_timeout);
    let slot = &client.slot;
    let mut conn = {
        let handshake = pin!(timer::within(
            limits.header_timeout,
            builder.handshake::<_, Bytes>(io)
        ));
        match select(handshake, pin!(slot.closed())).await {
            Either::Left((Some(Ok(conn)), _)) => conn,
            Either::Left((Some(Err(e)), _)) => {
                debug!(peer = %client.peer, "HTTP/2 handshake failed: {e}");
                return;
            }
            _ => return,
        }
    };
    let mut ping = options.keepalive.and_then(|_| conn.ping_pong());
    let mut state = ConnState {
        resets: ResetBudget::new(options.max_resets_per_second),
        last_active: timer::now(),
        ping_sent: None,
        goaway_at: None,
        accepting: true,
        released: false,
        release_at: None,
        accepted: 0,
        max_streams: client
            .worker
            .generation()
            .snapshot
            .listeners
            .get(client.slot.index.get())
            .and_then(|l| l.http.max_requests_per_connection),
    };
    // Boxed, not held inline by their concrete type: FuturesUnordered keeps a stub task with
    // room for one future, and a stream's future is ~6 KiB (an idle HTTP/2 connection measured
    // 19.6 -> 26.5 KB with the futures inline).
    let mut streams: FuturesUnordered<LocalBoxFuture<'static, StreamEnd>> = FuturesUnordered::new();
    let mut closing = pin!(slot.closed());
    let mut draining = false;
    loop {
        let wait = state.next_check(&options, limits, streams.is_empty());
        let driven = poll_fn(|cx| {
            if !draining && closing.as_mut().poll(cx).is_ready() {
                draining = true;
                conn.graceful_shutdown();
            }
            drive(client, &mut conn, &mut streams, &mut state, &mut ping, cx)
        });
        if timer::within(wait, driven).await == Some(Driven::Over) {
            break;
        }
        // A check is due: idle, keep-alive, the release of the buffers, or a GOAWAY that is
        // taking too long.
        let now = Instant::now();
        if state.release_at.is_some_and(|at| now >= at) && streams.is_empty() {
            state.released = conn.release_buffers();
            // Frames still queued keep the buffers: try again a while later.
            state.release_at = (!state.released).then(|| now + codec::RELEASE_AFTER);
        }
        if state
            .goaway_at
            .is_some_and(|at| now >= at + IDLE_GOAWAY_GRACE)
            && !draining
            && streams.is_empty()
        {
            break;
        }
        if let (Some((interval, timeout)), Some(pp)) = (options.keepalive, ping.as_mut()) {
            match state.ping_sent {
                Some(sent) if now >= sent + timeout => {
                    debug!(peer = %client.peer, "HTTP/2 keep-alive PING unanswered");
                    break;
                }
                Some(_) => {}
                None if now >= state.last_active + interval
                    && pp.send_ping(Ping::opaque()).is_ok() =>
                {
                    state.ping_sent = Some(now);
                }
                None => {}
            }
        }
        if streams.is_empty()
            && state.goaway_at.is_none()
            && now >= state.last_active + limits.idle_timeout
        {
            conn.graceful_shutdown();
            state.goaway_at = Some(now);
        }
    }
}

/// What the connection's task tracks between polls.
struct ConnState {
    resets: ResetBudget,
    /// When a stream last began or ended, or a PING was answered (the coarse clock of the
    /// timer wheel: no clock read per stream).
    last_active: Instant,
    /// A keep-alive PING is out since then.
    ping_sent: Option<Instant>,
    /// The connection was told GOAWAY for being idle, then.
    goaway_at: Option<Instant>,
    /// h2 still hands out new streams.
    accepting: bool,
    /// The codec's buffers were freed since the last stream began.
    released: bool,
    /// The last stream ended: the buffers are to be freed then.
    release_at: Option<Instant>,
    /// Streams accepted so far, and how many the listener allows (then GOAWAY).
    accepted: u32,
    max_streams: Option<u32>,
}

impl ConnState {
    /// How long the connection may run before a check is due.
    fn next_check(&self, options: &Http2Options, limits: &Limits, idle: bool) -> Duration {
        let now = Instant::now();
        let mut next = now + Duration::from_secs(3600);
        if let Some(at) = self.release_at {
            next = next.min(at);
        }
        if idle && self.goaway_at.is_none() {
            next = next.min(self.last_active + limits.idle_timeout);
        }
        if let Some(at) = self.goaway_at {
            next = next.min(at + IDLE_GOAWAY_GRACE);
        }
        if let Some((interval, timeout)) = options.keepalive {
            next = next.min(match self.ping_sent {
                Some(sent) => sent + timeout,
                None => self.last_active + interval,
            });
        }
        next.saturating_duration_since(now)
            .max(Duration::from_millis(10))
    }
}

/// Why the connection's driver stopped polling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driven {
    /// The connection is over.
    Over,
    /// Its last stream ended: the next check is to free its buffers.
    Quiet,
}

/// Polls the connection (which reads and writes frames) and its streams.
fn drive(
    client: &Rc<Client>,
    conn: &mut server::Connection<H2Io, Bytes>,
    streams: &mut FuturesUnordered<LocalBoxFuture<'static, StreamEnd>>,
    state: &mut ConnState,
    ping: &mut Option<PingPong>,
    cx: &mut Context<'_>,
) -> Poll<Driven> {
    let stats = &client.slot.stats;
    loop {
        while let Poll::Ready(Some(end)) = streams.poll_next_unpin(cx) {
            state.last_active = timer::now();
            match end {
                StreamEnd::Done => {}
                StreamEnd::ResetByClient => stats.downstream_rq_rx_reset.inc(),
                StreamEnd::ResetByUs => stats.downstream_rq_tx_reset.inc(),
            }
            if end != StreamEnd::Done && !state.resets.take() {
                debug!(peer = %client.peer, "HTTP/2 reset flood: ENHANCE_YOUR_CALM");
                stats.downstream_cx_http2_flood.inc();
                conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
            }
        }
        if let (Some(pp), Some(_)) = (ping.as_mut(), state.ping_sent)
            && pp.poll_pong(cx).is_ready()
        {
            state.ping_sent = None;
            state.last_active = timer::now();
        }
        if !state.accepting {
            // h2 is done: only the streams still finishing are left.
            return if streams.is_empty() {
                Poll::Ready(Driven::Over)
            } else {
                Poll::Pending
            };
        }
        match conn.poll_accept(cx) {
            Poll::Ready(Some(Ok((req, respond)))) => {
                state.last_active = timer::now();
                state.released = false;
                state.release_at = None;
                streams.push(Box::pin(serve_stream(client.clone(), req, respond)));
                state.accepted = state.accepted.saturating_add(1);
                if state.max_streams == Some(state.accepted) {
                    // The last stream this connection may carry: GOAWAY, the open ones finish.
                    conn.graceful_shutdown();
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if e.reason() == Some(Reason::ENHANCE_YOUR_CALM) {
                    stats.downstream_cx_http2_flood.inc();
                }
                debug!(peer = %client.peer, "HTTP/2 connection error: {e}");
                state.accepting = false;
            }
            Poll::Ready(None) => state.accepting = false,
            Poll::Pending => {
                // No stream left: the codec's buffers go `RELEASE_AFTER` from now, unless a
                // stream begins first, so an idle connection costs little memory.
                if streams.is_empty() && !state.released && state.release_at.is_none() {
                    state.release_at = Some(timer::now() + codec::RELEASE_AFTER);
                    return Poll::Ready(Driven::Quiet);
                }
                return Poll::Pending;
            }
        }
    }
}

/// A token bucket of stream resets: `rate` a second, bursts of twice that.
struct ResetBudget {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl ResetBudget {
    fn new(rate: u32) -> ResetBudget {
        let rate = f64::from(rate);
        ResetBudget {
            rate,
            tokens: 2.0 * rate,
            at: Instant::now(),
        }
    }

    /// Spends one reset; false when the budget is gone.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(2.0 * self.rate);
        self.at = now;
        self.tokens -= 1.0;
        self.tokens >= 0.0
    }
}

/// One stream: read its head, proxy it, answer its failure, record it.
async fn serve_stream(
    client: Rc<Client>,
    req: Request<RecvStream>,
    respond: SendResponse<Bytes>,
) -> StreamEnd {
    let started = Instant::now();
    let (parts, recv) = req.into_parts();
    let end_of_stream = recv.is_end_stream();
    let req = Request::from_parts(parts, ());
    let mut head = RequestHead::take();
    let responder = Rc::new(RefCell::new(Responder::Head(respond)));
    let limits = &client.limits;
    let mut stream = H2Stream {
        input: Input {
            recv,
            chunk: None,
            unreleased: 0,
            trailers: None,
            done: end_of_stream,
            expect_continue: false,
            timeout: limits.body_timeout,
            deadline: started + limits.request_timeout,
        },
        output: Output {
            responder: responder.clone(),
            head: None,
            data: BytesMut::new(),
            end: false,
            trailers: None,
            timeout: limits.body_timeout,
        },
    };
    let mut outcome = Outcome::default();
    let read = if req.headers().len() > limits.max_headers {
        Err(ProxyError::downstream(ErrorKind::HeadTooLarge))
    } else {
        codec::read_request(&req, end_of_stream, &mut head)
    };
    let mut reset_by_client = false;
    let result = match read {
        Err(e) => Err(e),
        Ok(()) => {
            stream.input.expect_continue = req
                .headers()
                .get(http::header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            stream.input.try_fill();
            let cx = client.context();
            let forward = pin!(proxy::forward(&cx, &mut head, &mut stream, &mut outcome));
            let reset = pin!(poll_fn(|cx| responder.borrow_mut().poll_reset(cx)));
            match select(forward, reset).await {
                Either::Left((result, _)) => result,
                // The client gave up on the stream: the exchange (and its upstream I/O) is
                // dropped here, which the upstream sees as an abort.
                Either::Right((_, _)) => {
                    reset_by_client = true;
                    Err(ProxyError::client_gone())
                }
            }
        }
    };
    let mut end = StreamEnd::Done;
    match result {
        Ok(status) => outcome.status = Some(status),
        Err(e) => {
            debug!(error = %e, "HTTP/2 request failed");
            outcome.error = Some(e);
            outcome.status = answer(&responder, &e, &head);
            if outcome.status.is_none() {
                // The exchange may have seen the client's reset first (a body read failed).
                let reset_by_client = reset_by_client || responder.borrow_mut().was_reset();
                end = if reset_by_client {
                    StreamEnd::ResetByClient
                } else {
                    responder.borrow_mut().reset(reset_reason(&e));
                    StreamEnd::ResetByUs
                };
            }
        }
    }
    let tls = client.tls.as_deref();
    let duration = started.elapsed();
    conn::record(
        &client.worker,
        &client.slot,
        client.peer,
        tls,
        &outcome,
        &head,
        duration,
    );
    head.recycle();
    end
}

/// The RST_STREAM code for a stream the gateway gives up on.
fn reset_reason(e: &ProxyError) -> Reason {
    match e.kind {
        ErrorKind::BadRequest(_) => Reason::PROTOCOL_ERROR,
        ErrorKind::UpstreamClosed | ErrorKind::BadResponse(_) | ErrorKind::Aborted => {
            Reason::INTERNAL_ERROR
        }
        _ => Reason::CANCEL,
    }
}

/// Answers a failed stream whose response has not started: a gRPC status for a gRPC call, a
/// short text response otherwise. Returns the HTTP status sent.
fn answer(responder: &RefCell<Responder>, e: &ProxyError, head: &RequestHead) -> Option<u16> {
    let status = e.status()?;
    let mut r = responder.borrow_mut();
    let Responder::Head(respond) = &mut *r else {
        return None;
    };
    if is_grpc(head) {
        respond
            .send_response(codec::grpc_error_response(e), true)
            .ok()?;
        *r = Responder::Done;
        return Some(200);
    }
    let body = e.body();
    let mut res = Response::new(());
    *res.status_mut() = http::StatusCode::from_u16(status).ok()?;
    let map = res.headers_mut();
    map.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    map.insert(http::header::CONTENT_LENGTH, body.len().into());
    let bodiless = head.method == Method::HEAD || body.is_empty();
    let mut send = respond.send_response(res, bodiless).ok()?;
    if !bodiless {
        send.send_data(Bytes::from_static(body.as_bytes()), true)
            .ok()?;
    }
    *r = Responder::Done;
    Some(status)
}

/// The response side of a stream, as far as it got.
enum Responder {
    Head(SendResponse<Bytes>),
    Body(SendStream<Bytes>),
    /// The response ended (or the stream was reset).
    Done,
}

impl Responder {
    /// Ready when the client reset the stream while its response is still under way.
    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Reason> {
        let polled = match self {
            Responder::Head(r) => r.poll_reset(cx),
            Responder::Body(s) => s.poll_reset(cx),
            Responder::Done => return Poll::Pending,
        };
        polled.map(|r| r.unwrap_or(Reason::CANCEL))
    }

    /// Whether the client has reset the stream (without waiting).
    fn was_reset(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.poll_reset(&mut cx).is_ready()
    }

    fn reset(&mut self, reason: Reason) {
        match self {
            Responder::Head(r) => r.send_reset(reason),
            Responder::Body(s) => s.send_reset(reason),
            Responder::Done => {}
        }
        *self = Responder::Done;
    }
}

/// One HTTP/2 stream as the proxy's downstream.
struct H2Stream {
    input: Input,
    output: Output,
}

/// The request body of a stream.
struct Input {
    recv: RecvStream,
    /// DATA received and not yet taken.
    chunk: Option<Bytes>,
    /// Bytes taken but not yet given back to the client's window: released only once they
    /// were forwarded (the next fill), so a slow upstream slows the client.
    unreleased: usize,
    trailers: Option<Headers>,
    /// END_STREAM seen and everything taken.
    done: bool,
    expect_continue: bool,
    timeout: Duration,
    deadline: Instant,
}

impl Input {
    /// Takes what already arrived without waiting (the body of a small request often comes
    /// with its head), so the request can go out whole.
    fn try_fill(&mut self) {
        if self.done || self.chunk.is_some() {
            return;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.recv.poll_data(&mut cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.chunk = Some(chunk);
                self.done = self.recv.is_end_stream();
            }
            Poll::Ready(None) => {
                if let Poll::Ready(Ok(t)) = self.recv.poll_trailers(&mut cx) {
                    self.keep_trailers(t);
                    self.done = true;
                }
            }
            _ => {}
        }
    }

    fn keep_trailers(&mut self, trailers: Option<HeaderMap>) {
        if let Some(map) = trailers {
            let mut t = Headers::default();
            codec::read_trailers(&map, &mut t);
            self.trailers = Some(t);
        }
    }

    async fn next(&mut self) -> Result<(), ProxyError> {
        loop {
            match poll_fn(|cx| self.recv.poll_data(cx)).await {
                Some(Ok(chunk)) => {
                    let empty = chunk.is_empty();
                    if !empty {
                        self.chunk = Some(chunk);
                    }
                    self.done = self.recv.is_end_stream();
                    if !empty || self.done {
                        return Ok(());
                    }
                }
                Some(Err(e)) => return Err(body_error(&e)),
                None => {
                    let t = poll_fn(|cx| self.recv.poll_trailers(cx))
                        .await
                        .map_err(|e| body_error(&e))?;
                    self.keep_trailers(t);
                    self.done = true;
                    return Ok(());
                }
            }
        }
    }
}

/// What a failed request body read means: the client reset the stream, or broke the rules
/// (DATA beyond the Content-Length, or short of it: h2 resets the stream with PROTOCOL_ERROR).
fn body_error(e: &h2::Error) -> ProxyError {
    if e.reason() == Some(Reason::PROTOCOL_ERROR) && !e.is_remote() {
        ProxyError::bad_request("request body does not match its Content-Length\n")
    } else {
        ProxyError::client_gone()
    }
}

impl RequestBody for Input {
    fn take_body<F>(&mut self, mut f: F) -> Result<bool, ProxyError>
    where
        F: FnMut(&[u8]) -> Result<(), ProxyError>,
    {
        if let Some(chunk) = self.chunk.take() {
            self.unreleased += chunk.len();
            f(&chunk)?;
        }
        Ok(self.done)
    }

    fn trailers(&self) -> Option<&Headers> {
        self.trailers.as_ref()
    }

    async fn fill_body(&mut self) -> Result<(), ProxyError> {
        self.expect_continue = false;
        if self.unreleased > 0 {
            let n = std::mem::take(&mut self.unreleased);
            let _ = self.recv.flow_control().release_capacity(n);
        }
        let until = (timer::now() + self.timeout).min(self.deadline);
        match timer::until(until, self.next()).await {
            Some(r) => r,
            None => Err(ProxyError::downstream(ErrorKind::RequestTimeout)),
        }
    }

    fn expects_continue(&self) -> bool {
        self.expect_continue
    }
}

/// The response of a stream: the head waits until the first flush, so that a response
/// without a body goes out as one HEADERS frame that ends the stream.
struct Output {
    responder: Rc<RefCell<Responder>>,
    head: Option<Response<()>>,
    data: BytesMut,
    /// end_body was called: the stream ends with the last bytes (or the trailers).
    end: bool,
    trailers: Option<HeaderMap>,
    timeout: Duration,
}

impl Output {
    fn informational(&mut self, res: Response<()>) -> Result<(), ProxyError> {
        if let Responder::Head(r) = &mut *self.responder.borrow_mut() {
            r.send_informational(res)
                .map_err(|_| ProxyError::client_gone())?;
        }
        Ok(())
    }

    /// Waits until the client's windows let at least one byte of `want` out.
    async fn capacity(&mut self, want: usize) -> Result<usize, ProxyError> {
        let responder = &self.responder;
        let wait = poll_fn(|cx| match &mut *responder.borrow_mut() {
            Responder::Body(s) => {
                if s.capacity() == 0 {
                    s.reserve_capacity(want);
                }
                match s.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(0))) => Poll::Pending,
                    Poll::Ready(Some(Ok(n))) => Poll::Ready(Ok(n)),
                    Poll::Ready(_) => Poll::Ready(Err(ProxyError::client_gone())),
                    Poll::Pending => Poll::Pending,
                }
            }
            _ => Poll::Ready(Err(ProxyError::client_gone())),
        });
        timer::within(self.timeout, wait)
            .await
            .unwrap_or(Err(ProxyError::client_gone()))
    }
}

impl ResponseSink for Output {
    async fn send_continue(&mut self) -> Result<(), ProxyError> {
        let mut res = Response::new(());
        *res.status_mut() = http::StatusCode::CONTINUE;
        self.informational(res)
    }

    async fn send_interim(&mut self, head: &ResponseHead) -> Result<(), ProxyError> {
        self.informational(codec::write_response(head))
    }

    fn start_response(&mut self, head: &ResponseHead) {
        self.head = Some(codec::write_response(head));
    }

    fn push_body(&mut self, data: &[u8]) -> Result<(), ProxyError> {
        self.data.extend_from_slice(data);
        Ok(())
    }

    fn end_body(&mut self, trailers: Option<&Headers>) -> Result<(), ProxyError> {
        self.end = true;
        self.trailers = trailers
            .filter(|t| !t.is_empty())
            .map(codec::write_trailers);
        Ok(())
    }

    fn pending(&self) -> usize {
        self.data.len() + usize::from(self.head.is_some() || self.end)
    }

    async fn flush(&mut self) -> Result<(), ProxyError> {
        if let Some(res) = self.head.take() {
            let eos = self.end && self.data.is_empty() && self.trailers.is_none();
            let mut r = self.responder.borrow_mut();
            let Responder::Head(respond) = &mut *r else {
                return Err(ProxyError::client_gone());
            };
            let send = respond
                .send_response(res, eos)
                .map_err(|_| ProxyError::client_gone())?;
            *r = if eos {
                Responder::Done
            } else {
                Responder::Body(send)
            };
        }
        while !self.data.is_empty() {
            let n = self.capacity(self.data.len()).await?;
            let chunk = self.data.split_to(n.min(self.data.len())).freeze();
            let eos = self.end && self.data.is_empty() && self.trailers.is_none();
            let mut r = self.responder.borrow_mut();
            let Responder::Body(s) = &mut *r else {
                return Err(ProxyError::client_gone());
            };
            s.send_data(chunk, eos)
                .map_err(|_| ProxyError::client_gone())?;
            if eos {
                *r = Responder::Done;
            }
        }
        if self.end {
            let mut r = self.responder.borrow_mut();
            if let Responder::Body(s) = &mut *r {
                let sent = match self.trailers.take() {
                    Some(t) => s.send_trailers(t),
                    None => s.send_data(Bytes::new(), true),
                };
                sent.map_err(|_| ProxyError::client_gone())?;
                *r = Responder::Done;
            }
            self.end = false;
        }
        Ok(())
    }
}

impl Downstream for H2Stream {
    type Body<'a> = &'a mut Input;
    type Sink<'a> = &'a mut Output;

    fn split(&mut self) -> (&mut Input, &mut Output) {
        (&mut self.input, &mut self.output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_budget_allows_a_burst_then_refuses() {
        let mut b = ResetBudget::new(10);
        let allowed = (0..100).take_while(|_| b.take()).count();
        assert_eq!(allowed, 20, "a burst of twice the rate");
    }
}
