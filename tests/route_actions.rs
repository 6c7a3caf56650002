//! Route actions over real sockets (Envoy's names): a weighted split exact per period, path
//! and Host rewrites as the upstream sees them, redirects (each field and code), direct
//! responses (inline, from a file, to HEAD), the route's name in the access log, and config
//! errors with their field paths.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use coregate::config;
use coregate::stats::ListenerStats;
use support::client::{Body, HttpClient, Resp};
use support::gateway::TestGateway;
use support::h2origin::H2Origin;
use support::harness::T;
use support::tls::Dir;
use support::upstream::HttpUpstream;

/// Routes for every action; `{log}` is the access log file.
const ROUTES: &str = r#"workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    access_log:
      - path: "{log}"
        format: "%ROUTE_NAME% %UPSTREAM_CLUSTER% %RESPONSE_CODE% %REQ(:PATH)% %BYTES_SENT%\n"
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - name: canary
            match: { prefix: "/split" }
            route:
              weighted_clusters:
                clusters: [{ name: blue, weight: 1 }, { name: green, weight: 3 }]
                total_weight: 4
          - name: api-v2
            match: { prefix: "/api/" }
            route: { cluster: blue, prefix_rewrite: "/v2/" }
          - match: { path: "/exact" }
            route: { cluster: blue, prefix_rewrite: "/replaced" }
          - match: { prefix: "/svc/" }
            route:
              cluster: blue
              regex_rewrite: { pattern: { regex: '^/svc/([^/]+)/(.*)$' }, substitution: '/\2/of/\1' }
          - match: { prefix: "/drop" }
            route:
              cluster: blue
              regex_rewrite: { pattern: { regex: '^/drop(.*)$' }, substitution: '\1' }
          - match: { prefix: "/literal" }
            route: { cluster: blue, host_rewrite_literal: "upstream.internal:8443" }
          - match: { prefix: "/auto" }
            route: { cluster: green, auto_host_rewrite: true }
          - name: to-https
            match: { prefix: "/r/https" }
            redirect: { https_redirect: true }
          - match: { prefix: "/r/host" }
            redirect: { host_redirect: "other.example", port_redirect: 8443, response_code: FOUND }
          - match: { prefix: "/r/path" }
            redirect: { path_redirect: "/elsewhere", strip_query: true, response_code: 303 }
          - match: { prefix: "/r/prefix/" }
            redirect: { prefix_rewrite: "/new/", response_code: TEMPORARY_REDIRECT }
          - match: { prefix: "/r/scheme" }
            redirect:
              scheme_redirect: https
              host_redirect: secure.example
              response_code: PERMANENT_REDIRECT
          - match: { prefix: "/r/query" }
            redirect: { path_redirect: "/q?fixed=1", strip_query: true }
          - name: maintenance
            match: { prefix: "/d/inline" }
            direct_response: { status: 503, body: { inline_string: "down for maintenance\n" } }
          - match: { prefix: "/d/file" }
            direct_response: { status: 200, body: { filename: "body.txt" } }
          - match: { prefix: "/d/empty" }
            direct_response: { status: 204 }
clusters:
  - name: blue
    endpoints: [{ address: "{blue}" }]
  - name: green
    endpoints: [{ address: "{green}" }]
"#;

/// The gateway over two origins that answer with their names, its config in `dir` (so that
/// `body.txt` is found beside it).
struct Setup {
    blue: HttpUpstream,
    green: HttpUpstream,
    gw: TestGateway,
    log: std::path::PathBuf,
    _dir: Dir,
}

const FILE_BODY: &str = "<h1>served from a file</h1>\n";

fn setup() -> Setup {
    let blue = HttpUpstream::builder().name("blue").start();
    let green = HttpUpstream::builder().name("green").start();
    let dir = Dir::new("route-actions");
    dir.write("body.txt", FILE_BODY);
    let log = dir.path("access.log");
    let yaml = ROUTES
        .replace("{log}", &log.display().to_string())
        .replace("{blue}", &blue.addr().to_string())
        .replace("{green}", &green.addr().to_string());
    let gw = start_in(&dir.path("gateway.yaml"), &yaml);
    Setup {
        blue,
        green,
        gw,
        log,
        _dir: dir,
    }
}

/// Starts a gateway whose config file is `file` (relative paths in it are taken from its
/// directory).
fn start_in(file: &Path, yaml: &str) -> TestGateway {
    let config = config::parse(yaml, &file.display().to_string())
        .unwrap_or_else(|e| panic!("invalid config:\n{e}"));
    let gateway = coregate::Gateway::start(config).expect("gateway start");
    let addr = gateway.local_addr("main").expect("listener address");
    TestGateway { gateway, addr }
}

fn client(addr: SocketAddr) -> HttpClient {
    let mut c = HttpClient::connect(addr).expect("connect");
    c.set_timeout(T);
    c
}

fn get(c: &mut HttpClient, path: &str, host: &str) -> Resp {
    c.get(path, host)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// A listener counter summed over workers, once it reaches `want` (or after a bounded wait):
/// a request is counted just after its response is written.
fn counter(gw: &TestGateway, want: u64, f: impl Fn(&ListenerStats) -> u64) -> u64 {
    let deadline = Instant::now() + T;
    loop {
        let stats = gw.gateway.registry().listener_per_worker("main");
        let n = stats.iter().map(|s| f(s)).sum();
        if n >= want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits (bounded) until the access log holds at least `n` lines: cores hand their lines to
/// the writer once a second.
fn log_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn weighted_clusters_split_exactly_and_the_log_names_route_and_cluster() {
    let s = setup();
    let mut c = client(s.gw.addr);
    let mut answers = Vec::new();
    for _ in 0..8 {
        let r = get(&mut c, "/split", "example.com");
        assert_eq!(r.status, 200);
        answers.push(r.text().trim().to_owned());
    }
    let blue = answers.iter().filter(|a| *a == "blue").count();
    let green = answers.iter().filter(|a| *a == "green").count();
    assert_eq!(
        (blue, green),
        (2, 6),
        "weights 1:3 over 8 requests: {answers:?}"
    );
    // Smooth, not in bursts: never more than 3 greens in a row.
    assert!(
        !answers.windows(4).any(|w| w.iter().all(|a| a == "green")),
        "{answers:?}"
    );
    assert_eq!(s.blue.request_count(), 2);
    assert_eq!(s.green.request_count(), 6);
    // The access log names the route and the cluster actually picked.
    let lines = log_lines(&s.log, 8);
    let canary = |cluster: &str| {
        (lines.iter())
            .filter(|l| *l == &format!("canary {cluster} 200 /split {}", cluster.len() + 1))
            .count()
    };
    assert_eq!((canary("blue"), canary("green")), (2, 6), "{lines:?}");
    // A route without a name logs "-"; a direct response has no cluster.
    get(&mut c, "/literal", "example.com");
    get(&mut c, "/d/inline", "example.com");
    let lines = log_lines(&s.log, 10);
    assert!(
        lines.contains(&"- blue 200 /literal 5".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"maintenance - 503 /d/inline 21".to_owned()),
        "{lines:?}"
    );
}

#[test]
fn path_rewrites_reach_the_upstream_with_the_query() {
    let s = setup();
    let mut c = client(s.gw.addr);
    let cases = [
        ("/api/users?limit=5", "/v2/users?limit=5"),
        ("/api/", "/v2/"),
        // An exact path match: the whole path is replaced.
        ("/exact?x=1", "/replaced?x=1"),
        ("/svc/foo/bar/baz?q=a%20b", "/bar/baz/of/foo?q=a%20b"),
        ("/drop/kept", "/kept"),
    ];
    for (sent, seen) in cases {
        let r = get(&mut c, sent, "example.com");
        assert_eq!(r.status, 200, "{sent}");
        let got = s.blue.requests().last().map(|r| r.path.clone());
        assert_eq!(got.as_deref(), Some(seen), "{sent}");
    }
    // A rewrite that leaves no path is the gateway's failure: 500, counted, nothing sent.
    let before = s.blue.request_count();
    let r = get(&mut c, "/drop", "example.com");
    assert_eq!(r.status, 500);
    assert_eq!(s.blue.request_count(), before);
    assert_eq!(counter(&s.gw, 1, |l| l.rq_rewrite_invalid.get()), 1);
}

#[test]
fn host_rewrites_reach_the_upstream() {
    let s = setup();
    let mut c = client(s.gw.addr);
    get(&mut c, "/literal", "example.com");
    let seen = s.blue.requests().last().cloned().expect("a request");
    assert_eq!(seen.header("host"), Some("upstream.internal:8443"));
    assert_eq!(seen.path, "/literal");
    get(&mut c, "/auto/x", "example.com");
    let seen = s.green.requests().last().cloned().expect("a request");
    let want = s.green.addr().to_string();
    assert_eq!(seen.header("host"), Some(want.as_str()));
    // The other routes keep the client's Host.
    get(&mut c, "/api/x", "example.com:8080");
    let seen = s.blue.requests().last().cloned().expect("a request");
    assert_eq!(seen.header("host"), Some("example.com:8080"));
}

#[test]
fn redirects_build_their_location_from_the_request() {
    let s = setup();
    let mut c = client(s.gw.addr);
    let cases = [
        (
            "/r/https?q=1",
            "example.com",
            301,
            "https://example.com/r/https?q=1",
        ),
        // The old scheme's default port goes, another stays.
        (
            "/r/https",
            "example.com:80",
            301,
            "https://example.com/r/https",
        ),
        (
            "/r/https",
            "example.com:8080",
            301,
            "https://example.com:8080/r/https",
        ),
        (
            "/r/host?q=1",
            "example.com:8080",
            302,
            "http://other.example:8443/r/host?q=1",
        ),
        (
            "/r/path/x?q=1",
            "example.com",
            303,
            "http://example.com/elsewhere",
        ),
        (
            "/r/prefix/x/y?q=1",
            "example.com",
            307,
            "http://example.com/new/x/y?q=1",
        ),
        (
            "/r/scheme?q=1",
            "example.com",
            308,
            "https://secure.example/r/scheme?q=1",
        ),
        // A path_redirect with its own query keeps it even with strip_query.
        (
            "/r/query?q=1",
            "example.com",
            301,
            "http://example.com/q?fixed=1",
        ),
    ];
    for (path, host, status, location) in cases {
        let r = get(&mut c, path, host);
        assert_eq!(r.status, status, "{path} {host}");
        assert_eq!(r.header("location"), Some(location), "{path} {host}");
        assert_eq!(r.header("content-length"), Some("0"), "{path}");
        assert!(r.body.is_empty());
    }
    // A redirect is answered by the gateway: nothing reaches an upstream.
    assert_eq!(s.blue.request_count() + s.green.request_count(), 0);
    let n = cases.len() as u64;
    assert_eq!(counter(&s.gw, n, |l| l.rq_redirect.get()), n);
    // A POST with a body is redirected too, on a connection that stays usable.
    let r = c
        .request(
            "POST",
            "/r/https",
            &[("host", "example.com")],
            Body::Bytes(b"payload".to_vec()),
        )
        .expect("POST");
    assert_eq!(r.status, 301);
    assert_eq!(get(&mut c, "/api/x", "example.com").status, 200);
}

#[test]
fn direct_responses_inline_from_a_file_and_to_head() {
    let s = setup();
    let mut c = client(s.gw.addr);
    let r = get(&mut c, "/d/inline", "example.com");
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "down for maintenance\n");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("content-length"), Some("21"));
    let r = get(&mut c, "/d/file", "example.com");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), FILE_BODY);
    let len = FILE_BODY.len().to_string();
    assert_eq!(r.header("content-length"), Some(len.as_str()));
    // HEAD: the length, no body (the connection stays in step: the next answer parses).
    let r = c
        .request("HEAD", "/d/file", &[("host", "example.com")], Body::Empty)
        .expect("HEAD");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(len.as_str()));
    assert!(r.body.is_empty());
    let r = get(&mut c, "/d/empty", "example.com");
    assert_eq!(r.status, 204);
    assert!(r.header("content-type").is_none());
    assert!(r.body.is_empty());
    assert_eq!(s.blue.request_count() + s.green.request_count(), 0);
    assert_eq!(counter(&s.gw, 4, |l| l.rq_direct_response.get()), 4);
}

#[test]
fn the_config_dump_shows_names_and_actions() {
    let s = setup();
    let snapshot = s.gw.gateway.published();
    let dump = snapshot.lock().expect("lock").config.dump();
    let routes = &dump["listeners"][0]["virtual_hosts"][0]["routes"];
    assert_eq!(routes[0]["name"], "canary");
    let weighted = &routes[0]["action"]["weighted_clusters"];
    assert_eq!(weighted[1]["name"], "green");
    assert_eq!(weighted[1]["weight"], 3);
    assert_eq!(routes[7]["action"]["redirect"]["scheme_redirect"], "https");
    assert_eq!(routes[13]["action"]["direct_response"]["status"], 503);
}

// ---------------------------------------------------------------- config errors

/// A config with one route whose action lines are `action` (indented 12).
fn with_route(action: &str) -> String {
    format!(
        "listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: [\"*\"]
        routes:
          - match: {{ prefix: \"/\" }}
{action}
clusters:
  - name: a
    endpoints: [{{ address: \"127.0.0.1:9001\" }}]
  - name: b
    endpoints: [{{ address: \"127.0.0.1:9002\" }}]
"
    )
}

/// Every error of `yaml` as "path: reason" lines.
fn errors(yaml: &str) -> Vec<(String, String)> {
    match config::parse(yaml, "/nonexistent-dir/t.yaml") {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.0.into_iter().map(|e| (e.path, e.reason)).collect(),
    }
}

fn assert_error(yaml: &str, path: &str, words: &str) {
    let errs = errors(yaml);
    assert!(
        errs.iter().any(|(p, r)| p == path && r.contains(words)),
        "no error at {path} with {words:?}: {errs:#?}"
    );
}

const R: &str = "listeners[0].virtual_hosts[0].routes[0]";

#[test]
fn config_errors_name_their_field() {
    assert_error(
        &with_route(
            "            route: { cluster: a, weighted_clusters: { clusters: [{ name: a, weight: 1 }] } }",
        ),
        &format!("{R}.route"),
        "not both",
    );
    assert_error(
        &with_route(
            "            route: { weighted_clusters: { clusters: [{ name: a, weight: 1 }, { name: nope, weight: 1 }] } }",
        ),
        &format!("{R}.route.weighted_clusters.clusters[1].name"),
        "unknown cluster \"nope\" (known: a, b)",
    );
    assert_error(
        &with_route(
            "            route: { weighted_clusters: { clusters: [{ name: a, weight: 1 }], total_weight: 100 } }",
        ),
        &format!("{R}.route.weighted_clusters.total_weight"),
        "sum of the weights (1)",
    );
    assert_error(
        &with_route(
            "            route: { cluster: a, regex_rewrite: { pattern: { regex: '([a-z' }, substitution: '/' } }",
        ),
        &format!("{R}.route.regex_rewrite.pattern.regex"),
        "invalid regex",
    );
    assert_error(
        &with_route(
            "            route: { cluster: a, regex_rewrite: { pattern: { regex: '^/(a)' }, substitution: '/\\2' } }",
        ),
        &format!("{R}.route.regex_rewrite.substitution"),
        "group",
    );
    assert_error(
        &with_route("            route: { cluster: a, prefix_rewrite: \"v2/\" }"),
        &format!("{R}.route.prefix_rewrite"),
        "must start with '/'",
    );
    assert_error(
        &with_route(
            "            direct_response: { status: 200, body: { filename: missing.txt } }",
        ),
        &format!("{R}.direct_response.body.filename"),
        "cannot read /nonexistent-dir/missing.txt",
    );
    let big = "x".repeat(5000);
    assert_error(
        &with_route(&format!(
            "            direct_response: {{ status: 200, body: {{ inline_string: \"{big}\" }} }}"
        )),
        &format!("{R}.direct_response.body.inline_string"),
        "at most 4096",
    );
    assert_error(
        &with_route("            direct_response: { status: 700 }"),
        &format!("{R}.direct_response.status"),
        "between 200 and 599",
    );
    assert_error(
        &with_route("            redirect: { response_code: MOVED }"),
        &format!("{R}.redirect.response_code"),
        "unknown response code \"MOVED\"",
    );
    assert_error(
        &with_route("            redirect: { response_code: 304 }"),
        &format!("{R}.redirect.response_code"),
        "unknown response code 304",
    );
    assert_error(
        &with_route("            redirect: { https_redirect: true, scheme_redirect: ftp }"),
        &format!("{R}.redirect"),
        "not both",
    );
    assert_error(
        &with_route(
            "            route: { cluster: a }\n            redirect: { https_redirect: true }",
        ),
        R,
        "exactly one of `route`, `redirect` or `direct_response`",
    );
    assert_error(
        &with_route("            route: { cluster: a, host_rewrite_literal: \"a b\" }"),
        &format!("{R}.route.host_rewrite_literal"),
        "invalid host",
    );
    // All of them at once, each at its own path.
    let yaml = with_route(
        "            route: { cluster: nope, prefix_rewrite: x, host_rewrite_literal: h, auto_host_rewrite: true }",
    );
    let paths: Vec<String> = errors(&yaml).into_iter().map(|(p, _)| p).collect();
    for want in ["route.cluster", "route.prefix_rewrite", "route"] {
        assert!(paths.contains(&format!("{R}.{want}")), "{want}: {paths:?}");
    }
}

// ---------------------------------------------------------------- HTTP/2 and retries

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
/// Sends `GET path` with `:authority` `host` over h2c and returns the status, the headers
/// and the body.
async fn h2_get(addr: SocketAddr, path: &str, host: &str) -> (u16, http::HeaderMap, Vec<u8>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.expect("ready");
    let req = http::Request::get(format!("http://{host}{path}"))
        .body(())
        .expect("request");
    let (response, _) = send.send_request(req, true).expect("send");
    let response = response.await.expect("response");
    let (parts, mut body) = response.into_parts();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    (parts.status.as_u16(), parts.headers, out)
}

#[test]
fn rewrites_reach_an_http2_upstream_and_http2_clients_get_direct_responses() {
    let origin = H2Origin::start(200, "h2", &[]);
    let yaml = format!(
        "workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
    http2: true
    virtual_hosts:
      - name: all
        domains: [\"*\"]
        routes:
          - match: {{ prefix: \"/api/\" }}
            route: {{ cluster: h2, prefix_rewrite: \"/v2/\", host_rewrite_literal: \"inside.example\" }}
          - match: {{ prefix: \"/auto\" }}
            route: {{ cluster: h2, auto_host_rewrite: true }}
          - match: {{ prefix: \"/gone\" }}
            direct_response: {{ status: 410, body: {{ inline_string: \"gone\" }} }}
          - match: {{ prefix: \"/moved\" }}
            redirect: {{ host_redirect: \"new.example\" }}
clusters:
  - name: h2
    protocol: http2
    endpoints: [{{ address: \"{}\" }}]
",
        origin.addr
    );
    let gw = TestGateway::start(&yaml);
    let rt = runtime();
    let (status, _, body) = rt.block_on(h2_get(gw.addr, "/api/x?q=1", "app.test"));
    assert_eq!((status, body.as_slice()), (200, &b"h2"[..]));
    rt.block_on(h2_get(gw.addr, "/auto", "app.test"));
    let want = [
        ("inside.example".to_owned(), "/v2/x?q=1".to_owned()),
        (origin.addr.to_string(), "/auto".to_owned()),
    ];
    let seen: Vec<(String, String)> = origin
        .seen()
        .iter()
        .map(|r| r.authority_and_path())
        .collect();
    assert_eq!(seen, want);
    let (status, headers, body) = rt.block_on(h2_get(gw.addr, "/gone", "app.test"));
    assert_eq!((status, body.as_slice()), (410, &b"gone"[..]));
    assert_eq!(
        headers.get("content-length").map(|v| v.as_bytes()),
        Some(&b"4"[..])
    );
    let (status, headers, _) = rt.block_on(h2_get(gw.addr, "/moved?a=b", "app.test"));
    assert_eq!(status, 301);
    let location = headers.get("location").map(|v| v.as_bytes());
    assert_eq!(location, Some(&b"http://new.example/moved?a=b"[..]));
}

#[test]
fn auto_host_rewrite_names_each_retrys_own_endpoint() {
    use support::upstream::Reply;
    let bad = HttpUpstream::builder()
        .name("bad")
        .route("/", Reply::Status(503, "no\n"))
        .start();
    let good = HttpUpstream::builder().name("good").start();
    let policy = "{ retry_on: [5xx], num_retries: 1 }";
    let yaml = support::gateway::retry_config(bad.addr(), good.addr(), policy, "", false).replace(
        "route: { cluster: backend, retry_policy",
        "route: { cluster: backend, auto_host_rewrite: true, retry_policy",
    );
    let gw = TestGateway::start(&yaml);
    let mut c = client(gw.addr);
    for i in 0..4 {
        let r = get(&mut c, &format!("/r{i}"), "example.com");
        assert_eq!(r.status, 200, "request {i}");
    }
    // Every request that went to each endpoint named that endpoint, the retries too.
    let hosts = |up: &HttpUpstream| -> Vec<String> {
        (up.requests().iter())
            .map(|r| r.header("host").unwrap_or("").to_owned())
            .collect()
    };
    let (bad_hosts, good_hosts) = (hosts(&bad), hosts(&good));
    assert!(
        !bad_hosts.is_empty() && good_hosts.len() == 4,
        "{bad_hosts:?} {good_hosts:?}"
    );
    assert!(
        bad_hosts.iter().all(|h| *h == bad.addr().to_string()),
        "{bad_hosts:?}"
    );
    assert!(
        good_hosts.iter().all(|h| *h == good.addr().to_string()),
        "{good_hosts:?}"
    );
}

#[test]
fn a_reload_that_keeps_a_split_keeps_its_place_in_the_sequence() {
    let mut s = setup();
    let mut c = client(s.gw.addr);
    let mut answers = Vec::new();
    let fetch = |c: &mut HttpClient, answers: &mut Vec<String>| {
        let r = get(c, "/split", "example.com");
        answers.push(r.text().trim().to_owned());
    };
    for _ in 0..2 {
        fetch(&mut c, &mut answers);
    }
    // Another route changes; the split stays as it was.
    let yaml = ROUTES
        .replace("{log}", &s.log.display().to_string())
        .replace("{blue}", &s.blue.addr().to_string())
        .replace("{green}", &s.green.addr().to_string())
        .replace("status: 204", "status: 205");
    let file = s._dir.path("gateway.yaml").display().to_string();
    let config = config::parse(&yaml, &file).expect("valid");
    s.gw.gateway.reload(config).expect("reload");
    for _ in 0..6 {
        fetch(&mut c, &mut answers);
    }
    let blue = answers.iter().filter(|a| *a == "blue").count();
    // Started over, the sequence would give 3 blue in these 8.
    assert_eq!((blue, answers.len() - blue), (2, 6), "{answers:?}");
}
