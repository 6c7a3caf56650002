//! How long does the HTTP/1 codec take for a typical browser request head (parse into the
//! neutral head, with the smuggling checks) and to encode it again for the upstream?

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

use coregate::h1::body::Framing;
use coregate::h1::head::{encode_request, parse_request};
use coregate::message::RequestHead;

const BROWSER_GET: &[u8] = b"GET /static/js/app.3f9a2c.js?v=20261125 HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/dashboard\r\n\
Connection: keep-alive\r\n\
Cookie: session=4f1c2a9e8b7d6c5a4f3e2d1c0b9a8f7e; theme=dark; _ga=GA1.2.123456789.1700000000\r\n\
Sec-Fetch-Dest: script\r\n\
Sec-Fetch-Mode: no-cors\r\n\
Sec-Fetch-Site: same-origin\r\n\
If-None-Match: \"5f2b-1a2b3c4d\"\r\n\
Priority: u=2\r\n\
\r\n";

fn bench_head(c: &mut Criterion) {
    let mut head = RequestHead::default();
    c.bench_function("h1/parse_browser_get", |b| {
        b.iter(|| parse_request(black_box(BROWSER_GET), 100, &mut head))
    });
    let mut head = RequestHead::default();
    let _ = parse_request(BROWSER_GET, 100, &mut head);
    let mut out = Vec::with_capacity(4096);
    c.bench_function("h1/encode_browser_get", |b| {
        b.iter(|| {
            out.clear();
            encode_request(black_box(&head), b"backend", Framing::None, &mut out);
        })
    });
}

criterion_group!(benches, bench_head);
criterion_main!(benches);
