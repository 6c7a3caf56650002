//! Property tests for the HTTP/1 codec and the config loader: the properties of fuzz/props.rs
//! (shared with the fuzz targets) driven by proptest on inputs built mostly from fragments of
//! valid messages and configs, plus every seed and regression input under fuzz/ replayed.
//!
//! PROPTEST_CASES=N runs N cases per property instead of the default.

#[path = "../fuzz/props.rs"]
mod props;

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::{Index, select};

/// Cases per property: enough to pass every fragment combination class a few times while the
/// whole file stays a few seconds in a debug build.
const CASES: u32 = 2000;

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    // Failures are minimised and printed; a lasting regression goes under fuzz/regressions/.
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

// ---------------------------------------------------------------- fragments

type Bytes = Vec<u8>;

/// Each fragment list comes in two parts: what a correct peer sends, and what an attacker or a
/// broken peer sends. Generators take mostly the first, so that most heads are accepted and
/// the round trip is exercised, and the second often enough to cover every rejection.
const METHODS: &[&[u8]] = &[
    b"GET ",
    b"GET ",
    b"POST ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"BREW ",
];
const ODD_METHODS: &[&[u8]] = &[b"get ", b"CONNECT ", b"G(T ", b"", b" ", b"GET  "];
const TARGETS: &[&[u8]] = &[
    b"/",
    b"/",
    b"/a",
    b"/a/b?c=d&e",
    b"/%7e?q=%00",
    b"http://h/x",
    b"http://Other.example:8080/x?y",
    b"http://h",
    b"http://h?q",
    b"HTTPS://h/",
    b"//x",
];
const ODD_TARGETS: &[&[u8]] = &[
    b"*",
    b"http://u@h/",
    b"http:///x",
    b"ftp://h/",
    b"a",
    b"/\x80",
    b"",
    b"/a#f",
];
const VERSIONS: &[&[u8]] = &[
    b" HTTP/1.1\r\n",
    b" HTTP/1.1\r\n",
    b" HTTP/1.0\r\n",
    b" HTTP/1.1\n",
];
const ODD_VERSIONS: &[&[u8]] = &[
    b" HTTP/2.0\r\n",
    b" http/1.1\r\n",
    b"  HTTP/1.1\r\n",
    b"HTTP/1.1\r\n",
];
const STATUS_LINES: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.0 200 OK\r\n",
    b"HTTP/1.1 204 No Content\r\n",
    b"HTTP/1.1 304 Not Modified\r\n",
    b"HTTP/1.1 100 Continue\r\n",
    b"HTTP/1.1 404 \r\n",
    b"HTTP/1.1 200\r\n",
    b"HTTP/1.1 999 Odd\r\n",
    b"HTTP/1.1 200 OK\n",
    b"HTTP/1.1 200 \xe2\x9c\x93 \t ok\r\n",
];
const ODD_STATUS_LINES: &[&[u8]] = &[
    b"HTTP/1.1 099 Low\r\n",
    b"HTTP/1.1 2OO OK\r\n",
    b"HTTP/2 200 OK\r\n",
    b"HTTP/1.1 20 OK\r\n",
    b"HTTP/1.1  200 OK\r\n",
];
const HOSTS: &[&[u8]] = &[
    b"Host: a\r\n",
    b"Host: a:8080\r\n",
    b"Host: [::1]:80\r\n",
    b"host: B.example\r\n",
    b"Host:\r\n",
];
const ODD_HOSTS: &[&[u8]] = &[
    b"Host: a b\r\n",
    b"Host: a\r\nHost: b\r\n",
    b"Host: u@h\r\n",
    b"",
];
const FIELDS: &[&[u8]] = &[
    b"Transfer-Encoding: chunked\r\n",
    b"transfer-encoding: CHUNKED\r\n",
    b"Transfer-Encoding: ,chunked,\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 5, 5\r\n",
    b"Content-Length: 9999999999999999999\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive\r\n",
    b"Connection: keep-alive, X-A\r\n",
    b"Connection: Content-Length\r\n",
    b"Keep-Alive: timeout=5\r\n",
    b"Proxy-Connection: keep-alive\r\n",
    b"TE: trailers\r\n",
    b"Trailer: X-T\r\n",
    b"Upgrade: h2c\r\n",
    b"Expect: 100-continue\r\n",
    b"X-A: b\r\n",
    b"X-A: b\r\n",
    b"X-A:  spaced \t \r\n",
    b"x-a: second\r\n",
    b"X-B: \x80\xff\r\n",
    b"X-Empty:\r\n",
    b"X-Forwarded-For: 10.0.0.1\r\n",
    b"Accept: */*\r\n",
    b"X-Bare-LF: v\n",
];
const ODD_FIELDS: &[&[u8]] = &[
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding: chunked, identity\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Transfer-Encoding:\r\n chunked\r\n",
    b"Content-Length: 3, 4\r\n",
    b"Content-Length: +5\r\n",
    b"Content-Length: 0x5\r\n",
    b"Content-Length : 5\r\n",
    b"Content-Length: 18446744073709551616\r\n",
    b"Expect: bananas\r\n",
    b"X-Folded: a\r\n b\r\n",
    b"Bad Name: x\r\n",
    b": no-name\r\n",
    b"NoColon\r\n",
    b"X-Bare-CR: v\rx\r\n",
    b"X-Nul: a\x00b\r\n",
];
const NAMES: &[&[u8]] = &[
    b"Host",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Connection",
    b"Expect",
    b"X-A",
    b"x-a",
    b"Te",
    b"Upgrade",
    b"Keep-Alive",
    b"!#$%&'*+-.^_`|~09",
    b"",
];
const SEPARATORS: &[&[u8]] = &[b": ", b":", b":\t", b" : ", b": \t "];
const VALUES: &[&[u8]] = &[
    b"a",
    b"chunked",
    b"5",
    b"0",
    b"close",
    b"keep-alive",
    b"100-continue",
    b"",
    b" a ",
    b"a,b",
    b"\x80",
    b"\"q\"",
];
const LINE_ENDS: &[&[u8]] = &[b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""];
/// What ends the head, and what may follow it: a body, the next request.
const TAILS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n",
    b"\r\n",
    b"\r\nhello",
    b"\r\n5\r\nhello\r\n0\r\n\r\n",
    b"\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\n",
    b"\r\n\r\n",
];
const ODD_TAILS: &[&[u8]] = &[b"\r", b"", b"\r\r\n", b"\n\r"];

fn pick(list: &'static [&'static [u8]]) -> impl Strategy<Value = Bytes> {
    select(list).prop_map(<[u8]>::to_vec)
}

/// Mostly from `good`, one time in `1 + odds` from `odd`.
fn mostly(
    good: &'static [&'static [u8]],
    odd: &'static [&'static [u8]],
    odds: u32,
) -> impl Strategy<Value = Bytes> {
    prop_oneof![odds => pick(good), 1 => pick(odd)]
}

fn noise(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

fn concat(parts: Vec<Bytes>) -> Bytes {
    parts.concat()
}

/// One header line: a canned one, one built from name/separator/value/line end, or noise.
fn field() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        16 => pick(FIELDS),
        2 => pick(ODD_FIELDS),
        1 => (pick(NAMES), pick(SEPARATORS), pick(VALUES), pick(LINE_ENDS))
            .prop_map(|(n, s, v, e)| concat(vec![n, s, v, e])),
        1 => noise(6),
    ]
}

/// Overwrites, inserts or deletes one byte, or cuts the input short.
fn mutate(input: Bytes, at: Index, byte: u8, op: u8) -> Bytes {
    let mut v = input;
    let i = at.index(v.len() + 1);
    match op % 4 {
        0 if i < v.len() => v[i] = byte,
        1 => v.insert(i, byte),
        2 if i < v.len() => {
            v.remove(i);
        }
        _ => v.truncate(i),
    }
    v
}

fn mutated(s: impl Strategy<Value = Bytes>) -> impl Strategy<Value = Bytes> {
    (s, any::<Index>(), any::<u8>(), any::<u8>()).prop_map(|(v, at, b, op)| mutate(v, at, b, op))
}

/// Header lines with the Host line somewhere among them.
fn fields_with_host() -> impl Strategy<Value = Bytes> {
    (
        prop::collection::vec(field(), 0..5),
        mostly(HOSTS, ODD_HOSTS, 12),
        any::<Index>(),
    )
        .prop_map(|(mut fields, host, at)| {
            fields.insert(at.index(fields.len() + 1), host);
            fields.concat()
        })
}

/// Mostly well-formed request heads with a mix of framing fields, some mutated, some soup.
fn request() -> impl Strategy<Value = Bytes> {
    let structured = || {
        (
            mostly(METHODS, ODD_METHODS, 24),
            mostly(TARGETS, ODD_TARGETS, 16),
            mostly(VERSIONS, ODD_VERSIONS, 24),
            fields_with_host(),
            mostly(TAILS, ODD_TAILS, 16),
        )
            .prop_map(|(m, t, v, fields, tail)| concat(vec![m, t, v, fields, tail]))
    };
    let soup = prop::collection::vec(
        prop_oneof![
            pick(METHODS),
            pick(TARGETS),
            pick(VERSIONS),
            field(),
            pick(TAILS)
        ],
        0..10,
    )
    .prop_map(concat);
    prop_oneof![6 => structured(), 3 => mutated(structured()), 1 => soup]
}

fn response() -> impl Strategy<Value = Bytes> {
    let structured = || {
        (
            mostly(STATUS_LINES, ODD_STATUS_LINES, 16),
            prop::collection::vec(field(), 0..6),
            mostly(TAILS, ODD_TAILS, 16),
        )
            .prop_map(|(s, fields, tail)| concat(vec![s, fields.concat(), tail]))
    };
    let soup = prop::collection::vec(prop_oneof![pick(STATUS_LINES), field(), pick(TAILS)], 0..10)
        .prop_map(concat);
    prop_oneof![6 => structured(), 3 => mutated(structured()), 1 => soup]
}

const CHUNK_PIECES: &[&[u8]] = &[
    b"0",
    b"1",
    b"5",
    b"a",
    b"A",
    b"00005",
    b"ffffffffffffffff",
    b"10000000000000000",
    b"-1",
    b"0x5",
    b";",
    b";a",
    b"=b",
    b"=\"x\\\"y\"",
    b"=\"",
    b" ",
    b"\t",
    b"\r\n",
    b"\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"hello",
    b"X-T: v",
    b"X:",
    b"Bad Name: x",
    b":",
    b"\x01",
    b"\x7f",
    b"\xff",
    b"GET / HTTP/1.1\r\n",
];

const EXTENSIONS: &[&[u8]] = &[b"", b";a", b";a=b", b" ; n = \"v \\\" w\"", b";x;y=z"];
const TRAILERS: &[&[u8]] = &[
    b"X-T: 1\r\n",
    b"A:\r\n",
    b"Expires: Wed, 21 Oct 2015\r\n",
    b"X: \x80\t\r\n",
];
const AFTER_BODY: &[&[u8]] = &[b"", b"", b"GET / HTTP/1.1\r\n", b"0\r\n\r\n", b"\xff"];

/// A valid chunked body: chunks with optional extensions, then trailers, then what follows.
fn valid_chunked() -> impl Strategy<Value = Bytes> {
    let ext = select(EXTENSIONS);
    let chunk = (
        noise(20).prop_filter("a chunk has data", |d| !d.is_empty()),
        ext,
        any::<bool>(),
    )
        .prop_map(|(data, ext, upper)| {
            let size = if upper {
                format!("{:X}", data.len())
            } else {
                format!("{:x}", data.len())
            };
            concat(vec![
                size.into_bytes(),
                ext.to_vec(),
                b"\r\n".to_vec(),
                data,
                b"\r\n".to_vec(),
            ])
        });
    let trailer = select(TRAILERS);
    (
        prop::collection::vec(chunk, 0..5),
        prop::collection::vec(trailer, 0..3),
        pick(AFTER_BODY),
    )
        .prop_map(|(chunks, trailers, after)| {
            let trailers: Vec<Bytes> = trailers.into_iter().map(<[u8]>::to_vec).collect();
            concat(vec![
                chunks.concat(),
                b"0\r\n".to_vec(),
                trailers.concat(),
                b"\r\n".to_vec(),
                after,
            ])
        })
}

fn chunked() -> impl Strategy<Value = Bytes> {
    let soup = prop::collection::vec(prop_oneof![4 => pick(CHUNK_PIECES), 1 => noise(4)], 0..16)
        .prop_map(concat);
    prop_oneof![3 => valid_chunked(), 3 => mutated(valid_chunked()), 4 => soup]
}

const COREGATE_YAML: &str = include_str!("../config/coregate.yaml");
const DEMO_YAML: &str = include_str!("../config/demo.yaml");

const CONFIG_VALUES: &[&str] = &[
    "0",
    "-1",
    "1",
    "1024",
    "1025",
    "65535",
    "99999999999999999999",
    "1.5",
    "auto",
    "\"\"",
    "[]",
    "{}",
    "~",
    "!!binary aGk=",
    "&a x",
    "*a",
    "250ms",
    "0s",
    "1000000000000000h",
    "18446744073709551615s",
    "[::1]:80",
    "256.0.0.1:1",
    "127.0.0.1:99999",
    "localhost:80",
    "\"*\"",
    "[\"*.a\", \"*\", \"A.example\", \"*.\"]",
    "[GET, get, BREW, CONNECT]",
    "{ prefix: \"\" }",
    "{ path: a }",
    "{ cluster: nope }",
    "random",
    "yes",
    "'",
    "\"unterminated",
    "{ address: 127.0.0.1:1, weight: 0 }",
];
const CONFIG_LINES: &[&str] = &[
    "listeners: []",
    "clusters: []",
    "workers: 0",
    "unknown_key: 1",
    "  - name: dup",
    "  - name: bill_web",
    "    endpoints: []",
    "---",
    "...",
    "%YAML 1.2",
    "<<: *a",
    "? complex",
    "\t- tab",
    "admin: { address: \"[::1]:0\" }",
    "limits: { max_headers: 1 }",
];

/// A line of one of the shipped configs, with its value (after ": ") replaced.
fn replace_value(text: &str, line: Index, value: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let i = line.index(lines.len());
    let mut out = Vec::with_capacity(lines.len());
    for (j, l) in lines.iter().enumerate() {
        if j == i {
            match l.find(": ") {
                Some(c) => out.push(format!("{}: {value}", &l[..c])),
                None => out.push(format!("{l} {value}")),
            }
        } else {
            out.push((*l).to_owned());
        }
    }
    out.join("\n")
}

/// YAML from the shipped configs: values replaced, lines dropped or added, lines shuffled
/// together, or plain text.
fn config_text() -> impl Strategy<Value = Bytes> {
    let base = select(&[COREGATE_YAML, DEMO_YAML][..]);
    let replaced = (
        base.clone(),
        prop::collection::vec((any::<Index>(), select(CONFIG_VALUES)), 1..4),
    )
        .prop_map(|(text, edits)| {
            edits
                .into_iter()
                .fold(text.to_owned(), |t, (at, v)| replace_value(&t, at, v))
        });
    let dropped =
        (base.clone(), prop::collection::vec(any::<Index>(), 1..6)).prop_map(|(text, drops)| {
            let mut lines: Vec<&str> = text.lines().collect();
            for d in drops {
                if !lines.is_empty() {
                    lines.remove(d.index(lines.len()));
                }
            }
            lines.join("\n")
        });
    let added = (base, any::<Index>(), select(CONFIG_LINES)).prop_map(|(text, at, extra)| {
        let mut lines: Vec<&str> = text.lines().collect();
        lines.insert(at.index(lines.len() + 1), extra);
        lines.join("\n")
    });
    let all_lines: Vec<&'static str> = COREGATE_YAML
        .lines()
        .chain(DEMO_YAML.lines())
        .chain(CONFIG_LINES.iter().copied())
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let soup = prop::collection::vec(select(all_lines), 0..24).prop_map(|lines| lines.join("\n"));
    prop_oneof![
        3 => replaced.prop_map(String::into_bytes),
        2 => dropped.prop_map(String::into_bytes),
        2 => added.prop_map(String::into_bytes),
        2 => soup.prop_map(String::into_bytes),
        1 => noise(64),
    ]
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn request_head(data in request().prop_map(props::B)) {
        props::request_head(&data.0);
    }

    #[test]
    fn response_head(data in response().prop_map(props::B)) {
        props::response_head(&data.0);
    }

    #[test]
    fn chunked_splits(data in chunked().prop_map(props::B)) {
        props::chunked_splits(&data.0);
    }

    #[test]
    fn body_round_trip(data in noise(300).prop_map(props::B)) {
        props::body_round_trip(&data.0);
    }
}

proptest! {
    // Separate so that its cases can be tuned apart: YAML is the slow part of a debug build.
    #![proptest_config(config(CASES))]

    #[test]
    fn config_load(data in config_text().prop_map(props::B)) {
        props::config_load(&data.0);
    }
}

// ---------------------------------------------------------------- seeds and regressions

/// The properties by fuzz target name.
fn property(target: &str) -> fn(&[u8]) {
    match target {
        "request_head" => props::request_head,
        "response_head" => props::response_head,
        "chunked_splits" => props::chunked_splits,
        "body_round_trip" => props::body_round_trip,
        "config_load" => props::config_load,
        other => panic!("no property called {other:?}"),
    }
}

/// Regressions of codec bugs not fixed yet (file names under fuzz/regressions/): the replay
/// below skips them, and each gets its own `#[ignore = "codec bug: ..."]` test until fixed. A
/// bug that aborts the process (a stack overflow) must also be kept out of the generated cases
/// with a `prop_filter`, or it takes the whole test binary down.
const KNOWN_BUGS: &[&str] = &[];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("read dir").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, file: &Path) {
    let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    eprintln!("replaying {}", file.display());
    property(target)(&data);
}

#[test]
fn seed_corpora_hold() {
    let mut count = 0;
    for target in [
        "request_head",
        "response_head",
        "chunked_splits",
        "body_round_trip",
        "config_load",
    ] {
        let seeds = files(&fuzz_dir().join("seeds").join(target));
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for seed in seeds {
            replay(target, &seed);
            count += 1;
        }
    }
    eprintln!("{count} seeds replayed");
}

#[test]
fn fixed_regressions_hold() {
    for file in files(&fuzz_dir().join("regressions")) {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if KNOWN_BUGS.contains(&name) {
            continue;
        }
        let target = name.split('-').next().unwrap_or_default();
        replay(target, &file);
    }
}
