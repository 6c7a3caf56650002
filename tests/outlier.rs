//! Passive outlier detection over real sockets: an endpoint that answers 503 in a row is
//! ejected on the core (the next requests all go to the other one), logged and counted, and
//! returns when its ejection time is over.

mod support;

use std::time::{Duration, Instant};

use support::client::raw_exchange;
use support::gateway::{TestGateway, simple_config};
use support::harness::T;
use support::upstream::{HttpUpstream, Reply};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";

#[test]
fn an_endpoint_failing_in_a_row_is_ejected_then_returns() {
    let good = HttpUpstream::builder()
        .route("/", Reply::Status(200, "good"))
        .start();
    let bad = HttpUpstream::builder()
        .route("/", Reply::Status(503, "bad"))
        .start();
    let outlier = "    outlier_detection:
      consecutive_5xx: 3
      base_ejection_time: 1s
      max_ejection_percent: 50";
    let endpoints = [(good.addr(), 1), (bad.addr(), 1)];
    let yaml = simple_config(&endpoints, 1, outlier, "{}");
    let gw = TestGateway::start(&yaml);
    // Alternating: the bad endpoint gets requests 2, 4 and 6, the third ejects it.
    let statuses: Vec<Option<u16>> = (0..12)
        .map(|_| raw_exchange(gw.addr, GET, T).status())
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == Some(503)).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(bad.request_count(), 3, "nothing after the ejection");
    let ep = gw.endpoint("backend", bad.addr());
    assert_eq!(ep.outlier_ejections_total.get(), 1);
    // Its ejection time over, it gets requests again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while bad.request_count() == 3 {
        assert!(Instant::now() < deadline, "never returned to rotation");
        raw_exchange(gw.addr, GET, T);
        std::thread::sleep(Duration::from_millis(50));
    }
}
