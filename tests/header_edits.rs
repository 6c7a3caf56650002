//! Header edits over real sockets: request headers added and removed at listener, virtual host
//! and route level as a real upstream receives them, response headers as the client receives
//! them (HTTP/1 and HTTP/2 clients), each append action, which level wins, every dynamic value,
//! a retry re-editing for its new endpoint, and config errors naming their field.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use coregate::config;
use support::client::{ParsedResponse, RawClient, raw_exchange};
use support::gateway::{TestGateway, retry_config};
use support::h2origin::H2Origin;
use support::harness::T;
use support::upstream::{HttpUpstream, Recorded, Reply};

/// An upstream that records what it got and answers with `x-origin-*` headers to edit.
fn origin() -> HttpUpstream {
    HttpUpstream::builder()
        .route(
            "/",
            Reply::Custom {
                status: 200,
                headers: vec![
                    ("x-origin-a".into(), "a".into()),
                    ("x-origin-b".into(), "b".into()),
                    ("x-origin-c".into(), "c".into()),
                    ("x-shared".into(), "origin".into()),
                ],
                body: b"ok".to_vec(),
            },
        )
        .start()
}

/// One worker, one listener (`http2` on when asked), one virtual host, one route to
/// `upstream`; the edit lines of each level go under it (already indented: 4, 8 and 12).
fn config(upstream: SocketAddr, listener: &str, vhost: &str, route: &str, http2: bool) -> String {
    let h2 = if http2 { "    http2: true\n" } else { "" };
    format!(
        "workers: 1
listeners:
  - name: main
    address: 127.0.0.1:0
{h2}{listener}    virtual_hosts:
      - name: all
        domains: [\"*\"]
{vhost}        routes:
          - match: {{ prefix: \"/\" }}
            route: {{ cluster: backend }}
{route}clusters:
  - name: backend
    endpoints:
      - {{ address: \"{upstream}\" }}
"
    )
}

/// Sends a GET with `headers` (lines without CRLF) and returns the response and what the
/// upstream received.
fn get(gw: &TestGateway, up: &HttpUpstream, headers: &[&str]) -> (ParsedResponse, Recorded) {
    let before = up.request_count();
    let mut request = String::from("GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let got = raw_exchange(gw.addr, request.as_bytes(), T);
    let response = got.responses().into_iter().next().expect("a response");
    let recorded = up.wait_requests(before + 1, T).pop().expect("a request");
    (response, recorded)
}

#[test]
fn each_level_adds_and_removes_request_and_response_headers() {
    let up = origin();
    let yaml = config(
        up.addr(),
        "    request_headers_to_add: [{ header: { key: X-Listener, value: l } }]
    request_headers_to_remove: [x-drop-l]
    response_headers_to_add: [{ header: { key: x-resp-listener, value: l } }]
    response_headers_to_remove: [x-origin-a]
",
        "        request_headers_to_add: [{ header: { key: x-vhost, value: v } }]
        request_headers_to_remove: [X-Drop-V]
        response_headers_to_add: [{ header: { key: x-resp-vhost, value: v } }]
        response_headers_to_remove: [x-origin-b]
",
        "            request_headers_to_add: [{ header: { key: x-route, value: r } }]
            request_headers_to_remove: [x-drop-r]
            response_headers_to_add: [{ header: { key: x-resp-route, value: r } }]
            response_headers_to_remove: [x-origin-c]
",
        false,
    );
    let gw = TestGateway::start(&yaml);
    let (response, seen) = get(
        &gw,
        &up,
        &["x-drop-l: 1", "X-Drop-V: 2", "x-drop-r: 3", "x-keep: 4"],
    );
    assert_eq!(response.status, 200);
    assert_eq!(seen.header("x-listener"), Some("l"));
    assert_eq!(seen.header("x-vhost"), Some("v"));
    assert_eq!(seen.header("x-route"), Some("r"));
    for gone in ["x-drop-l", "x-drop-v", "x-drop-r"] {
        assert_eq!(seen.header(gone), None, "{gone} reached the upstream");
    }
    assert_eq!(seen.header("x-keep"), Some("4"));
    assert_eq!(response.header("x-resp-listener"), Some("l"));
    assert_eq!(response.header("x-resp-vhost"), Some("v"));
    assert_eq!(response.header("x-resp-route"), Some("r"));
    for gone in ["x-origin-a", "x-origin-b", "x-origin-c"] {
        assert_eq!(response.header(gone), None, "{gone} reached the client");
    }
    assert_eq!(response.header("x-shared"), Some("origin"));
    assert_eq!(response.text(), "ok");
}

#[test]
fn each_append_action() {
    let up = origin();
    let add = |key: &str, value: &str, how: &str| {
        format!("              - {{ header: {{ key: {key}, value: \"{value}\" }}{how} }}\n")
    };
    let mut route = String::from("            request_headers_to_add:\n");
    for line in [
        add("x-a", "gw", ", append_action: APPEND_IF_EXISTS_OR_ADD"),
        add("x-b", "gw", ", append_action: ADD_IF_ABSENT"),
        add("x-c", "gw", ", append_action: OVERWRITE_IF_EXISTS_OR_ADD"),
        add("x-d", "gw", ", append_action: OVERWRITE_IF_EXISTS"),
        add("x-e", "gw", ", append_action: OVERWRITE_IF_EXISTS"),
        add("x-f", "gw", ", append_action: ADD_IF_ABSENT"),
        add("x-g", "gw", ", append: false"),
        add("x-h", "gw", ", append: true"),
        add("x-i", "%REQ(x-none)%", ", keep_empty_value: true"),
        add("x-j", "%REQ(x-none)%", ""),
        add("x-k", "gw", ""),
    ] {
        route.push_str(&line);
    }
    route.push_str("            response_headers_to_add:\n");
    route.push_str(&add("x-shared", "gw", ", append_action: ADD_IF_ABSENT"));
    route.push_str(&add(
        "x-origin-a",
        "gw",
        ", append_action: OVERWRITE_IF_EXISTS",
    ));
    route.push_str(&add("x-origin-b", "gw", ""));
    let gw = TestGateway::start(&config(up.addr(), "", "", &route, false));
    let (response, seen) = get(
        &gw,
        &up,
        &[
            "x-a: client",
            "x-b: client",
            "x-c: client",
            "x-c: client2",
            "x-d: client",
            "x-g: client",
            "x-h: client",
        ],
    );
    let want: [(&str, &[&str]); 11] = [
        ("x-a", &["client", "gw"]),
        ("x-b", &["client"]),
        ("x-c", &["gw"]),
        ("x-d", &["gw"]),
        ("x-e", &[]),
        ("x-f", &["gw"]),
        ("x-g", &["gw"]),
        ("x-h", &["client", "gw"]),
        ("x-i", &[""]),
        ("x-j", &[]),
        ("x-k", &["gw"]),
    ];
    for (name, values) in want {
        assert_eq!(seen.header_all(name), values, "{name}");
    }
    assert_eq!(response.header_all("x-shared"), ["origin"]);
    assert_eq!(response.header_all("x-origin-a"), ["gw"]);
    assert_eq!(response.header_all("x-origin-b"), ["b", "gw"]);
}

#[test]
fn the_outer_level_goes_last_so_its_overwrite_wins() {
    let up = origin();
    let level = |indent: &str, value: &str| {
        format!(
            "{indent}request_headers_to_add:
{indent}  - {{ header: {{ key: x-level, value: {value} }}, append_action: OVERWRITE_IF_EXISTS_OR_ADD }}
{indent}  - {{ header: {{ key: x-all, value: {value} }} }}
{indent}response_headers_to_add:
{indent}  - {{ header: {{ key: x-shared, value: {value} }}, append_action: OVERWRITE_IF_EXISTS_OR_ADD }}
"
        )
    };
    let yaml = config(
        up.addr(),
        &level("    ", "listener"),
        &level("        ", "vhost"),
        &level("            ", "route"),
        false,
    );
    let gw = TestGateway::start(&yaml);
    let (response, seen) = get(&gw, &up, &["x-level: client"]);
    assert_eq!(seen.header_all("x-level"), ["listener"]);
    // Appends come in the order applied: route, virtual host, listener.
    assert_eq!(seen.header_all("x-all"), ["route", "vhost", "listener"]);
    assert_eq!(response.header_all("x-shared"), ["listener"]);
}

#[test]
fn dynamic_values_expand_per_request() {
    let up = origin();
    let route = "            request_headers_to_add:
              - { header: { key: x-remote, value: \"%DOWNSTREAM_REMOTE_ADDRESS%\" } }
              - { header: { key: x-remote-ip, value: \"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\" } }
              - { header: { key: x-local, value: \"%DOWNSTREAM_LOCAL_ADDRESS%\" } }
              - { header: { key: x-upstream, value: \"%UPSTREAM_HOST%\" } }
              - { header: { key: x-id, value: \"%REQUEST_ID%\" } }
              - { header: { key: x-id-too, value: \"%REQ(X-Request-Id)%\" } }
              - { header: { key: x-protocol, value: \"%PROTOCOL%\" } }
              - { header: { key: x-agent, value: \"ua=%REQ(user-agent):4% 100%%\" } }
              - { header: { key: x-path, value: \"%REQ(:path)% %REQ(:method)%\" } }
              - { header: { key: x-start, value: \"%START_TIME%\" } }
            response_headers_to_add:
              - { header: { key: x-served-by, value: \"%UPSTREAM_HOST%\" } }
              - { header: { key: x-request-id, value: \"%REQ(x-request-id)%\" } }
";
    let gw = TestGateway::start(&config(up.addr(), "", "", route, false));
    let mut client = RawClient::connect(gw.addr);
    let me = client.local_addr();
    client.send(b"GET /x?q=1 HTTP/1.1\r\nHost: a.test\r\nUser-Agent: curl/8.5\r\n\r\n");
    let response = client.read_response(T);
    let seen = up.wait_requests(1, T).pop().expect("a request");
    assert_eq!(seen.header("x-remote"), Some(me.to_string().as_str()));
    assert_eq!(seen.header("x-remote-ip"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-local"), Some(gw.addr.to_string().as_str()));
    assert_eq!(
        seen.header("x-upstream"),
        Some(up.addr().to_string().as_str())
    );
    let id = seen.header("x-request-id").expect("a generated request id");
    assert_eq!(seen.header("x-id"), Some(id));
    assert_eq!(seen.header("x-id-too"), Some(id));
    assert_eq!(seen.header("x-protocol"), Some("HTTP/1.1"));
    assert_eq!(seen.header("x-agent"), Some("ua=curl 100%"));
    assert_eq!(seen.header("x-path"), Some("/x?q=1 GET"));
    let start = seen.header("x-start").expect("x-start");
    assert!(start.starts_with("20") && start.ends_with('Z'), "{start}");
    assert_eq!(
        response.header("x-served-by"),
        Some(up.addr().to_string().as_str())
    );
    assert_eq!(response.header_all("x-request-id"), [id]);
}

#[test]
fn a_retry_edits_again_for_its_new_endpoint() {
    let good = origin();
    let bad = HttpUpstream::builder()
        .route("/", Reply::Status(503, "bad"))
        .start();
    let policy = "{ retry_on: [5xx], num_retries: 1 }";
    let yaml = retry_config(good.addr(), bad.addr(), policy, "", true).replace(
        &format!("retry_policy: {policy} }}\n"),
        &format!(
            "retry_policy: {policy} }}
            request_headers_to_add:
              - {{ header: {{ key: x-upstream, value: \"%UPSTREAM_HOST%\" }} }}
              - {{ header: {{ key: x-static, value: s }} }}
            response_headers_to_add:
              - {{ header: {{ key: x-served-by, value: \"%UPSTREAM_HOST%\" }} }}
"
        ),
    );
    assert!(yaml.contains("x-static"), "{yaml}");
    let gw = TestGateway::start(&yaml);
    for _ in 0..4 {
        let got = raw_exchange(
            gw.addr,
            b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
            T,
        );
        let response = got.responses().into_iter().next().expect("a response");
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header_all("x-served-by"),
            [good.addr().to_string().as_str()]
        );
    }
    let retried = bad.requests();
    assert!(!retried.is_empty(), "the bad endpoint was never tried");
    for r in &retried {
        assert_eq!(
            r.header_all("x-upstream"),
            [bad.addr().to_string().as_str()]
        );
        assert_eq!(r.header_all("x-static"), ["s"]);
    }
    for r in good.requests() {
        assert_eq!(
            r.header_all("x-upstream"),
            [good.addr().to_string().as_str()]
        );
        assert_eq!(r.header_all("x-static"), ["s"]);
        // The attempt count still says which attempt it is.
        let attempt = r.header("x-envoy-attempt-count").expect("attempt count");
        assert!(attempt == "1" || attempt == "2", "{attempt}");
    }
}

#[test]
fn an_http2_client_gets_its_edits_too() {
    let up = origin();
    let yaml = config(
        up.addr(),
        "    request_headers_to_add: [{ header: { key: x-listener, value: \"%PROTOCOL%\" } }]
    request_headers_to_remove: [x-secret]
    response_headers_to_add: [{ header: { key: x-resp, value: added } }]
    response_headers_to_remove: [x-origin-a]
",
        "",
        "",
        true,
    );
    let gw = TestGateway::start(&yaml);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let headers = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            let tcp = tokio::net::TcpStream::connect(gw.addr)
                .await
                .expect("connect");
            let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut send: h2::client::SendRequest<Bytes> = send.ready().await.expect("ready");
            let request = http::Request::get("http://a.test/h2")
                .header("x-secret", "s")
                .body(())
                .expect("request");
            let (response, _) = send.send_request(request, true).expect("send");
            let response = response.await.expect("response");
            assert_eq!(response.status(), 200);
            response.headers().clone()
        })
        .await
        .expect("within 30 s")
    });
    assert_eq!(
        headers.get("x-resp").map(|v| v.as_bytes()),
        Some(&b"added"[..])
    );
    assert!(headers.get("x-origin-a").is_none());
    assert!(headers.get("x-origin-b").is_some());
    let seen = up.wait_requests(1, T).pop().expect("a request");
    assert_eq!(seen.header("x-listener"), Some("HTTP/2"));
    assert_eq!(seen.header("x-secret"), None);
}

#[test]
fn edit_mistakes_name_their_field() {
    let yaml = "
listeners:
  - name: main
    address: 127.0.0.1:0
    request_headers_to_add:
      - { header: { key: \"bad name\", value: x } }
      - { header: { key: x-ok, value: \"%NOPE%\" } }
    response_headers_to_remove: [\":status\"]
    virtual_hosts:
      - name: all
        domains: [\"*\"]
        request_headers_to_remove: [host, x-fine]
        response_headers_to_add:
          - { header: { key: x-a, value: \"line\\r\\nbreak\" } }
          - { header: { key: x-b, value: v }, append_action: SOMETIMES }
          - { header: { key: x-c, value: v }, append_action: ADD_IF_ABSENT, append: true }
        routes:
          - match: { prefix: \"/\" }
            route: { cluster: c }
            request_headers_to_add:
              - { header: { key: Transfer-Encoding, value: chunked } }
              - { header: { key: x-nul, value: \"a\\0b\" } }
            request_headers_to_remove: [connection, \":path\"]
clusters:
  - name: c
    endpoints: [{ address: 127.0.0.1:1 }]
";
    let errors = config::parse(yaml, "edits.yaml").expect_err("invalid");
    let got: Vec<(&str, &str)> = errors
        .0
        .iter()
        .map(|e| (e.path.as_str(), e.reason.as_str()))
        .collect();
    let route = "listeners[0].virtual_hosts[0].routes[0]";
    let vhost = "listeners[0].virtual_hosts[0]";
    let want = [
        (
            "listeners[0].request_headers_to_add[0].header.key".to_owned(),
            "not a valid header name",
        ),
        (
            "listeners[0].request_headers_to_add[1].header.value".to_owned(),
            "unknown operator %NOPE%",
        ),
        (
            "listeners[0].response_headers_to_remove[0]".to_owned(),
            "pseudo-header :status cannot be removed",
        ),
        (
            format!("{vhost}.request_headers_to_remove[0]"),
            "host cannot be removed",
        ),
        (
            format!("{vhost}.response_headers_to_add[0].header.value"),
            "0x0d",
        ),
        (
            format!("{vhost}.response_headers_to_add[1].append_action"),
            "unknown append_action \"SOMETIMES\"",
        ),
        (
            format!("{vhost}.response_headers_to_add[2].append"),
            "not both",
        ),
        (
            format!("{route}.request_headers_to_add[0].header.key"),
            "transfer-encoding cannot be added",
        ),
        (
            format!("{route}.request_headers_to_add[1].header.value"),
            "0x00",
        ),
        (
            format!("{route}.request_headers_to_remove[0]"),
            "connection cannot be removed",
        ),
        (
            format!("{route}.request_headers_to_remove[1]"),
            "pseudo-header :path cannot be removed",
        ),
    ];
    for (path, why) in &want {
        assert!(
            got.iter().any(|(p, r)| p == path && r.contains(why)),
            "{path}: {why} not reported; got {got:#?}"
        );
    }
    assert_eq!(got.len(), want.len(), "{got:#?}");
}

#[test]
fn http2_upstreams_get_the_request_edits_and_a_retry_edits_again() {
    let (good, bad) = (
        H2Origin::start(200, "h2", ORIGIN_HEADERS),
        H2Origin::start(503, "h2", ORIGIN_HEADERS),
    );
    let policy = "{ retry_on: [5xx], num_retries: 1 }";
    let yaml = retry_config(good.addr, bad.addr, policy, "    protocol: http2", false).replace(
        &format!("retry_policy: {policy} }}\n"),
        &format!(
            "retry_policy: {policy} }}
            request_headers_to_add:
              - {{ header: {{ key: x-upstream, value: \"%UPSTREAM_HOST%\" }} }}
              - {{ header: {{ key: x-static, value: s }} }}
            request_headers_to_remove: [x-secret]
            response_headers_to_add:
              - {{ header: {{ key: x-served-by, value: \"%UPSTREAM_HOST%\" }} }}
            response_headers_to_remove: [x-origin-a]
"
        ),
    );
    let gw = TestGateway::start(&yaml);
    for _ in 0..4 {
        let got = raw_exchange(
            gw.addr,
            b"GET / HTTP/1.1\r\nHost: a.test\r\nx-secret: s\r\nConnection: close\r\n\r\n",
            T,
        );
        let response = got.responses().into_iter().next().expect("a response");
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "h2");
        assert_eq!(response.header("x-origin-a"), None);
        assert_eq!(
            response.header_all("x-served-by"),
            [good.addr.to_string().as_str()]
        );
    }
    let values = |h: &http::HeaderMap, name: &str| -> Vec<String> {
        (h.get_all(name).iter())
            .map(|v| v.to_str().unwrap_or("?").to_owned())
            .collect()
    };
    let tried = headers_seen(&bad);
    assert!(!tried.is_empty(), "the bad endpoint was never tried");
    for (origin, seen) in [(&bad, tried), (&good, headers_seen(&good))] {
        for h in seen {
            assert_eq!(values(&h, "x-upstream"), [origin.addr.to_string()]);
            assert_eq!(values(&h, "x-static"), ["s"]);
            assert!(h.get("x-secret").is_none());
        }
    }
}

/// The response header the HTTP/2 origins add (the response edits must keep it).
const ORIGIN_HEADERS: &[(&str, &str)] = &[("x-origin-a", "a")];

/// The headers of each request an HTTP/2 origin saw.
fn headers_seen(origin: &H2Origin) -> Vec<http::HeaderMap> {
    origin.seen().into_iter().map(|r| r.headers).collect()
}
