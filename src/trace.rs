//! Request ids and trace context: `x-request-id` kept when valid or generated (UUIDv4), and the
//! trace the request belongs to, read from W3C `traceparent` (with `tracestate`), B3 single
//! (`b3`) or B3 multi (`x-b3-*`) headers, continued with a span of the gateway's own for the
//! hop to the upstream, and written back in the same format.

use std::time::{Duration, SystemTime};

use crate::message::RequestHead;

/// How a listener treats `x-request-id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestIdOptions {
    /// Set one when the request has none (or an invalid one).
    pub generate: bool,
    /// Keep a valid one the client sent (false: always replace it).
    pub preserve_external: bool,
}

impl Default for RequestIdOptions {
    fn default() -> Self {
        RequestIdOptions {
            generate: true,
            preserve_external: true,
        }
    }
}

/// Longest `x-request-id` kept from a client.
const MAX_REQUEST_ID: usize = 128;

/// Whether an incoming request id can be kept: 1..=128 visible ASCII characters other than
/// quotes and backslash (it ends up in logs and in other services' headers).
fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_REQUEST_ID
        && v.iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_into(bytes: &[u8], out: &mut Vec<u8>) {
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

/// A random UUID (version 4, RFC 9562), from this core's fast generator: request ids need to
/// be unique, not unpredictable, and a syscall per request would cost more than the rest of
/// this step.
pub fn uuid_v4() -> [u8; 36] {
    let mut b = fastrand::u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    // Written in place: this runs for every request without an id, so no heap buffer.
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 15)];
        at += 2;
    }
    out
}

/// Keeps, replaces or sets the request's `x-request-id`.
pub fn stamp_request_id(head: &mut RequestHead, opts: RequestIdOptions) {
    let incoming = head.headers.get(b"x-request-id");
    let keep = opts.preserve_external && incoming.is_some_and(valid_request_id);
    if keep {
        return;
    }
    head.headers.remove(b"x-request-id");
    if opts.generate {
        head.headers.append(b"x-request-id", &uuid_v4());
    }
}

/// The header format a trace arrived in (and goes on in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    W3c,
    B3Single,
    B3Multi,
}

/// The trace a request belongs to, and the gateway's span in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub trace_id: [u8; 16],
    /// The gateway's span (the hop to the upstream), and the caller's span it is a child of.
    pub span_id: [u8; 8],
    pub parent_id: Option<[u8; 8]>,
    pub sampled: bool,
    pub propagation: Propagation,
    pub start: SystemTime,
}

fn parse_hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, pair) in s.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    // All-zero ids are invalid in both W3C and B3.
    out.iter().any(|&b| b != 0).then_some(out)
}

/// A B3 trace id: 64 or 128 bits.
fn parse_b3_trace(s: &[u8]) -> Option<[u8; 16]> {
    match s.len() {
        16 => parse_hex::<8>(s).map(|h| {
            let mut t = [0u8; 16];
            t[8..].copy_from_slice(&h);
            t
        }),
        32 => parse_hex::<16>(s),
        _ => None,
    }
}

/// W3C trace context level 1: `00-<32 hex trace>-<16 hex parent>-<2 hex flags>` (a later
/// version may carry more fields after these).
fn parse_traceparent(v: &[u8]) -> Option<([u8; 16], [u8; 8], bool)> {
    let parts: Vec<&[u8]> = v.split(|&b| b == b'-').collect();
    let (version, trace, parent, flags) =
        (parts.first()?, parts.get(1)?, parts.get(2)?, parts.get(3)?);
    let version = parse_hex_any(version)?;
    if version == 0xff || (version == 0 && parts.len() != 4) {
        return None;
    }
    let flags = parse_hex_any(flags)?;
    Some((
        parse_hex::<16>(trace)?,
        parse_hex::<8>(parent)?,
        flags & 1 == 1,
    ))
}

fn parse_hex_any(s: &[u8]) -> Option<u8> {
    if s.len() != 2 {
        return None;
    }
    u8::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
}

/// B3 single: `{trace}-{span}[-{sampled}[-{parent}]]`, or just `{sampled}` (a decision alone).
fn parse_b3_single(v: &[u8]) -> Option<([u8; 16], [u8; 8], Option<bool>)> {
    let parts: Vec<&[u8]> = v.split(|&b| b == b'-').collect();
    if parts.len() < 2 {
        return None;
    }
    let sampled = match parts.get(2).copied() {
        None => None,
        Some(b"1") | Some(b"d") => Some(true),
        Some(b"0") => Some(false),
        Some(_) => return None,
    };
    Some((
        parse_b3_trace(parts[0])?,
        parse_hex::<8>(parts[1])?,
        sampled,
    ))
}

/// Reads the incoming trace (W3C first, then B3 single, then B3 multi) and starts the
/// gateway's span: a child of the caller's span, or the root of a new trace sampled at
/// `sample_percent`. None: the request carries no trace and none is started (tracing off).
pub fn continue_trace(head: &RequestHead, tracing_on: bool, sample_percent: f64) -> Option<Span> {
    let h = &head.headers;
    let new_sample = || tracing_on && fastrand::f64() * 100.0 < sample_percent;
    let incoming = h
        .get(b"traceparent")
        .and_then(parse_traceparent)
        .map(|(t, p, s)| (t, p, Some(s), Propagation::W3c))
        .or_else(|| {
            h.get(b"b3")
                .and_then(parse_b3_single)
                .map(|(t, p, s)| (t, p, s, Propagation::B3Single))
        })
        .or_else(|| {
            let trace = parse_b3_trace(h.get(b"x-b3-traceid")?)?;
            let span = parse_hex::<8>(h.get(b"x-b3-spanid")?)?;
            let sampled = match (h.get(b"x-b3-flags"), h.get(b"x-b3-sampled")) {
                (Some(b"1"), _) => Some(true),
                (_, Some(b"1") | Some(b"true")) => Some(true),
                (_, Some(b"0") | Some(b"false")) => Some(false),
                _ => None,
            };
            Some((trace, span, sampled, Propagation::B3Multi))
        });
    // The clock is read only for a span: most requests carry none.
    match incoming {
        Some((trace_id, parent, sampled, propagation)) => Some(Span {
            trace_id,
            span_id: fastrand::u64(..).max(1).to_be_bytes(),
            parent_id: Some(parent),
            // The caller's decision wins; without one, ours.
            sampled: sampled.unwrap_or_else(new_sample),
            propagation,
            start: SystemTime::now(),
        }),
        None if tracing_on => Some(Span {
            trace_id: fastrand::u128(..).max(1).to_be_bytes(),
            span_id: fastrand::u64(..).max(1).to_be_bytes(),
            parent_id: None,
            sampled: new_sample(),
            propagation: Propagation::W3c,
            start: SystemTime::now(),
        }),
        None => None,
    }
}

/// The trace headers every client could send, removed before the gateway's own are set.
const TRACE_HEADERS: [&[u8]; 7] = [
    b"traceparent",
    b"b3",
    b"x-b3-traceid",
    b"x-b3-spanid",
    b"x-b3-parentspanid",
    b"x-b3-sampled",
    b"x-b3-flags",
];

/// Writes the gateway's span as the parent of the upstream's, in the format the trace came in
/// (`tracestate` passes through untouched).
pub fn propagate(head: &mut RequestHead, span: &Span) {
    for name in TRACE_HEADERS {
        head.headers.remove(name);
    }
    let mut v = Vec::with_capacity(64);
    match span.propagation {
        Propagation::W3c => {
            v.extend_from_slice(b"00-");
            hex_into(&span.trace_id, &mut v);
            v.push(b'-');
            hex_into(&span.span_id, &mut v);
            v.extend_from_slice(if span.sampled { b"-01" } else { b"-00" });
            head.headers.append(b"traceparent", &v);
        }
        Propagation::B3Single => {
            hex_into(&span.trace_id, &mut v);
            v.push(b'-');
            hex_into(&span.span_id, &mut v);
            v.extend_from_slice(if span.sampled { b"-1" } else { b"-0" });
            if let Some(parent) = &span.parent_id {
                v.push(b'-');
                hex_into(parent, &mut v);
            }
            head.headers.append(b"b3", &v);
        }
        Propagation::B3Multi => {
            hex_into(&span.trace_id, &mut v);
            head.headers.append(b"x-b3-traceid", &v);
            v.clear();
            hex_into(&span.span_id, &mut v);
            head.headers.append(b"x-b3-spanid", &v);
            if let Some(parent) = &span.parent_id {
                v.clear();
                hex_into(parent, &mut v);
                head.headers.append(b"x-b3-parentspanid", &v);
            }
            head.headers
                .append(b"x-b3-sampled", if span.sampled { b"1" } else { b"0" });
        }
    }
}

/// Hex of an id, for the exporter.
pub fn hex(bytes: &[u8]) -> String {
    let mut v = Vec::with_capacity(bytes.len() * 2);
    hex_into(bytes, &mut v);
    String::from_utf8(v).unwrap_or_default()
}

/// A finished span as the exporter sends it (Zipkin v2 fields).
#[derive(Debug, Clone)]
pub struct FinishedSpan {
    pub span: Span,
    pub duration: Duration,
    pub name: String,
    pub tags: Vec<(&'static str, String)>,
    pub remote: Option<std::net::SocketAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        let mut h = RequestHead::default();
        h.set_target(b"/");
        for (n, v) in headers {
            h.headers.append(n.as_bytes(), v.as_bytes());
        }
        h
    }

    #[test]
    fn request_ids_are_kept_when_valid_and_made_otherwise() {
        let mut h = head(&[("x-request-id", "abc-123")]);
        stamp_request_id(&mut h, RequestIdOptions::default());
        assert_eq!(h.headers.get(b"x-request-id"), Some(&b"abc-123"[..]));
        let mut h = head(&[("x-request-id", "has space")]);
        stamp_request_id(&mut h, RequestIdOptions::default());
        let id = h.headers.get(b"x-request-id").unwrap().to_vec();
        assert_eq!(id.len(), 36);
        assert_eq!(id[14], b'4', "version 4: {}", String::from_utf8_lossy(&id));
        assert!(matches!(id[19], b'8' | b'9' | b'a' | b'b'));
        let mut h = head(&[("x-request-id", "abc")]);
        let replace = RequestIdOptions {
            generate: true,
            preserve_external: false,
        };
        stamp_request_id(&mut h, replace);
        assert_ne!(h.headers.get(b"x-request-id"), Some(&b"abc"[..]));
        assert_ne!(uuid_v4(), uuid_v4());
        let u = uuid_v4();
        let dashes: Vec<usize> = (0..36).filter(|&i| u[i] == b'-').collect();
        assert_eq!(
            dashes,
            vec![8, 13, 18, 23],
            "{}",
            String::from_utf8_lossy(&u)
        );
        assert!(u.iter().all(|&c| c == b'-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn w3c_context_continues_with_a_child_span() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut h = head(&[("traceparent", tp), ("tracestate", "congo=t61rcWkgMzE")]);
        let span = continue_trace(&h, false, 0.0).expect("continued");
        assert_eq!(hex(&span.trace_id), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(
            span.parent_id.map(|p| hex(&p)).as_deref(),
            Some("b7ad6b7169203331")
        );
        assert!(span.sampled);
        propagate(&mut h, &span);
        let out = String::from_utf8(h.headers.get(b"traceparent").unwrap().to_vec()).unwrap();
        assert_eq!(
            out,
            format!(
                "00-0af7651916cd43dd8448eb211c80319c-{}-01",
                hex(&span.span_id)
            )
        );
        assert_eq!(
            h.headers.get(b"tracestate"),
            Some(&b"congo=t61rcWkgMzE"[..])
        );
        // Invalid ones are not continued.
        for bad in [
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-xyz",
        ] {
            assert_eq!(
                continue_trace(&head(&[("traceparent", bad)]), false, 0.0),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn b3_single_and_multi_continue_in_their_own_format() {
        let mut h = head(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")]);
        let span = continue_trace(&h, false, 0.0).unwrap();
        propagate(&mut h, &span);
        let b3 = String::from_utf8(h.headers.get(b"b3").unwrap().to_vec()).unwrap();
        assert_eq!(
            b3,
            format!(
                "80f198ee56343ba864fe8b2a57d3eff7-{}-1-e457b5a2e4d86bd1",
                hex(&span.span_id)
            )
        );
        let mut h = head(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "0"),
        ]);
        let span = continue_trace(&h, true, 100.0).unwrap();
        assert!(!span.sampled, "the caller's decision wins");
        propagate(&mut h, &span);
        assert_eq!(
            h.headers.get(b"x-b3-traceid"),
            Some(&b"0000000000000000463ac35c9f6413ad"[..])
        );
        assert_eq!(
            h.headers.get(b"x-b3-parentspanid"),
            Some(&b"a2fb4a1d1a96d312"[..])
        );
        assert_eq!(h.headers.get(b"x-b3-sampled"), Some(&b"0"[..]));
        // No trace and tracing off: nothing; tracing on: a new sampled root.
        assert_eq!(continue_trace(&head(&[]), false, 100.0), None);
        let root = continue_trace(&head(&[]), true, 100.0).unwrap();
        assert!(root.sampled && root.parent_id.is_none());
    }
}
