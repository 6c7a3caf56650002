//! Proves the request-smuggling defences on raw bytes: every ambiguous or malformed framing in a
//! request is answered 400 and the connection closed (head-level ones without reaching the
//! upstream), and the same ambiguities in an upstream response give 502, or, once the response
//! head is out, a closed client connection without a complete body.

mod support;

use support::client::{RawClient, raw_exchange};
use support::gateway::{TestGateway, simple_config};
use support::harness::{Gate, T, expect_status_and_close, read_until};
use support::upstream::{HttpUpstream, RawUpstream};

/// A gateway in front of a recording upstream.
fn gateway() -> (HttpUpstream, TestGateway) {
    let up = HttpUpstream::builder().start();
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"));
    (up, gw)
}

/// A POST whose extra header lines are `headers` (each ending in CRLF) and whose body is `body`.
fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /submit HTTP/1.1\r\nHost: a\r\n{headers}\r\n{body}").into_bytes()
}

/// A chunked POST whose body is `body`.
fn chunked(body: &str) -> Vec<u8> {
    post("Transfer-Encoding: chunked\r\n", body)
}

/// Every request must get 400 and a close; head-level violations never reach the upstream.
fn assert_all_rejected(cases: &[(&str, Vec<u8>)], head_level: bool) {
    let (up, gw) = gateway();
    for (what, request) in cases {
        let r = expect_status_and_close(gw.addr, request, 400);
        assert!(!r.body.is_empty(), "{what}: the 400 says why");
        if head_level {
            assert_eq!(
                up.request_count(),
                0,
                "{what}: the upstream got the request"
            );
        }
    }
    // The gateway still serves well-formed requests.
    let ok = raw_exchange(
        gw.addr,
        &post("Content-Length: 5\r\nConnection: close\r\n", "hello"),
        T,
    );
    assert_eq!(ok.status(), Some(200), "{:?}", ok.text());
}

#[test]
fn ambiguous_request_length_is_400_and_close() {
    assert_all_rejected(
        &[
            (
                "CL and TE",
                post(
                    "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                    "0\r\n\r\n",
                ),
            ),
            (
                "TE and CL",
                post(
                    "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                    "0\r\n\r\n",
                ),
            ),
            (
                "two Content-Length headers",
                post("Content-Length: 3\r\nContent-Length: 4\r\n", "abcd"),
            ),
            (
                "Content-Length list 3, 4",
                post("Content-Length: 3, 4\r\n", "abcd"),
            ),
            (
                "TE chunked, identity",
                post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"),
            ),
            ("TE gzip", post("Transfer-Encoding: gzip\r\n", "0\r\n\r\n")),
            (
                "two TE headers, last not chunked",
                post(
                    "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
                    "0\r\n\r\n",
                ),
            ),
        ],
        true,
    );
}

#[test]
fn malformed_header_lines_are_400_and_close() {
    assert_all_rejected(
        &[
            (
                "space before the colon",
                post("Content-Length : 5\r\n", "hello"),
            ),
            (
                "tab before the colon",
                post("Content-Length\t: 5\r\n", "hello"),
            ),
            (
                "obsolete line folding",
                b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n".to_vec(),
            ),
            (
                "folded Transfer-Encoding",
                post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"),
            ),
        ],
        true,
    );
}

#[test]
fn invalid_chunk_sizes_are_400_and_close() {
    assert_all_rejected(
        &[
            ("non-hex size zz", chunked("zz\r\nhello\r\n0\r\n\r\n")),
            ("negative size -1", chunked("-1\r\nhello\r\n0\r\n\r\n")),
            ("leading space", chunked(" 5\r\nhello\r\n0\r\n\r\n")),
            ("0x prefix", chunked("0x5\r\nhello\r\n0\r\n\r\n")),
            (
                "17 hex digits",
                chunked("10000000000000005\r\nhello\r\n0\r\n\r\n"),
            ),
            ("empty size", chunked("\r\nhello\r\n0\r\n\r\n")),
        ],
        false,
    );
}

#[test]
fn invalid_chunk_extensions_are_400_and_close() {
    assert_all_rejected(
        &[
            ("bare semicolon", chunked("5;\r\nhello\r\n0\r\n\r\n")),
            ("name without value", chunked("5;a=\r\nhello\r\n0\r\n\r\n")),
            ("two names", chunked("5; a b\r\nhello\r\n0\r\n\r\n")),
        ],
        false,
    );
}

#[test]
fn bare_lf_in_chunked_framing_is_400_and_close() {
    assert_all_rejected(
        &[
            ("bare LF after the size", chunked("5\nhello\r\n0\r\n\r\n")),
            ("bare LF after the data", chunked("5\r\nhello\n0\r\n\r\n")),
            (
                "bare LF after the last chunk",
                chunked("5\r\nhello\r\n0\n\r\n"),
            ),
            ("junk after chunk data", chunked("5\r\nhelloX\r\n0\r\n\r\n")),
        ],
        false,
    );
}

#[test]
fn valid_chunk_extensions_and_trailers_are_accepted() {
    let (up, gw) = gateway();
    let got = raw_exchange(
        gw.addr,
        &chunked("5;name=value; flag\r\nhello\r\n6;q=\"a b\"\r\n world\r\n0\r\nX-T: 1\r\n\r\n")
            .into_iter()
            .chain(b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec())
            .collect::<Vec<u8>>(),
        T,
    );
    let rs = got.responses();
    assert_eq!(
        rs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200],
        "{:?}",
        got.text()
    );
    let rec = up.wait_requests(2, T);
    assert_eq!(rec[0].body_len, 11);
    assert!(rec[0].body_complete);
    assert_eq!(rec[1].path, "/after");
}

// ---------------------------------------------------------------------------------------------
// Upstream responses
// ---------------------------------------------------------------------------------------------

#[test]
fn ambiguous_upstream_response_framing_is_502() {
    let cases: [(&str, &'static [u8]); 6] = [
        (
            "not a status line",
            b"HTTP/1.1 2OO OK\r\nContent-Length: 5\r\n\r\nhello",
        ),
        (
            "CL and TE",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "two different Content-Length values",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "Content-Length list 5, 6",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!",
        ),
        (
            "TE chunked, gzip",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        ),
        (
            "TE gzip",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        ),
    ];
    for (what, reply) in cases {
        let up = RawUpstream::responding(reply);
        let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"));
        let mut c = RawClient::connect(gw.addr);
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c
            .try_read_response(T)
            .unwrap_or_else(|e| panic!("{what}: no response: {e}"));
        assert_eq!(r.status, 502, "{what}: {r:?}");
        assert!(
            !r.text().contains("hello"),
            "{what}: upstream body leaked: {r:?}"
        );
    }
}

#[test]
fn bad_chunk_size_in_upstream_body_closes_the_client_without_a_complete_body() {
    // The upstream sends the head and a first chunk, waits until the client has the head (so
    // the response is under way), then an invalid chunk size.
    let head_seen = Gate::new();
    let gate = head_seen.clone();
    let up = RawUpstream::start(move |conn| {
        if conn.read_head().is_some() {
            conn.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
            if gate.wait(T) {
                conn.write(b"zz\r\nworld\r\n0\r\n\r\n");
            }
        }
    });
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"));
    let mut c = RawClient::connect(gw.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(
        read_until(&mut c, b"hello", T),
        "the response head and first chunk reach the client: {:?}",
        String::from_utf8_lossy(c.leftover())
    );
    head_seen.open();
    let r = c.try_read_response(T);
    assert!(
        r.is_err(),
        "the client must not get a complete response: {r:?}"
    );
    assert!(c.is_closed(T), "the client connection is closed");
    assert!(up.script_panics().is_empty(), "{:?}", up.script_panics());
}
