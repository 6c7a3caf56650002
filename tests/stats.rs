//! Proves the stats: every request and connection is counted once, under Envoy's names, by the
//! core that served it, and merged exactly across cores (counters summed, histograms added);
//! the admin endpoint serves them as Envoy's text (with `filter` and `usedonly`), as JSON, and
//! in the Prometheus exposition format that a real parser accepts.

mod support;

use std::time::{Duration, Instant};

use coregate::stats::HistKey;
use support::client::{HttpClient, raw_exchange};
use support::gateway::{TestGateway, simple_config};
use support::harness::T;
use support::upstream::HttpUpstream;

const CONNECTIONS: usize = 16;
const PER_CONNECTION: usize = 2;
const REQUESTS: u64 = (CONNECTIONS * PER_CONNECTION) as u64;

fn get(admin: std::net::SocketAddr, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n");
    let got = raw_exchange(admin, request.as_bytes(), T);
    let status = got.status().unwrap_or(0);
    let body = got
        .responses()
        .first()
        .map(|r| r.text())
        .unwrap_or_default();
    (status, body)
}

/// The value of `name: value` in Envoy's text format.
fn value(text: &str, name: &str) -> u64 {
    let key = format!("{name}: ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

#[test]
fn counters_and_histograms_are_exact_over_two_workers_in_every_format() {
    let up = HttpUpstream::builder().name("up").start();
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 2, "", "{}"));
    let registry = gw.gateway.registry().clone();
    let admin = gw.start_admin();
    for _ in 0..CONNECTIONS {
        let mut c = HttpClient::connect(gw.addr).expect("connect");
        for _ in 0..PER_CONNECTION {
            assert_eq!(c.get("/", "a").expect("request").status, 200);
        }
    }
    // A worker counts a request once its response is written, which can be just after the
    // client read it; a connection once it is closed.
    let deadline = Instant::now() + T;
    while registry.total_requests() < REQUESTS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    // Histograms are folded by each worker once a second and when it stops.
    gw.shutdown(Duration::from_secs(1));

    let (status, text) = get(admin, "/stats");
    assert_eq!(status, 200, "{text}");
    assert_eq!(value(&text, "http.main.downstream_rq_total"), REQUESTS);
    assert_eq!(value(&text, "http.main.downstream_rq_2xx"), REQUESTS);
    assert_eq!(value(&text, "http.main.downstream_rq_5xx"), 0);
    assert_eq!(
        value(&text, "listener.main.downstream_cx_total"),
        CONNECTIONS as u64
    );
    assert_eq!(
        value(&text, "listener.main.downstream_cx_destroy"),
        CONNECTIONS as u64
    );
    assert_eq!(value(&text, "listener.main.downstream_cx_active"), 0);
    assert_eq!(value(&text, "cluster.backend.upstream_rq_total"), REQUESTS);
    assert_eq!(value(&text, "cluster.backend.upstream_rq_2xx"), REQUESTS);
    let ep = format!("cluster.backend.endpoint.{}", up.addr());
    assert_eq!(value(&text, &format!("{ep}.upstream_rq_total")), REQUESTS);
    let per_worker =
        value(&text, "worker.0.downstream_rq_total") + value(&text, "worker.1.downstream_rq_total");
    assert_eq!(per_worker, REQUESTS, "each request counted by one core");
    let per_worker = value(&text, "listener.main.worker_0.downstream_cx_total")
        + value(&text, "listener.main.worker_1.downstream_cx_total");
    assert_eq!(per_worker, CONNECTIONS as u64);
    assert_eq!(value(&text, "server.live"), 1);
    assert_eq!(value(&text, "server.concurrency"), 2);
    // Histograms: the sum over both cores' histograms, exactly one sample per request.
    let rq_time = registry.histogram(&HistKey::downstream_rq_time("main"));
    assert_eq!(rq_time.count(), REQUESTS);
    let upstream = registry.histogram(&HistKey::upstream_rq_time("backend"));
    assert_eq!(upstream.count(), REQUESTS);
    assert!(upstream.quantile_us(0.5) <= rq_time.quantile_us(0.5));
    let lengths = registry.histogram(&HistKey::downstream_cx_length("main"));
    assert_eq!(lengths.count(), CONNECTIONS as u64);
    let line = text
        .lines()
        .find(|l| l.starts_with("http.main.downstream_rq_time: "))
        .expect("histogram line");
    assert!(
        line.contains(" P50(nan,") && line.contains(" P100(nan,"),
        "{line}"
    );

    // filter and usedonly.
    let (_, filtered) = get(
        admin,
        "/stats?filter=%5Ehttp%5C.main%5C.downstream_rq_%5B0-9%5D",
    );
    let names: Vec<&str> = filtered
        .lines()
        .filter_map(|l| l.split(':').next())
        .collect();
    assert_eq!(names.len(), 5, "{filtered}");
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("http.main.downstream_rq_"))
    );
    let (_, used) = get(admin, "/stats?usedonly");
    assert!(!used.lines().any(|l| l.ends_with(": 0")), "{used}");
    assert!(used.contains("http.main.downstream_rq_2xx: 32"));
    let (status, _) = get(admin, "/stats?filter=(");
    assert_eq!(status, 400, "a bad regex is refused");

    // JSON.
    let (_, json) = get(admin, "/stats?format=json");
    let json: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    let stat = json["stats"]
        .as_array()
        .expect("stats")
        .iter()
        .find(|s| s["name"] == "http.main.downstream_rq_total")
        .expect("in the JSON");
    assert_eq!(stat["value"], REQUESTS);
    let hist = json["histograms"]
        .as_array()
        .expect("histograms")
        .iter()
        .find(|h| h["name"] == "http.main.downstream_rq_time")
        .expect("histogram in the JSON");
    assert_eq!(hist["count"], REQUESTS);

    // Prometheus: a real parser accepts it, with labels instead of dotted names.
    let (status, prom) = get(admin, "/stats/prometheus");
    assert_eq!(status, 200);
    check_exposition_format(&prom);
    let lines = prom.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("parses");
    let sample = |metric: &str, label: (&str, &str)| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && s.labels.get(label.0) == Some(label.1))
            .unwrap_or_else(|| panic!("{metric} {label:?} missing:\n{prom}"))
    };
    match sample("coregate_http_downstream_rq_total", ("listener", "main")).value {
        prometheus_parse::Value::Counter(v) => assert_eq!(v, REQUESTS as f64),
        ref other => panic!("not a counter: {other:?}"),
    }
    match sample(
        "coregate_listener_downstream_cx_active",
        ("listener", "main"),
    )
    .value
    {
        prometheus_parse::Value::Gauge(v) => assert_eq!(v, 0.0),
        ref other => panic!("not a gauge: {other:?}"),
    }
    match &sample("coregate_http_downstream_rq_time", ("listener", "main")).value {
        prometheus_parse::Value::Histogram(buckets) => {
            let last = buckets.last().expect("buckets");
            assert!(last.less_than.is_infinite());
            assert_eq!(last.count, REQUESTS as f64);
            assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
        }
        other => panic!("not a histogram: {other:?}"),
    }
}

/// What `promtool check metrics` checks of the text format: every line a `# TYPE` line or a
/// sample of a declared family, valid metric and label names, one TYPE per family, a histogram
/// with `_bucket` (ending `le="+Inf"`), `_sum` and `_count`.
fn check_exposition_format(text: &str) {
    let valid_name = |n: &str| {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: std::collections::HashMap<String, String> = Default::default();
    let mut inf: std::collections::HashSet<String> = Default::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(valid_name(name), "{line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "twice: {line}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let name_end = line.find(['{', ' ']).expect("sample");
        let name = &line[..name_end];
        assert!(valid_name(name), "{line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample before its TYPE: {line}");
        let value = line.rsplit(' ').next().expect("value");
        assert!(value.parse::<f64>().is_ok(), "{line}");
        if name.ends_with("_bucket") && line.contains("le=\"+Inf\"") {
            inf.insert(family.to_owned());
        }
    }
    for (family, kind) in &types {
        if kind == "histogram" {
            assert!(inf.contains(family), "{family} has no +Inf bucket");
        }
    }
}

#[test]
fn ready_is_503_once_draining() {
    let up = HttpUpstream::builder().start();
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"));
    let registry = gw.gateway.registry().clone();
    let admin = gw.start_admin();
    assert_eq!(get(admin, "/ready").0, 200);
    // What SIGTERM does first (tests/reload.rs drives the real signal).
    registry.server.live.set(0);
    assert_eq!(get(admin, "/ready").0, 503);
    assert_eq!(value(&get(admin, "/stats").1, "server.live"), 0);
}

#[test]
fn admin_describes_clusters_config_and_server() {
    let up = HttpUpstream::builder().name("up").start();
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 3)], 2, "", "{}"));
    let admin = gw.start_admin();
    let mut c = HttpClient::connect(gw.addr).expect("connect");
    for _ in 0..3 {
        assert_eq!(c.get("/", "a").expect("request").status, 200);
    }

    let (status, text) = get(admin, "/clusters");
    assert_eq!(status, 200);
    let p = format!("backend::{}", up.addr());
    assert!(
        text.lines().any(|l| l == format!("{p}::weight::3")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == format!("{p}::upstream_rq_total::3")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == format!("{p}::upstream_cx_active::1")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{p}::worker_")),
        "per core too: {text}"
    );
    let (_, json) = get(admin, "/clusters?format=json");
    let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let ep = &json["clusters"][0]["endpoints"][0];
    assert_eq!(ep["weight"], 3);
    assert_eq!(ep["total"]["upstream_rq_total"], 3);

    let (_, dump) = get(admin, "/config_dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("JSON");
    assert_eq!(dump["generation"], 1);
    assert_eq!(dump["config"]["listeners"][0]["name"], "main");
    assert_eq!(dump["config"]["clusters"][0]["connect_timeout"], "500ms");
    assert_eq!(dump["config"]["limits"]["header_timeout"], "10s");

    let (_, info) = get(admin, "/server_info");
    let info: serde_json::Value = serde_json::from_str(&info).expect("JSON");
    assert_eq!(info["state"], "live");
    assert_eq!(info["workers"].as_array().map(Vec::len), Some(2));
    assert_eq!(info["generation"], 1);
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));

    let got = raw_exchange(admin, b"POST /reopen_logs HTTP/1.1\r\nHost: a\r\n\r\n", T);
    assert_eq!(got.status(), Some(200));
    let got = raw_exchange(admin, b"DELETE /stats HTTP/1.1\r\nHost: a\r\n\r\n", T);
    assert_eq!(got.status(), Some(405));
    let (status, index) = get(admin, "/");
    assert_eq!(status, 200);
    for path in [
        "/stats",
        "/clusters",
        "/config_dump",
        "/server_info",
        "/ready",
    ] {
        assert!(index.contains(path), "{index}");
    }
}
