//! Proves the parking of idle keep-alive connections: a plaintext HTTP/1 connection idle past
//! its park delay has its receive withdrawn from the ring, leaves its task and waits as a record
//! of its core's table, its socket watched; whatever arrives then (a request, half of one, the
//! end of the stream), or while it parks, is handled as if it had never parked, the idle timeout
//! still closes it, and a closing listener closes it at once.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::client::RawClient;
use support::gateway::{CatchAll, TestGateway, simple_config};
use support::harness::{T, exchange};
use support::upstream::{HttpUpstream, Reply};

fn upstream() -> HttpUpstream {
    HttpUpstream::builder()
        .name("up")
        .route("/a", Reply::Status(200, "alpha"))
        .route("/b", Reply::Status(201, "bravo"))
        .start()
}

fn gateway(up: &HttpUpstream, workers: usize, limits: &str) -> TestGateway {
    TestGateway::start(&simple_config(&[(up.addr(), 1)], workers, "", limits))
}

/// Parked connections over every worker.
fn parked(gw: &TestGateway) -> u64 {
    let workers = gw.gateway.registry().workers();
    workers.iter().map(|w| w.connections_parked.get()).sum()
}

/// Open downstream connections over every worker.
fn open(gw: &TestGateway) -> u64 {
    let workers = gw.gateway.registry().workers();
    workers.iter().map(|w| w.connections_active.get()).sum()
}

/// Waits (at most `T`) until `what` holds; false if it never did.
fn eventually(what: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if what() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    what()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes()
}

#[test]
fn a_parked_connection_serves_its_next_requests() {
    let up = upstream();
    let gw = gateway(&up, 1, "{ idle_timeout: 30s }");
    let (r, mut c, _) = exchange(gw.addr, &get("/a"));
    assert_eq!(r.status, 200);
    assert!(eventually(|| parked(&gw) == 1), "the idle connection parks");
    assert_eq!(open(&gw), 1, "parked, the connection is still counted open");

    // A whole request wakes it.
    c.send(&get("/b"));
    let r = c.read_response(T);
    assert_eq!((r.status, r.body.as_slice()), (201, &b"bravo"[..]));

    // Half a head wakes it; the rest, sent after it left the table, completes the request.
    assert!(eventually(|| parked(&gw) == 1), "parks again");
    c.send(b"GET /a HTTP/1.1\r\nHo");
    assert!(eventually(|| parked(&gw) == 0), "half a head takes it out");
    c.send(b"st: h\r\n\r\n");
    let r = c.read_response(T);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"alpha"[..]));

    // Two pipelined requests in one segment are both answered, in order.
    assert!(eventually(|| parked(&gw) == 1), "parks again");
    let mut two = get("/b");
    two.extend_from_slice(&get("/a"));
    c.send(&two);
    assert_eq!(c.read_response(T).status, 201);
    assert_eq!(c.read_response(T).status, 200);
    assert_eq!(up.request_count(), 5);
}

/// Requests that come just as their connection parks, while its receive is being withdrawn
/// from the ring, are all answered: what beats the cancellation is served by the task, what
/// comes after it wakes the record. 60 connections send their second request 200 to 318 ms
/// after their first answer, 2 ms apart, around the 250 ms park delay.
#[test]
fn requests_arriving_as_connections_park_are_all_answered() {
    let up = upstream();
    let gw = gateway(&up, 2, "{ idle_timeout: 30s }");
    let clients: Vec<_> = (0..60u64)
        .map(|i| {
            let (r, c, _) = exchange(gw.addr, &get("/a"));
            assert_eq!(r.status, 200);
            let at = Instant::now() + Duration::from_millis(200 + 2 * i);
            std::thread::spawn(move || {
                let mut c = c;
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                c.send(&get("/b"));
                let r = c.read_response(T);
                (r.status, r.body, c)
            })
        })
        .collect();
    let mut open_clients = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let (status, body, c) = client.join().expect("client thread");
        assert_eq!(
            (status, body.as_slice()),
            (201, &b"bravo"[..]),
            "client {i}"
        );
        open_clients.push(c);
    }
    assert_eq!(up.request_count(), 120);
    assert!(
        eventually(|| parked(&gw) == 60),
        "all park again afterwards"
    );
}

#[test]
fn a_parked_connection_closes_quietly_at_its_idle_timeout() {
    let up = upstream();
    let gw = gateway(&up, 1, "{ idle_timeout: 1s }");
    let (r, mut c, _) = exchange(gw.addr, &get("/a"));
    let answered = Instant::now();
    assert_eq!(r.status, 200);
    assert!(eventually(|| parked(&gw) == 1), "the idle connection parks");
    assert!(c.is_closed(T), "the parked connection is closed");
    let idle = answered.elapsed();
    assert!(
        idle >= Duration::from_millis(950),
        "closed after {idle:?}, before the 1s idle timeout"
    );
    assert!(c.leftover().is_empty(), "closed without a word");
    assert!(!c.was_reset(), "a clean close, not a reset");
    assert!(eventually(|| parked(&gw) == 0 && open(&gw) == 0));
}

#[test]
fn a_parked_connection_whose_client_leaves_is_closed() {
    let up = upstream();
    let gw = gateway(&up, 1, "{ idle_timeout: 30s }");
    let (r, c, _) = exchange(gw.addr, &get("/a"));
    assert_eq!(r.status, 200);
    assert!(eventually(|| parked(&gw) == 1), "the idle connection parks");
    drop(c);
    assert!(
        eventually(|| parked(&gw) == 0 && open(&gw) == 0),
        "the end of the stream closes it: {} parked, {} open",
        parked(&gw),
        open(&gw)
    );
}

#[test]
fn many_parked_connections_wake_together_and_are_all_served() {
    // 100 at once: the test upstream's accept backlog (128) takes the new upstream
    // connections they need all at once.
    let up = upstream();
    let gw = gateway(&up, 2, "{ idle_timeout: 30s }");
    let mut clients: Vec<RawClient> = (0..100)
        .map(|_| {
            let (r, c, _) = exchange(gw.addr, &get("/a"));
            assert_eq!(r.status, 200);
            c
        })
        .collect();
    assert!(eventually(|| parked(&gw) == 100), "{} parked", parked(&gw));
    for c in &mut clients {
        c.send(&get("/b"));
    }
    for c in &mut clients {
        let r = c.read_response(T);
        assert_eq!((r.status, r.body.as_slice()), (201, &b"bravo"[..]));
    }
    // Half of them leave; the rest park again and are served again.
    clients.truncate(50);
    assert!(
        eventually(|| parked(&gw) == 50 && open(&gw) == 50),
        "{} parked, {} open",
        parked(&gw),
        open(&gw)
    );
    for c in &mut clients {
        c.send(&get("/a"));
        assert_eq!(c.read_response(T).status, 200);
    }
    assert_eq!(up.request_count(), 250);
}

/// Two listeners, `main` and `extra`, on one worker: the catch-all config's listener twice.
fn two_listeners(up: SocketAddr) -> String {
    let yaml = CatchAll::new(up)
        .top("limits: { idle_timeout: 30s, drain_timeout: 20s }")
        .yaml();
    let (main, clusters) = (
        yaml.find("  - name: main").unwrap(),
        yaml.find("clusters:").unwrap(),
    );
    let extra = yaml[main..clusters].replace("name: main", "name: extra");
    format!("{}{extra}{}", &yaml[..clusters], &yaml[clusters..])
}

#[test]
fn removing_a_listener_closes_its_parked_connections_at_once() {
    let up = upstream();
    let yaml = two_listeners(up.addr());
    let mut gw = TestGateway::start(&yaml);
    let (r, mut kept, _) = exchange(gw.addr, &get("/a"));
    assert_eq!(r.status, 200);
    let (r, mut removed, _) = exchange(gw.listener("extra"), &get("/a"));
    assert_eq!(r.status, 200);
    assert!(
        eventually(|| parked(&gw) == 2),
        "both idle connections park"
    );

    let without_extra = yaml.replace(
        &yaml[yaml.find("  - name: extra").unwrap()..yaml.find("clusters:").unwrap()],
        "",
    );
    let config = coregate::config::parse(&without_extra, "b.yaml").unwrap();
    let asked = Instant::now();
    gw.gateway.reload(config).expect("reload");
    // Well before the 20 s drain: an idle connection has nothing to finish.
    assert!(
        removed.is_closed(T),
        "the removed listener's connection is closed"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert!(removed.leftover().is_empty(), "closed without a word");
    assert_eq!(
        parked(&gw),
        1,
        "the other listener's connection stays parked"
    );

    kept.send(&get("/b"));
    assert_eq!(kept.read_response(T).status, 201);
}

#[test]
fn shutdown_closes_parked_connections_at_once() {
    let up = upstream();
    let gw = gateway(&up, 1, "{ idle_timeout: 30s, drain_timeout: 20s }");
    let (r, mut c, _) = exchange(gw.addr, &get("/a"));
    assert_eq!(r.status, 200);
    assert!(eventually(|| parked(&gw) == 1), "the idle connection parks");
    let asked = Instant::now();
    gw.shutdown(Duration::from_secs(20));
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert!(c.is_closed(T), "the parked connection is closed");
}
