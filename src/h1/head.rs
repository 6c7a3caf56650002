//! HTTP/1 heads: parse a request or response head with httparse into the neutral head, decide its
//! framing strictly (the request-smuggling defences live here), and encode heads for the wire.

use std::mem::MaybeUninit;

use httparse::{Header, ParserConfig, Status};

use super::body::Framing;
use crate::error::{ErrorKind, ProxyError};
use crate::message::{Method, RequestHead, ResponseHead, Version};

/// Upper bound of the configurable header count; the parse buffer lives on the stack.
pub const MAX_HEADERS_CAP: usize = 1024;

/// Connection options a message may name (RFC 9110 §7.6.1); more is an error, not a truncation.
const MAX_CONNECTION_OPTIONS: usize = 16;

/// What a codec needs to know about a parsed head, request or response, beyond the neutral head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// Bytes of the head, including the empty line.
    pub head_len: usize,
    /// How the body that follows is delimited.
    pub framing: Framing,
    /// The sender allows the connection to stay open after this message.
    pub keep_alive: bool,
    /// A request whose client waits for 100 Continue before sending its body (never set for a
    /// response, nor for a request without a body).
    pub expect_continue: bool,
}

/// Where the empty line that ends a head is, searching from `from` (a position the caller
/// already scanned, minus the two bytes a line end may span): the head's length, or None while
/// it is incomplete. A head that arrives in many small reads is scanned once in all, and parsed
/// once, instead of being parsed from its start after every read.
pub fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.min(buf.len());
    memchr::memchr_iter(b'\n', buf.get(start..)?)
        .map(|i| start + i)
        .find_map(|lf| match buf.get(lf + 1..lf + 3) {
            Some([b'\n', _]) => Some(lf + 2),
            Some([b'\r', b'\n']) => Some(lf + 3),
            None if buf.get(lf + 1) == Some(&b'\n') => Some(lf + 2),
            _ => None,
        })
}

/// The framing- and connection-related fields of a head, collected in one pass.
#[derive(Default)]
struct FramingFields<'b> {
    content_length: Option<u64>,
    chunked: bool,
    other_coding: bool,
    close: bool,
    keep_alive: bool,
    options: [&'b [u8]; MAX_CONNECTION_OPTIONS],
    option_count: usize,
}

/// Why a set of framing headers is unacceptable.
enum FramingError {
    Invalid(&'static str),
    UnsupportedCoding,
}

/// Whether a field is hop-by-hop or framing: the codec regenerates or drops it (RFC 9110 §7.6.1,
/// RFC 9112 §6).
fn is_hop_by_hop(name: &[u8]) -> bool {
    // Dispatch on length first: one compare per field instead of eight.
    let candidates: &[&[u8]] = match name.len() {
        2 => &[b"te"],
        7 => &[b"trailer", b"upgrade"],
        10 => &[b"connection", b"keep-alive"],
        14 => &[b"content-length"],
        16 => &[b"proxy-connection"],
        17 => &[b"transfer-encoding"],
        _ => return false,
    };
    candidates.iter().any(|h| h.eq_ignore_ascii_case(name))
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// Comma-separated list elements, trimmed, empty ones skipped (RFC 9110 §5.6.1).
fn list(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|e| !e.is_empty())
}

fn parse_content_length(v: &[u8]) -> Option<u64> {
    // At most 19 digits so that the value always fits in u64 without overflow checks tricks.
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

impl<'b> FramingFields<'b> {
    fn collect(headers: &[Header<'b>]) -> Result<Self, FramingError> {
        let mut f = FramingFields::default();
        for h in headers {
            let name = h.name.as_bytes();
            // Most fields are none of the three: skip them on their length alone.
            if !matches!(name.len(), 10 | 14 | 17) {
                continue;
            }
            let value = trim(h.value);
            if name.eq_ignore_ascii_case(b"content-length") {
                for element in value.split(|&b| b == b',').map(trim) {
                    let n = parse_content_length(element)
                        .ok_or(FramingError::Invalid("invalid Content-Length\n"))?;
                    match f.content_length {
                        Some(prev) if prev != n => {
                            return Err(FramingError::Invalid(
                                "conflicting Content-Length values\n",
                            ));
                        }
                        _ => f.content_length = Some(n),
                    }
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                for coding in list(value) {
                    // Chunked must be the final coding, applied once (RFC 9112 §6.1).
                    if f.chunked {
                        return Err(FramingError::Invalid(
                            "chunked must be the last transfer coding\n",
                        ));
                    }
                    if coding.eq_ignore_ascii_case(b"chunked") {
                        f.chunked = true;
                    } else {
                        f.other_coding = true;
                    }
                }
                if !f.chunked {
                    return Err(FramingError::Invalid(
                        "chunked must be the last transfer coding\n",
                    ));
                }
            } else if name.eq_ignore_ascii_case(b"connection") {
                for option in list(value) {
                    if option.eq_ignore_ascii_case(b"close") {
                        f.close = true;
                    } else if option.eq_ignore_ascii_case(b"keep-alive") {
                        f.keep_alive = true;
                    } else {
                        let slot = f
                            .options
                            .get_mut(f.option_count)
                            .ok_or(FramingError::Invalid("too many Connection options\n"))?;
                        *slot = option;
                        f.option_count += 1;
                    }
                }
            }
        }
        if f.chunked && f.content_length.is_some() {
            return Err(FramingError::Invalid(
                "both Content-Length and Transfer-Encoding\n",
            ));
        }
        if f.other_coding {
            return Err(FramingError::UnsupportedCoding);
        }
        Ok(f)
    }

    /// Whether the sender allows the connection to persist (RFC 9112 §9.3): 1.1 unless it says
    /// close, 1.0 only when it asks for keep-alive.
    fn keeps_alive(&self, version: Version) -> bool {
        match version {
            Version::HTTP_10 => self.keep_alive && !self.close,
            _ => !self.close,
        }
    }

    fn names_option(&self, name: &[u8]) -> bool {
        self.options[..self.option_count]
            .iter()
            .any(|o| o.eq_ignore_ascii_case(name))
    }

    /// Whether `name` travels end to end.
    fn is_end_to_end(&self, name: &[u8]) -> bool {
        !is_hop_by_hop(name) && !self.names_option(name)
    }
}

fn version(v: Option<u8>) -> Version {
    match v {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    }
}

/// Whether a Host value or absolute-form authority is `uri-host [ ":" port ]` (RFC 9110 §7.2,
/// RFC 3986 §3.2.2-3.2.3): an IPv6 literal in brackets, or a non-empty reg-name / IPv4 address
/// (unreserved, sub-delims, percent-encodings), then an optional port of digits that fits in 16
/// bits. No userinfo. A Host that is not (`bill.example.com:evil`, `[::1`) is a 400: it would
/// route as one name and be forwarded as another.
pub fn is_authority(v: &[u8]) -> bool {
    let port = if let Some(rest) = v.strip_prefix(b"[") {
        let Some(close) = memchr::memchr(b']', rest) else {
            return false;
        };
        let literal = std::str::from_utf8(&rest[..close]).ok();
        if literal
            .and_then(|l| l.parse::<std::net::Ipv6Addr>().ok())
            .is_none()
        {
            return false;
        }
        match &rest[close + 1..] {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return false,
        }
    } else {
        let (host, port) = match memchr::memchr(b':', v) {
            Some(colon) => (&v[..colon], Some(&v[colon + 1..])),
            None => (v, None),
        };
        if host.is_empty() || !is_reg_name(host) {
            return false;
        }
        port
    };
    // port = *DIGIT; an empty port is allowed and means the default.
    port.is_none_or(|p| {
        p.len() <= 5
            && p.iter().all(u8::is_ascii_digit)
            && p.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 65535
    })
}

/// reg-name = *( unreserved / pct-encoded / sub-delims ) (RFC 3986 §3.2.2); IPv4 addresses
/// are reg-names too.
fn is_reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = host.get(i) {
        let ok = match b {
            b'%' => {
                let hex = |j: usize| host.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return false;
                }
                i += 2;
                true
            }
            _ => {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'-' | b'.'
                            | b'_'
                            | b'~'
                            | b'!'
                            | b'$'
                            | b'&'
                            | b'\''
                            | b'('
                            | b')'
                            | b'*'
                            | b'+'
                            | b','
                            | b';'
                            | b'='
                    )
            }
        };
        if !ok {
            return false;
        }
        i += 1;
    }
    true
}

/// Splits an absolute-form target (RFC 9112 §3.2.2) into authority and origin-form target.
fn split_absolute(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let scheme_end = memchr::memmem::find(target, b"://")?;
    let scheme = &target[..scheme_end];
    if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    let path_start = memchr::memchr2(b'/', b'?', rest).unwrap_or(rest.len());
    let authority = &rest[..path_start];
    if authority.is_empty() {
        return None;
    }
    Some((authority, &rest[path_start..]))
}

/// Parses a request head from `buf`. Ok(None): the head is incomplete, read more.
pub fn parse_request(
    buf: &[u8],
    max_headers: usize,
    head: &mut RequestHead,
) -> Result<Option<Parsed>, ProxyError> {
    let mut storage = [const { MaybeUninit::<Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let slots = &mut storage[..max_headers.clamp(1, MAX_HEADERS_CAP)];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(Status::Complete(n)) => n,
        Ok(Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ProxyError::downstream(ErrorKind::HeadTooLarge));
        }
        Err(httparse::Error::Version) => return parse_other_version(buf, max_headers, head),
        Err(_) => return Err(ProxyError::bad_request("malformed request head\n")),
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(ProxyError::bad_request("malformed request line\n"));
    };
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| ProxyError::bad_request("invalid method\n"))?;
    if method == Method::CONNECT {
        return Err(ProxyError::downstream(ErrorKind::NotImplemented(
            "CONNECT is not supported\n",
        )));
    }
    let version = version(req.version);
    let headers: &[Header<'_>] = req.headers;
    let fields = FramingFields::collect(headers).map_err(|e| match e {
        FramingError::Invalid(why) => ProxyError::bad_request(why),
        FramingError::UnsupportedCoding => ProxyError::downstream(ErrorKind::NotImplemented(
            "only the chunked transfer coding is supported\n",
        )),
    })?;
    // A 1.0 message with Transfer-Encoding has framing a 1.0 peer cannot mean (RFC 9112 §6.1).
    if fields.chunked && version == Version::HTTP_10 {
        return Err(ProxyError::bad_request(
            "Transfer-Encoding in an HTTP/1.0 request\n",
        ));
    }

    head.clear();
    let options = method == Method::OPTIONS;
    head.method = method;
    head.version = version;
    let target = target.as_bytes();
    let mut authority_from_target = false;
    if target.first() == Some(&b'/') || (target == b"*" && options) {
        head.set_target(target);
    } else if let Some((authority, path)) = split_absolute(target) {
        if !is_authority(authority) {
            return Err(ProxyError::bad_request("invalid authority in target\n"));
        }
        head.set_authority(authority);
        authority_from_target = true;
        if path.first() == Some(&b'/') {
            head.set_target(path);
        } else {
            // "http://h" and "http://h?q" mean the root path (RFC 9112 §3.2.1).
            head.set_target_parts(b"/", path);
        }
    } else {
        return Err(ProxyError::bad_request("invalid request target\n"));
    }

    let mut expect_continue = false;
    let mut hosts = 0;
    for h in headers {
        let name = h.name.as_bytes();
        let value = trim(h.value);
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if hosts > 1 {
                return Err(ProxyError::bad_request("more than one Host header\n"));
            }
            if !is_authority(value) {
                return Err(ProxyError::bad_request("invalid Host header\n"));
            }
            if !authority_from_target {
                head.set_authority(value);
            }
        } else if name.eq_ignore_ascii_case(b"te") {
            // Hop-by-hop; what matters end to end is whether trailers may come back.
            head.te_trailers |= list(value).any(|t| {
                let coding = t.split(|&b| b == b';').next().unwrap_or_default();
                coding.trim_ascii().eq_ignore_ascii_case(b"trailers")
            });
        } else if name.eq_ignore_ascii_case(b"expect") {
            if !value.eq_ignore_ascii_case(b"100-continue") {
                return Err(ProxyError::downstream(ErrorKind::ExpectationFailed));
            }
            // A 1.0 client cannot understand 100 Continue (RFC 9110 §10.1.1).
            expect_continue = version == Version::HTTP_11;
        } else if fields.is_end_to_end(name) {
            head.headers.append(name, value);
        }
    }
    // Even with an absolute-form target, an HTTP/1.1 request without Host is a 400 (RFC 9112
    // §3.2): a client that omits it is not speaking HTTP/1.1.
    if hosts == 0 && version == Version::HTTP_11 {
        return Err(ProxyError::bad_request("missing Host header\n"));
    }

    // A request without Content-Length or Transfer-Encoding has no body (RFC 9112 §6.3); an
    // explicit `Content-Length: 0` stays explicit toward the upstream (some answer 411 without).
    let framing = if fields.chunked {
        Framing::Chunked
    } else {
        fields.content_length.map_or(Framing::None, Framing::Length)
    };
    head.body = framing.length();
    Ok(Some(Parsed {
        head_len,
        framing,
        keep_alive: fields.keeps_alive(version),
        expect_continue: expect_continue && !head.body.is_empty(),
    }))
}

/// A request line whose version httparse does not take (it knows 1.0 and 1.1). HTTP/1.x with a
/// higher minor version is served as HTTP/1.1, the highest minor this recipient implements
/// (RFC 9110 §2.5); another major version (the HTTP/2 preface, say) is 505 on an HTTP/1
/// connection; anything else is malformed. Rare: the head is copied once to be parsed as 1.1.
fn parse_other_version(
    buf: &[u8],
    max_headers: usize,
    head: &mut RequestHead,
) -> Result<Option<Parsed>, ProxyError> {
    let malformed = || ProxyError::bad_request("malformed request line\n");
    // The line is not complete yet: the version may still turn out valid.
    let Some(line_end) = memchr::memchr(b'\n', buf) else {
        return Ok(None);
    };
    let line = &buf[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // request-line = method SP request-target SP HTTP-version (RFC 9112 §3): exactly two
    // spaces, the version last.
    let mut spaces = memchr::memchr_iter(b' ', line);
    let (Some(_), Some(at), None) = (spaces.next(), spaces.next(), spaces.next()) else {
        return Err(malformed());
    };
    let at = at + 1;
    match line.get(at..) {
        // HTTP-version = "HTTP" "/" DIGIT "." DIGIT (RFC 9112 §2.3)
        Some([b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor])
            if minor.is_ascii_digit() && *minor > b'1' =>
        {
            let mut patched = buf.to_vec();
            patched[at + 7] = b'1';
            match parse_request(&patched, max_headers, head) {
                // Whatever else is wrong with it, it is not the version any more.
                Err(e) if e.kind == ErrorKind::VersionNotSupported => Err(malformed()),
                other => other,
            }
        }
        Some([b'H', b'T', b'T', b'P', b'/', major, b'.', minor])
            if major.is_ascii_digit() && minor.is_ascii_digit() && *major != b'1' =>
        {
            Err(ProxyError::downstream(ErrorKind::VersionNotSupported))
        }
        _ => Err(malformed()),
    }
}

/// Parses a response head from `buf`. Ok(None): incomplete. `head_request` tells whether the
/// request was HEAD (its response never has a body, whatever its headers say).
pub fn parse_response(
    buf: &[u8],
    max_headers: usize,
    head_request: bool,
    head: &mut ResponseHead,
) -> Result<Option<Parsed>, ProxyError> {
    let mut storage = [const { MaybeUninit::<Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let slots = &mut storage[..max_headers.clamp(1, MAX_HEADERS_CAP)];
    let mut res = httparse::Response::new(&mut []);
    let head_len =
        match ParserConfig::default().parse_response_with_uninit_headers(&mut res, buf, slots) {
            Ok(Status::Complete(n)) => n,
            Ok(Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ProxyError::bad_response(
                    "upstream response head too large\n",
                ));
            }
            Err(_) => {
                return Err(ProxyError::bad_response(
                    "malformed upstream response head\n",
                ));
            }
        };
    let Some(status) = res.code else {
        return Err(ProxyError::bad_response("malformed upstream status line\n"));
    };
    if !(100..=999).contains(&status) {
        return Err(ProxyError::bad_response("invalid upstream status code\n"));
    }
    let version = version(res.version);
    let headers: &[Header<'_>] = res.headers;
    let fields = FramingFields::collect(headers).map_err(|e| match e {
        FramingError::Invalid(_) => {
            ProxyError::bad_response("ambiguous framing in upstream response\n")
        }
        FramingError::UnsupportedCoding => {
            ProxyError::bad_response("unsupported transfer coding in upstream response\n")
        }
    })?;
    if fields.chunked && version == Version::HTTP_10 {
        return Err(ProxyError::bad_response(
            "Transfer-Encoding in an HTTP/1.0 response\n",
        ));
    }
    head.clear();
    head.status = status;
    head.set_reason(res.reason.unwrap_or_default().as_bytes());
    for h in headers {
        let name = h.name.as_bytes();
        if fields.is_end_to_end(name) {
            head.headers.append(name, trim(h.value));
        }
    }
    // RFC 9112 §6.3: HEAD responses, 1xx, 204 and 304 end at the head.
    let bodiless = head_request || status < 200 || status == 204 || status == 304;
    let framing = if bodiless {
        Framing::None
    } else if fields.chunked {
        Framing::Chunked
    } else {
        fields
            .content_length
            .map_or(Framing::Close, Framing::Length)
    };
    head.body = framing.length();
    head.declared_length = fields.content_length;
    Ok(Some(Parsed {
        head_len,
        framing,
        keep_alive: framing != Framing::Close && fields.keeps_alive(version),
        expect_continue: false,
    }))
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Encodes a request head for an HTTP/1.1 upstream. `fallback_host` is sent as Host when the
/// client gave no authority (an HTTP/1.0 client without Host).
pub fn encode_request(
    head: &RequestHead,
    fallback_host: &[u8],
    framing: Framing,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let authority = head.authority();
    put_field(
        out,
        b"host",
        if authority.is_empty() {
            fallback_host
        } else {
            authority
        },
    );
    for (name, value) in head.headers.iter() {
        put_field(out, name, value);
    }
    if head.te_trailers {
        out.extend_from_slice(b"te: trailers\r\n");
    }
    put_framing(out, framing);
    out.extend_from_slice(b"\r\n");
}

fn put_framing(out: &mut Vec<u8>, framing: Framing) {
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            put_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::Close => {}
    }
}

/// What the Connection header of a response to the client says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing: HTTP/1.1 default keep-alive.
    Default,
    /// `Connection: keep-alive`, for HTTP/1.0 clients that asked for it.
    KeepAlive,
    /// `Connection: close`: the proxy closes after this response.
    Close,
}

/// Encodes a response head for the client. A response without a body carries the length its
/// upstream declared, if any (metadata of a HEAD or 304 answer), and nothing otherwise.
pub fn encode_response(
    head: &ResponseHead,
    framing: Framing,
    persistence: Persistence,
    out: &mut Vec<u8>,
) {
    put_status_line(out, head.status, head.reason());
    for (name, value) in head.headers.iter() {
        put_field(out, name, value);
    }
    match (framing, head.declared_length) {
        // 204 and 1xx never carry Content-Length (RFC 9110 §8.6); HEAD and 304 answers repeat
        // the length as metadata.
        (Framing::None, Some(_)) if head.status == 204 || head.status < 200 => {}
        (Framing::None, Some(n)) => {
            out.extend_from_slice(b"content-length: ");
            put_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        _ => put_framing(out, framing),
    }
    put_persistence(out, persistence);
    out.extend_from_slice(b"\r\n");
}

fn put_status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    put_u64(out, u64::from(status));
    out.push(b' ');
    if reason.is_empty() {
        let canonical = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Unknown");
        out.extend_from_slice(canonical.as_bytes());
    } else {
        out.extend_from_slice(reason);
    }
    out.extend_from_slice(b"\r\n");
}

fn put_persistence(out: &mut Vec<u8>, persistence: Persistence) {
    match persistence {
        Persistence::Default => {}
        Persistence::KeepAlive => out.extend_from_slice(b"connection: keep-alive\r\n"),
        Persistence::Close => out.extend_from_slice(b"connection: close\r\n"),
    }
}

/// Encodes a short plain-text response generated by the proxy itself (errors, 404): `len` is
/// its body's length, `body` what is sent of it (nothing in an answer to HEAD, which still
/// announces the length a GET would get).
pub fn encode_local_response(
    status: u16,
    len: u64,
    body: &str,
    persistence: Persistence,
    out: &mut Vec<u8>,
) {
    put_status_line(out, status, b"");
    out.extend_from_slice(b"content-type: text/plain\r\ncontent-length: ");
    put_u64(out, len);
    out.extend_from_slice(b"\r\n");
    put_persistence(out, persistence);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

/// Encodes an interim (1xx) response for the client: status line and fields, no framing.
pub fn encode_interim(head: &ResponseHead, out: &mut Vec<u8>) {
    put_status_line(out, head.status, head.reason());
    for (name, value) in head.headers.iter() {
        put_field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// The interim response that tells a client to send its body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &str) -> Result<Option<(Parsed, RequestHead)>, ProxyError> {
        let mut head = RequestHead::default();
        parse_request(raw.as_bytes(), 100, &mut head).map(|m| m.map(|m| (m, head)))
    }

    fn status_of(raw: &str) -> u16 {
        req(raw).err().and_then(|e| e.status()).unwrap_or(0)
    }

    #[test]
    fn simple_get() {
        let (meta, head) = req("GET /a?b HTTP/1.1\r\nHost: Example.com:80\r\nAccept: */*\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(meta.framing, Framing::None);
        assert!(meta.keep_alive);
        assert_eq!(head.path(), b"/a");
        assert_eq!(head.authority(), b"Example.com:80");
        assert_eq!(head.headers.len(), 1);
    }

    #[test]
    fn partial_head() {
        assert!(req("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
    }

    #[test]
    fn hop_by_hop_and_named_options_dropped() {
        let (meta, head) = req("GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: x\r\nTrailer: y\r\nX-Keep: 2\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!meta.keep_alive);
        let names: Vec<_> = head.headers.iter().map(|(n, _)| n.to_vec()).collect();
        assert_eq!(names, vec![b"X-Keep".to_vec()]);
    }

    #[test]
    fn http10_keep_alive_rules() {
        let (meta, _) = req("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!meta.keep_alive);
        let (meta, _) = req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(meta.keep_alive);
    }

    #[test]
    fn smuggling_defences() {
        assert_eq!(
            status_of(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            400
        );
        assert_eq!(
            status_of(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
            ),
            400
        );
        assert_eq!(
            status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n"),
            400
        );
        assert_eq!(
            status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
            400
        );
        assert_eq!(
            status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
            400
        );
        assert_eq!(
            status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            501
        );
        assert_eq!(
            status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\n"),
            400
        );
        assert_eq!(
            status_of("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n"),
            400
        );
        assert_eq!(
            status_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n"),
            400
        );
        assert_eq!(status_of("GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            status_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            400
        );
        assert_eq!(status_of("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
    }

    #[test]
    fn identical_content_lengths_accepted() {
        let (meta, _) =
            req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(meta.framing, Framing::Length(3));
    }

    #[test]
    fn absolute_form_target() {
        let (_, head) = req("GET http://Other.example:8080/x?y HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.authority(), b"Other.example:8080");
        assert_eq!(head.target(), b"/x?y");
        let (_, head) = req("GET http://h?q HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.target(), b"/?q");
    }

    #[test]
    fn expect_rules() {
        let (meta, _) =
            req("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(meta.expect_continue);
        assert_eq!(
            status_of("POST / HTTP/1.1\r\nHost: a\r\nExpect: bananas\r\nContent-Length: 2\r\n\r\n"),
            417
        );
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut raw = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..120 {
            raw.push_str(&format!("X-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(status_of(&raw), 431);
    }

    #[test]
    fn versions_beyond_1_1() {
        let (meta, head) = req("GET /v HTTP/1.2\r\nHost: a\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.version, Version::HTTP_11);
        assert!(meta.keep_alive);
        assert_eq!(meta.head_len, "GET /v HTTP/1.2\r\nHost: a\r\n\r\n".len());
        assert!(req("GET /v HTTP/1.9\r\nHost: a\r\n").unwrap().is_none());
        assert_eq!(status_of("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(status_of("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505);
        assert_eq!(status_of("GET / HTTP/3.0\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(status_of("GET / HTTP/1.10\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status_of("GET / http/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status_of("GET / HTTP/1\r\nHost: a\r\n\r\n"), 400);
        // Found by fuzzing: a version httparse refuses for another reason must not be retried
        // (it recursed), and a line cut before its end is incomplete, not malformed.
        assert_eq!(status_of("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status_of("GET /a b HTTP/1.2\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status_of("GET  / HTTP/1.2\r\nHost: a\r\n\r\n"), 400);
        let full = "GET / HTTP/1.2\r\nHost: a\r\n\r\n";
        for cut in 0..full.len() {
            assert!(req(&full[..cut]).is_ok_and(|r| r.is_none()), "cut at {cut}");
        }
    }

    #[test]
    fn head_end_finds_the_empty_line_from_where_the_scan_stopped() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
        assert_eq!(head_end(head, 0), Some(head.len() - 4));
        for cut in 0..head.len() - 4 {
            assert_eq!(head_end(&head[..cut], 0), None, "cut at {cut}");
            let from = cut.saturating_sub(2);
            assert_eq!(
                head_end(head, from),
                Some(head.len() - 4),
                "resumed at {from}"
            );
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\n", 0), Some(24));
        assert_eq!(head_end(b"a\n\r", 0), None);
        assert_eq!(head_end(b"a\n", 5), None);
    }

    #[test]
    fn te_trailers_is_noted_and_regenerated() {
        let (_, head) = req("GET / HTTP/1.1\r\nHost: a\r\nTE: deflate, trailers;q=1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.te_trailers);
        assert_eq!(head.headers.get(b"te"), None);
        let mut out = Vec::new();
        encode_request(&head, b"up", Framing::None, &mut out);
        assert!(out.windows(14).any(|w| w == b"te: trailers\r\n"));
        let (_, head) = req("GET / HTTP/1.1\r\nHost: a\r\nTE: gzip\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!head.te_trailers);
    }

    #[test]
    fn explicit_zero_length_is_kept_and_204_has_no_length() {
        let (meta, head) = req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(meta.framing, Framing::Length(0));
        let mut out = Vec::new();
        encode_request(&head, b"up", meta.framing, &mut out);
        assert!(
            out.ends_with(b"content-length: 0\r\n\r\n"),
            "{:?}",
            out.escape_ascii()
        );
        // 204 loses the length; 304 keeps it as metadata.
        for (received, sent) in [
            (
                &b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"[..],
                &b"HTTP/1.1 204 No Content\r\n\r\n"[..],
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
                b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
            ),
        ] {
            let mut resp = ResponseHead::default();
            parse_response(received, 10, false, &mut resp)
                .unwrap()
                .unwrap();
            out.clear();
            encode_response(&resp, Framing::None, Persistence::Default, &mut out);
            assert_eq!(out, sent);
        }
    }

    #[test]
    fn host_must_be_a_valid_authority() {
        for good in [
            "a",
            "bill.example.com:8080",
            "bill.example.com:",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "[2001:db8::7]:65535",
            "xn--bcher-kva.example",
            "a%41b",
            "under_score.example",
        ] {
            let raw = format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n");
            assert!(req(&raw).is_ok_and(|r| r.is_some()), "{good} is valid");
        }
        for bad in [
            "bill.example.com:evil",
            "bill.example.com:65536",
            "bill.example.com:123456",
            "[::1",
            "[::1]x",
            "[not-ipv6]",
            "[::1]:http",
            "user@host",
            "a b",
            "a%4",
            ":80",
            "",
            "a/b",
        ] {
            let raw = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
            assert_eq!(status_of(&raw), 400, "Host {bad:?}");
            let raw = format!("GET http://{bad}/x HTTP/1.1\r\nHost: a\r\n\r\n");
            if !bad.is_empty() && !bad.contains(['/', ' ']) {
                assert_eq!(status_of(&raw), 400, "authority {bad:?}");
            }
        }
        // Absolute-form does not excuse a missing Host in HTTP/1.1; HTTP/1.0 may omit it.
        assert_eq!(status_of("GET http://a/ HTTP/1.1\r\n\r\n"), 400);
        let (_, head) = req("GET http://a/x HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.authority(), b"a");
    }

    #[test]
    fn connect_not_implemented() {
        assert_eq!(
            status_of("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
            501
        );
    }

    #[test]
    fn response_framing() {
        let mut head = ResponseHead::default();
        let meta = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
            100,
            false,
            &mut head,
        )
        .unwrap()
        .unwrap();
        assert_eq!(meta.framing, Framing::Length(5));
        assert!(meta.keep_alive);
        assert_eq!(head.headers.len(), 0);
        let meta = parse_response(b"HTTP/1.1 200 OK\r\n\r\n", 100, false, &mut head)
            .unwrap()
            .unwrap();
        assert_eq!(meta.framing, Framing::Close);
        assert!(!meta.keep_alive);
        let meta = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            100,
            true,
            &mut head,
        )
        .unwrap()
        .unwrap();
        assert_eq!(meta.framing, Framing::None);
        assert_eq!(head.declared_length, Some(5));
        let err = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            100,
            false,
            &mut head,
        )
        .unwrap_err();
        assert_eq!(err.status(), Some(502));
    }

    #[test]
    fn encode_round_trip() {
        let (_, head) = req("POST /p HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n")
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        encode_request(&head, b"up", Framing::Length(2), &mut out);
        assert_eq!(
            out,
            b"POST /p HTTP/1.1\r\nhost: h\r\nX-A: 1\r\ncontent-length: 2\r\n\r\n"
        );
        let mut resp = ResponseHead::default();
        resp.status = 404;
        out.clear();
        encode_response(&resp, Framing::Chunked, Persistence::Close, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
    }
}
