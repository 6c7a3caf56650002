//! A request's key for a hashing balancer, from its route's `hash_policy` (Envoy's semantics),
//! and the response sink that adds the `Set-Cookie` of a cookie the gateway generated.

use crate::balance::hash_key;
use crate::config::{HashKey, HashPolicy};
use crate::error::ProxyError;
use crate::message::{Headers, RequestHead, ResponseHead};
use crate::proxy::ResponseSink;

/// The request's key: the hashes of the policies that yield one, combined in order as Envoy
/// combines them (the hash so far rotated left by one, then xor-ed with the next, so that two
/// equal policies do not cancel out), stopping after a `terminal` policy that yields one. None
/// when no policy yields one (the balancer then picks at random). The second value is a
/// `Set-Cookie` field value for the response, when a cookie policy with a `ttl` found no such
/// cookie and generated the key's value.
pub fn key(
    policies: &[HashPolicy],
    head: &RequestHead,
    client_ip: &[u8],
) -> (Option<u64>, Option<Vec<u8>>) {
    let mut hash: Option<u64> = None;
    let mut set_cookie = None;
    for policy in policies {
        let new = match &policy.key {
            HashKey::Header(name) => header_hash(&head.headers, name.as_bytes()),
            HashKey::SourceIp => Some(hash_key(client_ip)),
            HashKey::Cookie { name, ttl, path } => match cookie(&head.headers, name.as_bytes()) {
                Some(value) => Some(hash_key(value)),
                None => ttl.map(|ttl| {
                    let value = generated_value();
                    let hash = hash_key(value.as_bytes());
                    set_cookie = Some(set_cookie_value(name, &value, ttl, path.as_deref()));
                    hash
                }),
            },
        };
        if let Some(new) = new {
            hash = Some(hash.map_or(new, |old| old.rotate_left(1) ^ new));
        }
        if policy.terminal && hash.is_some() {
            break;
        }
    }
    (hash, set_cookie)
}

/// The hash of a header's value; with several fields of that name, of their values sorted
/// (the order they came in does not matter, as in Envoy).
fn header_hash(headers: &Headers, name: &[u8]) -> Option<u64> {
    let mut values = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v);
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(hash_key(first));
    };
    let mut all: Vec<&[u8]> = vec![first, second];
    all.extend(values);
    all.sort_unstable();
    Some(
        all.iter()
            .fold(0u64, |h, v| xxhash_rust::xxh64::xxh64(v, h)),
    )
}

/// The value of cookie `name` in the request's `Cookie` fields (HTTP/2 may split them).
fn cookie<'h>(headers: &'h Headers, name: &[u8]) -> Option<&'h [u8]> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie"))
        .flat_map(|(_, v)| v.split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = memchr::memchr(b'=', pair)?;
            (pair[..eq].trim_ascii() == name).then(|| pair[eq + 1..].trim_ascii())
        })
}

/// A fresh cookie value: 64 random bits in hex. Random rather than derived from the client's
/// address, so that clients behind one NAT address still spread.
fn generated_value() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// `name=value; Max-Age=ttl; Path=path; HttpOnly`, as Envoy sets it (no Max-Age for a ttl of
/// zero: a session cookie).
fn set_cookie_value(
    name: &str,
    value: &str,
    ttl: std::time::Duration,
    path: Option<&str>,
) -> Vec<u8> {
    let mut out = format!("{name}={value}");
    if !ttl.is_zero() {
        out.push_str(&format!("; Max-Age={}", ttl.as_secs().max(1)));
    }
    if let Some(path) = path {
        out.push_str(&format!("; Path={path}"));
    }
    out.push_str("; HttpOnly");
    out.into_bytes()
}

/// A response sink that adds one `Set-Cookie` field to the response head, when there is one
/// to add; otherwise it passes everything through.
pub struct CookieSink<S> {
    pub inner: S,
    pub set_cookie: Option<Vec<u8>>,
}

impl<S: ResponseSink> ResponseSink for CookieSink<S> {
    async fn send_continue(&mut self) -> Result<(), ProxyError> {
        self.inner.send_continue().await
    }

    async fn send_interim(&mut self, head: &ResponseHead) -> Result<(), ProxyError> {
        self.inner.send_interim(head).await
    }

    fn start_response(&mut self, head: &ResponseHead) {
        match self.set_cookie.take() {
            None => self.inner.start_response(head),
            Some(value) => {
                // A copy only on the rare response that sets the cookie.
                let mut head = head.clone();
                head.headers.append(b"set-cookie", &value);
                self.inner.start_response(&head);
            }
        }
    }

    fn push_body(&mut self, data: &[u8]) -> Result<(), ProxyError> {
        self.inner.push_body(data)
    }

    fn end_body(&mut self, trailers: Option<&Headers>) -> Result<(), ProxyError> {
        self.inner.end_body(trailers)
    }

    fn pending(&self) -> usize {
        self.inner.pending()
    }

    async fn flush(&mut self) -> Result<(), ProxyError> {
        self.inner.flush().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn head(fields: &[(&str, &str)]) -> RequestHead {
        let mut head = RequestHead::default();
        for (n, v) in fields {
            head.headers.append(n.as_bytes(), v.as_bytes());
        }
        head
    }

    fn header(name: &str, terminal: bool) -> HashPolicy {
        HashPolicy {
            key: HashKey::Header(name.into()),
            terminal,
        }
    }

    #[test]
    fn policies_combine_until_a_terminal_one_yields() {
        let h = head(&[("x-user", "alice"), ("x-tenant", "acme")]);
        let user = hash_key(b"alice");
        let tenant = hash_key(b"acme");
        let (k, _) = key(&[header("x-user", false)], &h, b"1.2.3.4");
        assert_eq!(k, Some(user));
        let (k, _) = key(
            &[header("x-user", false), header("x-tenant", false)],
            &h,
            b"",
        );
        assert_eq!(k, Some(user.rotate_left(1) ^ tenant));
        // Terminal and present: the rest is ignored.
        let (k, _) = key(
            &[header("x-user", true), header("x-tenant", false)],
            &h,
            b"",
        );
        assert_eq!(k, Some(user));
        // Terminal but absent: goes on.
        let (k, _) = key(
            &[header("x-none", true), header("x-tenant", false)],
            &h,
            b"",
        );
        assert_eq!(k, Some(tenant));
        let (k, _) = key(&[header("x-none", false)], &h, b"");
        assert_eq!(k, None);
        let ip = HashPolicy {
            key: HashKey::SourceIp,
            terminal: false,
        };
        assert_eq!(key(&[ip], &h, b"10.0.0.1").0, Some(hash_key(b"10.0.0.1")));
    }

    #[test]
    fn header_values_in_any_order() {
        let a = head(&[("x-k", "1"), ("x-k", "2")]);
        let b = head(&[("X-K", "2"), ("x-k", "1")]);
        let p = [header("x-k", false)];
        assert_eq!(key(&p, &a, b"").0, key(&p, &b, b"").0);
        assert_ne!(key(&p, &a, b"").0, key(&p, &head(&[("x-k", "1")]), b"").0);
    }

    #[test]
    fn cookie_is_read_or_generated() {
        let policy = |ttl| HashPolicy {
            key: HashKey::Cookie {
                name: "sid".into(),
                ttl,
                path: Some("/".into()),
            },
            terminal: false,
        };
        let h = head(&[("cookie", "a=1; sid=xyz"), ("cookie", "b=2")]);
        let (k, set) = key(&[policy(Some(Duration::from_secs(60)))], &h, b"");
        assert_eq!((k, set), (Some(hash_key(b"xyz")), None));
        // Absent, no ttl: no key, nothing set.
        let (k, set) = key(&[policy(None)], &head(&[("cookie", "sidx=1")]), b"");
        assert_eq!((k, set), (None, None));
        // Absent with a ttl: generated, and the key is its value's hash.
        let (k, set) = key(&[policy(Some(Duration::from_secs(3600)))], &head(&[]), b"");
        let set = String::from_utf8(set.unwrap()).unwrap();
        let value = set.strip_prefix("sid=").unwrap().split(';').next().unwrap();
        assert_eq!(k, Some(hash_key(value.as_bytes())));
        assert!(set.ends_with("; Max-Age=3600; Path=/; HttpOnly"), "{set}");
        let (_, set) = key(&[policy(Some(Duration::ZERO))], &head(&[]), b"");
        let set = String::from_utf8(set.unwrap()).unwrap();
        assert!(!set.contains("Max-Age"), "{set}");
    }
}
