//! Proves the counters and latencies are merged across cores: every request is counted once by
//! the worker that served it, its latency lands in the merged histogram, and the admin /stats
//! endpoint reports both.

mod support;

use std::time::Duration;

use coregate::admin;
use support::client::{HttpClient, raw_exchange};
use support::gateway::{TestGateway, simple_config};
use support::harness::T;
use support::upstream::HttpUpstream;

#[test]
fn requests_and_latencies_are_merged_across_workers_and_served_by_admin() {
    let up = HttpUpstream::builder().name("up").start();
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 2, "", "{}"));
    let registry = gw.gateway.registry().clone();
    let admin = admin::start(
        "127.0.0.1:0".parse().unwrap(),
        registry.clone(),
        gw.gateway.published(),
    )
    .expect("admin listener");
    const CONNECTIONS: usize = 16;
    for _ in 0..CONNECTIONS {
        let mut c = HttpClient::connect(gw.addr).expect("connect");
        for _ in 0..2 {
            assert_eq!(c.get("/", "a").expect("request").status, 200);
        }
    }
    // A worker counts a request once its response is written, which can be just after the
    // client has read it.
    let deadline = std::time::Instant::now() + T;
    while gw.requests_per_worker().iter().sum::<u64>() < 2 * CONNECTIONS as u64
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    let per_worker = gw.requests_per_worker();
    assert_eq!(
        per_worker.iter().sum::<u64>(),
        2 * CONNECTIONS as u64,
        "{per_worker:?}"
    );

    let stats = raw_exchange(admin, b"GET /stats HTTP/1.1\r\nHost: admin\r\n\r\n", T);
    let text = stats.text();
    assert_eq!(stats.status(), Some(200), "{text}");
    assert!(text.contains("downstream.requests 32"), "{text}");
    assert!(text.contains("downstream.responses_2xx 32"), "{text}");
    assert!(
        text.contains(&format!(
            "cluster.backend.endpoint.{}.requests 32",
            up.addr()
        )),
        "{text}"
    );

    // Workers fold their latencies into the registry at least once a second and on exit.
    gw.shutdown(Duration::from_secs(1));
    let latency = registry.latency();
    assert_eq!(latency.count(), 2 * CONNECTIONS as u64);
    assert!(latency.quantile_us(0.5) > 0 && latency.quantile_us(0.5) < 1_000_000);
}
