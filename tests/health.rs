//! Active health checks over real sockets: an endpoint that starts hanging after accept is
//! taken out of rotation by its probes and comes back when it answers again, the verdict
//! survives a reload, and a cluster with nothing healthy and no panic mode answers 503 without
//! trying its endpoints.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::client::raw_exchange;
use support::gateway::{TestGateway, simple_config};
use support::harness::T;
use support::upstream::{HttpUpstream, Reply};

/// An endpoint that answers `200 flaky` while `up`, and otherwise accepts and never answers.
struct Flaky {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
}

impl Flaky {
    fn start() -> Flaky {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let state = up.clone();
        thread::spawn(move || {
            for conn in listener.incoming().take(10_000) {
                let Ok(mut conn) = conn else { return };
                let up = state.clone();
                thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut buf = [0u8; 4096];
                    // One request per read is enough for these small GETs.
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 {
                            return;
                        }
                        if !up.load(Ordering::SeqCst) {
                            // Hang: hold the connection, answer nothing.
                            thread::sleep(Duration::from_secs(10));
                            return;
                        }
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nflaky";
                        if conn.write_all(reply).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Flaky { addr, up }
    }
}

fn config(good: SocketAddr, flaky: SocketAddr, extra: &str) -> String {
    let extra = format!("    response_timeout: 5s\n{extra}");
    simple_config(&[(good, 1), (flaky, 1)], 2, &extra, "{}")
}

const HTTP_CHECK: &str = "    health_check:
      http: { path: /healthz }
      interval: 100ms
      timeout: 80ms
      unhealthy_threshold: 2
      healthy_threshold: 1
";

/// Waits (bounded) until the endpoint's health gauge reads `healthy`.
fn wait_health(gw: &TestGateway, addr: SocketAddr, healthy: bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.endpoint("backend", addr).health_check_healthy.get() != u64::from(healthy) {
        assert!(
            Instant::now() < deadline,
            "{addr} never became {}",
            if healthy { "healthy" } else { "unhealthy" }
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The bodies of `n` requests, each on a new connection.
fn bodies(gw: &TestGateway, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let got = raw_exchange(
                gw.addr,
                b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
                T,
            );
            assert_eq!(got.status(), Some(200), "{}", got.text());
            got.responses()[0].text()
        })
        .collect()
}

#[test]
fn a_hanging_endpoint_is_taken_out_and_comes_back() {
    let good = HttpUpstream::builder()
        .route("/", Reply::Status(200, "good"))
        .start();
    let flaky = Flaky::start();
    let gw = TestGateway::start(&config(good.addr(), flaky.addr, HTTP_CHECK));
    wait_health(&gw, flaky.addr, true);
    // Each of the two cores alternates on its own: the split is even within one per core.
    let before = bodies(&gw, 8);
    let share = |got: &[String]| got.iter().filter(|b| *b == "flaky").count();
    assert!((2..=6).contains(&share(&before)), "{before:?}");

    flaky.up.store(false, Ordering::SeqCst);
    wait_health(&gw, flaky.addr, false);
    let out = bodies(&gw, 10);
    assert!(out.iter().all(|b| b == "good"), "{out:?}");
    let probes = gw.endpoint("backend", flaky.addr);
    assert!(probes.health_check_failure.get() >= 2);
    let admin = gw.start_admin();
    let clusters = raw_exchange(
        admin,
        b"GET /clusters HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        T,
    )
    .text();
    let flag = |addr: SocketAddr| format!("backend::{addr}::health_flags::");
    assert!(
        clusters.contains(&format!("{}/failed_active_hc", flag(flaky.addr))),
        "{clusters}"
    );
    assert!(
        clusters.contains(&format!("{}healthy", flag(good.addr()))),
        "{clusters}"
    );

    // A reload that keeps the endpoint keeps its verdict: it stays out at once.
    let mut gw = gw;
    let again = coregate::config::parse(&config(good.addr(), flaky.addr, HTTP_CHECK), "t.yaml")
        .expect("valid");
    gw.gateway.reload(again).expect("reload");
    let after_reload = bodies(&gw, 6);
    assert!(after_reload.iter().all(|b| b == "good"), "{after_reload:?}");

    flaky.up.store(true, Ordering::SeqCst);
    wait_health(&gw, flaky.addr, true);
    let back = bodies(&gw, 8);
    assert!((2..=6).contains(&share(&back)), "{back:?}");
}

#[test]
fn nothing_healthy_without_panic_mode_is_503_at_once() {
    // Both endpoints refuse connections: their ports are bound, then closed.
    let closed = || {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let (a, b) = (closed(), closed());
    let check = "    panic_threshold: 0
    health_check:
      tcp: {}
      interval: 100ms
      timeout: 50ms
      unhealthy_threshold: 1
";
    let gw = TestGateway::start(&config(a, b, check));
    let deadline = Instant::now() + Duration::from_secs(5);
    for addr in [a, b] {
        // A failed probe first: before the prober's first round the gauge reads 0 too.
        let probed = || {
            let ep = gw.endpoint("backend", addr);
            ep.health_check_failure.get() > 0 && ep.health_check_healthy.get() == 0
        };
        while !probed() {
            assert!(Instant::now() < deadline, "{addr} still healthy");
            thread::sleep(Duration::from_millis(10));
        }
    }
    let connects = |gw: &TestGateway| {
        gw.endpoint("backend", a).upstream_cx_connect_fail.get()
            + gw.endpoint("backend", b).upstream_cx_connect_fail.get()
    };
    let tried = connects(&gw);
    let got = raw_exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        T,
    );
    assert_eq!(got.status(), Some(503), "{}", got.text());
    assert_eq!(connects(&gw), tried, "no connect was tried");
}

/// An endpoint whose `/healthz` answers 200 while `up` and 503 after; it remembers when it
/// first answered 503, and the `x-seq` of every other request it served.
struct Switch {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    first_failed_probe: Arc<std::sync::Mutex<Option<Instant>>>,
    served: Arc<std::sync::Mutex<Vec<u64>>>,
}

impl Switch {
    fn start() -> Switch {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let switch = Switch {
            addr,
            up: Arc::new(AtomicBool::new(true)),
            first_failed_probe: Arc::default(),
            served: Arc::default(),
        };
        let (up, failed, served) = (
            switch.up.clone(),
            switch.first_failed_probe.clone(),
            switch.served.clone(),
        );
        thread::spawn(move || {
            for conn in listener.incoming().take(10_000) {
                let Ok(conn) = conn else { return };
                let (up, failed, served) = (up.clone(), failed.clone(), served.clone());
                thread::spawn(move || serve_switch(conn, &up, &failed, &served));
            }
        });
        switch
    }
}

fn serve_switch(
    mut conn: std::net::TcpStream,
    up: &AtomicBool,
    failed: &std::sync::Mutex<Option<Instant>>,
    served: &std::sync::Mutex<Vec<u64>>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Bodiless GETs, one head after the other (the gateway reuses its connections).
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            buf.drain(..end + 4);
            let reply: &[u8] = if head.starts_with("get /healthz") {
                if up.load(Ordering::SeqCst) {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                } else {
                    failed
                        .lock()
                        .expect("lock")
                        .get_or_insert_with(Instant::now);
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
                }
            } else {
                let seq = head
                    .lines()
                    .find_map(|l| l.strip_prefix("x-seq: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(u64::MAX);
                served.lock().expect("lock").push(seq);
                b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nswitch"
            };
            if conn.write_all(reply).is_err() {
                return;
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn the_verdict_reaches_every_core_at_once() {
    let good = HttpUpstream::builder()
        .route("/", Reply::Status(200, "good"))
        .start();
    let switch = Switch::start();
    let check = "    health_check:
      http: { path: /healthz }
      interval: 100ms
      timeout: 80ms
      unhealthy_threshold: 1
";
    let gw = TestGateway::start(&config(good.addr(), switch.addr, check));
    wait_health(&gw, switch.addr, true);
    // Requests on new connections, which the kernel spreads over both cores, each stamped
    // with the moment it was sent.
    let began = Instant::now();
    let mut sent = Vec::new();
    let mut flipped_at = None;
    let mut seq = 0u64;
    while began.elapsed() < Duration::from_secs(5) {
        if seq == 20 {
            switch.up.store(false, Ordering::SeqCst);
            flipped_at = Some(Instant::now());
        }
        let verdict = *switch.first_failed_probe.lock().expect("lock");
        if verdict.is_some_and(|v| v.elapsed() > Duration::from_millis(300)) {
            break;
        }
        let request =
            format!("GET / HTTP/1.1\r\nHost: a.test\r\nx-seq: {seq}\r\nConnection: close\r\n\r\n");
        sent.push(Instant::now());
        assert_eq!(
            raw_exchange(gw.addr, request.as_bytes(), T).status(),
            Some(200)
        );
        seq += 1;
    }
    let verdict = switch
        .first_failed_probe
        .lock()
        .expect("lock")
        .expect("a probe failed");
    assert!(flipped_at.is_some_and(|f| f <= verdict));
    // Every request that reached the endpoint left the client before the failed probe's
    // answer, or within 10 ms of it: the prober's verdict took effect on every core at once.
    let served = switch.served.lock().expect("lock").clone();
    let late: Vec<(u64, Duration)> = served
        .iter()
        .filter_map(|&s| {
            usize::try_from(s)
                .ok()
                .and_then(|i| sent.get(i))
                .map(|t| (s, *t))
        })
        .filter(|(_, t)| *t > verdict)
        .map(|(s, t)| (s, t - verdict))
        .collect();
    assert!(
        late.iter()
            .all(|(_, after)| *after <= Duration::from_millis(10)),
        "sent after the verdict and still served: {late:?}"
    );
    // Both cores sent requests after the verdict, all to the good endpoint.
    let after: Vec<u64> = gw
        .gateway
        .registry()
        .endpoint_per_worker("backend", good.addr())
        .iter()
        .map(|(_, s)| s.upstream_rq_total.get())
        .collect();
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.iter().all(|&n| n > 0), "{after:?}");
    let sent_after = sent.iter().filter(|t| **t > verdict).count();
    assert!(sent_after >= 10, "{sent_after}");
}
