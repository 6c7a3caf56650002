//! Proves the receive armed ahead on plaintext keep-alive connections (one multishot receive
//! across requests): whatever follows a keep-alive request — a body sent in pieces, a head
//! split over writes, pipelined requests, a chunked body — reaches the upstream intact and in
//! order, and an upload that stalls mid-body beside busy neighbours arrives whole.

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::client::RawClient;
use support::gateway::{TestGateway, simple_config};
use support::harness::{Gate, T};
use support::upstream::{HttpUpstream, RawUpstream, Reply, pattern_bytes};

fn upstream() -> HttpUpstream {
    HttpUpstream::builder()
        .name("up")
        .route("/a", Reply::Status(200, "alpha"))
        .route("/b", Reply::Status(201, "bravo"))
        .route("/echo", Reply::Echo)
        .start()
}

fn gateway(up: &HttpUpstream) -> TestGateway {
    TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"))
}

fn ring_exhausted(gw: &TestGateway) -> u64 {
    let workers = gw.gateway.registry().workers();
    workers.iter().map(|w| w.ring_exhausted.get()).sum()
}

#[test]
fn what_follows_a_keep_alive_request_arrives_intact_and_in_order() {
    let up = upstream();
    let gw = gateway(&up);
    let mut c = RawClient::connect(gw.listener("main"));
    let body = pattern_bytes(7, 5000);
    for round in 0..20 {
        // A keep-alive request: the connection then waits with its receive armed ahead.
        c.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
        let r = c.read_response(T);
        assert_eq!(
            (r.status, &r.body[..]),
            (200, &b"alpha"[..]),
            "round {round}"
        );

        // A body sent after its head, in three writes.
        c.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n");
        for part in body.chunks(1700) {
            c.send(part);
        }
        let r = c.read_response(T);
        assert_eq!(r.status, 200, "round {round}");
        assert!(r.body == body, "round {round}: echoed body differs");

        // A head split over two writes.
        c.send(b"GET /b HT");
        c.send(b"TP/1.1\r\nHost: h\r\n\r\n");
        let r = c.read_response(T);
        assert_eq!(
            (r.status, &r.body[..]),
            (201, &b"bravo"[..]),
            "round {round}"
        );

        // Three requests pipelined in one write, then a chunked body behind a head.
        c.send(
            b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n\
              GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
        );
        for want in [200, 201, 200] {
            assert_eq!(c.read_response(T).status, want, "round {round}");
        }
        c.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
        c.send(b"5\r\nhello\r\n");
        c.send(b"6\r\n world\r\n0\r\n\r\n");
        let r = c.read_response(T);
        assert_eq!(
            (r.status, &r.body[..]),
            (200, &b"hello world"[..]),
            "round {round}"
        );
    }
    let recorded = up.wait_requests(20 * 7, T);
    let echoed: Vec<_> = recorded.iter().filter(|r| r.path == "/echo").collect();
    assert_eq!(echoed.len(), 40);
    assert!(echoed.iter().all(|r| r.body_complete));
    // One connection throughout.
    assert_eq!(
        gw.gateway.registry().workers()[0]
            .connections_accepted
            .get(),
        1
    );
}

#[test]
fn an_upload_after_a_keep_alive_request_arrives_intact_beside_busy_neighbours() {
    // An upload on a connection that waited with its receive armed ahead, to an upstream that
    // does not read it yet (small socket buffers: the path to it fills at once), so that the
    // gateway must stop reading the client mid-body; meanwhile 64 connections beside it, their
    // requests all in at once, are served from the core's ring. Once the upstream reads, the
    // body arrives whole and in order. (That taking the receive back keeps every byte and
    // leaves nothing armed is proved in rt::ahead's unit tests.)
    const LEN: usize = 8 << 20;
    let release = Arc::new(AtomicBool::new(false));
    let received = Arc::new(Mutex::new(None));
    let up = {
        let (release, received) = (release.clone(), received.clone());
        RawUpstream::start_small_buffers(4096, 1024, move |conn| {
            while let Some(head) = conn.read_head() {
                if !head.starts_with("POST /upload") {
                    conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nalpha");
                    continue;
                }
                let deadline = Instant::now() + T;
                while !release.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let body = conn.read_exact(LEN);
                *received.lock().unwrap() = Some(body == pattern_bytes(0, LEN));
                conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
        })
    };
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"));
    let addr = gw.listener("main");
    let mut others: Vec<RawClient> = (0..64).map(|_| RawClient::connect(addr)).collect();
    for c in &mut others {
        c.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(c.read_response(T).status, 200);
    }
    let mut a = RawClient::connect(addr);
    a.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(a.read_response(T).status, 200);

    // The upload, from a thread of its own: it stalls once every buffer on the way is full.
    let sent = Arc::new(AtomicU64::new(0));
    let body = pattern_bytes(0, LEN);
    let writer = {
        let mut w = a.try_clone_stream();
        let sent = sent.clone();
        std::thread::spawn(move || {
            let head = format!("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {LEN}\r\n\r\n");
            w.write_all(head.as_bytes())?;
            for chunk in body.chunks(4096) {
                w.write_all(chunk)?;
                sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            Ok::<(), std::io::Error>(())
        })
    };
    // Sent in full, or stalled: nothing more went out for 200 ms since it began (bounded by T).
    let deadline = Instant::now() + T;
    let mut last = (0, Instant::now());
    while Instant::now() < deadline {
        let now = sent.load(Ordering::SeqCst);
        if now == LEN as u64 {
            break;
        } else if now != last.0 {
            last = (now, Instant::now());
        } else if now > 0 && last.1.elapsed() > Duration::from_millis(200) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(sent.load(Ordering::SeqCst) > 0, "the upload never started");

    // The connections beside it, their requests all in at once, are served from the ring as
    // before (a request and its response hold a buffer each).
    for c in &mut others {
        c.send(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n");
    }
    for c in &mut others {
        assert_eq!(c.read_response(T).status, 200);
    }
    assert_eq!(ring_exhausted(&gw), 0, "the upload took the ring");

    // And the upload completes, intact, once the upstream reads it.
    release.store(true, Ordering::SeqCst);
    writer.join().expect("writer").expect("upload");
    let r = a.read_response(T);
    assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
    assert_eq!(
        *received.lock().unwrap(),
        Some(true),
        "the upstream got the body intact"
    );
}

#[test]
fn a_pooled_upstream_connection_carries_small_and_large_responses_in_turn() {
    // The receive armed on a pooled upstream connection reads each response; one whose body
    // goes on past its first read is taken back first (the body then comes as fast as the
    // client takes it) and armed again at checkin. Every body arrives intact, and the one
    // connection is found clean for every request.
    let up = HttpUpstream::builder()
        .name("up")
        .route("/small", Reply::Status(200, "alpha"))
        .route(
            "/large",
            Reply::Sized {
                len: 1 << 20,
                chunked: false,
            },
        )
        .route(
            "/chunked",
            Reply::Sized {
                len: 300_000,
                chunked: true,
            },
        )
        .start();
    let gw = gateway(&up);
    let mut c = RawClient::connect(gw.listener("main"));
    for round in 0..10 {
        for (path, len) in [
            ("/small", 5),
            ("/large", 1 << 20),
            ("/small", 5),
            ("/chunked", 300_000),
        ] {
            c.send(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
            let r = c.read_response(T);
            assert_eq!(r.status, 200, "round {round} {path}");
            assert_eq!(r.body.len(), len, "round {round} {path}");
            if len > 5 {
                assert!(
                    r.body == pattern_bytes(0, len),
                    "round {round} {path}: body differs"
                );
            }
        }
    }
    assert_eq!(up.accepts(), 1, "one upstream connection throughout");
}

#[test]
fn an_idle_upstream_connection_that_receives_anything_is_closed_at_once() {
    // Bytes on a pooled connection nobody asked for (here: the upstream writes after its
    // response): the connection is closed as soon as its receive completes, not at the next
    // once-a-second sweep, so that a multishot receive does not go on filling the core's ring
    // with what a misbehaving upstream sends. Five rounds: the sweep alone would take up to a
    // second (~1.007 s each with the watch disabled, the rounds falling in step with it); each
    // within 500 ms leaves room for a loaded machine.
    const ROUNDS: usize = 5;
    let gates: Arc<Vec<Gate>> = Arc::new((0..ROUNDS).map(|_| Gate::new()).collect());
    let closed_after = Arc::new(Mutex::new(Vec::new()));
    let up = {
        let (gates, closed_after) = (gates.clone(), closed_after.clone());
        RawUpstream::start(move |conn| {
            if conn.read_request().is_none() {
                return;
            }
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            // Once the gateway has pooled the connection (before its client has the answer).
            let Some(gate) = gates.get(conn.conn_id() as usize) else {
                return;
            };
            if !gate.wait(T) {
                return;
            }
            let sent = Instant::now();
            conn.write(b"stray");
            // The gateway closes it: the read ends at once instead of timing out.
            let _ = conn.read_head();
            closed_after.lock().unwrap().push(sent.elapsed());
        })
    };
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"));
    for (round, gate) in gates.iter().enumerate() {
        let mut c = RawClient::connect(gw.listener("main"));
        c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let r = c.read_response(T);
        assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]), "round {round}");
        gate.open();
        let deadline = Instant::now() + 2 * T;
        while closed_after.lock().unwrap().len() <= round && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let delays = closed_after.lock().unwrap().clone();
    assert_eq!(delays.len(), ROUNDS, "{delays:?}");
    assert!(
        delays.iter().all(|d| *d < Duration::from_millis(500)),
        "closed only after {delays:?}"
    );
    let ep = gw.endpoint("backend", up.addr());
    assert_eq!(ep.upstream_cx_idle_stray.get(), ROUNDS as u64, "{ep:?}");
}
