//! Pure: (host, path, method) -> route. The host picks the virtual host (exact name, then the
//! longest wildcard suffix, then `*`); its routes are tried in order and the first match wins.

use std::collections::HashMap;

use http::Method;

use crate::config::{Domain, PathMatch, VirtualHost};

/// Longest host name that is looked up (RFC 1035 names are at most 253 bytes); longer ones can
/// only reach the `*` virtual host.
const MAX_HOST: usize = 255;

/// A compiled route: the match and the index of its cluster in the snapshot.
#[derive(Debug, Clone)]
pub struct Route {
    pub path: PathMatch,
    pub methods: Option<Box<[Method]>>,
    pub cluster: usize,
}

impl Route {
    #[inline]
    fn matches(&self, path: &[u8], method: &Method) -> bool {
        let path_ok = match &self.path {
            PathMatch::Prefix(p) => path.starts_with(p.as_bytes()),
            PathMatch::Exact(p) => path == p.as_bytes(),
        };
        path_ok
            && self
                .methods
                .as_ref()
                .is_none_or(|m| m.iter().any(|x| x == method))
    }
}

/// One virtual host's ordered routes.
#[derive(Debug, Clone)]
pub struct VirtualRoutes {
    pub name: String,
    pub routes: Box<[Route]>,
}

/// The routing table of one listener.
#[derive(Debug, Clone, Default)]
pub struct Router {
    exact: HashMap<Box<[u8]>, u32>,
    /// Wildcard suffixes with their leading dot (".example.com").
    suffixes: HashMap<Box<[u8]>, u32>,
    fallback: Option<u32>,
    vhosts: Vec<VirtualRoutes>,
}

impl Router {
    /// Compiles validated virtual hosts. Domains are unique per listener (validated), so
    /// insertion order does not matter.
    pub fn new(vhosts: &[VirtualHost]) -> Router {
        let mut router = Router::default();
        for (i, vh) in vhosts.iter().enumerate() {
            let i = i as u32;
            for d in &vh.domains {
                match d {
                    Domain::Exact(name) => {
                        router.exact.insert(name.as_bytes().into(), i);
                    }
                    Domain::Suffix(suffix) => {
                        router.suffixes.insert(suffix.as_bytes().into(), i);
                    }
                    Domain::Any => router.fallback = Some(i),
                }
            }
            router.vhosts.push(VirtualRoutes {
                name: vh.name.clone(),
                routes: vh
                    .routes
                    .iter()
                    .map(|r| Route {
                        path: r.path.clone(),
                        methods: r.methods.clone().map(Vec::into_boxed_slice),
                        cluster: r.cluster,
                    })
                    .collect(),
            });
        }
        router
    }

    /// The virtual host for an authority ("Host" value, port and case ignored).
    pub fn virtual_host(&self, authority: &[u8]) -> Option<&VirtualRoutes> {
        let mut buf = [0u8; MAX_HOST];
        let index = match normalize_host(authority, &mut buf) {
            Some(host) => self
                .exact
                .get(host)
                .or_else(|| self.longest_suffix(host))
                .or(self.fallback.as_ref()),
            None => self.fallback.as_ref(),
        };
        index.and_then(|&i| self.vhosts.get(i as usize))
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

    /// The first route of the matching virtual host that accepts this path and method.
    pub fn route(&self, authority: &[u8], path: &[u8], method: &Method) -> Option<&Route> {
        self.virtual_host(authority)?
            .routes
            .iter()
            .find(|r| r.matches(path, method))
    }

    pub fn virtual_hosts(&self) -> &[VirtualRoutes] {
        &self.vhosts
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
    use crate::config;

    fn vhost(name: &str, domains: &[&str], routes: Vec<config::Route>) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            domains: domains
                .iter()
                .map(|d| match *d {
                    "*" => Domain::Any,
                    d if d.starts_with("*.") => Domain::Suffix(d[1..].into()),
                    d => Domain::Exact(d.into()),
                })
                .collect(),
            routes,
        }
    }

    fn prefix(p: &str, cluster: usize) -> config::Route {
        config::Route {
            path: PathMatch::Prefix(p.into()),
            methods: None,
            cluster,
        }
    }

    fn router() -> Router {
        Router::new(&[
            vhost(
                "api",
                &["api.example.com"],
                vec![
                    config::Route {
                        path: PathMatch::Exact("/health".into()),
                        methods: Some(vec![Method::GET]),
                        cluster: 9,
                    },
                    prefix("/v1/", 1),
                    prefix("/", 2),
                ],
            ),
            vhost("wild", &["*.example.com"], vec![prefix("/", 3)]),
            vhost("deeper", &["*.eu.example.com"], vec![prefix("/", 4)]),
            vhost("default", &["*"], vec![prefix("/only/", 5)]),
        ])
    }

    fn cluster(r: &Router, host: &str, path: &str, method: Method) -> Option<usize> {
        r.route(host.as_bytes(), path.as_bytes(), &method)
            .map(|r| r.cluster)
    }

    #[test]
    fn host_selection() {
        let r = router();
        assert_eq!(cluster(&r, "api.example.com", "/x", Method::GET), Some(2));
        assert_eq!(
            cluster(&r, "API.Example.COM:8080", "/x", Method::GET),
            Some(2)
        );
        assert_eq!(cluster(&r, "api.example.com.", "/x", Method::GET), Some(2));
        assert_eq!(cluster(&r, "www.example.com", "/x", Method::GET), Some(3));
        assert_eq!(cluster(&r, "a.eu.example.com", "/x", Method::GET), Some(4));
        assert_eq!(cluster(&r, "example.com", "/only/x", Method::GET), Some(5));
        assert_eq!(cluster(&r, "", "/only/x", Method::GET), Some(5));
        assert_eq!(cluster(&r, "[::1]:80", "/only/", Method::GET), Some(5));
    }

    #[test]
    fn first_matching_route_wins() {
        let r = router();
        assert_eq!(
            cluster(&r, "api.example.com", "/v1/users", Method::GET),
            Some(1)
        );
        assert_eq!(
            cluster(&r, "api.example.com", "/health", Method::GET),
            Some(9)
        );
        assert_eq!(
            cluster(&r, "api.example.com", "/health", Method::POST),
            Some(2)
        );
        assert_eq!(
            cluster(&r, "api.example.com", "/healthz", Method::GET),
            Some(2)
        );
        assert_eq!(cluster(&r, "nothing.org", "/x", Method::GET), None);
    }

    #[test]
    fn no_fallback_means_no_match() {
        let r = Router::new(&[vhost("a", &["a.com"], vec![prefix("/", 1)])]);
        assert_eq!(cluster(&r, "b.com", "/", Method::GET), None);
        assert_eq!(cluster(&r, "a.com", "/", Method::GET), Some(1));
    }
}
