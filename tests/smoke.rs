//! A first end-to-end check: a request through the gateway reaches the upstream and back.

mod support;

use support::client::HttpClient;
use support::gateway::{TestGateway, simple_config};
use support::upstream::HttpUpstream;

#[test]
fn get_through_the_gateway() {
    let up = HttpUpstream::builder().name("v1").start();
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"));
    let mut client = HttpClient::connect(gw.addr).unwrap();
    for _ in 0..3 {
        let resp = client.get("/hello", "example.com").unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), "v1\n");
    }
    let reqs = up.wait_requests(3, std::time::Duration::from_secs(5));
    assert_eq!(reqs[0].path, "/hello");
    assert_eq!(reqs[0].header("host"), Some("example.com"));
    assert_eq!(reqs[0].header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(reqs[0].header("x-forwarded-proto"), Some("http"));
    assert_eq!(up.accepts(), 1, "the upstream connection is reused");
}
