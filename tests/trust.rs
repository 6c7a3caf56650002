//! Proves what the gateway trusts of a client: request paths are normalised before routing and
//! forwarding (no `..` walks out of a prefix route), identity and scheme headers a client sends
//! are replaced unless its address is a configured trusted proxy, header names with
//! underscores are dropped, and a Host that is not a valid authority is a 400.

mod support;

use std::net::SocketAddr;

use support::client::raw_exchange;
use support::gateway::TestGateway;
use support::harness::{T, exchange, expect_status_and_close};
use support::upstream::{HttpUpstream, Recorded};

/// `/public/` goes to the `public` upstream, everything else to `private`; `listener` adds
/// lines to the listener.
fn split_gateway(listener: &str) -> (HttpUpstream, HttpUpstream, TestGateway) {
    let public = HttpUpstream::builder().name("public").start();
    let private = HttpUpstream::builder().name("private").start();
    let gw = TestGateway::start(&format!(
        "workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
{listener}
    virtual_hosts:
      - name: all
        domains: [\"*\"]
        routes:
          - match: {{ prefix: \"/public/\" }}
            route: {{ cluster: public }}
          - match: {{ prefix: \"/\" }}
            route: {{ cluster: private }}
clusters:
  - name: public
    endpoints: [{{ address: \"{}\" }}]
  - name: private
    endpoints: [{{ address: \"{}\" }}]
",
        public.addr(),
        private.addr()
    ));
    (public, private, gw)
}

/// Sends `GET {target}` on a fresh connection and returns the status and which upstream
/// answered.
fn get(addr: SocketAddr, target: &str) -> (u16, Option<String>) {
    let req = format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let got = raw_exchange(addr, req.as_bytes(), T);
    let r = got.responses().into_iter().next().expect("a response");
    (r.status, r.header("x-upstream").map(str::to_owned))
}

fn last(up: &HttpUpstream) -> Recorded {
    up.requests().pop().expect("a request reached the upstream")
}

#[test]
fn dot_segments_cannot_walk_out_of_a_prefix_route() {
    let (public, private, gw) = split_gateway("");
    for (target, forwarded) in [
        ("/public/../admin", "/admin"),
        ("/public/%2e%2e/admin", "/admin"),
        ("/public/%2E%2e/./admin?q=/../x", "/admin?q=/../x"),
        ("/public/a/../../admin", "/admin"),
    ] {
        assert_eq!(
            get(gw.addr, target),
            (200, Some("private".into())),
            "{target}"
        );
        assert_eq!(last(&private).path, forwarded, "{target}");
    }
    assert_eq!(
        get(gw.addr, "/public/a/./b/../c"),
        (200, Some("public".into()))
    );
    assert_eq!(last(&public).path, "/public/a/c");
    assert_eq!(
        get(gw.addr, "/public/%7euser"),
        (200, Some("public".into()))
    );
    assert_eq!(
        last(&public).path,
        "/public/~user",
        "unreserved characters are decoded"
    );
}

#[test]
fn targets_that_cannot_be_normalised_safely_are_400() {
    let (public, private, gw) = split_gateway("");
    for target in [
        "/public/..;/admin",
        "/public/.;x/admin",
        "/public/%2e%2e%2fadmin",
        "/public/a%5c..%5cadmin",
        "/public/a%00",
        "/public/%zz",
        "/public/a#frag",
        "/public\\..\\admin",
        "/public/\x7f",
        "/public/\u{e9}",
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
        expect_status_and_close(gw.addr, req.as_bytes(), 400);
    }
    assert_eq!(public.request_count() + private.request_count(), 0);
}

#[test]
fn escaped_slashes_and_merged_slashes_follow_the_listener() {
    let (public, _private, gw) =
        split_gateway("    path_with_escaped_slashes: keep\n    merge_slashes: true");
    assert_eq!(get(gw.addr, "/public/a%2fb"), (200, Some("public".into())));
    assert_eq!(last(&public).path, "/public/a%2Fb");
    assert_eq!(get(gw.addr, "//public///x"), (200, Some("public".into())));
    assert_eq!(last(&public).path, "/public/x");

    let (_public, private, gw) = split_gateway("    path_with_escaped_slashes: decode");
    assert_eq!(
        get(gw.addr, "/public/..%2fadmin"),
        (200, Some("private".into()))
    );
    assert_eq!(last(&private).path, "/admin");

    let (_public, private, gw) = split_gateway("    normalize_path: false");
    assert_eq!(get(gw.addr, "/x/./y"), (200, Some("private".into())));
    assert_eq!(
        last(&private).path,
        "/x/./y",
        "forwarded as sent when normalisation is off"
    );
}

const FORGED: &[u8] = b"GET /who HTTP/1.1\r\nHost: a\r\n\
X-Forwarded-For: 10.9.9.9\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: admin.internal\r\n\
X-Forwarded-Port: 443\r\nX-Real-IP: 10.9.9.9\r\nForwarded: for=10.9.9.9;proto=https\r\n\
X_Forwarded_For: 10.8.8.8\r\nX-Kept: yes\r\n\r\n";

#[test]
fn identity_and_scheme_headers_from_a_client_are_replaced() {
    let (_public, private, gw) = split_gateway("");
    let (r, _c, _) = exchange(gw.addr, FORGED);
    assert_eq!(r.status, 200);
    let rec = last(&private);
    assert_eq!(rec.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(rec.header_all("x-forwarded-proto"), ["http"]);
    for name in [
        "x-forwarded-host",
        "x-forwarded-port",
        "x-real-ip",
        "forwarded",
        "x_forwarded_for",
    ] {
        assert_eq!(rec.header(name), None, "{name}: {:?}", rec.headers);
    }
    assert_eq!(rec.header("x-kept"), Some("yes"));
}

#[test]
fn a_trusted_proxy_in_front_keeps_its_forwarding_headers() {
    let (_public, private, gw) = split_gateway("    trusted_proxies: [\"127.0.0.0/8\"]");
    let (r, mut c, _) = exchange(gw.addr, FORGED);
    assert_eq!(r.status, 200);
    let rec = last(&private);
    assert_eq!(rec.header_all("x-forwarded-for"), ["10.9.9.9, 127.0.0.1"]);
    assert_eq!(rec.header_all("x-forwarded-proto"), ["https"]);
    assert_eq!(rec.header("x-forwarded-host"), Some("admin.internal"));
    assert_eq!(rec.header("x-real-ip"), Some("10.9.9.9"));
    assert_eq!(
        rec.header("x_forwarded_for"),
        None,
        "underscore names are dropped anyway"
    );
    // Several X-Forwarded-For lines join into one list, in order.
    c.send(b"GET /b HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3\r\n\r\n");
    assert_eq!(c.read_response(T).status, 200);
    let rec = last(&private);
    assert_eq!(
        rec.header_all("x-forwarded-for"),
        ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]
    );
    assert_eq!(rec.header_all("x-forwarded-proto"), ["http"]);
}

#[test]
fn underscore_header_names_can_be_refused() {
    let (_public, private, gw) = split_gateway("    headers_with_underscores: reject");
    expect_status_and_close(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nX_Api_Key: k\r\n\r\n",
        400,
    );
    assert_eq!(private.request_count(), 0);
    let (_public, private, gw) = split_gateway("    headers_with_underscores: allow");
    let (r, _c, _) = exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nX_Api_Key: k\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(last(&private).header("x_api_key"), Some("k"));
}

#[test]
fn an_invalid_host_is_400() {
    let (public, private, gw) = split_gateway("");
    for request in [
        &b"GET / HTTP/1.1\r\nHost: bill.example.com:evil\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\n\r\n",
        b"GET http://a:evil/ HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        expect_status_and_close(gw.addr, request, 400);
    }
    assert_eq!(public.request_count() + private.request_count(), 0);
    let (r, _c, _) = exchange(gw.addr, b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n");
    assert_eq!(r.status, 200, "an IPv6 literal with a port is fine");
    assert_eq!(last(&private).header("host"), Some("[::1]:8080"));
}
