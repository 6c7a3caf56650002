//! Proves the upstream side: exact smooth weighted round-robin, per-core connection reuse (and
//! its absence with max_idle_per_core 0), failover past refused endpoints, and the statuses for
//! failed upstreams: 502 (reset before the head), 503 (refused or timed-out connects), 504
//! (response timeout), and a reset mid-response that is never passed off as complete.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::client::{HttpClient, raw_exchange};
use support::gateway::{TestGateway, simple_config};
use support::harness::{T, assert_no_complete_success, exchange};
use support::upstream::{BlackholeUpstream, HttpUpstream, RawUpstream, Reply, closed_port};

const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";

/// Upstreams named "u0", "u1", ... behind one worker with the given weights.
fn weighted(weights: &[u32]) -> (Vec<HttpUpstream>, TestGateway) {
    let ups: Vec<HttpUpstream> = (0..weights.len())
        .map(|i| HttpUpstream::builder().name(format!("u{i}")).start())
        .collect();
    let eps: Vec<(SocketAddr, u32)> = ups.iter().map(|u| u.addr()).zip(weights.to_vec()).collect();
    let gw = TestGateway::start(&simple_config(&eps, 1, "", "{}"));
    (ups, gw)
}

/// The upstream index that served each of `n` sequential requests on one keep-alive connection.
fn picks(gw: &TestGateway, n: usize) -> Vec<usize> {
    let mut c = HttpClient::connect(gw.addr).expect("connect");
    (0..n)
        .map(|i| {
            let r = c
                .get("/", "a")
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(r.status, 200);
            let name = r.header("x-upstream").expect("x-upstream header");
            name[1..].parse().expect("upstream index")
        })
        .collect()
}

/// Asserts that every window of `sum(weights)` consecutive picks holds each upstream exactly
/// its weight's times.
fn assert_every_window_is_exact(picks: &[usize], weights: &[u32]) {
    let period: u32 = weights.iter().sum();
    for (start, window) in picks.windows(period as usize).enumerate() {
        let mut counts = vec![0u32; weights.len()];
        for &p in window {
            counts[p] += 1;
        }
        assert_eq!(
            counts, weights,
            "window starting at request {start} of {picks:?}"
        );
    }
}

#[test]
fn smooth_wrr_3_1_gives_exactly_3_to_1_in_every_window_of_4() {
    let (_ups, gw) = weighted(&[3, 1]);
    let p = picks(&gw, 8);
    assert_every_window_is_exact(&p, &[3, 1]);
    // Smooth: B is never picked twice in a row, A never four times in a row.
    assert!(!p.windows(2).any(|w| w == [1, 1]), "{p:?}");
}

#[test]
fn smooth_wrr_2_3_5_gives_exact_shares_in_every_window_of_10() {
    let (_ups, gw) = weighted(&[2, 3, 5]);
    let p = picks(&gw, 30);
    assert_every_window_is_exact(&p, &[2, 3, 5]);
    assert!(!p.windows(3).any(|w| w == [2, 2, 2]), "not bursty: {p:?}");
}

#[test]
fn sequential_requests_reuse_one_upstream_connection() {
    let up = HttpUpstream::builder().start();
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"));
    let n = 5;
    let mut c = HttpClient::connect(gw.addr).expect("connect");
    for _ in 0..n {
        assert_eq!(c.get("/", "a").expect("request").status, 200);
    }
    assert_eq!(up.accepts(), 1, "one upstream connection for {n} requests");
    let ep = gw.endpoint("backend", up.addr());
    assert_eq!(
        (
            ep.upstream_cx_total.get(),
            ep.upstream_cx_reused.get(),
            ep.upstream_rq_total.get()
        ),
        (1, n - 1, n),
        "{ep:?}"
    );
    assert!(up.wait_requests(5, T).iter().all(|r| r.conn_id == 0));
}

#[test]
fn sequential_clients_share_the_pooled_upstream_connection() {
    let up = HttpUpstream::builder().start();
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"));
    for client in 0..3 {
        let mut c = HttpClient::connect(gw.addr).expect("connect");
        for _ in 0..2 {
            let r = c
                .get("/", "a")
                .unwrap_or_else(|e| panic!("client {client}: {e}"));
            assert_eq!(r.status, 200);
        }
    }
    assert_eq!(up.accepts(), 1, "three clients, one upstream connection");
    let ep = gw.endpoint("backend", up.addr());
    assert_eq!(
        (ep.upstream_cx_total.get(), ep.upstream_cx_reused.get()),
        (1, 5),
        "{ep:?}"
    );
}

#[test]
fn max_idle_per_core_zero_opens_a_connection_per_request() {
    let up = HttpUpstream::builder().start();
    let cfg = simple_config(&[(up.addr(), 1)], 1, "    max_idle_per_core: 0", "{}");
    let gw = TestGateway::start(&cfg);
    let n = 4;
    let mut c = HttpClient::connect(gw.addr).expect("connect");
    for _ in 0..n {
        assert_eq!(c.get("/", "a").expect("request").status, 200);
    }
    assert_eq!(up.accepts(), n as usize);
    let ep = gw.endpoint("backend", up.addr());
    assert_eq!(
        (ep.upstream_cx_total.get(), ep.upstream_cx_reused.get()),
        (n, 0),
        "{ep:?}"
    );
}

#[test]
fn refused_first_endpoint_fails_over_to_the_second() {
    let dead = closed_port();
    let up = HttpUpstream::builder().name("alive").start();
    let gw = TestGateway::start(&simple_config(&[(dead, 1), (up.addr(), 1)], 1, "", "{}"));
    let mut c = HttpClient::connect(gw.addr).expect("connect");
    for i in 0..4 {
        let r = c
            .get("/", "a")
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "alive\n"),
            "request {i}"
        );
    }
    let failed = gw.endpoint("backend", dead);
    assert!(failed.upstream_cx_connect_fail.get() >= 1, "{failed:?}");
    assert_eq!(failed.upstream_cx_total.get(), 0);
    assert_eq!(up.request_count(), 4);
}

#[test]
fn every_endpoint_refusing_is_503() {
    let (a, b) = (closed_port(), closed_port());
    let gw = TestGateway::start(&simple_config(&[(a, 1), (b, 1)], 1, "", "{}"));
    let (r, _, _) = exchange(gw.addr, GET);
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(gw.endpoint("backend", a).upstream_cx_connect_fail.get(), 1);
    assert_eq!(gw.endpoint("backend", b).upstream_cx_connect_fail.get(), 1);
}

#[test]
fn connect_timeout_is_503() {
    let hole = BlackholeUpstream::start();
    assert!(
        hole.is_blackholed(),
        "test setup: the kernel kept accepting connections to the black hole"
    );
    let cfg = simple_config(&[(hole.addr(), 1)], 1, "", "{}")
        .replace("connect_timeout: 500ms", "connect_timeout: 200ms");
    let gw = TestGateway::start(&cfg);
    let (r, _, took) = exchange(gw.addr, GET);
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        took >= Duration::from_millis(180) && took < Duration::from_secs(3),
        "answered after {took:?}, expected about the 200ms connect timeout"
    );
    assert_eq!(
        gw.endpoint("backend", hole.addr())
            .upstream_cx_connect_fail
            .get(),
        1
    );
}

#[test]
fn upstream_reset_before_the_response_head_is_502() {
    let up = RawUpstream::start(|conn| {
        if conn.read_head().is_some() {
            conn.reset();
        }
    });
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"));
    let (r, _, _) = exchange(gw.addr, GET);
    assert_eq!(r.status, 502, "{r:?}");
    assert!(up.script_panics().is_empty(), "{:?}", up.script_panics());
}

#[test]
fn no_response_within_response_timeout_is_504() {
    let up = HttpUpstream::builder()
        .route(
            "/slow",
            Reply::Delay {
                delay: Duration::from_secs(3),
                body: "late",
            },
        )
        .start();
    let extra = "    response_timeout: 300ms";
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, extra, "{}"));
    let (r, _, took) = exchange(gw.addr, b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_secs(2),
        "answered after {took:?}, expected about the 300ms response timeout"
    );
}

#[test]
fn upstream_reset_mid_response_closes_the_client_without_a_complete_body() {
    let up = RawUpstream::start(|conn| {
        if conn.read_head().is_some() {
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
            conn.reset();
        }
    });
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"));
    let got = raw_exchange(gw.addr, GET, T);
    assert_no_complete_success(&got, "upstream reset after 10 of 1000 body bytes");
    if let Ok(rs) = got.try_responses() {
        assert!(rs.iter().all(|r| r.body.len() < 1000), "{:?}", got.text());
    }
}

/// A keep-alive upstream that closes each connection right after its first response, as an
/// upstream with a short idle timeout does; `closed` opens once it has.
fn closes_after_one_response(closed: support::harness::Gate) -> RawUpstream {
    RawUpstream::start(move |conn| {
        if conn.read_request().is_some() {
            conn.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            conn.close();
            closed.open();
        }
    })
}

/// A gateway whose only pooled upstream connection has just been closed by the upstream.
fn pooled_connection_closed_by_upstream() -> (RawUpstream, TestGateway) {
    let closed = support::harness::Gate::new();
    let up = closes_after_one_response(closed.clone());
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"));
    let (first, _c1, _) = exchange(gw.addr, GET);
    assert_eq!(first.status, 200);
    assert!(closed.wait(T), "the upstream closed its connection");
    (up, gw)
}

#[test]
fn a_pooled_connection_the_upstream_closed_while_idle_is_not_used() {
    let (up, gw) = pooled_connection_closed_by_upstream();
    // The read armed on the idle connection saw the close: the GET goes out on a fresh
    // connection at once, with no failed attempt and no retry.
    let (second, _c2, _) = exchange(gw.addr, GET);
    assert_eq!(second.status, 200);
    assert_eq!(second.body, b"ok");
    let stats = gw.endpoint("backend", up.addr());
    assert_eq!(
        (
            stats.upstream_cx_idle_closed.get(),
            stats.upstream_rq_retry.get(),
            stats.upstream_cx_reused.get()
        ),
        (1, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.upstream_cx_total.get(), 2, "{stats:?}");
    assert_eq!(up.accepts(), 2);
}

#[test]
fn idempotent_request_dropped_unanswered_on_a_pooled_connection_is_retried_once() {
    // The upstream closes its idle connection just as the next request arrives (the race every
    // keep-alive client meets): the request was never answered, so a GET is sent once more on
    // a fresh connection.
    let up = RawUpstream::start(|conn| {
        let first = conn.conn_id() == 0;
        let mut served = 0;
        while conn.read_request().is_some() {
            if first && served == 1 {
                conn.reset();
                return;
            }
            conn.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            served += 1;
        }
    });
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"));
    let (first, _c1, _) = exchange(gw.addr, GET);
    assert_eq!(first.status, 200);
    let (second, _c2, _) = exchange(gw.addr, GET);
    assert_eq!((second.status, second.body.as_slice()), (200, &b"ok"[..]));
    let stats = gw.endpoint("backend", up.addr());
    assert_eq!(stats.upstream_rq_retry.get(), 1, "{stats:?}");
    assert_eq!(stats.upstream_cx_reused.get(), 1, "{stats:?}");
    assert_eq!(stats.upstream_cx_total.get(), 2, "{stats:?}");
    assert_eq!(up.accepts(), 2);
}

#[test]
fn non_idempotent_request_never_goes_out_on_a_pooled_connection_the_upstream_closed() {
    let (up, gw) = pooled_connection_closed_by_upstream();
    // A POST cannot be repeated: the pooled connection is checked first, found closed, and a
    // new one opened instead.
    let post = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
    let (second, _c2, _) = exchange(gw.addr, post);
    assert_eq!(second.status, 200);
    let stats = gw.endpoint("backend", up.addr());
    assert_eq!(stats.upstream_rq_retry.get(), 0, "{stats:?}");
    assert_eq!(stats.upstream_cx_reused.get(), 0, "{stats:?}");
    assert_eq!(stats.upstream_cx_total.get(), 2, "{stats:?}");
}
