//! HTTP/2 through the gateway over real sockets: curl over TLS (ALPN h2) and with prior
//! knowledge (h2c), HTTP/1.1 still served on the same listener, many streams on one connection
//! spread over endpoints, bodies larger than every window both ways, a stream reset mid-body,
//! a rapid-reset flood, an HTTP/2 upstream that sends GOAWAY under load, drain, ALPN toward a
//! TLS upstream, keep-alive PINGs, the idle GOAWAY and interim responses.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use coregate::stats::ListenerStats;
use h2::client::SendRequest;
use support::gateway::{CatchAll, TestGateway, retry_config};
use support::h2frames::{ACK, GOAWAY, H2Client, HEADERS, NO_ERROR, PING};
use support::harness::T;
use support::tls::{Ca, Dir, Key};
use support::upstream::{HttpUpstream, RawUpstream, Reply, checksum, pattern_bytes};
use tokio::net::TcpStream;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `fut` on a fresh runtime, within 30 s.
fn run<F: std::future::Future>(fut: F) -> F::Output {
    runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(30), fut)
            .await
            .expect("the test finished within 30 s")
    })
}

/// An h2c (prior knowledge) client connection to `addr`; its driver runs on the runtime.
async fn h2c(addr: SocketAddr) -> SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

fn get(path: &str) -> http::Request<()> {
    http::Request::get(format!("http://app.test{path}"))
        .body(())
        .expect("request")
}

/// Sends a request without a body and returns its status and body.
async fn fetch(send: &SendRequest<Bytes>, path: &str) -> (u16, Vec<u8>) {
    let mut send = send.clone().ready().await.expect("ready");
    let (response, _) = send.send_request(get(path), true).expect("send");
    let response = response.await.expect("response");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    (status, out)
}

fn total(gw: &TestGateway, field: fn(&ListenerStats) -> &coregate::stats::Counter) -> u64 {
    gw.gateway.registry().listener_total("main", field)
}

fn curl(args: &[&str]) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl runs (.ci/run installs it)");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn curl_speaks_h2_over_tls_and_with_prior_knowledge_and_http1_still_works() {
    let up = HttpUpstream::builder().name("origin").start();
    let dir = Dir::new("h2-curl");
    let ca = Ca::new("h2 ca");
    let (cert, key) = ca.server(&["a.test"], Key::EcdsaP256).write(&dir, "a");
    let ca_path = dir.write("ca.pem", &ca.pem);
    let tls = format!(
        "    http2: true\n    tls:\n      certificates:\n        - {{ cert: \"{}\", key: \"{}\", server_names: [\"*\"] }}\n",
        cert.display(),
        key.display()
    );
    let secure = CatchAll::new(up.addr()).listener("main", &tls).start();
    let port = secure.addr.port();
    let (out, err) = curl(&[
        "--http2",
        "--cacert",
        &ca_path.display().to_string(),
        "--resolve",
        &format!("a.test:{port}:127.0.0.1"),
        "-w",
        "\n%{http_version} %{http_code}",
        &format!("https://a.test:{port}/over-tls"),
    ]);
    assert!(
        out.trim_end().ends_with("2 200"),
        "HTTP/2 over TLS: {out} {err}"
    );

    let plain = CatchAll::new(up.addr())
        .listener("main", "    http2: true\n")
        .start();
    let url = format!("http://127.0.0.1:{}/prior", plain.addr.port());
    let (out, err) = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version} %{http_code}",
        &url,
    ]);
    assert!(out.trim_end().ends_with("2 200"), "h2c: {out} {err}");
    let (out, err) = curl(&["--http1.1", "-w", "\n%{http_version} %{http_code}", &url]);
    assert!(
        out.trim_end().ends_with("1.1 200"),
        "HTTP/1.1 on the same listener: {out} {err}"
    );
    let paths: Vec<String> = up.wait_requests(3, T).into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/over-tls", "/prior", "/prior"]);
    assert_eq!(total(&plain, |l| &l.downstream_cx_http2_total), 1);
}

#[test]
fn a_hundred_streams_on_one_connection_spread_over_two_endpoints() {
    let a = HttpUpstream::builder().name("a").start();
    let b = HttpUpstream::builder().name("b").start();
    let yaml = CatchAll::new(a.addr())
        .listener("main", "    http2: true\n")
        .yaml()
        .replace(
            &format!("      - {{ address: \"{}\" }}\n", a.addr()),
            &format!(
                "      - {{ address: \"{}\" }}\n      - {{ address: \"{}\" }}\n",
                a.addr(),
                b.addr()
            ),
        );
    let gw = TestGateway::start(&yaml);
    let statuses = run(async {
        let send = h2c(gw.addr).await;
        let calls = (0..100).map(|i| {
            let send = send.clone();
            async move { fetch(&send, &format!("/s{i}")).await.0 }
        });
        futures_util::future::join_all(calls).await
    });
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(a.request_count() + b.request_count(), 100);
    assert_eq!(a.request_count(), 50, "smooth round-robin splits evenly");
    assert_eq!(
        total(&gw, |l| &l.downstream_cx_http2_total),
        1,
        "one connection"
    );
}

#[test]
fn bodies_larger_than_every_window_go_both_ways() {
    const LEN: usize = 3 * 1024 * 1024;
    let up = HttpUpstream::builder().route("/", Reply::Echo).start();
    let gw = CatchAll::new(up.addr())
        .listener("main", "    http2: true\n")
        .start();
    let (status, got) = run(async {
        let mut send = h2c(gw.addr).await.ready().await.expect("ready");
        let req = http::Request::post("http://app.test/echo")
            .body(())
            .expect("request");
        let (response, mut stream) = send.send_request(req, false).expect("send");
        let upload = async move {
            let mut body = Bytes::from(pattern_bytes(0, LEN));
            while !body.is_empty() {
                stream.reserve_capacity(body.len());
                let n = std::future::poll_fn(|cx| stream.poll_capacity(cx))
                    .await
                    .expect("capacity")
                    .expect("capacity");
                let chunk = body.split_to(n.min(body.len()));
                stream.send_data(chunk, body.is_empty()).expect("data");
            }
        };
        let download = async {
            let response = response.await.expect("response");
            let status = response.status().as_u16();
            let mut body = response.into_body();
            let mut got = Vec::with_capacity(LEN);
            while let Some(chunk) = body.data().await {
                let chunk = chunk.expect("body");
                let _ = body.flow_control().release_capacity(chunk.len());
                got.extend_from_slice(&chunk);
            }
            (status, got)
        };
        let ((), got) = tokio::join!(upload, download);
        got
    });
    assert_eq!(status, 200);
    assert_eq!(got.len(), LEN);
    assert_eq!(checksum(&got), checksum(&pattern_bytes(0, LEN)));
}

#[test]
fn a_stream_reset_mid_body_aborts_the_upstream_and_the_connection_stays_usable() {
    // The upstream reads the head, then the body until the gateway gives up on it.
    let aborted = Arc::new(AtomicBool::new(false));
    let seen = aborted.clone();
    let up = RawUpstream::start(move |conn| {
        let Some(head) = conn.read_head() else {
            return;
        };
        if head.starts_with("GET /ok ") {
            conn.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            return;
        }
        conn.set_timeout(Duration::from_secs(5));
        let mut buf = [0u8; 4096];
        loop {
            match conn.stream().map(|s| std::io::Read::read(s, &mut buf)) {
                Some(Ok(0)) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            }
        }
        seen.store(true, Ordering::SeqCst);
    });
    let gw = CatchAll::new(up.addr())
        .listener("main", "    http2: true\n")
        .start();
    let (status, body) = run(async {
        let send = h2c(gw.addr).await;
        let mut ready = send.clone().ready().await.expect("ready");
        let req = http::Request::post("http://app.test/upload")
            .body(())
            .expect("request");
        let (_response, mut stream) = ready.send_request(req, false).expect("send");
        stream
            .send_data(Bytes::from(vec![b'x'; 10_000]), false)
            .expect("data");
        // Let the first bytes reach the upstream before the reset.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while up.accepts() == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stream.send_reset(h2::Reason::CANCEL);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !aborted.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fetch(&send, "/ok").await
    });
    assert!(aborted.load(Ordering::SeqCst), "the upstream saw the abort");
    assert_eq!((status, body.as_slice()), (200, &b"ok"[..]));
    assert_eq!(total(&gw, |l| &l.downstream_rq_rx_reset), 1);
    assert_eq!(
        total(&gw, |l| &l.downstream_cx_http2_total),
        1,
        "same connection"
    );
}

#[test]
fn a_rapid_reset_flood_gets_enhance_your_calm_and_others_are_served() {
    let up = HttpUpstream::builder()
        .route(
            "/",
            Reply::Delay {
                delay: Duration::from_millis(50),
                body: "slow",
            },
        )
        .start();
    let gw = CatchAll::new(up.addr())
        .listener(
            "main",
            "    http2: true\n    http2_options: { max_resets_per_second: 10 }\n",
        )
        .start();
    let goaway = run(async {
        let tcp = TcpStream::connect(gw.addr).await.expect("connect");
        let (send, conn) = h2::client::handshake(tcp).await.expect("handshake");
        let driver = tokio::spawn(conn);
        // Bounded: 500 streams, each reset right after it is opened, as fast as possible.
        for _ in 0..500 {
            let Ok(mut ready) = send.clone().ready().await else {
                break;
            };
            let Ok((_, mut stream)) = ready.send_request(get("/flood"), true) else {
                break;
            };
            stream.send_reset(h2::Reason::CANCEL);
            tokio::task::yield_now().await;
        }
        driver.await.expect("driver")
    });
    let err = goaway.expect_err("the gateway ended the connection");
    // The GOAWAY is on the wire; a client still writing may see the close first.
    assert!(
        err.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) || err.is_io(),
        "{err}"
    );
    assert!(total(&gw, |l| &l.downstream_cx_http2_flood) >= 1);
    let (status, _) = run(async { fetch(&h2c(gw.addr).await, "/after").await });
    assert_eq!(status, 200, "another client is served");
}

/// An HTTP/2 origin (the h2 crate on its own runtime thread) that answers `200 ok` and, on
/// each connection, sends GOAWAY after `per_connection` requests.
struct GoawayOrigin {
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl GoawayOrigin {
    fn start(per_connection: usize) -> GoawayOrigin {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let served = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (count, conns) = (served.clone(), connections.clone());
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let accept = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            return;
                        };
                        conns.fetch_add(1, Ordering::SeqCst);
                        let count = count.clone();
                        tokio::spawn(async move {
                            let Ok(mut conn) = h2::server::handshake(tcp).await else {
                                return;
                            };
                            let mut n = 0;
                            while let Some(Ok((_req, mut respond))) = conn.accept().await {
                                n += 1;
                                count.fetch_add(1, Ordering::SeqCst);
                                let res = http::Response::new(());
                                if let Ok(mut s) = respond.send_response(res, false) {
                                    let _ = s.send_data(Bytes::from_static(b"ok"), true);
                                }
                                if n == per_connection {
                                    conn.graceful_shutdown();
                                }
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        GoawayOrigin {
            addr,
            served,
            connections,
            _stop: stop,
        }
    }
}

#[test]
fn an_upstream_goaway_under_load_fails_no_request() {
    let origin = GoawayOrigin::start(40);
    let gw = CatchAll::new(origin.addr)
        .listener("main", "    http2: true\n")
        .cluster("backend", "    protocol: http2\n")
        .start();
    let statuses = run(async {
        let send = h2c(gw.addr).await;
        let mut out = Vec::new();
        // 300 requests, 20 at a time.
        for round in 0..15 {
            let calls = (0..20).map(|i| {
                let send = send.clone();
                async move { fetch(&send, &format!("/r{round}-{i}")).await }
            });
            out.extend(futures_util::future::join_all(calls).await);
        }
        out
    });
    let failed: Vec<_> = statuses.iter().filter(|(s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "failed: {failed:?}");
    assert!(statuses.iter().all(|(_, b)| b == b"ok"));
    assert!(
        origin.connections.load(Ordering::SeqCst) >= 300 / 40,
        "the origin closed connections under load: {}",
        origin.connections.load(Ordering::SeqCst)
    );
    assert!(origin.served.load(Ordering::SeqCst) >= 300);
}

#[test]
fn a_drain_sends_goaway_and_lets_the_open_stream_finish() {
    let up = HttpUpstream::builder()
        .route(
            "/",
            Reply::Delay {
                delay: Duration::from_millis(300),
                body: "late",
            },
        )
        .start();
    let gw = CatchAll::new(up.addr())
        .listener("main", "    http2: true\n")
        .start();
    let addr = gw.addr;
    let (status, body, closed) = run(async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (send, conn) = h2::client::handshake(tcp).await.expect("handshake");
        let driver = tokio::spawn(conn);
        let mut ready = send.clone().ready().await.expect("ready");
        let (response, _) = ready.send_request(get("/slow"), true).expect("send");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while up.request_count() == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let stopper = std::thread::spawn(move || gw.shutdown(Duration::from_secs(5)));
        let response = response.await.expect("the open stream is answered");
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = body.data().await {
            got.extend_from_slice(&chunk.expect("body"));
        }
        drop(send);
        let closed = driver.await.expect("driver");
        stopper.join().expect("shutdown");
        (status, got, closed)
    });
    assert_eq!((status, body.as_slice()), (200, &b"late"[..]));
    assert!(closed.is_ok(), "closed with GOAWAY(NO_ERROR): {closed:?}");
}

#[test]
fn http2_to_a_tls_upstream_is_agreed_by_alpn_and_shared() {
    let up = HttpUpstream::builder().name("origin").start();
    let dir = Dir::new("h2-alpn-upstream");
    let ca = Ca::new("h2 upstream ca");
    let (cert, key) = ca.server(&["b.test"], Key::EcdsaP256).write(&dir, "b");
    let ca_path = dir.write("ca.pem", &ca.pem);
    // B terminates TLS and speaks h2 in front of the origin; A reaches B with `protocol: auto`.
    let b = CatchAll::new(up.addr())
        .listener(
            "main",
            &format!(
                "    http2: true\n    tls:\n      certificates:\n        - {{ cert: \"{}\", key: \"{}\", server_names: [\"*\"] }}\n",
                cert.display(),
                key.display()
            ),
        )
        .start();
    let a = CatchAll::new(b.addr)
        .listener("main", "    http2: true\n")
        .cluster(
            "backend",
            &format!(
                "    protocol: auto\n    tls:\n      ca: \"{}\"\n      sni: b.test\n",
                ca_path.display()
            ),
        )
        .start();
    let statuses = run(async {
        let send = h2c(a.addr).await;
        let calls = (0..10).map(|i| {
            let send = send.clone();
            async move { fetch(&send, &format!("/via-b/{i}")).await.0 }
        });
        futures_util::future::join_all(calls).await
    });
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(up.request_count(), 10);
    assert_eq!(
        total(&b, |l| &l.downstream_cx_http2_total),
        1,
        "A carried the ten requests as streams of one HTTP/2 connection to B"
    );
}

/// The request fields of `GET {path}` for the raw-frame client.
fn raw_get(path: &str) -> [(&'static str, String); 4] {
    [
        (":method", "GET".to_owned()),
        (":scheme", "http".to_owned()),
        (":path", path.to_owned()),
        (":authority", "app.test".to_owned()),
    ]
}

#[test]
fn keepalive_pings_keep_an_answering_client_and_close_a_silent_one() {
    let up = HttpUpstream::builder().start();
    let gw = CatchAll::new(up.addr())
        .listener(
            "main",
            "    http2: true\n    http2_options:\n      connection_keepalive: { interval: 200ms, timeout: 300ms }\n",
        )
        .start();
    // The h2 crate answers PINGs: its connection outlives several intervals and timeouts.
    let (first, later) = run(async {
        let send = h2c(gw.addr).await;
        let first = fetch(&send, "/a").await.0;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        (first, fetch(&send, "/b").await.0)
    });
    assert_eq!((first, later), (200, 200));
    assert_eq!(
        total(&gw, |l| &l.downstream_cx_http2_total),
        1,
        "one connection"
    );
    // A client that never answers is PINGed, then closed.
    let mut raw = H2Client::connect(gw.addr);
    let started = std::time::Instant::now();
    loop {
        match raw.next_frame() {
            Some(f) if f.kind == PING && !f.has(ACK) => break,
            Some(_) => {}
            None => panic!("closed before any PING"),
        }
    }
    raw.read_until_closed();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "closed after one interval and one timeout: {waited:?}"
    );
}

#[test]
fn an_idle_connection_gets_goaway_and_is_closed() {
    let up = HttpUpstream::builder().start();
    let gw = CatchAll::new(up.addr())
        .top("limits: { idle_timeout: 300ms }\n")
        .listener("main", "    http2: true\n")
        .start();
    // A client that answers the graceful shutdown's PING gets the final GOAWAY, then the close.
    let mut raw = H2Client::connect(gw.addr);
    raw.request(1, &raw_get("/once"), true);
    let mut answered = false;
    loop {
        let f = raw.next_frame().expect("open until the PING is answered");
        answered |= f.kind == HEADERS && f.stream_id == 1 && f.status() == Some(200);
        if f.kind == PING && !f.has(ACK) {
            let payload: [u8; 8] = f.payload[..8].try_into().expect("8 bytes");
            raw.ping(payload, true);
            break;
        }
    }
    assert!(answered, "the request was answered first");
    let frames = raw.read_until_closed();
    let goaway = frames
        .iter()
        .find(|f| f.kind == GOAWAY)
        .expect("the final GOAWAY before the close");
    assert_eq!(goaway.word(4), NO_ERROR);
    assert_eq!(goaway.word(0) & 0x7fff_ffff, 1, "stream 1 was processed");
    // One that stays silent is closed all the same, after a grace.
    let mut silent = H2Client::connect(gw.addr);
    silent.request(1, &raw_get("/once"), true);
    let frames = silent.read_until_closed();
    assert!(frames.iter().any(|f| f.kind == GOAWAY), "told GOAWAY first");
}

#[test]
fn interim_responses_reach_http2_clients() {
    let up = RawUpstream::start(|conn| {
        if conn.read_head().is_some() {
            conn.write(
                b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n\
                  HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            );
        }
    });
    let gw = CatchAll::new(up.addr())
        .listener("main", "    http2: true\n")
        .start();
    let mut raw = H2Client::connect(gw.addr);
    raw.request(1, &raw_get("/hints"), true);
    let mut heads = Vec::new();
    while heads.len() < 2 {
        let f = raw.next_frame().expect("open");
        if f.kind == HEADERS && f.stream_id == 1 {
            heads.push((f.status(), f.field("link").map(str::to_owned)));
        }
    }
    assert_eq!(
        heads[0],
        (Some(103), Some("</a.css>; rel=preload".to_owned()))
    );
    assert_eq!(heads[1].0, Some(200));
}

/// An HTTP/2 origin that answers every request with `status` and `body` (status 0: resets the
/// stream with INTERNAL_ERROR instead), and records the `x-envoy-attempt-count` of each.
struct StatusOrigin {
    addr: SocketAddr,
    attempts: Arc<std::sync::Mutex<Vec<String>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl StatusOrigin {
    fn start(status: u16, body: &'static str) -> StatusOrigin {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let attempts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let seen = attempts.clone();
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let accept = async {
                    while let Ok((tcp, _)) = listener.accept().await {
                        let seen = seen.clone();
                        tokio::spawn(async move {
                            let Ok(mut conn) = h2::server::handshake(tcp).await else {
                                return;
                            };
                            while let Some(Ok((req, mut respond))) = conn.accept().await {
                                let attempt = req
                                    .headers()
                                    .get("x-envoy-attempt-count")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_owned();
                                seen.lock().expect("lock").push(attempt);
                                if status == 0 {
                                    respond.send_reset(h2::Reason::INTERNAL_ERROR);
                                    continue;
                                }
                                let res = http::Response::builder()
                                    .status(status)
                                    .body(())
                                    .expect("response");
                                if let Ok(mut s) = respond.send_response(res, false) {
                                    let _ = s.send_data(Bytes::from_static(body.as_bytes()), true);
                                }
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        StatusOrigin {
            addr,
            attempts,
            _stop: stop,
        }
    }

    fn attempts(&self) -> Vec<String> {
        self.attempts.lock().expect("lock").clone()
    }
}

#[test]
fn a_route_retries_an_http2_upstreams_5xx_on_the_other_endpoint() {
    let (good, bad) = (
        StatusOrigin::start(200, "good"),
        StatusOrigin::start(503, "bad"),
    );
    let policy = "{ retry_on: [5xx], num_retries: 1 }";
    let yaml = retry_config(good.addr, bad.addr, policy, "    protocol: http2", true).replace(
        "    address: 127.0.0.1:0\n",
        "    address: 127.0.0.1:0\n    http2: true\n",
    );
    let gw = TestGateway::start(&yaml);
    let (statuses, bodies) = run(async {
        let send = h2c(gw.addr).await;
        let mut statuses = Vec::new();
        let mut bodies = Vec::new();
        for i in 0..10 {
            let (status, body) = fetch(&send, &format!("/r{i}")).await;
            statuses.push(status);
            bodies.push(body);
        }
        (statuses, bodies)
    });
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(bodies.iter().all(|b| b == b"good"));
    // Every answer the bad endpoint gave was retried once, on the good one.
    let (first, retried) = (bad.attempts(), good.attempts());
    assert!((1..=10).contains(&first.len()), "{first:?}");
    assert!(first.iter().all(|a| a == "1"), "{first:?}");
    assert_eq!(retried.iter().filter(|a| *a == "2").count(), first.len());
    assert_eq!(retried.len(), 10);
    let counted = gw.endpoint("backend", bad.addr).upstream_rq_retry.get();
    assert_eq!(counted, first.len() as u64);
}

#[test]
fn a_route_retries_an_http2_stream_reset_before_the_answer() {
    let (good, bad) = (StatusOrigin::start(200, "good"), StatusOrigin::start(0, ""));
    let policy = "{ retry_on: [reset], num_retries: 1 }";
    let yaml = retry_config(good.addr, bad.addr, policy, "    protocol: http2", false);
    let gw = TestGateway::start(&yaml);
    for _ in 0..6 {
        let got = support::client::raw_exchange(
            gw.addr,
            b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
            T,
        );
        assert_eq!(got.status(), Some(200), "{}", got.text());
    }
    assert!((1..=6).contains(&bad.attempts().len()));
    assert_eq!(good.attempts().len(), 6);
}
