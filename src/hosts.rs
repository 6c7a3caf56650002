//! Pure: the host name index that routing (Host, `:authority`) and certificate selection (SNI)
//! share: exact names first, then the longest `*.suffix` wildcard, then the `*` default.

use std::collections::HashMap;
use std::fmt;

/// Longest host name that is looked up (RFC 1035 names are at most 253 bytes); longer ones can
/// only reach the default.
const MAX_HOST: usize = 255;

/// Stored lowercased; `Suffix` keeps its leading dot so matching is a plain `ends_with`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Domain {
    Exact(String),
    Suffix(String),
    Any,
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Exact(d) => f.write_str(d),
            Domain::Suffix(s) => write!(f, "*{s}"),
            Domain::Any => f.write_str("*"),
        }
    }
}

/// Host names to indexes (of virtual hosts, or of certificates).
#[derive(Debug, Clone, Default)]
pub struct HostIndex {
    exact: HashMap<Box<[u8]>, u32>,
    /// Wildcard suffixes with their leading dot (".example.com").
    suffixes: HashMap<Box<[u8]>, u32>,
    fallback: Option<u32>,
}

impl HostIndex {
    /// Files `domain` under `index`. Domains are unique per index (validated), so insertion
    /// order does not matter.
    pub fn insert(&mut self, domain: &Domain, index: u32) {
        match domain {
            Domain::Exact(name) => {
                self.exact.insert(name.as_bytes().into(), index);
            }
            Domain::Suffix(suffix) => {
                self.suffixes.insert(suffix.as_bytes().into(), index);
            }
            Domain::Any => self.fallback = Some(index),
        }
    }

    /// The index for an authority (a Host value or an SNI name; port and case ignored), or the
    /// default's.
    pub fn find(&self, authority: &[u8]) -> Option<u32> {
        if self.exact.is_empty() && self.suffixes.is_empty() {
            // Only a default (a single `*` virtual host, common at an edge): nothing to read.
            return self.fallback;
        }
        let mut buf = [0u8; MAX_HOST];
        match normalize_host(authority, &mut buf) {
            Some(host) => self
                .exact
                .get(host)
                .or_else(|| self.longest_suffix(host))
                .or(self.fallback.as_ref())
                .copied(),
            None => self.fallback,
        }
    }

    /// The default's index (`*`): for a client that named no host.
    pub fn fallback(&self) -> Option<u32> {
        self.fallback
    }

    fn longest_suffix(&self, host: &[u8]) -> Option<&u32> {
        if self.suffixes.is_empty() {
            return None;
        }
        // Each '.' starts a candidate suffix; scanning left to right tries the longest first.
        // "*.example.com" matches "a.example.com" but not "example.com" itself.
        memchr::memchr_iter(b'.', host)
            .filter(|&dot| dot > 0)
            .find_map(|dot| self.suffixes.get(&host[dot..]))
    }
}

/// Lowercases the host part of an authority into `buf`, without port and trailing dot.
/// None when it is empty or too long to be a DNS name.
fn normalize_host<'a>(authority: &[u8], buf: &'a mut [u8; MAX_HOST]) -> Option<&'a [u8]> {
    let host = if authority.first() == Some(&b'[') {
        // IPv6 literal: the port, if any, follows the closing bracket.
        match memchr::memchr(b']', authority) {
            Some(end) => &authority[..=end],
            None => authority,
        }
    } else {
        match memchr::memrchr(b':', authority) {
            Some(colon) => &authority[..colon],
            None => authority,
        }
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOST {
        return None;
    }
    let out = &mut buf[..host.len()];
    for (o, &b) in out.iter_mut().zip(host) {
        *o = b.to_ascii_lowercase();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> HostIndex {
        let mut ix = HostIndex::default();
        ix.insert(&Domain::Exact("a.example.com".into()), 0);
        ix.insert(&Domain::Suffix(".example.com".into()), 1);
        ix.insert(&Domain::Suffix(".b.example.com".into()), 2);
        ix
    }

    #[test]
    fn exact_then_longest_suffix_then_default() {
        let mut ix = index();
        assert_eq!(ix.find(b"a.example.com"), Some(0));
        assert_eq!(ix.find(b"A.Example.COM:443"), Some(0));
        assert_eq!(ix.find(b"x.example.com"), Some(1));
        assert_eq!(ix.find(b"x.b.example.com"), Some(2));
        assert_eq!(ix.find(b"example.com"), None);
        assert_eq!(ix.fallback(), None);
        ix.insert(&Domain::Any, 3);
        assert_eq!(ix.find(b"example.com"), Some(3));
        assert_eq!(ix.find(b""), Some(3));
        assert_eq!(ix.fallback(), Some(3));
    }
}
