//! Upstream HTTP/2: per endpoint per core, a few shared connections ("sessions") each carrying
//! as many streams as the peer's live SETTINGS_MAX_CONCURRENT_STREAMS allows, one connect in
//! flight at a time, and the exchange of one request over a stream (body and trailers both
//! ways, flow control tied to forwarding, GOAWAY-refused streams reported as retryable).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::future::{Either, select};
use h2::client::{self, SendRequest};
use h2::{Reason, RecvStream, SendStream};

use crate::config::Http2Options;
use crate::error::{ErrorKind, ProxyError, Side};
use crate::h2::io::H2Io;
use crate::h2::{self as codec};
use crate::message::{Headers, RequestHead, ResponseHead};
use crate::proxy::{Outcome, RequestBody, ResponseSink};
use crate::rt;
use crate::timer;
use crate::upstream::UpstreamConn;

/// One endpoint's HTTP/2 connections on this core.
#[derive(Default)]
pub struct Sessions {
    list: RefCell<Vec<Rc<Session>>>,
    /// A connect is under way; others wait for it instead of opening their own.
    connecting: Cell<bool>,
    waiting: RefCell<Vec<Waker>>,
    /// The endpoint agreed on h2 last time (for `protocol: auto`).
    speaks_h2: Cell<bool>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("sessions", &self.list.borrow().len())
            .finish()
    }
}

/// One HTTP/2 connection to an endpoint.
pub struct Session {
    send: SendRequest<Bytes>,
    /// Streams open on it now (the driver reads it too).
    active: Rc<Cell<usize>>,
    /// The connection ended (GOAWAY, error, close): no new stream goes on it.
    closed: Rc<Cell<bool>>,
    idle_since: Cell<Instant>,
    /// Keeps the endpoint's connection gauge and the socket.
    _conn: UpstreamConn,
    /// Polls the h2 connection (frames in and out) until it ends; dropped with the session.
    _driver: rt::Task,
}

impl Sessions {
    /// A session with a free stream.
    pub fn find(&self) -> Option<Rc<Session>> {
        let mut list = self.list.borrow_mut();
        list.retain(|s| !s.closed.get());
        list.iter().find(|s| s.has_room()).cloned()
    }

    /// Whether someone is connecting; then [`wait`](Sessions::wait) for them.
    pub fn is_connecting(&self) -> bool {
        self.connecting.get()
    }

    /// Waits for the connect under way to end.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.connecting.get() {
                self.waiting.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }

    /// Marks a connect under way until the guard is dropped (waking those who wait).
    pub fn connecting(&self) -> Connecting<'_> {
        self.connecting.set(true);
        Connecting(self)
    }

    pub fn add(&self, session: Rc<Session>) {
        self.speaks_h2.set(true);
        self.list.borrow_mut().push(session);
    }

    /// The endpoint spoke h2 when last connected (`protocol: auto`).
    pub fn speaks_h2(&self) -> bool {
        self.speaks_h2.get()
    }

    pub fn set_speaks_h2(&self, yes: bool) {
        self.speaks_h2.set(yes);
    }

    /// Closes sessions that carried no stream for `idle_timeout`, and forgets closed ones.
    pub fn evict_idle(&self, now: Instant, idle_timeout: Duration) {
        self.list.borrow_mut().retain(|s| {
            !s.closed.get() && (s.active.get() > 0 || now < s.idle_since.get() + idle_timeout)
        });
    }

    pub fn clear(&self) {
        self.list.borrow_mut().clear();
    }
}

/// A connect in progress on an endpoint's [`Sessions`].
pub struct Connecting<'a>(&'a Sessions);

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.0.connecting.set(false);
        for w in self.0.waiting.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

/// Polls an upstream connection until it ends, freeing h2's codec buffers and stream table once
/// it has been without streams for `RELEASE_AFTER` (see the downstream side for why not at once).
async fn drive(mut connection: client::Connection<H2Io>, streams: Rc<Cell<usize>>) {
    let mut released = false;
    let mut release_due = false;
    loop {
        let waiting = release_due;
        let step = poll_fn(|cx| {
            if Pin::new(&mut connection).poll(cx).is_ready() {
                return Poll::Ready(true);
            }
            if streams.get() > 0 {
                released = false;
                release_due = false;
            } else if !released && !release_due {
                return Poll::Ready(false);
            }
            Poll::Pending
        });
        let waited = if waiting {
            timer::within(codec::RELEASE_AFTER, step).await
        } else {
            Some(step.await)
        };
        match waited {
            Some(true) => return,
            // The last stream ended: free the buffers a while later.
            Some(false) => release_due = true,
            None => {
                release_due = false;
                // Frames still queued keep them: the next quiet poll schedules another try.
                released = streams.get() == 0 && connection.release_buffers();
            }
        }
    }
}

impl Session {
    /// Starts HTTP/2 on a new connection: the preface and SETTINGS go out at once; the peer's
    /// SETTINGS are applied as they arrive (h2 reads the stream limit live).
    pub async fn open(
        conn: UpstreamConn,
        options: &Http2Options,
        max_header_list_size: usize,
        write_timeout: Duration,
    ) -> Result<Rc<Session>, ProxyError> {
        let io = H2Io::new(conn.transport().clone(), None, write_timeout);
        let mut builder = client::Builder::new();
        builder
            .initial_window_size(options.initial_stream_window_size)
            .initial_connection_window_size(options.initial_connection_window_size)
            .max_frame_size(options.max_frame_size)
            .max_header_list_size(u32::try_from(max_header_list_size).unwrap_or(u32::MAX))
            // Until the peer's SETTINGS say otherwise.
            .initial_max_send_streams(options.max_concurrent_streams as usize)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .enable_push(false);
        let (send, connection) = builder
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| upstream_error(&e))?;
        let closed = Rc::new(Cell::new(false));
        let ended = closed.clone();
        let active = Rc::new(Cell::new(0));
        let streams = active.clone();
        let driver = rt::spawn_handle(async move {
            drive(connection, streams).await;
            ended.set(true);
        });
        Ok(Rc::new(Session {
            send,
            active,
            closed,
            idle_since: Cell::new(timer::now()),
            _conn: conn,
            _driver: driver,
        }))
    }

    /// Takes the session out of use (the peer sent GOAWAY): streams under way finish on it.
    pub fn close(&self) {
        self.closed.set(true);
    }

    fn has_room(&self) -> bool {
        !self.closed.get() && self.active.get() < self.send.current_max_send_streams()
    }
}

/// Response bytes h2 may buffer per stream beyond the peer's window.
const MAX_SEND_BUFFER: usize = 64 * 1024;

/// Holds a stream slot on a session while an exchange runs.
struct Slot<'a>(&'a Session);

impl<'a> Slot<'a> {
    fn new(session: &'a Session) -> Slot<'a> {
        session.active.set(session.active.get() + 1);
        Slot(session)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let s = self.0;
        s.active.set(s.active.get().saturating_sub(1));
        if s.active.get() == 0 {
            s.idle_since.set(timer::now());
        }
    }
}

/// What an HTTP/2 exchange needs from the cluster and route.
pub struct Limits {
    pub response_timeout: Duration,
    pub send_timeout: Duration,
    pub body_timeout: Duration,
    pub body_limit: Option<u64>,
}

/// A failure from h2 on the upstream side. A stream the peer refused, or that a GOAWAY left
/// unprocessed, never reached the application: retryable.
fn upstream_error(e: &h2::Error) -> ProxyError {
    let unprocessed = e.reason() == Some(Reason::REFUSED_STREAM)
        || (e.is_go_away() && e.is_remote() && e.reason() == Some(Reason::NO_ERROR));
    let err = ProxyError::upstream(ErrorKind::UpstreamClosed);
    match e.get_io() {
        Some(io) => err.caused_by(io),
        None if unprocessed => err.retryable(),
        None => err,
    }
}

/// A request body held whole (it may be sent again on another session).
pub struct Held {
    pub data: Bytes,
    pub trailers: Option<Headers>,
}

/// Takes the request body bytes already received; returns them whole when the body is
/// complete (`Ok(Ok(held))`), or the part so far (`Ok(Err(part))`).
pub fn take_initial<B: RequestBody>(
    body: &mut B,
    limit: Option<u64>,
    outcome: &mut Outcome,
) -> Result<Result<Held, BytesMut>, ProxyError> {
    let mut buf = BytesMut::new();
    let body_in = Cell::new(outcome.body_in);
    let done = take(body, &mut buf, limit, &body_in);
    outcome.body_in = body_in.get();
    let done = done?;
    Ok(if done {
        Ok(Held {
            data: buf.freeze(),
            trailers: body.trailers().cloned(),
        })
    } else {
        Err(buf)
    })
}

fn take<B: RequestBody>(
    body: &mut B,
    buf: &mut BytesMut,
    limit: Option<u64>,
    body_in: &Cell<u64>,
) -> Result<bool, ProxyError> {
    body.take_body(|d| {
        body_in.set(body_in.get() + d.len() as u64);
        if limit.is_some_and(|l| body_in.get() > l) {
            return Err(ProxyError::downstream(ErrorKind::PayloadTooLarge));
        }
        buf.extend_from_slice(d);
        Ok(())
    })
}

/// What the request body is at the start of an attempt.
pub enum Body {
    /// Complete and held (sent again as is on a retry).
    Held(Held),
    /// Still arriving from the client: `first` came already.
    Streaming(BytesMut),
}

impl Body {
    /// The request body as far as it came: held whole if complete, else the part so far.
    pub fn take<B: RequestBody>(
        body: &mut B,
        limit: Option<u64>,
        outcome: &mut Outcome,
    ) -> Result<Body, ProxyError> {
        Ok(match take_initial(body, limit, outcome)? {
            Ok(held) => Body::Held(held),
            Err(part) => Body::Streaming(part),
        })
    }

    /// The size of a body held whole.
    pub fn held_bytes(&self) -> Option<u64> {
        match self {
            Body::Held(h) => Some(h.data.len() as u64),
            Body::Streaming(_) => None,
        }
    }
}

/// One exchange on a session: send the head and body, relay the response head, body and
/// trailers (the upload goes on while the response streams back, as gRPC bidirectional calls
/// need). The last bytes are left for the caller to flush. Returns the status relayed; or
/// None when `withhold(status)` said the answer is not to be relayed (the caller retries it
/// elsewhere).
#[allow(clippy::too_many_arguments)]
pub async fn exchange<B: RequestBody, S: ResponseSink>(
    session: &Session,
    req: http::Request<()>,
    head_request: bool,
    request_body: &mut Body,
    body: &mut B,
    sink: &mut S,
    limits: &Limits,
    outcome: &mut Outcome,
    withhold: &mut dyn FnMut(u16) -> bool,
) -> Result<Option<u16>, ProxyError> {
    let _slot = Slot::new(session);
    let mut send = session.send.clone();
    let ready = poll_fn(|cx| send.poll_ready(cx));
    // A failure before the stream exists (the session was closing) sent nothing: retryable.
    match timer::within(limits.send_timeout, ready).await {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(upstream_error(&e).retryable()),
        None => return Err(ProxyError::upstream(ErrorKind::UpstreamSendTimeout)),
    }
    let empty = match request_body {
        Body::Held(h) => h.data.is_empty() && h.trailers.is_none(),
        Body::Streaming(_) => false,
    };
    let started = Instant::now();
    let (response, mut stream) = send
        .send_request(req, empty)
        .map_err(|e| upstream_error(&e).retryable())?;
    let body_in = Cell::new(outcome.body_in);
    let body_out = Cell::new(0);
    let mut response = pin!(timer::within(limits.response_timeout, response));
    let mut upload = pin!(upload(&mut stream, request_body, body, limits, &body_in));
    let mut uploading = !empty;
    let res = if uploading {
        match select(upload.as_mut(), response.as_mut()).await {
            Either::Left((Ok(()), response)) => {
                uploading = false;
                response.await
            }
            Either::Left((Err(e), _)) if e.side != Side::Upstream => return Err(e),
            // The upstream stopped the upload (a reset, or no reading): it may have answered
            // all the same.
            Either::Left((Err(e), response)) => {
                uploading = false;
                match response.await {
                    Some(Ok(res)) => Some(Ok(res)),
                    _ => return Err(e),
                }
            }
            Either::Right((res, _)) => res,
        }
    } else {
        response.await
    };
    outcome.body_in = body_in.get();
    let res = match res {
        Some(Ok(res)) => res,
        Some(Err(e)) => return Err(upstream_error(&e)),
        None => return Err(ProxyError::upstream(ErrorKind::UpstreamTimeout)),
    };
    outcome.upstream_time = Some(started.elapsed());
    outcome.upstream_status = Some(res.status().as_u16());
    let (parts, mut recv) = res.into_parts();
    let res = http::Response::from_parts(parts, ());
    let mut head = ResponseHead::take();
    let read = codec::read_response(&res, recv.is_end_stream(), head_request, &mut head);
    let status = head.status;
    if let Err(e) = read {
        head.recycle();
        return Err(e);
    }
    if withhold(status) {
        // Dropping the stream resets it: the rest of this answer is not wanted.
        head.recycle();
        return Ok(None);
    }
    sink.start_response(&head);
    head.recycle();
    let relaying = pin!(relay(&mut recv, sink, limits.body_timeout, &body_out));
    let relayed = if uploading {
        match select(upload, relaying).await {
            Either::Left((Ok(()), relaying)) => relaying.await,
            // The upstream no longer reads the body but still answers: finish the answer.
            Either::Left((Err(e), relaying)) if e.side == Side::Upstream => relaying.await,
            Either::Left((Err(e), _)) => Err(e),
            // The response is complete before the request body: the rest is not sent (the
            // stream is reset when dropped).
            Either::Right((relayed, _)) => relayed,
        }
    } else {
        relaying.await
    };
    outcome.body_in = body_in.get();
    outcome.body_out = body_out.get();
    relayed.map(|()| Some(status))
}

/// Sends the request body (and trailers) up the stream, as the peer's windows allow.
async fn upload<B: RequestBody>(
    stream: &mut SendStream<Bytes>,
    request_body: &mut Body,
    body: &mut B,
    limits: &Limits,
    body_in: &Cell<u64>,
) -> Result<(), ProxyError> {
    let (mut buf, mut done, mut trailers) = match request_body {
        Body::Held(h) => (
            BytesMut::from(&h.data[..]),
            true,
            h.trailers.as_ref().map(codec::write_trailers),
        ),
        Body::Streaming(first) => (std::mem::take(first), false, None),
    };
    loop {
        while !buf.is_empty() {
            if stream.capacity() == 0 {
                stream.reserve_capacity(buf.len());
            }
            let capacity = poll_fn(|cx| stream.poll_capacity(cx));
            let n = match timer::within(limits.send_timeout, capacity).await {
                Some(Some(Ok(n))) => n,
                Some(Some(Err(e))) => return Err(upstream_error(&e)),
                Some(None) => return Err(ProxyError::upstream(ErrorKind::UpstreamClosed)),
                None => return Err(ProxyError::upstream(ErrorKind::UpstreamSendTimeout)),
            };
            if n == 0 {
                continue;
            }
            let chunk = buf.split_to(n.min(buf.len())).freeze();
            let eos = done && buf.is_empty() && trailers.is_none();
            stream
                .send_data(chunk, eos)
                .map_err(|e| upstream_error(&e))?;
            if eos {
                return Ok(());
            }
        }
        if done {
            let sent = match trailers.take() {
                Some(t) => stream.send_trailers(t),
                None => stream.send_data(Bytes::new(), true),
            };
            return sent.map_err(|e| upstream_error(&e));
        }
        body.fill_body().await?;
        done = take(body, &mut buf, limits.body_limit, body_in)?;
        if done {
            trailers = body.trailers().map(codec::write_trailers);
        }
    }
}

/// Streams the response body and trailers to the client, giving the upstream's window back
/// only once each piece was written to the client.
async fn relay<S: ResponseSink>(
    recv: &mut RecvStream,
    sink: &mut S,
    body_timeout: Duration,
    body_out: &Cell<u64>,
) -> Result<(), ProxyError> {
    loop {
        let data = poll_fn(|cx| recv.poll_data(cx));
        match timer::within(body_timeout, data).await {
            Some(Some(Ok(chunk))) => {
                body_out.set(body_out.get() + chunk.len() as u64);
                sink.push_body(&chunk)?;
                sink.flush().await?;
                let _ = recv.flow_control().release_capacity(chunk.len());
            }
            Some(None) => break,
            Some(Some(Err(_))) => return Err(ProxyError::upstream(ErrorKind::Aborted)),
            None => return Err(crate::upstream::idle_timeout()),
        }
    }
    let trailers = poll_fn(|cx| recv.poll_trailers(cx));
    let trailers = match timer::within(body_timeout, trailers).await {
        Some(Ok(t)) => t,
        _ => return Err(ProxyError::upstream(ErrorKind::Aborted)),
    };
    match trailers {
        Some(map) => {
            let mut t = Headers::default();
            codec::read_trailers(&map, &mut t);
            sink.end_body(Some(&t))
        }
        None => sink.end_body(None),
    }
}

/// The request for an upstream over h2, from the neutral head.
pub fn request(
    head: &RequestHead,
    tls: bool,
    cluster: &str,
) -> Result<http::Request<()>, ProxyError> {
    codec::write_request(head, if tls { "https" } else { "http" }, cluster.as_bytes())
}
