//! Proves the HTTP/1.1 details an edge gets judged on: no Content-Length on 204, an explicit
//! `Content-Length: 0` kept toward the upstream, a head that trickles in, 103 Early Hints passed
//! to HTTP/1.1 clients only, HTTP/1.2 served as 1.1 and HTTP/2.0 refused with 505 on an HTTP/1
//! connection, and trailers carried end to end when the client accepts them.

mod support;

use std::time::Duration;

use support::client::{RawClient, raw_exchange};
use support::gateway::{TestGateway, simple_config};
use support::harness::{T, expect_status_and_close};
use support::upstream::{HttpUpstream, RawUpstream};

fn behind(up: &RawUpstream) -> TestGateway {
    TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"))
}

#[test]
fn no_content_length_on_204_but_kept_on_304_and_head() {
    let up = RawUpstream::start(|conn| {
        while let Some(req) = conn.read_request() {
            let answer: &[u8] = match req.target.as_str() {
                "/204" => b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
                "/304" => b"HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n",
                _ => b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
            };
            conn.write(answer);
        }
    });
    let gw = behind(&up);
    let mut c = RawClient::connect(gw.addr);
    c.send(b"GET /204 HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read_response(T);
    assert_eq!(r.status, 204);
    assert_eq!(r.header("content-length"), None, "{:?}", r.headers);
    c.send(b"GET /304 HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read_response(T);
    assert_eq!((r.status, r.header("content-length")), (304, Some("12")));
    c.send(b"HEAD /200 HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read_head_response(T);
    assert_eq!((r.status, r.header("content-length")), (200, Some("12")));
}

#[test]
fn an_explicit_zero_content_length_reaches_the_upstream() {
    let up = HttpUpstream::builder().start();
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"));
    let got = raw_exchange(
        gw.addr,
        b"POST /empty HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        T,
    );
    assert_eq!(got.status(), Some(200), "{:?}", got.text());
    let rec = &up.wait_requests(1, T)[0];
    assert_eq!(rec.header("content-length"), Some("0"), "{:?}", rec.headers);
    // A request without any length stays without one.
    raw_exchange(
        gw.addr,
        b"POST /none HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        T,
    );
    let rec = &up.wait_requests(2, T)[1];
    assert_eq!(rec.header("content-length"), None, "{:?}", rec.headers);
}

#[test]
fn a_large_head_that_trickles_in_is_served() {
    let up = HttpUpstream::builder().start();
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"));
    let mut head = b"GET /trickle HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..60 {
        head.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "p".repeat(500)).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let mut c = RawClient::connect(gw.addr);
    for piece in head.chunks(97) {
        c.send(piece);
    }
    let r = c.read_response(T);
    assert_eq!(r.status, 200);
    let rec = &up.wait_requests(1, T)[0];
    assert_eq!(rec.header("x-pad-59").map(str::len), Some(500));
}

#[test]
fn early_hints_reach_http_1_1_clients_only() {
    let up = RawUpstream::start(|conn| {
        while conn.read_request().is_some() {
            conn.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n");
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let gw = behind(&up);
    let mut c = RawClient::connect(gw.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let hints = c.read_response(T);
    assert_eq!(hints.status, 103);
    assert_eq!(hints.header("link"), Some("</style.css>; rel=preload"));
    let r = c.read_response(T);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));

    let got = raw_exchange(gw.addr, b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", T);
    let responses = got.responses();
    assert_eq!(responses.len(), 1, "{:?}", got.text());
    assert_eq!(responses[0].status, 200);
}

#[test]
fn http_1_2_is_served_as_1_1_and_2_0_gets_505() {
    let up = HttpUpstream::builder().start();
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"));
    let mut c = RawClient::connect(gw.addr);
    c.send(b"GET /v HTTP/1.2\r\nHost: a\r\n\r\n");
    let r = c.read_response(T);
    assert_eq!(r.status, 200);
    assert!(!c.is_closed(Duration::from_millis(50)), "1.x keeps alive");
    let rec = &up.wait_requests(1, T)[0];
    assert_eq!(rec.version, "HTTP/1.1");

    expect_status_and_close(gw.addr, b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
    expect_status_and_close(gw.addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505);
    expect_status_and_close(gw.addr, b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400);
    assert_eq!(up.request_count(), 1);
}

/// A chunked response's trailers, for a client that sent `TE: trailers`: passed through as
/// trailers; for one that did not: dropped, body intact. Request trailers reach the upstream.
#[test]
fn trailers_pass_end_to_end_when_the_client_accepts_them() {
    let up = RawUpstream::start(|conn| {
        while let Some(req) = conn.read_request() {
            let te = req.header("te").unwrap_or("").to_owned();
            let seen: Vec<String> = req
                .trailers
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            let body = format!("te={te};trailers={}", seen.join(","));
            let answer = format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\ngrpc-status: 0\r\nContent-Length: 5\r\n\r\n",
                body.len()
            );
            conn.write(answer.as_bytes());
        }
    });
    let gw = behind(&up);
    let mut c = RawClient::connect(gw.addr);
    c.send(
        b"POST /t HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\n\r\n\
          2\r\nhi\r\n0\r\nX-Checksum: abc\r\nHost: evil\r\n\r\n",
    );
    let r = c.read_response(T);
    assert_eq!(r.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "te=trailers;trailers=x-checksum=abc",
        "the upstream got te: trailers and the request's forwardable trailers"
    );
    assert_eq!(
        r.trailers,
        vec![("grpc-status".to_owned(), "0".to_owned())],
        "trailers that describe the message are never passed on"
    );

    c.send(b"GET /t HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read_response(T);
    assert_eq!(String::from_utf8_lossy(&r.body), "te=;trailers=");
    assert!(r.trailers.is_empty(), "{:?}", r.trailers);
}
