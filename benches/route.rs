//! How long does routing one request take as tables grow: virtual host choice (exact name,
//! wildcard suffix, default) among 10, 1,000 and 10,000 vhosts, and first-match route lookup
//! among 10, 1,000 and 10,000 routes (prefix and exact) of one vhost; and among 10,000 mixed
//! routes (literal prefix and exact, header matchers, safe_regex, case-insensitive) with a
//! request carrying typical headers?

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::Method;

use coregate::config::{Domain, PathMatch, Route, VirtualHost};
use coregate::message::RequestHead;
use coregate::route::Router;
use coregate::route_match::{
    HeaderMatcher, HeaderName, HeaderTest, MatchRules, Pattern, RequestView, StringMatch,
    StringMatcher,
};

fn prefix_route(p: String, cluster: usize) -> Route {
    Route {
        path: PathMatch::Prefix(p),
        methods: None,
        cluster,
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
    }
}

/// `n` vhosts, each with an exact name and a wildcard, plus a default.
fn many_vhosts(n: usize) -> Router {
    let mut vhosts: Vec<VirtualHost> = (0..n)
        .map(|i| VirtualHost {
            name: format!("vh{i}"),
            domains: vec![
                Domain::Exact(format!("service-{i}.example.com")),
                Domain::Suffix(format!(".tenant-{i}.example.net")),
            ],
            routes: vec![Arc::new(prefix_route("/".into(), 0))],
            redirect_to_https: false,
            include_request_attempt_count: false,
            header_edits: None,
        })
        .collect();
    vhosts.push(VirtualHost {
        name: "default".into(),
        domains: vec![Domain::Any],
        routes: vec![Arc::new(prefix_route("/".into(), 0))],
        redirect_to_https: false,
        include_request_attempt_count: false,
        header_edits: None,
    });
    Router::new(&vhosts)
}

/// One vhost with `n` routes: API-style prefixes and exact paths, the catch-all last.
fn many_routes(n: usize) -> Router {
    let mut routes: Vec<Route> = (0..n - 1)
        .map(|i| {
            if i % 4 == 0 {
                Route {
                    path: PathMatch::Exact(format!("/v1/resource-{i}/status")),
                    methods: Some(vec![Method::GET]),
                    cluster: i,
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
                }
            } else {
                prefix_route(format!("/v1/resource-{i}/"), i)
            }
        })
        .collect();
    routes.push(prefix_route("/".into(), n));
    Router::new(&[VirtualHost {
        name: "api".into(),
        domains: vec![Domain::Any],
        routes: routes.into_iter().map(Arc::new).collect(),
        redirect_to_https: false,
        include_request_attempt_count: false,
        header_edits: None,
    }])
}

fn bench_vhosts(c: &mut Criterion) {
    let mut g = c.benchmark_group("route/vhosts");
    for n in [10, 1_000, 10_000] {
        let router = many_vhosts(n);
        let exact = format!("Service-{}.example.com:443", n / 2);
        let wildcard = format!("api.tenant-{}.example.net", n / 2);
        g.bench_with_input(BenchmarkId::new("exact", n), &exact, |b, host| {
            b.iter(|| router.route(black_box(host.as_bytes()), b"/x", &Method::GET))
        });
        g.bench_with_input(BenchmarkId::new("wildcard", n), &wildcard, |b, host| {
            b.iter(|| router.route(black_box(host.as_bytes()), b"/x", &Method::GET))
        });
        g.bench_with_input(BenchmarkId::new("default", n), "unknown.org", |b, host| {
            b.iter(|| router.route(black_box(host.as_bytes()), b"/x", &Method::GET))
        });
    }
    g.finish();
}

fn bench_routes(c: &mut Criterion) {
    let mut g = c.benchmark_group("route/routes");
    for n in [10, 1_000, 10_000] {
        let router = many_routes(n);
        let middle = format!("/v1/resource-{}/items/42", n / 2 + 1 - (n / 2 + 1) % 4 + 1);
        g.bench_with_input(BenchmarkId::new("prefix-middle", n), &middle, |b, path| {
            b.iter(|| router.route(b"api.example.com", black_box(path.as_bytes()), &Method::GET))
        });
        g.bench_with_input(
            BenchmarkId::new("catch-all-last", n),
            "/static/app.js",
            |b, path| {
                b.iter(|| {
                    router.route(b"api.example.com", black_box(path.as_bytes()), &Method::GET)
                })
            },
        );
    }
    g.finish();
}

/// 10,000 routes as a large API gateway has them: ~97% literal prefix or exact paths, 2% a
/// literal prefix plus a header matcher (canaries), 1% `safe_regex` with a literal prefix
/// (`/v1/resource-N/items/[0-9]+`), a few case-insensitive legacy prefixes (the side list), one
/// regex with no literal prefix (runs for every request that gets that far), the catch-all last.
fn mixed_routes(n: usize) -> Router {
    let mut routes: Vec<Route> = (0..n - 8)
        .map(|i| {
            let mut r = prefix_route(format!("/v1/resource-{i}/"), i);
            match i {
                _ if i % 100 == 7 => {
                    let re = format!("/v1/resource-{i}/items/[0-9]+");
                    r.path = PathMatch::Regex(Pattern::new(&re).expect("valid regex"));
                }
                _ if i % 50 == 3 => r.rules.headers.push(HeaderMatcher {
                    name: HeaderName::Field(b"x-canary".as_slice().into()),
                    test: HeaderTest::String(StringMatcher {
                        kind: StringMatch::Exact(b"1".as_slice().into()),
                        ignore_case: false,
                    }),
                    invert_match: false,
                    treat_missing_header_as_empty: false,
                }),
                _ if i % 4 == 0 => {
                    r.path = PathMatch::Exact(format!("/v1/resource-{i}/status"));
                    r.methods = Some(vec![Method::GET]);
                }
                _ => {}
            }
            r
        })
        .collect();
    for k in 0..5 {
        let mut r = prefix_route(format!("/Legacy-{k}/"), n + k);
        r.rules = MatchRules {
            case_insensitive: true,
            ..MatchRules::default()
        };
        routes.push(r);
    }
    let mut assets = prefix_route(String::new(), n + 5);
    assets.path = PathMatch::Regex(Pattern::new(r".*\.(css|js|png)").expect("valid regex"));
    routes.push(assets);
    routes.push(prefix_route("/".into(), n + 6));
    Router::new(&[VirtualHost {
        name: "api".into(),
        domains: vec![Domain::Any],
        routes: routes.into_iter().map(Arc::new).collect(),
        redirect_to_https: false,
        include_request_attempt_count: false,
        header_edits: None,
    }])
}

/// A GET with the headers a browser or SDK sends.
fn request(target: &str, canary: bool) -> RequestHead {
    let mut head = RequestHead::default();
    head.set_target(target.as_bytes());
    head.set_authority(b"api.example.com");
    for (name, value) in [
        ("host", "api.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("accept-language", "en-US,en;q=0.9"),
        ("authorization", "Bearer abcdefghijklmnopqrstuvwxyz"),
        ("x-request-id", "0f8fad5b-d9cb-469f-a165-70867728950e"),
        ("x-forwarded-for", "192.0.2.10"),
    ] {
        head.headers.append(name.as_bytes(), value.as_bytes());
    }
    if canary {
        head.headers.append(b"x-canary", b"1");
    }
    head
}

fn bench_mixed(c: &mut Criterion) {
    let mut g = c.benchmark_group("route/mixed");
    let n = 10_000;
    let router = mixed_routes(n);
    let cases = [
        ("prefix", "/v1/resource-5001/items/42", false, 5001),
        ("exact", "/v1/resource-5000/status", false, 5000),
        ("header-hit", "/v1/resource-5003/orders?page=2", true, 5003),
        (
            "header-miss",
            "/v1/resource-5003/orders?page=2",
            false,
            n + 6,
        ),
        ("regex", "/v1/resource-5007/items/42", false, 5007),
        ("case-insensitive", "/legacy-3/index", false, n + 3),
        ("catch-all-last", "/static/app", false, n + 6),
    ];
    for (name, target, canary, want) in cases {
        let head = request(target, canary);
        let find = || {
            router
                .virtual_host(head.authority())
                .and_then(|v| v.routes.find_for(&RequestView::of(&head, false, false)))
                .map(|r| r.cluster)
        };
        assert_eq!(find(), Some(want), "{name}: {target}");
        g.bench_function(BenchmarkId::new(name, n), |b| b.iter(|| black_box(find())));
    }
    g.finish();
}

criterion_group!(benches, bench_vhosts, bench_routes, bench_mixed);
criterion_main!(benches);
