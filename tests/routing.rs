//! Proves request routing end to end: the Host (or absolute-form authority) picks the virtual host
//! (exact, then longest wildcard suffix, then "*"), its routes are tried in order with prefix,
//! exact-path and method matching, and a request that matches nothing gets a 404 on a connection
//! that stays usable.

mod support;

use support::client::{Body, HttpClient};
use support::gateway::TestGateway;
use support::harness::{T, exchange};
use support::upstream::HttpUpstream;

/// Every cluster of the routing table; each is one upstream that answers with its own name.
const CLUSTERS: [&str; 8] = [
    "api", "exact", "get_only", "first", "second", "wild", "eu", "fallback",
];

const ROUTES: &str = r#"
workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: api
        domains: ["api.example.com"]
        routes:
          - match: { path: "/exact" }
            route: { cluster: exact }
          - match: { prefix: "/get-only", methods: [GET] }
            route: { cluster: get_only }
          - match: { prefix: "/first" }
            route: { cluster: first }
          - match: { prefix: "/first/second" }
            route: { cluster: second }
          - match: { prefix: "/" }
            route: { cluster: api }
      - name: wild
        domains: ["*.example.com"]
        routes:
          - match: { prefix: "/" }
            route: { cluster: wild }
      - name: eu
        domains: ["*.eu.example.com"]
        routes:
          - match: { prefix: "/" }
            route: { cluster: eu }
      - name: fallback
        domains: ["*"]
        routes:
          - match: { prefix: "/known" }
            route: { cluster: fallback }
clusters:
"#;

/// The gateway in front of one named upstream per cluster.
struct Routed {
    upstreams: Vec<HttpUpstream>,
    gw: TestGateway,
}

impl Routed {
    fn start() -> Routed {
        let upstreams: Vec<HttpUpstream> = CLUSTERS
            .iter()
            .map(|name| HttpUpstream::builder().name(*name).start())
            .collect();
        let mut yaml = ROUTES.to_string();
        for up in &upstreams {
            yaml.push_str(&format!(
                "  - name: {}\n    endpoints: [{{ address: \"{}\" }}]\n",
                up.name(),
                up.addr()
            ));
        }
        let gw = TestGateway::start(&yaml);
        Routed { upstreams, gw }
    }

    fn upstream(&self, name: &str) -> &HttpUpstream {
        self.upstreams
            .iter()
            .find(|u| u.name() == name)
            .expect("known upstream")
    }

    /// Which upstream answered `method path` with `Host: host` (a fresh connection each time).
    fn served_by(&self, method: &str, path: &str, host: &str) -> String {
        let mut c = HttpClient::connect(self.gw.addr).expect("connect");
        c.set_timeout(T);
        let r = c
            .request(method, path, &[("host", host)], Body::Empty)
            .unwrap_or_else(|e| panic!("{method} {path} (Host {host}): {e}"));
        assert_eq!(r.status, 200, "{method} {path} (Host {host}): {}", r.text());
        let name = r.header("x-upstream").unwrap_or("").to_string();
        assert_eq!(r.text(), format!("{name}\n"), "body names the upstream");
        name
    }
}

#[test]
fn exact_host_wins_case_insensitively_and_ignores_the_port() {
    let r = Routed::start();
    assert_eq!(r.served_by("GET", "/x", "api.example.com"), "api");
    assert_eq!(r.served_by("GET", "/x", "API.example.com:8080"), "api");
    assert_eq!(r.served_by("GET", "/x", "Api.Example.Com"), "api");
    let rec = r.upstream("api").wait_requests(3, T);
    assert_eq!(rec[1].header("host"), Some("API.example.com:8080"));
}

#[test]
fn longest_wildcard_suffix_wins_then_the_catch_all() {
    let r = Routed::start();
    assert_eq!(r.served_by("GET", "/", "www.example.com"), "wild");
    assert_eq!(r.served_by("GET", "/", "a.b.example.com"), "wild");
    assert_eq!(r.served_by("GET", "/", "paris.eu.example.com"), "eu");
    assert_eq!(r.served_by("GET", "/", "X.EU.Example.com:81"), "eu");
    // "*.example.com" names subdomains only: the bare domain falls through to "*".
    assert_eq!(r.served_by("GET", "/known", "example.com"), "fallback");
    assert_eq!(r.served_by("GET", "/known", "other.org"), "fallback");
}

#[test]
fn absolute_form_target_routes_by_its_authority() {
    let r = Routed::start();
    let (resp, _, _) = exchange(
        r.gw.addr,
        b"GET http://api.example.com/x?y=1 HTTP/1.1\r\nHost: other.org\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.text(), "api\n");
    let rec = r.upstream("api").wait_requests(1, T);
    assert_eq!(rec[0].path, "/x?y=1", "the upstream gets the origin form");
    assert_eq!(rec[0].header("host"), Some("api.example.com"));
}

#[test]
fn routes_are_tried_in_order_and_the_first_match_wins() {
    let r = Routed::start();
    let host = "api.example.com";
    assert_eq!(r.served_by("GET", "/first", host), "first");
    assert_eq!(r.served_by("GET", "/first/second/x", host), "first");
    assert_eq!(r.served_by("GET", "/other", host), "api");
    assert_eq!(r.upstream("second").request_count(), 0);
}

#[test]
fn exact_path_matches_only_that_path_and_prefix_matches_its_subtree() {
    let r = Routed::start();
    let host = "api.example.com";
    assert_eq!(r.served_by("GET", "/exact", host), "exact");
    assert_eq!(r.served_by("GET", "/exact?q=1", host), "exact");
    assert_eq!(r.served_by("GET", "/exact/more", host), "api");
    assert_eq!(r.served_by("GET", "/exactly", host), "api");
    assert_eq!(r.served_by("GET", "/firstly", host), "first");
}

#[test]
fn method_filter_lets_other_methods_fall_through() {
    let r = Routed::start();
    let host = "api.example.com";
    assert_eq!(r.served_by("GET", "/get-only/a", host), "get_only");
    assert_eq!(r.served_by("POST", "/get-only/a", host), "api");
    assert_eq!(r.served_by("DELETE", "/get-only", host), "api");
    let rec = r.upstream("api").wait_requests(2, T);
    assert_eq!(
        (rec[0].method.as_str(), rec[1].method.as_str()),
        ("POST", "DELETE")
    );
}

#[test]
fn no_matching_route_is_404_and_the_connection_stays_open() {
    let r = Routed::start();
    let (resp, mut c, _) = exchange(
        r.gw.addr,
        b"GET /nothing-here HTTP/1.1\r\nHost: other.org\r\n\r\n",
    );
    assert_eq!(resp.status, 404, "{resp:?}");
    assert!(
        resp.text().contains("no route"),
        "the 404 body says no route matched: {:?}",
        resp.text()
    );
    assert!(
        resp.body.len() < 200,
        "a short text body: {:?}",
        resp.text()
    );
    assert_ne!(resp.header("connection"), Some("close"));

    c.send(b"GET /known HTTP/1.1\r\nHost: other.org\r\n\r\n");
    let resp = c.read_response(T);
    assert_eq!((resp.status, resp.text().as_str()), (200, "fallback\n"));
    for up in &r.upstreams[..CLUSTERS.len() - 1] {
        assert_eq!(up.request_count(), 0, "{} got a request", up.name());
    }
}
