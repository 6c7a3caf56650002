//! Proves that bodies stream through the proxy intact and with bounded memory: 64 MiB uploads
//! (chunked and content-length, echoed or consumed) and downloads (chunked and content-length)
//! keep their checksums while the process grows far less than the body; and an HTTP/1.0 client
//! gets a chunked upstream response close-delimited.

mod support;

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use support::client::{Body, HttpClient, StreamedResp, raw_exchange};
use support::gateway::{TestGateway, simple_config};
use support::harness::{MemoryWatch, T, lock};
use support::upstream::{HttpUpstream, Recorded, Reply, pattern_bytes, pattern_checksum};

const BIG: u64 = 64 << 20;
/// Growth allowed while 64 MiB pass through: buffers, not the body.
const MAX_GROWTH: u64 = 16 << 20;
/// One 64 MiB exchange takes about 1.5 s in a debug build.
const BIG_TIMEOUT: Duration = Duration::from_secs(20);

/// The memory measurements are of the whole process: one big transfer at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn big_checksum() -> u64 {
    static SUM: OnceLock<u64> = OnceLock::new();
    *SUM.get_or_init(|| pattern_checksum(BIG))
}

fn gateway() -> (HttpUpstream, TestGateway) {
    let up = HttpUpstream::builder()
        .route("/echo", Reply::Echo)
        .route(
            "/download/chunked",
            Reply::Sized {
                len: BIG,
                chunked: true,
            },
        )
        .route(
            "/download/sized",
            Reply::Sized {
                len: BIG,
                chunked: false,
            },
        )
        .start();
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"));
    (up, gw)
}

/// Runs one exchange on a connected client and asserts the process grew by less than
/// MAX_GROWTH meanwhile.
fn measured(gw: &TestGateway, method: &str, path: &str, body: Body) -> StreamedResp {
    let mut c = HttpClient::connect(gw.addr).expect("connect");
    c.set_timeout(BIG_TIMEOUT);
    big_checksum();
    let mut watch = MemoryWatch::start();
    let r = c
        .request_streaming(method, path, &[("host", "a")], body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let growth = watch.growth();
    assert!(
        growth < MAX_GROWTH,
        "{method} {path}: the process grew by {} KiB while {} MiB passed through (limit {} KiB)",
        growth >> 10,
        BIG >> 20,
        MAX_GROWTH >> 10
    );
    r
}

#[test]
fn chunked_64mib_upload_is_echoed_back_intact_with_bounded_memory() {
    let _serial = lock(&SERIAL);
    let (up, gw) = gateway();
    let body = Body::Pattern {
        len: BIG,
        chunked: true,
    };
    let r = measured(&gw, "POST", "/echo", body);
    assert_eq!(r.status, 200);
    assert_eq!(r.body_len, BIG);
    assert_eq!(r.body_checksum, big_checksum());
    let rec = &up.wait_requests(1, T)[0];
    assert!(rec.body_complete && rec.body_len == BIG);
}

/// Uploads BIG pattern bytes to a route that consumes them and returns what the upstream got.
fn upload(method: &str, chunked: bool) -> Recorded {
    let _serial = lock(&SERIAL);
    let (up, gw) = gateway();
    let body = Body::Pattern { len: BIG, chunked };
    assert_eq!(measured(&gw, method, "/upload", body).status, 200);
    let rec = up.wait_requests(1, T).remove(0);
    assert_eq!((rec.body_len, rec.body_complete), (BIG, true));
    assert_eq!(rec.body_checksum, big_checksum());
    rec
}

#[test]
fn chunked_64mib_upload_reaches_the_upstream_intact_with_bounded_memory() {
    let rec = upload("POST", true);
    assert_eq!(rec.header("transfer-encoding"), Some("chunked"));
}

#[test]
fn content_length_64mib_upload_reaches_the_upstream_intact_with_bounded_memory() {
    let rec = upload("PUT", false);
    assert_eq!(rec.header("content-length"), Some(BIG.to_string().as_str()));
}

/// Downloads BIG pattern bytes from `path` and checks they arrived intact.
fn download(path: &str) -> StreamedResp {
    let _serial = lock(&SERIAL);
    let (_up, gw) = gateway();
    let r = measured(&gw, "GET", path, Body::Empty);
    assert_eq!((r.status, r.body_len), (200, BIG));
    assert_eq!(r.body_checksum, big_checksum());
    r
}

#[test]
fn chunked_64mib_download_streams_intact_with_bounded_memory() {
    let r = download("/download/chunked");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
}

#[test]
fn content_length_64mib_download_streams_intact_with_bounded_memory() {
    let r = download("/download/sized");
    assert_eq!(r.header("content-length"), Some(BIG.to_string().as_str()));
}

#[test]
fn http_1_0_client_gets_a_chunked_upstream_response_close_delimited() {
    let len = 300_000;
    let up = HttpUpstream::builder()
        .route("/big", Reply::Sized { len, chunked: true })
        .start();
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"));
    let got = raw_exchange(gw.addr, b"GET /big HTTP/1.0\r\n\r\n", T);
    assert!(got.closed, "the body ends with the connection");
    assert!(
        !got.reset,
        "a clean close (FIN), not a reset, ends the body"
    );
    let rs = got.responses();
    assert_eq!(rs.len(), 1);
    let r = &rs[0];
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), None, "{:?}", r.headers);
    assert_eq!(r.header("content-length"), None, "{:?}", r.headers);
    assert_eq!(r.body.len() as u64, len);
    assert!(
        r.body == pattern_bytes(0, len as usize),
        "body bytes differ"
    );
}

#[test]
fn early_upstream_answer_is_relayed_and_the_unread_upload_closes_the_connection() {
    // The upstream refuses the upload from its head alone, without reading the body.
    let up = support::upstream::RawUpstream::start(|conn| {
        if conn.read_head().is_some() {
            conn.write(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!");
            conn.close();
        }
    });
    let gw = TestGateway::start(&simple_config(&[(up.addr(), 1)], 1, "", "{}"));
    let mut client = support::client::RawClient::connect(gw.addr);
    client.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n0123456789");
    let resp = client.read_response(T);
    assert_eq!(resp.status, 413);
    assert_eq!(resp.body, b"big!");
    // The rest of the body was never read: the connection cannot carry another request.
    assert!(
        client.is_closed(T),
        "the connection closes after the early answer"
    );
}
