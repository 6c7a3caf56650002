//! Loopback upstream servers for end-to-end tests: a recording hyper HTTP/1.1 server, a scripted raw TCP server, a black-holed listener and a refused port.
//!
//! Every server binds `127.0.0.1:0` before `start()` returns (so it is ready at once: the kernel queues
//! connections until the serving thread accepts them), serves from its own OS thread, and stops when its
//! handle is dropped. Every wait is bounded; a timeout panics with a message saying what was awaited.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::client::{MessageDecoder, RawRequest};

/// Default bound for every wait in the support code.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `Drop` of a server waits for its thread to finish.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Frame size used when generating pattern bodies.
pub const PATTERN_FRAME: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Deterministic pattern bytes and checksums
// ---------------------------------------------------------------------------------------------

/// Streaming FNV-1a (64-bit) checksum, the one used everywhere in the support code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checksum(u64);

impl Checksum {
    pub const fn new() -> Self {
        Checksum(0xcbf2_9ce4_8422_2325)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }

    pub fn value(&self) -> u64 {
        self.0
    }
}

impl Default for Checksum {
    fn default() -> Self {
        Self::new()
    }
}

/// FNV-1a checksum of `bytes`.
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut c = Checksum::new();
    c.update(bytes);
    c.value()
}

/// The deterministic pattern stream: byte `i` is `(i % 251) as u8`. Returns `len` bytes starting at
/// stream position `offset`.
pub fn pattern_bytes(offset: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut b = (offset % 251) as u8;
    for _ in 0..len {
        v.push(b);
        b = if b == 250 { 0 } else { b + 1 };
    }
    v
}

/// Checksum of the first `len` bytes of the pattern stream (what `Reply::Sized` and
/// `client::Body::Pattern` send).
pub fn pattern_checksum(len: u64) -> u64 {
    let mut c = Checksum::new();
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(PATTERN_FRAME as u64) as usize;
        c.update(&pattern_bytes(off, n));
        off += n as u64;
    }
    c.value()
}

/// Polls `cond` with short waits until it holds or `timeout` passes; panics with `what` on timeout.
fn wait_until(timeout: Duration, what: impl Fn() -> String, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {}", what());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits (bounded) for a server thread to report it finished, then joins it.
fn stop_thread(name: &str, done: &mpsc::Receiver<()>, thread: Option<JoinHandle<()>>) {
    let Some(thread) = thread else { return };
    match done.recv_timeout(STOP_TIMEOUT) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            if thread.join().is_err() && !std::thread::panicking() {
                eprintln!("support: {name} server thread panicked");
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            eprintln!(
                "support: {name} server thread did not stop within {STOP_TIMEOUT:?}; detaching it"
            );
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// HttpUpstream
// ---------------------------------------------------------------------------------------------

/// What an [`HttpUpstream`] route answers. Every reply carries `x-upstream: {name}`.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with `len` pattern bytes (see [`pattern_bytes`]), generated in 64 KiB frames; chunked
    /// transfer-encoding if `chunked`, else `content-length`.
    Sized { len: u64, chunked: bool },
    /// 200 with the request body streamed back frame by frame, chunked.
    Echo,
    /// Reads the request body, records it, waits `delay`, then 200 with `body` (content-length).
    Delay { delay: Duration, body: &'static str },
    /// The given status with `body` (content-length).
    Status(u16, &'static str),
    /// The given status, extra headers (in order, duplicates kept) and body (content-length).
    Custom {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

/// One request as an [`HttpUpstream`] received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as received in the request target.
    pub path: String,
    /// "HTTP/1.0" or "HTTP/1.1".
    pub version: String,
    /// Lowercase names, duplicates kept. Order: hyper's header map keeps the first-seen order of
    /// names, with every value of one name adjacent, in the order received.
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    /// [`Checksum`] (FNV-1a) of every body byte, computed while streaming.
    pub body_checksum: u64,
    /// False if the request body ended with an error (peer closed or reset mid-body, bad framing).
    pub body_complete: bool,
    /// Index (0-based, accept order) of the TCP connection the request arrived on.
    pub conn_id: u64,
}

impl Recorded {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

struct Shared {
    name: String,
    routes: Vec<(String, Reply)>,
    recorded: Mutex<Vec<Recorded>>,
    recorded_cv: Condvar,
    accepts: AtomicUsize,
    active: AtomicUsize,
}

impl Shared {
    fn record(&self, r: Recorded) {
        lock(&self.recorded).push(r);
        self.recorded_cv.notify_all();
    }

    /// Longest route key that the path equals or starts with.
    fn route(&self, path: &str) -> Option<&Reply> {
        self.routes
            .iter()
            .filter(|(k, _)| path.starts_with(k.as_str()))
            .max_by_key(|(k, _)| k.len())
            .map(|(_, r)| r)
    }
}

/// Builder for [`HttpUpstream`].
#[derive(Debug)]
pub struct HttpUpstreamBuilder {
    name: String,
    routes: Vec<(String, Reply)>,
    keep_alive: bool,
    header_read_timeout: Option<Duration>,
    bind: Option<SocketAddr>,
}

impl HttpUpstreamBuilder {
    /// Binds this address instead of 127.0.0.1:0 (e.g. another loopback address on a port
    /// already known).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = Some(addr);
        self
    }

    /// Name put in the default body (`"{name}\n"`) and the `x-upstream` header. Default "upstream".
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Adds a route. A route key matches a request whose path (query excluded) equals it or starts
    /// with it; of several matching keys the longest wins. Other paths get the default reply:
    /// 200, body `"{name}\n"`, content-length.
    pub fn route(mut self, path: impl Into<String>, reply: Reply) -> Self {
        self.routes.push((path.into(), reply));
        self
    }

    /// HTTP/1.1 keep-alive (default on). Off: hyper closes each connection after one response.
    pub fn keep_alive(mut self, on: bool) -> Self {
        self.keep_alive = on;
        self
    }

    /// hyper's header read timeout (default: none). When set, hyper closes a connection whose next
    /// request head is not complete within it, which also closes idle keep-alive connections after
    /// that time (useful to test stale pooled connections).
    pub fn header_read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Binds 127.0.0.1:0 and starts serving on a new thread. Ready when this returns.
    pub fn start(self) -> HttpUpstream {
        let at = self
            .bind
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = TcpListener::bind(at).expect("HttpUpstream: bind");
        listener
            .set_nonblocking(true)
            .expect("HttpUpstream: set_nonblocking");
        let addr = listener.local_addr().expect("HttpUpstream: local_addr");
        let shared = Arc::new(Shared {
            name: self.name,
            routes: self.routes,
            recorded: Mutex::new(Vec::new()),
            recorded_cv: Condvar::new(),
            accepts: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let opts = ConnOpts {
            keep_alive: self.keep_alive,
            header_read_timeout: self.header_read_timeout,
        };
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("upstream-{}", shared.name))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("HttpUpstream: tokio runtime");
                rt.block_on(accept_loop(listener, thread_shared, opts, stop_rx));
                // Dropping the runtime cancels every connection task and closes its socket.
                drop(rt);
                let _ = done_tx.send(());
            })
            .expect("HttpUpstream: spawn thread");
        HttpUpstream {
            addr,
            shared,
            stop: Some(stop_tx),
            done: done_rx,
            thread: Some(thread),
        }
    }
}

/// A real HTTP/1.1 server (hyper, http1) on 127.0.0.1 that records every request it receives.
/// Stops (closing all its connections) when dropped. Requests that hyper rejects as malformed
/// (it answers 400 itself) never reach the recorder.
pub struct HttpUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl HttpUpstream {
    pub fn builder() -> HttpUpstreamBuilder {
        HttpUpstreamBuilder {
            name: "upstream".to_string(),
            routes: Vec::new(),
            keep_alive: true,
            header_read_timeout: None,
            bind: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// TCP connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.shared.accepts.load(Ordering::SeqCst)
    }

    /// TCP connections currently open (accepted and not yet closed by either side).
    pub fn active_connections(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Every request recorded so far. A request is recorded once its body has been fully read
    /// (before its response is sent, except for `Reply::Echo`, where it is recorded when the body
    /// ends, before the response's last chunk is written). So when a client has a full response, the
    /// request is already recorded.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.recorded).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.shared.recorded).len()
    }

    /// Waits until at least `n` requests are recorded and returns them all; panics on timeout.
    pub fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        let mut guard = lock(&self.shared.recorded);
        while guard.len() < n {
            let now = Instant::now();
            if now >= deadline {
                let seen: Vec<String> = guard
                    .iter()
                    .map(|r| format!("{} {}", r.method, r.path))
                    .collect();
                panic!(
                    "upstream {:?} ({}): timed out after {timeout:?} waiting for {n} requests; got {}: {seen:?}",
                    self.shared.name,
                    self.addr,
                    guard.len()
                );
            }
            guard = self
                .shared
                .recorded_cv
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        guard.clone()
    }

    /// Waits until at least `n` connections were accepted; panics on timeout.
    pub fn wait_accepts(&self, n: usize, timeout: Duration) {
        wait_until(
            timeout,
            || {
                format!(
                    "upstream {:?} to accept {n} connections (has {})",
                    self.shared.name,
                    self.accepts()
                )
            },
            || self.accepts() >= n,
        );
    }
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        stop_thread(&self.shared.name, &self.done, self.thread.take());
    }
}

struct ActiveGuard(Arc<Shared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Copy)]
struct ConnOpts {
    keep_alive: bool,
    header_read_timeout: Option<Duration>,
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    opts: ConnOpts,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener =
        tokio::net::TcpListener::from_std(listener).expect("HttpUpstream: register listener");
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        eprintln!("support: upstream {:?} accept error: {e}", shared.name);
                        continue;
                    }
                };
                let conn_id = shared.accepts.fetch_add(1, Ordering::SeqCst) as u64;
                shared.active.fetch_add(1, Ordering::SeqCst);
                let guard = ActiveGuard(shared.clone());
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    let svc = service_fn(move |req| handle(req, shared.clone(), conn_id));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(opts.keep_alive)
                        .timer(TokioTimer::new())
                        .header_read_timeout(opts.header_read_timeout)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }
    }
}

fn version_str(v: hyper::Version) -> String {
    match v {
        hyper::Version::HTTP_09 => "HTTP/0.9",
        hyper::Version::HTTP_10 => "HTTP/1.0",
        hyper::Version::HTTP_11 => "HTTP/1.1",
        hyper::Version::HTTP_2 => "HTTP/2",
        hyper::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
    .to_string()
}

fn header_pairs(map: &hyper::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    conn_id: u64,
) -> Result<Response<RespBody>, Infallible> {
    let path = req.uri().path().to_string();
    let mut rec = Recorded {
        method: req.method().as_str().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| req.uri().to_string()),
        version: version_str(req.version()),
        headers: header_pairs(req.headers()),
        body_len: 0,
        body_checksum: Checksum::new().value(),
        body_complete: true,
        conn_id,
    };
    let reply = shared.route(&path).cloned();
    let builder = Response::builder().header("x-upstream", shared.name.as_str());

    if let Some(Reply::Echo) = reply {
        let body = RespBody::Echo(EchoBody {
            inner: req.into_body(),
            sum: Checksum::new(),
            len: 0,
            pending: Some((rec, shared.clone())),
        });
        return Ok(builder.status(200).body(body).expect("echo response"));
    }

    // Consume the request body frame by frame, never holding it whole.
    let mut body = req.into_body();
    let mut sum = Checksum::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    rec.body_len += data.len() as u64;
                    sum.update(data);
                }
            }
            Err(_) => {
                rec.body_complete = false;
                break;
            }
        }
    }
    rec.body_checksum = sum.value();
    shared.record(rec);

    let resp = match reply {
        None => builder
            .status(200)
            .body(RespBody::full(format!("{}\n", shared.name).into_bytes())),
        Some(Reply::Status(code, text)) => builder
            .status(StatusCode::from_u16(code).expect("Reply::Status: valid status code"))
            .body(RespBody::full(text.as_bytes().to_vec())),
        Some(Reply::Delay { delay, body }) => {
            tokio::time::sleep(delay).await;
            builder
                .status(200)
                .body(RespBody::full(body.as_bytes().to_vec()))
        }
        Some(Reply::Sized { len, chunked }) => {
            let b = if chunked {
                builder
            } else {
                builder.header("content-length", len)
            };
            b.status(200).body(RespBody::Pattern {
                sent: 0,
                len,
                chunked,
            })
        }
        Some(Reply::Custom {
            status,
            headers,
            body,
        }) => {
            let mut b =
                builder.status(StatusCode::from_u16(status).expect("Reply::Custom: valid status"));
            for (n, v) in headers {
                b = b.header(n, v);
            }
            b.body(RespBody::full(body))
        }
        Some(Reply::Echo) => unreachable!("handled above"),
    };
    Ok(resp.expect("HttpUpstream: build response"))
}

/// Response bodies of [`HttpUpstream`].
enum RespBody {
    Full(Option<Bytes>),
    Pattern { sent: u64, len: u64, chunked: bool },
    Echo(EchoBody),
}

impl RespBody {
    fn full(v: Vec<u8>) -> Self {
        RespBody::Full(Some(Bytes::from(v)))
    }
}

impl HttpBody for RespBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RespBody::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            RespBody::Pattern { sent, len, .. } => {
                if *sent >= *len {
                    return Poll::Ready(None);
                }
                let n = (*len - *sent).min(PATTERN_FRAME as u64) as usize;
                let chunk = pattern_bytes(*sent, n);
                *sent += n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
            }
            RespBody::Echo(e) => e.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Full(b) => b.as_ref().is_none_or(|b| b.is_empty()),
            RespBody::Pattern { sent, len, .. } => sent >= len,
            RespBody::Echo(e) => e.pending.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RespBody::Pattern { chunked: true, .. } | RespBody::Echo(_) => SizeHint::default(),
            RespBody::Pattern { sent, len, .. } => SizeHint::with_exact(len - sent),
        }
    }
}

/// Streams the request body back, checksumming it; records the request when the body ends (or
/// fails, or the response is dropped).
struct EchoBody {
    inner: Incoming,
    sum: Checksum,
    len: u64,
    pending: Option<(Recorded, Arc<Shared>)>,
}

impl EchoBody {
    fn finish(&mut self, complete: bool) {
        if let Some((mut rec, shared)) = self.pending.take() {
            rec.body_len = self.len;
            rec.body_checksum = self.sum.value();
            rec.body_complete = complete;
            shared.record(rec);
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        loop {
            if self.pending.is_none() {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.finish(true);
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    self.finish(false);
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        self.len += data.len() as u64;
                        self.sum.update(&data);
                        if !data.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                    }
                    // Trailers are not echoed.
                    Err(_trailers) => {}
                },
            }
        }
    }
}

impl Drop for EchoBody {
    fn drop(&mut self) {
        self.finish(false);
    }
}

// ---------------------------------------------------------------------------------------------
// RawUpstream
// ---------------------------------------------------------------------------------------------

/// One accepted connection of a [`RawUpstream`], handed to its script. Reads use a 10 s timeout
/// (settable) and keep any over-read bytes for the next read. Dropping it closes like [`RawConn::close`].
pub struct RawConn {
    stream: Option<TcpStream>,
    buf: VecDeque<u8>,
    conn_id: u64,
    timeout: Duration,
}

impl RawConn {
    fn new(stream: TcpStream, conn_id: u64) -> Self {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(DEFAULT_TIMEOUT));
        RawConn {
            stream: Some(stream),
            buf: VecDeque::new(),
            conn_id,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Index of this connection in accept order (0-based).
    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.stream.as_ref().and_then(|s| s.peer_addr().ok())
    }

    /// The socket, for anything the helpers do not cover (None after close/reset).
    pub fn stream(&mut self) -> Option<&mut TcpStream> {
        self.stream.as_mut()
    }

    /// Timeout of each read helper call (default 10 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Reads more bytes into the buffer before `deadline`. False on EOF, error or timeout.
    fn fill(&mut self, deadline: Instant) -> bool {
        let Some(stream) = self.stream.as_mut() else {
            return false;
        };
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let _ = stream.set_read_timeout(Some(deadline - now));
        let mut tmp = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut tmp) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend(&tmp[..n]);
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }

    /// Reads a request head up to and including the blank line (`"\r\n\r\n"`), at most 64 KiB.
    /// None on EOF, reset, timeout or an oversized head. Bytes after the head stay buffered.
    pub fn read_head(&mut self) -> Option<String> {
        const MAX: usize = 64 * 1024;
        let deadline = Instant::now() + self.timeout;
        loop {
            let contiguous = self.buf.make_contiguous();
            if let Some(pos) = contiguous.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..pos + 4).collect();
                return Some(String::from_utf8_lossy(&head).into_owned());
            }
            if self.buf.len() > MAX || !self.fill(deadline) {
                return None;
            }
        }
    }

    /// Reads a whole request (head and body framed by content-length or chunked encoding).
    /// None on EOF, reset, timeout or malformed framing.
    pub fn read_request(&mut self) -> Option<RawRequest> {
        let deadline = Instant::now() + self.timeout;
        let mut dec = MessageDecoder::request();
        let mut eof = false;
        loop {
            let used = dec.advance(self.buf.make_contiguous(), eof).ok()?;
            self.buf.drain(..used);
            if dec.is_done() {
                return dec.into_request();
            }
            if eof {
                return None;
            }
            if !self.fill(deadline) {
                eof = true;
            }
        }
    }

    /// Reads exactly `n` bytes, or fewer on EOF, reset or timeout.
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + self.timeout;
        while self.buf.len() < n {
            if !self.fill(deadline) {
                break;
            }
        }
        let take = n.min(self.buf.len());
        self.buf.drain(..take).collect()
    }

    /// Writes all of `bytes`. False if the connection is closed or the write failed.
    pub fn write(&mut self, bytes: &[u8]) -> bool {
        match self.stream.as_mut() {
            Some(s) => s.write_all(bytes).and_then(|()| s.flush()).is_ok(),
            None => false,
        }
    }

    /// Half-close: sends FIN, keeps reading possible.
    pub fn shutdown_write(&mut self) {
        if let Some(s) = self.stream.as_ref() {
            let _ = s.shutdown(Shutdown::Write);
        }
    }

    /// Aborts the connection with a TCP RST: sets SO_LINGER {on, 0 s} and closes, so the peer sees
    /// ECONNRESET whatever is buffered. (Linux: direct `setsockopt` call into the C library that std
    /// already links; elsewhere it falls back to closing with unread data, which only resets if
    /// the peer sent bytes this side has not read.)
    pub fn reset(&mut self) {
        if let Some(s) = self.stream.take() {
            if !set_linger_zero(&s) {
                eprintln!("support: RawConn::reset: setsockopt(SO_LINGER) failed; closing instead");
            }
            drop(s);
        }
    }

    /// Graceful close: FIN after everything written, discarding whatever the peer sent that is
    /// still unread (so that the close does not turn into an RST because of unread data).
    pub fn close(&mut self) {
        if let Some(mut s) = self.stream.take() {
            let _ = s.shutdown(Shutdown::Write);
            let _ = s.set_nonblocking(true);
            let mut tmp = [0u8; 16 * 1024];
            while let Ok(n) = s.read(&mut tmp) {
                if n == 0 {
                    break;
                }
            }
        }
    }

    /// True once the connection was closed or reset by this side.
    pub fn is_closed(&self) -> bool {
        self.stream.is_none()
    }
}

impl Drop for RawConn {
    fn drop(&mut self) {
        self.close();
    }
}

/// SO_LINGER 0: the close that follows sends RST instead of FIN.
fn set_linger_zero(s: &TcpStream) -> bool {
    socket2::SockRef::from(s)
        .set_linger(Some(Duration::ZERO))
        .is_ok()
}

type Script = dyn Fn(&mut RawConn) + Send + Sync + 'static;

/// A scripted TCP server: runs the closure for every accepted connection, each in its own thread.
/// Connection threads are detached (their reads time out after 10 s at most); a panic in the
/// script is caught and listed by [`RawUpstream::script_panics`].
pub struct RawUpstream {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    panics: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl RawUpstream {
    pub fn start<F>(script: F) -> RawUpstream
    where
        F: Fn(&mut RawConn) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("RawUpstream: bind 127.0.0.1:0");
        RawUpstream::serve(listener, script)
    }

    /// Like [`start`](Self::start), with small, fixed socket buffers on the accepted
    /// connections: a receive buffer of `rcvbuf` bytes (no autotuning) and an MSS of `mss`
    /// bytes (which keeps the connecting side's send buffer small too), so that a few tens of
    /// KiB the script does not read fill the path from the gateway.
    pub fn start_small_buffers<F>(rcvbuf: usize, mss: u32, script: F) -> RawUpstream
    where
        F: Fn(&mut RawConn) + Send + Sync + 'static,
    {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("RawUpstream: socket");
        s.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
        s.set_tcp_mss(mss).expect("TCP_MAXSEG");
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
        s.bind(&addr.into()).expect("RawUpstream: bind 127.0.0.1:0");
        s.listen(64).expect("RawUpstream: listen");
        RawUpstream::serve(s.into(), script)
    }

    fn serve<F>(listener: TcpListener, script: F) -> RawUpstream
    where
        F: Fn(&mut RawConn) + Send + Sync + 'static,
    {
        let script: Arc<Script> = Arc::new(script);
        let addr = listener.local_addr().expect("RawUpstream: local_addr");
        let accepts = Arc::new(AtomicUsize::new(0));
        let panics = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (t_accepts, t_panics, t_stop) = (accepts.clone(), panics.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("raw-upstream".to_string())
            .spawn(move || {
                for stream in listener.incoming() {
                    if t_stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let conn_id = t_accepts.fetch_add(1, Ordering::SeqCst) as u64;
                    let (script, panics) = (script.clone(), t_panics.clone());
                    let _ = std::thread::Builder::new()
                        .name(format!("raw-conn-{conn_id}"))
                        .spawn(move || {
                            let mut conn = RawConn::new(stream, conn_id);
                            let res = catch_unwind(AssertUnwindSafe(|| script(&mut conn)));
                            if let Err(p) = res {
                                let msg = p
                                    .downcast_ref::<&str>()
                                    .map(|s| s.to_string())
                                    .or_else(|| p.downcast_ref::<String>().cloned())
                                    .unwrap_or_else(|| "non-string panic".to_string());
                                lock(&panics).push(format!("conn {conn_id}: {msg}"));
                            }
                        });
                }
                let _ = done_tx.send(());
            })
            .expect("RawUpstream: spawn thread");
        RawUpstream {
            addr,
            accepts,
            panics,
            stop,
            done: done_rx,
            thread: Some(thread),
        }
    }

    /// For each request read on a connection (head plus content-length/chunked body), writes
    /// `bytes`; loops until the peer closes (or 10 s pass without a request).
    pub fn responding(bytes: &'static [u8]) -> RawUpstream {
        RawUpstream::start(move |conn| {
            while conn.read_request().is_some() {
                if !conn.write(bytes) {
                    break;
                }
            }
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` connections were accepted; panics on timeout.
    pub fn wait_accepts(&self, n: usize, timeout: Duration) {
        wait_until(
            timeout,
            || {
                format!(
                    "raw upstream {} to accept {n} connections (has {})",
                    self.addr,
                    self.accepts()
                )
            },
            || self.accepts() >= n,
        );
    }

    /// Panic messages of scripts that panicked so far.
    pub fn script_panics(&self) -> Vec<String> {
        lock(&self.panics).clone()
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a throwaway connection.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        stop_thread("raw", &self.done, self.thread.take());
    }
}

// ---------------------------------------------------------------------------------------------
// BlackholeUpstream and closed_port
// ---------------------------------------------------------------------------------------------

/// A listener that never accepts and whose accept queue is full, so new connects hang.
///
/// It listens with backlog 1 (via tokio's `TcpSocket::listen`, since std cannot set a backlog)
/// and is then filled with client connections that are kept open and never accepted. On Linux,
/// once the accept queue is full, incoming SYNs are dropped, so a `connect()` to [`addr`] gets no
/// answer and hangs until the connecting side's own timeout.
///
/// [`addr`]: BlackholeUpstream::addr
pub struct BlackholeUpstream {
    addr: SocketAddr,
    fillers: Vec<TcpStream>,
    blackholed: bool,
    _listener: TcpListener,
}

impl BlackholeUpstream {
    /// Connect timeout used to detect the full queue while filling (loopback connects take
    /// microseconds when they succeed).
    const PROBE: Duration = Duration::from_millis(200);
    const MAX_FILLERS: usize = 64;

    pub fn start() -> BlackholeUpstream {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("BlackholeUpstream: tokio runtime");
        let listener = rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().expect("BlackholeUpstream: socket");
            socket
                .bind("127.0.0.1:0".parse().expect("addr"))
                .expect("BlackholeUpstream: bind 127.0.0.1:0");
            socket
                .listen(1)
                .and_then(|l| l.into_std())
                .expect("BlackholeUpstream: listen(1)")
        });
        drop(rt);
        let addr = listener
            .local_addr()
            .expect("BlackholeUpstream: local_addr");
        let mut fillers = Vec::new();
        let mut blackholed = false;
        while fillers.len() < Self::MAX_FILLERS {
            match TcpStream::connect_timeout(&addr, Self::PROBE) {
                Ok(s) => fillers.push(s),
                Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                    blackholed = true;
                    break;
                }
                Err(e) => panic!("BlackholeUpstream: unexpected connect error while filling: {e}"),
            }
        }
        BlackholeUpstream {
            addr,
            fillers,
            blackholed,
            _listener: listener,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Filler connections it took to fill the accept queue.
    pub fn fillers(&self) -> usize {
        self.fillers.len()
    }

    /// True if, while filling, a connect timed out (the queue is full and SYNs are dropped).
    /// False if the kernel kept accepting all `MAX_FILLERS` (64) filler connections.
    pub fn is_blackholed(&self) -> bool {
        self.blackholed
    }
}

/// An address on 127.0.0.1 where nothing listens: connecting there is refused. (It was bound to
/// port 0 and released; another process could in principle take it again.)
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("closed_port: bind 127.0.0.1:0");
    let addr = l.local_addr().expect("closed_port: local_addr");
    drop(l);
    addr
}
