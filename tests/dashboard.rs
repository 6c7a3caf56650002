//! The admin dashboard in a real headless browser (Chromium, installed by .ci/run): the page
//! loads without console errors, its script reads /stats?format=json and shows the numbers the
//! JSON says; curl still gets the plain-text index.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::client::raw_exchange;
use support::gateway::{TestGateway, simple_config};
use support::harness::T;
use support::tls::Dir;
use support::upstream::HttpUpstream;

fn chromium() -> &'static str {
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(candidate).arg("--version").output().is_ok() {
            return candidate;
        }
    }
    panic!("a headless Chromium is needed (.ci/run installs Debian's `chromium`)");
}

#[test]
fn the_dashboard_shows_what_the_stats_say() {
    let up = HttpUpstream::builder().start();
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 2, "", "{}"));
    let registry = gw.gateway.registry().clone();
    let admin = gw.start_admin();
    for i in 0..7 {
        let request = format!("GET /{i} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert_eq!(
            raw_exchange(gw.addr, request.as_bytes(), T).status(),
            Some(200)
        );
    }
    let deadline = Instant::now() + T;
    while registry.total_requests() < 7 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }

    // curl's Accept gets the index.
    let index = raw_exchange(
        admin,
        b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n",
        T,
    );
    assert!(
        index.text().contains("/stats/prometheus"),
        "{}",
        index.text()
    );

    let profile = Dir::new("chromium");
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=3000",
            "--timeout=20000",
            &format!("--user-data-dir={}", profile.path("profile").display()),
            "--dump-dom",
            &format!("http://{admin}/"),
        ])
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {log}");
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    let shown = |id: &str| -> String {
        let marker = format!("id=\"{id}\">");
        let start = dom
            .find(&marker)
            .unwrap_or_else(|| panic!("no #{id} in:\n{dom}"))
            + marker.len();
        dom[start..].split('<').next().unwrap_or("").to_owned()
    };
    assert_eq!(shown("total-requests"), "7", "{dom}");
    assert_eq!(shown("class-2xx"), "7");
    assert_eq!(shown("class-5xx"), "0");
    assert_eq!(shown("workers"), "2");
    assert_eq!(shown("generation"), "1");
    let per_core: u64 = ["core-0", "core-1"]
        .iter()
        .map(|id| shown(id).parse::<u64>().unwrap_or(0))
        .sum();
    assert_eq!(per_core, 7, "the per-core table adds up");
    assert!(
        dom.contains("data-stat=\"cluster.backend\""),
        "the cluster table"
    );
    assert!(dom.contains(&format!(
        "data-stat=\"cluster.backend.endpoint.{}\"",
        up.addr()
    )));
}
