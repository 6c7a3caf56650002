//! Proves strict_dns clusters over real sockets: a name the system resolver knows (`localhost`)
//! reaches its origin; with `dns_resolvers` pointed at a tiny DNS responder in this process,
//! a changing answer reaches every core without a reload and without closing the pooled
//! connection of an endpoint that stays, an endpoint that leaves is drained, and a failed
//! lookup keeps the last good answer and is counted.

mod support;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

use support::client::HttpClient;
use support::gateway::TestGateway;
use support::upstream::HttpUpstream;

/// What the test responder answers to every A question.
#[derive(Debug, Clone)]
enum Zone {
    Addresses(Vec<Ipv4Addr>),
    ServFail,
}

/// A DNS responder on a loopback UDP port whose answer the test changes.
struct Responder {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    fn start(zone: Zone) -> Responder {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the responder");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let addr = socket.local_addr().expect("responder address");
        let zone = Arc::new(Mutex::new(zone));
        let stop = Arc::new(AtomicBool::new(false));
        let (z, s) = (zone.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::SeqCst) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let answer = answer(&query, &z.lock().unwrap().clone());
                let _ = socket.send_to(&answer.to_vec().expect("encode"), peer);
            }
        });
        Responder {
            addr,
            zone,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, zone: Zone) {
        *self.zone.lock().unwrap() = zone;
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(query: &Message, zone: &Zone) -> Message {
    let id = query.metadata.id;
    let mut m = match zone {
        Zone::ServFail => Message::error_msg(id, OpCode::Query, ResponseCode::ServFail),
        Zone::Addresses(_) => Message::new(id, MessageType::Response, OpCode::Query),
    };
    m.add_queries(query.queries.iter().cloned());
    if let (Zone::Addresses(ips), Some(q)) = (zone, query.queries.first())
        && q.query_type() == RecordType::A
    {
        for ip in ips {
            m.add_answer(Record::from_rdata(q.name().clone(), 30, RData::A(A(*ip))));
        }
    }
    m
}

/// Two workers, cluster `svc` of strict_dns `host:port` with `lines` added. One client
/// connection is served by one core, so its requests share that core's pools.
fn config(host_port: &str, lines: &str) -> String {
    format!(
        "workers: 2
listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: [\"*\"]
        routes:
          - match: {{ prefix: \"/\" }}
            route: {{ cluster: svc }}
clusters:
  - name: svc
    type: strict_dns
{lines}    endpoints:
      - {{ address: \"{host_port}\" }}
"
    )
}

/// Polls `cond` until it holds; panics with `what` after 10 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn dns_stat(g: &TestGateway, read: fn(&coregate::stats::DnsStats) -> u64) -> u64 {
    read(&g.gateway.registry().cluster(0, "svc").dns)
}

/// The body of `GET /` through `client`: the origin's name.
fn get(client: &mut HttpClient) -> String {
    let r = client.get("/", "svc").expect("request");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    String::from_utf8_lossy(&r.body).trim().to_owned()
}

#[test]
fn strict_dns_localhost_reaches_the_origin() {
    let origin = HttpUpstream::builder().name("origin").start();
    let port = origin.addr().port();
    let yaml = config(
        &format!("localhost:{port}"),
        "    dns_lookup_family: V4_ONLY\n",
    );
    let mut g = TestGateway::start(&yaml);
    let mut client = HttpClient::connect(g.addr).expect("connect");
    assert_eq!(get(&mut client), "origin");
    assert_eq!(dns_stat(&g, |d| d.membership_total.get()), 1);
    assert!(dns_stat(&g, |d| d.update_success.get()) >= 1);
    assert_eq!(dns_stat(&g, |d| d.update_failure.get()), 0);

    // A reload of the same cluster keeps its answer and this core's pooled connection.
    let again = coregate::config::parse(&yaml, "test.yaml").expect("valid");
    g.gateway.reload(again).expect("reload");
    assert_eq!(get(&mut client), "origin");
    assert_eq!(
        origin.accepts(),
        1,
        "the pooled connection survived the reload"
    );
    assert_eq!(dns_stat(&g, |d| d.membership_total.get()), 1);
}

#[test]
fn a_changing_answer_reaches_every_core_keeping_pooled_connections() {
    let a = HttpUpstream::builder().name("a").start();
    let port = a.addr().port();
    let b = HttpUpstream::builder()
        .name("b")
        .bind(SocketAddr::from(([127, 0, 0, 2], port)))
        .start();
    let dns = Responder::start(Zone::Addresses(vec![Ipv4Addr::new(127, 0, 0, 1)]));
    let lines = format!(
        "    dns_refresh_rate: 50ms\n    dns_lookup_family: V4_ONLY\n    dns_resolvers: [{{ address: \"{}\" }}]\n",
        dns.addr
    );
    let g = TestGateway::start(&config(&format!("svc.test:{port}"), &lines));
    let admin = g.start_admin();
    let generation = || g.gateway.snapshot().generation;
    let mut client = HttpClient::connect(g.addr).expect("connect");
    assert_eq!(get(&mut client), "a");
    assert_eq!(get(&mut client), "a");
    assert_eq!(a.accepts(), 1, "one pooled connection to a");
    let before = generation();

    // a and b: b gets traffic, a's pooled connection carries a's share.
    dns.set(Zone::Addresses(vec![
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(127, 0, 0, 2),
    ]));
    wait_for("a and b on every core", || {
        dns_stat(&g, |d| d.membership_total.get()) == 2
    });
    assert!(generation() > before, "published as a new generation");
    for w in g.gateway.registry().workers() {
        assert_eq!(
            w.config_generation.get(),
            generation(),
            "every core serves it"
        );
    }
    assert_eq!(dns_stat(&g, |d| d.membership_change.get()), 1);
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(get(&mut client));
    }
    assert!(
        seen.iter().any(|s| s == "a") && seen.iter().any(|s| s == "b"),
        "{seen:?}"
    );
    assert_eq!(
        a.accepts(),
        1,
        "a's pooled connection stayed across the update"
    );
    assert_eq!(b.accepts(), 1);

    // b only: a is drained (its idle pooled connection closed), every request goes to b.
    dns.set(Zone::Addresses(vec![Ipv4Addr::new(127, 0, 0, 2)]));
    wait_for("b alone", || {
        dns_stat(&g, |d| d.membership_total.get()) == 1
    });
    assert_eq!(dns_stat(&g, |d| d.membership_change.get()), 2);
    wait_for("a's connection closed", || a.active_connections() == 0);
    let served_by_a = a.request_count();
    for _ in 0..4 {
        assert_eq!(get(&mut client), "b");
    }
    assert_eq!(a.request_count(), served_by_a);
    assert_eq!(b.accepts(), 1, "b's pooled connection stayed too");

    // A failed lookup keeps the last good answer, and is counted.
    let failures = dns_stat(&g, |d| d.update_failure.get());
    dns.set(Zone::ServFail);
    wait_for("a failed lookup", || {
        dns_stat(&g, |d| d.update_failure.get()) >= failures + 2
    });
    assert_eq!(get(&mut client), "b");
    assert_eq!(dns_stat(&g, |d| d.membership_total.get()), 1);
    assert_eq!(dns_stat(&g, |d| d.membership_change.get()), 2);
    assert!(dns_stat(&g, |d| d.update_no_rebuild.get()) >= 1);

    // /stats shows the counters.
    let mut admin = HttpClient::connect(admin).expect("admin");
    let stats = admin.get("/stats", "admin").expect("/stats");
    let text = String::from_utf8_lossy(&stats.body);
    for name in [
        "cluster.svc.update_attempt",
        "cluster.svc.update_failure",
        "cluster.svc.membership_change: 2",
        "cluster.svc.membership_total: 1",
    ] {
        assert!(text.contains(name), "{name} missing from /stats:\n{text}");
    }
    drop(a);
}

#[test]
fn a_name_that_does_not_resolve_at_load_starts_empty_until_it_does() {
    let origin = HttpUpstream::builder().name("late").start();
    let port = origin.addr().port();
    let dns = Responder::start(Zone::ServFail);
    let lines = format!(
        "    dns_refresh_rate: 50ms\n    dns_resolvers: [{{ address: \"{}\" }}]\n    dns_lookup_family: V4_PREFERRED\n    health_check:\n      tcp: {{}}\n      interval: 50ms\n      timeout: 40ms\n",
        dns.addr
    );
    let g = TestGateway::start(&config(&format!("late.test:{port}"), &lines));
    assert!(dns_stat(&g, |d| d.update_failure.get()) >= 1);
    assert_eq!(dns_stat(&g, |d| d.membership_total.get()), 0);
    let mut client = HttpClient::connect(g.addr).expect("connect");
    let r = client.get("/", "svc").expect("request");
    assert_eq!(r.status, 503, "an empty cluster has no endpoint");
    dns.set(Zone::Addresses(vec![Ipv4Addr::new(127, 0, 0, 1)]));
    wait_for("the name to resolve", || {
        dns_stat(&g, |d| d.membership_total.get()) == 1
    });
    let mut client = HttpClient::connect(g.addr).expect("connect");
    assert_eq!(get(&mut client), "late");
    // The health checker probes the new set.
    wait_for("a probe of the resolved endpoint", || {
        g.endpoint("svc", origin.addr()).health_check_attempt.get() >= 1
    });
}
