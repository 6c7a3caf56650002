//! Proves downstream connection handling: pipelined requests answered in order, head size and
//! header count limits (431 and close), the header timeout (408 and close), the quiet close of
//! an idle keep-alive connection, and HTTP/1.0 persistence (close by default, keep-alive when
//! asked).

mod support;

use std::time::Duration;

use support::client::{RawClient, raw_exchange};
use support::gateway::{TestGateway, simple_config, single_host_config};
use support::harness::{T, exchange, expect_status_and_close};
use support::process::Coregate;
use support::upstream::{HttpUpstream, Reply};

fn gateway(limits: &str) -> (HttpUpstream, TestGateway) {
    let up = HttpUpstream::builder()
        .name("up")
        .route("/a", Reply::Status(200, "alpha"))
        .route("/b", Reply::Status(201, "bravo"))
        .route("/c", Reply::Status(202, "charlie"))
        .start();
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", limits));
    (up, gw)
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (up, gw) = gateway("{}");
    let mut c = RawClient::connect(gw.addr);
    c.send(
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n\
          GET /b HTTP/1.1\r\nHost: h\r\n\r\n\
          GET /c HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    let got: Vec<(u16, String)> = (0..3)
        .map(|_| {
            let r = c.read_response(T);
            (r.status, r.text())
        })
        .collect();
    assert_eq!(
        got,
        [
            (200, "alpha".to_string()),
            (201, "bravo".to_string()),
            (202, "charlie".to_string())
        ]
    );
    let paths: Vec<String> = up.wait_requests(3, T).into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/a", "/b", "/c"]);
    assert!(c.leftover().is_empty(), "nothing after the third response");
    assert!(!c.is_closed(Duration::from_millis(100)), "still open");
}

#[test]
fn pipelined_post_bodies_do_not_bleed_into_the_next_request() {
    let (up, gw) = gateway("{}");
    let mut c = RawClient::connect(gw.addr);
    c.send(
        b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 19\r\n\r\nGET /b HTTP/1.1\r\n\r\n\
          POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(c.read_response(T).text(), "alpha");
    assert_eq!(c.read_response(T).text(), "charlie");
    let rec = up.wait_requests(2, T);
    assert_eq!(
        (rec[0].path.as_str(), rec[0].body_len),
        ("/a", 19),
        "the GET line is the first request's body"
    );
    assert_eq!((rec[1].path.as_str(), rec[1].body_len), ("/c", 3));
}

#[test]
fn head_over_max_request_head_bytes_is_431_and_close() {
    let (up, gw) = gateway("{ max_request_head_bytes: 2048 }");
    let mut req = String::from("GET /a HTTP/1.1\r\nHost: h\r\n");
    for i in 0..30 {
        req.push_str(&format!("X-Filler-{i:02}: {}\r\n", "v".repeat(85)));
    }
    req.push_str("\r\n");
    assert!(req.len() > 3000);
    expect_status_and_close(gw.addr, req.as_bytes(), 431);
    assert_eq!(up.request_count(), 0);

    // Just under the limit passes.
    let small = format!(
        "GET /a HTTP/1.1\r\nHost: h\r\nX-F: {}\r\n\r\n",
        "v".repeat(1900)
    );
    assert!(small.len() < 2048);
    let (r, _, _) = exchange(gw.addr, small.as_bytes());
    assert_eq!(r.status, 200);
}

#[test]
fn more_than_max_headers_is_431_and_close() {
    let (up, gw) = gateway("{ max_headers: 10 }");
    let mut req = String::from("GET /a HTTP/1.1\r\nHost: h\r\n");
    for i in 0..20 {
        req.push_str(&format!("X-{i}: v\r\n"));
    }
    req.push_str("\r\n");
    expect_status_and_close(gw.addr, req.as_bytes(), 431);
    assert_eq!(up.request_count(), 0);

    let (r, _, _) = exchange(
        gw.addr,
        b"GET /a HTTP/1.1\r\nHost: h\r\nX-1: v\r\nX-2: v\r\n\r\n",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn stalled_partial_head_is_408_and_close_after_header_timeout() {
    let (up, gw) = gateway("{ header_timeout: 300ms }");
    let mut c = RawClient::connect(gw.addr);
    let started = std::time::Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n");
    let r = c.read_response(T);
    let took = started.elapsed();
    assert_eq!(r.status, 408, "{r:?}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "408 after {took:?}, expected about the 300ms header timeout"
    );
    assert!(c.is_closed(T), "closed after the 408");
    assert_eq!(up.request_count(), 0);
}

#[test]
fn idle_keep_alive_connection_is_closed_quietly_after_idle_timeout() {
    let (_up, gw) = gateway("{ idle_timeout: 300ms }");
    let (r, mut c, _) = exchange(gw.addr, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 200);
    let started = std::time::Instant::now();
    assert!(c.is_closed(T), "the idle connection is closed");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "closed after {took:?}, before the 300ms idle timeout"
    );
    assert!(
        c.leftover().is_empty(),
        "closed without a word, got {:?}",
        String::from_utf8_lossy(c.leftover())
    );
    assert!(!c.was_reset(), "a clean close, not a reset");
}

#[test]
fn idle_connection_serves_again_after_pauses_and_then_times_out() {
    // Pauses longer than a second (the connection holds no buffer meanwhile) do not disturb
    // it; the idle timeout, counted from the last response, still closes it.
    let (_up, gw) = gateway("{ idle_timeout: 2500ms }");
    let (r, mut c, _) = exchange(gw.addr, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    c.send(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.read_response(T);
    assert_eq!((r.status, r.body.as_slice()), (201, &b"bravo"[..]));
    std::thread::sleep(Duration::from_millis(1200));
    c.send(b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.read_response(T).status, 202);
    let started = std::time::Instant::now();
    assert!(
        c.is_closed(T),
        "the idle connection is closed at its idle timeout"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(2000),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn http_1_0_request_without_keep_alive_gets_connection_close() {
    let (up, gw) = gateway("{}");
    let got = raw_exchange(gw.addr, b"GET /a HTTP/1.0\r\n\r\n", T);
    assert!(got.closed, "the connection is closed: {:?}", got.text());
    let rs = got.responses();
    assert_eq!(rs.len(), 1, "{:?}", got.text());
    assert_eq!((rs[0].status, rs[0].text().as_str()), (200, "alpha"));
    assert_eq!(
        rs[0].header("connection"),
        Some("close"),
        "{:?}",
        got.text()
    );
    let rec = up.wait_requests(1, T);
    assert!(
        rec[0].header("host").is_some(),
        "a Host is supplied upstream"
    );
}

#[test]
fn http_1_0_request_with_keep_alive_stays_open() {
    let (_up, gw) = gateway("{}");
    let (r, mut c, _) = exchange(
        gw.addr,
        b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "alpha"));
    assert_eq!(r.header("connection"), Some("keep-alive"), "{r:?}");
    assert!(!c.is_closed(Duration::from_millis(200)), "still open");
    c.send(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response(T);
    assert_eq!((r.status, r.text().as_str()), (201, "bravo"));
    assert_eq!(r.header("connection"), Some("keep-alive"));
}

#[test]
fn head_response_repeats_the_length_without_a_body_and_keeps_the_connection() {
    let (_up, gw) = gateway("{}");
    let mut c = RawClient::connect(gw.addr);
    c.send(b"HEAD /a HTTP/1.1\r\nHost: a\r\n\r\n");
    let head = c.read_head_response(T);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some("5"),
        "{:?}",
        head.headers
    );
    // No body followed: the next response on the connection parses cleanly.
    c.send(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    let next = c.read_response(T);
    assert_eq!(next.status, 201);
    assert_eq!(next.body, b"bravo");
}

#[test]
fn burst_larger_than_the_buffer_ring_is_served_in_full() {
    // More requests arrive at once than the core's ring has buffers (256): the heads that find
    // the ring empty are read into the connections' own buffers, and every request is answered.
    // The gateway answers them itself (no route for this host), so that the burst tests the
    // gateway's reads, not how fast a test upstream accepts. To make the burst outrun the core
    // whatever the machine's load, the gateway (a child process) is stopped while the requests
    // are sent: on SIGCONT its core finds every receive complete at once.
    let (up, _) = gateway("{}");
    let yaml = format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\n{}",
        single_host_config("only.example", up.addr())
    );
    let gw = Coregate::start(&yaml);
    let addr = gw.listener("main");
    let admin: std::net::SocketAddr = {
        let line = gw.wait_for("admin listening", T);
        let word = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("address="));
        word.expect("admin address").parse().expect("admin address")
    };
    const BURST: usize = 600;
    const REQUEST: &[u8] = b"GET /a HTTP/1.1\r\nHost: elsewhere\r\n\r\n";
    let mut clients: Vec<RawClient> = (0..BURST).map(|_| RawClient::connect(addr)).collect();
    // One exchange each first: every connection is accepted and waits with its receive armed.
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(REQUEST);
        let r = c
            .try_read_response(T)
            .unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(r.status, 404, "client {i}");
    }
    gw.signal(libc::SIGSTOP);
    for c in &mut clients {
        c.send(REQUEST);
    }
    gw.signal(libc::SIGCONT);
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c
            .try_read_response(T)
            .unwrap_or_else(|e| panic!("burst, client {i}: {e}"));
        assert_eq!(r.status, 404, "burst, client {i}");
    }
    let stats = raw_exchange(
        admin,
        b"GET /stats?filter=ring_exhausted HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        T,
    );
    let text = String::from_utf8_lossy(&stats.bytes).into_owned();
    let exhausted: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("worker.0.ring_exhausted: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no worker.0.ring_exhausted in {text:?}"));
    assert!(exhausted > 0, "the burst never emptied the ring: {text}");
}
