//! How long does routing one request take as tables grow: virtual host choice (exact name,
//! wildcard suffix, default) among 10, 1,000 and 10,000 vhosts, and first-match route lookup
//! among 10, 1,000 and 10,000 routes (prefix and exact) of one vhost?

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::Method;

use coregate::config::{Domain, PathMatch, Route, VirtualHost};
use coregate::route::Router;

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
            routes: vec![prefix_route("/".into(), 0)],
            redirect_to_https: false,
            include_request_attempt_count: false,
            header_edits: None,
        })
        .collect();
    vhosts.push(VirtualHost {
        name: "default".into(),
        domains: vec![Domain::Any],
        routes: vec![prefix_route("/".into(), 0)],
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
        routes,
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

criterion_group!(benches, bench_vhosts, bench_routes);
criterion_main!(benches);
