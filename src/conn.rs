//! One downstream connection from accept to close: the TLS handshake, the choice of protocol
//! (ALPN, or the h2c preface; HTTP/2 is served by `h2::server`), and HTTP/1.x itself: read
//! heads under their limits and timeouts, hand each request to the proxy, answer errors,
//! keep-alive and pipelining; and the one step that records every finished request.

use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::{Either, select};
use tracing::debug;

use crate::access_log;
use crate::config::Limits;
use crate::error::{ErrorKind, ProxyError};
use crate::h1::body::{BodyDecoder, BodyEncoder, Framing};
use crate::h1::head::{
    CONTINUE, Parsed, Persistence, encode_interim, encode_local_response, encode_response,
    head_end, parse_request,
};
use crate::message::{BodyLength, Headers, Method, RequestHead, ResponseHead, Version};
use crate::park;
use crate::proxy::{self, Context, Downstream, Outcome, RequestBody, ResponseSink};
use crate::rt::{self, ClientTcp, Stream, TcpStream};
use crate::slot::ListenerSlot;
use crate::spare;
use crate::stats::WorkerStats;
use crate::timer;
use crate::tls::{self, Refused, TlsInfo};
use crate::trace;
use crate::transport::Transport;
use crate::worker::Worker;

/// Least free space offered to a read.
const MIN_READ: usize = 4096;
/// How long a closing connection keeps draining what the client still sends, so that its
/// unread bytes do not turn our close into a reset that destroys the response in flight.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes drained while lingering.
const LINGER_BYTES: usize = 1 << 20;

/// Serves one accepted connection to its end: the TLS handshake first on a TLS listener, then
/// the protocol the client and the gateway agreed on (HTTP/2: ALPN `h2` or the h2c preface;
/// HTTP/1.x otherwise).
/// `tracked` counts it out when it ends, or when its task is dropped (a drain cut short, before
/// or during a request).
pub fn serve(tcp: TcpStream, peer: SocketAddr, mut tracked: Tracked) -> impl Future<Output = ()> {
    let (tls, header, limit, http2, local) = {
        let generation = tracked.worker.generation();
        let snapshot = &generation.snapshot;
        let spec = snapshot.listeners.get(tracked.slot.index.get());
        (
            spec.and_then(|l| l.tls.clone()),
            spec.is_some_and(|l| l.client_cert_header.is_some()),
            snapshot.limits.header_timeout,
            spec.is_some_and(|l| l.http2.is_some()),
            spec.is_some_and(|l| l.needs_local_address),
        )
    };
    if local {
        tracked.local = tcp.local_addr().ok().map(Box::new);
    }
    match tls {
        // The common case, and the one whose task is sized for it alone: an idle plaintext
        // HTTP/1 connection is a task of a few hundred bytes (see serve_h1).
        None if !http2 => Either::Left(serve_plain(
            Conn::new(ClientTcp::new(tcp), peer, None, tracked),
            None,
        )),
        // Boxed once per connection: TLS and h2c state would otherwise size every task.
        tls => Either::Right(Box::pin(serve_other(
            tcp, peer, tracked, tls, header, limit,
        ))),
    }
}

/// Serves a connection to a TLS listener, or to a plaintext listener with HTTP/2 (h2c).
async fn serve_other(
    tcp: TcpStream,
    peer: SocketAddr,
    tracked: Tracked,
    tls: Option<Arc<tls::ServerTls>>,
    header: bool,
    limit: Duration,
) {
    let Some(tls) = tls else {
        // Boxed, and over before either protocol is served: its ~1.5 KB would otherwise size
        // every TLS connection's state for its whole life.
        let Some((first, h2c)) = Box::pin(sniff_h2c(&tcp, limit, &tracked.slot)).await else {
            return;
        };
        if h2c {
            // Boxed: an HTTP/1 connection on this listener does not pay for HTTP/2's state.
            let io = Transport::Plain(tcp);
            return Box::pin(crate::h2::server::serve(
                io,
                Some(first),
                peer,
                None,
                tracked,
            ))
            .await;
        }
        let first = Some(Box::new(first));
        return serve_plain(Conn::new(ClientTcp::new(tcp), peer, None, tracked), first).await;
    };
    // Boxed: the handshake's state (the ClientHello reader, the first flights) is gone once it
    // ends, and a plaintext connection never pays for it.
    let handshake = {
        let accept = Box::pin(timer::within(limit, tls::accept(tcp, &tls)));
        match select(accept, pin!(tracked.slot.closed())).await {
            Either::Left((done, _)) => done,
            Either::Right(_) => return,
        }
    };
    let ssl = &tracked.slot.stats.ssl;
    match handshake {
        Some(Ok((stream, info))) => {
            ssl.handshake.inc();
            if info.resumed {
                ssl.session_reused.inc();
            }
            let client_cert = info
                .client
                .as_ref()
                .filter(|_| header)
                .map(|c| Box::from(c.header_value().into_bytes()));
            let protocol = Protocol::agreed(info.alpn.as_deref());
            let side = Rc::new(TlsSide { info, client_cert });
            match protocol {
                Protocol::Http1 => serve_h1(Conn::new(stream, peer, Some(side), tracked)).await,
                Protocol::Http2 => {
                    let io = Transport::Tls(stream);
                    Box::pin(crate::h2::server::serve(
                        io,
                        None,
                        peer,
                        Some(side),
                        tracked,
                    ))
                    .await
                }
            }
        }
        Some(Err(refused)) => {
            debug!(%peer, ?refused, "TLS handshake refused");
            match refused {
                Refused::Plaintext => ssl.plaintext_request.inc(),
                Refused::HelloTooLarge => ssl.client_hello_too_large.inc(),
                Refused::NoCertificate => ssl.no_certificate.inc(),
                Refused::NoClientCertificate => ssl.fail_verify_no_cert.inc(),
                Refused::BadClientCertificate => ssl.fail_verify_error.inc(),
                Refused::Handshake(_) => ssl.connection_error.inc(),
                Refused::Closed => ssl.handshake_aborted.inc(),
            }
        }
        None => ssl.handshake_timeout.inc(),
    }
}

/// The protocol a connection speaks, from what ALPN agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    /// `h2`: HTTP/2 (ALPN agrees only on a protocol the listener offers). `http/1.1`, or no
    /// ALPN at all: HTTP/1.x.
    fn agreed(alpn: Option<&[u8]>) -> Protocol {
        match alpn {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4): a client with prior knowledge starts with it.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// On a plaintext listener with HTTP/2: reads the first bytes and tells whether they are the
/// preface (h2c with prior knowledge: true) or HTTP/1.x, before the HTTP/1 parser sees them (it
/// would answer the preface's `PRI` request line with 505). None: nothing came in time, or the
/// listener closes.
async fn sniff_h2c(
    io: &TcpStream,
    limit: Duration,
    slot: &ListenerSlot,
) -> Option<(rt::Received, bool)> {
    let first = {
        let read = pin!(timer::within(limit, io.read_pooled()));
        match select(read, pin!(slot.closed())).await {
            Either::Left((Some(Ok(Some(bytes))), _)) if !bytes.is_empty() => bytes,
            Either::Left((Some(Err(e)), _)) if rt::out_of_buffers(&e) => {
                let mut buf = rt::take_buffer();
                match timer::within(limit, io.read_some(&mut buf, MIN_READ)).await {
                    Some(Ok(n)) if n > 0 => rt::Received::Owned(buf),
                    _ => return None,
                }
            }
            _ => return None,
        }
    };
    // A preface split over reads (rare): gather up to its length before deciding.
    let first = if first.len() < PREFACE.len() && PREFACE.starts_with(&first) {
        let mut buf = rt::take_buffer();
        buf.extend_from_slice(&first);
        drop(first);
        while buf.len() < PREFACE.len() && PREFACE.starts_with(&buf) {
            match timer::within(limit, io.read_some(&mut buf, MIN_READ)).await {
                Some(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
        rt::Received::Owned(buf)
    } else {
        first
    };
    let h2c = first.starts_with(PREFACE);
    Some((first, h2c))
}

/// What the TLS handshake told about a client.
pub struct TlsSide {
    pub info: TlsInfo,
    /// The verified client certificate as the listener's `client_cert_header` carries it.
    pub client_cert: Option<Box<[u8]>>,
}

/// Serves HTTP/1.x on an established TLS connection until it ends.
///
/// Between requests the connection is this future alone: [`Conn`] and one armed read.
/// Everything a request needs — read and write state, the exchange with the upstream — lives
/// in one box that exists only while requests are under way ([`H1::serve`]), taken from the
/// core's spares ([`spare`]) for each busy period.
/// A plain fn around an `async move` block: the block captures `conn` and uses it in place,
/// where an `async fn` would keep a second copy of its arguments (576 bytes instead of 440).
#[allow(clippy::manual_async_fn)]
fn serve_h1<S: Stream>(mut conn: Conn<S>) -> impl Future<Output = ()> {
    async move {
        // A connection that has sent nothing yet gets the header timeout, then the idle one.
        let mut fresh = conn.served == 0;
        let end = loop {
            let Some(first) = conn.wait_for_request(fresh).await else {
                break End::Clean;
            };
            fresh = false;
            // Built in place in a spare box of the core's: no allocation, no memcpy.
            let busy = spare::Busy::new(|| H1::new(&mut conn).serve(first));
            if let Some(end) = busy.await {
                break end;
            }
        };
        conn.end(end).await
    }
}

/// Serves HTTP/1.x on a plaintext connection until it ends, beginning with `first` when its
/// first bytes were read already (h2c sniffing).
///
/// As [`serve_h1`], and a keep-alive connection idle for [`PARK_AFTER`] parks: its receive is
/// taken back from the ring (what raced the cancellation is served), its task ends, and the
/// connection waits as a record of the core's [`park`] table until its socket turns readable
/// and a new task takes it up.
#[allow(clippy::manual_async_fn)]
fn serve_plain(
    mut conn: Conn<ClientTcp>,
    mut first: Option<Box<rt::Received>>,
) -> impl Future<Output = ()> {
    // `first` is boxed: whatever the task captures, it keeps for its whole life (56 bytes
    // unboxed, held twice), and a connection starts with bytes in hand only after h2c sniffing.
    async move {
        let mut fresh = conn.served == 0 && first.is_none();
        let mut may_park = true;
        let end = loop {
            let bytes = match first.take() {
                Some(bytes) => *bytes,
                None => match conn.wait_plain(fresh, may_park).await {
                    Waited::Request(bytes) => bytes,
                    Waited::End => break End::Clean,
                    Waited::Park(deadline) => match park_conn(conn, deadline) {
                        Ok(()) => return,
                        // It cannot park: it waits out its idle time in this task.
                        Err(back) => {
                            conn = back;
                            may_park = false;
                            continue;
                        }
                    },
                },
            };
            fresh = false;
            let busy = spare::Busy::new(|| H1::new(&mut conn).serve(bytes));
            if let Some(end) = busy.await {
                break end;
            }
        };
        conn.end(end).await
    }
}

/// How long a keep-alive connection waits in its task before it parks. Under load the next
/// request comes within milliseconds and a connection never parks (parking and waking again
/// cost a task spawn, ~1 us); a connection idle longer pays that once per idle period and
/// costs ~1/3 of the memory while it waits (loadtest idle-memory). The same pause after which
/// an HTTP/2 connection without streams frees its codec buffers.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// What waiting for the next request on a plaintext connection came to.
enum Waited {
    Request(rt::Received),
    /// The connection ends quietly (idle timeout, end of stream, listener closing).
    End,
    /// Idle past [`PARK_AFTER`], nothing in flight on it: park it until the deadline.
    Park(Instant),
}

thread_local! {
    /// This core's parked plaintext HTTP/1 connections.
    static PARKED: park::Table<Parked> = const { park::Table::new() };
}

/// A parked connection: its state, nothing armed.
struct Parked {
    conn: Conn<ClientTcp>,
}

impl park::Record for Parked {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.conn.io.as_fd()
    }

    fn resume(self) {
        let Parked { conn } = self;
        let (slot, key) = (conn.tracked.slot.clone(), conn.tracked.key);
        let task = rt::spawn_handle(serve_plain(conn, None));
        slot.track(key, task);
    }

    fn is_closing(&self) -> bool {
        self.conn.tracked.slot.is_closing()
    }
}

/// Parks an idle connection: its task (the caller, about to end) leaves the listener's books
/// and the connection waits in this core's table. Gives it back if it cannot park.
fn park_conn(conn: Conn<ClientTcp>, deadline: Instant) -> Result<(), Conn<ClientTcp>> {
    if conn.tracked.slot.is_closing() {
        return Ok(()); // Closed, as the table would close it at once.
    }
    let (slot, key) = (conn.tracked.slot.clone(), conn.tracked.key);
    let worker = conn.tracked.worker.clone();
    park::park(&PARKED, Parked { conn }, deadline).map_err(|parked| parked.conn)?;
    slot.release_task(key);
    // Connections going idle: the boxes and buffers the busy ones do not need go too (a busy
    // connection holds up to two buffers: its upstream response's and its head's).
    let keep = spare::shrink();
    rt::shrink_buffers(2 * keep);
    let parked = PARKED.with(park::Table::len) as u64;
    worker.stats.connections_parked.set(parked);
    Ok(())
}

/// Runs this core's table of parked connections (spawned once per worker), keeping `gauge`
/// at their number.
pub async fn drive_parked(gauge: Arc<WorkerStats>) {
    park::drive(&PARKED, |n| gauge.connections_parked.set(n as u64)).await
}

/// Connections parked on this core so far.
pub fn parks() -> u64 {
    PARKED.with(park::Table::parks)
}

/// Closes this core's parked connections whose listener is closing.
pub fn close_parked(gauge: &WorkerStats) {
    park::close(&PARKED);
    gauge
        .connections_parked
        .set(PARKED.with(park::Table::len) as u64);
}

/// What an HTTP/1 connection keeps between requests: its stream and who it is from. Kept
/// small: it is most of what an idle keep-alive connection costs.
struct Conn<S> {
    io: S,
    tracked: Tracked,
    /// Where the connection comes from.
    peer: SocketAddr,
    /// Set on a TLS connection; shared with the exchange under way.
    tls: Option<Rc<TlsSide>>,
    /// Requests read on this connection so far.
    served: u32,
}

impl<S: Stream> Conn<S> {
    fn new(io: S, peer: SocketAddr, tls: Option<Rc<TlsSide>>, tracked: Tracked) -> Conn<S> {
        Conn {
            io,
            tracked,
            peer,
            tls,
            served: 0,
        }
    }

    /// Waits for the first bytes of the next request, holding no buffer: they land in a
    /// buffer of the core's ring. A new connection gets the header timeout to send anything,
    /// an idle keep-alive connection the idle timeout; either way silence ends it quietly, and
    /// so does the end of the stream or the listener closing (None).
    async fn wait_for_request(&self, fresh: bool) -> Option<rt::Received> {
        let wait = self.wait_limit(fresh);
        // A keep-alive connection has been read dry: arm a poll at once. A new one most often
        // has its request in already (poll-first there costs ~15% CPU per request with a new
        // connection each, loadtest close).
        let read = pin!(timer::within(wait, self.io.wait_pooled(!fresh)));
        let got = match select(read, pin!(self.tracked.slot.closed())).await {
            Either::Left((Some(got), _)) => got,
            _ => return None,
        };
        self.received(got, wait).await
    }

    /// How long a connection may stay silent: a new one the header timeout, an idle
    /// keep-alive one the idle timeout.
    fn wait_limit(&self, fresh: bool) -> Duration {
        let generation = self.tracked.worker.generation();
        let limits = &generation.snapshot.limits;
        if fresh {
            limits.header_timeout
        } else {
            limits.idle_timeout
        }
    }

    /// Handles what a wait for the next request received: bytes, or with the ring empty a
    /// wait with a buffer of the connection's own; None: the connection ends quietly.
    async fn received(
        &self,
        got: std::io::Result<Option<rt::Received>>,
        wait: Duration,
    ) -> Option<rt::Received> {
        match got {
            Ok(Some(bytes)) if !bytes.is_empty() => Some(bytes),
            Err(e) if rt::out_of_buffers(&e) => {
                // The ring ran dry in a burst: wait again with a buffer of our own.
                self.tracked.worker.stats.ring_exhausted.inc();
                Box::pin(self.wait_owned(wait)).await
            }
            _ => None,
        }
    }

    /// Waits for the first bytes of the next request when the ring is empty: for the stream to
    /// become readable first (a poll, no buffer: in a burst of new connections a few hundred
    /// of them found the ring empty and each held a 16 KiB buffer for as long as it idled),
    /// then reads into a buffer of the connection's own.
    async fn wait_owned(&self, wait: Duration) -> Option<rt::Received> {
        let ready = pin!(timer::within(wait, self.io.readable()));
        match select(ready, pin!(self.tracked.slot.closed())).await {
            Either::Left((Some(Ok(())), _)) => {}
            _ => return None,
        }
        let mut buf = rt::take_buffer();
        let n = {
            let read = pin!(timer::within(wait, self.io.read_some(&mut buf, MIN_READ)));
            match select(read, pin!(self.tracked.slot.closed())).await {
                Either::Left((Some(Ok(n)), _)) => n,
                _ => 0,
            }
        };
        let received = rt::Received::Owned(buf);
        (n > 0).then_some(received)
    }

    /// Closes the connection the way `end` says.
    async fn end(&mut self, end: End) {
        match end {
            // A TLS client learns the close is deliberate (close_notify), not a truncation.
            End::Clean if self.tls.is_some() => {
                let _ = Box::pin(timer::within(LINGER, self.io.shutdown())).await;
            }
            End::Clean => {}
            // Boxed, like the other rare paths, to keep the waiting connection small.
            End::Linger => Box::pin(self.linger()).await,
            End::Abort => self.io.abort(),
        }
    }

    /// Closes the sending side, then drains what the client still sends for a short while.
    async fn linger(&self) {
        if timer::within(LINGER, self.io.shutdown()).await.is_none() {
            return;
        }
        let deadline = Instant::now() + LINGER;
        let mut drained = 0;
        let mut buf = rt::take_buffer();
        while drained < LINGER_BYTES {
            buf.clear();
            let read = self.io.read_some(&mut buf, MIN_READ);
            match timer::until(deadline, read).await {
                Some(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
        rt::recycle_buffer(buf);
    }
}

impl Conn<ClientTcp> {
    /// Waits for the first bytes of the next request as [`Conn::wait_for_request`] does; a
    /// keep-alive connection still silent after [`PARK_AFTER`] is to park (`may_park`), its
    /// receive withdrawn from the ring: whatever raced the withdrawal is returned as usual.
    async fn wait_plain(&self, fresh: bool, may_park: bool) -> Waited {
        let wait = self.wait_limit(fresh);
        let mut parks = may_park && !fresh && wait > PARK_AFTER;
        let mut limit = if parks { PARK_AFTER } else { wait };
        if !fresh && self.served >= 2 {
            // A connection that carries request after request: one receive armed across them
            // (rt::ClientTcp).
            self.io.arm_ahead();
        }
        // A keep-alive connection has been read dry: poll first (see wait_for_request). What
        // is armed stays armed when a wait times out.
        let Ok(mut waiting) = self.io.wait(!fresh) else {
            return Waited::End;
        };
        let got = loop {
            let got = {
                let read = pin!(timer::within(limit, &mut waiting));
                match select(read, pin!(self.tracked.slot.closed())).await {
                    Either::Left((got, _)) => got,
                    Either::Right(_) => return Waited::End,
                }
            };
            match got {
                Some(got) => break got,
                None if parks => match Box::pin(waiting.withdraw()).await {
                    rt::Withdrawn::Cancelled => {
                        return Waited::Park(timer::now() + (wait - PARK_AFTER));
                    }
                    rt::Withdrawn::Completed(got) => break got,
                    // Still armed: the rest of the idle time in this task.
                    rt::Withdrawn::Armed => {
                        parks = false;
                        limit = wait - PARK_AFTER;
                    }
                },
                None => return Waited::End,
            }
        };
        match got {
            Ok(Some(bytes)) if !bytes.is_empty() => return Waited::Request(bytes),
            Err(e) if rt::out_of_buffers(&e) => {}
            _ => return Waited::End,
        }
        // The ring ran dry in a burst: wait again with a buffer of our own.
        self.tracked.worker.stats.ring_exhausted.inc();
        match Box::pin(self.wait_owned(wait)).await {
            Some(bytes) => Waited::Request(bytes),
            None => Waited::End,
        }
    }
}

/// A connection's worker and listener slot, which count it in while it lives.
pub struct Tracked {
    pub(crate) worker: Rc<Worker>,
    pub(crate) slot: Rc<ListenerSlot>,
    key: usize,
    opened: Instant,
    /// The address the client connected to, looked up only for a listener whose header edits
    /// read it (`%DOWNSTREAM_LOCAL_ADDRESS%`); boxed, or every connection, parked ones too,
    /// would carry 24 bytes more for it.
    pub(crate) local: Option<Box<SocketAddr>>,
}

impl Tracked {
    /// Counts in the connection that reserved `key` in `slot`.
    pub fn new(worker: &Rc<Worker>, slot: &Rc<ListenerSlot>, key: usize) -> Tracked {
        worker.stats.connections_accepted.inc();
        worker.stats.connections_active.inc();
        slot.stats.downstream_cx_total.inc();
        slot.stats.downstream_cx_active.inc();
        Tracked {
            worker: worker.clone(),
            slot: slot.clone(),
            key,
            // The clock, not the timer wheel's 10 ms tick: most connections are shorter.
            opened: Instant::now(),
            local: None,
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.worker.stats.connections_active.dec();
        let stats = &self.slot.stats;
        stats.downstream_cx_active.dec();
        stats.downstream_cx_destroy.inc();
        self.slot.cx_length.record(self.opened.elapsed());
        self.slot.untrack(self.key);
    }
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

/// An HTTP/1 connection while requests are under way: the connection and its two directions.
struct H1<'c, S> {
    conn: &'c mut Conn<S>,
    input: Input,
    output: Output,
}

/// The peer address formatted for X-Forwarded-For, without allocating (at most 39 bytes for IPv6; 45 for an
/// IPv4-mapped form).
struct ClientIp {
    len: u8,
    bytes: [u8; 47],
}

impl ClientIp {
    fn new(ip: IpAddr) -> ClientIp {
        let mut out = ClientIp {
            len: 0,
            bytes: [0; 47],
        };
        let len = match ip {
            // Not through `Display`: `write!` takes ~1,100 instructions for an IPv4 address
            // (seven formatter calls), ~4% of a proxied keep-alive request's user-space
            // instructions (loadtest/instructions).
            IpAddr::V4(v4) => {
                let mut n = 0;
                let mut digits = itoa::Buffer::new();
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.bytes[n] = b'.';
                        n += 1;
                    }
                    let text = digits.format(octet).as_bytes();
                    out.bytes[n..n + text.len()].copy_from_slice(text);
                    n += text.len();
                }
                n
            }
            IpAddr::V6(v6) => {
                use std::io::Write;
                let mut cursor = std::io::Cursor::new(&mut out.bytes[..]);
                // Cannot fail: the longest address text fits.
                let _ = write!(cursor, "{v6}");
                cursor.position() as usize
            }
        };
        out.len = len as u8;
        out
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The one place where every finished request is counted, whatever its protocol.
pub fn record(
    worker: &Worker,
    slot: &ListenerSlot,
    peer: SocketAddr,
    tls: Option<&TlsSide>,
    outcome: &Outcome,
    head: &RequestHead,
    duration: Duration,
) {
    worker.stats.requests.inc();
    slot.stats.record_request(outcome.status);
    match outcome.answered {
        Some(crate::action::Answered::Redirect) => slot.stats.rq_redirect.inc(),
        Some(crate::action::Answered::DirectResponse) => slot.stats.rq_direct_response.inc(),
        None => {}
    }
    if outcome
        .error
        .is_some_and(|e| e.kind == crate::error::ErrorKind::Internal(crate::proxy::INVALID_REWRITE))
    {
        slot.stats.rq_rewrite_invalid.inc();
    }
    slot.rq_time.record(duration);
    let generation = worker.generation();
    let snapshot = &generation.snapshot;
    if let (Some(tracer), Some(span)) = (&snapshot.tracer, &outcome.trace)
        && span.sampled
    {
        tracer.exporter.send(finished_span(
            worker.id, peer, span, outcome, head, duration,
        ));
    }
    let Some(spec) = snapshot.listeners.get(slot.index.get()) else {
        return;
    };
    if spec.access_log.is_empty() {
        return;
    }
    let tls = tls.map(|t| &t.info);
    let client = tls.and_then(|t| t.client.as_deref());
    let entry = access_log::Entry {
        head,
        scheme: if tls.is_some() { "https" } else { "http" },
        started: SystemTime::now() - duration,
        duration,
        status: outcome.status,
        error: outcome.error.as_ref(),
        retried: outcome.retried,
        body_in: outcome.body_in,
        body_out: outcome.body_out,
        upstream_time: outcome.upstream_time,
        upstream_host: outcome.endpoint,
        upstream_cluster: outcome
            .cluster
            .and_then(|c| snapshot.clusters.get(c))
            .map(|c| c.name.as_str()),
        route_name: outcome.route.and_then(|id| spec.router.route_name(id)),
        peer,
        sni: tls.and_then(|t| t.sni.as_deref()),
        tls_version: tls.map(|t| t.version),
        tls_cipher: tls.map(|t| t.cipher),
        peer_subject: client.map(|c| c.subject.as_str()),
        peer_uri_san: client.and_then(|c| c.sans.iter().find_map(|s| s.strip_prefix("URI="))),
    };
    for (path, format) in &spec.access_log {
        worker.log(path, |out| entry.write(format, out));
    }
}

/// The gateway's span of a finished request, with its HTTP tags.
fn finished_span(
    worker: usize,
    peer: SocketAddr,
    span: &trace::Span,
    outcome: &Outcome,
    head: &RequestHead,
    duration: Duration,
) -> trace::FinishedSpan {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut tags = vec![
        ("http.method", head.method.as_str().to_owned()),
        ("http.path", text(head.path())),
        ("http.protocol", format!("{:?}", head.version)),
        ("component", "proxy".to_owned()),
        ("node_id", format!("worker-{worker}")),
    ];
    match outcome.status {
        Some(status) => tags.push(("http.status_code", status.to_string())),
        None => tags.push(("error", "true".to_owned())),
    }
    if outcome.status.is_some_and(|s| s >= 500) {
        tags.push(("error", "true".to_owned()));
    }
    if let Some(id) = head.headers.get(b"x-request-id") {
        tags.push(("guid:x-request-id", text(id)));
    }
    if let Some(addr) = outcome.endpoint {
        tags.push(("upstream_address", addr.to_string()));
    }
    let flags = access_log::response_flags(outcome.error.as_ref(), outcome.retried);
    tags.push(("response_flags", flags.into_owned()));
    trace::FinishedSpan {
        span: span.clone(),
        duration,
        name: format!("{} {}", head.method.as_str(), text(head.authority())),
        tags,
        remote: Some(peer),
    }
}

/// Parses a request head under the head size limit. Ok(None): incomplete (and still within
/// the limit).
fn parse_head(
    bytes: &[u8],
    head: &mut RequestHead,
    limits: &Limits,
) -> Result<Option<Parsed>, ProxyError> {
    if !head.has_storage() {
        *head = RequestHead::take();
    }
    match parse_request(bytes, limits.max_headers, head)? {
        Some(meta) if meta.head_len > limits.max_request_head_bytes => {
            Err(ProxyError::downstream(ErrorKind::HeadTooLarge))
        }
        Some(meta) => Ok(Some(meta)),
        None if bytes.len() >= limits.max_request_head_bytes => {
            Err(ProxyError::downstream(ErrorKind::HeadTooLarge))
        }
        None => Ok(None),
    }
}

/// The reading direction: request heads and bodies.
struct Input {
    /// Bytes received; `rbuf[pos..]` are not yet consumed.
    rbuf: Vec<u8>,
    pos: usize,
    /// How far `rbuf[pos..]` was searched for the end of an incomplete head.
    scanned: usize,
    /// The current request's body.
    body: BodyDecoder,
    expect_continue: bool,
    /// Longest wait for each piece of the body.
    timeout: Duration,
    /// When the current request's first byte was at hand, and when all of it must have
    /// arrived (a body that trickles in just under `timeout` per read is cut there).
    started: Instant,
    deadline: Instant,
}

/// The writing direction: responses.
struct Output {
    wbuf: Vec<u8>,
    /// The current response's body.
    encoder: BodyEncoder,
    /// The final response head is out: errors can no longer be answered.
    started: bool,
    /// What the request says about its response: whether the client lets the connection stay
    /// open, its version, whether the response has no body (HEAD), whether trailers may be sent.
    client_keep_alive: bool,
    version: Version,
    head_request: bool,
    te_trailers: bool,
    /// What the response head said (see [`Output::persistence`]): the connection stays open
    /// after this exchange.
    keep_alive: bool,
    timeout: Duration,
}

impl<'c, S: Stream> H1<'c, S> {
    fn new(conn: &'c mut Conn<S>) -> H1<'c, S> {
        // Set when the head is read (`read_head`); the coarse clock costs no clock read while
        // timers run.
        let unset = timer::now();
        H1 {
            conn,
            input: Input {
                rbuf: Vec::new(),
                pos: 0,
                scanned: 0,
                body: BodyDecoder::new(Framing::None, 0),
                expect_continue: false,
                timeout: Duration::from_secs(60),
                started: unset,
                deadline: unset,
            },
            output: Output {
                wbuf: Vec::new(),
                encoder: BodyEncoder::new(Framing::None),
                started: false,
                client_keep_alive: false,
                version: Version::HTTP_11,
                head_request: false,
                te_trailers: false,
                keep_alive: false,
                timeout: Duration::from_secs(60),
            },
        }
    }

    /// Serves the request that begins with `first`, and those pipelined behind it. None: the
    /// connection is idle again (keep-alive, nothing unread); otherwise how it ends.
    async fn serve(mut self, first: rt::Received) -> Option<End> {
        let mut head = RequestHead::default();
        let mut first = Some(first);
        let end = loop {
            let outcome: Outcome = match self.next_request(&mut head, first.take()).await {
                Ok(()) => self.exchange(&mut head).await,
                Err(e) => self.fail(e, Outcome::default()).await,
            };
            self.record(&outcome, &head);
            head.recycle();
            if outcome.status.is_none() {
                break Some(End::Abort);
            }
            let input = &self.input;
            if !self.output.keep_alive || !input.body.is_done() {
                // Unread bytes mean the client sent more than we answered (pipelining after
                // Connection: close, or a body we did not read).
                break Some(if input.pos < input.rbuf.len() || !input.body.is_done() {
                    End::Linger
                } else {
                    End::Clean
                });
            }
            if input.pos == input.rbuf.len() {
                break None;
            }
            // A pipelined request is waiting in the read buffer.
        };
        // Between requests the connection holds no buffer of its own.
        rt::recycle_buffer(std::mem::take(&mut self.input.rbuf));
        rt::recycle_buffer(std::mem::take(&mut self.output.wbuf));
        end
    }

    /// Proxies the request whose head was read, answering it if it fails.
    async fn exchange(&mut self, head: &mut RequestHead) -> Outcome {
        let (worker, tls) = (self.conn.tracked.worker.clone(), self.conn.tls.clone());
        let client_ip = ClientIp::new(self.conn.peer.ip());
        let cx = Context {
            worker: &worker,
            listener: self.conn.tracked.slot.index.get(),
            peer: self.conn.peer.ip(),
            remote: self.conn.peer,
            local: self.conn.tracked.local.as_deref().copied(),
            client_ip: client_ip.as_bytes(),
            scheme: if tls.is_some() { b"https" } else { b"http" },
            tls: tls.as_deref().map(|t| &t.info),
            client_cert: tls.as_deref().and_then(|t| t.client_cert.as_deref()),
        };
        let mut outcome = Outcome::default();
        match proxy::forward(&cx, head, self, &mut outcome).await {
            Ok(status) => {
                outcome.status = Some(status);
                outcome
            }
            Err(e) => self.fail(e, outcome).await,
        }
    }

    /// Answers a request that failed with `e`, if its response has not started.
    async fn fail(&mut self, e: ProxyError, mut outcome: Outcome) -> Outcome {
        debug!(error = %e, "request failed");
        outcome.error = Some(e);
        outcome.status = self.answer(e).await;
        outcome
    }

    /// Reads the next request head and prepares the exchange. Ok(false): the connection ends
    /// quietly.
    async fn next_request(
        &mut self,
        head: &mut RequestHead,
        first: Option<rt::Received>,
    ) -> Result<(), ProxyError> {
        let generation = self.conn.tracked.worker.generation();
        let limits = &generation.snapshot.limits;
        self.input.body = BodyDecoder::new(Framing::None, 0);
        self.output.reset();
        let parsed = self.read_head(head, limits, first).await?;
        let input = &mut self.input;
        input.pos += parsed.head_len;
        input.scanned = 0;
        // The trailer section of a chunked body is bounded like a head.
        input.body = BodyDecoder::new(parsed.framing, limits.max_request_head_bytes);
        input.timeout = limits.body_timeout;
        input.deadline = input.started + limits.request_timeout;
        input.expect_continue = parsed.expect_continue;
        if !input.body.is_done() || input.pos < input.rbuf.len() {
            // A body or pipelined bytes follow: a receive armed ahead is taken back first, so
            // that they are read only as fast as they are served (rt::ClientTcp).
            self.conn.io.settle(&mut input.rbuf).await;
        }
        // The listener's last request on this connection says Connection: close.
        let served = self.conn.served.saturating_add(1);
        self.conn.served = served;
        let listener = generation
            .snapshot
            .listeners
            .get(self.conn.tracked.slot.index.get());
        let last = listener
            .and_then(|l| l.http.max_requests_per_connection)
            .is_some_and(|max| served >= max);
        let output = &mut self.output;
        output.client_keep_alive = parsed.keep_alive && !last;
        output.version = head.version;
        output.head_request = head.method == Method::HEAD;
        output.te_trailers = head.te_trailers;
        output.timeout = limits.body_timeout;
        Ok(())
    }

    /// Counts and logs a finished request.
    fn record(&self, outcome: &Outcome, head: &RequestHead) {
        let conn = &*self.conn;
        let duration = self.input.started.elapsed();
        let (worker, slot) = (&conn.tracked.worker, &conn.tracked.slot);
        record(
            worker,
            slot,
            conn.peer,
            conn.tls.as_deref(),
            outcome,
            head,
            duration,
        );
    }

    /// Answers a failed request if no response has started. Returns the status sent, or None
    /// when the connection must be aborted.
    async fn answer(&mut self, e: ProxyError) -> Option<u16> {
        let status = e.status().filter(|_| !self.output.started)?;
        let (mut body, mut sink) = self.split();
        // A small body that came with the head can be skipped, keeping the connection; one
        // still on the way cannot, so the connection closes after the answer.
        if !e.closes_connection() && !body.input.expect_continue {
            let _ = body.take_body(|_| Ok(()));
        }
        let in_sync = body.input.body.is_done();
        let closing = sink.slot.is_closing();
        let output = &mut *sink.output;
        let len = e.body().len() as u64;
        let persistence = output.persistence(Framing::Length(len), closing, Some(&e), in_sync);
        output.wbuf.clear();
        output.reserve();
        let body = if output.head_request { "" } else { e.body() };
        encode_local_response(status, len, body, persistence, &mut output.wbuf);
        sink.flush().await.ok()?;
        Some(status)
    }

    /// Reads and parses the next request head: the one `first` begins (bytes just received in
    /// a buffer of the core's ring: the head is parsed right there, and only what follows it —
    /// a body, a pipelined request, or a head still incomplete — is copied to the connection's
    /// own buffer), or else one pipelined in the read buffer.
    async fn read_head(
        &mut self,
        head: &mut RequestHead,
        limits: &Limits,
        first: Option<rt::Received>,
    ) -> Result<Parsed, ProxyError> {
        // The request's latency is measured from its first byte at hand.
        self.input.started = Instant::now();
        match first {
            Some(bytes) => {
                if let Some(meta) = parse_head(&bytes, head, limits)? {
                    let rest = &bytes[meta.head_len..];
                    if !rest.is_empty() {
                        self.input.keep(rest);
                    }
                    return Ok(Parsed {
                        head_len: 0,
                        ..meta
                    });
                }
                self.input.keep(&bytes);
            }
            None => {
                if let Some(parsed) = self.input.parse(head, limits)? {
                    return Ok(parsed);
                }
            }
        }
        // Rare (a head split over several reads), and boxed with the rest of the busy state.
        self.read_rest_of_head(head, limits).await
    }

    /// Reads until the head that has begun is complete, within the header timeout.
    async fn read_rest_of_head(
        &mut self,
        head: &mut RequestHead,
        limits: &Limits,
    ) -> Result<Parsed, ProxyError> {
        let deadline = self.input.started + limits.header_timeout;
        loop {
            let input = &mut self.input;
            // Parsed only once the empty line that ends the head is in: each byte of a head
            // that trickles in is scanned once, not parsed again with every read.
            let unparsed = &input.rbuf[input.pos..];
            match head_end(unparsed, input.scanned.saturating_sub(2)) {
                Some(len) => {
                    if let Some(parsed) = parse_head(unparsed, head, limits)? {
                        return Ok(parsed);
                    }
                    // Only empty lines so far: the head starts after them.
                    input.scanned = len;
                }
                None if unparsed.len() >= limits.max_request_head_bytes => {
                    return Err(ProxyError::downstream(ErrorKind::HeadTooLarge));
                }
                None => input.scanned = unparsed.len(),
            }
            input.compact();
            let read = self.conn.io.read_some(&mut input.rbuf, MIN_READ);
            match timer::until(deadline, read).await {
                None => return Err(ProxyError::downstream(ErrorKind::RequestTimeout)),
                Some(Ok(n)) if n > 0 => {}
                // The client closed mid-head: nobody to answer.
                _ => return Err(ProxyError::client_gone()),
            }
        }
    }
}

impl Input {
    /// Parses the head at the front of the unconsumed bytes. Ok(None): incomplete.
    fn parse(&self, head: &mut RequestHead, limits: &Limits) -> Result<Option<Parsed>, ProxyError> {
        parse_head(&self.rbuf[self.pos..], head, limits)
    }

    /// Copies bytes that arrived in a ring buffer into the connection's own buffer.
    fn keep(&mut self, bytes: &[u8]) {
        if self.rbuf.capacity() == 0 {
            self.rbuf = rt::take_buffer();
        }
        self.rbuf.extend_from_slice(bytes);
    }

    /// Moves unconsumed bytes to the front of the read buffer.
    fn compact(&mut self) {
        rt::compact(&mut self.rbuf, &mut self.pos);
    }
}

impl Output {
    /// Takes a write buffer from the core when the connection has none.
    fn reserve(&mut self) {
        if self.wbuf.capacity() == 0 {
            self.wbuf = rt::take_buffer();
        }
    }

    /// Forgets the previous exchange.
    fn reset(&mut self) {
        self.started = false;
        self.client_keep_alive = false;
        self.version = Version::HTTP_11;
        self.head_request = false;
        self.te_trailers = false;
        self.keep_alive = false;
    }

    /// Decides, as a response head is encoded, whether the connection stays open after this
    /// exchange, and returns what the head says about it. The one place this is decided: the
    /// client must allow it, the listener must not be closing (a shutdown that began while the
    /// request was in flight still tells this client to go away), the response must end by its
    /// framing rather than by the close, and neither an error nor an unread request body may
    /// have put the framing in doubt.
    fn persistence(
        &mut self,
        framing: Framing,
        closing: bool,
        error: Option<&ProxyError>,
        in_sync: bool,
    ) -> Persistence {
        self.keep_alive = self.client_keep_alive
            && !closing
            && framing != Framing::Close
            && error.is_none_or(|e| !e.closes_connection())
            && in_sync;
        match (self.keep_alive, self.version) {
            (false, _) => Persistence::Close,
            (true, Version::HTTP_10) => Persistence::KeepAlive,
            (true, _) => Persistence::Default,
        }
    }
}

impl<S: Stream> Downstream for H1<'_, S> {
    type Body<'a>
        = BodyHalf<'a, S>
    where
        Self: 'a;
    type Sink<'a>
        = SinkHalf<'a, S>
    where
        Self: 'a;

    fn split(&mut self) -> (BodyHalf<'_, S>, SinkHalf<'_, S>) {
        (
            BodyHalf {
                io: &self.conn.io,
                input: &mut self.input,
            },
            SinkHalf {
                io: &self.conn.io,
                slot: &self.conn.tracked.slot,
                output: &mut self.output,
            },
        )
    }
}

/// The request body half of a connection.
struct BodyHalf<'a, S> {
    io: &'a S,
    input: &'a mut Input,
}

/// The response half of a connection.
struct SinkHalf<'a, S> {
    io: &'a S,
    /// Whether the listener closes (removed, or shutdown): then the response says so.
    slot: &'a ListenerSlot,
    output: &'a mut Output,
}

impl<S: Stream> RequestBody for BodyHalf<'_, S> {
    fn take_body<F>(&mut self, f: F) -> Result<bool, ProxyError>
    where
        F: FnMut(&[u8]) -> Result<(), ProxyError>,
    {
        let input = &mut *self.input;
        let (consumed, done) = input.body.drain(&input.rbuf[input.pos..], f, |_| {
            ProxyError::bad_request("invalid chunked request body\n")
        })?;
        input.pos += consumed;
        Ok(done)
    }

    fn trailers(&self) -> Option<&Headers> {
        self.input.body.trailers()
    }

    async fn fill_body(&mut self) -> Result<(), ProxyError> {
        let input = &mut *self.input;
        input.expect_continue = false;
        input.compact();
        if input.rbuf.capacity() == 0 {
            input.rbuf = rt::take_buffer();
        }
        let read = self.io.read_some(&mut input.rbuf, MIN_READ);
        let until = (timer::now() + input.timeout).min(input.deadline);
        match timer::until(until, read).await {
            None => Err(ProxyError::downstream(ErrorKind::RequestTimeout)),
            Some(Ok(n)) if n > 0 => Ok(()),
            _ => Err(ProxyError::client_gone()),
        }
    }

    fn expects_continue(&self) -> bool {
        self.input.expect_continue
    }
}

impl<S: Stream> ResponseSink for SinkHalf<'_, S> {
    async fn send_continue(&mut self) -> Result<(), ProxyError> {
        self.output.reserve();
        self.output.wbuf.extend_from_slice(CONTINUE);
        self.flush().await
    }

    async fn send_interim(&mut self, head: &ResponseHead) -> Result<(), ProxyError> {
        // A 1.0 client cannot take an interim response (RFC 9110 §15.2).
        if self.output.version == Version::HTTP_10 {
            return Ok(());
        }
        self.output.reserve();
        encode_interim(head, &mut self.output.wbuf);
        self.flush().await
    }

    fn start_response(&mut self, head: &ResponseHead) {
        let output = &mut *self.output;
        // A 1.0 client cannot read chunked: a body of unknown length ends with the connection.
        let unknown = if output.version == Version::HTTP_10 {
            Framing::Close
        } else {
            Framing::Chunked
        };
        let framing = Framing::for_length(head.body, unknown);
        // The request body may still be on its way (an early answer): whether it was all read
        // is settled when the exchange ends.
        let persistence = output.persistence(framing, self.slot.is_closing(), None, true);
        // A small response (most API answers) fits a small buffer, grown if its head is long.
        let small = matches!(head.body, BodyLength::Empty)
            || matches!(head.body, BodyLength::Known(n) if n <= 1024);
        if small && output.wbuf.capacity() == 0 {
            output.wbuf = rt::take_small_buffer();
        }
        output.reserve();
        encode_response(head, framing, persistence, &mut output.wbuf);
        output.encoder = BodyEncoder::new(framing);
        output.started = true;
    }

    fn push_body(&mut self, data: &[u8]) -> Result<(), ProxyError> {
        let output = &mut *self.output;
        output
            .encoder
            .encode(data, &mut output.wbuf)
            .map_err(|_| ProxyError::bad_response("upstream body longer than announced\n"))
    }

    fn end_body(&mut self, trailers: Option<&Headers>) -> Result<(), ProxyError> {
        let output = &mut *self.output;
        // Trailers only to a client that said it accepts them (TE: trailers, RFC 9110 §10.1.4).
        let trailers = trailers.filter(|_| output.te_trailers);
        output
            .encoder
            .finish(trailers, &mut output.wbuf)
            .map_err(|_| ProxyError::bad_response("upstream body shorter than announced\n"))
    }

    fn pending(&self) -> usize {
        self.output.wbuf.len()
    }

    async fn flush(&mut self) -> Result<(), ProxyError> {
        let output = &mut *self.output;
        let write = self.io.write_all(&mut output.wbuf);
        match timer::within(output.timeout, write).await {
            Some(Ok(())) => Ok(()),
            _ => Err(ProxyError::client_gone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a function returns, without calling it.
    fn future_size<A, B, C, F: Future>(_: fn(A, B, C) -> F) -> usize {
        size_of::<F>()
    }

    fn future_size2<A, B, F: Future>(_: fn(A, B) -> F) -> usize {
        size_of::<F>()
    }

    /// What an idle keep-alive connection costs is mostly its task: the future `serve` returns
    /// for a plaintext HTTP/1 connection, whose largest state is the wait for the next request.
    /// A busy request's state must stay in its box, or every idle connection pays for it.
    #[test]
    fn an_idle_plaintext_connection_is_a_small_task() {
        let task = future_size(serve);
        let idle = future_size2(serve_plain);
        let parked = size_of::<Parked>();
        eprintln!(
            "serve: {task} B, serve_plain: {idle} B, parked: {parked} B, conn {} B, recv {} B",
            size_of::<Conn<ClientTcp>>(),
            size_of::<rt::ArmedRecv>()
        );
        assert!(idle <= 512, "serve_plain's future is {idle} B");
        assert!(task <= idle + 16, "serve's future is {task} B");
        // A parked connection is its state, no more.
        assert!(parked <= 128, "a parked connection is {parked} B");
    }

    /// X-Forwarded-For carries the peer's address exactly as `Display` writes it.
    #[test]
    fn the_client_address_is_written_as_display_writes_it() {
        let mut addrs: Vec<IpAddr> = ["0.0.0.0", "127.0.0.1", "9.10.99.100", "255.255.255.255"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        addrs.extend((0..=255u8).map(|o| IpAddr::from([o, 255 - o, o / 3, o / 17])));
        addrs.push("::1".parse().unwrap());
        addrs.push("::ffff:10.0.0.1".parse().unwrap());
        addrs.push("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap());
        for ip in addrs {
            assert_eq!(ClientIp::new(ip).as_bytes(), ip.to_string().as_bytes());
        }
    }
}
