//! What does the trust step cost a request before routing: normalising a path that is already
//! normal (the common case: one scan, no copy), one that is not, and replacing the identity
//! headers of a typical browser request?

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

use coregate::config::HttpOptions;
use coregate::h1::head::parse_request;
use coregate::message::RequestHead;
use coregate::path::{PathOptions, normalize_target};
use coregate::sanitize::{Origin, sanitize};

const BROWSER_GET: &[u8] = b"GET /static/js/app.3f9a2c.js?v=20261125 HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/dashboard\r\n\
Connection: keep-alive\r\n\
Cookie: session=4f1c2a9e8b7d6c5a4f3e2d1c0b9a8f7e; theme=dark\r\n\
X-Forwarded-For: 10.1.2.3\r\n\
\r\n";

fn bench_sanitize(c: &mut Criterion) {
    let opts = PathOptions::default();
    let mut out = Vec::with_capacity(256);
    c.bench_function("path/normal_target", |b| {
        b.iter(|| {
            normalize_target(
                black_box(b"/static/js/app.3f9a2c.js?v=20261125"),
                &opts,
                &mut out,
            )
        })
    });
    c.bench_function("path/dot_segments_and_escapes", |b| {
        b.iter(|| {
            normalize_target(
                black_box(b"/static/./js/%61pp/../app.3f9a2c.js?v=20261125"),
                &opts,
                &mut out,
            )
        })
    });
    let http = HttpOptions::default();
    let peer = "198.51.100.7".parse().expect("address");
    let mut head = RequestHead::default();
    c.bench_function("sanitize/browser_get", |b| {
        b.iter(|| {
            let _ = parse_request(BROWSER_GET, 100, &mut head);
            let origin = Origin {
                peer,
                client_ip: b"198.51.100.7",
                scheme: b"http",
                client_cert_header: None,
                client_cert: None,
            };
            sanitize(black_box(&mut head), &http, &origin)
        })
    });
    c.bench_function("sanitize/parse_only_baseline", |b| {
        b.iter(|| parse_request(black_box(BROWSER_GET), 100, &mut head))
    });
}

criterion_group!(benches, bench_sanitize);
criterion_main!(benches);
