//! Proves hot reload and the graceful lifecycle: SIGHUP switches every core to the new config
//! with no failed request under load (files replaced by rename or rewritten in place), an
//! invalid config changes nothing and is logged with its field path, removed listeners stop
//! accepting and drain, added ones serve on every worker, SIGTERM lets in-flight requests
//! finish and exits 0, and a second SIGTERM exits at once.

mod support;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::client::{HttpClient, RawClient, raw_exchange};
use support::gateway::TestGateway;
use support::harness::T;
use support::process::Coregate;
use support::upstream::{HttpUpstream, Reply};

/// A config: listener `main` (and `extra` when asked) to cluster `svc` of `endpoints`, with
/// `route` as an extra exact route so that configs differ in routes too.
fn config(endpoints: &[(SocketAddr, u32)], route: &str, extra: bool, drain: &str) -> String {
    let mut eps = String::new();
    for (addr, weight) in endpoints {
        eps.push_str(&format!(
            "      - {{ address: \"{addr}\", weight: {weight} }}\n"
        ));
    }
    let vhost = format!(
        "    virtual_hosts:
      - name: all
        domains: [\"*\"]
        routes:
          - match: {{ path: \"{route}\" }}
            route: {{ cluster: svc }}
          - match: {{ prefix: \"/\" }}
            route: {{ cluster: svc }}
"
    );
    let extra = if extra {
        format!("  - name: extra\n    address: 127.0.0.1:0\n{vhost}")
    } else {
        String::new()
    };
    format!(
        "workers: 2
limits: {{ drain_timeout: {drain} }}
listeners:
  - name: main
    address: 127.0.0.1:0
{vhost}{extra}clusters:
  - name: svc
    connect_timeout: 500ms
    endpoints:
{eps}"
    )
}

/// One response seen by a load client.
struct Seen {
    sent: Instant,
    received: Instant,
    upstream: Result<String, String>,
}

/// Keep-alive clients hammering `addr` until stopped; every response is recorded.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, seen) = (stop.clone(), seen.clone());
                thread::spawn(move || {
                    let mut client = HttpClient::connect(addr).expect("connect");
                    while !stop.load(Ordering::SeqCst) {
                        let sent = Instant::now();
                        let upstream = match client.get("/", "h") {
                            Ok(r) if r.status == 200 => {
                                Ok(r.header("x-upstream").unwrap_or("?").to_owned())
                            }
                            Ok(r) => Err(format!("status {}", r.status)),
                            Err(e) => Err(e),
                        };
                        let failed = upstream.is_err();
                        let received = Instant::now();
                        seen.lock().unwrap().push(Seen {
                            sent,
                            received,
                            upstream,
                        });
                        if failed {
                            client = match HttpClient::connect(addr) {
                                Ok(c) => c,
                                Err(_) => return,
                            };
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            seen,
            threads,
        }
    }

    /// Waits until `n` responses were sent after `since` (bounded).
    fn wait_after(&self, since: Instant, n: usize) {
        let deadline = Instant::now() + T;
        while Instant::now() < deadline {
            if self
                .seen
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.sent > since)
                .count()
                >= n
            {
                return;
            }
            thread::sleep(Duration::from_millis(2));
        }
        panic!("fewer than {n} responses within {T:?} after a reload");
    }

    fn finish(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("client thread");
        }
        Arc::try_unwrap(self.seen)
            .ok()
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

fn names(ups: &[&HttpUpstream]) -> HashSet<String> {
    ups.iter().map(|u| u.name().to_owned()).collect()
}

#[test]
fn fifty_sighup_reloads_under_load_fail_nothing_and_switch_every_core() {
    let (u1, u2, u3) = (
        HttpUpstream::builder().name("u1").start(),
        HttpUpstream::builder().name("u2").start(),
        HttpUpstream::builder().name("u3").start(),
    );
    // A and B differ in routes, endpoints, weights and one listener.
    let a = config(&[(u1.addr(), 1)], "/a-only", true, "5s");
    let b = config(&[(u2.addr(), 2), (u3.addr(), 1)], "/b-only", false, "5s");
    let (a_set, b_set) = (names(&[&u1]), names(&[&u2, &u3]));
    let gw = Coregate::start(&a);
    let load = Load::start(gw.listener("main"), 4);
    load.wait_after(Instant::now(), 20);

    // (SIGHUP sent, reload confirmed, upstreams of the config it installed)
    let mut reloads: Vec<(Instant, Instant, &HashSet<String>)> = Vec::new();
    for i in 0..50 {
        let (yaml, set) = if i % 2 == 0 {
            (&b, &b_set)
        } else {
            (&a, &a_set)
        };
        // Both ways an operator changes a file: a rename over it, and a rewrite in place.
        if i % 3 == 0 {
            gw.replace_config(yaml);
        } else {
            gw.rewrite_config(yaml);
        }
        let hup = Instant::now();
        gw.signal(libc::SIGHUP);
        let (at, line) = gw.wait_for_nth("reloaded:", i + 1, T);
        assert!(line.contains(&format!("generation={}", i + 2)), "{line}");
        reloads.push((hup, at, set));
        load.wait_after(at, 10);
    }
    let seen = load.finish();

    let failed: Vec<&String> = seen
        .iter()
        .filter_map(|s| s.upstream.as_ref().err())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        seen.len()
    );
    let mut checked = 0;
    for s in &seen {
        // Sent after reload k completed: served by config k, or by a later one if the next
        // reload began before the response came back.
        let Some(k) = reloads.iter().rposition(|(_, done, _)| *done < s.sent) else {
            continue;
        };
        let upstream = s.upstream.as_ref().unwrap();
        let allowed = reloads[k..]
            .iter()
            .enumerate()
            .any(|(j, (hup, _, set))| (j == 0 || *hup < s.received) && set.contains(upstream));
        assert!(
            allowed,
            "a request sent {:?} after reload #{k} completed was served by {upstream}, not {:?}",
            s.sent - reloads[k].1,
            reloads[k].2
        );
        checked += 1;
    }
    assert!(checked >= 500, "only {checked} requests checked");
}

#[test]
fn invalid_config_on_sighup_changes_nothing_and_names_the_field() {
    let u1 = HttpUpstream::builder().name("u1").start();
    let good = config(&[(u1.addr(), 1)], "/x", false, "5s");
    let gw = Coregate::start(&good);
    let load = Load::start(gw.listener("main"), 2);
    load.wait_after(Instant::now(), 10);

    let bad = good.replace(
        "route: { cluster: svc }\n          - match: { prefix",
        "route: { cluster: nowhere }\n          - match: { prefix",
    );
    assert_ne!(bad, good);
    gw.rewrite_config(&bad);
    gw.signal(libc::SIGHUP);
    let (refused_at, _) = gw.wait_for_nth("reload refused", 1, T);
    let field = gw.wait_for("listeners[0].virtual_hosts[0].routes[0].route.cluster", T);
    assert!(field.contains("nowhere"), "{field}");
    load.wait_after(refused_at, 20);

    let seen = load.finish();
    assert!(
        seen.iter().all(|s| s.upstream.as_deref() == Ok("u1")),
        "every request still served by the old config"
    );
    assert!(!gw.log().iter().any(|l| l.contains("reloaded:")));
}

/// A gateway on `main` and `extra`, in-process, with a slow route.
fn two_listeners(up: &HttpUpstream) -> (TestGateway, String) {
    let yaml = config(&[(up.addr(), 1)], "/x", true, "5s");
    (TestGateway::start(&yaml), yaml)
}

#[test]
fn removed_listener_drains_its_request_and_stops_accepting() {
    let up = HttpUpstream::builder()
        .name("u1")
        .route(
            "/slow",
            Reply::Delay {
                delay: Duration::from_millis(600),
                body: "slow",
            },
        )
        .start();
    let (mut gw, yaml) = two_listeners(&up);
    let extra = gw.listener("extra");
    let mut slow = RawClient::connect(extra);
    slow.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    up.wait_requests(1, T);

    let without_extra = yaml.replace(
        &yaml[yaml.find("  - name: extra").unwrap()..yaml.find("clusters:").unwrap()],
        "",
    );
    let config = coregate::config::parse(&without_extra, "b.yaml").unwrap();
    let done = gw.gateway.reload(config).expect("reload");
    assert!(
        done.changes.contains("listeners -extra"),
        "{}",
        done.changes
    );

    // The request already under way completes, told that the connection closes.
    let r = slow.read_response(T);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"slow"[..]));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(slow.is_closed(T));
    // The port no longer accepts; `main` still serves.
    assert!(TcpStream::connect_timeout(&extra, Duration::from_millis(500)).is_err());
    let mut c = HttpClient::connect(gw.addr).unwrap();
    assert_eq!(c.get("/", "h").unwrap().status, 200);
}

#[test]
fn added_listener_serves_on_every_worker() {
    let up = HttpUpstream::builder().name("u1").start();
    let (mut gw, yaml) = two_listeners(&up);
    let with_third = yaml.replace("  - name: extra", "  - name: third\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: t\n        domains: [\"*\"]\n        routes:\n          - match: { prefix: \"/\" }\n            route: { cluster: svc }\n  - name: extra");
    let config = coregate::config::parse(&with_third, "c.yaml").unwrap();
    let done = gw.gateway.reload(config).expect("reload");
    assert!(
        done.changes.contains("listeners +third"),
        "{}",
        done.changes
    );
    let third = gw.gateway.local_addr("third").expect("third is bound");
    let before = gw.connections_per_worker();
    for _ in 0..32 {
        let mut c = HttpClient::connect(third).unwrap();
        assert_eq!(c.get("/", "h").unwrap().status, 200);
    }
    let after = gw.connections_per_worker();
    for (w, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(
            a > b,
            "worker {w} accepted nothing on the new listener: {before:?} -> {after:?}"
        );
    }
}

#[test]
fn listener_that_cannot_be_bound_fails_the_reload_and_changes_nothing() {
    let up = HttpUpstream::builder().name("u1").start();
    let (mut gw, yaml) = two_listeners(&up);
    // A port held by another socket (without SO_REUSEPORT) cannot be shared.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap();
    let moved = yaml.replacen(
        "  - name: extra\n    address: 127.0.0.1:0",
        &format!("  - name: extra\n    address: {taken}"),
        1,
    );
    let moved = moved.replace("path: \"/x\"", "path: \"/y\"");
    let config = coregate::config::parse(&moved, "d.yaml").unwrap();
    let err = gw.gateway.reload(config).expect_err("the port is taken");
    assert!(err.to_string().contains("already in use"), "{err}");
    assert_eq!(gw.gateway.snapshot().generation, 1);
    assert_eq!(gw.gateway.registry().server.reloads_failed.get(), 1);
    let mut c = HttpClient::connect(gw.listener("extra")).unwrap();
    assert_eq!(
        c.get("/", "h").unwrap().status,
        200,
        "the old listener still serves"
    );
}

#[test]
fn sigterm_lets_long_requests_finish_then_exits_zero() {
    let up = HttpUpstream::builder()
        .name("u1")
        .route(
            "/slow",
            Reply::Delay {
                delay: Duration::from_millis(800),
                body: "done",
            },
        )
        .start();
    let mut gw = Coregate::start(&config(&[(up.addr(), 1)], "/x", false, "10s"));
    let addr = gw.listener("main");
    let inflight: Vec<_> = (0..8)
        .map(|_| {
            thread::spawn(move || {
                let mut c = RawClient::connect(addr);
                c.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
                let r = c.read_response(T);
                let connection = r.header("connection").map(str::to_owned);
                (r.status, r.body, connection)
            })
        })
        .collect();
    up.wait_requests(8, T);
    gw.signal(libc::SIGTERM);
    for t in inflight {
        let (status, body, connection) = t.join().unwrap();
        assert_eq!((status, body.as_slice()), (200, &b"done"[..]));
        assert_eq!(
            connection.as_deref(),
            Some("close"),
            "clients are told to go away"
        );
    }
    let status = gw.wait_exit(T).expect("the process exits once drained");
    assert!(status.success(), "{status:?}");
    assert!(gw.log().iter().any(|l| l.contains("drained")));
}

#[test]
fn second_sigterm_exits_at_once() {
    let up = HttpUpstream::builder()
        .name("u1")
        .route(
            "/slow",
            Reply::Delay {
                delay: Duration::from_secs(20),
                body: "late",
            },
        )
        .start();
    let mut gw = Coregate::start(&config(&[(up.addr(), 1)], "/x", false, "30s"));
    let mut c = RawClient::connect(gw.listener("main"));
    c.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    up.wait_requests(1, T);
    gw.signal(libc::SIGTERM);
    gw.wait_for("shutting down", T);
    let started = Instant::now();
    gw.signal(libc::SIGTERM);
    let status = gw.wait_exit(T).expect("exits");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        !status.success(),
        "a forced exit is not a clean drain: {status:?}"
    );
}

#[test]
fn removed_listener_cuts_requests_still_running_at_the_drain_timeout() {
    let up = HttpUpstream::builder()
        .name("u1")
        .route(
            "/slow",
            Reply::Delay {
                delay: Duration::from_secs(5),
                body: "too late",
            },
        )
        .start();
    let yaml = config(&[(up.addr(), 1)], "/x", true, "300ms");
    let mut gw = TestGateway::start(&yaml);
    let mut slow = RawClient::connect(gw.listener("extra"));
    slow.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    up.wait_requests(1, T);
    let without_extra = yaml.replace(
        &yaml[yaml.find("  - name: extra").unwrap()..yaml.find("clusters:").unwrap()],
        "",
    );
    let started = Instant::now();
    gw.gateway
        .reload(coregate::config::parse(&without_extra, "e.yaml").unwrap())
        .expect("reload");
    assert!(
        slow.is_closed(T),
        "the connection is cut at the drain timeout"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "cut after {took:?}"
    );
    assert!(slow.try_read_response(Duration::from_millis(100)).is_err());
}

#[test]
fn unchanged_cluster_keeps_its_place_in_the_weighted_sequence_across_a_reload() {
    let (a, b) = (
        HttpUpstream::builder().name("a").start(),
        HttpUpstream::builder().name("b").start(),
    );
    let yaml = config(&[(a.addr(), 3), (b.addr(), 1)], "/x", false, "5s")
        .replace("workers: 2", "workers: 1");
    let mut gw = TestGateway::start(&yaml);
    let mut c = HttpClient::connect(gw.addr).unwrap();
    let mut pick = || {
        c.get("/", "h")
            .unwrap()
            .header("x-upstream")
            .unwrap()
            .to_owned()
    };
    let mut seen: Vec<String> = (0..2).map(|_| pick()).collect();
    // Only a route changes: the cluster's balancer must carry on where it was.
    let changed = yaml.replace("path: \"/x\"", "path: \"/y\"");
    let done = gw
        .gateway
        .reload(coregate::config::parse(&changed, "f.yaml").unwrap())
        .expect("reload");
    assert!(done.changes.contains("routes"), "{}", done.changes);
    seen.extend((0..10).map(|_| pick()));
    for (start, window) in seen.windows(4).enumerate() {
        let to_a = window.iter().filter(|n| *n == "a").count();
        assert_eq!(to_a, 3, "window at {start} of {seen:?}");
    }
}

#[test]
fn pooled_connections_to_a_removed_endpoint_are_closed_on_reload() {
    let (a, b) = (
        HttpUpstream::builder().name("a").start(),
        HttpUpstream::builder().name("b").start(),
    );
    let yaml = config(&[(a.addr(), 1)], "/x", false, "5s");
    let mut gw = TestGateway::start(&yaml);
    let mut c = HttpClient::connect(gw.addr).unwrap();
    assert_eq!(c.get("/", "h").unwrap().header("x-upstream"), Some("a"));
    assert_eq!(a.active_connections(), 1, "a pooled connection to a");
    let moved = config(&[(b.addr(), 1)], "/x", false, "5s");
    gw.gateway
        .reload(coregate::config::parse(&moved, "g.yaml").unwrap())
        .expect("reload");
    assert_eq!(c.get("/", "h").unwrap().header("x-upstream"), Some("b"));
    let deadline = Instant::now() + T;
    while a.active_connections() > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        a.active_connections(),
        0,
        "the idle connection to the removed endpoint is closed"
    );
}

#[test]
fn ready_turns_503_on_sigterm_while_requests_drain() {
    let up = HttpUpstream::builder()
        .route(
            "/slow",
            Reply::Delay {
                delay: Duration::from_millis(800),
                body: "done",
            },
        )
        .start();
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}\n{}",
        config(&[(up.addr(), 1)], "/x", false, "10s")
    );
    let mut gw = Coregate::start(&yaml);
    let addr = gw.listener("main");
    let line = gw.wait_for("admin listening", T);
    let admin: SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("address="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no admin address in {line:?}"));
    let ready = || raw_exchange(admin, b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n", T).status();
    assert_eq!(ready(), Some(200));
    let inflight = thread::spawn(move || {
        let mut c = RawClient::connect(addr);
        c.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
        c.read_response(T).status
    });
    up.wait_requests(1, T);
    gw.signal(libc::SIGTERM);
    gw.wait_for("shutting down", T);
    assert_eq!(
        ready(),
        Some(503),
        "draining: balancers in front stop sending"
    );
    assert_eq!(
        inflight.join().unwrap(),
        200,
        "the request in flight finishes"
    );
    let status = gw.wait_exit(T).expect("exits once drained");
    assert!(status.success(), "{status:?}");
}
