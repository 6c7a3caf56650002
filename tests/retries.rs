//! Route retry policies over real sockets: a retried answer goes to another endpoint and never
//! to the same one, a per-try timeout moves a stuck attempt elsewhere, a request that is not
//! safe to repeat is not retried, and the retry budget caps retries against a failing cluster.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::client::raw_exchange;
use support::gateway::{TestGateway, retry_config};
use support::harness::T;
use support::upstream::{HttpUpstream, Reply};

fn status(reply: u16, body: &'static str) -> HttpUpstream {
    HttpUpstream::builder()
        .route("/", Reply::Status(reply, body))
        .start()
}

/// One worker, endpoints `a` and `b`, the route's `retry_policy` and cluster lines `extra`.
fn gateway(a: SocketAddr, b: SocketAddr, policy: &str, extra: &str) -> TestGateway {
    TestGateway::start(&retry_config(a, b, policy, extra, false))
}

fn send(gw: &TestGateway, method: &str) -> (Option<u16>, String) {
    let request = format!(
        "{method} / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let got = raw_exchange(gw.addr, request.as_bytes(), T);
    let body = got
        .responses()
        .first()
        .map(|r| r.text())
        .unwrap_or_default();
    (got.status(), body)
}

/// A good and a bad (503) endpoint behind a route that retries 5xx once.
fn good_and_bad() -> (HttpUpstream, HttpUpstream, TestGateway) {
    let (good, bad) = (status(200, "good"), status(503, "bad"));
    let policy = "{ retry_on: [5xx], num_retries: 1 }";
    let gw = gateway(good.addr(), bad.addr(), policy, "");
    (good, bad, gw)
}

#[test]
fn a_5xx_is_retried_on_the_other_endpoint_never_the_same() {
    let (good, bad, gw) = good_and_bad();
    for _ in 0..10 {
        assert_eq!(send(&gw, "GET"), (Some(200), "good".to_owned()));
    }
    // Each request reaches the bad endpoint at most once (a retry never goes back to it), and
    // every one it failed was retried.
    let failed = bad.request_count();
    assert!((1..=10).contains(&failed), "{failed}");
    assert_eq!(good.request_count(), 10);
    let retried = gw.endpoint("backend", bad.addr()).upstream_rq_retry.get();
    assert_eq!(retried, failed as u64);
}

#[test]
fn a_request_not_safe_to_repeat_is_not_retried() {
    let (good, bad, gw) = good_and_bad();
    let statuses: Vec<Option<u16>> = (0..2).map(|_| send(&gw, "POST").0).collect();
    assert!(statuses.contains(&Some(503)), "{statuses:?}");
    assert_eq!(
        bad.request_count() + good.request_count(),
        2,
        "nothing sent twice"
    );
}

#[test]
fn a_per_try_timeout_moves_a_stuck_attempt_elsewhere() {
    let good = status(200, "good");
    let stuck = HttpUpstream::builder()
        .route(
            "/",
            Reply::Delay {
                delay: Duration::from_secs(3),
                body: "late",
            },
        )
        .start();
    let policy = "{ retry_on: [gateway-error], num_retries: 1, per_try_timeout: 200ms }";
    let gw = gateway(good.addr(), stuck.addr(), policy, "");
    for _ in 0..4 {
        assert_eq!(send(&gw, "GET"), (Some(200), "good".to_owned()));
    }
    // At most once per request: a retry never goes back to the stuck endpoint.
    assert!((1..=4).contains(&stuck.request_count()));
}

#[test]
fn the_retry_budget_caps_retries_against_a_failing_cluster() {
    let (a, b) = (status(503, "a"), status(503, "b"));
    let no_budget = "    retry_budget: { budget_percent: 0, min_retry_concurrency: 0 }";
    let gw = gateway(
        a.addr(),
        b.addr(),
        "{ retry_on: [5xx], num_retries: 3 }",
        no_budget,
    );
    for _ in 0..6 {
        assert_eq!(send(&gw, "GET").0, Some(503));
    }
    assert_eq!(a.request_count() + b.request_count(), 6, "no retry at all");
    let overflow = gw
        .gateway
        .registry()
        .cluster_total("backend", |c| &c.upstream_rq_retry_overflow);
    assert_eq!(overflow, 6);
}

#[test]
fn past_max_retries_a_request_is_not_retried() {
    let (good, bad) = (status(200, "good"), status(503, "bad"));
    let gw = gateway(
        good.addr(),
        bad.addr(),
        "{ retry_on: [5xx], num_retries: 2 }",
        "    circuit_breakers: { max_retries: 0 }",
    );
    let statuses: Vec<Option<u16>> = (0..4).map(|_| send(&gw, "GET").0).collect();
    // Smooth WRR alternates: two of the four went to the bad endpoint, and stayed 503.
    assert_eq!(
        statuses.iter().filter(|s| **s == Some(503)).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(bad.request_count() + good.request_count(), 4, "no retry");
    let overflow = gw
        .gateway
        .registry()
        .cluster_total("backend", |c| &c.upstream_rq_retry_overflow);
    assert_eq!(overflow, 2);
}

#[test]
fn the_attempt_count_header_counts_the_tries() {
    let (good, bad) = (status(200, "good"), status(503, "bad"));
    let policy = "{ retry_on: [5xx], num_retries: 1 }";
    let yaml = retry_config(good.addr(), bad.addr(), policy, "", true);
    let gw = TestGateway::start(&yaml);
    for _ in 0..4 {
        let request = b"GET / HTTP/1.1\r\nHost: a.test\r\nx-envoy-attempt-count: 7\r\n\
                        Connection: close\r\n\r\n";
        assert_eq!(raw_exchange(gw.addr, request, T).status(), Some(200));
    }
    let counts = |up: &HttpUpstream| -> Vec<String> {
        up.requests()
            .iter()
            .map(|r| r.header_all("x-envoy-attempt-count").join(","))
            .collect()
    };
    // The client's value is replaced; every first try says 1, every retry 2.
    let (first, retried) = (counts(&bad), counts(&good));
    assert!(first.iter().all(|c| c == "1"), "{first:?}");
    assert_eq!(retried.iter().filter(|c| *c == "2").count(), first.len());
    assert_eq!(
        retried.iter().filter(|c| *c == "1").count(),
        4 - first.len()
    );
}
