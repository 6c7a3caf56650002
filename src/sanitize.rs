//! Pure: a request as the client sent it -> the request the gateway routes and forwards. The
//! path is normalised (so a prefix route matches what the upstream will serve), header names
//! with underscores are dropped or refused, and the identity and scheme headers a client could
//! forge are removed unless the peer is a trusted proxy; then X-Forwarded-For and
//! X-Forwarded-Proto are set.

use std::net::IpAddr;

use crate::config::{HttpOptions, UnderscoreHeaders};
use crate::error::ProxyError;
use crate::message::RequestHead;
use crate::path;

/// Whether a header carries the client's identity or the original scheme or host, as seen by
/// a proxy in front: only a trusted proxy may set these.
fn is_forwarding(name: &[u8]) -> bool {
    // Dispatch on length first: one compare per field for most fields.
    let candidates: &[&[u8]] = match name.len() {
        9 => &[b"forwarded", b"x-real-ip"],
        15 => &[b"x-forwarded-for"],
        16 => &[b"x-forwarded-host", b"x-forwarded-port"],
        17 => &[b"x-forwarded-proto"],
        _ => return false,
    };
    candidates.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Where a request comes from, as the connection knows it.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The address the connection comes from, and the same formatted.
    pub peer: IpAddr,
    pub client_ip: &'a [u8],
    /// The scheme the client used.
    pub scheme: &'a [u8],
    /// The listener's header for the verified client certificate, and its value when the
    /// client presented one (TLS).
    pub client_cert_header: Option<&'a [u8]>,
    pub client_cert: Option<&'a [u8]>,
}

/// The header that carries a client certificate by convention (Envoy's XFCC): only a trusted
/// proxy may send it.
const XFCC: &[u8] = b"x-forwarded-client-cert";

/// Prepares `head` for routing and forwarding under the listener's `opts`. Err: the request is
/// refused with 400.
pub fn sanitize(
    head: &mut RequestHead,
    opts: &HttpOptions,
    origin: &Origin<'_>,
) -> Result<(), ProxyError> {
    let Origin {
        peer,
        client_ip,
        scheme,
        ..
    } = *origin;
    // Allocates only when the path changes, which well-behaved clients never make it do.
    let mut normalized = Vec::new();
    if path::normalize_target(head.target(), &opts.path, &mut normalized)
        .map_err(|e| ProxyError::bad_request(e.reason()))?
    {
        head.set_target(&normalized);
    }

    let trusted = opts.trusted_proxies.iter().any(|net| net.contains(&peer));
    let underscores = opts.headers_with_underscores;
    let mut refused = false;
    let mut scheme_kept = false;
    head.headers.retain(|name, _| {
        if underscores != UnderscoreHeaders::Allow && memchr::memchr(b'_', name).is_some() {
            refused |= underscores == UnderscoreHeaders::Reject;
            return false;
        }
        // The listener's client certificate header is the gateway's to set, whoever sends it.
        if origin
            .client_cert_header
            .is_some_and(|h| h.eq_ignore_ascii_case(name))
        {
            return false;
        }
        if name.eq_ignore_ascii_case(XFCC) {
            return trusted;
        }
        if !is_forwarding(name) {
            return true;
        }
        scheme_kept |= trusted && name.eq_ignore_ascii_case(b"x-forwarded-proto");
        trusted
    });
    if refused {
        return Err(ProxyError::bad_request("header name with an underscore\n"));
    }
    // A trusted proxy in front knows the scheme the client used; otherwise the gateway does.
    if !scheme_kept {
        head.headers.append(b"x-forwarded-proto", scheme);
    }
    head.headers.append_to_list(b"x-forwarded-for", client_ip);
    if let (Some(name), Some(value)) = (origin.client_cert_header, origin.client_cert) {
        head.headers.append(name, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EscapedSlashes;

    fn head(target: &str, headers: &[(&str, &str)]) -> RequestHead {
        let mut h = RequestHead::default();
        h.set_target(target.as_bytes());
        for (n, v) in headers {
            h.headers.append(n.as_bytes(), v.as_bytes());
        }
        h
    }

    fn fields(h: &RequestHead) -> Vec<(String, String)> {
        h.headers
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    const PEER: &str = "198.51.100.7";
    const FORGED: [(&str, &str); 7] = [
        ("X-Forwarded-For", "1.2.3.4"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "admin.internal"),
        ("X-Forwarded-Port", "443"),
        ("X-Real-IP", "1.2.3.4"),
        ("Forwarded", "for=1.2.3.4;proto=https"),
        ("Accept", "*/*"),
    ];

    fn run(h: &mut RequestHead, opts: &HttpOptions) -> Result<(), ProxyError> {
        let origin = Origin {
            peer: PEER.parse().unwrap(),
            client_ip: PEER.as_bytes(),
            scheme: b"http",
            client_cert_header: None,
            client_cert: None,
        };
        sanitize(h, opts, &origin)
    }

    #[test]
    fn forged_identity_headers_are_replaced_from_an_untrusted_peer() {
        let mut h = head("/", &FORGED);
        run(&mut h, &HttpOptions::default()).unwrap();
        assert_eq!(
            fields(&h),
            [
                ("Accept".into(), "*/*".into()),
                ("x-forwarded-proto".into(), "http".into()),
                ("x-forwarded-for".into(), PEER.into()),
            ]
        );
    }

    #[test]
    fn a_trusted_proxy_keeps_its_headers_and_the_chain_grows() {
        let opts = HttpOptions {
            trusted_proxies: vec!["198.51.100.0/24".parse().unwrap()],
            ..HttpOptions::default()
        };
        let mut h = head("/", &FORGED);
        run(&mut h, &opts).unwrap();
        let f = fields(&h);
        assert!(
            f.contains(&("X-Forwarded-Proto".into(), "https".into())),
            "{f:?}"
        );
        assert!(f.contains(&("X-Real-IP".into(), "1.2.3.4".into())), "{f:?}");
        assert!(
            f.contains(&("x-forwarded-for".into(), format!("1.2.3.4, {PEER}"))),
            "{f:?}"
        );
        assert!(
            !f.iter()
                .any(|(n, v)| n == "x-forwarded-proto" && v == "http"),
            "{f:?}"
        );
        // Without an X-Forwarded-Proto of its own, the gateway's is set.
        let mut h = head("/", &[]);
        run(&mut h, &opts).unwrap();
        assert!(fields(&h).contains(&("x-forwarded-proto".into(), "http".into())));
    }

    #[test]
    fn underscore_headers_dropped_refused_or_allowed() {
        let sent = [("X_Forwarded_For", "1.2.3.4"), ("x-ok", "1"), ("a_b", "2")];
        let mut h = head("/", &sent);
        run(&mut h, &HttpOptions::default()).unwrap();
        let names: Vec<String> = fields(&h).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["x-ok", "x-forwarded-proto", "x-forwarded-for"]);

        let reject = HttpOptions {
            headers_with_underscores: UnderscoreHeaders::Reject,
            ..HttpOptions::default()
        };
        let err = run(&mut head("/", &sent), &reject).unwrap_err();
        assert_eq!(err.status(), Some(400));

        let allow = HttpOptions {
            headers_with_underscores: UnderscoreHeaders::Allow,
            ..HttpOptions::default()
        };
        let mut h = head("/", &sent);
        run(&mut h, &allow).unwrap();
        assert_eq!(h.headers.get(b"a_b"), Some(&b"2"[..]));
    }

    #[test]
    fn paths_are_normalised_or_refused() {
        let mut h = head("/public/%2e%2e/admin?x=1", &[]);
        run(&mut h, &HttpOptions::default()).unwrap();
        assert_eq!(h.target(), b"/admin?x=1");
        let err = run(&mut head("/public/..;/admin", &[]), &HttpOptions::default()).unwrap_err();
        assert_eq!(err.status(), Some(400));
        let keep = HttpOptions {
            path: path::PathOptions {
                escaped_slashes: EscapedSlashes::Keep,
                ..path::PathOptions::default()
            },
            ..HttpOptions::default()
        };
        let mut h = head("/a%2fb", &[]);
        run(&mut h, &keep).unwrap();
        assert_eq!(h.target(), b"/a%2Fb");
    }
}
