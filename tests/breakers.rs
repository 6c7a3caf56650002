//! Circuit breakers over real sockets: past a cluster's `max_requests` or `max_connections`
//! (this core's share), a request is answered 503 at once, never reaches the upstream, and is
//! counted; the breaker closes again when the load goes.

mod support;

use std::thread;
use std::time::Duration;

use support::client::raw_exchange;
use support::gateway::{CatchAll, TestGateway};
use support::harness::T;
use support::upstream::{HttpUpstream, Reply};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";

fn slow_upstream() -> HttpUpstream {
    HttpUpstream::builder()
        .route(
            "/",
            Reply::Delay {
                delay: Duration::from_millis(500),
                body: "slow",
            },
        )
        .start()
}

/// Sends `n` requests on their own connections from threads; returns their handles.
fn in_flight(gw: &TestGateway, n: usize) -> Vec<thread::JoinHandle<Option<u16>>> {
    (0..n)
        .map(|_| {
            let addr = gw.addr;
            thread::spawn(move || raw_exchange(addr, GET, T).status())
        })
        .collect()
}

fn overflow(
    gw: &TestGateway,
    field: fn(&coregate::stats::ClusterStats) -> &coregate::stats::Counter,
) -> u64 {
    gw.gateway.registry().cluster_total("backend", field)
}

#[test]
fn requests_past_max_requests_are_503_at_once() {
    let up = slow_upstream();
    let gw = CatchAll::new(up.addr())
        .cluster("backend", "    circuit_breakers: { max_requests: 2 }\n")
        .start();
    let first = in_flight(&gw, 2);
    up.wait_requests(2, T);
    for _ in 0..2 {
        let got = raw_exchange(gw.addr, GET, T);
        assert_eq!(got.status(), Some(503), "{}", got.text());
        assert!(got.text().contains("upstream overflow"), "{}", got.text());
    }
    for h in first {
        assert_eq!(h.join().expect("client"), Some(200));
    }
    assert_eq!(
        up.request_count(),
        2,
        "the refused requests never reached it"
    );
    assert_eq!(overflow(&gw, |c| &c.upstream_rq_pending_overflow), 2);
    // The load is gone: the breaker lets requests through again.
    assert_eq!(raw_exchange(gw.addr, GET, T).status(), Some(200));
}

#[test]
fn a_new_connection_past_max_connections_is_503() {
    let up = slow_upstream();
    let gw = CatchAll::new(up.addr())
        .cluster("backend", "    circuit_breakers: { max_connections: 1 }\n")
        .start();
    let first = in_flight(&gw, 1);
    up.wait_requests(1, T);
    // The one connection is busy: a second request would need another.
    assert_eq!(raw_exchange(gw.addr, GET, T).status(), Some(503));
    assert_eq!(overflow(&gw, |c| &c.upstream_cx_overflow), 1);
    for h in first {
        assert_eq!(h.join().expect("client"), Some(200));
    }
    // Back in the pool, the connection carries the next request.
    assert_eq!(raw_exchange(gw.addr, GET, T).status(), Some(200));
    assert_eq!(up.accepts(), 1, "one connection in all");
}
