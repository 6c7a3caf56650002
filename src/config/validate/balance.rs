//! Validation of what balancing takes from the config: a cluster's `lb_policy` with its
//! `*_lb_config`, and a route's `hash_policy`.

use super::{Checker, is_tchar};
use crate::balance::{Maglev, RingHash};
use crate::config::file::{RawCluster, RawHashPolicy};
use crate::config::{HashKey, HashPolicy, LbPolicy};

/// Most candidates a least_request pick may draw: beyond a few, it is a scan of the cluster
/// and herds every core onto the same endpoint.
const MAX_CHOICE_COUNT: i64 = 100;

/// The cluster's policy, with the settings of its `*_lb_config` (each reported at its field
/// path; a config block for another policy is an error, not silently ignored).
pub(in crate::config) fn lb_policy(
    c: &mut Checker,
    cl: &RawCluster,
    p: &dyn Fn(&str) -> String,
) -> LbPolicy {
    let policy = match &cl.lb_policy {
        None => LbPolicy::default(),
        Some(name) => c.one_of(name, &LbPolicy::ALL, "policy", &p("lb_policy")),
    };
    let name = policy.name();
    let misplaced = |c: &mut Checker, field: &str, wants: &str| {
        let why = format!("applies to lb_policy {wants}, but the cluster's is {name}");
        c.err(&p(field), why);
    };
    if cl.least_request_lb_config.is_some() && !matches!(policy, LbPolicy::LeastRequest { .. }) {
        misplaced(c, "least_request_lb_config", "least_request");
    }
    if cl.ring_hash_lb_config.is_some() && !matches!(policy, LbPolicy::RingHash { .. }) {
        misplaced(c, "ring_hash_lb_config", "ring_hash");
    }
    if cl.maglev_lb_config.is_some() && !matches!(policy, LbPolicy::Maglev { .. }) {
        misplaced(c, "maglev_lb_config", "maglev");
    }
    match policy {
        LbPolicy::LeastRequest { choice_count } => {
            let Some(raw) = &cl.least_request_lb_config else {
                return policy;
            };
            let path = p("least_request_lb_config.choice_count");
            LbPolicy::LeastRequest {
                choice_count: c.int(raw.choice_count, choice_count, 2..=MAX_CHOICE_COUNT, &path),
            }
        }
        LbPolicy::RingHash {
            minimum_ring_size,
            maximum_ring_size,
        } => {
            let Some(raw) = &cl.ring_hash_lb_config else {
                return policy;
            };
            let max = RingHash::MAXIMUM_RING_SIZE as i64;
            let f = |field: &str| p(&format!("ring_hash_lb_config.{field}"));
            let minimum = c.int(
                raw.minimum_ring_size,
                minimum_ring_size,
                1..=max,
                &f("minimum_ring_size"),
            );
            let maximum = c.int(
                raw.maximum_ring_size,
                maximum_ring_size,
                1..=max,
                &f("maximum_ring_size"),
            );
            if minimum > maximum {
                let why = format!("{minimum} is larger than maximum_ring_size ({maximum})");
                c.err(&f("minimum_ring_size"), why);
            }
            if let Some(h) = raw.hash_function.as_deref()
                && h != "XX_HASH"
            {
                let why = format!("unsupported hash_function {h:?} (accepted: XX_HASH)");
                c.err(&f("hash_function"), why);
            }
            LbPolicy::RingHash {
                minimum_ring_size: minimum,
                maximum_ring_size: maximum,
            }
        }
        LbPolicy::Maglev { table_size } => {
            let Some(raw) = &cl.maglev_lb_config else {
                return policy;
            };
            let path = p("maglev_lb_config.table_size");
            let max = Maglev::MAXIMUM_TABLE_SIZE as i64;
            let size = c.int(raw.table_size, table_size, 2..=max, &path);
            if raw.table_size.is_some_and(|t| (2..=max).contains(&t)) {
                if !is_prime(size) {
                    c.err(
                        &path,
                        format!("must be a prime (e.g. 65537 or 5000011), got {size}"),
                    );
                } else if (cl.endpoints.len() as u64) > size {
                    let why = format!("{size} slots cannot hold {} endpoints", cl.endpoints.len());
                    c.err(&path, why);
                }
            }
            LbPolicy::Maglev { table_size: size }
        }
        _ => policy,
    }
}

/// A route's `hash_policy` list; each entry sets exactly one of `header`, `cookie` and
/// `connection_properties`.
pub(in crate::config) fn hash_policy(
    c: &mut Checker,
    raw: &[RawHashPolicy],
    path: &str,
) -> Vec<HashPolicy> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, h) in raw.iter().enumerate() {
        let hp = format!("{path}[{i}]");
        let set = usize::from(h.header.is_some())
            + usize::from(h.cookie.is_some())
            + usize::from(h.connection_properties.is_some());
        if set != 1 {
            let why = "set exactly one of `header`, `cookie` or `connection_properties`";
            c.err(&hp, why);
            continue;
        }
        let key = if let Some(header) = &h.header {
            let name = header.header_name.trim();
            if name.is_empty() || !name.bytes().all(is_tchar) {
                let why = format!("invalid header name {name:?}");
                c.err(&format!("{hp}.header.header_name"), why);
            }
            HashKey::Header(name.to_ascii_lowercase())
        } else if let Some(cookie) = &h.cookie {
            let cp = |f: &str| format!("{hp}.cookie.{f}");
            let name = cookie.name.trim();
            if name.is_empty() || !name.bytes().all(is_tchar) {
                c.err(&cp("name"), format!("invalid cookie name {name:?}"));
            }
            let ttl = cookie.ttl.as_ref().and_then(|t| {
                match humantime::parse_duration(t.trim()) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        let why = format!("invalid duration {t:?} ({e}); use e.g. \"1h\", or \"0s\" for a session cookie");
                        c.err(&cp("ttl"), why);
                        None
                    }
                }
            });
            let cookie_path = cookie.path.as_ref().map(|v| {
                // Set-Cookie attribute syntax: no control characters and no `;`.
                if !v.starts_with('/') || v.bytes().any(|b| b < 0x20 || b == 0x7f || b == b';') {
                    let why = format!(
                        "invalid cookie path {v:?}: starts with `/`, no `;` or control characters"
                    );
                    c.err(&cp("path"), why);
                }
                v.clone()
            });
            if cookie_path.is_some() && ttl.is_none() {
                let why = "a path is used only on a cookie the gateway sets, which needs a `ttl`";
                c.err(&cp("path"), why);
            }
            HashKey::Cookie {
                name: name.to_owned(),
                ttl,
                path: cookie_path,
            }
        } else {
            if h.connection_properties.as_ref().and_then(|p| p.source_ip) != Some(true) {
                let why = "`source_ip: true` is the only connection property";
                c.err(&format!("{hp}.connection_properties.source_ip"), why);
            }
            HashKey::SourceIp
        };
        out.push(HashPolicy {
            key,
            terminal: h.terminal.unwrap_or(false),
        });
    }
    out
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}
