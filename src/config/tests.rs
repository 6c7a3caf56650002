//! Unit tests of parsing and validation: defaults, every error class with its exact path.

use super::validate::{parse_domain, parse_method};
use super::*;

const FULL: &str = r#"
admin: { address: 127.0.0.1:9901 }
workers: auto
limits: { max_request_head_bytes: 65536, max_headers: 100, header_timeout: 10s, idle_timeout: 60s, body_timeout: 60s, drain_timeout: 30s }
listeners:
  - name: ingress
    address: 0.0.0.0:10000
    backlog: 1024
    virtual_hosts:
      - name: bill
        domains: ["bill.example.com", "*.bill.example.com", "*"]
        routes:
          - match: { prefix: "/api/", methods: [GET, POST] }
            route: { cluster: bill_api }
          - match: { path: "/healthz" }
            route: { cluster: bill_web }
clusters:
  - name: bill_api
    connect_timeout: 250ms
    response_timeout: 15s
    idle_timeout: 60s
    max_idle_per_core: 128
    lb_policy: weighted_round_robin
    endpoints:
      - { address: 127.0.0.1:9001, weight: 3 }
      - { address: 127.0.0.1:9002 }
  - name: bill_web
    endpoints: [{ address: "[::1]:9003" }]
"#;

const BASE: &str = r#"
listeners:
  - name: l
    address: 127.0.0.1:10000
    virtual_hosts:
      - name: v
        domains: ["a.example.com"]
        routes:
          - match: { prefix: "/" }
            route: { cluster: c }
clusters:
  - name: c
    endpoints:
      - { address: 127.0.0.1:9001 }
"#;

fn errs(yaml: &str) -> Vec<ConfigError> {
    parse(yaml, "t.yaml").unwrap_err().0
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn full_example_parses() {
    let c = parse(FULL, "gw.yaml").unwrap();
    assert_eq!(c.file, "gw.yaml");
    assert_eq!(
        c.admin,
        Some(Admin {
            address: addr("127.0.0.1:9901")
        })
    );
    assert_eq!(c.workers, Workers::Auto);
    assert_eq!(c.limits, Limits::default());
    let l = &c.listeners[0];
    assert_eq!(
        (l.name.as_str(), l.address, l.backlog),
        ("ingress", addr("0.0.0.0:10000"), 1024)
    );
    let v = &l.virtual_hosts[0];
    assert_eq!(v.name, "bill");
    let want = [
        Domain::Exact("bill.example.com".into()),
        Domain::Suffix(".bill.example.com".into()),
        Domain::Any,
    ];
    assert_eq!(v.domains, want);
    let r0 = Route {
        path: PathMatch::Prefix("/api/".into()),
        methods: Some(vec![http::Method::GET, http::Method::POST]),
        cluster: 0,
        max_request_body_bytes: None,
        timeout: None,
        idle_timeout: None,
        retry_policy: None,
        client_certificate: None,
        hash_policy: Default::default(),
        rules: Default::default(),
        name: None,
        action: Default::default(),
        header_edits: None,
    };
    let r1 = Route {
        path: PathMatch::Exact("/healthz".into()),
        methods: None,
        cluster: 1,
        max_request_body_bytes: None,
        timeout: None,
        idle_timeout: None,
        retry_policy: None,
        client_certificate: None,
        hash_policy: Default::default(),
        rules: Default::default(),
        name: None,
        action: Default::default(),
        header_edits: None,
    };
    assert_eq!(v.routes, [Arc::new(r0), Arc::new(r1)]);
    let api = &c.clusters[0];
    assert_eq!(api.name, "bill_api");
    assert_eq!(api.connect_timeout, Duration::from_millis(250));
    assert_eq!(api.response_timeout, Duration::from_secs(15));
    assert_eq!(api.idle_timeout, Duration::from_secs(60));
    assert_eq!(
        (api.max_idle_per_core, api.lb_policy),
        (128, LbPolicy::WeightedRoundRobin)
    );
    let eps = [
        Endpoint {
            address: addr("127.0.0.1:9001"),
            weight: 3,
        },
        Endpoint {
            address: addr("127.0.0.1:9002"),
            weight: 1,
        },
    ];
    assert_eq!(api.endpoints, eps);
    assert_eq!(c.clusters[1].endpoints[0].address, addr("[::1]:9003"));
}

#[test]
fn defaults_apply_when_omitted() {
    let c = parse(BASE, "t.yaml").unwrap();
    assert_eq!(
        (c.admin, c.workers, c.limits),
        (None, Workers::Auto, Limits::default())
    );
    assert_eq!(c.listeners[0].backlog, 1024);
    let cl = &c.clusters[0];
    let secs = Duration::from_secs;
    assert_eq!(
        (cl.connect_timeout, cl.response_timeout, cl.idle_timeout),
        (secs(1), secs(15), secs(60))
    );
    assert_eq!(
        (cl.max_idle_per_core, cl.lb_policy),
        (128, LbPolicy::WeightedRoundRobin)
    );
    assert_eq!(cl.endpoints[0].weight, 1);
    let with = parse(
        &format!("{BASE}workers: 8\nlimits: {{ max_headers: 50, drain_timeout: 1m }}\n"),
        "t",
    );
    let with = with.unwrap();
    assert_eq!(with.workers, Workers::Count(8));
    assert_eq!(
        (with.limits.max_headers, with.limits.drain_timeout),
        (50, secs(60))
    );
    assert_eq!(with.limits.header_timeout, secs(10));
}

/// One case a line: `from | to | path | reason substring`. `to` replaces the first `from`
/// in BASE (`+` appends to it); `\n` is a newline. Each case must yield exactly one error.
const CASES: &str = r#"
cluster: c } | cluster: cx } | listeners[0].virtual_hosts[0].routes[0].route.cluster | unknown cluster "cx" (known: c)
9001 } | 9001, weight: 0 } | clusters[0].endpoints[0].weight | must be between 1 and 1000000, got 0
9001 } | 9001, weight: -3 } | clusters[0].endpoints[0].weight | got -3
9001 } | 9001, weight: 1000001 } | clusters[0].endpoints[0].weight | got 1000001
9001 } | 9001 }\n      - { address: 127.0.0.1:9001 } | clusters[0].endpoints[1].address | duplicate endpoint 127.0.0.1:9001
9001 } | 0 } | clusters[0].endpoints[0].address | port 0
address: 127.0.0.1:9001 | address: localhost:9001 | clusters[0].endpoints[0].address | set the cluster's `type: strict_dns`
endpoints:\n      - { address: 127.0.0.1:9001 } | endpoints: [] | clusters[0].endpoints | at least one endpoint
- name: c\n | - name: c\n    connect_timeout: 5\n | clusters[0].connect_timeout | invalid duration "5"
- name: c\n | - name: c\n    response_timeout: 0s\n | clusters[0].response_timeout | must be greater than zero
- name: c\n | - name: c\n    idle_timeout: soon\n | clusters[0].idle_timeout | invalid duration "soon"
- name: c\n | - name: c\n    max_idle_per_core: 65537\n | clusters[0].max_idle_per_core | between 0 and 65536
- name: c\n | - name: c\n    max_idle_per_core: -1\n | clusters[0].max_idle_per_core | got -1
- name: c\n | - name: c\n    lb_policy: fastest\n | clusters[0].lb_policy | unknown policy "fastest" (accepted: weighted_round_robin, round_robin, random, least_request, ring_hash, maglev, ROUND_ROBIN
+ |   - { name: c, endpoints: [{ address: 127.0.0.1:1 }] }\n | clusters[1].name | duplicate cluster name "c"
:10000\n | \n | listeners[0].address | invalid address "127.0.0.1"
:10000\n | :10000\n    backlog: 0\n | listeners[0].backlog | between 1 and 65535, got 0
:10000\n | :10000\n    backlog: 70000\n | listeners[0].backlog | got 70000
- name: l\n | - name: ""\n | listeners[0].name | must not be empty
- name: v\n | - name: " "\n | listeners[0].virtual_hosts[0].name | must not be empty
domains: ["a.example.com"] | domains: [] | listeners[0].virtual_hosts[0].domains | at least one domain
a.example.com | a.example.com:8080 | listeners[0].virtual_hosts[0].domains[0] | remove ':PORT'
a.example.com | foo.* | listeners[0].virtual_hosts[0].domains[0] | '*' must be alone
a.example.com | *foo.com | listeners[0].virtual_hosts[0].domains[0] | '*' must be alone
a.example.com | a.*.com | listeners[0].virtual_hosts[0].domains[0] | '*' must be alone
"a.example.com" | "" | listeners[0].virtual_hosts[0].domains[0] | invalid domain "": empty
a.example.com | a_b.com | listeners[0].virtual_hosts[0].domains[0] | only letters, digits
a.example.com | a..com | listeners[0].virtual_hosts[0].domains[0] | empty label
a.example.com | [::1] | listeners[0].virtual_hosts[0].domains[0] | IPv6
a.example.com" | a.example.com", "A.Example.COM" | listeners[0].virtual_hosts[0].domains[1] | "a.example.com" is already used by virtual host "v"
{ prefix: "/" } | { } | listeners[0].virtual_hosts[0].routes[0].match | set exactly one of `prefix`
{ prefix: "/" } | { prefix: "/", path: "/x" } | listeners[0].virtual_hosts[0].routes[0].match | set exactly one of `prefix`
{ prefix: "/" } | { prefix: "api" } | listeners[0].virtual_hosts[0].routes[0].match.prefix | "api" must start with '/'
{ prefix: "/" } | { path: "x" } | listeners[0].virtual_hosts[0].routes[0].match.path | must start with '/'
{ prefix: "/" } | { path: "/a b" } | listeners[0].virtual_hosts[0].routes[0].match.path | percent-encode
{ prefix: "/" } | { prefix: "/", methods: [] } | listeners[0].virtual_hosts[0].routes[0].match.methods | omit `methods`
{ prefix: "/" } | { prefix: "/", methods: [GET, ""] } | listeners[0].virtual_hosts[0].routes[0].match.methods[1] | empty method
{ prefix: "/" } | { prefix: "/", methods: ["GE T"] } | listeners[0].virtual_hosts[0].routes[0].match.methods[0] | token characters
{ prefix: "/" } | { prefix: "/", methods: [get] } | listeners[0].virtual_hosts[0].routes[0].match.methods[0] | use GET
{ prefix: "/" } | { prefix: "/", methods: [GET, GET] } | listeners[0].virtual_hosts[0].routes[0].match.methods[1] | duplicate GET
+ | workers: 0\n | workers | must be `auto` or 1..=1024, got 0
+ | workers: 1025\n | workers | got 1025
+ | workers: many\n | workers | got "many"
+ | workers: 2.5\n | workers | got "2.5"
+ | admin: { address: nope }\n | admin.address | invalid address "nope"
+ | admin: { address: 127.0.0.1:10000 }\n | listeners[0].address | already used by admin.address
+ | limits: { max_request_head_bytes: 1023 }\n | limits.max_request_head_bytes | between 1024 and 1048576
+ | limits: { max_headers: 0 }\n | limits.max_headers | between 1 and 1024
+ | limits: { header_timeout: 0ms }\n | limits.header_timeout | greater than zero
+ | limits: { idle_timeout: 10 }\n | limits.idle_timeout | invalid duration "10"
+ | limits: { body_timeout: 1x }\n | limits.body_timeout | invalid duration
+ | limits: { drain_timeout: "" }\n | limits.drain_timeout | invalid duration
+ | limits: { request_timeout: 0s }\n | limits.request_timeout | greater than zero
- name: c\n | - name: c\n    send_timeout: never\n | clusters[0].send_timeout | invalid duration "never"
:10000\n | :10000\n    max_connections: 0\n | listeners[0].max_connections | between 1 and 100000000, got 0
:10000\n | :10000\n    max_request_body_bytes: -1\n | listeners[0].max_request_body_bytes | got -1
:10000\n | :10000\n    path_with_escaped_slashes: unescape\n | listeners[0].path_with_escaped_slashes | unknown action "unescape" (accepted: keep, reject, decode)
:10000\n | :10000\n    headers_with_underscores: keep\n | listeners[0].headers_with_underscores | unknown action "keep" (accepted: allow, drop, reject)
:10000\n | :10000\n    trusted_proxies: ["10.0.0.0/8", "10.0.0.0/33"]\n | listeners[0].trusted_proxies[1] | invalid network "10.0.0.0/33"
:10000\n | :10000\n    normalize_path: sometimes\n | listeners[0].normalize_path | invalid type
cluster: c } | cluster: c, max_request_body_bytes: -5 } | listeners[0].virtual_hosts[0].routes[0].route.max_request_body_bytes | got -5
"#;

#[test]
fn listener_http_options_default_safe_and_parse() {
    let c = parse(BASE, "t").unwrap();
    let h = &c.listeners[0].http;
    assert_eq!(h, &HttpOptions::default());
    assert_eq!(
        (
            h.path.normalize,
            h.path.merge_slashes,
            h.path.escaped_slashes
        ),
        (true, false, EscapedSlashes::Reject)
    );
    assert_eq!(h.headers_with_underscores, UnderscoreHeaders::Drop);
    assert!(h.trusted_proxies.is_empty() && h.max_connections.is_none());
    assert_eq!(c.limits.request_timeout, Duration::from_secs(300));
    assert_eq!(c.clusters[0].send_timeout, Duration::from_secs(60));

    let yaml = BASE.replacen(
        ":10000\n",
        ":10000\n    max_connections: 5000\n    max_request_body_bytes: 1048576\n    \
         normalize_path: false\n    merge_slashes: true\n    path_with_escaped_slashes: keep\n    \
         headers_with_underscores: reject\n    trusted_proxies: [\"10.1.2.3/8\", \"192.0.2.7\", \"::1\"]\n",
        1,
    )
    .replacen("cluster: c }", "cluster: c, max_request_body_bytes: 0 }", 1);
    let c = parse(&yaml, "t").unwrap();
    let h = &c.listeners[0].http;
    assert_eq!(h.max_connections, Some(5000));
    assert_eq!(h.max_request_body_bytes, Some(1 << 20));
    assert_eq!(
        h.path,
        PathOptions {
            normalize: false,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Keep
        }
    );
    assert_eq!(h.headers_with_underscores, UnderscoreHeaders::Reject);
    let nets: Vec<String> = h.trusted_proxies.iter().map(|n| n.to_string()).collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32", "::1/128"]);
    assert_eq!(
        c.listeners[0].virtual_hosts[0].routes[0].max_request_body_bytes,
        Some(0)
    );
}

#[test]
fn each_error_class_has_its_exact_path() {
    for case in CASES.lines().filter(|l| !l.is_empty()) {
        let f: Vec<String> = case.split(" | ").map(|f| f.replace("\\n", "\n")).collect();
        let [from, to, path, reason] = &f[..] else {
            panic!("bad case {case}")
        };
        let yaml = match from.as_str() {
            "+" => format!("{BASE}{to}"),
            _ => BASE.replacen(from.as_str(), to, 1),
        };
        assert_ne!(yaml, BASE, "{case}");
        let e = errs(&yaml);
        assert_eq!(e.len(), 1, "{case}: {e:?}");
        assert_eq!(e[0].path, *path, "{case}: {e:?}");
        assert!(
            e[0].reason.contains(reason.as_str()),
            "{case}: {:?}",
            e[0].reason
        );
    }
}

#[test]
fn several_errors_are_all_reported_in_order() {
    let yaml = r#"
workers: 0
limits: { header_timeout: 0s, max_headers: 5000 }
listeners:
  - name: a
    address: 127.0.0.1:80
    virtual_hosts:
      - name: v
        domains: ["*", "x.com"]
        routes:
          - match: { prefix: "/" }
            route: { cluster: bill_apix }
      - name: v
        domains: ["*", "X.com:80"]
  - name: a
    address: 127.0.0.1:80
    virtual_hosts: []
clusters:
  - { name: bill_api, endpoints: [{ address: 10.0.0.1:1, weight: 0 }] }
  - { name: bill_web, endpoints: [] }
  - { name: bill_api, endpoints: [{ address: host:1 }, { address: 10.0.0.1:2, weight: 2000000 }] }
"#;
    let e = errs(yaml);
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    let want = [
        "workers",
        "limits.max_headers",
        "limits.header_timeout",
        "listeners[0].virtual_hosts[0].routes[0].route.cluster",
        "listeners[0].virtual_hosts[1].name",
        "listeners[0].virtual_hosts[1].domains[0]",
        "listeners[0].virtual_hosts[1].domains[1]",
        "listeners[1].name",
        "listeners[1].address",
        "listeners[1].virtual_hosts",
        "clusters[0].endpoints[0].weight",
        "clusters[1].endpoints",
        "clusters[2].name",
        "clusters[2].endpoints[0].address",
        "clusters[2].endpoints[1].weight",
    ];
    assert_eq!(paths, want, "{e:#?}");
    assert_eq!(
        e[3].reason,
        r#"unknown cluster "bill_apix" (known: bill_api, bill_web)"#
    );
    assert_eq!(e[5].reason, r#""*" is already used by virtual host "v""#);
    assert!(e[6].reason.contains("remove ':PORT'"));
}

#[test]
fn no_listeners_and_no_clusters() {
    let e = errs("workers: auto\n");
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].path.as_str(), e[0].reason.as_str()),
        ("listeners", "at least one listener is required")
    );
    let e = errs(&BASE.replace(
        "clusters:\n  - name: c\n    endpoints:\n      - { address: 127.0.0.1:9001 }\n",
        "",
    ));
    assert_eq!(
        e[0].reason,
        r#"unknown cluster "c" (no clusters are defined)"#
    );
}

#[test]
fn unknown_key_reports_the_mapping_path_and_position() {
    let e = errs(&BASE.replace("9001 }", "9001, weigth: 3 }"));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].path, "clusters[0].endpoints[0]");
    let want = "unknown field `weigth`, expected `address` or `weight` (line 14, column 36)";
    assert_eq!(e[0].reason, want);
    let e = errs(&format!("{BASE}extra: 1\n"));
    assert_eq!(e[0].path, "");
    assert!(
        e[0].reason
            .starts_with("unknown field `extra`, expected one of"),
        "{e:?}"
    );
}

#[test]
fn wrong_type_and_missing_field_report_their_path() {
    let e = errs(&BASE.replace(
        "    address: 127.0.0.1:10000\n",
        "    address: 127.0.0.1:10000\n    backlog: lots\n",
    ));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].path, "listeners[0].backlog");
    assert!(
        e[0].reason
            .starts_with("invalid type: string \"lots\", expected i64 (line 5"),
        "{e:?}"
    );
    let e = errs(&BASE.replace("domains: [\"a.example.com\"]", "domains: \"a.example.com\""));
    assert_eq!(e[0].path, "listeners[0].virtual_hosts[0].domains");
    let e = errs(&BASE.replace("            route: { cluster: c }\n", ""));
    assert_eq!(e[0].path, "listeners[0].virtual_hosts[0].routes[0]");
    assert!(
        e[0].reason.starts_with("set exactly one of `route`"),
        "{e:?}"
    );
    let e = errs(&BASE.replace("9001 }", "9001, weight: 1.5 }"));
    assert_eq!(e[0].path, "clusters[0].endpoints[0].weight");
}

#[test]
fn syntax_errors_empty_files_and_non_mappings() {
    let e = errs("listeners: [\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].reason.contains("(line 2, column 1)"), "{e:?}");
    for empty in ["", "  \n", "# just a comment\n"] {
        let e = errs(empty);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, "");
        assert!(e[0].reason.starts_with("the file is empty"), "{e:?}");
    }
    assert!(errs("- a\n- b\n")[0].reason.contains("must be a mapping"));
    assert!(errs("just text\n")[0].reason.contains("found a scalar"));
    assert!(
        errs(&format!("{BASE}---\n{BASE}"))[0]
            .reason
            .contains("more than one document")
    );
}

#[test]
fn display_formats() {
    let e = ConfigError {
        file: "gw.yaml".into(),
        path: "workers".into(),
        reason: "bad".into(),
    };
    assert_eq!(e.to_string(), "gw.yaml: workers: bad");
    let io = ConfigError {
        file: "gw.yaml".into(),
        path: String::new(),
        reason: "gone".into(),
    };
    assert_eq!(io.to_string(), "gw.yaml: gone");
    assert_eq!(
        ConfigErrors(vec![e, io]).to_string(),
        "gw.yaml: workers: bad\ngw.yaml: gone"
    );
    let all = parse("workers: 0\n", "x.yaml").unwrap_err().to_string();
    assert_eq!(all.lines().count(), 2, "{all}");
    assert!(all.starts_with("x.yaml: workers: must be"), "{all}");
}

#[test]
fn load_reads_files_and_reports_io_errors() {
    let dir = std::env::temp_dir().join(format!("coregate-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gw.yaml");
    std::fs::write(&file, FULL).unwrap();
    let c = load(&file).unwrap();
    assert_eq!(c.file, file.display().to_string());
    let e = load(&dir.join("missing.yaml")).unwrap_err().0;
    assert_eq!((e.len(), e[0].path.as_str()), (1, ""));
    assert!(e[0].reason.starts_with("cannot read file"), "{e:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn domains_and_methods() {
    assert_eq!(
        parse_domain("Bill.Example.COM"),
        Ok(Domain::Exact("bill.example.com".into()))
    );
    assert_eq!(
        parse_domain("*.Example.com"),
        Ok(Domain::Suffix(".example.com".into()))
    );
    assert_eq!(parse_domain("*"), Ok(Domain::Any));
    assert_eq!(
        parse_domain("127.0.0.1"),
        Ok(Domain::Exact("127.0.0.1".into()))
    );
    for bad in [
        "*.", "**", "*.*.com", ".a.com", "a.com.", "a b", "ü.com", "a.com:80",
    ] {
        assert!(parse_domain(bad).is_err(), "{bad}");
    }
    assert_eq!(
        parse_method("PURGE"),
        Ok(http::Method::from_bytes(b"PURGE").unwrap())
    );
    assert_eq!(parse_method("M-SEARCH").unwrap().as_str(), "M-SEARCH");
    assert!(parse_method("GET(").is_err());
    assert!(parse_method("Post").unwrap_err().contains("use POST"));
    assert!(parse_method("").is_err());
}

#[test]
fn port_zero_listeners_may_repeat() {
    let yaml = BASE.replace("127.0.0.1:10000", "127.0.0.1:0");
    let second = "  - name: l2\n    address: 127.0.0.1:0\n    \
                      virtual_hosts: [{ name: v, domains: [\"*\"] }]\nclusters:";
    let c = parse(&yaml.replace("clusters:", second), "t").unwrap();
    assert_eq!(c.listeners.len(), 2);
    assert!(c.listeners[1].virtual_hosts[0].routes.is_empty());
}

#[test]
fn summary_mentions_everything() {
    let s = parse(FULL, "gw.yaml").unwrap().summary();
    for needle in [
        "gw.yaml",
        "workers: auto",
        "admin: 127.0.0.1:9901",
        "limits: head 65536 B, 100 headers, header 10s, idle 1m, body 1m, request 5m, drain 30s",
        "listener ingress on 0.0.0.0:10000",
        "vhost bill: bill.example.com, *.bill.example.com, *",
        "    GET,POST prefix /api/ -> bill_api",
        "    * path /healthz -> bill_web",
        "cluster bill_api (weighted_round_robin): connect 250ms, response 15s, send 1m, idle 1m",
        "  127.0.0.1:9001 weight 3",
        "  [::1]:9003 weight 1",
    ] {
        assert!(s.contains(needle), "summary lacks {needle:?}:\n{s}");
    }
    assert!(s.lines().count() < 20, "{s}");
}

#[test]
fn http2_options_are_checked_with_their_paths() {
    let yaml = BASE.replace(
        "    virtual_hosts:",
        "    http2: true\n    http2_options: { max_concurrent_streams: 0, max_frame_size: 100, \
         initial_stream_window_size: 10 }\n    virtual_hosts:",
    );
    let e = errs(&yaml);
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "listeners[0].http2_options.max_concurrent_streams",
        "listeners[0].http2_options.max_frame_size",
        "listeners[0].http2_options.initial_stream_window_size",
    ] {
        assert!(paths.contains(&want), "{want} in {paths:?}");
    }
    let ok = parse(
        &BASE.replace("    virtual_hosts:", "    http2: true\n    virtual_hosts:"),
        "t",
    )
    .unwrap();
    let h2 = ok.listeners[0].http2.expect("on");
    assert_eq!(h2.max_concurrent_streams, 100, "the default");
    let options = "    http2_options: { max_concurrent_streams: 5 }\n    virtual_hosts:";
    let e = errs(&BASE.replace("    virtual_hosts:", options));
    assert_eq!(e[0].path, "listeners[0].http2_options");
}

#[test]
fn cluster_protocols_need_what_they_name() {
    let auto = BASE.replace("    endpoints:", "    protocol: auto\n    endpoints:");
    let e = errs(&auto);
    assert_eq!(e[0].path, "clusters[0].protocol");
    assert!(e[0].reason.contains("needs tls"), "{}", e[0].reason);
    let bad = BASE.replace("    endpoints:", "    protocol: h3\n    endpoints:");
    assert!(
        errs(&bad)[0]
            .reason
            .contains("accepted: http1, http2, auto")
    );
    let h2c = BASE.replace("    endpoints:", "    protocol: http2\n    endpoints:");
    let c = parse(&h2c, "t").unwrap();
    assert_eq!(c.clusters[0].protocol, UpstreamProtocol::Http2);
}

#[test]
fn health_checks_are_checked_with_their_paths() {
    let check = "    panic_threshold: 101\n    health_check:\n      http: { path: healthz, expected_statuses: [200, 700] }\n      interval: 1s\n      timeout: 2s\n    endpoints:";
    let e = errs(&BASE.replace("    endpoints:", check));
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "clusters[0].panic_threshold",
        "clusters[0].health_check.http.path",
        "clusters[0].health_check.http.expected_statuses[1]",
        "clusters[0].health_check.timeout",
    ] {
        assert!(paths.contains(&want), "{want} in {paths:?}");
    }
    let both = "    health_check: { http: { path: /h }, tcp: {} }\n    endpoints:";
    let e = errs(&BASE.replace("    endpoints:", both));
    assert_eq!(e[0].path, "clusters[0].health_check");
    assert!(e[0].reason.contains("exactly one"), "{}", e[0].reason);
    let ok = "    health_check: { http: { path: /healthz } }\n    endpoints:";
    let c = parse(&BASE.replace("    endpoints:", ok), "t").unwrap();
    let h = c.clusters[0].health_check.as_ref().expect("on");
    assert_eq!(h.interval, Duration::from_secs(5));
    assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (1, 2));
    assert_eq!(
        h.kind,
        CheckKind::Http {
            path: "/healthz".into(),
            host: "c".into(),
            expected_statuses: vec![200],
        }
    );
    assert_eq!(c.clusters[0].panic_threshold, 50);
}

#[test]
fn circuit_breakers_default_to_envoys_and_are_checked() {
    let c = parse(BASE, "t").unwrap();
    assert_eq!(c.clusters[0].circuit_breakers, CircuitBreakers::default());
    assert_eq!(c.clusters[0].circuit_breakers.max_retries, 3);
    let bad = "    circuit_breakers: { max_requests: 0, max_retries: -1 }\n    endpoints:";
    let e = errs(&BASE.replace("    endpoints:", bad));
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "clusters[0].circuit_breakers.max_requests",
            "clusters[0].circuit_breakers.max_retries"
        ]
    );
}

#[test]
fn outlier_detection_defaults_to_envoys_and_is_checked() {
    let on = "    outlier_detection: {}\n    endpoints:";
    let c = parse(&BASE.replace("    endpoints:", on), "t").unwrap();
    assert_eq!(
        c.clusters[0].outlier_detection,
        Some(OutlierDetection::default())
    );
    let bad =
        "    outlier_detection: { consecutive_5xx: 0, max_ejection_percent: 101 }\n    endpoints:";
    let e = errs(&BASE.replace("    endpoints:", bad));
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "clusters[0].outlier_detection.consecutive_5xx",
            "clusters[0].outlier_detection.max_ejection_percent"
        ]
    );
}

#[test]
fn retry_policies_and_budgets_are_checked() {
    let route = r#"route: { cluster: c, retry_policy: { retry_on: [5xx, teapot], num_retries: 11, retry_host_predicate: [other] } }"#;
    let yaml = BASE.replace("route: { cluster: c }", route);
    let e = errs(&yaml);
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    let base = "listeners[0].virtual_hosts[0].routes[0].route.retry_policy";
    for want in ["retry_on[1]", "num_retries", "retry_host_predicate[0]"] {
        assert!(
            paths.contains(&format!("{base}.{want}").as_str()),
            "{want} in {paths:?}"
        );
    }
    let ok = BASE.replace(
        "route: { cluster: c }",
        "route: { cluster: c, retry_policy: { retry_on: [gateway-error], per_try_timeout: 1s } }",
    );
    let c = parse(&ok, "t").unwrap();
    let policy = c.listeners[0].virtual_hosts[0].routes[0]
        .retry_policy
        .as_ref()
        .expect("set");
    assert_eq!(policy.num_retries, 1);
    assert_eq!(policy.max_retry_body_bytes, 64 * 1024);
    assert!(policy.retries_status(503) && !policy.retries_status(500));
    assert_eq!(c.clusters[0].retry_budget, RetryBudget::default());
}

/// Parses `text` with the section cache, and whole: both validate to the same config (or
/// the same errors). Returns how many sections the cache parsed (usize::MAX: the whole file).
fn sectioned(cache: &mut sections::Sections, text: &str) -> usize {
    let whole = parse(text, "f.yaml");
    let by_sections = cache
        .parse(text)
        .map_err(|(path, reason)| one_error("f.yaml", path, reason))
        .and_then(|raw| validate::validate(raw, "f.yaml", validate::Reuse::Nothing).map(|v| v.0));
    assert_eq!(by_sections, whole, "{text}");
    cache.parsed
}

#[test]
fn a_reload_parses_only_the_sections_that_changed() {
    let mut cache = sections::Sections::default();
    let weights = |w: u32| FULL.replace("weight: 3", &format!("weight: {w}"));
    assert_eq!(
        sectioned(&mut cache, &weights(3)),
        5,
        "the first load parses every section"
    );
    assert_eq!(
        sectioned(&mut cache, &weights(5)),
        1,
        "only `clusters` changed"
    );
    assert_eq!(sectioned(&mut cache, &weights(5)), 0);
    let route = weights(5).replace("/healthz", "/health");
    assert_eq!(sectioned(&mut cache, &route), 1, "only `listeners` changed");
    // A key that goes away takes its default; one that comes back is parsed.
    let no_limits: String = route
        .lines()
        .filter(|l| !l.starts_with("limits:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(sectioned(&mut cache, &no_limits), 0);
    assert_eq!(sectioned(&mut cache, &route), 1);
    // An error in a changed section is the whole file's error; the next good file is served.
    let bad = route.replace("weight: 5", "weight: -1");
    assert_eq!(sectioned(&mut cache, &bad), 1);
    assert_eq!(sectioned(&mut cache, &route), 1);
    let unknown = format!("{route}extra: 1\n");
    assert_eq!(sectioned(&mut cache, &unknown), usize::MAX);
}

#[test]
fn layouts_the_split_does_not_handle_are_parsed_whole() {
    let mut cache = sections::Sections::default();
    for text in [
        // Compact sequences at column 0, comments and a leading document marker: split.
        format!("---\n# comment\n{FULL}"),
        BASE.replace("\n  - name: c\n    endpoints:", "\n- name: c\n  endpoints:"),
        format!("# comment\n  # indented comment\n\n{BASE}"),
        BASE.replace('\n', "\r\n"),
    ] {
        assert_ne!(sectioned(&mut cache, &text), usize::MAX, "{text}");
    }
    let anchored = FULL
        .replace("max_idle_per_core: 128", "max_idle_per_core: &idle 128")
        .replace("backlog: 1024", "backlog: *idle");
    for text in [
        // An alias of an anchor in another section.
        anchored,
        // Several documents, a directive, a repeated key, a quoted key, an indented top level,
        // a top-level list, tabs.
        format!("{FULL}---\n{FULL}"),
        format!("%YAML 1.2\n---\n{FULL}"),
        format!("{FULL}workers: 2\n"),
        FULL.replace("\nworkers: auto", "\n\"workers\": auto"),
        FULL.replace('\n', "\n  "),
        "- a\n- b\n".to_owned(),
        format!("\t{FULL}"),
        String::new(),
        "# only a comment\n".to_owned(),
    ] {
        assert_eq!(sectioned(&mut cache, &text), usize::MAX, "{text}");
    }
    // After a whole parse the cache starts over.
    assert_eq!(sectioned(&mut cache, FULL), 5);
}

/// The loader keeps the validated listeners only while nothing they were checked against
/// changed; each load still equals a fresh parse of the same text, errors included.
#[test]
fn a_reload_keeps_the_validated_listeners_only_while_their_inputs_stay() {
    let mut reloads = Reloads::new("loader");
    let dir = reloads.dir.clone();
    let mut load = |text: &str| reloads.load(text).0;
    let first = load(FULL).unwrap();
    // Only a cluster's weight changed: the same listeners.
    let weights = load(&FULL.replace("weight: 3", "weight: 5")).unwrap();
    assert!(Arc::ptr_eq(&first.listeners, &weights.listeners));
    // A listener changed: validated again.
    let backlog = load(&FULL.replace("backlog: 1024", "backlog: 512")).unwrap();
    assert!(!Arc::ptr_eq(&weights.listeners, &backlog.listeners));
    assert_eq!(backlog.listeners[0].backlog, 512);
    // A cluster a route names is renamed: the route's reference is checked again and refused.
    let renamed = FULL.replace("- name: bill_web", "- name: bill_www");
    let e = load(&renamed).unwrap_err().0;
    assert!(
        e.iter()
            .any(|e| e.reason.starts_with("unknown cluster \"bill_web\"")),
        "{e:?}"
    );
    // Back, then the admin address moves onto the listener's: refused too.
    let back = load(FULL).unwrap();
    let clash = FULL.replace("127.0.0.1:9901", "0.0.0.0:10000");
    let e = load(&clash).unwrap_err().0;
    assert!(e.iter().any(|e| e.path == "listeners[0].address"), "{e:?}");
    // A direct_response body read from a file is read again at every load.
    std::fs::write(dir.join("body.txt"), "one").unwrap();
    let with_file = FULL.replace(
        "route: { cluster: bill_web }",
        "direct_response: { status: 200, body: { filename: body.txt } }",
    );
    let a = load(&with_file).unwrap();
    std::fs::write(dir.join("body.txt"), "two").unwrap();
    let b = load(&with_file).unwrap();
    assert!(!Arc::ptr_eq(&a.listeners, &b.listeners));
    assert_ne!(a.listeners, b.listeners, "the new body is served");
    assert!(!Arc::ptr_eq(&back.listeners, &a.listeners));
}

/// A loader reading a file in a directory of its own (removed with it); each load is checked
/// against a fresh parse of the same text, errors included.
struct Reloads {
    dir: std::path::PathBuf,
    file: std::path::PathBuf,
    loader: Loader,
}

impl Reloads {
    fn new(tag: &str) -> Reloads {
        let dir = std::env::temp_dir().join(format!("coregate-{tag}-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Reloads {
            file: dir.join("gw.yaml"),
            dir,
            loader: Loader::default(),
        }
    }

    /// Loads `text`: what the loader gives, and how many routes it took from the last load.
    fn load(&mut self, text: &str) -> (Result<Config, ConfigErrors>, usize) {
        std::fs::write(&self.file, text).unwrap();
        let got = self.loader.load(&self.file);
        assert_eq!(got, parse(text, &self.file.display().to_string()), "{text}");
        (got, self.loader.routes_reused)
    }
}

impl Drop for Reloads {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A listener with `n` numbered routes and a catch-all, in two virtual hosts.
fn many_routes(n: usize) -> String {
    let mut text = String::from(
        "listeners:\n  - name: l\n    address: 127.0.0.1:10000\n    virtual_hosts:\n      - name: v\n        domains: [\"a.example.com\"]\n        routes:\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "          - match: {{ prefix: \"/r{i}/\" }}\n            route: {{ cluster: c }}\n"
        ));
    }
    text.push_str("          - match: { prefix: \"/\" }\n            route: { cluster: c }\n");
    text.push_str("      - name: w\n        domains: [\"*\"]\n        routes:\n");
    text.push_str("        - match: { prefix: \"/w/\" }\n          route: { cluster: c }\n");
    text.push_str("        # a comment between entries\n\n");
    text.push_str(
        "        - match: { prefix: \"/\" }\n          direct_response: { status: 204 }\n",
    );
    text.push_str("clusters:\n  - name: c\n    endpoints:\n      - { address: 127.0.0.1:9001 }\n");
    text
}

/// Parses `text` with the section cache (as `sectioned` does) and returns how many route
/// entries it parsed (0: the listeners section is unchanged), or None when it parsed the
/// listeners section whole.
fn route_entries(cache: &mut sections::Sections, text: &str) -> Option<usize> {
    sectioned(cache, text);
    if !cache.reparsed("listeners") {
        return Some(0);
    }
    cache.routes.is_split().then_some(cache.routes.parsed)
}

#[test]
fn a_reload_parses_only_the_route_entries_that_changed() {
    let mut cache = sections::Sections::default();
    let text = many_routes(20);
    assert_eq!(
        route_entries(&mut cache, &text),
        Some(23),
        "the first load parses them all"
    );
    assert_eq!(route_entries(&mut cache, &text), Some(0), "nothing changed");
    // One route edited, one inserted, one removed, two swapped, one at each end.
    let edited = text.replace("\"/r7/\"", "\"/r7x/\"");
    assert_eq!(route_entries(&mut cache, &edited), Some(1));
    let inserted = edited.replace(
        "          - match: { prefix: \"/r3/\" }\n",
        "          - match: { prefix: \"/new/\" }\n            route: { cluster: c }\n          - match: { prefix: \"/r3/\" }\n",
    );
    assert_eq!(route_entries(&mut cache, &inserted), Some(1));
    let removed = inserted.replace(
        "          - match: { prefix: \"/r5/\" }\n            route: { cluster: c }\n",
        "",
    );
    assert_eq!(route_entries(&mut cache, &removed), Some(0));
    let swapped = removed
        .replace("\"/r10/\"", "\"/tmp/\"")
        .replace("\"/r11/\"", "\"/r10/\"")
        .replace("\"/tmp/\"", "\"/r11/\"");
    assert_eq!(route_entries(&mut cache, &swapped), Some(2));
    let ends = swapped.replace("\"/r0/\"", "\"/first/\"").replace(
        "direct_response: { status: 204 }",
        "direct_response: { status: 404 }",
    );
    assert_eq!(route_entries(&mut cache, &ends), Some(2));
    // A comment or a blank line inside an entry makes it a changed entry, nothing more.
    let commented = ends.replace(
        "            route: { cluster: c }\n          - match: { prefix: \"/r2/\" }",
        "            route: { cluster: c }  # first\n\n          - match: { prefix: \"/r2/\" }",
    );
    assert_eq!(route_entries(&mut cache, &commented), Some(1));
    // Another virtual host: the lists change shape, every entry is parsed again.
    let hosts = commented.replace(
        "clusters:\n",
        "      - name: x\n        domains: [\"x.example.com\"]\n        routes:\n          - match: { prefix: \"/\" }\n            route: { cluster: c }\nclusters:\n",
    );
    assert_eq!(route_entries(&mut cache, &hosts), Some(24));
    // CRLF line ends split the same way.
    let crlf = hosts.replace('\n', "\r\n");
    assert_eq!(route_entries(&mut cache, &crlf), Some(24));
    let crlf_edited = crlf.replace("\"/r8/\"", "\"/r8x/\"");
    assert_eq!(route_entries(&mut cache, &crlf_edited), Some(1));
}

/// Routes whose entries are unchanged are the last load's validated routes while the cluster
/// names stay; each load still equals a fresh parse of the same text, errors included.
#[test]
fn a_reload_validates_only_the_routes_that_changed() {
    let mut reloads = Reloads::new("routes");
    let dir = reloads.dir.clone();
    let mut load = |text: &str| reloads.load(text);
    let text = many_routes(20);
    assert_eq!(load(&text).1, 0, "the first load validates every route");
    // 23 routes: one edited, then one inserted before it.
    let edited = text.replace("\"/r7/\"", "\"/r7x/\"");
    assert_eq!(load(&edited).1, 22);
    let inserted = edited.replace(
        "          - match: { prefix: \"/r3/\" }\n",
        "          - match: { prefix: \"/new/\" }\n            route: { cluster: c }\n          - match: { prefix: \"/r3/\" }\n",
    );
    let (config, reused) = load(&inserted);
    assert_eq!(reused, 23);
    assert_eq!(
        config.unwrap().listeners[0].virtual_hosts[0].routes.len(),
        22
    );
    // The listener changed, no route did: every route is kept.
    let listener = inserted.replace("address: 127.0.0.1:10000", "address: 127.0.0.1:10001");
    assert_eq!(load(&listener).1, 24);
    // A cluster before `c` moves its index: every route is validated again.
    let clusters = listener.replace(
        "clusters:\n",
        "clusters:\n  - name: b\n    endpoints:\n      - { address: 127.0.0.1:9002 }\n",
    );
    let (config, reused) = load(&clusters);
    assert_eq!(reused, 0);
    assert_eq!(
        config.unwrap().listeners[0].virtual_hosts[0].routes[0].cluster,
        1
    );
    // A refused load, then a good one: validated whole (the refused parse moved the caches).
    let unknown = clusters.replace(
        "\"/r9/\" }\n            route: { cluster: c }",
        "\"/r9/\" }\n            route: { cluster: x }",
    );
    assert!(load(&unknown).0.is_err());
    assert_eq!(load(&clusters.replace("\"/r2/\"", "\"/r2x/\"")).1, 0);
    // A route whose body is a file reads it at every load.
    std::fs::write(dir.join("body.txt"), "one").unwrap();
    let body = clusters.replace(
        "direct_response: { status: 204 }",
        "direct_response: { status: 200, body: { filename: body.txt } }",
    );
    let (a, _) = load(&body);
    std::fs::write(dir.join("body.txt"), "two").unwrap();
    let (b, reused) = load(&body.replace("\"/r2/\"", "\"/r2y/\""));
    assert_eq!(reused, 22, "all but the edited route and the body file's");
    assert_ne!(
        a.unwrap().listeners[0].virtual_hosts[1].routes,
        b.unwrap().listeners[0].virtual_hosts[1].routes
    );
}

#[test]
fn a_changed_route_entry_with_an_error_gets_the_whole_files_error() {
    let mut cache = sections::Sections::default();
    let text = many_routes(5);
    assert_eq!(route_entries(&mut cache, &text), Some(8));
    // Each is the same error as a whole parse's (sectioned asserts it), with its path.
    let unknown = text.replace(
        "route: { cluster: c }\n          - match: { prefix: \"/r3/\" }",
        "route: { cluster: c, colour: red }\n          - match: { prefix: \"/r3/\" }",
    );
    sectioned(&mut cache, &unknown);
    let e = parse(&unknown, "f.yaml").unwrap_err();
    assert!(e.to_string().contains("routes[2].route"), "{e}");
    let bad_cluster = text.replace(
        "\"/r4/\" }\n            route: { cluster: c }",
        "\"/r4/\" }\n            route: { cluster: nope }",
    );
    sectioned(&mut cache, &bad_cluster);
    assert!(
        parse(&bad_cluster, "f.yaml")
            .unwrap_err()
            .to_string()
            .contains("routes[4].route.cluster")
    );
    let not_a_list = text.replace(
        "          - match: { prefix: \"/r1/\" }",
        "          - - match: { prefix: \"/r1/\" }",
    );
    sectioned(&mut cache, &not_a_list);
    // The good file after them: served, entries parsed again as needed.
    sectioned(&mut cache, &text);
}

#[test]
fn listeners_the_route_split_does_not_handle_are_parsed_whole() {
    let mut cache = sections::Sections::default();
    let text = many_routes(3);
    assert_eq!(route_entries(&mut cache, &text), Some(6));
    let edit = |from: &str, to: &str| {
        assert!(text.contains(from), "{from}");
        text.replace(from, to)
    };
    for layout in [
        // An anchor and its alias, a tag, a block scalar, a quoted string and a flow mapping
        // over two lines, a tab, a virtual host without routes, routes as a flow list.
        edit("{ prefix: \"/r1/\" }", "&m { prefix: \"/r1/\" }")
            .replace("{ prefix: \"/r2/\" }", "*m"),
        edit(
            "route: { cluster: c }\n          - match: { prefix: \"/r1/\" }",
            "route: { cluster: !!str c }\n          - match: { prefix: \"/r1/\" }",
        ),
        edit(
            "direct_response: { status: 204 }",
            "direct_response:\n            status: 200\n            body:\n              inline_string: |\n                routes:\n                - x\n",
        ),
        edit("{ prefix: \"/r0/\" }", "{ prefix: \"/r0\n            /\" }"),
        edit(
            "{ prefix: \"/r0/\" }",
            "{ prefix:\n              \"/r0/\" }",
        ),
        edit(
            "          - match: { prefix: \"/r2/\" }",
            "\t- match: { prefix: \"/r2/\" }",
        ),
        edit(
            "      - name: w\n",
            "      - name: bare\n        domains: [\"b.example.com\"]\n      - name: w\n",
        ),
        edit(
            "      - name: w\n",
            "      - name: flow\n        domains: [\"f.example.com\"]\n        routes: [{ match: { prefix: \"/\" }, route: { cluster: c } }]\n      - name: w\n",
        ),
    ] {
        // Not split (the whole section's parse, or its error, as sectioned checks), and the
        // cache starts over.
        assert_eq!(route_entries(&mut cache, &layout), None, "{layout}");
        assert_eq!(route_entries(&mut cache, &text), Some(6), "{layout}");
    }
}

/// Random edits of a routes-heavy file, one after another through one cache: after each, the
/// cache's parse validates to what a whole parse does, error for error (`sectioned`). The
/// entries come in the shapes a file may hold (flow and block mappings, comments, quoted
/// strings with YAML's indicators in them, compact lists); the edits move, copy, drop and
/// change whole entries and single characters. Seeded: the same 400 files every run.
#[test]
fn route_entry_caching_parses_random_edits_as_a_whole_parse_does() {
    let shapes = [
        "- match: { prefix: \"/p{i}/\" }\n  route: { cluster: c }\n",
        "- match:\n    prefix: /b{i}/\n  route:\n    cluster: c  # a comment\n",
        "- match: { path: \"/x{i}: #&*!|>\" }\n  direct_response: { status: 204 }\n",
        "- match: { prefix: '/q{i}/it''s' }\n  route: { cluster: c, timeout: 2s }\n",
        "- name: n{i}\n  match: { prefix: \"/n{i}/\", methods: [GET, POST] }\n  route: { cluster: c }\n",
        "# a comment line\n- match: { prefix: \"/c{i}/\" }\n\n  route: { cluster: c }\n",
    ];
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let entry = |rng: &mut fastrand::Rng, i: usize, indent: usize| -> String {
        let shape = shapes[rng.usize(..shapes.len())].replace("{i}", &i.to_string());
        let pad = " ".repeat(indent);
        shape.lines().map(|l| format!("{pad}{l}\n")).collect()
    };
    let file = |hosts: &[(usize, Vec<String>)]| -> String {
        let mut text = String::from(
            "listeners:\n  - name: l\n    address: 127.0.0.1:10000\n    virtual_hosts:\n",
        );
        for (h, (_, entries)) in hosts.iter().enumerate() {
            text.push_str(&format!(
                "      - name: h{h}\n        domains: [\"h{h}.example.com\"]\n        routes:\n"
            ));
            for e in entries {
                text.push_str(e);
            }
        }
        text.push_str(
            "clusters:\n  - name: c\n    endpoints:\n      - { address: 127.0.0.1:9001 }\n",
        );
        text
    };
    // Two virtual hosts: one with its entries under `routes:` indented, one compact.
    let mut hosts: Vec<(usize, Vec<String>)> = vec![(10, Vec::new()), (8, Vec::new())];
    let mut next = 0;
    for (indent, entries) in &mut hosts {
        for _ in 0..12 {
            entries.push(entry(&mut rng, next, *indent));
            next += 1;
        }
    }
    let mut cache = sections::Sections::default();
    let mut split = 0;
    for _ in 0..400 {
        let (indent, entries) = &mut hosts[rng.usize(..2)];
        let at = rng.usize(..entries.len());
        match rng.u8(..6) {
            0 => {
                entries.insert(at, entry(&mut rng, next, *indent));
                next += 1;
            }
            1 if entries.len() > 1 => drop(entries.remove(at)),
            2 => {
                let to = rng.usize(..entries.len());
                entries.swap(at, to);
            }
            3 => entries[at] = entry(&mut rng, next, *indent),
            _ => {}
        }
        let mut text = file(&hosts);
        if rng.u8(..4) == 0 {
            // One character of the listeners section changed, dropped or doubled.
            let end = text.find("clusters:").unwrap_or(text.len());
            let at = rng.usize(..end);
            if text.is_char_boundary(at) && text.is_char_boundary(at + 1) {
                let c =
                    [' ', '-', ':', '#', '"', '\'', '\n', '{', '}', 'x', '&', '|'][rng.usize(..12)];
                match rng.u8(..3) {
                    0 => text.replace_range(at..at + 1, &c.to_string()),
                    1 => text.replace_range(at..at + 1, ""),
                    _ => text.insert(at, c),
                }
            }
        }
        sectioned(&mut cache, &text);
        split += usize::from(cache.routes.is_split());
    }
    // Most files took the split (the rest were parsed whole, as they must be).
    assert!(split > 200, "only {split} of 400 files were split");
}
