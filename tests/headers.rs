//! Proves header handling across the proxy: hop-by-hop request and response headers (and those
//! named in Connection) are not forwarded, and Expect: 100-continue is answered (anything else
//! is 417). The identity headers are in trust.rs.

mod support;

use support::client::RawClient;
use support::gateway::{TestGateway, simple_config};
use support::harness::{T, exchange};
use support::upstream::{HttpUpstream, Reply, checksum};

const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "x-named-in-connection",
];

fn gateway(up: &HttpUpstream) -> TestGateway {
    TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"))
}

#[test]
fn hop_by_hop_request_headers_do_not_reach_the_upstream() {
    let up = HttpUpstream::builder().start();
    let gw = gateway(&up);
    let (r, _, _) = exchange(
        gw.addr,
        b"GET /h HTTP/1.1\r\nHost: a\r\n\
          Connection: keep-alive, X-Named-In-Connection\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          TE: deflate, gzip;q=0.5\r\n\
          Trailer: X-Checksum\r\n\
          Upgrade: websocket\r\n\
          X-Named-In-Connection: secret\r\n\
          X-End-To-End: kept\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let rec = &up.wait_requests(1, T)[0];
    for name in HOP_BY_HOP {
        assert_eq!(
            rec.header(name),
            None,
            "{name} reached the upstream: {:?}",
            rec.headers
        );
    }
    assert_eq!(rec.header("x-end-to-end"), Some("kept"));
}

#[test]
fn hop_by_hop_response_headers_do_not_reach_the_client() {
    let headers = [
        ("connection", "x-foo"),
        ("x-foo", "bar"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("upgrade", "h2c"),
        ("x-kept", "yes"),
    ];
    let up = HttpUpstream::builder()
        .route(
            "/custom",
            Reply::Custom {
                status: 200,
                headers: headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                body: b"custom".to_vec(),
            },
        )
        .start();
    let gw = gateway(&up);
    let (r, mut c, _) = exchange(gw.addr, b"GET /custom HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "custom"));
    for name in ["x-foo", "keep-alive", "proxy-connection", "upgrade"] {
        assert_eq!(r.header(name), None, "{name} reached the client: {r:?}");
    }
    assert!(
        r.header_all("connection")
            .iter()
            .all(|v| !v.to_ascii_lowercase().contains("x-foo")),
        "the upstream's Connection header reached the client: {r:?}"
    );
    assert_eq!(r.header("x-kept"), Some("yes"));
    // The proxy's own connection handling is unaffected: still keep-alive.
    c.send(b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.read_response(T).status, 200);
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    // The upstream reads the whole body before it answers, so this exchange does not depend on
    // relaying a response while the request body is still streaming (bodies.rs covers that).
    let up = HttpUpstream::builder().name("sink").start();
    let gw = gateway(&up);
    let mut c = RawClient::connect(gw.addr);
    c.send(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
    );
    let interim = c
        .try_read_response(T)
        .unwrap_or_else(|e| panic!("no 100 Continue before the body was sent: {e}"));
    assert_eq!(interim.status, 100, "{interim:?}");
    assert!(interim.headers.is_empty() && interim.body.is_empty());
    c.send(b"hello world");
    let r = c.read_response(T);
    assert_eq!((r.status, r.text().as_str()), (200, "sink\n"), "{r:?}");
    let rec = &up.wait_requests(1, T)[0];
    assert_eq!(rec.header("expect"), None, "the proxy consumed Expect");
    assert_eq!(
        (rec.body_len, rec.body_checksum),
        (11, checksum(b"hello world")),
        "the body reached the upstream"
    );
}

#[test]
fn unknown_expectation_is_417() {
    let up = HttpUpstream::builder().start();
    let gw = gateway(&up);
    let (r, _, _) = exchange(
        gw.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(r.status, 417, "{r:?}");
    assert!(!r.body.is_empty());
    assert_eq!(up.request_count(), 0);
}
