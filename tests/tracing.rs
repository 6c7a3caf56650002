//! Request ids and trace propagation over real sockets: an `x-request-id` is kept or made and
//! reaches the upstream; W3C and B3 trace context is continued with a child span for the
//! gateway's hop; sampled spans reach a Zipkin collector (a tiny one in this process) as
//! Zipkin v2 JSON.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use support::client::raw_exchange;
use support::gateway::{CatchAll, TestGateway};
use support::harness::T;
use support::upstream::{HttpUpstream, Recorded};

/// Collects the bodies POSTed to it, one message per POST.
fn collector() -> (SocketAddr, mpsc::Receiver<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            conn.set_read_timeout(Some(T)).ok();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let (head, body_start, len) = loop {
                let Ok(n) = conn.read(&mut chunk) else {
                    break (String::new(), 0, 0);
                };
                if n == 0 {
                    break (String::new(), 0, 0);
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(str::to_owned)
                        })
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    break (head, end + 4, len);
                }
            };
            while buf.len() < body_start + len {
                match conn.read(&mut chunk) {
                    Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
            let _ = conn.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n");
            let body = String::from_utf8_lossy(&buf[body_start..]).into_owned();
            let _ = tx.send((head.lines().next().unwrap_or("").to_owned(), body));
        }
    });
    (addr, rx)
}

fn gateway(upstream: SocketAddr, extra: &str, listener_extra: &str) -> TestGateway {
    CatchAll::new(upstream)
        .top(extra)
        .listener("main", listener_extra)
        .start()
}

fn send(gw: &TestGateway, path: &str, headers: &str) {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n{headers}Connection: close\r\n\r\n");
    assert_eq!(
        raw_exchange(gw.addr, request.as_bytes(), T).status(),
        Some(200)
    );
}

fn seen<'a>(requests: &'a [Recorded], path: &str) -> &'a Recorded {
    requests
        .iter()
        .find(|r| r.path == path)
        .unwrap_or_else(|| panic!("{path} not seen"))
}

#[test]
fn request_ids_are_kept_or_made_and_reach_the_upstream() {
    let up = HttpUpstream::builder().start();
    let gw = gateway(up.addr(), "", "");
    send(&gw, "/none", "");
    send(&gw, "/kept", "X-Request-Id: order-42\r\n");
    send(&gw, "/invalid", "X-Request-Id: has \"quotes\"\r\n");
    let requests = up.wait_requests(3, T);
    let made = seen(&requests, "/none").header_all("x-request-id");
    assert_eq!(made.len(), 1);
    let id = made[0];
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(&id[14..15], "4", "UUID version 4: {id}");
    assert_eq!(
        seen(&requests, "/kept").header_all("x-request-id"),
        vec!["order-42"]
    );
    let replaced = seen(&requests, "/invalid").header_all("x-request-id");
    assert!(
        replaced.len() == 1 && replaced[0].len() == 36,
        "{replaced:?}"
    );
    drop(gw);

    let gw = gateway(
        up.addr(),
        "",
        "    request_id: { preserve_external: false }",
    );
    send(&gw, "/replaced", "X-Request-Id: order-42\r\n");
    let requests = up.wait_requests(4, T);
    assert_ne!(
        seen(&requests, "/replaced").header("x-request-id"),
        Some("order-42")
    );
}

#[test]
fn trace_context_continues_with_a_span_for_the_gateway_hop() {
    let up = HttpUpstream::builder().start();
    let gw = gateway(up.addr(), "", "");
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    send(
        &gw,
        "/w3c",
        &format!(
            "traceparent: 00-{trace}-00f067aa0ba902b7-01\r\ntracestate: rojo=00f067aa0ba902b7\r\n"
        ),
    );
    send(
        &gw,
        "/b3",
        "X-B3-TraceId: 463ac35c9f6413ad48485a3953bb6124\r\nX-B3-SpanId: a2fb4a1d1a96d312\r\nX-B3-Sampled: 1\r\n",
    );
    send(
        &gw,
        "/b3single",
        "b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1\r\n",
    );
    send(&gw, "/untraced", "");
    let requests = up.wait_requests(4, T);
    let w3c = seen(&requests, "/w3c");
    let tp = w3c.header("traceparent").expect("traceparent");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", trace, "01"), "{tp}");
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "a new span id for the gateway's hop"
    );
    assert_eq!(w3c.header("tracestate"), Some("rojo=00f067aa0ba902b7"));
    let b3 = seen(&requests, "/b3");
    assert_eq!(
        b3.header("x-b3-traceid"),
        Some("463ac35c9f6413ad48485a3953bb6124")
    );
    assert_eq!(b3.header("x-b3-parentspanid"), Some("a2fb4a1d1a96d312"));
    assert_ne!(b3.header("x-b3-spanid"), Some("a2fb4a1d1a96d312"));
    assert_eq!(b3.header("x-b3-sampled"), Some("1"));
    let single = seen(&requests, "/b3single").header("b3").expect("b3");
    assert!(
        single.starts_with("80f198ee56343ba864fe8b2a57d3eff7-"),
        "{single}"
    );
    assert!(single.ends_with("-1-e457b5a2e4d86bd1"), "{single}");
    // Tracing is off: a request without context is not given one.
    assert_eq!(seen(&requests, "/untraced").header("traceparent"), None);
}

#[test]
fn sampled_spans_reach_a_zipkin_collector() {
    let (collector, spans) = collector();
    let up = HttpUpstream::builder().start();
    let gw = gateway(
        up.addr(),
        &format!(
            "tracing:\n  zipkin: {{ collector: \"{collector}\" }}\n  service_name: edge\n  sample_percent: 100"
        ),
        "",
    );
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    send(
        &gw,
        "/traced",
        &format!("traceparent: 00-{trace}-00f067aa0ba902b7-01\r\n"),
    );
    send(&gw, "/new", "");
    send(
        &gw,
        "/unsampled",
        "traceparent: 00-11111111111111111111111111111111-2222222222222222-00\r\n",
    );
    let requests = up.wait_requests(3, T);
    let hop = |path: &str| {
        let tp = seen(&requests, path)
            .header("traceparent")
            .expect("traceparent")
            .to_owned();
        tp.split('-').nth(2).expect("span id").to_owned()
    };
    let (traced_span, new_span) = (hop("/traced"), hop("/new"));

    let mut got: Vec<serde_json::Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let (line, body) = spans.recv_timeout(left).expect("spans exported");
        assert!(line.starts_with("POST /api/v2/spans "), "{line}");
        got.extend(serde_json::from_str::<Vec<serde_json::Value>>(&body).expect("Zipkin v2 JSON"));
    }
    let traced = got
        .iter()
        .find(|s| s["id"] == traced_span.as_str())
        .expect("the traced span");
    assert_eq!(traced["traceId"], trace);
    assert_eq!(traced["parentId"], "00f067aa0ba902b7");
    assert_eq!(traced["kind"], "SERVER");
    assert_eq!(traced["localEndpoint"]["serviceName"], "edge");
    assert_eq!(traced["tags"]["http.status_code"], "200");
    assert_eq!(traced["tags"]["http.path"], "/traced");
    assert!(traced["duration"].as_u64().is_some_and(|d| d > 0));
    let root = got
        .iter()
        .find(|s| s["id"] == new_span.as_str())
        .expect("the new trace's root span");
    assert!(root.get("parentId").is_none(), "{root}");
    assert!(
        !got.iter()
            .any(|s| s["traceId"] == "11111111111111111111111111111111"),
        "unsampled spans stay home"
    );
    let text = gw.gateway.registry().render();
    assert!(text.contains("tracing.spans_sent: "), "{text}");
}
