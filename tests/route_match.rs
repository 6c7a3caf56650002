//! Proves each route match key end to end over real sockets (Envoy's names): `safe_regex`,
//! `path_separated_prefix`, `case_sensitive: false`, every header matcher kind (string forms,
//! present/absent, range, invert, the older direct forms, repeated fields joined with ",",
//! pseudo-headers), `query_parameters`, and first-match order across the route index, the
//! regex routes filed in it and the case-insensitive side list. Routes under test send to
//! `hit`; the catch-all sends to `miss`, so the answering origin shows which route matched.

mod support;

use support::client::{Body, HttpClient};
use support::gateway::TestGateway;
use support::harness::T;
use support::upstream::HttpUpstream;

/// More than 8 routes, so the radix index (not the linear scan) answers.
const ROUTES: &str = r#"
workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: small
        domains: ["small.test"]
        routes:
          - match: { safe_regex: { regex: "/re/v[0-9]+/items" } }
            route: { cluster: hit }
          - match: { path_separated_prefix: "/sep", headers: [{ name: x-env, present_match: true }] }
            route: { cluster: hit }
          - match: { prefix: "/" }
            route: { cluster: miss }
      - name: all
        domains: ["*"]
        routes:
          - match: { safe_regex: { regex: "/re/v[0-9]+/items", google_re2: {} } }
            route: { cluster: hit }
          - match: { path_separated_prefix: "/sep" }
            route: { cluster: hit }
          - match: { prefix: "/CI/", case_sensitive: false }
            route: { cluster: hit }
          - match: { path: "/Exact", case_sensitive: false }
            route: { cluster: hit }
          - match: { prefix: "/h/exact", headers: [{ name: X-Env, string_match: { exact: canary } }] }
            route: { cluster: hit }
          - match: { prefix: "/h/prefix", headers: [{ name: x-env, string_match: { prefix: CAN, ignore_case: true } }] }
            route: { cluster: hit }
          - match: { prefix: "/h/suffix", headers: [{ name: x-env, string_match: { suffix: ary } }] }
            route: { cluster: hit }
          - match: { prefix: "/h/contains", headers: [{ name: x-env, string_match: { contains: nar } }] }
            route: { cluster: hit }
          - match: { prefix: "/h/regex", headers: [{ name: x-env, string_match: { safe_regex: { regex: "c[a-z]+y" } } }] }
            route: { cluster: hit }
          - match: { prefix: "/h/present", headers: [{ name: x-env, present_match: true }] }
            route: { cluster: hit }
          - match: { prefix: "/h/absent", headers: [{ name: x-env, present_match: false }] }
            route: { cluster: hit }
          - match: { prefix: "/h/invert", headers: [{ name: x-env, string_match: { exact: canary }, invert_match: true }] }
            route: { cluster: hit }
          - match: { prefix: "/h/range", headers: [{ name: x-version, range_match: { start: 100, end: 200 } }] }
            route: { cluster: hit }
          - match: { prefix: "/h/old", headers: [{ name: x-env, exact_match: canary }, { name: x-tier, safe_regex_match: { regex: "gold|silver" } }] }
            route: { cluster: hit }
          - match: { prefix: "/h/multi", headers: [{ name: x-tag, string_match: { exact: "a,b" } }] }
            route: { cluster: hit }
          - match: { prefix: "/h/missing", headers: [{ name: x-env, string_match: { exact: "" }, treat_missing_header_as_empty: true }] }
            route: { cluster: hit }
          - match: { prefix: "/h/pseudo", headers: [{ name: ":authority", string_match: { prefix: "special." } }, { name: ":method", string_match: { exact: PUT } }, { name: ":path", string_match: { suffix: "?go" } }] }
            route: { cluster: hit }
          - match: { prefix: "/q/exact", query_parameters: [{ name: v, string_match: { exact: "2" } }] }
            route: { cluster: hit }
          - match: { prefix: "/q/present", query_parameters: [{ name: debug, present_match: true }, { name: user, string_match: { safe_regex: { regex: "[0-9]+" } } }] }
            route: { cluster: hit }
          - match: { safe_regex: { regex: "/order/.*" } }
            route: { cluster: hit }
          - match: { prefix: "/order/" }
            route: { cluster: miss }
          - match: { prefix: "/order2/" }
            route: { cluster: miss }
          - match: { safe_regex: { regex: "/order2/.*" } }
            route: { cluster: hit }
          - match: { prefix: "/ORDER3/", case_sensitive: false }
            route: { cluster: hit }
          - match: { prefix: "/order3/" }
            route: { cluster: miss }
          - match: { prefix: "/order4/" }
            route: { cluster: miss }
          - match: { prefix: "/ORDER4/", case_sensitive: false }
            route: { cluster: hit }
          - match: { prefix: "/order5/", headers: [{ name: x-env, present_match: true }] }
            route: { cluster: hit }
          - match: { safe_regex: { regex: ".*\\.css" } }
            route: { cluster: hit }
          - match: { prefix: "/" }
            route: { cluster: miss }
clusters:
"#;

struct Routed {
    _origins: [HttpUpstream; 2],
    gw: TestGateway,
}

impl Routed {
    fn start() -> Routed {
        let hit = HttpUpstream::builder().name("hit").start();
        let miss = HttpUpstream::builder().name("miss").start();
        let mut yaml = ROUTES.to_string();
        for up in [&hit, &miss] {
            yaml.push_str(&format!(
                "  - name: {}\n    endpoints: [{{ address: \"{}\" }}]\n",
                up.name(),
                up.addr()
            ));
        }
        let gw = TestGateway::start(&yaml);
        Routed {
            _origins: [hit, miss],
            gw,
        }
    }

    /// Which origin answered `method target` with these headers (Host any.test unless given).
    fn served(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> String {
        let mut c = HttpClient::connect(self.gw.addr).expect("connect");
        c.set_timeout(T);
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            all.push(("host", "any.test"));
        }
        let r = c
            .request(method, target, &all, Body::Empty)
            .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
        assert_eq!(r.status, 200, "{method} {target}: {}", r.text());
        r.header("x-upstream").unwrap_or("").to_string()
    }

    fn get(&self, target: &str, headers: &[(&str, &str)]) -> String {
        self.served("GET", target, headers)
    }
}

#[test]
fn safe_regex_matches_the_whole_path_without_the_query() {
    let r = Routed::start();
    assert_eq!(r.get("/re/v12/items", &[]), "hit");
    assert_eq!(r.get("/re/v12/items?page=2", &[]), "hit");
    assert_eq!(r.get("/re/v12/items/3", &[]), "miss", "anchored at the end");
    assert_eq!(r.get("/re/vx/items", &[]), "miss");
    assert_eq!(
        r.get("/x/re/v1/items", &[]),
        "miss",
        "anchored at the start"
    );
    // A regex with no literal prefix applies to every path.
    assert_eq!(r.get("/deep/down/site.css", &[]), "hit");
    assert_eq!(r.get("/deep/down/site.cssx", &[]), "miss");
}

#[test]
fn path_separated_prefix_needs_the_end_or_a_slash_after_it() {
    let r = Routed::start();
    assert_eq!(r.get("/sep", &[]), "hit");
    assert_eq!(r.get("/sep/", &[]), "hit");
    assert_eq!(r.get("/sep/more", &[]), "hit");
    assert_eq!(r.get("/sep?q=1", &[]), "hit");
    assert_eq!(r.get("/separate", &[]), "miss");
    assert_eq!(r.get("/Sep", &[]), "miss");
}

#[test]
fn case_insensitive_prefix_and_path() {
    let r = Routed::start();
    assert_eq!(r.get("/ci/x", &[]), "hit");
    assert_eq!(r.get("/Ci/x", &[]), "hit");
    assert_eq!(r.get("/ci", &[]), "miss");
    assert_eq!(r.get("/exact", &[]), "hit");
    assert_eq!(r.get("/EXACT?x=1", &[]), "hit");
    assert_eq!(r.get("/exactly", &[]), "miss");
}

#[test]
fn header_string_matchers() {
    let r = Routed::start();
    let canary = [("x-env", "canary")];
    for path in [
        "/h/exact",
        "/h/prefix",
        "/h/suffix",
        "/h/contains",
        "/h/regex",
    ] {
        assert_eq!(r.get(path, &canary), "hit", "{path} canary");
        assert_eq!(r.get(path, &[("x-env", "stable")]), "miss", "{path} stable");
        assert_eq!(r.get(path, &[]), "miss", "{path} without the header");
    }
    assert_eq!(r.get("/h/exact", &[("x-env", "Canary")]), "miss");
    assert_eq!(r.get("/h/prefix", &[("x-env", "CANARY")]), "hit");
    assert_eq!(
        r.get("/h/regex", &[("x-env", "xcanary")]),
        "miss",
        "anchored"
    );
    // The older direct forms; both matchers must pass.
    let gold = [("x-env", "canary"), ("x-tier", "gold")];
    assert_eq!(r.get("/h/old", &gold), "hit");
    assert_eq!(
        r.get("/h/old", &[("x-env", "canary"), ("x-tier", "bronze")]),
        "miss"
    );
    assert_eq!(r.get("/h/old", &canary), "miss");
}

#[test]
fn header_presence_absence_range_and_invert() {
    let r = Routed::start();
    assert_eq!(r.get("/h/present", &[("x-env", "")]), "hit");
    assert_eq!(r.get("/h/present", &[]), "miss");
    assert_eq!(r.get("/h/absent", &[]), "hit");
    assert_eq!(r.get("/h/absent", &[("x-env", "x")]), "miss");
    assert_eq!(r.get("/h/invert", &[("x-env", "stable")]), "hit");
    assert_eq!(
        r.get("/h/invert", &[]),
        "hit",
        "a missing header inverts to a match"
    );
    assert_eq!(r.get("/h/invert", &[("x-env", "canary")]), "miss");
    assert_eq!(r.get("/h/range", &[("x-version", "100")]), "hit");
    assert_eq!(r.get("/h/range", &[("x-version", "199")]), "hit");
    assert_eq!(
        r.get("/h/range", &[("x-version", "200")]),
        "miss",
        "end is exclusive"
    );
    assert_eq!(r.get("/h/range", &[("x-version", "-5")]), "miss");
    assert_eq!(r.get("/h/range", &[("x-version", "1x")]), "miss");
    assert_eq!(r.get("/h/missing", &[]), "hit");
    assert_eq!(r.get("/h/missing", &[("x-env", "x")]), "miss");
}

#[test]
fn repeated_headers_are_joined_and_pseudo_headers_read_the_request() {
    let r = Routed::start();
    assert_eq!(r.get("/h/multi", &[("x-tag", "a"), ("x-tag", "b")]), "hit");
    assert_eq!(r.get("/h/multi", &[("x-tag", "a")]), "miss");
    let host = [("host", "special.example.com")];
    assert_eq!(r.served("PUT", "/h/pseudo?go", &host), "hit");
    assert_eq!(r.served("GET", "/h/pseudo?go", &host), "miss");
    assert_eq!(r.served("PUT", "/h/pseudo?stop", &host), "miss");
    assert_eq!(r.served("PUT", "/h/pseudo?go", &[]), "miss");
}

#[test]
fn query_parameter_matchers() {
    let r = Routed::start();
    assert_eq!(r.get("/q/exact?v=2", &[]), "hit");
    assert_eq!(r.get("/q/exact?a=1&v=2", &[]), "hit");
    assert_eq!(
        r.get("/q/exact?v=1&v=2", &[]),
        "miss",
        "the first occurrence wins"
    );
    assert_eq!(r.get("/q/exact?v=%32", &[]), "miss", "no percent-decoding");
    assert_eq!(r.get("/q/exact", &[]), "miss");
    assert_eq!(r.get("/q/present?debug&user=42", &[]), "hit");
    assert_eq!(r.get("/q/present?debug=&user=42", &[]), "hit");
    assert_eq!(r.get("/q/present?user=42", &[]), "miss");
    assert_eq!(r.get("/q/present?debug&user=4x", &[]), "miss");
}

#[test]
fn first_match_wins_across_index_regex_and_side_list() {
    let r = Routed::start();
    assert_eq!(r.get("/order/x", &[]), "hit", "a regex before a prefix");
    assert_eq!(r.get("/order2/x", &[]), "miss", "a prefix before a regex");
    assert_eq!(
        r.get("/order3/x", &[]),
        "hit",
        "a case-insensitive route first"
    );
    assert_eq!(
        r.get("/order4/x", &[]),
        "miss",
        "a case-insensitive route second"
    );
    assert_eq!(r.get("/ORDER4/x", &[]), "hit");
    // A route whose headers do not match is passed over for the next match.
    assert_eq!(r.get("/order5/a.css", &[]), "hit");
    assert_eq!(r.get("/order5/a.js", &[("x-env", "1")]), "hit");
    assert_eq!(r.get("/order5/a.js", &[]), "miss");
}

#[test]
fn a_small_table_scans_linearly_with_the_same_rules() {
    let r = Routed::start();
    let host = ("host", "small.test");
    assert_eq!(r.get("/re/v1/items", &[host]), "hit");
    assert_eq!(r.get("/re/v1/items/x", &[host]), "miss");
    assert_eq!(r.get("/sep/x", &[host, ("x-env", "a")]), "hit");
    assert_eq!(r.get("/sep/x", &[host]), "miss");
    assert_eq!(r.get("/separate", &[host, ("x-env", "a")]), "miss");
}
