//! The properties that the fuzz targets (fuzz/fuzz_targets/) and the property tests
//! (tests/properties.rs) both check: each `pub fn NAME(data: &[u8])` panics when the codec or the
//! config loader breaks a property — parser disagreement, split-dependence, a body that ends
//! anywhere but its end — not only when it crashes.
//!
//! Every call into the crate goes through the wrappers in `api` right below, so a change of the
//! codec's signatures is fixed there and nowhere else.

#![allow(dead_code)]

use std::fmt;

/// The crate as the properties see it: plain owned views, no crate types past this module except
/// `Framing`.
pub mod api {
    use std::ops::Range;

    use coregate::h1::body::{BodyDecoder, BodyEncoder, Step};
    use coregate::h1::head;
    use coregate::message::{Headers, RequestHead, ResponseHead, Version};

    pub use coregate::h1::body::Framing;

    use super::B;

    /// A parsed request head, owned, for comparisons.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct RequestView {
        pub head_len: usize,
        pub framing: Framing,
        pub keep_alive: bool,
        pub expect_continue: bool,
        pub method: B,
        pub http11: bool,
        pub target: B,
        pub authority: B,
        pub headers: Vec<(B, B)>,
        /// The client accepts trailers (TE: trailers), which the proxy passes on.
        pub te_trailers: bool,
    }

    /// An accepted request: the view plus what encode_request needs.
    pub struct Request {
        pub view: RequestView,
        head: RequestHead,
    }

    /// Ok(None): incomplete. Err: the status the client gets.
    pub fn parse_request(buf: &[u8], max_headers: usize) -> Result<Option<Request>, Option<u16>> {
        let mut head = RequestHead::default();
        match head::parse_request(buf, max_headers, &mut head) {
            Err(e) => Err(e.status()),
            Ok(None) => Ok(None),
            Ok(Some(meta)) => Ok(Some(Request {
                view: RequestView {
                    head_len: meta.head_len,
                    framing: meta.framing,
                    keep_alive: meta.keep_alive,
                    expect_continue: meta.expect_continue,
                    method: B::from(head.method.as_str().as_bytes()),
                    http11: head.version == Version::HTTP_11,
                    target: B::from(head.target()),
                    authority: B::from(head.authority()),
                    headers: head
                        .headers
                        .iter()
                        .map(|(n, v)| (B::from(n), B::from(v)))
                        .collect(),
                    te_trailers: head.te_trailers,
                },
                head,
            })),
        }
    }

    /// Where the empty line that ends a head is, scanning from `from`: the codec's test of
    /// "the head is in, parse it" for a head that arrives in several reads.
    pub fn head_end(buf: &[u8], from: usize) -> Option<usize> {
        head::head_end(buf, from)
    }

    /// The head as the proxy sends it upstream, with the framing it parsed.
    pub fn encode_request(req: &Request, fallback_host: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        head::encode_request(&req.head, fallback_host, req.view.framing, &mut out);
        out
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ResponseView {
        pub head_len: usize,
        pub framing: Framing,
        pub keep_alive: bool,
        pub status: u16,
        pub reason: B,
        pub headers: Vec<(B, B)>,
        pub declared_length: Option<u64>,
    }

    pub struct Response {
        pub view: ResponseView,
        head: ResponseHead,
    }

    pub fn parse_response(
        buf: &[u8],
        max_headers: usize,
        head_request: bool,
    ) -> Result<Option<Response>, Option<u16>> {
        let mut head = ResponseHead::default();
        match head::parse_response(buf, max_headers, head_request, &mut head) {
            Err(e) => Err(e.status()),
            Ok(None) => Ok(None),
            Ok(Some(meta)) => Ok(Some(Response {
                view: ResponseView {
                    head_len: meta.head_len,
                    framing: meta.framing,
                    keep_alive: meta.keep_alive,
                    status: head.status,
                    reason: B::from(head.reason()),
                    headers: head
                        .headers
                        .iter()
                        .map(|(n, v)| (B::from(n), B::from(v)))
                        .collect(),
                    declared_length: head.declared_length,
                },
                head,
            })),
        }
    }

    /// The head as the proxy sends it to the client, with the framing it parsed and no
    /// Connection header.
    pub fn encode_response(res: &Response) -> Vec<u8> {
        let mut out = Vec::new();
        head::encode_response(
            &res.head,
            res.view.framing,
            head::Persistence::Default,
            &mut out,
        );
        out
    }

    /// One decode step, in the properties' own terms.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Piece {
        NeedMore,
        Data(Range<usize>),
        Done,
    }

    pub struct Decoder(BodyDecoder);

    impl Decoder {
        pub fn new(framing: Framing, max_trailer_bytes: usize) -> Self {
            Decoder(BodyDecoder::new(framing, max_trailer_bytes))
        }

        /// (consumed, piece); the error as text so that its type can change freely.
        pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Piece), String> {
            let (n, step) = self.0.decode(input).map_err(|e| format!("{e:?}"))?;
            Ok((
                n,
                match step {
                    Step::NeedMore => Piece::NeedMore,
                    Step::Data(r) => Piece::Data(r),
                    Step::Done => Piece::Done,
                },
            ))
        }

        /// Everything `input` holds, data appended to `out`: (consumed, done).
        pub fn drain(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), String> {
            self.0.drain(
                input,
                |d| {
                    out.extend_from_slice(d);
                    Ok(())
                },
                |e| format!("{e:?}"),
            )
        }

        pub fn eof(&mut self) -> Result<(), String> {
            self.0.eof().map_err(|e| format!("{e:?}"))
        }

        /// The trailer fields a complete body passes on (empty when none).
        pub fn trailers(&self) -> Vec<(B, B)> {
            self.0
                .trailers()
                .map(|t| t.iter().map(|(n, v)| (B::from(n), B::from(v))).collect())
                .unwrap_or_default()
        }

        pub fn is_done(&self) -> bool {
            self.0.is_done()
        }
    }

    pub struct Encoder(BodyEncoder);

    impl Encoder {
        pub fn new(framing: Framing) -> Self {
            Encoder(BodyEncoder::new(framing))
        }

        pub fn encode(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
            self.0.encode(data, out).map_err(|e| format!("{e:?}"))
        }

        /// Ends the body, with these trailer fields where the framing can carry them.
        pub fn finish(&mut self, trailers: &[(B, B)], out: &mut Vec<u8>) -> Result<(), String> {
            let mut fields = Headers::default();
            for (n, v) in trailers {
                fields.append(&n.0, &v.0);
            }
            let fields = (!trailers.is_empty()).then_some(&fields);
            self.0.finish(fields, out).map_err(|e| format!("{e:?}"))
        }
    }

    /// One config error as the operator reads it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Problem {
        pub file: String,
        pub path: String,
        pub reason: String,
        pub display: String,
    }

    /// What a loaded config compiled to.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Loaded {
        pub file: String,
        pub summary: String,
        pub listeners: Vec<String>,
        pub clusters: usize,
    }

    /// parse → validate → compile, as a (re)load does.
    pub fn load_config(text: &str, file: &str) -> Result<Loaded, Vec<Problem>> {
        let config = coregate::config::parse(text, file).map_err(|errors| {
            errors
                .0
                .iter()
                .map(|e| Problem {
                    file: e.file.clone(),
                    path: e.path.clone(),
                    reason: e.reason.clone(),
                    display: e.to_string(),
                })
                .collect::<Vec<_>>()
        })?;
        let summary = config.summary();
        let file = config.file.clone();
        let names: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
        let clusters = config.clusters.len();
        let carried = coregate::snapshot::Carried::default();
        let snapshot = coregate::snapshot::Snapshot::compile(config, 1, &carried, None)
            .expect("a validated config compiles");
        for name in &names {
            assert!(
                snapshot.listener(name).is_some(),
                "listener {name:?} missing from the snapshot"
            );
        }
        assert_eq!(snapshot.clusters.len(), clusters);
        Ok(Loaded {
            file,
            summary,
            listeners: names,
            clusters,
        })
    }
}

use api::{Framing, Piece};

/// Header fields allowed by the proxy's default config (`limits.max_headers`).
pub const MAX_HEADERS: usize = 100;
/// The Host the proxy sends for a client that named no authority.
const FALLBACK_HOST: &[u8] = b"fallback.invalid";
/// Appended after a complete message: a decoder that is done must never consume it.
const MARKER: &[u8] = b"\xffNEXT-MESSAGE";
/// Trailer limits: a small one so the limit is hit at every split, and a roomy one.
const TRAILER_LIMITS: [usize; 2] = [16, 1024];
/// The next hop's trailer limit in a relay: re-encoding may lengthen a field line (a space
/// after the colon), so the original limit could reject what it had accepted.
const RELAY_TRAILER_LIMIT: usize = 1 << 20;
/// Trailer fields that every hop may pass on (no framing, routing or hop-by-hop field).
const SAFE_TRAILERS: [(&[u8], &[u8]); 4] = [
    (b"X-Checksum", b"sha256:abc"),
    (b"x-empty", b""),
    (b"X-Obs", b"\x80\xff"),
    (b"X-Spaced", b"a b\tc"),
];
const CONFIG_FILE: &str = "fuzz.yaml";

// ---------------------------------------------------------------- request_head

/// A request head: never panics; rejections carry a 4xx/5xx; "complete" is decided at the same
/// byte whatever was read before (every prefix of an accepted head is incomplete, the head alone
/// parses the same as the head and what follows, and a head read in pieces the way the
/// connection reads it — scanning for the empty line, parsing once it is in — gets the decision
/// it gets in one read); re-encoding and re-parsing keeps method, target, authority, end-to-end
/// fields, TE: trailers and framing; and the encoding is a fixed point.
pub fn request_head(data: &[u8]) {
    assert_read_in_pieces_agrees(data, |b| {
        api::parse_request(b, MAX_HEADERS).map(|r| r.map(|r| r.view))
    });
    let parsed = match api::parse_request(data, MAX_HEADERS) {
        Err(status) => {
            assert_error_status(status, data);
            return;
        }
        Ok(None) => {
            assert_prefixes_incomplete(data, data.len(), |p| {
                matches!(api::parse_request(p, MAX_HEADERS), Ok(None))
            });
            return;
        }
        Ok(Some(parsed)) => parsed,
    };
    let v = &parsed.view;
    let n = v.head_len;
    assert!(n > 0 && n <= data.len(), "head_len {n} of {}", show(data));
    assert_head_end(&data[..n]);
    assert_prefixes_incomplete(data, n, |p| {
        matches!(api::parse_request(p, MAX_HEADERS), Ok(None))
    });
    match api::parse_request(&data[..n], MAX_HEADERS) {
        Ok(Some(alone)) => assert_eq!(&alone.view, v, "the head alone parses differently"),
        _ => panic!("the head alone is not accepted: {}", show(&data[..n])),
    }

    let wire = api::encode_request(&parsed, FALLBACK_HOST);
    // The encoder adds Host and a framing field that the client may not have sent.
    let again = match api::parse_request(&wire, MAX_HEADERS + 2) {
        Ok(Some(again)) => again,
        other => panic!(
            "re-encoded request not accepted ({:?}):\n  input   {}\n  encoded {}",
            other.map(|o| o.map(|r| r.view)),
            show(data),
            show(&wire)
        ),
    };
    let w = &again.view;
    let ctx = || format!("\n  input   {}\n  encoded {}", show(data), show(&wire));
    assert_eq!(w.head_len, wire.len(), "head_len{}", ctx());
    assert_eq!(w.method, v.method, "method{}", ctx());
    assert_eq!(w.target, v.target, "target{}", ctx());
    let authority = if v.authority.0.is_empty() {
        B::from(FALLBACK_HOST)
    } else {
        v.authority.clone()
    };
    assert_eq!(w.authority, authority, "authority{}", ctx());
    assert_same_fields(&w.headers, &v.headers, &ctx);
    assert_eq!(w.te_trailers, v.te_trailers, "TE: trailers{}", ctx());
    assert_eq!(w.framing, v.framing, "framing{}", ctx());
    assert_eq!(
        api::encode_request(&again, FALLBACK_HOST),
        wire,
        "encoding is not a fixed point{}",
        ctx()
    );
}

// ---------------------------------------------------------------- response_head

/// A response head, read both as the answer to a HEAD request and to another method: the same
/// properties as `request_head`, comparing status, reason, fields, framing and the declared
/// length (which a 1xx or 204 never carries on: RFC 9110 §8.6).
pub fn response_head(data: &[u8]) {
    for head_request in [false, true] {
        response_head_for(data, head_request);
    }
}

fn response_head_for(data: &[u8], head_request: bool) {
    let parse = |b: &[u8], max| api::parse_response(b, max, head_request);
    assert_read_in_pieces_agrees(data, |b| parse(b, MAX_HEADERS).map(|r| r.map(|r| r.view)));
    let parsed = match parse(data, MAX_HEADERS) {
        Err(status) => {
            assert_error_status(status, data);
            return;
        }
        Ok(None) => {
            assert_prefixes_incomplete(data, data.len(), |p| {
                matches!(parse(p, MAX_HEADERS), Ok(None))
            });
            return;
        }
        Ok(Some(parsed)) => parsed,
    };
    let v = &parsed.view;
    let n = v.head_len;
    assert!(n > 0 && n <= data.len(), "head_len {n} of {}", show(data));
    assert_head_end(&data[..n]);
    assert_prefixes_incomplete(data, n, |p| matches!(parse(p, MAX_HEADERS), Ok(None)));
    match parse(&data[..n], MAX_HEADERS) {
        Ok(Some(alone)) => assert_eq!(&alone.view, v, "the head alone parses differently"),
        _ => panic!("the head alone is not accepted: {}", show(&data[..n])),
    }

    let wire = api::encode_response(&parsed);
    let again = match parse(&wire, MAX_HEADERS + 1) {
        Ok(Some(again)) => again,
        other => panic!(
            "re-encoded response not accepted ({:?}), head_request {head_request}:\n  input   {}\n  encoded {}",
            other.map(|o| o.map(|r| r.view)),
            show(data),
            show(&wire)
        ),
    };
    let w = &again.view;
    let ctx = || {
        format!(
            " (head_request {head_request})\n  input   {}\n  encoded {}",
            show(data),
            show(&wire)
        )
    };
    assert_eq!(w.head_len, wire.len(), "head_len{}", ctx());
    assert_eq!(w.status, v.status, "status{}", ctx());
    if !v.reason.0.is_empty() {
        assert_eq!(w.reason, v.reason, "reason{}", ctx());
    }
    assert_same_fields(&w.headers, &v.headers, &ctx);
    assert_eq!(w.framing, v.framing, "framing{}", ctx());
    let declared = if v.status == 204 || v.status < 200 {
        None
    } else {
        v.declared_length
    };
    assert_eq!(w.declared_length, declared, "declared length{}", ctx());
    assert_eq!(
        api::encode_response(&again),
        wire,
        "encoding is not a fixed point{}",
        ctx()
    );
}

// ---------------------------------------------------------------- chunked_splits

/// A chunked body decoded in one piece, one byte at a time, cut at every position (or many) and
/// at pseudo-random cuts derived from the input gives the same data, the same consumed count
/// and the same end (done with the same trailers, needs more, or the same error); once done,
/// bytes after the body are never consumed, and a decision (done or error) never changes when
/// more bytes follow. A complete body relayed — its data and the trailers the decoder passes on
/// encoded again — decodes to the same data and trailers.
pub fn chunked_splits(data: &[u8]) {
    let mut rng = Rng::new(hash(data));
    for max_trailer in TRAILER_LIMITS {
        let whole = feed(Framing::Chunked, max_trailer, data, &[]);
        let check = |cuts: &[usize], how: &str| {
            let got = feed(Framing::Chunked, max_trailer, data, cuts);
            assert_eq!(
                got,
                whole,
                "{how} {cuts:?} disagrees with one piece (max trailer {max_trailer}): {}",
                show(data)
            );
        };
        let drained = feed_drain(Framing::Chunked, max_trailer, data, &[]);
        assert_eq!(
            drained,
            whole,
            "drain() disagrees with decode(): {}",
            show(data)
        );
        let bytes: Vec<usize> = (1..data.len()).collect();
        check(&bytes, "one byte at a time");
        for cut in sample_positions(data.len(), 48) {
            check(&[cut], "cut at");
        }
        for _ in 0..4 {
            let cuts = random_cuts(&mut rng, data.len(), 6);
            check(&cuts, "cuts at");
            let drained = feed_drain(Framing::Chunked, max_trailer, data, &cuts);
            assert_eq!(
                drained,
                whole,
                "drain() with cuts {cuts:?} disagrees: {}",
                show(data)
            );
        }
        // What follows the input cannot change a decision already taken.
        let mut longer = data.to_vec();
        longer.extend_from_slice(MARKER);
        let after = feed(Framing::Chunked, max_trailer, &longer, &[]);
        match &whole {
            Outcome::Done { .. } | Outcome::Failed { .. } => assert_eq!(
                after,
                whole,
                "bytes after the input changed the outcome: {}",
                show(data)
            ),
            Outcome::NeedMore { .. } => {}
        }
        if let Outcome::Done {
            data: body,
            trailers,
            ..
        } = &whole
        {
            let wire = encode_body(Framing::Chunked, &body.0, trailers, &mut rng);
            assert_eq!(
                feed(Framing::Chunked, RELAY_TRAILER_LIMIT, &wire, &[]),
                Outcome::Done {
                    data: body.clone(),
                    consumed: wire.len(),
                    trailers: trailers.clone(),
                },
                "relayed as {} it decodes differently: {}",
                show(&wire),
                show(data)
            );
        }
    }
}

/// `body` framed by a fresh encoder in pseudo-random pieces, ended with `trailers`.
fn encode_body(framing: Framing, body: &[u8], trailers: &[(B, B)], rng: &mut Rng) -> Vec<u8> {
    let mut enc = api::Encoder::new(framing);
    let mut wire = Vec::new();
    let mut start = 0;
    for end in random_cuts(rng, body.len(), 8)
        .into_iter()
        .chain([body.len()])
    {
        enc.encode(&body[start..end], &mut wire)
            .unwrap_or_else(|e| panic!("encode {framing:?}: {e}: {}", show(body)));
        start = end;
    }
    enc.finish(trailers, &mut wire)
        .unwrap_or_else(|e| panic!("finish {framing:?}: {e}: {}", show(body)));
    wire
}

// ---------------------------------------------------------------- body_round_trip

/// Arbitrary data, framed by the encoder in arbitrary pieces under each framing, decodes (in
/// arbitrary pieces) to the same data — and for chunked the same trailers; other framings drop
/// them — ending exactly at the end of the message: bytes after it are left alone; a message
/// cut short is never complete. Input: one byte picks the framing and the trailers, the rest is
/// the body.
pub fn body_round_trip(data: &[u8]) {
    let (selector, body) = match data.split_first() {
        Some((s, rest)) => (*s, rest),
        None => (0, data),
    };
    let mut rng = Rng::new(hash(data));
    let framing = match selector % 4 {
        0 => Framing::Chunked,
        1 => Framing::Length(body.len() as u64),
        2 => Framing::Close,
        _ => Framing::None,
    };
    let trailers: Vec<(B, B)> = SAFE_TRAILERS
        .iter()
        .take(usize::from(selector / 4) % (SAFE_TRAILERS.len() + 1))
        .map(|&(n, v)| (B::from(n), B::from(v)))
        .collect();
    let ctx = || {
        format!(
            "{framing:?}, {} trailers, body {}",
            trailers.len(),
            show(body)
        )
    };

    let mut enc = api::Encoder::new(framing);
    let mut wire = Vec::new();
    if framing == Framing::None {
        let refused = enc.encode(body, &mut wire);
        assert_eq!(refused.is_err(), !body.is_empty(), "{}", ctx());
        assert!(wire.is_empty(), "a refused body was written: {}", ctx());
        enc.finish(&trailers, &mut wire).expect("finish");
        assert!(wire.is_empty(), "{}", ctx());
        let mut dec = api::Decoder::new(framing, 1024);
        assert!(dec.is_done(), "no body: done from the start");
        assert_eq!(dec.decode(MARKER), Ok((0, Piece::Done)), "{}", ctx());
        return;
    }
    let pieces = random_cuts(&mut rng, body.len(), 8);
    let mut start = 0;
    for end in pieces.iter().copied().chain([body.len()]) {
        enc.encode(&body[start..end], &mut wire)
            .unwrap_or_else(|e| panic!("encode: {e} ({})", ctx()));
        start = end;
    }
    if let Framing::Length(_) = framing {
        let before = wire.len();
        assert!(
            enc.encode(b"x", &mut wire).is_err(),
            "Length: data past the length accepted"
        );
        assert_eq!(wire.len(), before, "Length: a refused piece was written");
        let mut short = api::Encoder::new(Framing::Length(body.len() as u64 + 1));
        short.encode(body, &mut Vec::new()).expect("encode");
        assert!(
            short.finish(&[], &mut Vec::new()).is_err(),
            "Length: a short body finished"
        );
    }
    enc.finish(&trailers, &mut wire)
        .unwrap_or_else(|e| panic!("finish: {e} ({})", ctx()));
    let ctx = || format!("{}, wire {}", ctx(), show(&wire));

    if framing == Framing::Close {
        for cuts in [Vec::new(), random_cuts(&mut rng, wire.len(), 8)] {
            let got = feed(framing, 1024, &wire, &cuts);
            assert_eq!(
                got,
                Outcome::NeedMore {
                    data: B::from(body)
                },
                "{}",
                ctx()
            );
        }
        let mut dec = api::Decoder::new(framing, 1024);
        let mut out = Vec::new();
        let (n, done) = dec.drain(&wire, &mut out).expect("drain");
        assert_eq!(
            (n, done, out.as_slice()),
            (wire.len(), false, body),
            "{}",
            ctx()
        );
        dec.eof().expect("EOF ends a close-delimited body");
        assert!(dec.is_done(), "{}", ctx());
        return;
    }

    // Chunked and Length end on their own, exactly at the end of the wire.
    let mut longer = wire.clone();
    longer.extend_from_slice(MARKER);
    let expected = Outcome::Done {
        data: B::from(body),
        consumed: wire.len(),
        trailers: if framing == Framing::Chunked {
            trailers.clone()
        } else {
            Vec::new()
        },
    };
    for cuts in [
        Vec::new(),
        random_cuts(&mut rng, longer.len(), 8),
        random_cuts(&mut rng, longer.len(), 8),
    ] {
        assert_eq!(
            feed(framing, 1024, &longer, &cuts),
            expected,
            "cuts {cuts:?}: {}",
            ctx()
        );
        assert_eq!(
            feed_drain(framing, 1024, &longer, &cuts),
            expected,
            "drain, cuts {cuts:?}: {}",
            ctx()
        );
    }
    // A message cut short is never complete, and EOF then is an error.
    if let Some(cut) = wire.len().checked_sub(1) {
        let mut dec = api::Decoder::new(framing, 1024);
        let mut out = Vec::new();
        let (n, done) = dec.drain(&wire[..cut], &mut out).expect("drain");
        assert!(!done && n == cut, "a truncated message ended: {}", ctx());
        assert!(
            dec.eof().is_err(),
            "EOF after a truncated message is not an error: {}",
            ctx()
        );
    }
}

// ---------------------------------------------------------------- config_load

/// Any text through parse → validate → compile never panics; a rejection has at least one
/// error, each naming the file and giving a reason; an accepted config compiles with every
/// listener; loading is deterministic.
pub fn config_load(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let first = api::load_config(&text, CONFIG_FILE);
    match &first {
        Ok(loaded) => {
            assert_eq!(loaded.file, CONFIG_FILE);
            assert!(loaded.summary.contains(CONFIG_FILE), "{}", loaded.summary);
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "rejected without an error: {text:?}");
            for p in problems {
                assert_eq!(p.file, CONFIG_FILE, "{p:?} for {text:?}");
                assert!(!p.reason.trim().is_empty(), "{p:?} for {text:?}");
                assert!(p.display.starts_with(CONFIG_FILE), "{p:?}");
            }
        }
    }
    assert_eq!(
        api::load_config(&text, CONFIG_FILE),
        first,
        "not deterministic"
    );
}

// ---------------------------------------------------------------- shared checks

fn assert_error_status(status: Option<u16>, data: &[u8]) {
    assert!(
        status.is_some_and(|s| (400..=599).contains(&s)),
        "rejection without a 4xx/5xx status ({status:?}): {}",
        show(data)
    );
}

/// What a connection decides about a head.
#[derive(Debug, PartialEq, Eq)]
enum Decision<V> {
    Complete(V),
    Rejected(Option<u16>),
    Incomplete,
}

impl<V> From<Result<Option<V>, Option<u16>>> for Decision<V> {
    fn from(r: Result<Option<V>, Option<u16>>) -> Self {
        match r {
            Ok(Some(v)) => Decision::Complete(v),
            Ok(None) => Decision::Incomplete,
            Err(status) => Decision::Rejected(status),
        }
    }
}

/// The decision for `data` read in pieces ending at `cuts` then at its end, as conn.rs and
/// upstream.rs read a head: scan the new bytes for the empty line (from two bytes back, as a
/// line end may straddle reads), parse everything read so far once one is in, and if the parser
/// still wants more (only empty lines so far) scan on after it.
fn read_in_pieces<V>(
    data: &[u8],
    cuts: &[usize],
    parse: &impl Fn(&[u8]) -> Result<Option<V>, Option<u16>>,
) -> Decision<V> {
    let mut scanned: usize = 0;
    for end in cuts.iter().copied().chain([data.len()]) {
        let buf = &data[..end];
        match api::head_end(buf, scanned.saturating_sub(2)) {
            Some(len) => match parse(buf) {
                Ok(None) => scanned = len,
                decided => return decided.into(),
            },
            None => scanned = buf.len(),
        }
    }
    Decision::Incomplete
}

/// Reading a head in pieces gives the decision one read gives: the same head, the same
/// rejection, or — only for a head the parser rejects before its end — still incomplete (the
/// rejection comes once the empty line is in). A head accepted in one read but not in pieces
/// would wait for bytes the peer never sends.
fn assert_read_in_pieces_agrees<V: PartialEq + fmt::Debug>(
    data: &[u8],
    parse: impl Fn(&[u8]) -> Result<Option<V>, Option<u16>>,
) {
    let one_read: Decision<V> = parse(data).into();
    let mut rng = Rng::new(hash(data));
    let mut cut_sets = vec![Vec::new()];
    if data.len() <= 512 {
        cut_sets.push((1..data.len()).collect());
    }
    for cut in sample_positions(data.len(), 16) {
        cut_sets.push(vec![cut]);
    }
    for _ in 0..3 {
        cut_sets.push(random_cuts(&mut rng, data.len(), 8));
    }
    for cuts in cut_sets {
        let pieces = read_in_pieces(data, &cuts, &parse);
        let agree = match (&one_read, &pieces) {
            (Decision::Rejected(_), Decision::Incomplete) => true,
            (a, b) => a == b,
        };
        assert!(
            agree,
            "read cut at {cuts:?}: {pieces:?}, in one read: {one_read:?}, for {}",
            show(data)
        );
    }
}

/// The complete head ends with its empty line. Line ends are CRLF or, as httparse allows (RFC
/// 9112 §2.2), a bare LF, mixed within one head: "\r\n\r\n", "\n\n", "\n\r\n", "\r\n\n".
fn assert_head_end(head: &[u8]) {
    assert!(
        head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"),
        "the head does not end with an empty line: {}",
        show(head)
    );
}

/// Every prefix of `data[..n]` (all of them for short heads, a sample of long ones) is
/// incomplete.
fn assert_prefixes_incomplete(data: &[u8], n: usize, incomplete: impl Fn(&[u8]) -> bool) {
    for k in sample_positions(n, 256) {
        if k < n {
            assert!(
                incomplete(&data[..k]),
                "prefix of {k} bytes is not incomplete: {}",
                show(&data[..n])
            );
        }
    }
}

/// Two field lists are the same: names case-insensitively, values exactly, order kept.
fn assert_same_fields(got: &[(B, B)], want: &[(B, B)], ctx: &dyn Fn() -> String) {
    let norm = |fields: &[(B, B)]| -> Vec<(Vec<u8>, B)> {
        fields
            .iter()
            .map(|(n, v)| (n.0.to_ascii_lowercase(), v.clone()))
            .collect()
    };
    assert_eq!(
        norm(got),
        norm(want),
        "header fields differ after re-encoding{}",
        ctx()
    );
}

/// How a body decode ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done {
        data: B,
        consumed: usize,
        trailers: Vec<(B, B)>,
    },
    NeedMore {
        data: B,
    },
    Failed {
        data: B,
        err: String,
    },
}

/// Feeds `input` cut at `cuts` (sorted) the way the proxy does — decode on each piece until it
/// asks for more — checking the step contract on the way.
pub fn feed(framing: Framing, max_trailer: usize, input: &[u8], cuts: &[usize]) -> Outcome {
    let mut dec = api::Decoder::new(framing, max_trailer);
    let mut data = Vec::new();
    let mut start = 0;
    for end in cuts.iter().copied().chain([input.len()]) {
        let piece = &input[start..end];
        let mut off = 0;
        loop {
            let rest = &piece[off..];
            match dec.decode(rest) {
                Err(err) => {
                    assert!(!dec.is_done(), "done and failed");
                    assert_eq!(
                        dec.decode(b"0\r\n\r\n"),
                        Err(err.clone()),
                        "a failed decoder recovered"
                    );
                    return Outcome::Failed { data: B(data), err };
                }
                Ok((n, Piece::NeedMore)) => {
                    assert_eq!(n, rest.len(), "NeedMore must consume everything");
                    assert!(!dec.is_done(), "NeedMore from a done decoder");
                    break;
                }
                Ok((n, Piece::Data(r))) => {
                    assert!(!r.is_empty(), "empty data range");
                    assert!(
                        r.end <= n && n <= rest.len(),
                        "range {r:?} consumed {n} of {}",
                        rest.len()
                    );
                    data.extend_from_slice(&rest[r]);
                    off += n;
                }
                Ok((n, Piece::Done)) => {
                    assert!(n <= rest.len());
                    assert!(dec.is_done(), "Done but not is_done()");
                    assert_eq!(dec.decode(MARKER), Ok((0, Piece::Done)), "Done is final");
                    assert_eq!(dec.eof(), Ok(()), "EOF after Done");
                    return Outcome::Done {
                        data: B(data),
                        consumed: start + off + n,
                        trailers: dec.trailers(),
                    };
                }
            }
        }
        start = end;
    }
    Outcome::NeedMore { data: B(data) }
}

/// As `feed`, through `drain` (what the proxy's relay loop calls).
pub fn feed_drain(framing: Framing, max_trailer: usize, input: &[u8], cuts: &[usize]) -> Outcome {
    let mut dec = api::Decoder::new(framing, max_trailer);
    let mut data = Vec::new();
    let mut start = 0;
    for end in cuts.iter().copied().chain([input.len()]) {
        let piece = &input[start..end];
        match dec.drain(piece, &mut data) {
            Err(err) => {
                return Outcome::Failed { data: B(data), err };
            }
            Ok((n, true)) => {
                return Outcome::Done {
                    data: B(data),
                    consumed: start + n,
                    trailers: dec.trailers(),
                };
            }
            Ok((n, false)) => assert_eq!(n, piece.len(), "drain: not done but bytes left"),
        }
        start = end;
    }
    Outcome::NeedMore { data: B(data) }
}

/// All positions 0..=len when len <= limit; otherwise the first and last limit/2 and a stride.
fn sample_positions(len: usize, limit: usize) -> Vec<usize> {
    if len <= limit {
        return (0..=len).collect();
    }
    let half = limit / 2;
    let mut v: Vec<usize> = (0..half).collect();
    let stride = (len / half).max(1);
    v.extend((half..len - half).step_by(stride));
    v.extend(len - half..=len);
    v
}

/// Up to `max` sorted cut positions in 0..=len (duplicates allowed: empty pieces).
fn random_cuts(rng: &mut Rng, len: usize, max: usize) -> Vec<usize> {
    let count = rng.below(max + 1);
    let mut cuts: Vec<usize> = (0..count).map(|_| rng.below(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

/// splitmix64: a deterministic generator seeded by the input, so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// FNV-1a.
fn hash(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Bytes that print as an escaped string.
#[derive(Clone, PartialEq, Eq)]
pub struct B(pub Vec<u8>);

impl From<&[u8]> for B {
    fn from(b: &[u8]) -> B {
        B(b.to_vec())
    }
}

impl fmt::Debug for B {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// Bytes as an escaped string for messages.
pub fn show(b: &[u8]) -> String {
    format!("b\"{}\" ({} bytes)", b.escape_ascii(), b.len())
}
