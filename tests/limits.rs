//! Proves the bounds that keep one client or one upstream from holding the gateway: a request
//! body over `max_request_body_bytes` is 413 (announced or chunked, with a route override), a
//! body that trickles in is cut at `request_timeout` (408), an upstream that stops reading is
//! cut at the cluster's `send_timeout` (504), and a listener's `max_connections` holds over
//! every core (the excess closed at accept and counted).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::client::{RawClient, raw_exchange};
use support::gateway::{TestGateway, simple_config};
use support::harness::{Gate, T, Upload, expect_status_and_close};
use support::upstream::{HttpUpstream, RawUpstream};

/// One listener with `listener` lines added, routes `/big/` (with `route` added to its action)
/// and `/` to `up`, and `limits`.
fn gateway(up: &HttpUpstream, listener: &str, route: &str, limits: &str) -> TestGateway {
    TestGateway::start(&format!(
        "workers: 1
limits: {limits}
listeners:
  - name: main
    address: 127.0.0.1:0
{listener}
    virtual_hosts:
      - name: all
        domains: [\"*\"]
        routes:
          - match: {{ prefix: \"/big/\" }}
            route: {{ cluster: backend{route} }}
          - match: {{ prefix: \"/\" }}
            route: {{ cluster: backend }}
clusters:
  - name: backend
    endpoints: [{{ address: \"{}\" }}]
",
        up.addr()
    ))
}

#[test]
fn bodies_over_the_limit_are_413() {
    let up = HttpUpstream::builder().start();
    let gw = gateway(
        &up,
        "    max_request_body_bytes: 10",
        ", max_request_body_bytes: 100",
        "{}",
    );
    // Announced: refused before the upstream hears of it, and before 100 Continue.
    expect_status_and_close(
        gw.addr,
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
        413,
    );
    // Chunked: refused when the body passes the limit.
    expect_status_and_close(
        gw.addr,
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n",
        413,
    );
    assert_eq!(up.request_count(), 0);
    // At the limit, and under a route that allows more.
    let ok = raw_exchange(
        gw.addr,
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789",
        T,
    );
    assert_eq!(ok.status(), Some(200), "{:?}", ok.text());
    let big = format!(
        "POST /big/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{}",
        "b".repeat(100)
    );
    assert_eq!(raw_exchange(gw.addr, big.as_bytes(), T).status(), Some(200));
    let too_big = format!(
        "POST /big/x HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n{}",
        "b".repeat(101)
    );
    expect_status_and_close(gw.addr, too_big.as_bytes(), 413);
    assert_eq!(up.request_count(), 2);
}

/// One byte every 100 ms of a declared 1,000: each read is well within `body_timeout`, but the
/// whole request is not within `request_timeout`.
#[test]
fn a_body_that_trickles_in_is_cut_at_the_request_timeout() {
    let up = HttpUpstream::builder().start();
    let gw = gateway(&up, "", "", "{ body_timeout: 5s, request_timeout: 600ms }");
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    s.write_all(b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
        .expect("head");
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = loop {
        assert!(
            started.elapsed() < T,
            "still open: {:?}",
            String::from_utf8_lossy(&got)
        );
        let _ = s.write_all(b"x");
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break true,
        }
    };
    assert!(closed);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    // The upstream saw the request begin and never complete.
    let rec = up.wait_requests(1, T);
    assert!(!rec[0].body_complete, "{rec:?}");
}

/// An upstream that takes the request head and then never reads: the gateway gives up on the
/// write after the cluster's `send_timeout`, answers 504 and drops the upstream connection.
#[test]
fn an_upstream_that_stops_reading_is_cut_at_the_send_timeout() {
    let answered = Gate::new();
    let dropped = Gate::new();
    let (answered_in, dropped_out) = (answered.clone(), dropped.clone());
    let up = RawUpstream::start(move |conn| {
        if conn.read_head().is_none() {
            return;
        }
        // Reads nothing more until the client has its answer; then sees the gateway's close.
        answered_in.wait(T);
        let body = conn.read_exact(64 << 20);
        if body.len() < 64 << 20 {
            dropped_out.open();
        }
    });
    let gw = TestGateway::start(&simple_config(
        &[(up.addr(), 1)],
        1,
        "    send_timeout: 300ms",
        "{}",
    ));
    let head = "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 67108864\r\n\r\n".to_owned();
    let mut upload = Upload::start(gw.addr, head, 64 << 20);
    let answer = upload.response_head();
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer:?}");
    answered.open();
    assert!(dropped.wait(T), "the upstream connection was closed");
}

/// `max_connections: 2` over two workers: a third connection is closed at accept, whichever
/// core takes it, and counted; once one closes, a new one is served.
#[test]
fn max_connections_holds_for_the_listener_over_every_core() {
    let up = HttpUpstream::builder().start();
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 2, "", "{}").replace(
        "    address: 127.0.0.1:0\n",
        "    address: 127.0.0.1:0\n    max_connections: 2\n",
    ));
    let mut held: Vec<RawClient> = (0..2)
        .map(|_| {
            let mut c = RawClient::connect(gw.addr);
            c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(c.read_response(T).status, 200);
            c
        })
        .collect();
    for _ in 0..3 {
        let got = raw_exchange(gw.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", T);
        assert!(got.closed && got.bytes.is_empty(), "{:?}", got.text());
    }
    let registry = gw.gateway.registry();
    let overflow = registry.listener_total("main", |l| &l.downstream_cx_overflow);
    assert_eq!(overflow, 3);
    let text = registry.render();
    assert!(
        text.contains("listener.main.downstream_cx_active: 2\n"),
        "{text}"
    );
    assert!(
        text.contains("listener.main.downstream_cx_overflow: 3\n"),
        "{text}"
    );
    held.pop();
    let deadline = Instant::now() + T;
    loop {
        let got = raw_exchange(
            gw.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            T,
        );
        if got.status() == Some(200) {
            break;
        }
        // The closed client's connection is counted out when the gateway sees the close.
        assert!(Instant::now() < deadline, "never admitted again");
    }
}
