//! Proves gRPC through the gateway end to end: a tonic client speaking h2c to an `http2: true`
//! listener, proxied to a tonic origin over an HTTP/2 cluster, for every call shape (unary,
//! server, client and bidirectional streaming), statuses from the origin (after headers and
//! trailers-only), many calls at once on one connection, and the gateway's own grpc-status when
//! the upstream is dead (UNAVAILABLE) or too slow (DEADLINE_EXCEEDED).
//!
//! Each scenario is written once against a target address; `support_origin_answers_directly`
//! runs them client -> origin with no gateway, so a failure here through the gateway is the
//! gateway's, not the support code's.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::gateway::{CatchAll, TestGateway};
use support::grpc::{
    EchoRequest, FAIL_MESSAGE, GrpcClient, GrpcOrigin, STREAM_REPLIES, run, unary_on_the_wire,
};
use support::upstream::closed_port;
use tonic::Code;

/// Listener lines: plaintext HTTP/2 (h2c prior knowledge) next to HTTP/1.1.
const H2_LISTENER: &str = "    http2: true\n";
/// Cluster lines: speak HTTP/2 to the endpoints (gRPC needs it end to end for trailers).
const H2_CLUSTER: &str = "    protocol: http2\n";

/// One worker, one h2c listener, everything routed to `upstream` over HTTP/2.
fn gateway_to(upstream: SocketAddr, cluster_extra: &str) -> TestGateway {
    CatchAll::new(upstream)
        .listener("main", H2_LISTENER)
        .cluster("backend", &format!("{H2_CLUSTER}{cluster_extra}"))
        .start()
}

async fn client(target: SocketAddr) -> GrpcClient {
    GrpcClient::connect(target)
        .await
        .unwrap_or_else(|e| panic!("connect to {target}: {e:?}"))
}

fn failing(code: Code, trailers_only: bool) -> EchoRequest {
    EchoRequest {
        message: "doomed".to_owned(),
        fail_code: code as i32,
        trailers_only,
        ..EchoRequest::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios, each against `target` (the gateway, or the origin itself)
// ---------------------------------------------------------------------------------------------

/// One unary call: the message comes back, with the origin's response header and trailer, and
/// the origin saw exactly one call carrying what gRPC servers require (`te: trailers`, the gRPC
/// content type).
async fn unary_round_trip(target: SocketAddr, origin: &GrpcOrigin) {
    let before = origin.calls();
    let mut c = client(target).await;
    let res = c
        .unary(EchoRequest::echo("hello"))
        .await
        .expect("unary call");
    assert_eq!(res.get_ref().message, "hello");
    let md = res.metadata();
    assert_eq!(
        md.get("x-echo").map(|v| v.to_str().unwrap_or("?")),
        Some("1"),
        "the origin's response header is kept: {md:?}"
    );
    assert_eq!(
        md.get("x-echo-trailer").map(|v| v.to_str().unwrap_or("?")),
        Some("1"),
        "the origin's custom trailer is kept: {md:?}"
    );
    assert_eq!(
        origin.calls(),
        before + 1,
        "exactly one call reached the origin"
    );

    let headers = origin.request_headers();
    let seen = headers.last().expect("the origin recorded the call");
    assert_eq!(
        seen.get("te").map(|v| v.as_bytes()),
        Some(&b"trailers"[..]),
        "te: trailers reaches the origin (gRPC servers may refuse a request without it): {seen:?}"
    );
    let content_type = seen
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("?").to_owned())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/grpc"),
        "content-type {content_type:?} reaches the origin"
    );
}

/// Server streaming: all replies in order, then OK.
async fn server_streaming(target: SocketAddr) {
    let mut c = client(target).await;
    let replies = c
        .server_stream(EchoRequest::echo("s"))
        .await
        .expect("server stream ends OK");
    let expected: Vec<String> = (0..STREAM_REPLIES).map(|i| format!("s-{i}")).collect();
    assert_eq!(replies, expected);
}

/// Client streaming: every message reached the origin, in order, before its one reply.
async fn client_streaming(target: SocketAddr) {
    let mut c = client(target).await;
    let joined = c
        .client_stream(&["a", "b", "c", "d"])
        .await
        .expect("client stream");
    assert_eq!(joined, "a,b,c,d");
}

/// Bidirectional streaming, interleaved: each message's echo is received before the next is
/// sent, so a proxy that held either direction until its end would make a `recv` time out.
async fn bidi_interleaved(target: SocketAddr) {
    let mut c = client(target).await;
    let mut call = c.bidi("m0").await.expect("open bidi");
    for i in 0..10 {
        if i > 0 {
            call.send(&format!("m{i}")).await.expect("send");
        }
        let got = call
            .recv()
            .await
            .unwrap_or_else(|s| panic!("round {i}: {s:?}"));
        assert_eq!(got.as_deref(), Some(format!("m{i}").as_str()), "round {i}");
    }
    let rest = call.finish().await.expect("bidi ends OK");
    assert!(rest.is_empty(), "no reply beyond the 10 echoes: {rest:?}");
}

/// A non-OK status from the origin keeps its code and message: sent after response headers
/// (unary), and after messages (server streaming, whose replies must all arrive first).
async fn status_passes_through(target: SocketAddr) {
    let mut c = client(target).await;
    let status = c
        .unary(failing(Code::NotFound, false))
        .await
        .expect_err("the origin failed the call");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), FAIL_MESSAGE, "{status:?}");

    let (replies, end) = c
        .server_stream_until_end(failing(Code::ResourceExhausted, false))
        .await
        .expect("stream opens");
    assert_eq!(replies.len(), STREAM_REPLIES, "replies before the status");
    let status = end.expect_err("the stream ends with the origin's status");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), FAIL_MESSAGE, "{status:?}");
}

/// A trailers-only response (grpc-status in the only HEADERS frame) keeps its code and message;
/// the channel stays usable for the next call.
async fn trailers_only_passes_through(target: SocketAddr) {
    let mut c = client(target).await;
    for code in [Code::PermissionDenied, Code::FailedPrecondition] {
        let status = c
            .unary(failing(code, true))
            .await
            .expect_err("the origin failed the call");
        assert_eq!(status.code(), code, "{status:?}");
        assert_eq!(status.message(), FAIL_MESSAGE, "{status:?}");
    }
    let res = c
        .unary(EchoRequest::echo("after"))
        .await
        .expect("a call after trailers-only answers");
    assert_eq!(res.get_ref().message, "after");
}

/// Many unary calls at once on one channel (one HTTP/2 connection): every one answered with its
/// own message, each reaching the origin once.
async fn many_concurrent_unary(target: SocketAddr, origin: &GrpcOrigin) {
    const N: usize = 200;
    let before = origin.calls();
    let c = client(target).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..N {
        let mut c = c.clone();
        calls.spawn(async move {
            let msg = format!("call-{i}");
            let res = c.unary(EchoRequest::echo(&msg)).await;
            (msg, res.map(|r| r.into_inner().message))
        });
    }
    let mut ok = 0;
    while let Some(joined) = calls.join_next().await {
        let (msg, res) = joined.expect("call task");
        match res {
            Ok(got) => {
                assert_eq!(got, msg, "each call gets its own answer");
                ok += 1;
            }
            Err(status) => panic!("{msg}: {status:?}"),
        }
    }
    assert_eq!(ok, N);
    assert_eq!(
        origin.calls(),
        before + N,
        "each call reached the origin once"
    );
}

// ---------------------------------------------------------------------------------------------
// Self-test of the support code: no gateway
// ---------------------------------------------------------------------------------------------

#[test]
fn support_origin_answers_directly() {
    let origin = GrpcOrigin::start();
    let target = origin.addr;
    run(async {
        unary_round_trip(target, &origin).await;
        server_streaming(target).await;
        client_streaming(target).await;
        bidi_interleaved(target).await;
        status_passes_through(target).await;
        trailers_only_passes_through(target).await;
        many_concurrent_unary(target, &origin).await;

        // The delay the deadline test relies on is real: a slow call answers after it.
        let mut c = client(target).await;
        let start = Instant::now();
        let res = c
            .unary(EchoRequest {
                delay_ms: 300,
                ..EchoRequest::echo("slow")
            })
            .await
            .expect("slow call");
        assert_eq!(res.get_ref().message, "slow");
        assert!(start.elapsed() >= Duration::from_millis(300));
    });
}

/// The two failure shapes the status tests rely on really differ on the wire: `trailers_only`
/// gives one HEADERS frame carrying grpc-status that ends the stream; without it, headers, no
/// message, then grpc-status in trailers (with the custom trailer).
#[test]
fn support_origin_failure_shapes_differ() {
    let origin = GrpcOrigin::start();
    run(async {
        let only = unary_on_the_wire(origin.addr, &failing(Code::NotFound, true)).await;
        assert_eq!(only.status, 200, "{only:?}");
        assert!(only.headers_ended_stream, "{only:?}");
        assert_eq!(
            only.headers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
        assert!(only.trailers.is_none(), "{only:?}");

        let after = unary_on_the_wire(origin.addr, &failing(Code::NotFound, false)).await;
        assert_eq!(after.status, 200, "{after:?}");
        assert!(!after.headers_ended_stream, "{after:?}");
        assert!(!after.headers.contains_key("grpc-status"), "{after:?}");
        assert_eq!(after.data_len, 0, "{after:?}");
        let trailers = after.trailers.as_ref().expect("trailers");
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
        assert!(trailers.contains_key("x-echo-trailer"), "{after:?}");

        let ok = unary_on_the_wire(origin.addr, &EchoRequest::echo("hi")).await;
        assert!(!ok.headers_ended_stream && ok.data_len > 0, "{ok:?}");
        let trailers = ok.trailers.as_ref().expect("trailers");
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"0"[..])
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Through the gateway
// ---------------------------------------------------------------------------------------------

#[test]
fn unary_round_trip_through_gateway() {
    let origin = GrpcOrigin::start();
    let gw = gateway_to(origin.addr, "");
    run(unary_round_trip(gw.addr, &origin));
}

#[test]
fn server_streaming_through_gateway() {
    let origin = GrpcOrigin::start();
    let gw = gateway_to(origin.addr, "");
    run(server_streaming(gw.addr));
}

#[test]
fn client_streaming_through_gateway() {
    let origin = GrpcOrigin::start();
    let gw = gateway_to(origin.addr, "");
    run(client_streaming(gw.addr));
}

#[test]
fn bidi_interleaved_through_gateway() {
    let origin = GrpcOrigin::start();
    let gw = gateway_to(origin.addr, "");
    run(bidi_interleaved(gw.addr));
}

#[test]
fn origin_status_passes_through_gateway() {
    let origin = GrpcOrigin::start();
    let gw = gateway_to(origin.addr, "");
    run(status_passes_through(gw.addr));
}

#[test]
fn trailers_only_response_passes_through_gateway() {
    let origin = GrpcOrigin::start();
    let gw = gateway_to(origin.addr, "");
    run(trailers_only_passes_through(gw.addr));
}

#[test]
fn many_concurrent_unary_calls_through_gateway() {
    let origin = GrpcOrigin::start();
    let gw = gateway_to(origin.addr, "");
    run(many_concurrent_unary(gw.addr, &origin));
}

/// The status is the gateway's own grpc-status, not tonic's guess from an HTTP error status
/// (which it reports as "grpc-status header missing, mapped from HTTP status code ...").
fn assert_gateway_status(status: &tonic::Status, code: Code) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        !status.message().contains("grpc-status header missing"),
        "the gateway answers a gRPC request with grpc-status, not a bare HTTP error: {status:?}"
    );
}

#[test]
fn dead_upstream_is_unavailable() {
    let gw = gateway_to(closed_port(), "");
    run(async {
        let mut c = client(gw.addr).await;
        let status = c
            .unary(EchoRequest::echo("anyone?"))
            .await
            .expect_err("nothing listens upstream");
        assert_gateway_status(&status, Code::Unavailable);
    });
}

#[test]
fn slow_upstream_is_deadline_exceeded() {
    let origin = GrpcOrigin::start();
    let gw = gateway_to(origin.addr, "    response_timeout: 200ms\n");
    run(async {
        let mut c = client(gw.addr).await;
        let start = Instant::now();
        let status = c
            .unary(EchoRequest {
                delay_ms: 2000,
                ..EchoRequest::echo("too slow")
            })
            .await
            .expect_err("the gateway's response timeout ends the call");
        let took = start.elapsed();
        assert_gateway_status(&status, Code::DeadlineExceeded);
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_millis(1500),
            "DEADLINE_EXCEEDED after the 200ms response timeout, well before the origin's 2s: {took:?}"
        );
        assert_eq!(
            origin.calls(),
            1,
            "the call reached the origin before timing out"
        );
    });
}
