//! One request, top to bottom: route -> pick -> checkout -> forward -> respond -> checkin.
//! Protocol-neutral: the downstream codec is behind [`Downstream`], the upstream codec is
//! [`crate::upstream`] (HTTP/1.1).

use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::future::{Either, select};
use tracing::{debug, warn};

use crate::action::Action;
use crate::config::{Cluster, RetryOn, RetryPolicy, UpstreamProtocol};
use crate::edit_sink::EditSink;
use crate::error::{ErrorKind, ProxyError, Side};
use crate::h2::client::{self, Session};
use crate::header_edit::{Env, Plan};
use crate::health::ClusterHealth;
use crate::message::{BodyLength, Headers, Method, RequestHead, ResponseHead};
use crate::outlier::{self, Observed};
use crate::route::RouteId;
use crate::route_match::RequestView;
use crate::sanitize::{Origin, sanitize};
use crate::timer;
use crate::tls::{ClientTls, TlsInfo};
use crate::trace::{self, Span};
use crate::upstream::{ConnectError, Head, Idle, ResponseReader, UpstreamConn, UpstreamRequest};
use crate::worker::{ClusterState, EndpointState, Held, Worker};

/// The downstream side of one exchange (an HTTP/1 connection today, an HTTP/2 stream
/// tomorrow), split in two halves that work at the same time: a response may stream back while
/// the request body is still arriving.
pub trait Downstream {
    type Body<'a>: RequestBody
    where
        Self: 'a;
    type Sink<'a>: ResponseSink
    where
        Self: 'a;

    fn split(&mut self) -> (Self::Body<'_>, Self::Sink<'_>);
}

/// The request body as it arrives from the client. Its futures never leave their core, so
/// they need not be Send.
#[allow(async_fn_in_trait)]
pub trait RequestBody {
    /// Hands every request body byte already received to `f`; true when the body is complete.
    fn take_body<F>(&mut self, f: F) -> Result<bool, ProxyError>
    where
        F: FnMut(&[u8]) -> Result<(), ProxyError>;

    /// The trailer fields that ended the body, once it is complete.
    fn trailers(&self) -> Option<&Headers>;

    /// Waits for more request body bytes.
    async fn fill_body(&mut self) -> Result<(), ProxyError>;

    /// Whether the client waits for 100 Continue before it sends the body.
    fn expects_continue(&self) -> bool;
}

/// The response as it goes back to the client.
#[allow(async_fn_in_trait)]
pub trait ResponseSink {
    /// Tells a client that waits for it to send its body.
    async fn send_continue(&mut self) -> Result<(), ProxyError>;

    /// Passes an interim (1xx) response on, if the client can take one.
    async fn send_interim(&mut self, head: &ResponseHead) -> Result<(), ProxyError>;

    /// Encodes the response head.
    fn start_response(&mut self, head: &ResponseHead);

    /// Encodes response body bytes.
    fn push_body(&mut self, data: &[u8]) -> Result<(), ProxyError>;

    /// Ends the response body, with the upstream's trailer fields if it sent any.
    fn end_body(&mut self, trailers: Option<&Headers>) -> Result<(), ProxyError>;

    /// Bytes encoded and not yet written.
    fn pending(&self) -> usize;

    /// Writes what was encoded.
    async fn flush(&mut self) -> Result<(), ProxyError>;
}

// A downstream whose halves are plain borrows of its parts (an HTTP/2 stream) hands them out
// as they are.
impl<T: RequestBody> RequestBody for &mut T {
    fn take_body<F>(&mut self, f: F) -> Result<bool, ProxyError>
    where
        F: FnMut(&[u8]) -> Result<(), ProxyError>,
    {
        (**self).take_body(f)
    }

    fn trailers(&self) -> Option<&Headers> {
        (**self).trailers()
    }

    async fn fill_body(&mut self) -> Result<(), ProxyError> {
        (**self).fill_body().await
    }

    fn expects_continue(&self) -> bool {
        (**self).expects_continue()
    }
}

impl<T: ResponseSink> ResponseSink for &mut T {
    async fn send_continue(&mut self) -> Result<(), ProxyError> {
        (**self).send_continue().await
    }

    async fn send_interim(&mut self, head: &ResponseHead) -> Result<(), ProxyError> {
        (**self).send_interim(head).await
    }

    fn start_response(&mut self, head: &ResponseHead) {
        (**self).start_response(head)
    }

    fn push_body(&mut self, data: &[u8]) -> Result<(), ProxyError> {
        (**self).push_body(data)
    }

    fn end_body(&mut self, trailers: Option<&Headers>) -> Result<(), ProxyError> {
        (**self).end_body(trailers)
    }

    fn pending(&self) -> usize {
        (**self).pending()
    }

    async fn flush(&mut self) -> Result<(), ProxyError> {
        (**self).flush().await
    }
}

/// What the downstream connection knows about one request's context.
pub struct Context<'a> {
    pub worker: &'a Worker,
    /// The listener's index in the worker's current snapshot.
    pub listener: usize,
    /// The address the connection comes from, and the same preformatted for X-Forwarded-For.
    pub peer: IpAddr,
    pub client_ip: &'a [u8],
    /// The client's address with its port, and the address it connected to when the
    /// listener's header edits read it.
    pub remote: SocketAddr,
    pub local: Option<SocketAddr>,
    /// The scheme the client used ("http" or "https").
    pub scheme: &'static [u8],
    /// What the TLS handshake established, on a TLS connection.
    pub tls: Option<&'a TlsInfo>,
    /// The verified client certificate, as the listener's `client_cert_header` carries it.
    pub client_cert: Option<&'a [u8]>,
}

/// What happened to one request: the one record step reads it (counters now, access logs
/// next). Filled in as the request goes.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The status the client got; None when the exchange ended without a complete response.
    pub status: Option<u16>,
    /// The route that matched, and the index of its cluster, in the snapshot the request used.
    pub route: Option<RouteId>,
    pub cluster: Option<usize>,
    pub endpoint: Option<SocketAddr>,
    /// The request went out on a pooled connection.
    pub reused: bool,
    /// It was sent again on a new connection after a pooled one turned out closed.
    pub retried: bool,
    /// Request body bytes taken from the client, and response body bytes passed to it.
    pub body_in: u64,
    pub body_out: u64,
    /// From the first write to the upstream until its response head, and that head's status.
    pub upstream_time: Option<Duration>,
    pub upstream_status: Option<u16>,
    /// What went wrong, if anything (the error the client was answered with, or that cut the
    /// exchange).
    pub error: Option<ProxyError>,
    /// The gateway's span in the request's trace, if it belongs to one.
    pub trace: Option<Span>,
    /// Set when the route made the gateway answer itself (a redirect, a direct response).
    pub answered: Option<crate::action::Answered>,
}

/// The 500 body of a request whose route's path rewrite made something that is not a path.
pub const INVALID_REWRITE: &str = "the route's path rewrite made an invalid path\n";

/// Proxies one request. Returns the status sent, or the error for the connection to answer.
pub async fn forward<D: Downstream>(
    cx: &Context<'_>,
    head: &mut RequestHead,
    down: &mut D,
    outcome: &mut Outcome,
) -> Result<u16, ProxyError> {
    let generation = cx.worker.generation();
    let snapshot = &generation.snapshot;
    let listener = snapshot
        .listeners
        .get(cx.listener)
        .ok_or(ProxyError::downstream(ErrorKind::NoRoute))?;
    let origin = Origin {
        peer: cx.peer,
        client_ip: cx.client_ip,
        scheme: cx.scheme,
        client_cert_header: listener
            .client_cert_header
            .as_ref()
            .map(|h| h.as_str().as_bytes()),
        client_cert: cx.client_cert,
    };
    sanitize(head, &listener.http, &origin)?;
    trace::stamp_request_id(head, listener.request_id);
    let tracer = snapshot.tracer.as_ref();
    let sample = tracer.map_or(0.0, |t| t.sample_percent);
    if let Some(span) = trace::continue_trace(head, tracer.is_some(), sample) {
        trace::propagate(head, &span);
        outcome.trace = Some(span);
    }
    let vhost = listener
        .router
        .virtual_host(head.authority())
        .ok_or(ProxyError::downstream(ErrorKind::NoRoute))?;
    if vhost.redirect_to_https {
        return redirect_to_https(head, down).await;
    }
    let certified = cx.tls.is_some_and(|t| t.client.is_some());
    let route = vhost
        .routes
        .find_for(&RequestView::of(head, cx.tls.is_some(), certified))
        .ok_or(ProxyError::downstream(ErrorKind::NoRoute))?;
    outcome.route = Some(route.id);
    // The route's action: an answer of the gateway's own, or the cluster of a weighted split
    // and the rewrites of the request sent upstream.
    let mut picked = route.cluster;
    let mut auto_host = false;
    if let Some(action) = route.action() {
        match action {
            Action::Redirect(r) => {
                outcome.answered = Some(crate::action::Answered::Redirect);
                return answer_redirect(head, cx.scheme, r, down).await;
            }
            Action::DirectResponse(d) => {
                outcome.answered = Some(crate::action::Answered::DirectResponse);
                return answer_directly(head, d, down, outcome).await;
            }
            Action::Forward { weighted, rewrite } => {
                if weighted.is_some() {
                    let split = (generation.splits.get(cx.listener))
                        .and_then(|s| s.get(route.split as usize));
                    picked = split.map_or(crate::action::NO_CLUSTER, |s| s.pick());
                }
                rewrite_request(head, rewrite)?;
                auto_host = rewrite.host == crate::action::HostRewrite::Auto;
            }
        }
    }
    let (Some(spec), Some(cluster)) = (
        snapshot.clusters.get(picked),
        generation.clusters.get(picked),
    ) else {
        return Err(ProxyError::downstream(ErrorKind::NoRoute));
    };
    outcome.cluster = Some(picked);
    let count_attempts = vhost.include_request_attempt_count;
    if count_attempts {
        set_attempt_count(head, 1);
    }
    // A body announced larger than allowed is refused before anything is sent; a chunked one
    // as soon as it passes the limit.
    let body_limit = route
        .max_request_body_bytes
        .or(listener.http.max_request_body_bytes);
    if let (Some(limit), BodyLength::Known(n)) = (body_limit, head.body)
        && n > limit
    {
        return Err(ProxyError::downstream(ErrorKind::PayloadTooLarge));
    }

    let (key, set_cookie) = if spec.lb_policy.hashes() && !route.hash_policy.is_empty() {
        crate::sticky::key(&route.hash_policy, head, cx.client_ip)
    } else {
        (None, None)
    };
    let (mut body, sink) = down.split();
    let levels = [
        route.header_edits.as_deref(),
        vhost.header_edits.as_deref(),
        listener.header_edits.as_deref(),
    ];
    // The response gets the route's header edits, and a cookie generated for a hash policy.
    let mut sink = EditSink {
        inner: crate::sticky::CookieSink {
            inner: sink,
            set_cookie,
        },
        plan: Plan::new(levels),
    };
    let tls = snapshot.upstream_tls.get(picked).and_then(Option::as_ref);
    let max_head = snapshot.limits.max_request_head_bytes;
    // Circuit breaker: at most this core's share of `max_requests` under way.
    let Some(_request) = Held::take(&cluster.load.requests, cluster.breakers.max_requests) else {
        cluster.stats.upstream_rq_pending_overflow.inc();
        return Err(ProxyError::upstream(ErrorKind::Overflow));
    };
    // The route's idle timeout stands in for the listener's body timeout on the upstream side.
    let body_timeout = route.idle_timeout.unwrap_or(snapshot.limits.body_timeout);
    // Read before the exchange is built: with a call between building it and awaiting it (the
    // route's deref), the exchange was copied into place (~440 instructions a request).
    let route_timeout = route.timeout;
    let exchange = async {
        let health = snapshot.health.get(picked).and_then(Option::as_deref);
        let policy = route.retry_policy.as_deref();
        let mut retries_left = policy.map_or(0, |p| p.num_retries);
        let mut attempt = 1u32;
        // Endpoints already tried (a retry goes elsewhere: `previous_hosts`); allocated only
        // when a retry happens.
        let mut tried: Vec<usize> = Vec::new();
        // The request, encoded, kept across attempts when it may be sent again; or its body,
        // taken for HTTP/2.
        let mut kept: Option<UpstreamRequest> = None;
        let mut h2_body: Option<client::Body> = None;
        // A retry holds a place under the cluster's retry limits while it runs.
        let mut _retrying = None;
        loop {
            let (endpoint, upstream, reused) =
                connect_any(cluster, spec, tls, health, max_head, &tried, key).await?;
            // This core's requests in flight to the endpoint (least_request reads them), until
            // this attempt ends: answered, failed, retried elsewhere or cancelled.
            let _active = cluster
                .endpoints
                .get(endpoint)
                .and_then(|ep| Held::take(&ep.active, u32::MAX));
            if auto_host {
                // Each attempt names its own endpoint (a retry may go to another).
                let address = cluster.endpoints[endpoint].address;
                head.set_authority(crate::action::endpoint_host(address).as_bytes());
                if let Some(request) = kept.as_mut() {
                    request.rehead(head, spec.name.as_bytes());
                }
            }
            // Header edits go on once the endpoint is known (`%UPSTREAM_HOST%`).
            if let Some(plan) = sink.plan.as_mut() {
                let env = Env {
                    remote: cx.remote,
                    local: cx.local,
                    upstream: cluster.endpoints.get(endpoint).map(|e| e.address),
                    scheme: std::str::from_utf8(cx.scheme).unwrap_or("http"),
                };
                if plan.edit_request(head, &env, policy.is_some()) && attempt > 1 {
                    if count_attempts {
                        set_attempt_count(head, attempt);
                    }
                    if let Some(request) = kept.as_mut() {
                        request.rehead(head, spec.name.as_bytes());
                    }
                }
                plan.prepare_response(head, &env);
            }
            let conn = match upstream {
                Upstream::H1(conn) => conn,
                Upstream::H2(session) => {
                    // An HTTP/1 attempt's encoded request cannot go out as HTTP/2 (an `auto`
                    // cluster whose endpoints differ): the retry has nowhere to go.
                    if kept.is_some() {
                        return Err(ProxyError::upstream(ErrorKind::NoUpstream));
                    }
                    let request_body = match h2_body.take() {
                        Some(taken) => h2_body.insert(taken),
                        None => h2_body.insert(client::Body::take(&mut body, body_limit, outcome)?),
                    };
                    let retry = policy.filter(|p| {
                        retries_left > 0
                            && head.is_idempotent()
                            && request_body
                                .held_bytes()
                                .is_some_and(|n| n <= p.max_retry_body_bytes)
                    });
                    let ep = &cluster.endpoints[endpoint];
                    let h2 = H2Exchange {
                        cluster,
                        spec,
                        tls,
                        ep,
                        max_head,
                        body_timeout,
                        body_limit,
                        retry,
                    };
                    let answer = h2
                        .forward(
                            head,
                            session,
                            reused,
                            request_body,
                            &mut body,
                            &mut sink,
                            outcome,
                        )
                        .await?;
                    let held = match answer {
                        Attempt::Answered(status) => return Ok(status),
                        Attempt::Retry(held) => held,
                    };
                    _retrying = Some(held);
                    retries_left -= 1;
                    tried.push(endpoint);
                    attempt += 1;
                    if count_attempts {
                        set_attempt_count(head, attempt);
                    }
                    outcome.retried = true;
                    outcome.upstream_status = None;
                    outcome.upstream_time = None;
                    ep.stats.upstream_rq_retry.inc();
                    debug!(endpoint = %ep.address, "retrying on another endpoint");
                    continue;
                }
            };
            let request = match (kept.take(), h2_body.take()) {
                (Some(request), _) => request,
                // The body an HTTP/2 attempt held, for an HTTP/1 endpoint.
                (None, Some(taken)) => {
                    let client::Body::Held(held) = taken else {
                        return Err(ProxyError::upstream(ErrorKind::NoUpstream));
                    };
                    let mut request = UpstreamRequest::new(head, spec.name.as_bytes(), body_limit);
                    request.push(&held.data)?;
                    request.finish(held.trailers.as_ref())?;
                    request
                }
                (None, None) => {
                    let mut request = UpstreamRequest::new(head, spec.name.as_bytes(), body_limit);
                    // The body bytes that came with the head go out in the same write.
                    let pulled = pull_body(&mut request, &mut body);
                    outcome.body_in = request.body_bytes;
                    pulled?;
                    request
                }
            };
            // Only a request held whole in memory can be sent again on another connection, and
            // only one whose repetition cannot change the outcome.
            let replayable = request.is_encoded() && head.is_idempotent();
            let retry = policy.filter(|p| {
                retries_left > 0 && replayable && request.body_bytes <= p.max_retry_body_bytes
            });
            let ep = &cluster.endpoints[endpoint];
            ep.stats.upstream_rq_total.inc();
            outcome.endpoint = Some(ep.address);
            outcome.reused = reused;

            let mut exchange = Exchange {
                cluster,
                spec,
                tls,
                ep,
                conn,
                reused,
                request,
                reader: ResponseReader::new(),
                response: ResponseHead::take(),
                head_request: head.method == Method::HEAD,
                replayable,
                retry,
                retry_now: None,
                body_timeout,
                outcome: &mut *outcome,
                began: Instant::now(),
            };
            let result = if exchange.request.is_encoded() {
                exchange.whole(&mut sink).await
            } else {
                exchange.streaming(&mut body, &mut sink).await
            };
            let Exchange {
                conn,
                request,
                reader,
                response,
                retry_now,
                began,
                ..
            } = exchange;
            outcome.body_in = request.body_bytes;
            let reusable = result.as_ref().is_ok_and(|&keep_alive| keep_alive)
                && reader.reusable()
                && request.is_sent()
                && retry_now.is_none();
            reader.recycle();
            let status = response.status;
            response.recycle();
            record_upstream(cluster, spec, ep, outcome, began, result.as_ref().err());
            // A retriable answer, or a failure to answer before anything reached the client:
            // once more on another endpoint, within the cluster's retry limits and budget.
            let failed_early = retry.is_some_and(|p| p.retries_failure())
                && result
                    .as_ref()
                    .is_err_and(|e| e.side == Side::Upstream && outcome.upstream_status.is_none());
            let held = match retry_now {
                Some(held) => Some(held),
                None if failed_early => cluster.hold_budgeted_retry(spec),
                None => None,
            };
            if let Some(held) = held {
                _retrying = Some(held);
                retries_left -= 1;
                tried.push(endpoint);
                outcome.retried = true;
                outcome.upstream_status = None;
                outcome.upstream_time = None;
                ep.stats.upstream_rq_retry.inc();
                debug!(endpoint = %ep.address, status, "retrying on another endpoint");
                let mut request = request;
                attempt += 1;
                if count_attempts {
                    set_attempt_count(head, attempt);
                    request.rehead(head, spec.name.as_bytes());
                }
                kept = Some(request);
                continue;
            }
            request.recycle();
            result?;
            // The upstream is done with: it goes back to the pool before the client gets the
            // last bytes, so that the next request (maybe this client's) finds it there.
            if reusable {
                match conn.park(cx.worker.idle_watch.waker()) {
                    Ok(conn) => ep.pool.checkin(conn, timer::now()),
                    Err(Idle::Stray) => ep.stats.upstream_cx_idle_stray.inc(),
                    Err(_) => ep.stats.upstream_cx_idle_closed.inc(),
                }
            }
            sink.flush().await?;
            return Ok(status);
        }
    };
    // The route's timeout bounds all of it: connect, request, and the complete response.
    let Some(limit) = route_timeout else {
        return exchange.await;
    };
    match timer::within(limit, exchange).await {
        Some(result) => result,
        None => {
            cluster.stats.upstream_rq_route_timeout.inc();
            Err(ProxyError::upstream(ErrorKind::RouteTimeout))
        }
    }
}

/// Applies a route's path rewrite and literal Host to the request head, before any upstream
/// codec encodes it (HTTP/1 and HTTP/2 alike, and every retry). The query is kept.
fn rewrite_request(
    head: &mut RequestHead,
    rewrite: &crate::action::Rewrite,
) -> Result<(), ProxyError> {
    if let Some(rw) = &rewrite.path {
        match crate::action::rewrite_path(rw, head.path()) {
            Ok(Some(path)) => {
                let target = crate::action::with_path(head.target(), &path);
                head.set_target(&target);
            }
            Ok(None) => {}
            Err(_) => {
                return Err(ProxyError {
                    side: Side::Internal,
                    ..ProxyError::downstream(ErrorKind::Internal(INVALID_REWRITE))
                });
            }
        }
    }
    if let crate::action::HostRewrite::Literal(host) = &rewrite.host {
        head.set_authority(host.as_bytes());
    }
    Ok(())
}

/// Answers with a route's redirect: the Location built from the request, no body.
async fn answer_redirect<D: Downstream>(
    head: &RequestHead,
    scheme: &[u8],
    r: &crate::action::Redirect,
    down: &mut D,
) -> Result<u16, ProxyError> {
    // What the client used: the gateway's own scheme, or what a trusted proxy in front said.
    let scheme = match head.headers.get(b"x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case(b"https") => &b"https"[..],
        Some(p) if p.eq_ignore_ascii_case(b"http") => &b"http"[..],
        _ => scheme,
    };
    let requested = crate::action::Requested {
        scheme,
        authority: head.authority(),
        target: head.target(),
    };
    let location = crate::action::location(r, requested).map_err(|_| ProxyError {
        side: Side::Internal,
        ..ProxyError::downstream(ErrorKind::Internal(INVALID_REWRITE))
    })?;
    let mut response = ResponseHead::take();
    response.status = r.status;
    response.headers.append(b"location", &location);
    response.body = BodyLength::Known(0);
    answer(&mut response, None, down).await?;
    Ok(r.status)
}

/// Answers with a route's direct response: its status, and its body as text/plain (only
/// its length to a HEAD request).
async fn answer_directly<D: Downstream>(
    head: &RequestHead,
    d: &crate::action::DirectResponse,
    down: &mut D,
    outcome: &mut Outcome,
) -> Result<u16, ProxyError> {
    let mut response = ResponseHead::take();
    response.status = d.status;
    let body = d.body.as_deref();
    if body.is_some() {
        response.headers.append(b"content-type", b"text/plain");
    }
    let length = body.map_or(0, |b| b.len() as u64);
    let bodiless = head.method == Method::HEAD || d.status == 204 || d.status == 304;
    if bodiless {
        response.body = BodyLength::Empty;
        response.declared_length = body.map(|_| length);
    } else {
        response.body = BodyLength::Known(length);
    }
    let body = body.filter(|_| !bodiless);
    outcome.body_out = body.map_or(0, |b| b.len() as u64);
    answer(&mut response, body, down).await?;
    Ok(d.status)
}

/// Sends a response the gateway made, with `body`. A request body is not forwarded anywhere:
/// it is read off if it is already here (else the connection closes after the answer).
async fn answer<D: Downstream>(
    response: &mut ResponseHead,
    body: Option<&[u8]>,
    down: &mut D,
) -> Result<(), ProxyError> {
    let (mut request_body, mut sink) = down.split();
    let _ = request_body.take_body(|_| Ok(()));
    sink.start_response(response);
    std::mem::take(response).recycle();
    if let Some(body) = body {
        sink.push_body(body)?;
    }
    sink.end_body(None)?;
    sink.flush().await
}

/// Sets `x-envoy-attempt-count` (replacing any the client sent).
fn set_attempt_count(head: &mut RequestHead, attempt: u32) {
    const NAME: &[u8] = b"x-envoy-attempt-count";
    head.headers.remove(NAME);
    head.headers
        .append(NAME, itoa::Buffer::new().format(attempt).as_bytes());
}

/// Answers with a redirect to the same host (without its port) and target on https: 301 for
/// GET and HEAD, 308 for other methods so that the client repeats the method and body.
async fn redirect_to_https<D: Downstream>(
    head: &RequestHead,
    down: &mut D,
) -> Result<u16, ProxyError> {
    let authority = head.authority();
    let host = match authority.first() {
        Some(b'[') => memchr::memchr(b']', authority).map_or(authority, |end| &authority[..=end]),
        _ => memchr::memchr(b':', authority).map_or(authority, |colon| &authority[..colon]),
    };
    let status = if head.method == Method::GET || head.method == Method::HEAD {
        301
    } else {
        308
    };
    let mut location = Vec::with_capacity(8 + host.len() + head.target().len());
    location.extend_from_slice(b"https://");
    location.extend_from_slice(host);
    location.extend_from_slice(head.target());
    let mut response = ResponseHead::take();
    response.status = status;
    response.headers.append(b"location", &location);
    response.body = BodyLength::Known(0);
    let (mut body, mut sink) = down.split();
    // A body that came with the request is not forwarded anywhere: read it off if it is
    // already here (else the connection closes after the answer).
    let _ = body.take_body(|_| Ok(()));
    sink.start_response(&response);
    response.recycle();
    sink.end_body(None)?;
    sink.flush().await?;
    Ok(status)
}

/// Encodes the request body bytes the client has already sent, and the body's end when it is
/// complete.
fn pull_body<B: RequestBody>(
    request: &mut UpstreamRequest,
    body: &mut B,
) -> Result<(), ProxyError> {
    if body.take_body(|data| request.push(data))? {
        request.finish(body.trailers())?;
    }
    Ok(())
}

/// One exchange with the upstream: the connection, the request going out and the response
/// coming back.
struct Exchange<'a, 'o> {
    cluster: &'a ClusterState,
    spec: &'a Cluster,
    tls: Option<&'a ClientTls>,
    ep: &'a EndpointState,
    conn: UpstreamConn,
    reused: bool,
    request: UpstreamRequest,
    reader: ResponseReader,
    response: ResponseHead,
    head_request: bool,
    /// The request is held whole and idempotent: it may be sent again on a new connection.
    replayable: bool,
    /// The route's retry policy, when this attempt may be retried; and, once an answer it
    /// retries came (held back from the client), the place the retry holds.
    retry: Option<&'a RetryPolicy>,
    retry_now: Option<Held<'a>>,
    body_timeout: Duration,
    outcome: &'o mut Outcome,
    /// When the attempt began: the start of its upstream time and of the cluster's request
    /// time (one clock read for both).
    began: Instant,
}

impl Exchange<'_, '_> {
    /// A request held whole in memory: send it, read the head (sending it once more on a fresh
    /// connection if a pooled one turns out closed), relay the response. Ok(keep_alive): the
    /// upstream allows the connection to be reused.
    async fn whole<S: ResponseSink>(&mut self, sink: &mut S) -> Result<bool, ProxyError> {
        // A retry holds a place under the cluster's `max_retries` while it runs.
        let mut _retrying = None;
        let keep_alive = loop {
            let sent = async {
                self.request
                    .send(&self.conn, self.replayable, self.spec.send_timeout)
                    .await?;
                let per_try = self.retry.and_then(|p| p.per_try_timeout);
                let wait = per_try.map_or(self.spec.response_timeout, |t| {
                    t.min(self.spec.response_timeout)
                });
                self.final_head(sink, Some(timer::now() + wait)).await
            }
            .await;
            match sent {
                Ok(keep_alive) => break keep_alive,
                Err(e)
                    if e.retryable && self.reused && self.replayable && !self.outcome.retried =>
                {
                    // The upstream had closed the pooled connection while it was idle; the
                    // request never reached the application.
                    let cluster = self.cluster;
                    let Some(held) = cluster.hold_retry() else {
                        return Err(ProxyError {
                            retryable: false,
                            ..e
                        });
                    };
                    _retrying = Some(held);
                    debug!(endpoint = %self.ep.address, "retrying on a new connection after {e}");
                    self.outcome.retried = true;
                    self.ep.stats.upstream_rq_retry.inc();
                    self.reader.reset();
                    let connect =
                        UpstreamConn::connect(self.ep.address, self.spec.connect_timeout, self.tls);
                    self.conn = connect
                        .await
                        .map_err(|e| connect_failed(self.ep, e))?
                        .counted(&self.ep.stats);
                    self.ep.stats.upstream_cx_total.inc();
                    self.reused = false;
                }
                Err(e) => {
                    return Err(ProxyError {
                        retryable: false,
                        ..e
                    });
                }
            }
        };
        self.outcome.upstream_time = Some(self.began.elapsed());
        self.outcome.upstream_status = Some(self.response.status);
        // An answer the route retries is not passed on, if the limits allow a retry.
        if let Some(policy) = self.retry
            && policy.retries_status(self.response.status)
        {
            let cluster = self.cluster;
            if let Some(held) = cluster.hold_budgeted_retry(self.spec) {
                self.retry_now = Some(held);
                return Ok(false);
            }
        }
        sink.start_response(&self.response);
        self.relay(sink).await?;
        Ok(keep_alive)
    }

    /// Reads response heads until the final one, passing interim ones to the client. Ok:
    /// whether the upstream allows the connection to be reused.
    async fn final_head<S: ResponseSink>(
        &mut self,
        sink: &mut S,
        deadline: Option<Instant>,
    ) -> Result<bool, ProxyError> {
        loop {
            let head = self
                .reader
                .read_head(&self.conn, self.head_request, deadline, &mut self.response)
                .await?;
            match head {
                Head::Final(parsed) => return Ok(parsed.keep_alive),
                Head::Interim => sink.send_interim(&self.response).await?,
            }
        }
    }

    /// A request whose body is still arriving: it streams to the upstream while the response
    /// may already stream back (an upstream may answer early, or echo as it reads). Ok: whether
    /// the upstream allows the connection to be reused.
    async fn streaming<B: RequestBody, S: ResponseSink>(
        &mut self,
        body: &mut B,
        sink: &mut S,
    ) -> Result<bool, ProxyError> {
        let (send_timeout, response_timeout) = (self.spec.send_timeout, self.spec.response_timeout);
        self.request.send(&self.conn, false, send_timeout).await?;
        if body.expects_continue() {
            sink.send_continue().await?;
        }
        let Exchange {
            conn,
            request,
            reader,
            response,
            head_request,
            body_timeout,
            outcome,
            began,
            ..
        } = self;
        let mut sending = pin!(stream_body(request, body, conn, send_timeout));
        // Whether the upload still runs once the response head is in.
        let mut uploading = true;
        let keep_alive = loop {
            let head = {
                let receiving = pin!(reader.read_head(conn, *head_request, None, response));
                if uploading {
                    match select(sending.as_mut(), receiving).await {
                        Either::Left((Ok(()), receiving)) => {
                            uploading = false;
                            timer::within(response_timeout, receiving)
                                .await
                                .unwrap_or(Err(ProxyError::upstream(ErrorKind::UpstreamTimeout)))?
                        }
                        // The client failed, or the upstream stopped reading for the whole
                        // send timeout (an answer it had would have come in meanwhile).
                        Either::Left((Err(e), _))
                            if e.side != Side::Upstream
                                || e.kind == ErrorKind::UpstreamSendTimeout =>
                        {
                            return Err(e);
                        }
                        Either::Left((Err(e), receiving)) => {
                            // The upstream closed its reading side: it may have answered.
                            uploading = false;
                            timer::within(response_timeout, receiving)
                                .await
                                .unwrap_or(Err(e))
                                .map_err(|_| e)?
                        }
                        Either::Right((head, _)) => head?,
                    }
                } else {
                    timer::within(response_timeout, receiving)
                        .await
                        .unwrap_or(Err(ProxyError::upstream(ErrorKind::UpstreamTimeout)))?
                }
            };
            match head {
                Head::Final(parsed) => break parsed.keep_alive,
                // The upload pauses while the interim response goes out.
                Head::Interim => sink.send_interim(response).await?,
            }
        };
        outcome.upstream_time = Some(began.elapsed());
        outcome.upstream_status = Some(response.status);
        sink.start_response(response);
        let relaying = pin!(relay_response(reader, conn, sink, *body_timeout, outcome));
        if !uploading {
            relaying.await?;
            return Ok(keep_alive);
        }
        match select(sending, relaying).await {
            Either::Left((Ok(()), relaying)) => relaying.await?,
            // The upstream stopped reading the body but still answers: finish the answer; the
            // client connection closes afterwards (its body was not all read).
            Either::Left((Err(e), relaying)) if e.side == Side::Upstream => relaying.await?,
            Either::Left((Err(e), _)) => return Err(e),
            // The response is complete before the request body was all sent: the rest is not
            // sent, so the request is not complete on the connection and it is not reused
            // (UpstreamRequest::is_sent); the client connection closes if its body was not
            // all read.
            Either::Right((relayed, _)) => relayed?,
        }
        Ok(keep_alive)
    }

    /// Streams the response body to the client.
    async fn relay<S: ResponseSink>(&mut self, sink: &mut S) -> Result<(), ProxyError> {
        relay_response(
            &mut self.reader,
            &self.conn,
            sink,
            self.body_timeout,
            self.outcome,
        )
        .await
    }
}

/// The upstream side of one exchange: an HTTP/1 connection of its own, or a stream on a
/// shared HTTP/2 session (Pingora's `HttpSession {H1, H2}`).
enum Upstream {
    H1(UpstreamConn),
    H2(Rc<Session>),
}

/// Picks endpoints until one gives a connection, pooled or new, or (for an HTTP/2 cluster) a
/// session with a free stream; each endpoint is tried at most once. None left: 503. A pooled
/// HTTP/1 connection is used only if nothing arrived on it while it was idle: stray bytes
/// would be taken for the response, and a closed one would fail the request.
async fn connect_any(
    cluster: &ClusterState,
    spec: &Cluster,
    tls: Option<&ClientTls>,
    health: Option<&ClusterHealth>,
    max_head: usize,
    exclude: &[usize],
    key: Option<u64>,
) -> Result<(usize, Upstream, bool), ProxyError> {
    let n = cluster.endpoints.len();
    // Endpoints a retry must avoid, unless that is all of them (then any will do); and those
    // whose connect failed. Allocated only when there are some.
    let mut failed: Vec<usize> = if exclude.len() < n {
        exclude.to_vec()
    } else {
        Vec::new()
    };
    let mut cause = None;
    for _ in 0..n {
        let picked = cluster.balancer.borrow_mut().as_mut().and_then(|picker| {
            let active = |i: usize| cluster.endpoints.get(i).map_or(0, |e| e.active.get());
            picker.pick(n, key, |i| failed.contains(&i), active)
        });
        let Some(endpoint) = picked else {
            break;
        };
        let Some(ep) = cluster.endpoints.get(endpoint) else {
            break;
        };
        // An endpoint its health check took out is passed over (the picker moves on: a
        // sequence keeps the others' shares, a hash walks on to the key's next endpoint),
        // unless so few are healthy that all are used; so is one this core's outlier detection
        // ejected, unless every endpoint is.
        if health.is_some_and(|h| !h.admits(endpoint)) {
            failed.push(endpoint);
            continue;
        }
        let now = timer::now();
        if ep.outlier.is_ejected(now)
            && (cluster.endpoints.iter()).any(|e| !e.outlier.is_ejected(now))
        {
            failed.push(endpoint);
            continue;
        }
        match ep.connect(cluster, spec, tls, max_head).await {
            Ok((upstream, reused)) => return Ok((endpoint, upstream, reused)),
            // A breaker is open for the cluster, not just this endpoint.
            Err(e) if e.kind == ErrorKind::Overflow => return Err(e),
            Err(e) => {
                debug!(endpoint = %ep.address, cluster = %spec.name, "connect failed: {e}");
                cause = Some(e);
                failed.push(endpoint);
            }
        }
    }
    Err(cause.unwrap_or(ProxyError::upstream(ErrorKind::NoUpstream)))
}

impl EndpointState {
    /// A pooled HTTP/1 connection, a free stream on an HTTP/2 session, or a new connection
    /// (which becomes a session when it speaks h2). One HTTP/2 connect at a time per endpoint
    /// on this core: the others wait for it and share the session.
    async fn connect(
        &self,
        cluster: &ClusterState,
        spec: &Cluster,
        tls: Option<&ClientTls>,
        max_head: usize,
    ) -> Result<(Upstream, bool), ProxyError> {
        let protocol = spec.protocol;
        let h2_first = match protocol {
            UpstreamProtocol::Http2 => true,
            // Until the first connect tells, wait for it rather than open one each.
            UpstreamProtocol::Auto => self.h2.speaks_h2() || self.h2.is_connecting(),
            UpstreamProtocol::Http1 => false,
        };
        if h2_first {
            loop {
                if let Some(session) = self.h2.find() {
                    self.stats.upstream_cx_reused.inc();
                    return Ok((Upstream::H2(session), true));
                }
                if !self.h2.is_connecting() {
                    break;
                }
                let Some(_pending) = cluster.hold_pending() else {
                    return Err(ProxyError::upstream(ErrorKind::Overflow));
                };
                self.h2.wait().await;
            }
        }
        if protocol != UpstreamProtocol::Http2 {
            while let Some(mut conn) = self.pool.checkout(timer::now()) {
                // Taken for a request: its read will wake the request.
                match conn.check(std::task::Waker::noop()) {
                    Idle::Clean => {
                        self.stats.upstream_cx_reused.inc();
                        return Ok((Upstream::H1(conn), true));
                    }
                    Idle::Stray => self.stats.upstream_cx_idle_stray.inc(),
                    Idle::Closed => self.stats.upstream_cx_idle_closed.inc(),
                }
            }
        }
        // Circuit breakers: the cluster's open connections, and requests waiting for one.
        let open: u64 = (cluster.endpoints.iter())
            .map(|e| e.stats.upstream_cx_active.get())
            .sum();
        if open >= u64::from(cluster.breakers.max_connections) {
            cluster.stats.upstream_cx_overflow.inc();
            return Err(ProxyError::upstream(ErrorKind::Overflow));
        }
        let Some(_pending) = cluster.hold_pending() else {
            return Err(ProxyError::upstream(ErrorKind::Overflow));
        };
        let _connecting = (protocol != UpstreamProtocol::Http1).then(|| self.h2.connecting());
        let conn = UpstreamConn::connect(self.address, spec.connect_timeout, tls)
            .await
            .map_err(|e| {
                observe(cluster, spec, self, Observed::LocalFailure);
                connect_failed(self, e)
            })?;
        self.stats.upstream_cx_total.inc();
        let conn = conn.counted(&self.stats);
        if protocol == UpstreamProtocol::Http1 {
            return Ok((Upstream::H1(conn), false));
        }
        if conn.speaks_h2(protocol == UpstreamProtocol::Http2) {
            // Boxed: a new HTTP/2 connection is rare, and its handshake state would otherwise
            // weigh on every exchange's future.
            let open = Session::open(conn, &spec.http2, max_head, spec.send_timeout);
            let session = Box::pin(open).await?;
            self.h2.add(session.clone());
            return Ok((Upstream::H2(session), false));
        }
        if protocol == UpstreamProtocol::Http2 {
            // TLS without h2 agreed: the endpoint does not speak HTTP/2.
            self.stats.upstream_cx_tls_fail.inc();
            return Err(ProxyError::upstream(ErrorKind::UpstreamTls));
        }
        self.h2.set_speaks_h2(false);
        Ok((Upstream::H1(conn), false))
    }
}

impl ClusterState {
    /// Holds a place among the requests waiting for a connection, unless this core's share
    /// of `max_pending_requests` is taken (counted as an overflow).
    fn hold_pending(&self) -> Option<Held<'_>> {
        let held = Held::take(&self.load.pending, self.breakers.max_pending_requests);
        if held.is_none() {
            self.stats.upstream_rq_pending_overflow.inc();
        }
        held
    }

    /// Holds a place among the retries under way, unless this core's share of `max_retries`
    /// is taken (counted as an overflow: the request is not retried).
    fn hold_retry(&self) -> Option<Held<'_>> {
        self.hold_retries_within(self.breakers.max_retries)
    }

    /// Like [`hold_retry`](ClusterState::hold_retry), within the cluster's retry budget too:
    /// retries under way at most `budget_percent` of the requests under way, or
    /// `min_retry_concurrency`, whichever is more.
    fn hold_budgeted_retry(&self, spec: &Cluster) -> Option<Held<'_>> {
        let b = spec.retry_budget;
        let share = u64::from(self.load.requests.get()) * u64::from(b.budget_centipercent) / 10_000;
        let budget = u32::try_from(share)
            .unwrap_or(u32::MAX)
            .max(b.min_retry_concurrency);
        self.hold_retries_within(budget.min(self.breakers.max_retries))
    }

    fn hold_retries_within(&self, max: u32) -> Option<Held<'_>> {
        let held = Held::take(&self.load.retries, max);
        if held.is_none() {
            self.stats.upstream_rq_retry_overflow.inc();
        }
        held
    }
}

/// One exchange over HTTP/2: what it needs of the route and cluster.
struct H2Exchange<'a> {
    cluster: &'a ClusterState,
    spec: &'a Cluster,
    tls: Option<&'a ClientTls>,
    ep: &'a EndpointState,
    max_head: usize,
    body_timeout: Duration,
    body_limit: Option<u64>,
    /// The route's retry policy, when this attempt may be retried on another endpoint.
    retry: Option<&'a RetryPolicy>,
}

/// How an attempt over HTTP/2 ended.
enum Attempt<'a> {
    /// The answer, with this status, went to the client.
    Answered(u16),
    /// The answer (not relayed) or the failure is to be retried on another endpoint, under
    /// this place among the cluster's retries.
    Retry(Held<'a>),
}

impl<'a> H2Exchange<'a> {
    /// Proxies the request on a stream of `session`; a stream the upstream refused or left
    /// unprocessed under GOAWAY goes once more on a new session when its body is held whole.
    /// An answer or failure the route's retry policy retries, within the cluster's limits, is
    /// handed back for another endpoint.
    #[allow(clippy::too_many_arguments)]
    async fn forward<B: RequestBody, S: ResponseSink>(
        &self,
        head: &RequestHead,
        mut session: Rc<Session>,
        reused: bool,
        request_body: &mut client::Body,
        body: &mut B,
        sink: &mut S,
        outcome: &mut Outcome,
    ) -> Result<Attempt<'a>, ProxyError> {
        let ep = self.ep;
        let cluster: &'a ClusterState = self.cluster;
        ep.stats.upstream_rq_total.inc();
        outcome.endpoint = Some(ep.address);
        outcome.reused = reused;
        let per_try = self.retry.and_then(|p| p.per_try_timeout);
        let limits = client::Limits {
            response_timeout: per_try.map_or(self.spec.response_timeout, |t| {
                t.min(self.spec.response_timeout)
            }),
            send_timeout: self.spec.send_timeout,
            body_timeout: self.body_timeout,
            body_limit: self.body_limit,
        };
        let head_request = head.method == Method::HEAD;
        let began = Instant::now();
        let mut _retrying = None;
        // The place a withheld answer's retry holds.
        let mut retry_now = None;
        let mut withhold = |status: u16| {
            self.retry.is_some_and(|p| p.retries_status(status)) && {
                retry_now = cluster.hold_budgeted_retry(self.spec);
                retry_now.is_some()
            }
        };
        let result = loop {
            let req = client::request(head, self.tls.is_some(), &self.spec.name)?;
            let exchange = client::exchange(
                &session,
                req,
                head_request,
                request_body,
                body,
                sink,
                &limits,
                outcome,
                &mut withhold,
            );
            match exchange.await {
                Err(e)
                    if e.retryable
                        && !outcome.retried
                        && matches!(request_body, client::Body::Held(_)) =>
                {
                    let Some(held) = cluster.hold_retry() else {
                        break Err(ProxyError {
                            retryable: false,
                            ..e
                        });
                    };
                    _retrying = Some(held);
                    debug!(endpoint = %ep.address, "retrying a stream the upstream did not process: {e}");
                    session.close();
                    outcome.retried = true;
                    ep.stats.upstream_rq_retry.inc();
                    session = match ep
                        .connect(cluster, self.spec, self.tls, self.max_head)
                        .await
                    {
                        Ok((Upstream::H2(s), _)) => s,
                        Ok((Upstream::H1(_), _)) => break Err(e),
                        Err(e) => break Err(e),
                    };
                }
                result => break result,
            }
        };
        record_upstream(
            cluster,
            self.spec,
            ep,
            outcome,
            began,
            result.as_ref().err(),
        );
        match result {
            Ok(Some(status)) => {
                sink.flush().await?;
                Ok(Attempt::Answered(status))
            }
            Ok(None) => retry_now
                .map(Attempt::Retry)
                .ok_or(ProxyError::upstream(ErrorKind::UpstreamClosed)),
            // A failure before any answer reached the client, of a kind the route retries.
            Err(e) if e.side == Side::Upstream && outcome.upstream_status.is_none() => {
                let retried = self.retry.is_some_and(|p| {
                    p.retries_failure()
                        || (e.retryable && p.retry_on.contains(&RetryOn::RefusedStream))
                });
                match retried
                    .then(|| cluster.hold_budgeted_retry(self.spec))
                    .flatten()
                {
                    Some(held) => Ok(Attempt::Retry(held)),
                    None => Err(ProxyError {
                        retryable: false,
                        ..e
                    }),
                }
            }
            Err(e) => Err(ProxyError {
                retryable: false,
                ..e
            }),
        }
    }
}

/// Counts one exchange with an endpoint once it is over, whatever the protocol: when the
/// upstream answered, its status class and the exchange's time until now (the response
/// relayed, or cut) as Envoy's upstream_rq_time; a response timeout.
fn record_upstream(
    cluster: &ClusterState,
    spec: &Cluster,
    ep: &EndpointState,
    outcome: &Outcome,
    began: Instant,
    error: Option<&ProxyError>,
) {
    // What it tells outlier detection: the status, or a failure of the upstream to answer
    // (a client that went away says nothing about the endpoint).
    let seen = match (outcome.upstream_status, error) {
        (Some(s), _) if s >= 500 => Some(Observed::Status(s)),
        (Some(_), _) => Some(Observed::Success),
        (None, Some(e)) if e.side == Side::Upstream && e.kind != ErrorKind::Overflow => {
            Some(Observed::LocalFailure)
        }
        _ => None,
    };
    if let Some(seen) = seen {
        observe(cluster, spec, ep, seen);
    }
    if let Some(status) = outcome.upstream_status {
        ep.stats.record_status(status);
        cluster.rq_time.record(began.elapsed());
    }
    match error {
        Some(e) if e.kind == ErrorKind::UpstreamTimeout => ep.stats.upstream_rq_timeout.inc(),
        Some(e)
            if e.kind == ErrorKind::Aborted && e.cause == Some(std::io::ErrorKind::TimedOut) =>
        {
            cluster.stats.upstream_rq_idle_timeout.inc()
        }
        _ => {}
    }
}

/// Feeds one result to the endpoint's outlier detection on this core; logs and counts an
/// ejection.
fn observe(cluster: &ClusterState, spec: &Cluster, ep: &EndpointState, seen: Observed) {
    let Some(rules) = &spec.outlier_detection else {
        return;
    };
    let now = timer::now();
    let may_eject = || {
        let out = (cluster.endpoints.iter())
            .filter(|e| e.outlier.is_ejected(now))
            .count();
        outlier::may_eject(out, cluster.endpoints.len(), rules.max_ejection_percent)
    };
    if let Some(length) = ep.outlier.observe(rules, seen, now, may_eject) {
        ep.stats.outlier_ejections_total.inc();
        ep.stats.outlier_ejected.set(1);
        warn!(cluster = %spec.name, endpoint = %ep.address, ejected_for = ?length, "outlier detection: endpoint ejected");
    }
}

/// Counts a failed connect and says what the client gets if no other endpoint does better:
/// 503 when nothing accepted the connection, 502 when a TLS handshake failed.
fn connect_failed(ep: &EndpointState, e: ConnectError) -> ProxyError {
    match e {
        ConnectError::Connect(e) => {
            ep.stats.upstream_cx_connect_fail.inc();
            if e.kind() == std::io::ErrorKind::TimedOut {
                ep.stats.upstream_cx_connect_timeout.inc();
            }
            ProxyError::upstream(ErrorKind::NoUpstream).caused_by(&e)
        }
        ConnectError::Tls(e) => {
            ep.stats.upstream_cx_tls_fail.inc();
            debug!(endpoint = %ep.address, "upstream TLS handshake failed: {e}");
            ProxyError::upstream(ErrorKind::UpstreamTls).caused_by(&e)
        }
    }
}

/// Streams the rest of the request body from the client to the upstream.
async fn stream_body<B: RequestBody>(
    request: &mut UpstreamRequest,
    body: &mut B,
    conn: &UpstreamConn,
    send_timeout: Duration,
) -> Result<(), ProxyError> {
    while !request.is_encoded() {
        body.fill_body().await?;
        pull_body(request, body)?;
        request
            .send(conn, false, send_timeout)
            .await
            .map_err(|e| ProxyError {
                retryable: false,
                ..e
            })?;
    }
    Ok(())
}

/// Streams the response body from the upstream to the client, one buffer at a time. The last
/// bytes are left encoded for the caller to flush once the upstream connection is put away.
async fn relay_response<S: ResponseSink>(
    reader: &mut ResponseReader,
    conn: &UpstreamConn,
    sink: &mut S,
    body_timeout: Duration,
    outcome: &mut Outcome,
) -> Result<(), ProxyError> {
    loop {
        let done = reader.take_body(|data| {
            outcome.body_out += data.len() as u64;
            sink.push_body(data)
        })?;
        if done {
            return sink.end_body(reader.trailers());
        }
        if sink.pending() > 0 {
            sink.flush().await?;
        }
        reader.fill(conn, body_timeout).await?;
    }
}
