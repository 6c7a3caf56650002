//! A gRPC test origin (service `test.Echo` on tonic, plaintext h2c) and a gRPC client for it.
//!
//! There is no protoc in this environment, so the messages are hand-written prost structs and the
//! service glue is written by hand in the shape tonic-build generates: the server dispatches on
//! the request path to `tonic::server::Grpc` with the prost codec, and the client drives
//! `tonic::client::Grpc` over a `Channel` with the method's path.
//!
//! The origin binds `127.0.0.1:0` before `start()` returns (the kernel queues connections until
//! its thread accepts them), serves from its own thread and tokio runtime, and stops when dropped.
//! Every client wait is bounded: the channel has connect and request timeouts, and every read of a
//! response body is wrapped in a timeout too (the channel's request timeout ends at the response
//! headers). A wait that runs out on the client side is reported as `Code::Cancelled` (as tonic's
//! own channel timeout does), never as a status a test asserts on.

use std::convert::Infallible;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::codegen::http::{self, HeaderMap, HeaderValue};
use tonic::codegen::{Body, BoxFuture, BoxStream, Context, Poll, Service, StdError};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status, Streaming};

/// Bound for one step of a call (connect, response headers, one message).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound for a whole test body run by `run`.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `Drop` of the origin waits for its thread to finish.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Replies sent by `ServerStream`.
pub const STREAM_REPLIES: usize = 5;
/// The message of every status the origin fails with on purpose.
pub const FAIL_MESSAGE: &str = "failed on purpose";

const SERVICE: &str = "test.Echo";
const UNARY: &str = "/test.Echo/Unary";
const SERVER_STREAM: &str = "/test.Echo/ServerStream";
const CLIENT_STREAM: &str = "/test.Echo/ClientStream";
const BIDI: &str = "/test.Echo/Bidi";

// ---------------------------------------------------------------------------------------------
// Messages (what protoc would generate from test.proto)
// ---------------------------------------------------------------------------------------------

/// `message EchoRequest { string message = 1; int32 fail_code = 2; uint64 delay_ms = 3;
/// bool trailers_only = 4; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
    /// Non-zero: the call fails with this gRPC code and `FAIL_MESSAGE`.
    #[prost(int32, tag = "2")]
    pub fail_code: i32,
    /// The origin waits this long before answering `Unary`.
    #[prost(uint64, tag = "3")]
    pub delay_ms: u64,
    /// With `fail_code`, `Unary` fails with a trailers-only response (one HEADERS frame carrying
    /// grpc-status, END_STREAM); without it, with response headers and then the status in
    /// trailers. Both are legal gRPC and a proxy must pass both.
    #[prost(bool, tag = "4")]
    pub trailers_only: bool,
}

impl EchoRequest {
    /// A request that just echoes `message`.
    pub fn echo(message: &str) -> EchoRequest {
        EchoRequest {
            message: message.to_owned(),
            ..EchoRequest::default()
        }
    }
}

/// `message EchoReply { string message = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub message: String,
}

fn reply(message: String) -> EchoReply {
    EchoReply { message }
}

fn failure(code: i32) -> Status {
    Status::new(Code::from(code), FAIL_MESSAGE)
}

// ---------------------------------------------------------------------------------------------
// Server glue (what tonic-build would generate for `service Echo`)
// ---------------------------------------------------------------------------------------------

/// What the origin observed, shared with the test's handle.
#[derive(Default)]
struct Seen {
    /// Calls to a `test.Echo` method, counted when dispatched (so before the response is sent:
    /// once a client has its answer, the call is counted).
    calls: AtomicUsize,
    /// The request headers of every `test.Echo` call, in dispatch order.
    headers: Mutex<Vec<HeaderMap>>,
}

#[derive(Clone)]
struct EchoServer {
    seen: Arc<Seen>,
}

impl tonic::server::NamedService for EchoServer {
    const NAME: &'static str = SERVICE;
}

impl<B> Service<http::Request<B>> for EchoServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_owned();
        if [UNARY, SERVER_STREAM, CLIENT_STREAM, BIDI].contains(&path.as_str()) {
            self.seen.calls.fetch_add(1, Ordering::SeqCst);
            lock(&self.seen.headers).push(req.headers().clone());
        }
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            let res = match path.as_str() {
                // A unary response and a one-message server-streaming response are the same bytes
                // on the wire. Unary goes through the streaming glue because `Grpc::unary` can only
                // fail trailers-only, and the tests need the other shape too (headers, then the
                // status in trailers).
                UNARY => grpc.server_streaming(UnarySvc, req).await,
                SERVER_STREAM => grpc.server_streaming(ServerStreamSvc, req).await,
                CLIENT_STREAM => grpc.client_streaming(ClientStreamSvc, req).await,
                BIDI => grpc.streaming(BidiSvc, req).await,
                _ => Status::unimplemented(format!("no method {path}")).into_http(),
            };
            Ok(with_echo_trailer(res))
        })
    }
}

/// Adds the custom trailer `x-echo-trailer: 1` to every response that has trailers, so a test
/// can see that trailers other than grpc-status reach the client. Trailers-only responses
/// (grpc-status already in the headers) are left as they are, so they stay one HEADERS frame.
fn with_echo_trailer(res: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    if res.headers().contains_key("grpc-status") {
        return res;
    }
    res.map(|body| {
        tonic::body::Body::new(body.map_frame(|mut frame| {
            if let Some(trailers) = frame.trailers_mut() {
                trailers.insert("x-echo-trailer", HeaderValue::from_static("1"));
            }
            frame
        }))
    })
}

/// `Unary`: waits `delay_ms`, then fails as asked or echoes, with response metadata `x-echo: 1`.
struct UnarySvc;

impl tonic::server::ServerStreamingService<EchoRequest> for UnarySvc {
    type Response = EchoReply;
    type ResponseStream = BoxStream<EchoReply>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<EchoRequest>) -> Self::Future {
        Box::pin(async move {
            let req = request.into_inner();
            if req.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(req.delay_ms)).await;
            }
            let only: BoxStream<EchoReply> = if req.fail_code != 0 {
                if req.trailers_only {
                    return Err(failure(req.fail_code));
                }
                Box::pin(tokio_stream::once(Err(failure(req.fail_code))))
            } else {
                Box::pin(tokio_stream::once(Ok(reply(req.message))))
            };
            let mut res = Response::new(only);
            res.metadata_mut()
                .insert("x-echo", MetadataValue::from_static("1"));
            Ok(res)
        })
    }
}

/// `ServerStream`: `STREAM_REPLIES` replies "{message}-{i}", then OK, or the failure asked for
/// (after the replies: a status in trailers that follow messages).
struct ServerStreamSvc;

impl tonic::server::ServerStreamingService<EchoRequest> for ServerStreamSvc {
    type Response = EchoReply;
    type ResponseStream = BoxStream<EchoReply>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<EchoRequest>) -> Self::Future {
        Box::pin(async move {
            let req = request.into_inner();
            let mut items: Vec<Result<EchoReply, Status>> = (0..STREAM_REPLIES)
                .map(|i| Ok(reply(format!("{}-{i}", req.message))))
                .collect();
            if req.fail_code != 0 {
                items.push(Err(failure(req.fail_code)));
            }
            let stream: BoxStream<EchoReply> = Box::pin(tokio_stream::iter(items));
            Ok(Response::new(stream))
        })
    }
}

/// `ClientStream`: every message received, joined with ",".
struct ClientStreamSvc;

impl tonic::server::ClientStreamingService<EchoRequest> for ClientStreamSvc {
    type Response = EchoReply;
    type Future = BoxFuture<Response<EchoReply>, Status>;

    fn call(&mut self, request: Request<Streaming<EchoRequest>>) -> Self::Future {
        Box::pin(async move {
            let mut inbound = request.into_inner();
            let mut all = Vec::new();
            while let Some(m) = inbound.message().await? {
                all.push(m.message);
            }
            Ok(Response::new(reply(all.join(","))))
        })
    }
}

/// `Bidi`: each message echoed as soon as it arrives (nothing waits for the request to end), so
/// a client can alternate send and receive.
struct BidiSvc;

impl tonic::server::StreamingService<EchoRequest> for BidiSvc {
    type Response = EchoReply;
    type ResponseStream = BoxStream<EchoReply>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<EchoRequest>>) -> Self::Future {
        Box::pin(async move {
            let inbound = request.into_inner();
            let stream: BoxStream<EchoReply> =
                Box::pin(inbound.map(|m| m.map(|m| reply(m.message))));
            Ok(Response::new(stream))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The origin
// ---------------------------------------------------------------------------------------------

/// A tonic gRPC server for `test.Echo` on 127.0.0.1 (h2c, prior knowledge), ready when `start`
/// returns. Dropping it stops the server and closes every connection at once (it does not wait
/// for calls in progress, such as one sleeping its `delay_ms`).
pub struct GrpcOrigin {
    pub addr: SocketAddr,
    seen: Arc<Seen>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl GrpcOrigin {
    pub fn start() -> GrpcOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("GrpcOrigin: bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("GrpcOrigin: set_nonblocking");
        let addr = listener.local_addr().expect("GrpcOrigin: local_addr");
        let seen = Arc::new(Seen::default());
        let server = EchoServer { seen: seen.clone() };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("grpc-origin".to_owned())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("GrpcOrigin: tokio runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("GrpcOrigin: tokio listener");
                    let serve = Server::builder()
                        .serve_with_incoming(server, TcpListenerStream::new(listener));
                    tokio::select! {
                        result = serve => {
                            if let Err(e) = result {
                                eprintln!("support: gRPC origin stopped: {e}");
                            }
                        }
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime cancels every connection task and closes its socket, so a
                // call still in progress cannot hold the stop up (graceful shutdown would).
                drop(rt);
                let _ = done_tx.send(());
            })
            .expect("GrpcOrigin: spawn thread");
        GrpcOrigin {
            addr,
            seen,
            stop: Some(stop_tx),
            done: done_rx,
            thread: Some(thread),
        }
    }

    /// `test.Echo` calls dispatched so far (any method, any outcome).
    pub fn calls(&self) -> usize {
        self.seen.calls.load(Ordering::SeqCst)
    }

    /// The request headers of every `test.Echo` call so far, in dispatch order.
    pub fn request_headers(&self) -> Vec<HeaderMap> {
        lock(&self.seen.headers).clone()
    }
}

impl Drop for GrpcOrigin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(thread) = self.thread.take() else {
            return;
        };
        match self.done.recv_timeout(STOP_TIMEOUT) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if thread.join().is_err() && !std::thread::panicking() {
                    eprintln!("support: gRPC origin thread panicked");
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                eprintln!(
                    "support: gRPC origin thread did not stop within {STOP_TIMEOUT:?}; detaching it"
                );
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// Runs a test body on a new current-thread tokio runtime, bounded by `TEST_TIMEOUT`.
pub fn run<F: Future>(body: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("test tokio runtime");
    rt.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, body)
            .await
            .unwrap_or_else(|_| panic!("gRPC test did not finish within {TEST_TIMEOUT:?}"))
    })
}

/// Awaits `fut` for at most `STEP_TIMEOUT`; running out is `Code::Cancelled` naming `what`.
async fn bounded<T>(what: &str, fut: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    tokio::time::timeout(STEP_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| {
            Err(Status::cancelled(format!(
                "test client gave up waiting {STEP_TIMEOUT:?} for {what}"
            )))
        })
}

/// The client side encodes requests and decodes replies.
fn client_codec() -> tonic_prost::ProstCodec<EchoRequest, EchoReply> {
    tonic_prost::ProstCodec::default()
}

/// A `test.Echo` client over one h2c channel (HTTP/2 prior knowledge, as gRPC clients speak to
/// a plaintext port). Cloning it shares the channel: concurrent calls become streams on it.
#[derive(Clone)]
pub struct GrpcClient {
    inner: tonic::client::Grpc<Channel>,
}

impl GrpcClient {
    /// Connects now (not lazily), so a refused connection shows here rather than in a call.
    pub async fn connect(addr: SocketAddr) -> Result<GrpcClient, tonic::transport::Error> {
        let endpoint = Channel::from_shared(format!("http://{addr}"))
            .expect("an http://ip:port URI is valid")
            .connect_timeout(STEP_TIMEOUT)
            .timeout(STEP_TIMEOUT);
        let channel = match tokio::time::timeout(STEP_TIMEOUT, endpoint.connect()).await {
            Ok(channel) => channel?,
            Err(_) => panic!("GrpcClient: connecting to {addr} took over {STEP_TIMEOUT:?}"),
        };
        Ok(GrpcClient {
            inner: tonic::client::Grpc::new(channel),
        })
    }

    async fn ready(&mut self) -> Result<(), Status> {
        bounded("the channel to be ready", async {
            self.inner
                .ready()
                .await
                .map_err(|e| Status::unknown(format!("channel was not ready: {e}")))
        })
        .await
    }

    /// `Unary`: the whole response, so a test can read its metadata (headers and trailers
    /// merged, as tonic does for unary calls).
    pub async fn unary(&mut self, req: EchoRequest) -> Result<Response<EchoReply>, Status> {
        self.ready().await?;
        let path = http::uri::PathAndQuery::from_static(UNARY);
        let codec = client_codec();
        // The unary future reads the response to its trailers, so one bound covers it all.
        bounded(
            "the unary response",
            self.inner.unary(Request::new(req), path, codec),
        )
        .await
    }

    /// `ServerStream`: every reply until the stream ends, or the status it ended with.
    pub async fn server_stream(&mut self, req: EchoRequest) -> Result<Vec<String>, Status> {
        let (replies, end) = self.server_stream_until_end(req).await?;
        end.map(|()| replies)
    }

    /// `ServerStream`: the replies received, and how the stream ended (OK, or its status), so a
    /// test can check messages that came before a failure. The outer error is a failure before
    /// any message (including a trailers-only response).
    pub async fn server_stream_until_end(
        &mut self,
        req: EchoRequest,
    ) -> Result<(Vec<String>, Result<(), Status>), Status> {
        self.ready().await?;
        let path = http::uri::PathAndQuery::from_static(SERVER_STREAM);
        let codec = client_codec();
        let mut stream = bounded(
            "the server-streaming response headers",
            self.inner.server_streaming(Request::new(req), path, codec),
        )
        .await?
        .into_inner();
        let mut replies = Vec::new();
        loop {
            match bounded("a server-streaming reply", stream.message()).await {
                Ok(Some(m)) => replies.push(m.message),
                Ok(None) => return Ok((replies, Ok(()))),
                Err(status) => return Ok((replies, Err(status))),
            }
        }
    }

    /// `ClientStream`: sends every message of `messages`, then returns the joined reply.
    pub async fn client_stream(&mut self, messages: &[&str]) -> Result<String, Status> {
        self.ready().await?;
        let path = http::uri::PathAndQuery::from_static(CLIENT_STREAM);
        let codec = client_codec();
        let requests: Vec<EchoRequest> = messages.iter().map(|m| EchoRequest::echo(m)).collect();
        let outbound = tokio_stream::iter(requests);
        let res = bounded(
            "the client-streaming response",
            self.inner
                .client_streaming(Request::new(outbound), path, codec),
        )
        .await?;
        Ok(res.into_inner().message)
    }

    /// `Bidi`: opens the call with `first` already queued, and returns once the response headers
    /// are in. (Queuing the first message before the call means opening it does not depend on
    /// response headers arriving before any request message.)
    pub async fn bidi(&mut self, first: &str) -> Result<BidiCall, Status> {
        self.ready().await?;
        let path = http::uri::PathAndQuery::from_static(BIDI);
        let codec = client_codec();
        let (tx, rx) = tokio::sync::mpsc::channel::<EchoRequest>(16);
        tx.send(EchoRequest::echo(first))
            .await
            .expect("the receiver is held here");
        let inbound = bounded(
            "the bidi response headers",
            self.inner
                .streaming(Request::new(ReceiverStream::new(rx)), path, codec),
        )
        .await?
        .into_inner();
        Ok(BidiCall {
            tx: Some(tx),
            inbound,
        })
    }
}

/// An open `Bidi` call: send and receive in any order; `finish` ends the request side.
pub struct BidiCall {
    tx: Option<tokio::sync::mpsc::Sender<EchoRequest>>,
    inbound: Streaming<EchoReply>,
}

impl BidiCall {
    /// Queues one message for sending.
    pub async fn send(&mut self, message: &str) -> Result<(), Status> {
        let tx = self.tx.as_ref().expect("send after finish");
        bounded("room to send a bidi message", async {
            tx.send(EchoRequest::echo(message))
                .await
                .map_err(|_| Status::unknown("the bidi request stream is gone"))
        })
        .await
    }

    /// The next reply, `None` once the call ended OK, or the status it ended with.
    pub async fn recv(&mut self) -> Result<Option<String>, Status> {
        let next = bounded("a bidi reply", self.inbound.message()).await?;
        Ok(next.map(|m| m.message))
    }

    /// Ends the request side, then reads to the end: the replies still to come, or the status
    /// the call ended with.
    pub async fn finish(mut self) -> Result<Vec<String>, Status> {
        self.tx = None;
        let mut rest = Vec::new();
        while let Some(m) = self.recv().await? {
            rest.push(m);
        }
        Ok(rest)
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/2 view of a unary call
// ---------------------------------------------------------------------------------------------

/// How a unary response looked on the wire, seen with a bare h2 client (tonic hides it).
#[derive(Debug)]
pub struct WireResponse {
    pub status: u16,
    pub headers: HeaderMap,
    /// The response HEADERS frame ended the stream: a trailers-only response.
    pub headers_ended_stream: bool,
    /// DATA bytes received (gRPC length-prefixed messages).
    pub data_len: usize,
    pub trailers: Option<HeaderMap>,
}

/// Sends one `Unary` call over a fresh h2c connection and reports the response's shape.
pub async fn unary_on_the_wire(addr: SocketAddr, req: &EchoRequest) -> WireResponse {
    bounded("a raw HTTP/2 unary call", async {
        let io = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| Status::unavailable(format!("connect {addr}: {e}")))?;
        let h2_err = |e: h2::Error| Status::internal(format!("h2: {e}"));
        let (send, conn) = h2::client::handshake(io).await.map_err(h2_err)?;
        // The connection task ends with the test's runtime.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut send = send.ready().await.map_err(h2_err)?;
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}{UNARY}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("a valid request head");
        let (response, mut body) = send.send_request(request, false).map_err(h2_err)?;
        // One uncompressed gRPC message: flag 0, 4-byte big-endian length, the prost bytes.
        let message = prost::Message::encode_to_vec(req);
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        body.send_data(framed.into(), true).map_err(h2_err)?;
        let (parts, mut recv) = response.await.map_err(h2_err)?.into_parts();
        let headers_ended_stream = recv.is_end_stream();
        let mut data_len = 0;
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(h2_err)?;
            data_len += chunk.len();
            let _ = recv.flow_control().release_capacity(chunk.len());
        }
        let trailers = recv.trailers().await.map_err(h2_err)?;
        Ok(WireResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            headers_ended_stream,
            data_len,
            trailers,
        })
    })
    .await
    .unwrap_or_else(|s| panic!("raw unary call to {addr}: {s:?}"))
}
