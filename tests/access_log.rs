//! Access logs over real sockets: one line per request with Envoy's response flags (a success,
//! NR, UH, UC, UT, DC), Envoy's default format and JSON lines, and SIGUSR1 reopening a file
//! that logrotate renamed.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use support::client::raw_exchange;
use support::gateway::{CatchAll, TestGateway};
use support::harness::T;
use support::process::Coregate;
use support::tls::Dir;
use support::upstream::HttpUpstream;

/// Waits (bounded) until `path` holds at least `n` lines: cores hand their lines to the writer
/// once a second.
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} lines in {}:\n{text}",
            lines.len(),
            path.display()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// An upstream that accepts and closes at once (502 UC), and one that accepts and never answers
/// (504 UT); both keep their sockets for the test's length.
fn hostile_upstreams() -> (SocketAddr, SocketAddr, thread::JoinHandle<()>) {
    let closer = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (a, b) = (closer.local_addr().unwrap(), silent.local_addr().unwrap());
    let handle = thread::spawn(move || {
        closer.set_nonblocking(true).unwrap();
        silent.set_nonblocking(true).unwrap();
        let mut held = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((mut s, _)) = closer.accept() {
                let mut buf = [0u8; 1024];
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let _ = s.read(&mut buf);
                drop(s);
            }
            if let Ok((s, _)) = silent.accept() {
                held.push(s);
            }
            thread::sleep(Duration::from_millis(2));
        }
    });
    (a, b, handle)
}

/// An upstream that answers the first request it gets (keeping the connection), then reads
/// every later request and closes without an answer: a pooled connection that fails at reuse,
/// then the retry fails too.
fn answers_once() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        for conn in listener.incoming().take(8) {
            let Ok(mut conn) = conn else { return };
            let answered = answered.clone();
            thread::spawn(move || {
                conn.set_read_timeout(Some(T)).ok();
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    if answered.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                }
            });
        }
    });
    addr
}

#[test]
fn every_request_gets_a_json_line_with_envoys_response_flags() {
    let up = HttpUpstream::builder().name("ok").start();
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (closer, silent, _h) = hostile_upstreams();
    let flaky = answers_once();
    let dir = Dir::new("access-json");
    let log = dir.path("access.jsonl");
    let gw = TestGateway::start(&format!(
        "workers: 2
listeners:
  - name: main
    address: 127.0.0.1:0
    access_log:
      - path: \"{}\"
        json_format:
          code: \"%RESPONSE_CODE%\"
          flags: \"%RESPONSE_FLAGS%\"
          request: \"%REQ(:METHOD)% %REQ(:PATH)%\"
          upstream: \"%UPSTREAM_HOST%\"
          cluster: \"%UPSTREAM_CLUSTER%\"
          received: \"%BYTES_RECEIVED%\"
          sent: \"%BYTES_SENT%\"
          agent: \"%REQ(USER-AGENT)%\"
          client: \"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\"
    virtual_hosts:
      - name: shop
        domains: [\"shop.test\"]
        routes:
          - match: {{ prefix: \"/ok\" }}
            route: {{ cluster: ok }}
          - match: {{ prefix: \"/dead\" }}
            route: {{ cluster: dead }}
          - match: {{ prefix: \"/closer\" }}
            route: {{ cluster: closer }}
          - match: {{ prefix: \"/silent\" }}
            route: {{ cluster: silent }}
          - match: {{ prefix: \"/tls\" }}
            route: {{ cluster: tls }}
          - match: {{ prefix: \"/flaky\" }}
            route: {{ cluster: flaky }}
clusters:
  - name: ok
    endpoints: [{{ address: \"{}\" }}]
  - name: dead
    endpoints: [{{ address: \"{dead}\" }}]
  - name: closer
    endpoints: [{{ address: \"{closer}\" }}]
  - name: silent
    response_timeout: 200ms
    endpoints: [{{ address: \"{silent}\" }}]
  - name: tls
    tls: {{ verify: false }}
    endpoints: [{{ address: \"{closer}\" }}]
  - name: flaky
    endpoints: [{{ address: \"{flaky}\" }}]
",
        log.display(),
        up.addr()
    ));
    let ask = |request: &str| raw_exchange(gw.addr, request.as_bytes(), T);
    let req = |path: &str, host: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: t/1\r\nConnection: close\r\n\r\n"
        )
    };
    assert_eq!(ask(&req("/ok/1", "shop.test")).status(), Some(200));
    assert_eq!(ask(&req("/ok", "nowhere.test")).status(), Some(404));
    assert_eq!(ask(&req("/dead", "shop.test")).status(), Some(503));
    assert_eq!(ask(&req("/closer", "shop.test")).status(), Some(502));
    assert_eq!(ask(&req("/silent", "shop.test")).status(), Some(504));
    assert_eq!(ask(&req("/tls", "shop.test")).status(), Some(502));
    // One client, keep-alive: the first request pools the connection, the second finds it
    // dead at reuse, is retried on a new one, and that fails too.
    let mut keep = TcpStream::connect(gw.addr).unwrap();
    keep.set_read_timeout(Some(T)).unwrap();
    keep.write_all(b"GET /flaky/1 HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .unwrap();
    let mut got = [0u8; 1024];
    let n = keep.read(&mut got).unwrap();
    assert!(
        got[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got[..n])
    );
    keep.write_all(b"GET /flaky/2 HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = keep.read_to_end(&mut rest);
    assert!(
        rest.starts_with(b"HTTP/1.1 502"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    // A client that goes away in the middle of its body: no response, DC.
    let mut c = TcpStream::connect(gw.addr).unwrap();
    c.write_all(
        b"POST /ok/upload HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .unwrap();
    let deadline = Instant::now() + T;
    // The request is under way once the gateway sent it upstream.
    while gw.endpoint("ok", up.addr()).upstream_rq_total.get() < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    drop(c);

    let lines = wait_lines(&log, 9);
    let entries: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let find = |request: &str| {
        entries
            .iter()
            .find(|e| e["request"] == request)
            .unwrap_or_else(|| panic!("no line for {request}: {lines:#?}"))
    };
    let ok = find("GET /ok/1");
    assert_eq!(
        (ok["code"].clone(), ok["flags"].clone()),
        (200.into(), "-".into())
    );
    assert_eq!(ok["upstream"], up.addr().to_string());
    assert_eq!(ok["cluster"], "ok");
    assert_eq!(ok["agent"], "t/1");
    assert_eq!(ok["client"], "127.0.0.1");
    assert!(ok["sent"].as_u64().is_some_and(|n| n > 0), "{ok}");
    let nr = find("GET /ok");
    assert_eq!(
        (nr["code"].clone(), nr["flags"].clone()),
        (404.into(), "NR".into())
    );
    assert_eq!(nr["upstream"], serde_json::Value::Null);
    let uh = find("GET /dead");
    assert_eq!(
        (uh["code"].clone(), uh["flags"].clone()),
        (503.into(), "UH".into())
    );
    let uc = find("GET /closer");
    assert_eq!(
        (uc["code"].clone(), uc["flags"].clone()),
        (502.into(), "UC".into())
    );
    let ut = find("GET /silent");
    assert_eq!(
        (ut["code"].clone(), ut["flags"].clone()),
        (504.into(), "UT".into())
    );
    let uf = find("GET /tls");
    assert_eq!(
        (uf["code"].clone(), uf["flags"].clone()),
        (502.into(), "UF".into())
    );
    let urx = find("GET /flaky/2");
    assert_eq!(
        (urx["code"].clone(), urx["flags"].clone()),
        (502.into(), "UC,URX".into())
    );
    assert_eq!(find("GET /flaky/1")["code"], 200);
    let dc = find("POST /ok/upload");
    assert_eq!(
        (dc["code"].clone(), dc["flags"].clone()),
        (0.into(), "DC".into())
    );
    assert_eq!(dc["received"], 10);
}

#[test]
fn envoys_default_format_and_sigusr1_reopen() {
    let up = HttpUpstream::builder().start();
    let dir = Dir::new("access-text");
    let log = dir.path("access.log");
    let lines = format!("    access_log:\n      - path: \"{}\"", log.display());
    let gw = Coregate::start(&CatchAll::new(up.addr()).listener("main", &lines).yaml());
    let addr = gw.listener("main");
    let get = |path: &str| {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: a.test\r\nX-Request-Id: rid-1\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            raw_exchange(addr, request.as_bytes(), T).status(),
            Some(200)
        );
    };
    get("/first");
    let lines = wait_lines(&log, 1);
    let line = &lines[0];
    assert!(line.starts_with('['), "{line}");
    assert!(
        line.contains("] \"GET /first HTTP/1.1\" 200 - 0 "),
        "{line}"
    );
    assert!(line.contains("\"rid-1\" \"a.test\""), "{line}");
    assert!(line.ends_with(&format!("\"{}\"", up.addr())), "{line}");

    // logrotate: rename, then SIGUSR1; the next lines go to a new file at the old path.
    let rotated = dir.path("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    gw.signal(libc::SIGUSR1);
    gw.wait_for("access log files reopened", T);
    get("/second");
    let lines = wait_lines(&log, 1);
    assert!(lines[0].contains("GET /second"), "{lines:?}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(old.lines().count(), 1, "{old}");
}

#[test]
fn http2_requests_are_logged_as_http2() {
    let up = HttpUpstream::builder().start();
    let dir = Dir::new("access-h2");
    let log = dir.path("access.log");
    let lines = format!(
        "    http2: true\n    access_log:\n      - path: \"{}\"",
        log.display()
    );
    let gw = CatchAll::new(up.addr()).listener("main", &lines).start();
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
        ])
        .arg(format!("http://127.0.0.1:{}/over-h2", gw.addr.port()))
        .output()
        .expect("curl runs (.ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = wait_lines(&log, 1);
    assert!(
        lines[0].contains("\"GET /over-h2 HTTP/2\" 200 "),
        "{}",
        lines[0]
    );
}
