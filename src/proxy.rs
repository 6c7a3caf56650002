//! One request, top to bottom: route -> pick -> checkout -> forward -> respond -> checkin.
//! Protocol-neutral: the downstream codec is behind [`Downstream`], the upstream speaks HTTP/1.1.

use std::pin::pin;
use std::time::Instant;

use futures_util::future::{Either, select};
use tracing::debug;

use crate::config::Cluster;
use crate::error::{ErrorKind, ProxyError, Side};
use crate::h1::body::{BodyEncoder, Framing};
use crate::h1::head::encode_request;
use crate::io as rt;
use crate::message::{BodyLength, Method, RequestHead, ResponseHead};
use crate::upstream::{self, ResponseReader, UpstreamConn};
use crate::worker::{ClusterState, ListenerSlot, Worker};

/// What the proxy needs from the downstream side of one exchange (an HTTP/1 connection today,
/// an HTTP/2 stream tomorrow). Its futures never leave their core, so they need not be Send.
#[allow(async_fn_in_trait)]
pub trait Downstream {
    /// Hands every request body byte already received to `f`; true when the body is complete.
    fn take_body<F>(&mut self, f: F) -> Result<bool, ProxyError>
    where
        F: FnMut(&[u8]) -> Result<(), ProxyError>;

    /// Waits for more request body bytes, first telling a client that expects it to continue.
    async fn fill_body(&mut self) -> Result<(), ProxyError>;

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
    pub listener: &'a ListenerSlot,
    /// The client address, preformatted for X-Forwarded-For.
    pub client_ip: &'a [u8],
}

fn encode_error(_: crate::h1::body::BodyError) -> ProxyError {
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
        .get(cx.listener.index.get())
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
    let mut request = Request {
        bytes: rt::take_buffer(),
        encoder: BodyEncoder::new(framing),
        body_done: false,
    };
    encode_request(head, spec.name.as_bytes(), framing, &mut request.bytes);
    // The body bytes that came with the head go out in the same write.
    request.pull_buffered(down)?;
    // Only a request held whole in memory can be sent again on another connection.
    let replayable = request.body_done && head.is_idempotent();

    let (endpoint, mut conn, mut reused) = connect_any(cluster, spec).await?;
    let ep = &cluster.endpoints[endpoint];
    let head_request = head.method == Method::HEAD;
    let mut retried = false;
    let result = loop {
        ep.stats.requests.inc();
        let mut reader = ResponseReader::new();
        let mut response = ResponseHead::default();
        let sent = send_and_await_head(
            &mut request,
            down,
            &conn,
            &mut reader,
            spec,
            head_request,
            replayable,
            &mut response,
        )
        .await;
        match sent {
            Ok(meta) => break Ok((meta, reader, response)),
            Err(e) if e.retryable && reused && replayable && !retried => {
                // The pooled connection had been closed by the upstream while idle; the request
                // never reached the application, so it goes once more on a fresh connection.
                debug!(endpoint = %ep.address, "retrying on a new connection after {e}");
                retried = true;
                ep.stats.retries.inc();
                reader.recycle();
                match UpstreamConn::connect(ep.address, spec.connect_timeout).await {
                    Ok(fresh) => {
                        ep.stats.connections_new.inc();
                        conn = fresh;
                        reused = false;
                    }
                    Err(_) => {
                        ep.stats.connect_failures.inc();
                        break Err(ProxyError::upstream(ErrorKind::NoUpstream));
                    }
                }
            }
            Err(e) => {
                reader.recycle();
                break Err(e);
            }
        }
    };
    rt::recycle_buffer(std::mem::take(&mut request.bytes));
    let (meta, mut reader, response) = result?;

    down.start_response(&response);
    relay_response(
        &mut reader,
        &conn,
        down,
        cx.worker.generation().snapshot.limits.body_timeout,
    )
    .await?;
    if reader.reusable() && meta.keep_alive && request.body_done {
        cluster.endpoints[endpoint]
            .pool
            .checkin(conn, Instant::now());
    }
    reader.recycle();
    Ok(response.status)
}

/// The upstream request being sent: encoded bytes and body progress.
struct Request {
    bytes: Vec<u8>,
    encoder: BodyEncoder,
    body_done: bool,
}

impl Request {
    /// Encodes the request body bytes the client has already sent.
    fn pull_buffered<D: Downstream>(&mut self, down: &mut D) -> Result<(), ProxyError> {
        let Request {
            bytes,
            encoder,
            body_done,
        } = self;
        *body_done = down.take_body(|data| encoder.encode(data, bytes).map_err(encode_error))?;
        if *body_done {
            encoder.finish(bytes).map_err(encode_error)?;
        }
        Ok(())
    }
}

/// Picks endpoints until one gives a connection, pooled or new; each endpoint is tried at most
/// once. None left: 503.
async fn connect_any(
    cluster: &ClusterState,
    spec: &Cluster,
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
        if let Some(conn) = ep.pool.checkout(Instant::now()) {
            ep.stats.connections_reused.inc();
            return Ok((endpoint, conn, true));
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

/// Sends the request (head, then the rest of the body while watching for an early response)
/// and reads the final response head.
#[allow(clippy::too_many_arguments)]
async fn send_and_await_head<D: Downstream>(
    request: &mut Request,
    down: &mut D,
    conn: &UpstreamConn,
    reader: &mut ResponseReader,
    spec: &Cluster,
    head_request: bool,
    replayable: bool,
    response: &mut ResponseHead,
) -> Result<crate::h1::head::ResponseMeta, ProxyError> {
    upstream::send(conn, &mut request.bytes, replayable).await?;
    if request.body_done {
        let deadline = Instant::now() + spec.response_timeout;
        return reader
            .read_head(conn, head_request, Some(deadline), response)
            .await;
    }
    // The body streams while the upstream may already answer (a 413 or 401 before the end of an
    // upload): whichever comes first decides.
    request.bytes.clear();
    let sending = pin!(stream_body(request, down, conn));
    let receiving = pin!(reader.read_head(conn, head_request, None, response));
    match select(sending, receiving).await {
        Either::Left((Ok(()), receiving)) => rt::within(spec.response_timeout, receiving)
            .await
            .unwrap_or(Err(ProxyError::upstream(ErrorKind::UpstreamTimeout))),
        Either::Left((Err(e), _)) if e.side != Side::Upstream => Err(e),
        Either::Left((Err(e), receiving)) => {
            // The upstream stopped reading: it may have answered already.
            rt::within(spec.response_timeout, receiving)
                .await
                .unwrap_or(Err(e))
                .map_err(|_| ProxyError {
                    retryable: false,
                    ..e
                })
        }
        Either::Right((answer, _)) => answer,
    }
}

/// Streams the rest of the request body from the client to the upstream.
async fn stream_body<D: Downstream>(
    request: &mut Request,
    down: &mut D,
    conn: &UpstreamConn,
) -> Result<(), ProxyError> {
    while !request.body_done {
        down.fill_body().await?;
        request.pull_buffered(down)?;
        upstream::send(conn, &mut request.bytes, false)
            .await
            .map_err(|e| ProxyError {
                retryable: false,
                ..e
            })?;
    }
    Ok(())
}

/// Streams the response body from the upstream to the client, one buffer at a time.
async fn relay_response<D: Downstream>(
    reader: &mut ResponseReader,
    conn: &UpstreamConn,
    down: &mut D,
    body_timeout: std::time::Duration,
) -> Result<(), ProxyError> {
    loop {
        if reader.take_body(|data| down.push_body(data))? {
            down.end_body()?;
            return down.flush().await;
        }
        if down.pending() > 0 {
            down.flush().await?;
        }
        reader.fill(conn, body_timeout).await?;
    }
}
