//! Route timeouts over real sockets: a route's `timeout` bounds the whole exchange (504 before a
//! response, a cut response after), its `idle_timeout` the upstream's pauses in a body; each is
//! counted apart from the cluster's response-head timeout.

mod support;

use std::time::Duration;

use coregate::stats::{ClusterStats, Counter};
use support::client::raw_exchange;
use support::gateway::{CatchAll, TestGateway};
use support::harness::T;
use support::upstream::{HttpUpstream, RawUpstream, Reply};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";

/// A gateway in front of `upstream` whose route has `options` (e.g. "timeout: 200ms").
fn gateway(upstream: std::net::SocketAddr, options: &str) -> TestGateway {
    let yaml = CatchAll::new(upstream).yaml().replace(
        "route: { cluster: backend }",
        &format!("route: {{ cluster: backend, {options} }}"),
    );
    TestGateway::start(&yaml)
}

fn cluster(gw: &TestGateway, field: fn(&ClusterStats) -> &Counter) -> u64 {
    gw.gateway.registry().cluster_total("backend", field)
}

/// An upstream that sends a head announcing 10 bytes, then 5 of them, then pauses for 3 s.
fn stalling() -> RawUpstream {
    RawUpstream::start(|conn| {
        if conn.read_head().is_some() {
            conn.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello");
            std::thread::sleep(Duration::from_secs(3));
        }
    })
}

#[test]
fn the_route_timeout_answers_504_before_a_response() {
    let up = HttpUpstream::builder()
        .route(
            "/",
            Reply::Delay {
                delay: Duration::from_secs(2),
                body: "late",
            },
        )
        .start();
    let gw = gateway(up.addr(), "timeout: 200ms");
    let got = raw_exchange(gw.addr, GET, T);
    assert_eq!(got.status(), Some(504), "{}", got.text());
    assert!(
        got.text().contains("upstream request timeout"),
        "{}",
        got.text()
    );
    assert_eq!(cluster(&gw, |c| &c.upstream_rq_route_timeout), 1);
    let ep = gw.endpoint("backend", up.addr());
    assert_eq!(
        ep.upstream_rq_timeout.get(),
        0,
        "not the response-head timeout"
    );
}

#[test]
fn the_route_timeout_cuts_a_response_under_way() {
    let up = stalling();
    let gw = gateway(up.addr(), "timeout: 300ms");
    let got = raw_exchange(gw.addr, GET, T);
    let responses = got.responses();
    assert_eq!(responses.len(), 1, "{}", got.text());
    assert!(
        !responses[0].complete,
        "a cut response is never passed off as whole"
    );
    assert_eq!(cluster(&gw, |c| &c.upstream_rq_route_timeout), 1);
}

#[test]
fn the_route_idle_timeout_cuts_a_paused_body() {
    let up = stalling();
    let gw = gateway(up.addr(), "idle_timeout: 200ms");
    let got = raw_exchange(gw.addr, GET, T);
    let responses = got.responses();
    assert_eq!(responses.len(), 1, "{}", got.text());
    assert!(!responses[0].complete);
    assert_eq!(responses[0].body, b"hello");
    assert_eq!(cluster(&gw, |c| &c.upstream_rq_idle_timeout), 1);
    assert_eq!(cluster(&gw, |c| &c.upstream_rq_route_timeout), 0);
}
