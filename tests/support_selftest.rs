//! Self-test of the end-to-end support module: every helper exercised against the others, no proxy.

mod support;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::client::{Body, HttpClient, RawClient, raw_exchange};
use support::upstream::{
    BlackholeUpstream, Checksum, DEFAULT_TIMEOUT, HttpUpstream, RawUpstream, Reply, checksum,
    closed_port, pattern_bytes, pattern_checksum,
};

const T: Duration = DEFAULT_TIMEOUT;

#[test]
fn pattern_and_checksum_agree() {
    let all = pattern_bytes(0, 1000);
    assert_eq!(all[0], 0);
    assert_eq!(all[250], 250);
    assert_eq!(all[251], 0);
    assert_eq!(all[502], 0);
    assert_eq!(pattern_bytes(300, 10), all[300..310].to_vec());
    assert_eq!(pattern_checksum(1000), checksum(&all));
    let mut c = Checksum::new();
    c.update(&all[..123]);
    c.update(&all[123..]);
    assert_eq!(c.value(), checksum(&all));
    assert_eq!(pattern_checksum(0), checksum(&[]));
    // Crosses a 64 KiB frame boundary.
    let n = 200_000;
    assert_eq!(pattern_checksum(n as u64), checksum(&pattern_bytes(0, n)));
}

#[test]
fn default_reply_and_recorded_request() {
    let up = HttpUpstream::builder().name("v1").start();
    let mut c = HttpClient::connect(up.addr()).unwrap();
    let r = c.get("/some/path?q=1", "example.test").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "v1\n");
    assert_eq!(r.header("x-upstream"), Some("v1"));
    assert_eq!(r.header("content-length"), Some("3"));
    assert_eq!(r.header("transfer-encoding"), None);

    // Recorded before the response was sent: no wait needed.
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    let rec = &reqs[0];
    assert_eq!(rec.method, "GET");
    assert_eq!(rec.path, "/some/path?q=1");
    assert_eq!(rec.version, "HTTP/1.1");
    assert_eq!(rec.header("Host"), Some("example.test"));
    assert_eq!(rec.body_len, 0);
    assert_eq!(rec.body_checksum, checksum(&[]));
    assert!(rec.body_complete);
    assert_eq!(rec.conn_id, 0);
    assert_eq!(up.name(), "v1");
}

#[test]
fn route_replies_and_matching() {
    let up = HttpUpstream::builder()
        .name("r")
        .route("/status/404", Reply::Status(404, "nope"))
        .route("/a", Reply::Status(201, "a"))
        .route("/a/b", Reply::Status(202, "ab"))
        .route(
            "/slow",
            Reply::Delay {
                delay: Duration::from_millis(150),
                body: "late",
            },
        )
        .route(
            "/custom",
            Reply::Custom {
                status: 203,
                headers: vec![
                    ("set-cookie".into(), "a=1".into()),
                    ("set-cookie".into(), "b=2".into()),
                    ("x-extra".into(), "yes".into()),
                ],
                body: b"custom body".to_vec(),
            },
        )
        .start();
    let mut c = HttpClient::connect(up.addr()).unwrap();
    let r = c.get("/status/404", "h").unwrap();
    assert_eq!((r.status, r.text().as_str()), (404, "nope"));
    assert_eq!(r.header("x-upstream"), Some("r"));
    assert_eq!(c.get("/a", "h").unwrap().status, 201);
    assert_eq!(c.get("/a/x?y", "h").unwrap().status, 201);
    assert_eq!(c.get("/ab", "h").unwrap().status, 201, "prefix match");
    assert_eq!(c.get("/a/b/c", "h").unwrap().status, 202, "longest prefix");
    assert_eq!(c.get("/elsewhere", "h").unwrap().text(), "r\n");

    let started = Instant::now();
    let r = c.get("/slow", "h").unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!((r.status, r.text().as_str()), (200, "late"));

    let r = c.get("/custom", "h").unwrap();
    assert_eq!(r.status, 203);
    assert_eq!(r.header_all("set-cookie"), vec!["a=1", "b=2"]);
    assert_eq!(r.header("x-extra"), Some("yes"));
    assert_eq!(r.body, b"custom body");
    assert_eq!(up.request_count(), 8);
}

#[test]
fn echo_streams_4mib_chunked_body() {
    let up = HttpUpstream::builder().route("/echo", Reply::Echo).start();
    let mut c = HttpClient::connect(up.addr()).unwrap();
    let len = 4u64 << 20;
    let r = c
        .request_streaming(
            "POST",
            "/echo",
            &[("host", "h")],
            Body::Pattern { len, chunked: true },
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body_len, len);
    assert_eq!(r.body_checksum, pattern_checksum(len));
    let rec = &up.wait_requests(1, T)[0];
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.header("transfer-encoding"), Some("chunked"));
    assert_eq!(rec.header("content-length"), None);
    assert_eq!(rec.body_len, len);
    assert_eq!(rec.body_checksum, pattern_checksum(len));
    assert!(rec.body_complete);

    // With content-length, collected.
    let small = 100_000u64;
    let r = c
        .request(
            "PUT",
            "/echo",
            &[("host", "h")],
            Body::Pattern {
                len: small,
                chunked: false,
            },
        )
        .unwrap();
    assert_eq!(r.body, pattern_bytes(0, small as usize));
    let rec = &up.wait_requests(2, T)[1];
    assert_eq!(rec.header("content-length"), Some("100000"));
    assert_eq!(rec.body_len, small);

    let r = c
        .request(
            "POST",
            "/echo",
            &[("host", "h")],
            Body::Bytes(b"hello".to_vec()),
        )
        .unwrap();
    assert_eq!(r.body, b"hello");
    assert_eq!(up.accepts(), 1);
}

#[test]
fn sized_replies_streamed_with_checksum() {
    let big = 8u64 << 20;
    let up = HttpUpstream::builder()
        .route(
            "/big",
            Reply::Sized {
                len: big,
                chunked: true,
            },
        )
        .route(
            "/fixed",
            Reply::Sized {
                len: 300_000,
                chunked: false,
            },
        )
        .start();
    let mut c = HttpClient::connect(up.addr()).unwrap();
    let r = c
        .request_streaming("GET", "/big", &[("host", "h")], Body::Empty)
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body_len, big);
    assert_eq!(r.body_checksum, pattern_checksum(big));

    let r = c.get("/fixed", "h").unwrap();
    assert_eq!(r.header("content-length"), Some("300000"));
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.body, pattern_bytes(0, 300_000));
}

#[test]
fn keep_alive_accounting_and_headers() {
    let up = HttpUpstream::builder().name("ka").start();
    let mut c1 = HttpClient::connect(up.addr()).unwrap();
    c1.get("/one", "h").unwrap();
    c1.request(
        "GET",
        "/two",
        &[
            ("host", "h"),
            ("x-dup", "1"),
            ("X-Other", "o"),
            ("x-dup", "2"),
        ],
        Body::Empty,
    )
    .unwrap();
    assert_eq!(
        up.accepts(),
        1,
        "two keep-alive requests share one connection"
    );
    let mut c2 = HttpClient::connect(up.addr()).unwrap();
    c2.get("/three", "h").unwrap();
    let reqs = up.wait_requests(3, T);
    assert_eq!(up.accepts(), 2);
    assert_eq!(
        reqs.iter()
            .map(|r| (r.path.as_str(), r.conn_id))
            .collect::<Vec<_>>(),
        vec![("/one", 0), ("/two", 0), ("/three", 1)]
    );
    assert_eq!(reqs[1].header_all("x-dup"), vec!["1", "2"]);
    assert_eq!(reqs[1].header("x-other"), Some("o"));
    assert!(reqs[1].headers.iter().all(|(n, _)| *n == n.to_lowercase()));
    assert_eq!(up.active_connections(), 2);
    drop(c1);
    drop(c2);
    let deadline = Instant::now() + T;
    while up.active_connections() != 0 {
        assert!(Instant::now() < deadline, "connections not closed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn keep_alive_off_closes_and_client_sees_it() {
    let up = HttpUpstream::builder().keep_alive(false).start();
    let mut c = HttpClient::connect(up.addr()).unwrap();
    let r = c.get("/", "h").unwrap();
    assert_eq!(r.status, 200);
    assert!(c.wait_closed(T), "server should close after one response");
    let err = c.get("/", "h").unwrap_err();
    assert!(err.contains("/"), "{err}");
}

#[test]
fn header_read_timeout_closes_idle_connections() {
    let up = HttpUpstream::builder()
        .header_read_timeout(Some(Duration::from_millis(200)))
        .start();
    let mut c = HttpClient::connect(up.addr()).unwrap();
    assert_eq!(c.get("/", "h").unwrap().status, 200);
    assert!(
        c.wait_closed(T),
        "idle connection should be closed by the upstream"
    );
    let deadline = Instant::now() + T;
    while up.active_connections() != 0 {
        assert!(
            Instant::now() < deadline,
            "connection still counted as active"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn wait_requests_times_out_with_clear_message() {
    let up = HttpUpstream::builder().name("idle").start();
    let started = Instant::now();
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        up.wait_requests(1, Duration::from_millis(100))
    }));
    let msg = *res.unwrap_err().downcast::<String>().unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(msg.contains("timed out") && msg.contains("idle"), "{msg}");
}

#[test]
fn http_1_0_request_recorded_via_raw_exchange() {
    let up = HttpUpstream::builder().name("old").start();
    let raw = raw_exchange(up.addr(), b"GET /legacy HTTP/1.0\r\nHost: h\r\n\r\n", T);
    assert!(raw.closed, "HTTP/1.0 without keep-alive: server closes");
    assert_eq!(raw.status(), Some(200));
    let rs = raw.responses();
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].text(), "old\n");
    assert!(rs[0].complete);
    assert!(raw.text().contains("x-upstream: old"));
    let rec = &up.wait_requests(1, T)[0];
    assert_eq!(rec.version, "HTTP/1.0");
    assert_eq!(rec.path, "/legacy");
}

#[test]
fn raw_upstream_pipelined_responses_parsed() {
    let raw_up = RawUpstream::start(|conn| {
        let first = conn.read_request().expect("first request");
        assert_eq!(first.target, "/1");
        let second = conn.read_request().expect("second request");
        assert_eq!(second.target, "/2");
        assert_eq!(second.body, b"body");
        conn.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-trailer: t\r\n\r\n\
              HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\nX-A: 1\r\nX-A: 2\r\n\r\nnope",
        );
        conn.close();
    });
    let raw = raw_exchange(
        raw_up.addr(),
        b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody",
        T,
    );
    assert!(raw.closed && !raw.reset);
    assert_eq!(raw.status(), Some(200));
    let rs = raw.responses();
    assert_eq!(rs.len(), 2);
    assert_eq!(rs[0].status, 200);
    assert_eq!(rs[0].body, b"abcde");
    assert_eq!(
        rs[0].trailers,
        vec![("x-trailer".to_string(), "t".to_string())]
    );
    assert_eq!(rs[1].status, 404);
    assert_eq!(rs[1].reason, "Not Found");
    assert_eq!(rs[1].header_all("x-a"), vec!["1", "2"]);
    assert_eq!(rs[1].text(), "nope");
    assert!(rs.iter().all(|r| r.complete));
    assert_eq!(raw_up.accepts(), 1);
    assert!(
        raw_up.script_panics().is_empty(),
        "{:?}",
        raw_up.script_panics()
    );
}

#[test]
fn raw_upstream_responding_keep_alive() {
    let raw_up = RawUpstream::responding(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let mut c = RawClient::connect(raw_up.addr());
    for i in 0..3 {
        c.send(format!("GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        let r = c.read_response(T);
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    }
    // A chunked request body is consumed before the next response.
    c.send(
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n",
    );
    assert_eq!(c.read_response(T).text(), "ok");
    c.send(b"GET /y HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.read_response(T).text(), "ok");
    assert!(c.leftover().is_empty());
    raw_up.wait_accepts(1, T);
    assert_eq!(raw_up.accepts(), 1);
    c.shutdown_write();
    assert!(c.is_closed(T), "responding closes after the client's EOF");
}

#[test]
fn raw_client_keeps_leftover_bytes() {
    let raw_up = RawUpstream::start(|conn| {
        conn.read_head().expect("head");
        // Two responses in one write, then (after the next request) a close-delimited one.
        conn.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirstHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nsecond\r\n0\r\n\r\n",
        );
        conn.read_head().expect("head 2");
        conn.write(b"HTTP/1.1 200 OK\r\n\r\nuntil close");
        conn.close();
    });
    let mut c = RawClient::connect(raw_up.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let r1 = c.read_response(T);
    assert_eq!((r1.status, r1.text().as_str()), (200, "first"));
    let r2 = c.read_response(T);
    assert_eq!((r2.status, r2.text().as_str()), (201, "second"));
    assert!(c.leftover().is_empty());
    c.send(b"GET /again HTTP/1.1\r\nHost: h\r\n\r\n");
    let r3 = c.read_response(T);
    assert_eq!(r3.text(), "until close");
    assert!(r3.complete);
    assert!(c.is_closed(T));
    assert!(!c.was_reset());
    assert!(c.local_addr().ip().is_loopback());
}

#[test]
fn head_response_and_raw_client_on_hyper() {
    let up = HttpUpstream::builder().name("hd").start();
    let mut c = RawClient::connect(up.addr());
    c.send(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let h = c.read_head_response(T);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("3"));
    assert!(h.body.is_empty());
    let g = c.read_response(T);
    assert_eq!(g.text(), "hd\n");
    assert_eq!(up.accepts(), 1);
    let reqs = up.wait_requests(2, T);
    assert_eq!(reqs[0].method, "HEAD");
    assert_eq!(reqs[0].conn_id, reqs[1].conn_id);
}

#[test]
fn reset_and_truncation_are_visible_to_clients() {
    // Partial response then RST.
    let raw_up = RawUpstream::start(|conn| {
        if conn.read_head().is_some() {
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
            conn.reset();
        }
    });
    let raw = raw_exchange(raw_up.addr(), b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", T);
    assert!(raw.closed);
    assert!(raw.reset, "expected an RST; got bytes {:?}", raw.text());
    let mut rc = RawClient::connect(raw_up.addr());
    rc.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let err = rc.try_read_response(T).unwrap_err();
    assert!(err.contains("closed"), "{err}");
    let mut hc = HttpClient::connect(raw_up.addr()).unwrap();
    let err = hc.get("/", "h").unwrap_err();
    assert!(err.starts_with("GET / to "), "{err}");

    // Truncated content-length body then FIN: an Err, not a short body.
    let trunc = RawUpstream::start(|conn| {
        if conn.read_head().is_some() {
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort");
            conn.close();
        }
    });
    let mut hc = HttpClient::connect(trunc.addr()).unwrap();
    let err = hc.get("/", "h").unwrap_err();
    assert!(err.contains("body error after 5 bytes"), "{err}");
    let raw = raw_exchange(trunc.addr(), b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", T);
    assert!(raw.closed && !raw.reset);
    let rs = raw.responses();
    assert!(!rs[0].complete);
    assert_eq!(rs[0].body, b"short");
}

#[test]
fn raw_conn_reads_streamed_request_body() {
    let len = 300_000u64;
    let raw_up = RawUpstream::start(move |conn| {
        let req = conn.read_request().expect("request");
        assert_eq!(req.method, "POST");
        assert_eq!(req.header("transfer-encoding"), Some("chunked"));
        let ok = req.body == pattern_bytes(0, len as usize);
        let status: &[u8] = if ok { b"204 No Content" } else { b"400 Bad" };
        conn.write(&[b"HTTP/1.1 ", status, b"\r\n\r\n"].concat());
        let tail = conn.read_exact(3);
        assert_eq!(tail, b"GET");
    });
    let mut c = HttpClient::connect(raw_up.addr()).unwrap();
    let r = c
        .request(
            "POST",
            "/up",
            &[("host", "h")],
            Body::Pattern { len, chunked: true },
        )
        .unwrap();
    assert_eq!(r.status, 204);
    let _ = c.get("/", "h");
    assert!(
        raw_up.script_panics().is_empty(),
        "{:?}",
        raw_up.script_panics()
    );
}

#[test]
fn script_panics_are_reported() {
    let raw_up = RawUpstream::start(|_conn| panic!("scripted failure"));
    let raw = raw_exchange(raw_up.addr(), b"GET / HTTP/1.1\r\n\r\n", T);
    assert!(raw.closed);
    let deadline = Instant::now() + T;
    while raw_up.script_panics().is_empty() {
        assert!(Instant::now() < deadline, "panic not recorded");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(raw_up.script_panics()[0].contains("scripted failure"));
}

#[test]
fn closed_port_is_refused() {
    let addr = closed_port();
    assert!(addr.ip().is_loopback());
    let err = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    let err = HttpClient::connect(addr).err().expect("connect must fail");
    assert!(err.contains("failed"), "{err}");
}

#[test]
fn blackhole_connect_times_out() {
    let bh = BlackholeUpstream::start();
    assert!(
        bh.is_blackholed(),
        "kernel kept accepting: {} filler connections all completed",
        bh.fillers()
    );
    let started = Instant::now();
    let res = TcpStream::connect_timeout(&bh.addr(), Duration::from_millis(300));
    let elapsed = started.elapsed();
    match res {
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
        }
        other => panic!(
            "expected connect timeout to blackhole {} (fillers {}), got {other:?} after {elapsed:?}",
            bh.addr(),
            bh.fillers()
        ),
    }
}

#[test]
fn upstream_drop_is_bounded_with_request_in_flight() {
    let up = HttpUpstream::builder()
        .route(
            "/hang",
            Reply::Delay {
                delay: Duration::from_secs(60),
                body: "never",
            },
        )
        .start();
    let addr = up.addr();
    let client = std::thread::spawn(move || {
        let mut c = HttpClient::connect(addr).unwrap();
        c.get("/hang", "h")
    });
    up.wait_requests(1, T);
    let started = Instant::now();
    drop(up);
    assert!(started.elapsed() < Duration::from_secs(2));
    let res = client.join().unwrap();
    assert!(res.is_err(), "{res:?}");

    let raw_up = RawUpstream::responding(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let started = Instant::now();
    drop(raw_up);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn http_client_timeout_is_an_error() {
    let up = HttpUpstream::builder()
        .route(
            "/slow",
            Reply::Delay {
                delay: Duration::from_secs(5),
                body: "late",
            },
        )
        .start();
    let mut c = HttpClient::connect(up.addr()).unwrap();
    c.set_timeout(Duration::from_millis(200));
    let err = c.get("/slow", "h").unwrap_err();
    assert!(err.contains("timed out"), "{err}");
}
