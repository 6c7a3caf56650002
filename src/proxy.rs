//! One request, top to bottom: route -> pick -> checkout -> forward -> respond -> checkin.
//! Protocol-neutral: the downstream codec is behind [`Downstream`], the upstream speaks HTTP/1.1.

use std::pin::pin;
use std::time::Duration;

use futures_util::future::{Either, select};
use tracing::debug;

use crate::config::Cluster;
use crate::error::{ErrorKind, ProxyError, Side};
use crate::h1::body::{BodyEncoder, BodyError, Framing};
use crate::h1::head::{ResponseMeta, encode_request};
use crate::message::{BodyLength, Method, RequestHead, ResponseHead};
use crate::rt;
use crate::timer;
use crate::upstream::{self, ResponseReader, UpstreamConn};
use crate::worker::{ClusterState, EndpointState, Worker};

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

    /// Encodes the response head.
    fn start_response(&mut self, head: &ResponseHead);

    /// Encodes response body bytes.
    fn push_body(&mut self, data: &[u8]) -> Result<(), ProxyError>;

    /// Ends the response body.
    fn end_body(&mut self) -> Result<(), ProxyError>;

    /// Bytes encoded and not yet written.
    fn pending(&self) -> usize;

    /// Writes what was encoded.
    async fn flush(&mut self) -> Result<(), ProxyError>;
}

/// What the downstream connection needs to know about one request's context.
pub struct Context<'a> {
    pub worker: &'a Worker,
    /// The listener's index in the worker's current snapshot.
    pub listener: usize,
    /// The client address, preformatted for X-Forwarded-For.
    pub client_ip: &'a [u8],
}

fn encode_error(_: BodyError) -> ProxyError {
    ProxyError {
        kind: ErrorKind::Aborted,
        side: Side::Internal,
        retryable: false,
    }
}

/// Proxies one request. Returns the status sent, or the error for the connection to answer.
pub async fn forward<D: Downstream>(
    cx: &Context<'_>,
    head: &mut RequestHead,
    down: &mut D,
) -> Result<u16, ProxyError> {
    let generation = cx.worker.generation();
    let snapshot = &generation.snapshot;
    let route = snapshot
        .listeners
        .get(cx.listener)
        .and_then(|l| l.router.route(head.authority(), head.path(), &head.method))
        .ok_or(ProxyError::downstream(ErrorKind::NoRoute))?;
    let (Some(spec), Some(cluster)) = (
        snapshot.clusters.get(route.cluster),
        generation.clusters.get(route.cluster),
    ) else {
        return Err(ProxyError::downstream(ErrorKind::NoRoute));
    };

    // At the edge the proxy knows the scheme; a client-sent value is never trusted.
    head.headers.remove(b"x-forwarded-proto");
    head.headers.append(b"x-forwarded-proto", b"http");
    head.headers
        .append_to_list(b"x-forwarded-for", cx.client_ip);

    let framing = match head.body {
        BodyLength::Empty => Framing::None,
        BodyLength::Known(n) => Framing::Length(n),
        BodyLength::Unknown => Framing::Chunked,
    };
    let (mut body, mut sink) = down.split();
    let mut request = Request {
        bytes: rt::take_buffer(),
        encoder: BodyEncoder::new(framing),
        body_done: false,
    };
    encode_request(head, spec.name.as_bytes(), framing, &mut request.bytes);
    // The body bytes that came with the head go out in the same write.
    request.pull_buffered(&mut body)?;
    let exchange = Exchange {
        spec,
        head_request: head.method == Method::HEAD,
        // Only a request held whole in memory can be sent again on another connection, and
        // only one whose repetition cannot change the outcome.
        replayable: request.body_done && head.is_idempotent(),
        body_timeout: snapshot.limits.body_timeout,
    };

    let (endpoint, conn, reused) = connect_any(cluster, spec, exchange.replayable).await?;
    let ep = &cluster.endpoints[endpoint];
    ep.stats.requests.inc();
    let mut reader = ResponseReader::new();
    let mut response = ResponseHead::take();
    let outcome = if request.body_done {
        exchange
            .whole(
                ep,
                conn,
                reused,
                &mut request,
                &mut reader,
                &mut response,
                &mut sink,
            )
            .await
    } else {
        exchange
            .streaming(
                conn,
                &mut request,
                &mut body,
                &mut reader,
                &mut response,
                &mut sink,
            )
            .await
    };
    rt::recycle_buffer(std::mem::take(&mut request.bytes));
    let (conn, meta) = outcome?;
    // The upstream is done with: it goes back to the pool before the client gets the last
    // bytes, so that the next request (maybe this client's) finds it there.
    if reader.reusable() && meta.keep_alive && request.body_done {
        ep.pool.checkin(conn, timer::now());
    }
    reader.recycle();
    let status = response.status;
    response.recycle();
    sink.flush().await?;
    Ok(status)
}

/// The upstream request being sent: encoded bytes and body progress.
struct Request {
    bytes: Vec<u8>,
    encoder: BodyEncoder,
    body_done: bool,
}

impl Request {
    /// Encodes the request body bytes the client has already sent.
    fn pull_buffered<B: RequestBody>(&mut self, body: &mut B) -> Result<(), ProxyError> {
        let Request {
            bytes,
            encoder,
            body_done,
        } = self;
        *body_done = body.take_body(|data| encoder.encode(data, bytes).map_err(encode_error))?;
        if *body_done {
            encoder.finish(bytes).map_err(encode_error)?;
        }
        Ok(())
    }
}

/// What one exchange with the upstream needs to know.
struct Exchange<'a> {
    spec: &'a Cluster,
    head_request: bool,
    replayable: bool,
    body_timeout: Duration,
}

impl Exchange<'_> {
    /// A request held whole in memory: send it, read the head (sending it once more on a fresh
    /// connection if a pooled one turns out closed), relay the response.
    #[allow(clippy::too_many_arguments)]
    async fn whole<S: ResponseSink>(
        &self,
        ep: &EndpointState,
        mut conn: UpstreamConn,
        mut reused: bool,
        request: &mut Request,
        reader: &mut ResponseReader,
        response: &mut ResponseHead,
        sink: &mut S,
    ) -> Result<(UpstreamConn, ResponseMeta), ProxyError> {
        let mut retried = false;
        let meta = loop {
            let sent = async {
                upstream::send(&conn, &mut request.bytes, self.replayable).await?;
                let deadline = timer::now() + self.spec.response_timeout;
                reader
                    .read_head(&conn, self.head_request, Some(deadline), response)
                    .await
            }
            .await;
            match sent {
                Ok(meta) => break meta,
                Err(e) if e.retryable && reused && self.replayable && !retried => {
                    // The upstream had closed the pooled connection while it was idle; the
                    // request never reached the application.
                    debug!(endpoint = %ep.address, "retrying on a new connection after {e}");
                    retried = true;
                    ep.stats.retries.inc();
                    reader.reset();
                    conn = UpstreamConn::connect(ep.address, self.spec.connect_timeout)
                        .await
                        .map_err(|_| {
                            ep.stats.connect_failures.inc();
                            ProxyError::upstream(ErrorKind::NoUpstream)
                        })?;
                    ep.stats.connections_new.inc();
                    reused = false;
                }
                Err(e) => {
                    return Err(ProxyError {
                        retryable: false,
                        ..e
                    });
                }
            }
        };
        sink.start_response(response);
        relay_response(reader, &conn, sink, self.body_timeout).await?;
        Ok((conn, meta))
    }

    /// A request whose body is still arriving: it streams to the upstream while the response
    /// may already stream back (an upstream may answer early, or echo as it reads).
    async fn streaming<B: RequestBody, S: ResponseSink>(
        &self,
        conn: UpstreamConn,
        request: &mut Request,
        body: &mut B,
        reader: &mut ResponseReader,
        response: &mut ResponseHead,
        sink: &mut S,
    ) -> Result<(UpstreamConn, ResponseMeta), ProxyError> {
        upstream::send(&conn, &mut request.bytes, false).await?;
        if body.expects_continue() {
            sink.send_continue().await?;
        }
        let meta = 'exchange: {
            let mut sending = pin!(stream_body(request, body, &conn));
            // Whether the upload still runs once the response head is in.
            let mut uploading = true;
            let meta = {
                let receiving = pin!(reader.read_head(&conn, self.head_request, None, response));
                match select(sending.as_mut(), receiving).await {
                    Either::Left((Ok(()), receiving)) => {
                        uploading = false;
                        timer::within(self.spec.response_timeout, receiving)
                            .await
                            .unwrap_or(Err(ProxyError::upstream(ErrorKind::UpstreamTimeout)))?
                    }
                    Either::Left((Err(e), _)) if e.side != Side::Upstream => return Err(e),
                    Either::Left((Err(e), receiving)) => {
                        // The upstream stopped reading: it may have answered already.
                        uploading = false;
                        timer::within(self.spec.response_timeout, receiving)
                            .await
                            .unwrap_or(Err(e))
                            .map_err(|_| e)?
                    }
                    Either::Right((answer, _)) => answer?,
                }
            };
            sink.start_response(response);
            let relaying = pin!(relay_response(reader, &conn, sink, self.body_timeout));
            if !uploading {
                relaying.await?;
                break 'exchange meta;
            }
            match select(sending, relaying).await {
                Either::Left((Ok(()), relaying)) => relaying.await?,
                // The upstream stopped reading the body but still answers: finish the answer;
                // the client connection closes afterwards (its body was not all read).
                Either::Left((Err(e), relaying)) if e.side == Side::Upstream => relaying.await?,
                Either::Left((Err(e), _)) => return Err(e),
                // The response is complete before the request body: the rest of the body is not
                // sent; neither connection is reused.
                Either::Right((relayed, _)) => relayed?,
            }
            meta
        };
        Ok((conn, meta))
    }
}

/// Picks endpoints until one gives a connection, pooled or new; each endpoint is tried at most
/// once. None left: 503. A request that must not be repeated only gets a pooled connection
/// that has not been closed by the upstream meanwhile.
async fn connect_any(
    cluster: &ClusterState,
    spec: &Cluster,
    replayable: bool,
) -> Result<(usize, UpstreamConn, bool), ProxyError> {
    let n = cluster.endpoints.len();
    // Allocated only once a connect fails.
    let mut failed: Vec<usize> = Vec::new();
    for _ in 0..n {
        let endpoint = {
            let mut balancer = cluster.balancer.borrow_mut();
            let mut pick = balancer.pick();
            // Every endpoint appears within one period, so this finds an untried one.
            for _ in 0..balancer.period() {
                if !failed.contains(&pick) {
                    break;
                }
                pick = balancer.pick();
            }
            pick
        };
        let Some(ep) = cluster.endpoints.get(endpoint) else {
            break;
        };
        while let Some(conn) = ep.pool.checkout(timer::now()) {
            if replayable || !conn.closed_by_peer() {
                ep.stats.connections_reused.inc();
                return Ok((endpoint, conn, true));
            }
        }
        match UpstreamConn::connect(ep.address, spec.connect_timeout).await {
            Ok(conn) => {
                ep.stats.connections_new.inc();
                return Ok((endpoint, conn, false));
            }
            Err(e) => {
                debug!(endpoint = %ep.address, cluster = %spec.name, "connect failed: {e}");
                ep.stats.connect_failures.inc();
                failed.push(endpoint);
            }
        }
    }
    Err(ProxyError::upstream(ErrorKind::NoUpstream))
}

/// Streams the rest of the request body from the client to the upstream.
async fn stream_body<B: RequestBody>(
    request: &mut Request,
    body: &mut B,
    conn: &UpstreamConn,
) -> Result<(), ProxyError> {
    while !request.body_done {
        body.fill_body().await?;
        request.pull_buffered(body)?;
        upstream::send(conn, &mut request.bytes, false)
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
) -> Result<(), ProxyError> {
    loop {
        if reader.take_body(|data| sink.push_body(data))? {
            return sink.end_body();
        }
        if sink.pending() > 0 {
            sink.flush().await?;
        }
        reader.fill(conn, body_timeout).await?;
    }
}
